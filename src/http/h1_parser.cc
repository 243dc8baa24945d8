#include "http/h1_parser.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>

#include "core/assert.h"
#include "core/str.h"

namespace gatehouse::http {

namespace detail {
enum class H1Error : uint8_t {
    None,
    Method,
    RequestLine,
    Target,
    Version,
    Unsupported,
    StatusLine,
    StartLineTooLong,
    HeaderLineTooLong,
    HeadTooLarge,
    TooManyHeaders,
    HeaderLine,
    ObsFold,
    ContentLength,
    DupContentLength,
    ClAndTe,
    TeInvalid,
    TeUnknown,
    TeHttp10,
    HostMissing,
    HostDup,
    HostInvalid,
    DupField,
};
}  // namespace detail

namespace {

using Err = detail::H1Error;

struct ErrorInfo {
    uint16_t status;  // for a request; a response always gets 502
    std::string_view client;
    std::string_view upstream;
};

ErrorInfo error_info(Err e) {
    switch (e) {
    case Err::None:
        break;
    case Err::Method:
        return {400, "client sent invalid method", "upstream sent invalid status line"};
    case Err::RequestLine:
        return {400, "client sent invalid request line", "upstream sent invalid status line"};
    case Err::Target:
        return {400, "client sent invalid request target", "upstream sent invalid status line"};
    case Err::Version:
        return {400, "client sent invalid version", "upstream sent invalid status line"};
    case Err::Unsupported:
        return {505, "client sent unsupported HTTP version",
                "upstream sent unsupported HTTP version"};
    case Err::StatusLine:
        return {400, "client sent invalid request line", "upstream sent invalid status line"};
    case Err::StartLineTooLong:
        return {414, "client sent too long URI", "upstream sent too long status line"};
    case Err::HeaderLineTooLong:
        return {431, "client sent too long header line", "upstream sent too long header line"};
    case Err::HeadTooLarge:
        return {431, "client sent too large request header", "upstream sent too big header"};
    case Err::TooManyHeaders:
        return {431, "client sent too many header lines", "upstream sent too many header lines"};
    case Err::HeaderLine:
        return {400, "client sent invalid header line", "upstream sent invalid header line"};
    case Err::ObsFold:
        return {400, "client sent folded header line", "upstream sent folded header line"};
    case Err::ContentLength:
        return {400, "client sent invalid \"Content-Length\" header",
                "upstream sent invalid \"Content-Length\" header"};
    case Err::DupContentLength:
        return {400, "client sent duplicate \"Content-Length\" header",
                "upstream sent duplicate \"Content-Length\" header"};
    case Err::ClAndTe:
        return {400,
                "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time",
                "upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same "
                "time"};
    case Err::TeInvalid:
        return {400, "client sent invalid \"Transfer-Encoding\" header",
                "upstream sent invalid \"Transfer-Encoding\" header"};
    case Err::TeUnknown:
        return {501, "client sent unknown transfer coding", "upstream sent unknown transfer coding"};
    case Err::TeHttp10:
        return {400, "client sent \"Transfer-Encoding\" in HTTP/1.0 request",
                "upstream sent \"Transfer-Encoding\" in HTTP/1.0 response"};
    case Err::HostMissing:
        return {400, "client sent HTTP/1.1 request without \"Host\" header",
                "upstream sent invalid header line"};
    case Err::HostDup:
        return {400, "client sent duplicate \"Host\" header", "upstream sent invalid header line"};
    case Err::HostInvalid:
        return {400, "client sent invalid \"Host\" header", "upstream sent invalid header line"};
    case Err::DupField:
        return {400, "client sent duplicate header line", "upstream sent invalid header line"};
    }
    GH_CHECK(false);
    return {};
}

// Character classes: tchar (RFC 9110 5.6.2); what a request-target may
// hold; field-value bytes (RFC 9110 5.5); reg-name (RFC 3986 3.2.2).
// kPlainName: what nginx calls a valid field name byte (letters, digits,
// '-'), see Limits::ignore_invalid_names.
enum : uint8_t {
    kTchar = 1,
    kTargetChar = 2,
    kValueChar = 4,
    kRegChar = 8,
    kHex = 16,
    kPlainName = 32,
};

constexpr std::array<uint8_t, 256> kClass = [] {
    std::array<uint8_t, 256> t{};
    constexpr std::string_view tchar_punct = "!#$%&'*+-.^_`|~";
    constexpr std::string_view reg_punct = "-._~!$&'()*+,;=%";
    for (int c = 0; c < 256; ++c) {
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        const bool digit = c >= '0' && c <= '9';
        const char ch = static_cast<char>(c);
        uint8_t v = 0;
        if (alpha || digit || (c != 0 && tchar_punct.find(ch) != std::string_view::npos))
            v |= kTchar;
        // RFC 3986 characters plus the ones browsers and tools send
        // unencoded anyway (" < > \ ^ ` { | }), and obs-text for raw UTF-8
        // as nginx takes it. Never CTL, SP, DEL, nor '#': a fragment is not
        // part of a request-target (RFC 9112 3.2).
        if ((c > 0x20 && c < 0x7f && c != '#') || c >= 0x80) v |= kTargetChar;
        if (c == '\t' || (c >= 0x20 && c != 0x7f)) v |= kValueChar;
        if (alpha || digit || (c != 0 && reg_punct.find(ch) != std::string_view::npos))
            v |= kRegChar;
        if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) v |= kHex;
        if (alpha || digit || c == '-') v |= kPlainName;
        t[static_cast<size_t>(c)] = v;
    }
    return t;
}();

inline uint8_t cls(char c) { return kClass[static_cast<unsigned char>(c)]; }
inline bool is_ows(char c) { return c == ' ' || c == '\t'; }

// Word-at-a-time pre-check: a word none of whose bytes is below `lo`, DEL
// or `extra` holds only acceptable bytes and is skipped whole; a flagged
// word is checked byte by byte (flags may be false positives, never false
// negatives).
constexpr uint64_t kOnes = 0x0101010101010101ull;
constexpr uint64_t kHighs = 0x8080808080808080ull;
inline uint64_t any_below(uint64_t w, uint8_t n) { return (w - kOnes * n) & ~w & kHighs; }
inline uint64_t any_equal(uint64_t w, uint8_t c) {
    const uint64_t x = w ^ (kOnes * c);
    return (x - kOnes) & ~x & kHighs;
}

// The length of the prefix of [p, p+n) made of bytes in class `want`,
// whose complement is the bytes below `lo`, DEL and `extra`, except HTAB
// when `want` is kValueChar.
template <uint8_t want, uint8_t lo, uint8_t extra>
size_t span_of(const char* p, size_t n) {
    auto clean = [](const char* at) {
        const uint64_t w = load_word(at);
        return (any_below(w, lo) | any_equal(w, 0x7f) | any_equal(w, extra)) == 0;
    };
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (clean(p + i)) continue;
        for (size_t k = i; k < i + 8; ++k)
            if (!(cls(p[k]) & want)) return k;
    }
    // The tail, as the last eight bytes (some seen already) when there
    // are eight: nearly every value ends with one.
    if (i < n && n >= 8 && clean(p + n - 8)) return n;
    for (; i < n; ++i)
        if (!(cls(p[i]) & want)) return i;
    return n;
}

