// Tests of src/http/modules/charset.cc through the request path
// (test_stream.h): a file Buf recoded to UTF-8 with a client that reads
// nothing must not make output pile up, and what comes out is the whole
// body once the client reads.
#include <string>

#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;

namespace {

constexpr const char* kConf = R"(
charset_map koi8-r utf-8 {
    C1 D0B0;
    C2 D0B1;
}
types { text/html html; }
server {
    listen 127.0.0.1:8080;
    source_charset koi8-r;
    location /u/ { alias html/; charset utf-8; }
    location /k/ { alias html/; charset koi8-r; }
})";

}  // namespace

TEST_CASE("http/charset_filter: a large file is recoded, paced by the client") {
    Site s(kConf);
    const size_t n = 4u << 20;  // 4 MiB of koi8-r: 8 MiB of UTF-8
    std::string koi;
    for (size_t i = 0; i < n / 2; ++i) koi += "\xC1\xC2";
    s.dir.write("html/t.html", koi);
    Exchange x(s, "GET /u/t.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.stream.window = 0;  // the client reads nothing yet
    x.run();
    CHECK_FALSE(x.stream.ended);
    CHECK(x.r().out.charset == "utf-8");
    CHECK_FALSE(x.stream.has_field("Content-Length"));
    // What waits in memory stays within the stream's busy mark plus one
    // call's slabs (16 of 8 KiB), whatever the file's size: the engine's
    // output_pending() counts the held file Buf too, but those bytes are
    // still in the file.
    CHECK(x.stream.max_pending <= gatehouse::http::kOutputBusy + 16 * 8 * 1024);
    x.read_slowly(256 * 1024);
    CHECK(x.stream.max_pending <= gatehouse::http::kOutputBusy + 16 * 8 * 1024);
    REQUIRE(x.stream.ended);
    std::string want;
    want.reserve(2 * n);
    for (size_t i = 0; i < n / 2; ++i) want += "\xD0\xB0\xD0\xB1";
    CHECK(x.body() == want);
}

TEST_CASE("http/charset_filter: the same charset leaves the file alone") {
    Site s(kConf);
    s.dir.write("html/t.html", "\xC1\xC2");
    Exchange x(s, "GET /k/t.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    CHECK(x.r().out.charset == "koi8-r");
    CHECK(x.stream.field("Content-Length") == "2");
    CHECK(x.body() == "\xC1\xC2");
}
