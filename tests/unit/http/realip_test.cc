// The realip module on the protocol-neutral path (TestStream: the
// connection is 192.0.2.7:51234): which settings apply when, and what
// the request's client address becomes.
#include <doctest/doctest.h>

#include <string>

#include "http/proxy_protocol.h"
#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;
namespace http = gatehouse::http;

namespace {

// A static file answers, not "return": a location's own settings apply
// at Preaccess, after the rewrite phase "return" answers in (as nginx).
const char* kEcho = R"(add_header X-IP "$remote_addr|$remote_port|$realip_remote_addr|$realip_remote_port";)";

void files(Site& s) {
    for (const char* d : {"xri", "none", "t"}) s.dir.mkdir(std::string("html/") + d);
    for (const char* f : {"html/x.html", "html/xri/x.html", "html/none/x.html", "html/t/x.html"}) s.dir.write(f, "x");
}

// $remote_addr|$remote_port|$realip_remote_addr|$realip_remote_port
std::string get(Site& s, std::string target, std::string extra = {}, const http::ProxyHeader* pp = nullptr) {
    Exchange x(s, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra + "\r\n");
    x.stream.proxy = pp;
    x.run();
    REQUIRE(x.stream.ended);
    REQUIRE(x.status() == 200);
    return x.stream.field("X-IP");
}

}  // namespace

TEST_CASE("http/realip: the server's settings apply at once, a location's own later, once") {
    Site s(std::string(R"(
        server { listen 127.0.0.1:8080;
            set_real_ip_from 192.0.2.0/24;
            real_ip_header X-Forwarded-For;
            location / { )") + kEcho + R"( }
            location /xri/ { real_ip_header X-Real-IP; )" + kEcho + R"( }
            location /none/ { set_real_ip_from 198.51.100.0/24; real_ip_header X-Real-IP; )" + kEcho + R"( }
        })");
    files(s);
    const std::string hdrs = "X-Forwarded-For: 203.0.113.9, 192.0.2.50:8000\r\nX-Real-IP: 203.0.113.1\r\n";
    CHECK(get(s, "/x.html", hdrs) == "192.0.2.50|8000|192.0.2.7|51234");
    // PostRead replaced it with the server's settings; the location's
    // (Preaccess) do not apply the proxy's word a second time.
    CHECK(get(s, "/xri/x.html", hdrs) == "192.0.2.50|8000|192.0.2.7|51234");
    // Without X-Forwarded-For the server level changes nothing: the
    // location's settings then apply, with its own list of proxies.
    CHECK(get(s, "/xri/x.html", "X-Real-IP: 203.0.113.1\r\n") == "203.0.113.1||192.0.2.7|51234");
    CHECK(get(s, "/none/x.html", "X-Real-IP: 203.0.113.1\r\n") == "192.0.2.7|51234|192.0.2.7|51234");
}

TEST_CASE("http/realip: a location's own settings at Preaccess") {
    Site s(std::string(R"(
        server { listen 127.0.0.1:8080;
            location / { )") + kEcho + R"( }
            location /t/ { set_real_ip_from 192.0.2.7; )" + kEcho + R"( }
        })");
    files(s);
    CHECK(get(s, "/x.html", "X-Real-IP: 203.0.113.1\r\n") == "192.0.2.7|51234|192.0.2.7|51234");
    CHECK(get(s, "/t/x.html", "X-Real-IP: 203.0.113.1\r\n") == "203.0.113.1||192.0.2.7|51234");
}

TEST_CASE("http/realip: real_ip_header proxy_protocol takes the header's address and port") {
    Site s(std::string(R"(
        server { listen 127.0.0.1:8080;
            set_real_ip_from 192.0.2.0/24;
            real_ip_header proxy_protocol;
            location / { )") + kEcho + R"( }
        })");
    files(s);
    http::ProxyParser p(1024);
    REQUIRE(p.parse("PROXY TCP6 2001:db8::1 2001:db8::2 123 5678\r\n").state == http::ProxyParseState::Done);
    http::ProxyHeader h = p.header();
    CHECK(get(s, "/x.html", "X-Real-IP: 203.0.113.1\r\n", &h) == "2001:db8::1|123|192.0.2.7|51234");
    // No header, or one without an address: nothing changes.
    CHECK(get(s, "/x.html") == "192.0.2.7|51234|192.0.2.7|51234");
    http::ProxyParser u(1024);
    REQUIRE(u.parse("PROXY UNKNOWN\r\n").state == http::ProxyParseState::Done);
    http::ProxyHeader unknown = u.header();
    CHECK(get(s, "/x.html", {}, &unknown) == "192.0.2.7|51234|192.0.2.7|51234");
}
