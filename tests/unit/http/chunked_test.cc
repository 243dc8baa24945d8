#include "http/chunked.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace gatehouse::http;
using namespace std::literals;

namespace {

struct Outcome {
    ChunkState state = ChunkState::More;
    std::string body;
    std::string trailer;  // the trailer bytes handed out, joined
    size_t consumed = 0;  // Error: offset of the offending byte
    uint16_t status = 0;
    std::string_view reason;
    bool views_inside = true;  // every data view lay inside its piece
};

// Decodes `in` fed in pieces of `piece` bytes, each in its own buffer.
Outcome run(std::string_view in, ChunkedLimits l = {}, Peer peer = Peer::Client,
            size_t piece = SIZE_MAX) {
    ChunkedDecoder d(l, peer);
    Outcome o;
    size_t pos = 0;
    while (pos < in.size()) {
        const std::string copy(in.substr(pos, piece));
        std::string_view cur = copy;
        while (!cur.empty()) {
            const ChunkResult r = d.decode(cur);
            if (!r.data.empty() && (r.data.data() < cur.data() ||
                                    r.data.data() + r.data.size() > cur.data() + cur.size()))
                o.views_inside = false;
            if (!r.trailer.empty() && (r.trailer.data() < cur.data() ||
                                       r.trailer.data() + r.trailer.size() > cur.data() + cur.size()))
                o.views_inside = false;
            o.body += r.data;
            o.trailer += r.trailer;
            o.consumed += r.consumed;
            if (r.state != ChunkState::More) {
                o.state = r.state;
                o.status = r.status;
                o.reason = r.reason;
                return o;
            }
            cur.remove_prefix(r.consumed);
        }
        pos += copy.size();
    }
    return o;
}

void check_error(std::string_view in, uint16_t status, std::string_view reason,
                 ChunkedLimits l = {}) {
    CAPTURE(in);
    const Outcome o = run(in, l);
    CHECK(o.state == ChunkState::Error);
    CHECK(o.status == status);
    CHECK(o.reason == reason);
}

}  // namespace

TEST_CASE("http/chunked: decodes a body and stops at its end") {
    const std::string body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    Outcome o = run(body + "GET / HTTP/1.1\r\n");
    CHECK(o.state == ChunkState::Done);
    CHECK(o.body == "hello world");
    CHECK(o.consumed == body.size());
    CHECK(o.views_inside);
}

TEST_CASE("http/chunked: sizes in either case, with leading zeros") {
    Outcome o = run("A\r\n0123456789\r\na\r\nabcdefghij\r\n00005\r\nxxxxx\r\n000\r\n\r\n");
    CHECK(o.state == ChunkState::Done);
    CHECK(o.body == "0123456789abcdefghijxxxxx");
}

TEST_CASE("http/chunked: extensions are skipped") {
    Outcome o = run("5;name=value;q=\"a b;c\"\r\nhello\r\n3 ; x\r\nabc\r\n2\t\r\nde\r\n0;last\r\n\r\n");
    CHECK(o.state == ChunkState::Done);
    CHECK(o.body == "helloabcde");
}

TEST_CASE("http/chunked: trailers are checked and handed out whole, without the final CRLF") {
    const std::string s = "1\r\nx\r\n0\r\nX-Sum: abc\r\nY:\r\n\r\nNEXT";
    Outcome o = run(s);
    CHECK(o.state == ChunkState::Done);
    CHECK(o.body == "x");
    CHECK(o.trailer == "X-Sum: abc\r\nY:\r\n");
    CHECK(o.consumed == s.size() - 4);
    CHECK(run("0\r\n\r\n").trailer.empty());
}

TEST_CASE("http/chunked: any split gives the same result") {
    ChunkedLimits l;
    l.max_line = 16;
    l.max_trailers = 16;
    l.max_body = 40;
    const std::string inputs[] = {
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nrest",
        "1;a=b\r\nx\r\n0\r\nT: v\r\n\r\n",
        "5\r\nhelloX",
        "5\r\nhello\r\n0\r\nX: " + std::string(20, 'y') + "\r\n\r\n",
        "20\r\n" + std::string(32, 'z') + "\r\n10\r\n",
        "5;" + std::string(20, 'e') + "\r\n",
        "5\nhello",
        "0\r\n\rX",
    };
    for (const std::string& s : inputs) {
        CAPTURE(s);
        const Outcome whole = run(s, l);
        for (size_t piece = 1; piece <= s.size(); ++piece) {
            CAPTURE(piece);
            const Outcome o = run(s, l, Peer::Client, piece);
            CHECK(o.state == whole.state);
            CHECK(o.body == whole.body);
            // An error leaves what came before it unusable: only a
            // finished section is compared.
            if (whole.state == ChunkState::Done) CHECK(o.trailer == whole.trailer);
            CHECK(o.consumed == whole.consumed);
            CHECK(o.reason == whole.reason);
            CHECK(o.views_inside);
        }
    }
}

TEST_CASE("http/chunked: invalid chunk sizes are 400") {
    for (std::string_view s : {";x\r\n"sv, "-5\r\n"sv, "+5\r\n"sv, "0x5\r\n"sv, " 5\r\n"sv,
                               "g\r\n"sv, "5x\r\n"sv, "\r\n"sv})
        check_error(s, 400, "client sent invalid chunk size");
}

TEST_CASE("http/chunked: oversized chunks") {
    // 2^64 does not fit; 2^63 is past the largest off_t.
    check_error("10000000000000000\r\n", 400, "client sent too large chunk size");
    check_error("8000000000000000\r\n", 400, "client sent too large chunk size");
    check_error("ffffffffffffffffffff\r\n", 400, "client sent too large chunk size");
    CHECK(run("7fffffffffffffff\r\nabc").state == ChunkState::More);
    ChunkedLimits l;
    l.max_chunk_size = 1024;
    CHECK(run("400\r\n", l).state == ChunkState::More);
    check_error("401\r\n", 400, "client sent too large chunk size", l);
    // Leading zeros do not count against the size.
    CHECK(run("00000000000000000000400\r\n", l).state == ChunkState::More);
}

