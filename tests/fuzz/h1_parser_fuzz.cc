// libFuzzer target for the HTTP/1.x head parsers (src/http/h1_parser.h).
//
// Input: one byte of options (which parser, small limits or not, strict LF),
// one byte choosing the small limits, one byte seeding the split points,
// then the message bytes. Checked for every input:
// - the result is well-formed: Done ends after a LF within the limits,
//   Error has a status the contract allows and a reason;
// - every view of a Done head lies inside the consumed bytes, and framing
//   is consistent (never both a length and chunked);
// - feeding the bytes one at a time, each call from a buffer at a new
//   address, or in a few pieces in place, gives the same result and the
//   same head (same offsets) as feeding them whole;
// - Done and Error stick; pipelined messages parse the same way.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/assert.h"
#include "http/h1_parser.h"

using namespace gatehouse::http;

namespace {

bool same(const ParseResult& a, const ParseResult& b) {
    return a.state == b.state && a.status == b.status && a.consumed == b.consumed &&
           a.reason == b.reason;
}

void views(const RequestHead& h, std::vector<std::string_view>& out) {
    out = {h.method_name, h.target, h.authority, h.path, h.host};
}
void views(const StatusHead& h, std::vector<std::string_view>& out) { out = {h.reason}; }

void all_views(const MessageHead& base, std::vector<std::string_view>& out) {
    for (const HeaderField& f : base.headers) {
        out.push_back(f.name);
        out.push_back(f.value);
    }
}

template <class Head>
void collect(const Head& h, std::vector<std::string_view>& out) {
    views(h, out);
    all_views(h, out);
}

// Offsets of every view relative to `base`, -1 for a null view.
template <class Head>
std::vector<long> offsets(const Head& h, const char* base) {
    std::vector<std::string_view> v;
    collect(h, v);
    std::vector<long> o;
    for (std::string_view s : v) {
        o.push_back(s.data() ? static_cast<long>(s.data() - base) : -1);
        o.push_back(static_cast<long>(s.size()));
    }
    return o;
}

bool same_scalars(const RequestHead& a, const RequestHead& b) {
    return a.method == b.method && a.form == b.form && a.scheme == b.scheme &&
           a.expect_100_continue == b.expect_100_continue;
}
bool same_scalars(const StatusHead& a, const StatusHead& b) { return a.status == b.status; }

template <class Head>
bool same_head(const Head& a, const char* abase, const Head& b, const char* bbase) {
    const Framing &fa = a.framing, &fb = b.framing;
    return a.version_major == b.version_major && a.version_minor == b.version_minor &&
           fa.content_length == fb.content_length && fa.chunked == fb.chunked &&
           fa.has_transfer_encoding == fb.has_transfer_encoding &&
           fa.conn_close == fb.conn_close && fa.conn_keep_alive == fb.conn_keep_alive &&
           fa.conn_upgrade == fb.conn_upgrade && same_scalars(a, b) &&
           offsets(a, abase) == offsets(b, bbase);
}

template <class Head>
void check_result(const ParseResult& r, const HeadParser<Head>& p, std::string_view in,
                  const Limits& l) {
    constexpr bool kRequest = std::is_same_v<Head, RequestHead>;
    switch (r.state) {
    case ParseState::NeedMore:
        GH_CHECK(in.size() <= l.max_head);
        break;
    case ParseState::Error:
        GH_CHECK(!r.reason.empty());
        if (kRequest)
            GH_CHECK(r.status == 400 || r.status == 414 || r.status == 431 || r.status == 501 ||
                     r.status == 505);
        else
            GH_CHECK(r.status == 502);
        break;
    case ParseState::Done: {
        GH_CHECK(r.consumed >= 2 && r.consumed <= in.size() && r.consumed <= l.max_head);
        GH_CHECK(in[r.consumed - 1] == '\n');
        const Head& h = p.head();
        GH_CHECK(h.version_major == 1);
        GH_CHECK(h.headers.size() <= l.max_headers);
        GH_CHECK(!(h.framing.content_length && h.framing.chunked));
        GH_CHECK(h.framing.chunked == h.framing.has_transfer_encoding);
        std::vector<std::string_view> v;
        collect(h, v);
        for (std::string_view s : v) {
            if (!s.data()) {
                GH_CHECK(s.empty());
                continue;
            }
            GH_CHECK(s.data() >= in.data() && s.data() + s.size() <= in.data() + r.consumed);
        }
        for (const HeaderField& f : h.headers) {
            GH_CHECK(!f.name.empty());
            GH_CHECK(f.value.empty() || (f.value.front() != ' ' && f.value.back() != ' '));
            GH_CHECK(f.value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos);
        }
        if constexpr (kRequest) {
            GH_CHECK(!h.method_name.empty() && !h.target.empty());
            if (!h.host.empty()) {
                const auto a = parse_authority(h.host);
                GH_CHECK(a.has_value());
                // normalize_host() drops exactly the port.
                std::string out(h.host.size(), '\0');
                const std::string_view n = normalize_host(h.host, out);
                GH_CHECK(n.size() + 1 >= a->host.size() && n.size() <= a->host.size());
                GH_CHECK(n.find(':') == std::string_view::npos || a->host[0] == '[');
            }
            if (h.version_minor >= 1) GH_CHECK(!h.host.empty());
            if (h.form == TargetForm::Origin) GH_CHECK(h.path == h.target && h.path[0] == '/');
        } else {
            GH_CHECK(h.status >= 100 && h.status <= 999);
        }
        break;
    }
    }
}

template <class Head>
void run(std::string_view in, const Limits& l, uint8_t seed) {
    using Parser = HeadParser<Head>;
    // Small storage, so that the field table's growth is exercised too.
    std::vector<HeaderField> s1(2), s2(2), s3(2);

    // Whole.
    Parser whole(l, s1);
    const ParseResult w = whole.parse(in);
    check_result(w, whole, in, l);
    GH_CHECK(same(whole.parse(in), w));

    // One byte more per call, from a buffer at another address each time.
    // Two buffers take turns, each catching up on the bytes it missed, so
    // a view the parser forgot to move would point into the wrong one.
    {
        Parser p(l, s2);
        std::vector<char> buf[2];
        buf[0].resize(in.size() + 1);
        buf[1].resize(in.size() + 1);
        size_t have[2] = {0, 0};
        ParseResult r;
        size_t i = 0;
        for (;; ++i) {
            std::vector<char>& b = buf[i & 1];
            std::memcpy(b.data() + have[i & 1], in.data() + have[i & 1], i - have[i & 1]);
            have[i & 1] = i;
            r = p.parse(std::string_view(b.data(), i));
            if (r.state != ParseState::NeedMore || i == in.size()) break;
        }
        GH_CHECK(same(r, w));
        if (r.state == ParseState::Done)
            GH_CHECK(same_head(p.head(), buf[i & 1].data(), whole.head(), in.data()));
    }

    // In a few pieces, in place.
    {
        Parser p(l, s3);
        ParseResult r;
        size_t at = 0;
        uint32_t x = seed * 2654435761u + 1;
        while (true) {
            x = x * 1103515245u + 12345u;
            at = std::min(in.size(), at + 1 + (x >> 16) % 64);
            r = p.parse(in.substr(0, at));
            if (r.state != ParseState::NeedMore || at == in.size()) break;
        }
        GH_CHECK(same(r, w));
        if (r.state == ParseState::Done)
            GH_CHECK(same_head(p.head(), in.data(), whole.head(), in.data()));
    }

    // Pipelining: what follows a Done parses like a message of its own.
    std::string_view rest = in;
    ParseResult r = w;
    for (int k = 0; k < 8 && r.state == ParseState::Done; ++k) {
        rest.remove_prefix(r.consumed);
        whole.reset();
        r = whole.parse(rest);
        check_result(r, whole, rest, l);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 3) return 0;
    const uint8_t opt = data[0];
    const uint8_t lim = data[1];
    const uint8_t seed = data[2];
    const std::string_view in(reinterpret_cast<const char*>(data + 3), size - 3);

    Limits l;
    if (opt & 1) {
        // Small limits, each chosen on its own, so that every limit is hit
        // near its edge and in any order with the others.
        l.max_start_line = size_t{8} << (lim & 3);
        l.max_header_line = size_t{8} << ((lim >> 2) & 3);
        l.max_head = size_t{16} << ((lim >> 4) & 3);
        l.max_headers = size_t{1} + (lim >> 6);
    }
    l.reject_bare_lf = opt & 2;
    l.ignore_invalid_names = opt & 8;
    l.underscores = opt & 16;
    if (opt & 4)
        run<StatusHead>(in, l, seed);
    else
        run<RequestHead>(in, l, seed);
    return 0;
}
