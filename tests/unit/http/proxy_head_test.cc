// The proxy's policy on heads, through a real Request on a TestStream:
// what the origin gets (build_request_head, nginx's rules) and what the
// client gets of the origin's answer (copy_response_head).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/modules/proxy.h"
#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;
namespace http = gatehouse::http;
namespace proxy = gatehouse::http::proxy;
namespace upstream = gatehouse::upstream;

namespace {

// Puts the request in the location named `name` of the default server
// (what the location search would do), without running the phases.
void use_location(Exchange& x, std::string_view name) {
    http::Request& r = x.r();
    auto& server_level = *static_cast<http::LocConf*>(r.srv->loc_confs[http::http_core_module.index]);
    for (http::LocConf* l : server_level.locations)
        if (l->name == name) {
            r.loc = l;
            r.loc_confs = l->loc_confs;
            return;
        }
    FAIL("no location " << name);
}

const http::ProxyConf& pconf(Exchange& x) { return x.r().loc_conf<http::ProxyConf>(http::proxy_module); }

constexpr const char* kClient =
    "GET /in?q=1 HTTP/1.1\r\nHost: client.test\r\nUser-Agent: ua\r\nConnection: keep-alive, X-Hop\r\n"
    "X-Hop: private\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nAccept: */*\r\n"
    "Accept-Encoding: gzip\r\n\r\n";

}  // namespace

TEST_CASE("http/proxy head: nginx's defaults for the origin's request") {
    Site s(R"(server { listen 127.0.0.1:8080;
        location / { proxy_pass http://127.0.0.1:9; }
    })");
    Exchange x(s, kClient);
    use_location(x, "/");
    proxy::HeadInputs in;
    in.method = "GET";
    in.uri = "/in?q=1";
    in.host = "127.0.0.1:9";
    auto o = proxy::build_request_head(x.r(), pconf(x), in);
    // The client's fields in order, without the hop-by-hop ones (those its
    // Connection lists too) and its Host; ours first.
    CHECK(o.head == "GET /in?q=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\nUser-Agent: ua\r\n"
                    "Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n");
    CHECK(o.close);
    CHECK_FALSE(o.upgrade);
    CHECK(o.uri == "/in?q=1");
}