// The high bit of each byte of w that is not a letter, a digit or '-'
// (kPlainName), exactly: each test below stays inside its byte. For the
// seven low bits v, v + (0x80 - lo) reaches the high bit when v >= lo,
// v + (0x7f - hi) when v > hi; a byte with its own high bit set is not
// plain either.
inline uint64_t not_plain(uint64_t w) {
    const uint64_t low7 = w & ~kHighs;
    auto in = [low7](uint8_t lo, uint8_t hi) {
        return (low7 + kOnes * static_cast<uint8_t>(0x80 - lo)) & ~(low7 + kOnes * static_cast<uint8_t>(0x7f - hi));
    };
    const uint64_t dash = low7 ^ (kOnes * '-');
    const uint64_t is_dash = ~((dash + ~kHighs) | dash);  // high bit: the byte is '-' (low7 == 0x2d)
    const uint64_t plain = (in('0', '9') | in('A', 'Z') | in('a', 'z') | is_dash) & ~w & kHighs;
    return ~plain & kHighs;
}

// The length of the prefix of [p, p+n) made of kPlainName bytes.
inline size_t plain_span(const char* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (const uint64_t m = not_plain(load_word(p + i))) return i + static_cast<size_t>(__builtin_ctzll(m)) / 8;
    while (i < n && (cls(p[i]) & kPlainName)) ++i;
    return i;
}
inline size_t value_span(const char* p, size_t n) { return span_of<kValueChar, 0x20, 0x7f>(p, n); }
inline size_t target_span(const char* p, size_t n) { return span_of<kTargetChar, 0x21, '#'>(p, n); }

