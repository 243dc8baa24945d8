// Tests of src/http/modules/gunzip_filter.cc through the request path
// (test_stream.h): "gzip_static always" hands the filter a file Buf, a
// slow client (the stream's window) must pace the inflater, and a bomb
// must not make output pile up.
#include <zlib.h>

#include <string>

#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;

namespace {

// `text` in gzip format (one member), as gzip(1) or Python would write it.
std::string gzip_of(const std::string& text) {
    z_stream z{};
    REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    std::string out(deflateBound(&z, text.size()) + 64, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
    z.avail_in = static_cast<uInt>(text.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
    out.resize(z.total_out);
    deflateEnd(&z);
    return out;
}

constexpr const char* kConf = R"(server {
    listen 127.0.0.1:8080;
    location / {
        gzip_static always;
        gunzip on;
        gunzip_buffers 2 1k;
    }
})";

std::string pattern(size_t n) {
    std::string s;
    for (size_t i = 0; s.size() < n; ++i) s += "line " + std::to_string(i) + " of the text\n";
    s.resize(n);
    return s;
}

}  // namespace

TEST_CASE("http/gunzip_filter: a file is inflated for a client without gzip") {
    Site s(kConf);
    std::string text = pattern(100000);
    s.dir.write("html/t.txt.gz", gzip_of(text) + gzip_of("and a second member\n"));
    Exchange x(s, "GET /t.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.stream.window = 4096;
    x.run();
    x.read_slowly(4096);
    REQUIRE(x.stream.ended);
    CHECK(x.stream.status == 200);
    CHECK_FALSE(x.stream.has_field("Content-Encoding"));
    CHECK_FALSE(x.stream.has_field("Content-Length"));
    CHECK(x.stream.field("ETag").starts_with("W/\""));
    CHECK(x.body() == text + "and a second member\n");
}

TEST_CASE("http/gunzip_filter: a gzip client gets the file as it is") {
    Site s(kConf);
    std::string gz = gzip_of(pattern(5000));
    s.dir.write("html/t.txt.gz", gz);
    Exchange x(s, "GET /t.txt HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    CHECK(x.stream.field("Content-Encoding") == "gzip");
    CHECK(x.body() == gz);
}

TEST_CASE("http/gunzip_filter: a bomb is paced by the client, output never piles up") {
    Site s(kConf);
    const size_t size = 32u << 20;  // 32 MiB of zeros: about 32 KiB of gzip
    std::string gz = gzip_of(std::string(size, '\0'));
    CHECK(gz.size() < 64 * 1024);
    s.dir.write("html/bomb.gz", gz);
    Exchange x(s, "GET /bomb HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.stream.window = 0;  // the client reads nothing yet
    x.run();
    // Stalled: what waits is the busy mark plus one call's buffers at most.
    CHECK_FALSE(x.stream.ended);
    size_t stalled = gatehouse::http::output_pending(x.r());
    CHECK(stalled <= gatehouse::http::kOutputBusy + 2 * 1024 + gz.size());
    x.read_slowly(256 * 1024);
    REQUIRE(x.stream.ended);
    CHECK(x.body().size() == size);
    CHECK(x.body().find_first_not_of('\0') == std::string::npos);
    CHECK(x.stream.max_pending <= gatehouse::http::kOutputBusy + 2 * 1024 + gz.size());
}

TEST_CASE("http/gunzip_filter: a truncated file cuts the response") {
    Site s(kConf);
    std::string gz = gzip_of(pattern(50000));
    s.dir.write("html/t.txt.gz", gz.substr(0, gz.size() / 2));
    Exchange x(s, "GET /t.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    x.read_slowly(SIZE_MAX);
    CHECK(x.stream.aborted);
    CHECK_FALSE(x.stream.ended);
}

TEST_CASE("http/gunzip_filter: HEAD gets the inflated head and no body") {
    Site s(kConf);
    s.dir.write("html/t.txt.gz", gzip_of("abc"));
    Exchange x(s, "HEAD /t.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    CHECK_FALSE(x.stream.has_field("Content-Encoding"));
    CHECK(x.body().empty());
}
