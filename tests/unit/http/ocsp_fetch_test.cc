// Tests of src/http/ocsp_fetch.h's pure part: the request head (the
// exchange itself is tests/integration/test_ocsp_stapling.py's and
// test_ssl_ocsp.py's).
#include "http/ocsp_fetch.h"

#include <doctest/doctest.h>

using namespace gatehouse;

TEST_CASE("http/ocsp_fetch: the head is an HTTP/1.0 GET of the escaped request with its Host") {
    auto u = tls::parse_responder_url("http://ocsp.example.com:8080/check");
    REQUIRE(u);
    CHECK(http::ocsp_get_head(*u, std::string("\xfb\xff", 2)) ==
          "GET /check/%2B%2F8%3D HTTP/1.0\r\nHost: ocsp.example.com:8080\r\n\r\n");
    u = tls::parse_responder_url("http://[::1]/");
    REQUIRE(u);
    CHECK(http::ocsp_get_head(*u, "a") == "GET /YQ%3D%3D HTTP/1.0\r\nHost: [::1]\r\n\r\n");
}