// Calls fn(element) for each non-empty element of a comma-separated list
// (RFC 9110 5.6.1: empty elements are ignored), OWS trimmed; stops at the
// first error fn returns.
template <class Fn>
Err for_each_element(std::string_view list, Fn fn) {
    size_t i = 0;
    while (i <= list.size()) {
        size_t comma = list.find(',', i);
        if (comma == std::string_view::npos) comma = list.size();
        size_t b = i, e = comma;
        while (b < e && is_ows(list[b])) ++b;
        while (e > b && is_ows(list[e - 1])) --e;
        if (b < e) {
            Err err = fn(list.substr(b, e - b));
            if (err != Err::None) return err;
        }
        i = comma + 1;
    }
    return Err::None;
}

Err parse_version(std::string_view v, MessageHead& h) {
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    // RFC 9112 2.3: "HTTP" is case-sensitive, one digit each side.
    if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || !digit(v[5]) || v[6] != '.' ||
        !digit(v[7]))
        return Err::Version;
    // Well-formed but not 1.x: 505 (RFC 9110 15.6.6). 1.x with x > 1 is
    // processed as 1.1 (RFC 9110 2.5).
    if (v[5] != '1') return Err::Unsupported;
    h.version_major = 1;
    h.version_minor = static_cast<uint8_t>(v[7] - '0');
    return Err::None;
}

// Content-Length = 1*DIGIT (RFC 9110 8.6), no sign, no list; capped at
// the largest off_t so that file and body code downstream never wraps.
bool parse_length(std::string_view s, uint64_t& out) {
    if (s.empty()) return false;
    constexpr uint64_t kMax = static_cast<uint64_t>(INT64_MAX);
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        const uint64_t d = static_cast<uint64_t>(c - '0');
        if (v > (kMax - d) / 10) return false;
        v = v * 10 + d;
    }
    out = v;
    return true;
}

void move_view(std::string_view& v, uintptr_t was, const char* now) {
    if (!v.data()) return;
    const uintptr_t off = reinterpret_cast<uintptr_t>(v.data()) - was;
    v = std::string_view(now + off, v.size());
}

void move_views(RequestHead& h, uintptr_t was, const char* now) {
    for (std::string_view* v :
         {&h.method_name, &h.target, &h.authority, &h.path, &h.host, &h.first_ignored})
        move_view(*v, was, now);
}
void move_views(StatusHead& h, uintptr_t was, const char* now) { move_view(h.reason, was, now); }

