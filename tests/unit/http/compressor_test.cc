// Tests of src/http/compressor.h: each codec's stream decodes to its input
// whatever the room it is given, a flush makes everything so far
// decodable, and $gzip_ratio's rounding.
#include "http/compressor.h"

#include <doctest/doctest.h>
#include <zlib.h>
#include <zstd.h>

#include <string>

using gatehouse::http::Coding;
using gatehouse::http::Compressor;
using gatehouse::http::CompressorParams;
using gatehouse::http::format_ratio;
using gatehouse::http::make_compressor;
using gatehouse::http::Op;

namespace {

std::string text(size_t n) {
    std::string s;
    for (size_t i = 0; s.size() < n; ++i) s += "line " + std::to_string(i % 977) + " of some text to compress\n";
    s.resize(n);
    return s;
}

// Runs `op` over `in` with output room of `room` bytes per step.
std::string run(Compressor& c, Op op, std::string_view in, size_t room) {
    std::string out;
    const char* p = in.data();
    size_t len = in.size();
    for (int guard = 0; guard < 1000000; ++guard) {
        std::string chunk(room, '\0');
        char* o = chunk.data();
        size_t left = room;
        bool done = false;
        REQUIRE(c.step(op, &p, &len, &o, &left, &done));
        out.append(chunk.data(), room - left);
        if (done) return out;
    }
    FAIL("no progress");
    return out;
}

std::string gunzip(std::string_view in, bool partial = false) {
    z_stream z{};
    REQUIRE(inflateInit2(&z, 31) == Z_OK);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    std::string out;
    char buf[4096];
    int rc = Z_OK;
    while (rc == Z_OK) {
        z.next_out = reinterpret_cast<Bytef*>(buf);
        z.avail_out = sizeof buf;
        rc = inflate(&z, Z_NO_FLUSH);
        out.append(buf, sizeof buf - z.avail_out);
        if (z.avail_in == 0 && z.avail_out != 0) break;
    }
    CHECK((partial ? rc == Z_OK : rc == Z_STREAM_END));
    inflateEnd(&z);
    return out;
}

std::string unzstd(std::string_view in) {
    ZSTD_DCtx* d = ZSTD_createDCtx();
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    std::string out;
    char buf[4096];
    while (ib.pos < ib.size) {
        ZSTD_outBuffer ob{buf, sizeof buf, 0};
        size_t rc = ZSTD_decompressStream(d, &ob, &ib);
        REQUIRE_FALSE(ZSTD_isError(rc));
        out.append(buf, ob.pos);
    }
    for (;;) {  // what the decoder still holds
        ZSTD_outBuffer ob{buf, sizeof buf, 0};
        size_t rc = ZSTD_decompressStream(d, &ob, &ib);
        REQUIRE_FALSE(ZSTD_isError(rc));
        out.append(buf, ob.pos);
        if (ob.pos < sizeof buf) break;
    }
    ZSTD_freeDCtx(d);
    return out;
}

}  // namespace

TEST_CASE("http/compressor: gzip decodes to the input, any output room") {
    const std::string in = text(300000);
    for (size_t room : {1u, 7u, 4096u, 1u << 20}) {
        CompressorParams p;
        p.level = 6;
        auto c = make_compressor(p);
        REQUIRE(c);
        std::string out = run(*c, Op::Process, in, room);
        out += run(*c, Op::Finish, {}, room);
        CHECK(out.size() < in.size() / 4);
        CHECK(gunzip(out) == in);
    }
}

TEST_CASE("http/compressor: a flush makes what was taken decodable") {
    CompressorParams p;
    auto c = make_compressor(p);
    REQUIRE(c);
    std::string out = run(*c, Op::Process, "data: first event\n\n", 4096);
    out += run(*c, Op::Flush, {}, 4096);
    CHECK(gunzip(out, true) == "data: first event\n\n");
    out += run(*c, Op::Process, "data: second\n\n", 4096);
    out += run(*c, Op::Finish, {}, 4096);
    CHECK(gunzip(out) == "data: first event\n\ndata: second\n\n");
}

TEST_CASE("http/compressor: zstd decodes to the input; flush and finish") {
    const std::string in = text(200000);
    CompressorParams p;
    p.coding = Coding::Zstd;
    p.level = 5;
    auto c = make_compressor(p);
    REQUIRE(c);
    std::string out = run(*c, Op::Process, std::string_view(in).substr(0, 1000), 100);
    out += run(*c, Op::Flush, {}, 100);
    CHECK(unzstd(out) == in.substr(0, 1000));
    out += run(*c, Op::Process, std::string_view(in).substr(1000), 100);
    out += run(*c, Op::Finish, {}, 100);
    CHECK(out.size() < in.size() / 4);
    CHECK(unzstd(out) == in);
}

TEST_CASE("http/compressor: brotli compresses and ends, a known length too") {
    const std::string in = text(100000);
    CompressorParams p;
    p.coding = Coding::Br;
    p.level = 5;
    p.length = in.size();
    auto c = make_compressor(p);
    REQUIRE(c);
    std::string out = run(*c, Op::Process, in, 333);
    out += run(*c, Op::Flush, {}, 333);
    out += run(*c, Op::Finish, {}, 333);
    CHECK(!out.empty());
    CHECK(out.size() < in.size() / 4);
}

TEST_CASE("http/compressor: a level the codec refuses gives no compressor") {
    CompressorParams p;
    p.level = 42;
    CHECK_FALSE(make_compressor(p));
}

TEST_CASE("http/compressor: $gzip_ratio rounds at the third decimal") {
    char b[24];
    CHECK(format_ratio(64, 23, b) == "2.78");  // 2.7826
    CHECK(format_ratio(1000, 3, b) == "333.33");
    CHECK(format_ratio(2005, 1000, b) == "2.01");  // 2.005 rounds up
    CHECK(format_ratio(2004, 1000, b) == "2.00");
    CHECK(format_ratio(10, 0, b) == "0.00");
}
