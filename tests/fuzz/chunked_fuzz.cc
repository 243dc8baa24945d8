// libFuzzer target for the chunked decoder (src/http/chunked.h).
//
// Input: one byte of options (limits, peer), one byte seeding the split
// points, then the body bytes. Checked for every input:
// - a plain whole-input reference decoder, written independently below,
//   agrees on the outcome, the body, and where the body or the error is;
// - feeding one byte at a time, or in pieces, each piece in its own
//   buffer, gives the same result; data views lie inside their piece;
// - Done and Error stick; a decoded body, re-encoded with
//   write_chunk_header(), decodes to itself.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/assert.h"
#include "http/chunked.h"

using namespace gatehouse::http;

namespace {

struct Outcome {
    ChunkState state = ChunkState::More;
    std::string body;
    size_t at = 0;  // Done: bytes of the body; Error: the offending byte; More: all
    uint16_t status = 0;
    std::string_view reason;
};

bool operator==(const Outcome& a, const Outcome& b) {
    return a.state == b.state && a.body == b.body && a.at == b.at && a.status == b.status &&
           a.reason == b.reason;
}

// Feeds `in` in pieces whose sizes `next_piece` picks, each copied into a
// buffer of its own that dies after use.
template <class Next>
Outcome feed(std::string_view in, const ChunkedLimits& l, Peer peer, Next next_piece) {
    ChunkedDecoder d(l, peer);
    Outcome o;
    size_t pos = 0;
    while (pos < in.size()) {
        const std::string piece(in.substr(pos, next_piece()));
        std::string_view cur = piece;
        while (!cur.empty()) {
            const ChunkResult r = d.decode(cur);
            GH_CHECK(r.consumed <= cur.size());
            if (!r.data.empty())
                GH_CHECK(r.data.data() >= cur.data() &&
                         r.data.data() + r.data.size() <= cur.data() + cur.size());
            o.body += r.data;
            o.at += r.consumed;
            if (r.state != ChunkState::More) {
                o.state = r.state;
                o.status = r.status;
                o.reason = r.reason;
                // Sticky: the same answer, nothing consumed.
                const ChunkResult again = d.decode(cur);
                GH_CHECK(again.state == r.state && again.consumed == 0 && again.data.empty());
                if (r.state == ChunkState::Done) GH_CHECK(d.body_size() == o.body.size());
                if (r.state == ChunkState::Error) GH_CHECK(!r.reason.empty());
                return o;
            }
            GH_CHECK(r.consumed > 0);
            cur.remove_prefix(r.consumed);
        }
        pos += piece.size();
    }
    return o;
}

bool hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
uint64_t hexval(char c) {
    return static_cast<uint64_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
}
bool tchar(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos);
}
bool vchar(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}

// RFC 9112 7.1 as the decoder reads it, in the simplest style: the whole
// input at once, one pass, positions of errors as the decoder reports them.
Outcome reference(std::string_view in, const ChunkedLimits& l) {
    Outcome o;
    const size_t n = in.size();
    size_t i = 0;
    uint64_t total = 0;
    auto more = [&] {
        o.state = ChunkState::More;
        o.at = n;
        return o;
    };
    auto err = [&](size_t at) {
        o.state = ChunkState::Error;
        o.at = at;
        return o;
    };
    for (;;) {
        size_t line = 0;
        if (i == n) return more();
        if (!hex(in[i])) return err(i);
        uint64_t size = 0;
        for (; i < n && hex(in[i]); ++i) {
            const uint64_t d = hexval(in[i]);
            if (d > l.max_chunk_size || size > (l.max_chunk_size - d) / 16) return err(i);
            size = size * 16 + d;
            if (size > l.max_body - total) return err(i);
            if (++line > l.max_line) return err(i);
        }
        for (; i < n && (in[i] == ' ' || in[i] == '\t'); ++i)
            if (++line > l.max_line) return err(i);
        if (i == n) return more();
        if (in[i] == ';') {
            for (; i < n && in[i] != '\r'; ++i) {
                if (in[i] == '\n' || !vchar(in[i])) return err(i);
                if (++line > l.max_line) return err(i);
            }
            if (i == n) return more();
        }
        if (in[i] != '\r') return err(i);
        if (++i == n) return more();
        if (in[i++] != '\n') return err(i - 1);
        total += size;
        if (size == 0) break;
        const size_t take = static_cast<size_t>(std::min<uint64_t>(size, n - i));
        o.body.append(in.substr(i, take));
        i += take;
        if (take < size || i == n) return more();
        if (in[i++] != '\r') return err(i - 1);
        if (i == n) return more();
        if (in[i++] != '\n') return err(i - 1);
    }
    size_t tr = 0;
    for (;;) {
        if (i == n) return more();
        if (in[i] == '\r') {
            if (++i == n) return more();
            if (in[i] != '\n') return err(i);
            o.state = ChunkState::Done;
            o.at = i + 1;
            return o;
        }
        if (!tchar(in[i])) return err(i);
        for (; i < n && tchar(in[i]); ++i)
            if (++tr > l.max_trailers) return err(i);
        if (i == n) return more();
        if (in[i] != ':') return err(i);
        if (++tr > l.max_trailers) return err(i);
        for (++i; i < n && in[i] != '\r'; ++i) {
            if (!vchar(in[i])) return err(i);
            if (++tr > l.max_trailers) return err(i);
        }
        if (i == n) return more();
        if (++tr > l.max_trailers) return err(i);
        if (++i == n) return more();
        if (in[i] != '\n') return err(i);
        if (++tr > l.max_trailers) return err(i);
        ++i;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const uint8_t opt = data[0];
    const uint8_t seed = data[1];
    const std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);

    ChunkedLimits l;
    if (opt & 1) {
        l.max_chunk_size = 1u << (opt >> 3);
        l.max_body = 64u + (opt >> 2) * 16u;
        l.max_line = 4 + (opt >> 4);
        l.max_trailers = 8 + (opt >> 3);
    }
    const Peer peer = opt & 2 ? Peer::Upstream : Peer::Client;

    const Outcome whole = feed(in, l, peer, [&] { return in.size(); });
    GH_CHECK(whole.body.size() <= in.size() && whole.at <= in.size());
    if (whole.state == ChunkState::Error) {
        if (peer == Peer::Upstream)
            GH_CHECK(whole.status == 502);
        else
            GH_CHECK(whole.status == 400 || whole.status == 413);
    }

    const Outcome ref = reference(in, l);
    GH_CHECK(ref.state == whole.state);
    GH_CHECK(ref.at == whole.at);
    GH_CHECK(ref.body == whole.body);

    GH_CHECK(feed(in, l, peer, [] { return size_t{1}; }) == whole);
    uint32_t x = seed * 2654435761u + 1;
    GH_CHECK(feed(in, l, peer, [&] {
                 x = x * 1103515245u + 12345u;
                 return size_t{1} + (x >> 16) % 32;
             }) == whole);

    if (whole.state == ChunkState::Done && !whole.body.empty()) {
        std::string wire;
        char head[kMaxChunkHeader];
        const size_t step = 1 + seed % 7;
        for (size_t i = 0; i < whole.body.size(); i += step) {
            const std::string_view part = std::string_view(whole.body).substr(i, step);
            wire.append(head, write_chunk_header(part.size(), head));
            wire += part;
            wire += kChunkEnd;
        }
        wire += kLastChunk;
        const Outcome again = feed(wire, {}, peer, [&] { return wire.size(); });
        GH_CHECK(again.state == ChunkState::Done && again.body == whole.body &&
                 again.at == wire.size());
    }
    return 0;
}