Err request_line(std::string_view line, RequestHead& h) {
    // The method's bytes were checked by prefix_error() up to this SP.
    const size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || sp1 == 0) return Err::RequestLine;
    const size_t sp2 = line.rfind(' ');
    // No version: an HTTP/0.9 request, not supported.
    if (sp2 == sp1) return Err::RequestLine;
    // The version first so that "PRI * HTTP/2.0" gets 505.
    Err e = parse_version(line.substr(sp2 + 1), h);
    if (e != Err::None) return e;

    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    // A second SP in a row lands in the target and fails here: exactly one
    // SP separates the parts (RFC 9112 3).
    if (target.empty() || target_span(target.data(), target.size()) != target.size())
        return Err::Target;
    h.method_name = line.substr(0, sp1);
    h.method = parse_method(h.method_name);
    h.target = target;

    // RFC 9112 3.2.3: authority-form is for CONNECT only, and CONNECT
    // takes nothing else; its port is required.
    if (h.method == Method::Connect) {
        auto a = parse_authority(target);
        if (!a || a->port.empty()) return Err::Target;
        h.form = TargetForm::Authority;
        h.authority = target;
        return Err::None;
    }
    // RFC 9112 3.2.4: asterisk-form is for a server-wide OPTIONS only.
    if (target == "*") {
        if (h.method != Method::Options) return Err::Target;
        h.form = TargetForm::Asterisk;
        return Err::None;
    }
    if (target[0] == '/') {
        h.form = TargetForm::Origin;
        h.path = target;
        return Err::None;
    }
    // Absolute-form (RFC 9112 3.2.2); only the schemes a gateway serves.
    const size_t colon = target.find("://");
    if (colon == std::string_view::npos) return Err::Target;
    const std::string_view scheme = target.substr(0, colon);
    if (iequals(scheme, "http"))
        h.scheme = Scheme::Http;
    else if (iequals(scheme, "https"))
        h.scheme = Scheme::Https;
    else
        return Err::Target;
    const std::string_view rest = target.substr(colon + 3);
    size_t auth_end = rest.find_first_of("/?");
    if (auth_end == std::string_view::npos) auth_end = rest.size();
    // parse_authority() refuses userinfo: RFC 9110 4.2.4 says to treat it
    // as an error, it only serves phishing ("http://bank@evil/").
    if (!parse_authority(rest.substr(0, auth_end))) return Err::Target;
    h.form = TargetForm::Absolute;
    h.authority = rest.substr(0, auth_end);
    h.path = rest.substr(auth_end);
    return Err::None;
}

Err status_line(std::string_view line, StatusHead& h) {
    // status-line = HTTP-version SP status-code SP [ reason-phrase ]
    if (line.size() < 12 || line[8] != ' ') return Err::StatusLine;
    Err e = parse_version(line.substr(0, 8), h);
    if (e == Err::Version) return Err::StatusLine;
    if (e != Err::None) return e;
    uint16_t code = 0;
    for (size_t i = 9; i < 12; ++i) {
        if (line[i] < '0' || line[i] > '9') return Err::StatusLine;
        code = static_cast<uint16_t>(code * 10 + (line[i] - '0'));
    }
    if (code < 100) return Err::StatusLine;
    h.status = code;
    if (line.size() == 12) return Err::None;  // "HTTP/1.1 200": SP missing, common, harmless
    if (line[12] != ' ') return Err::StatusLine;
    const std::string_view reason = line.substr(13);
    if (value_span(reason.data(), reason.size()) != reason.size()) return Err::StatusLine;
    h.reason = reason;
    return Err::None;
}

}  // namespace

Method parse_method(std::string_view m) {
    switch (m.size()) {
    case 3:
        if (m == "GET") return Method::Get;
        if (m == "PUT") return Method::Put;
        break;
    case 4:
        if (m == "HEAD") return Method::Head;
        if (m == "POST") return Method::Post;
        break;
    case 5:
        if (m == "TRACE") return Method::Trace;
        if (m == "PATCH") return Method::Patch;
        break;
    case 6:
        if (m == "DELETE") return Method::Delete;
        break;
    case 7:
        if (m == "CONNECT") return Method::Connect;
        if (m == "OPTIONS") return Method::Options;
        break;
    }
    return Method::Other;
}

const HeaderField* MessageHead::find(std::string_view name) const {
    for (const HeaderField& f : headers)
        if (iequals(f.name, name)) return &f;
    return nullptr;
}

bool MessageHead::keep_alive() const {
    if (framing.conn_close) return false;
    if (version_major == 1 && version_minor >= 1) return true;
    return framing.conn_keep_alive;
}

