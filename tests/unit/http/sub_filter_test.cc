// Tests of src/http/modules/sub_filter.cc through the request path
// (test_stream.h): what waits in memory stays bounded whatever the file's
// size and however much the replacements add, with a client that reads
// nothing and then reads slowly; once every string was found the rest of
// a file goes on as it is.
#include <string>

#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;

namespace {

constexpr const char* kConf = R"(
types { text/html html; }
server {
    listen 127.0.0.1:8080;
    location /long/ {
        alias html/;
        sub_filter_once off;
        sub_filter a "<a replacement much longer than the sixty-four bytes that are copied>";
    }
    location /short/ { alias html/; sub_filter_once off; sub_filter a XYZ; }
    location /once/ { alias html/; sub_filter a XYZ; sub_filter b W; }
})";

// 1 MiB of "a." with every "a" replaced by `rep`.
std::string expected(const std::string& rep, size_t n) {
    std::string s;
    s.reserve(n * (rep.size() + 1));
    for (size_t i = 0; i < n; ++i) s += rep + ".";
    return s;
}

}  // namespace

TEST_CASE("http/sub_filter: a large file is replaced, paced by the client") {
    Site s(kConf);
    const size_t n = 512 * 1024;
    std::string file;
    for (size_t i = 0; i < n; ++i) file += "a.";
    s.dir.write("html/t.html", file);
    const std::string longer = "<a replacement much longer than the sixty-four bytes that are copied>";
    for (const auto& [path, rep] : {std::pair<std::string, std::string>{"/long/", longer}, {"/short/", "XYZ"}}) {
        CAPTURE(path);
        Exchange x(s, "GET " + path + "t.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
        x.stream.window = 0;  // the client reads nothing yet
        x.run();
        CHECK_FALSE(x.stream.ended);
        CHECK_FALSE(x.stream.has_field("Content-Length"));
        // The stream's busy mark, plus what one segment of input (1 KiB)
        // can become: the output grows 35 times here, yet what waits stays
        // near the mark instead of growing with the body.
        const size_t bound = gatehouse::http::kOutputBusy + 1024 * (rep.size() + 1);
        CHECK(x.stream.max_pending <= bound);
        x.read_slowly(256 * 1024);
        CHECK(x.stream.max_pending <= bound);
        REQUIRE(x.stream.ended);
        CHECK(x.body() == expected(rep, n));
    }
}

TEST_CASE("http/sub_filter: once every string was found the rest goes as it is") {
    Site s(kConf);
    std::string file = "..a..b.." + std::string(100000, 'a') + "b";
    s.dir.write("html/t.html", file);
    Exchange x(s, "GET /once/t.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    CHECK(x.body() == "..XYZ..W.." + std::string(100000, 'a') + "b");
}

TEST_CASE("http/sub_filter: its filters, and userid's, join the chains only where configured") {
    // ModuleHooks::filters_used: a generation that never says sub_filter
    // or "userid on" has neither filter to call for every response.
    Site plain("server { listen 127.0.0.1:8080; location / { return 200 x; } }");
    Site both(R"(server { listen 127.0.0.1:8080;
        location / { return 200 x; }
        location /s/ { sub_filter a b; }
        location /u/ { userid on; } })");
    Site log_only("server { listen 127.0.0.1:8080; userid log; location / { return 200 x; } }");
    CHECK(both.main().header_filters.size() == plain.main().header_filters.size() + 2);
    CHECK(both.main().body_filters.size() == plain.main().body_filters.size() + 1);
    // "userid log" reads cookies and sends none: no filter.
    CHECK(log_only.main().header_filters.size() == plain.main().header_filters.size());
}