TEST_CASE("http/proxy head: proxy_set_header, pooling, HTTP/1.0 and the body's framing") {
    Site s(R"(server { listen 127.0.0.1:8080;
        location /set/ {
            proxy_pass http://127.0.0.1:9;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Accept-Encoding "";
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }
        location /old/ { proxy_pass http://127.0.0.1:9; proxy_http_version 1.0; }
        location /bare/ { proxy_pass http://127.0.0.1:9; proxy_pass_request_headers off; }
    })");
    {
        Exchange x(s, "GET /set/ HTTP/1.1\r\nHost: Client.Test\r\nUpgrade: websocket\r\nAccept-Encoding: br\r\n"
                      "Content-Length: 5\r\n\r\n");
        use_location(x, "/set/");
        x.r().host = "client.test";  // as start_request normalises it
        proxy::HeadInputs in;
        in.method = "POST";
        in.uri = "/set/";
        in.host = "127.0.0.1:9";
        in.pooled = true;
        in.body_length = 5;
        auto o = proxy::build_request_head(x.r(), pconf(x), in);
        CHECK(o.head == "POST /set/ HTTP/1.1\r\nHost: client.test\r\nX-Real-IP: 192.0.2.7\r\nUpgrade: websocket\r\n"
                        "Connection: upgrade\r\nContent-Length: 5\r\n\r\n");
        CHECK(o.upgrade);
        CHECK_FALSE(o.close);
    }
    {
        Exchange x(s, "POST /old/ HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n");
        use_location(x, "/old/");
        proxy::HeadInputs in;
        in.method = "POST";
        in.uri = "/old/";
        in.host = "h";
        in.pooled = true;
        in.body_length = 12;
        auto o = proxy::build_request_head(x.r(), pconf(x), in);
        // HTTP/1.0 cannot be pooled; the client's framing is never passed.
        CHECK(o.head == "POST /old/ HTTP/1.0\r\nHost: h\r\nConnection: close\r\nContent-Length: 12\r\n\r\n");
        CHECK(o.close);
    }
    {
        Exchange x(s, "GET /bare/ HTTP/1.1\r\nHost: c\r\nCookie: a=b\r\n\r\n");
        use_location(x, "/bare/");
        proxy::HeadInputs in;
        in.method = "GET";
        in.uri = "/bare/";
        in.host = "h";
        in.body_chunked = true;
        auto o = proxy::build_request_head(x.r(), pconf(x), in);
        CHECK(o.head == "GET /bare/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
    }
}

TEST_CASE("http/proxy head: the client's fields a module changed are what the origin gets") {
    Site s(R"(server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:9; } })");
    Exchange x(s, "GET / HTTP/1.1\r\nHost: c\r\nIf-None-Match: \"old\"\r\n\r\n");
    use_location(x, "/");
    // A cache revalidating would replace the condition.
    x.r().headers.set("If-None-Match", "\"v2\"");
    x.r().headers.add("X-Added", "1");
    proxy::HeadInputs in;
    in.method = "GET";
    in.uri = "/";
    in.host = "h";
    auto o = proxy::build_request_head(x.r(), pconf(x), in);
    CHECK(o.head == "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nIf-None-Match: \"v2\"\r\nX-Added: 1\r\n\r\n");
}

TEST_CASE("http/proxy head: what the client gets of the origin's head") {
    Site s(R"(server { listen 127.0.0.1:8080;
        location /app/ { proxy_pass http://127.0.0.1:9/inner/; proxy_hide_header X-Secret; proxy_pass_header Server; }
    })");
    Exchange x(s, "GET /app/x HTTP/1.1\r\nHost: c\r\n\r\n");
    use_location(x, "/app/");
    std::vector<upstream::TryLog::Field> fields = {
        {"Server", "origin/1"},
        {"Date", "Mon, 01 Jan 2024 00:00:00 GMT"},
        {"Connection", "keep-alive, X-Conn-Named"},
        {"X-Conn-Named", "gone"},
        {"Keep-Alive", "timeout=5"},
        {"Transfer-Encoding", "chunked"},
        {"Content-Type", "text/plain"},
        {"ETag", "\"e1\""},
        {"Last-Modified", "Tue, 02 Jan 2024 00:00:00 GMT"},
        {"Location", "http://127.0.0.1:9/inner/next"},
        {"Refresh", "5; url=http://127.0.0.1:9/inner/r"},
        {"X-Secret", "s"},
        {"X-Accel-Buffering", "no"},
        {"X-Accel-Redirect", "/internal"},
        {"Set-Cookie", "a=1"},
        {"Set-Cookie", "b=2"},
    };
    http::Framing fr;
    fr.chunked = true;
    std::optional<bool> accel;
    proxy::copy_response_head(x.r(), pconf(x), *pconf(x).pass, 302, "Found", fields, fr, &accel);
    const http::ResponseHead& out = x.r().out;
    CHECK(out.status == 302);
    CHECK(out.reason == "Found");
    CHECK(out.content_type == "text/plain");
    CHECK(out.etag == "\"e1\"");
    CHECK(out.last_modified == 1704153600);
    // "proxy_redirect default": the proxy_pass URL becomes the location.
    CHECK(out.location == "/app/next");
    CHECK_FALSE(out.content_length);
    REQUIRE(accel);
    CHECK_FALSE(*accel);
    std::vector<std::string> names;
    for (const auto& h : out.headers) names.push_back(std::string(h.name) + ": " + std::string(h.value));
    CHECK(names == std::vector<std::string>{"Server: origin/1", "Refresh: 5; url=/app/r", "Set-Cookie: a=1",
                                            "Set-Cookie: b=2"});
}

TEST_CASE("http/proxy head: a length-framed body keeps its length, 304 does not") {
    Site s(R"(server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:9; } })");
    for (int status : {200, 304}) {
        Exchange x(s, "GET / HTTP/1.1\r\nHost: c\r\n\r\n");
        use_location(x, "/");
        http::Framing fr;
        fr.content_length = 42;
        std::optional<bool> accel;
        proxy::copy_response_head(x.r(), pconf(x), *pconf(x).pass, status, {}, {}, fr, &accel);
        CAPTURE(status);
        CHECK(x.r().out.content_length == (status == 200 ? std::optional<uint64_t>(42) : std::nullopt));
        CHECK_FALSE(accel);
    }
}