std::optional<Authority> parse_authority(std::string_view s) {
    Authority a;
    size_t i = 0;
    if (!s.empty() && s[0] == '[') {
        // IP-literal (RFC 3986 3.2.2): an IPv6 address, or IPvFuture
        // ("v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )). Zone
        // identifiers are not accepted (RFC 6874 keeps them out of Host).
        const size_t close = s.find(']');
        if (close == std::string_view::npos || close < 3) return std::nullopt;
        const std::string_view lit = s.substr(1, close - 1);
        if (lit[0] == 'v' || lit[0] == 'V') {
            size_t k = 1;
            while (k < lit.size() && (cls(lit[k]) & kHex)) ++k;
            if (k == 1 || k + 1 >= lit.size() || lit[k] != '.') return std::nullopt;
            // unreserved and sub-delims are the reg-name bytes but '%'.
            for (++k; k < lit.size(); ++k) {
                const char c = lit[k];
                if (c != ':' && (c == '%' || !(cls(c) & kRegChar))) return std::nullopt;
            }
        } else {
            bool colon = false;
            for (char c : lit) {
                if (c == ':')
                    colon = true;
                else if (!(cls(c) & kHex) && c != '.')
                    return std::nullopt;
            }
            // ".." would let $host climb directories, as for names.
            if (!colon || lit.find("..") != std::string_view::npos) return std::nullopt;
        }
        i = close + 1;
    } else {
        // RFC 9110 4.2.1: an empty host is invalid. A leading dot or ".."
        // would let $host climb directories in a root or alias path: the
        // dot before the first byte counts as a dot.
        bool dot = true;
        while (i < s.size() && (cls(s[i]) & kRegChar)) {
            if (s[i] == '%') {
                if (i + 2 >= s.size() || !(cls(s[i + 1]) & kHex) || !(cls(s[i + 2]) & kHex))
                    return std::nullopt;
                i += 3;
                dot = false;
            } else {
                if (s[i] == '.' && dot) return std::nullopt;
                dot = s[i] == '.';
                ++i;
            }
        }
        if (i == 0) return std::nullopt;
    }
    a.host = s.substr(0, i);
    if (i == s.size()) return a;
    // Anything else here, '@' of userinfo, '/', '\', SP, is an error.
    if (s[i] != ':') return std::nullopt;
    a.has_port = true;
    a.port = s.substr(i + 1);
    if (a.port.size() > 5) return std::nullopt;
    for (char c : a.port)
        if (c < '0' || c > '9') return std::nullopt;
    return a;
}

std::string_view normalize_host(std::string_view host, std::span<char> out) {
    GH_CHECK(out.size() >= host.size());
    // One pass, as this runs for every request. In a validated authority
    // the port starts at the first ':' after an IP literal's ']'.
    const size_t size = host.size();
    size_t n = 0;
    if (size > 0 && host[0] == '[') {
        while (n < size && host[n] != ']') {
            out[n] = ascii_lower(host[n]);
            ++n;
        }
    }
    while (n < size && host[n] != ':') {
        out[n] = ascii_lower(host[n]);
        ++n;
    }
    if (n > 1 && out[n - 1] == '.') --n;
    return {out.data(), n};
}

template <class Head>
HeadParser<Head>::HeadParser(const Limits& limits, std::span<HeaderField> storage)
    : limits_(limits), storage_(storage) {}

template <class Head>
void HeadParser<Head>::grow() {
    const size_t cap = std::max<size_t>(storage_.size() * 2, 16);
    auto table = std::make_unique<HeaderField[]>(cap);
    std::copy_n(storage_.data(), nfields_, table.get());
    spill_ = std::move(table);
    storage_ = {spill_.get(), cap};
}

template <class Head>
void HeadParser<Head>::reset() {
    head_ = Head{};
    result_ = {};
    base_ = 0;
    line_start_ = scan_ = method_scan_ = nfields_ = 0;
    phase_ = Phase::StartLine;
    method_ended_ = host_seen_ = te_chunked_last_ = te_chunked_seen_ = te_other_ = false;
    unique_seen_ = 0;
}