TEST_CASE("http/chunked: max_body is 413, announced or not") {
    ChunkedLimits l;
    l.max_body = 10;
    CHECK(run("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", l).state == ChunkState::Done);
    check_error("5\r\nhello\r\n6\r\n", 413, "client intended to send too large chunked body", l);
    check_error("b\r\n", 413, "client intended to send too large chunked body", l);
    const Outcome o = run("b\r\n", l, Peer::Upstream);
    CHECK(o.status == 502);
    CHECK(o.reason == "upstream sent too large chunked body");
}

TEST_CASE("http/chunked: CRLF after data is required") {
    check_error("5\r\nhelloX\r\n", 400, "client sent chunk data without CRLF");
    check_error("5\r\nhello\n0\r\n\r\n", 400, "client sent chunk data without CRLF");
    check_error("5\r\nhello\rX", 400, "client sent chunk data without CRLF");
    check_error("5\r\nhello0\r\n\r\n", 400, "client sent chunk data without CRLF");
    CHECK(run("5\r\nhello\r").state == ChunkState::More);
}

TEST_CASE("http/chunked: bare LF and bare CR are errors") {
    const std::string_view reason = "client sent invalid line ending in chunked body";
    check_error("5\nhello\r\n", 400, reason);
    check_error("5\r\rhello\r\n", 400, reason);
    check_error("5;a\nhello\r\n", 400, reason);
    check_error("5 \nhello\r\n", 400, reason);
    check_error("0\r\n\n", 400, reason);
    check_error("0\r\nX: y\n\r\n", 400, reason);
    check_error("0\r\nX: y\r\r\n", 400, reason);
    check_error("0\r\n\rX", 400, reason);
}

TEST_CASE("http/chunked: extension and trailer syntax") {
    check_error("5;a\x01\r\n", 400, "client sent invalid chunk extension");
    check_error("5 x\r\n", 400, "client sent invalid chunk extension");
    check_error("5;a\x7f\r\n", 400, "client sent invalid chunk extension");
    check_error("0\r\n y\r\n\r\n", 400, "client sent invalid trailer field");
    check_error("0\r\nX y\r\n\r\n", 400, "client sent invalid trailer field");
    check_error("0\r\n: y\r\n\r\n", 400, "client sent invalid trailer field");
    check_error("0\r\nX: \x01\r\n\r\n", 400, "client sent invalid trailer field");
}

TEST_CASE("http/chunked: line and trailer limits, at and one past") {
    ChunkedLimits l;
    l.max_line = 8;
    l.max_trailers = 7;
    CHECK(run("00000005\r\nhello\r\n0\r\n\r\n", l).state == ChunkState::Done);
    check_error("000000005\r\n", 400, "client sent too long chunk size line", l);
    CHECK(run("5;abcdef\r\nhello\r\n0\r\n\r\n", l).state == ChunkState::Done);
    check_error("5;abcdefg\r\n", 400, "client sent too long chunk size line", l);
    check_error("5;abcdefg", 400, "client sent too long chunk size line", l);  // no CRLF needed
    CHECK(run("0\r\nX: yy\r\n\r\n", l).state == ChunkState::Done);
    check_error("0\r\nX: yyy\r\n\r\n", 400, "client sent too large trailer section", l);
}

TEST_CASE("http/chunked: Done and Error stick; reset starts over") {
    ChunkedDecoder d;
    ChunkResult r = d.decode("3\r\nabc\r\n");
    CHECK(r.data == "abc");
    CHECK(r.consumed == 6);
    r = d.decode("\r\n0\r\n\r\nX");
    CHECK(r.state == ChunkState::Done);
    CHECK(r.consumed == 7);
    CHECK(d.done());
    CHECK(d.body_size() == 3);
    r = d.decode("5\r\n");
    CHECK(r.state == ChunkState::Done);
    CHECK(r.consumed == 0);
    d.reset();
    CHECK_FALSE(d.done());
    r = d.decode("z");
    CHECK(r.state == ChunkState::Error);
    CHECK(r.consumed == 0);
    r = d.decode("5\r\n");
    CHECK(r.state == ChunkState::Error);
    CHECK(r.status == 400);
}

TEST_CASE("http/chunked: write_chunk_header and a round trip") {
    char buf[kMaxChunkHeader];
    CHECK(std::string_view(buf, write_chunk_header(1, buf)) == "1\r\n");
    CHECK(std::string_view(buf, write_chunk_header(255, buf)) == "ff\r\n");
    CHECK(std::string_view(buf, write_chunk_header(0x1000, buf)) == "1000\r\n");
    CHECK(std::string_view(buf, write_chunk_header(UINT64_MAX, buf)) == "ffffffffffffffff\r\n");

    std::string wire, body;
    for (size_t n : {1u, 2u, 15u, 16u, 17u, 300u, 4096u}) {
        const std::string data(n, static_cast<char>('a' + n % 26));
        wire.append(buf, write_chunk_header(n, buf));
        wire += data;
        wire += kChunkEnd;
        body += data;
    }
    wire += kLastChunk;
    for (size_t piece : {size_t{1}, size_t{7}, size_t{1000}, SIZE_MAX}) {
        const Outcome o = run(wire, {}, Peer::Client, piece);
        CHECK(o.state == ChunkState::Done);
        CHECK(o.body == body);
        CHECK(o.consumed == wire.size());
    }
}