template <class Head>
ParseResult HeadParser<Head>::fail(Err e) {
    const ErrorInfo info = error_info(e);
    phase_ = Phase::Error;
    result_.state = ParseState::Error;
    if constexpr (std::is_same_v<Head, RequestHead>) {
        result_.status = info.status;
        result_.reason = info.client;
    } else {
        result_.status = 502;
        result_.reason = info.upstream;
    }
    return result_;
}

template <class Head>
void HeadParser<Head>::rebase(const char* data) {
    const uintptr_t now = reinterpret_cast<uintptr_t>(data);
    const uintptr_t was = base_;
    base_ = now;
    if (was == now || was == 0) return;
    for (size_t i = 0; i < nfields_; ++i) {
        move_view(storage_[i].name, was, data);
        move_view(storage_[i].value, was, data);
    }
    move_views(head_, was, data);
}

// Errors visible before a line ends, so that split input gives the same
// answer as whole input: each error has a position, the number of bytes
// needed to see it, and the one with the smallest position wins whatever
// the split. Complete lines get the same checks before their contents, and
// content errors sit at the line's LF, after all of these.
//
// `avail` is the line's bytes, less a CR that may be the CR of its CRLF;
// `raw_end` is the end of the bytes seen, absolute.
template <class Head>
Err HeadParser<Head>::prefix_error(const char* p, size_t avail, size_t raw_end) {
    const bool start = phase_ == Phase::StartLine;
    const size_t max = start ? limits_.max_start_line : limits_.max_header_line;
    const size_t ls = line_start_;
    Err err = Err::None;
    size_t at = SIZE_MAX;

    // A request's first bytes are a method token: reject anything else at
    // once (a TLS handshake, a binary protocol) instead of waiting for a
    // line end that may never come. Only the first `max` bytes are looked
    // at: beyond them the line is too long anyway.
    if constexpr (std::is_same_v<Head, RequestHead>) {
        if (start && !method_ended_) {
            const size_t stop = ls + std::min(avail, max);
            size_t q = std::max(method_scan_, ls);
            for (; q < stop; ++q) {
                const char c = p[q];
                if (cls(c) & kTchar) continue;
                if (c == ' ' && q > ls) {
                    method_ended_ = true;
                    break;
                }
                // A CR inside the line is bare: seen one byte later.
                err = c == '\r' ? Err::RequestLine : Err::Method;
                at = q + (c == '\r' ? 2 : 1);
                break;
            }
            method_scan_ = q;
        }
    }
    if (avail > max) {
        const size_t t = ls + max + (p[ls + max] == '\r' ? 2 : 1);
        if (t < at) {
            at = t;
            err = start ? Err::StartLineTooLong : Err::HeaderLineTooLong;
        }
    }
    if (raw_end > limits_.max_head && limits_.max_head + 1 < at) err = Err::HeadTooLarge;
    return err;
}

template <class Head>
ParseResult HeadParser<Head>::parse(std::string_view in) {
    if (phase_ == Phase::Done || phase_ == Phase::Error) return result_;
    // The caller's contract: the bytes of the last call, maybe more.
    GH_CHECK(in.size() >= scan_);
    rebase(in.data());
    const char* p = in.data();
    const size_t n = in.size();
    for (;;) {
        const void* hit = scan_ < n ? std::memchr(p + scan_, '\n', n - scan_) : nullptr;
        if (!hit) {
            scan_ = n;
            size_t avail = n - line_start_;
            if (avail > 0 && p[n - 1] == '\r') --avail;
            const Err e = prefix_error(p, avail, n);
            if (e != Err::None) return fail(e);
            return {};
        }
        const size_t lf = static_cast<size_t>(static_cast<const char*>(hit) - p);
        size_t end = lf;
        const bool crlf = end > line_start_ && p[end - 1] == '\r';
        if (crlf) --end;
        // A field line within both limits has no prefix error: the call
        // is skipped for nearly every line.
        Err e = phase_ == Phase::Fields && end - line_start_ <= limits_.max_header_line && lf < limits_.max_head
                    ? Err::None
                    : prefix_error(p, end - line_start_, lf + 1);
        if (e == Err::None && !crlf && limits_.reject_bare_lf)
            e = phase_ == Phase::Fields ? Err::HeaderLine : Err::RequestLine;
        if (e != Err::None) return fail(e);

        const std::string_view line(p + line_start_, end - line_start_);
        line_start_ = scan_ = lf + 1;
        if (phase_ == Phase::StartLine) {
            if constexpr (std::is_same_v<Head, RequestHead>) {
                // RFC 9112 2.2: ignore empty lines before the request line
                // (left by a client after a POST body); max_head bounds them.
                if (line.empty()) continue;
                e = request_line(line, head_);
            } else {
                e = status_line(line, head_);
            }
            phase_ = Phase::Fields;
        } else if (line.empty()) {
            e = finish();
            if (e == Err::None) {
                phase_ = Phase::Done;
                head_.headers = storage_.first(nfields_);
                result_.state = ParseState::Done;
                result_.consumed = lf + 1;
                return result_;
            }
        } else {
            e = field_line(line);
        }
        if (e != Err::None) return fail(e);
    }
}

template <class Head>
Err HeadParser<Head>::field_line(std::string_view line) {
    const char* s = line.data();
    const size_t n = line.size();
    // obs-fold (RFC 9112 5.2), or whitespace between the start line and
    // the first field (RFC 9112 2.2): both rejected, the message is not
    // forwarded in any form another parser could read differently.
    if (is_ows(s[0])) return Err::ObsFold;
    // Plain names (letters, digits, '-') are nearly all names: eight bytes
    // at a time for them; anything else takes the slower loop.
    size_t i = plain_span(s, n);
    bool plain = true;  // see Limits::ignore_invalid_names
    for (; i < n && s[i] != ':'; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (cls(s[i]) & kPlainName) continue;
        if (c == '_' && limits_.underscores) continue;
        // RFC 9112 5.1: no whitespace between the name and the colon.
        if (c <= 0x20 || c == 0x7f) return Err::HeaderLine;
        if (!limits_.ignore_invalid_names && !(cls(s[i]) & kTchar)) return Err::HeaderLine;
        plain = false;
    }
    if (i == 0 || i == n) return Err::HeaderLine;
    size_t v = i + 1;
    while (v < n && is_ows(s[v])) ++v;
    if (v + value_span(s + v, n - v) != n) return Err::HeaderLine;
    if (!plain && limits_.ignore_invalid_names) {
        if constexpr (std::is_same_v<Head, RequestHead>) {
            if (head_.ignored_fields++ == 0) head_.first_ignored = line;
        }
        return Err::None;
    }
    size_t e = n;
    while (e > v && is_ows(s[e - 1])) --e;
    if (nfields_ == limits_.max_headers) return Err::TooManyHeaders;
    if (nfields_ == storage_.size()) grow();
    const std::string_view name(s, i), value(s + v, e - v);
    storage_[nfields_++] = {name, value};
    return on_field(name, value);
}

namespace {

// Request fields that may appear once: two of them are a broken or
// malicious client, and which one a later hop would use is anyone's guess
// (nginx refuses the same ones). Host and Content-Length have messages of
// their own; a second Transfer-Encoding adds to the list (RFC 9110 5.3).
constexpr std::string_view kUniqueFields[] = {
    "if-modified-since", "if-unmodified-since", "if-match", "if-none-match",
    "if-range",          "content-range",       "expect", "authorization",
};

}  // namespace

template <class Head>
Err HeadParser<Head>::on_field(std::string_view name, std::string_view value) {
    Framing& f = head_.framing;
    if constexpr (std::is_same_v<Head, RequestHead>) {
        for (size_t i = 0; i < std::size(kUniqueFields); ++i)
            if (name.size() == kUniqueFields[i].size() && iequals(name, kUniqueFields[i])) {
                if (unique_seen_ & (1u << i)) return Err::DupField;
                unique_seen_ |= static_cast<uint16_t>(1u << i);
                break;
            }
    }
    switch (name.size()) {
    case 4:
        if constexpr (std::is_same_v<Head, RequestHead>) {
            if (!iequals(name, "host")) break;
            // RFC 9112 3.2: more than one Host, or an invalid one, is 400.
            if (host_seen_) return Err::HostDup;
            host_seen_ = true;
            if (!parse_authority(value)) return Err::HostInvalid;
            head_.host = value;
        }
        break;
    case 6:
        if constexpr (std::is_same_v<Head, RequestHead>) {
            if (iequals(name, "expect") && iequals(value, "100-continue"))
                head_.expect_100_continue = true;
        }
        break;
    case 10:
        if (!iequals(name, "connection")) break;
        return for_each_element(value, [&](std::string_view t) {
            if (iequals(t, "close"))
                f.conn_close = true;
            else if (iequals(t, "keep-alive"))
                f.conn_keep_alive = true;
            else if (iequals(t, "upgrade"))
                f.conn_upgrade = true;
            return Err::None;
        });
    case 14: {
        if (!iequals(name, "content-length")) break;
        // Any second one is refused, equal or not (see h1_parser.h).
        if (f.content_length) return Err::DupContentLength;
        uint64_t len = 0;
        if (!parse_length(value, len)) return Err::ContentLength;
        f.content_length = len;
        break;
    }
    case 17:
        if (!iequals(name, "transfer-encoding")) break;
        f.has_transfer_encoding = true;
        // Field lines add up to one list (RFC 9110 5.3); the order of
        // codings matters, so the last one is tracked across lines.
        return for_each_element(value, [&](std::string_view el) {
            size_t t = 0;
            while (t < el.size() && (cls(el[t]) & kTchar)) ++t;
            size_t r = t;
            while (r < el.size() && is_ows(el[r])) ++r;
            // transfer-coding = token *( OWS ";" OWS transfer-parameter )
            if (t == 0 || (r < el.size() && el[r] != ';')) return Err::TeInvalid;
            if (iequals(el.substr(0, t), "chunked")) {
                // RFC 9112 7: chunked is applied once and takes no
                // parameters.
                if (te_chunked_seen_ || r < el.size()) return Err::TeInvalid;
                te_chunked_seen_ = te_chunked_last_ = true;
            } else {
                te_other_ = true;
                te_chunked_last_ = false;
            }
            return Err::None;
        });
    default:
        break;
    }
    return Err::None;
}

template <class Head>
Err HeadParser<Head>::finish() {
    Framing& f = head_.framing;
    if (f.has_transfer_encoding) {
        // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing,
        // even with a Content-Length.
        if (head_.version_minor == 0) return Err::TeHttp10;
        // RFC 9112 6.1 lets a server reject both: the classic request
        // smuggling vector when hops disagree on which one wins.
        if (f.content_length) return Err::ClAndTe;
        if constexpr (std::is_same_v<Head, RequestHead>) {
            // RFC 9112 6.3 (4): without chunked last, the request's length
            // cannot be known: 400. Chunked last with another coding
            // before it is framed fine but not understood: 501 (6.1).
            if (!te_chunked_last_) return Err::TeInvalid;
            if (te_other_) return Err::TeUnknown;
        } else {
            // A response without chunked last would be read until close
            // (RFC 9112 6.3 (4)) and one with another coding could not be
            // decoded: a gateway gives up on both, as nginx does.
            if (!te_chunked_last_ || te_other_) return Err::TeUnknown;
        }
        f.chunked = true;
    }
    if constexpr (std::is_same_v<Head, RequestHead>) {
        if (head_.version_minor >= 1 && !host_seen_) return Err::HostMissing;
        // RFC 9112 3.2.2: the target's authority overrides Host.
        if (head_.form == TargetForm::Absolute || head_.form == TargetForm::Authority)
            head_.host = head_.authority;
        // RFC 9110 10.1.1: an HTTP/1.0 client cannot await 100.
        if (head_.version_minor == 0) head_.expect_100_continue = false;
    }
    return Err::None;
}

template class HeadParser<RequestHead>;
template class HeadParser<StatusHead>;

}  // namespace gatehouse::http
