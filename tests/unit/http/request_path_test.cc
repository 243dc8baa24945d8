// The protocol-neutral request path driven through a TestStream, without
// sockets: location choice, the phase engine and its outcomes (internal
// redirects, error pages, the redirection limit), variables, the client
// address a module may replace, and mutable request headers.
#include <doctest/doctest.h>

#include <bit>
#include <string>
#include <string_view>

#include "http/core_module.h"
#include "http/variables.h"
#include "test_stream.h"

using gatehouse::test::Exchange;
using gatehouse::test::Site;
namespace http = gatehouse::http;

namespace {

std::string get(Site& s, std::string target, std::string extra = {}) {
    Exchange x(s, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra + "\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    return std::to_string(x.status()) + " " + x.body();
}

}  // namespace

TEST_CASE("http/request path: nginx's location precedence") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            location / { return 200 "prefix /"; }
            location /a/ { return 200 "prefix /a/"; }
            location /a/b/ { return 200 "prefix /a/b/"; }
            location = /a/exact { return 200 "exact"; }
            location ^~ /static/ { return 200 "no regex"; }
            location ~ \.php$ { return 200 "regex php"; }
            location ~* \.JPG$ { return 200 "caseless jpg"; }
            location /nest/ {
                location /nest/in/ { return 200 "nested"; }
                location ~ \.txt$ { return 200 "nested regex"; }
                return 200 "outer";
            }
        })");
    struct Row {
        const char* uri;
        const char* want;
    };
    for (Row row : {Row{"/", "200 prefix /"}, Row{"/x", "200 prefix /"}, Row{"/a/", "200 prefix /a/"},
                    Row{"/a/b/c", "200 prefix /a/b/"}, Row{"/a/exact", "200 exact"},
                    Row{"/a/exact/more", "200 prefix /a/"}, Row{"/a/x.php", "200 regex php"},
                    Row{"/static/x.php", "200 no regex"}, Row{"/p/PIC.jpg", "200 caseless jpg"},
                    Row{"/nest/in/x", "200 nested"}, Row{"/nest/x.txt", "200 nested regex"},
                    Row{"/nest/y", "200 outer"}}) {
        CAPTURE(row.uri);
        CHECK(get(s, row.uri) == row.want);
    }
}

TEST_CASE("http/request path: rewrite last goes back to the location search, break stays") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            location /old/ { rewrite ^/old/(.*)$ /new/$1 last; }
            location /new/ { return 200 "new $uri"; }
            location /stay/ { add_header X-Uri $uri always; rewrite ^/stay/(.*)$ /elsewhere/$1 break; return 200 "no"; }
            location /loop/ { rewrite ^(.*)$ $1 last; }
        })");
    CHECK(get(s, "/old/x") == "200 new /new/x");
    // "break" ends the rewrite directives, "return" among them: the static
    // files answer, for the changed URI, in the same location [nginx].
    Exchange stay(s, "GET /stay/y HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stay.run();
    CHECK(stay.status() == 404);
    CHECK(stay.stream.field("X-Uri") == "/elsewhere/y");
    // Ten changes, then 500 [nginx].
    Exchange x(s, "GET /loop/z HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    CHECK(x.status() == 500);
}

TEST_CASE("http/request path: internal redirects are an outcome of the engine") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            error_page 404 /nf;
            location = /nf { internal; return 200 "not found: $uri $request_uri"; }
            location /named/ { error_page 418 = @teapot; return 418; }
            location @teapot { return 200 "teapot $status"; }
            location /status/ { error_page 404 =299 /nf; return 404; }
            location /tf/ { try_files /none @teapot; }
        })");
    // error_page to a URI: the status stays, the URI changes.
    Exchange nf(s, "GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n");
    nf.run();
    CHECK(nf.status() == 404);
    CHECK(nf.body() == "not found: /nf /missing");
    // "internal": not reachable from outside.
    CHECK(get(s, "/nf").substr(0, 3) == "404");
    // To a named location, with "=": its own status ($status is not set
    // yet while the content handler runs: "000", as nginx prints it).
    CHECK(get(s, "/named/x") == "200 teapot 000");
    // "=code" replaces the status.
    CHECK(get(s, "/status/x").substr(0, 3) == "299");
    // try_files into a named location.
    CHECK(get(s, "/tf/x") == "200 teapot 000");
}

TEST_CASE("http/request path: no content handler is 404, or 405 for other methods") {
    Site s("server { listen 127.0.0.1:8080; location /x/ { } }");
    Exchange del(s, "DELETE /x/a HTTP/1.1\r\nHost: localhost\r\n\r\n");
    del.run();
    CHECK(del.status() == 405);
    Exchange g(s, "GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n");
    g.run();
    CHECK(g.status() == 404);
    CHECK(g.stream.field("Content-Type") == "text/html");
    CHECK(g.body().find("<h1>404 Not Found</h1>") != std::string::npos);
}

TEST_CASE("http/request path: a target this server does not serve, and an unclean path") {
    Site s("server { listen 127.0.0.1:8080; location / { return 200 ok; } }");
    Exchange star(s, "OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n");
    star.run();
    CHECK(star.status() == 400);
    Exchange up(s, "GET /../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n");
    up.run();
    CHECK(up.status() == 400);
    CHECK(up.stream.close_requested);
}

TEST_CASE("http/request path: the Host header chooses the server") {
    Site s(R"(
        server { listen 127.0.0.1:8080 default_server; server_name a.test; return 200 "a $host"; }
        server { listen 127.0.0.1:8080; server_name *.b.test; return 200 "b $host $server_name"; }
        server { listen 127.0.0.1:8080; server_name ~^(?<sub>.+)\.c\.test$; return 200 "c $sub"; }
    )");
    auto on = [&](std::string host) {
        Exchange x(s, "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
        x.run();
        return x.body();
    };
    CHECK(on("A.TEST:8080") == "a a.test");
    CHECK(on("x.b.test.") == "b x.b.test *.b.test");
    CHECK(on("deep.c.test") == "c deep");
    CHECK(on("other.test") == "a other.test");
}

TEST_CASE("http/request path: an address with one server skips the lookup, unless a name is a regex") {
    {
        Site s(R"(server { listen 127.0.0.1:8080; server_name a.test *.a.test www.*; return 200 "$host $server_name"; })");
        CHECK(s.servers().one_server);
        Exchange x(s, "GET / HTTP/1.1\r\nHost: Other.Test\r\n\r\n");
        x.run();
        CHECK(x.body() == "other.test a.test");
    }
    {
        // The regex's captures are variables: the name is matched even
        // though the server would be the same.
        Site s(R"(server { listen 127.0.0.1:8080; server_name ~^(?<sub>.+)\.c\.test$; return 200 "c $sub"; })");
        CHECK_FALSE(s.servers().one_server);
        Exchange x(s, "GET / HTTP/1.1\r\nHost: deep.c.test\r\n\r\n");
        x.run();
        CHECK(x.body() == "c deep");
    }
    {
        Site s(R"(
            server { listen 127.0.0.1:8080; return 200 "first"; }
            server { listen 127.0.0.1:8080; server_name b.test; return 200 "b"; }
        )");
        CHECK_FALSE(s.servers().one_server);
    }
}

TEST_CASE("http/request path: variables from the request and the stream") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            location / {
                return 200 "$request_method|$uri|$args|$arg_b|$request_uri|$http_x_thing|$cookie_id|$remote_addr|$remote_port|$server_addr|$server_port|$scheme|$connection|$connection_requests|$server_protocol|$is_args";
            }
        })");
    Exchange x(s,
               "GET /p%61th?a=1&b=two HTTP/1.1\r\nHost: localhost\r\nX-Thing: one\r\nX-Thing: two\r\n"
               "Cookie: id=abc; z=1\r\n\r\n");
    x.run();
    CHECK(x.body() == "GET|/path|a=1&b=two|two|/p%61th?a=1&b=two|one, two|abc|192.0.2.7|51234|127.0.0.1|8080|http|"
                      "42|1|HTTP/1.1|?");
}

TEST_CASE("http/request path: the client address is the request's to replace") {
    Site s("server { listen 127.0.0.1:8080; location / { return 200 \"$remote_addr:$remote_port\"; } }");
    Exchange x(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // What a module running before the content phase (realip) would do.
    x.r().set_remote_addr("203.0.113.9");
    x.r().remote_port = 4000;
    x.run();
    CHECK(x.body() == "203.0.113.9:4000");
}

TEST_CASE("http/request path: request headers can be added, replaced and removed") {
    Site s("server { listen 127.0.0.1:8080; location / { return 200 \"[$http_a][$http_b][$http_c]\"; } }");
    Exchange x(s, "GET / HTTP/1.1\r\nHost: localhost\r\nA: 1\r\nB: 2\r\nB: 3\r\n\r\n");
    http::HeaderList& h = x.r().headers;
    CHECK(h.size() == 4);  // Host too
    REQUIRE(h.find("b") != nullptr);
    CHECK(h.find("b")->value == "2");
    // The parser's array is the starting point; a change copies it.
    const http::HeaderField* parsed = h.all().data();
    h.set("B", "4");
    CHECK(h.all().data() != parsed);
    CHECK(h.size() == 3);
    h.add("C", "5");
    CHECK(h.remove("a") == 1);
    CHECK(h.remove("absent") == 0);
    x.run();
    CHECK(x.body() == "[][4][5]");
}

TEST_CASE("http/request path: HEAD gets the head only, 304 and 204 no body") {
    Site s("server { listen 127.0.0.1:8080; location / { return 200 \"hello\"; } location /nc { return 204; } }");
    Exchange h(s, "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    h.run();
    CHECK(h.status() == 200);
    CHECK(h.stream.field("Content-Length") == "5");
    CHECK(h.body().empty());
    CHECK(h.stream.ended);
    Exchange nc(s, "GET /nc HTTP/1.1\r\nHost: localhost\r\n\r\n");
    nc.run();
    CHECK(nc.status() == 204);
    CHECK(nc.body().empty());
    CHECK_FALSE(nc.stream.has_field("Content-Length"));
}

TEST_CASE("http/request path: Location is made absolute from the stream's address") {
    Site s(R"(
        server { listen 127.0.0.1:8080; server_name example.test;
            location /r { return 301 /target; }
            location /off { absolute_redirect off; return 302 /rel; }
        })");
    Exchange r(s, "GET /r HTTP/1.1\r\nHost: example.test\r\n\r\n");
    r.run();
    CHECK(r.status() == 301);
    CHECK(r.stream.field("Location") == "http://example.test:8080/target");
    // $sent_http_location keeps what the handler set, as nginx's.
    CHECK(r.r().out.location == "/target");
    Exchange off(s, "GET /off HTTP/1.1\r\nHost: example.test\r\n\r\n");
    off.run();
    CHECK(off.stream.field("Location") == "/rel");
}

TEST_CASE("http/request path: return 444 aborts the stream without a response") {
    Site s("server { listen 127.0.0.1:8080; location / { return 444; } }");
    Exchange x(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    CHECK(x.stream.aborted);
    CHECK_FALSE(x.stream.head_sent);
    CHECK(x.r().out.status == 444);
}

namespace {

http::LocConf& location(http::LocConf& level, std::string_view name) {
    for (http::LocConf* l : level.locations)
        if (l->name == name) return *l;
    FAIL("no location " << name);
    throw;
}

std::string ask(Site& s, std::string method, std::string target) {
    Exchange x(s, method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    return std::to_string(x.status());
}

}  // namespace

TEST_CASE("http/request path: a step with nothing to do in a location is passed over, and runs where it has") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            location /open/ { }
            location /closed/ {
                deny all;
                location /closed/inner/ { }
            }
            location /le/ { limit_except GET { deny all; } }
            location /redir/ { error_page 404 = @named; }
            location @named { deny all; }
            location /if/ { if ($arg_x) { set $y 1; } }
        })");
    http::SrvConf& srv = *s.main().servers.at(0);
    http::LocConf& server_level = http::core_loc(srv.loc_confs);
    http::LocConf& open = location(server_level, "/open/");
    http::LocConf& closed = location(server_level, "/closed/");
    // Nothing configured: the access checks, limits, rewrites and the
    // like are skipped; "deny" keeps the access step and only it.
    CHECK(open.skip_steps != 0);
    CHECK(std::popcount(open.skip_steps & ~closed.skip_steps) == 1);
    CHECK((closed.skip_steps & ~open.skip_steps) == 0);
    CHECK(location(closed, "/closed/inner/").skip_steps == closed.skip_steps);
    CHECK(http::core_loc(location(server_level, "/le/").limit_except_confs).skip_steps == closed.skip_steps);
    CHECK(srv.named.at(0)->skip_steps == closed.skip_steps);

    CHECK(ask(s, "GET", "/open/x") == "404");
    CHECK(ask(s, "GET", "/closed/x") == "403");
    CHECK(ask(s, "GET", "/closed/inner/x") == "403");
    CHECK(ask(s, "GET", "/le/x") == "404");
    CHECK(ask(s, "POST", "/le/x") == "403");
    CHECK(ask(s, "GET", "/redir/x") == "403");
    CHECK(ask(s, "GET", "/if/x?x=1") == "404");
}

TEST_CASE("http/request path: server-level settings keep their steps before the location is chosen") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            deny all;
            if ($arg_teapot) { return 418; }
            location / { }
        })");
    http::SrvConf& srv = *s.main().servers.at(0);
    // The server's own rewrite program runs at its level (a skipped
    // ServerRewrite step would never answer 418).
    CHECK(ask(s, "GET", "/x?teapot=1") == "418");
    CHECK(ask(s, "GET", "/x") == "403");
    CHECK(http::core_loc(srv.loc_confs).skip_steps != 0);
}

TEST_CASE("http/request path: the trace step runs everywhere once some level rewrites the trace fields") {
    // A redirect from a location that rewrote traceparent to one that
    // ignores it must put the client's fields back: the step is kept in
    // every location of such a generation, skipped in every other.
    Site without(R"(server { listen 127.0.0.1:8080; location /a/ { } location /b/ { trace_context extract; } })");
    Site with(R"(server { listen 127.0.0.1:8080; location /a/ { } location /b/ { trace_context propagate; } })");
    auto skips = [](Site& s, std::string_view name) {
        return location(http::core_loc(s.main().servers.at(0)->loc_confs), name).skip_steps;
    };
    CHECK(skips(without, "/a/") == skips(without, "/b/"));
    CHECK(skips(with, "/a/") == skips(with, "/b/"));
    CHECK((skips(with, "/a/") & ~skips(without, "/a/")) == 0);
    CHECK(std::popcount(skips(without, "/a/") & ~skips(with, "/a/")) == 1);
}

TEST_CASE("http/request path: a filter with nothing configured in a location is passed over, and runs where it has") {
    Site s(R"(
        server { listen 127.0.0.1:8080;
            location /plain/ { return 200 "text"; }
            location /hdr/ {
                add_header X-Added yes;
                return 200 "text";
                location /hdr/inner/ { return 200 "text"; }
            }
            location /gz/ { gzip on; gzip_min_length 1; default_type text/html; return 200 "text"; }
            location /if/ { if ($arg_x) { set $y 1; } add_header X-Added yes; return 200 "text"; }
        })");
    http::LocConf& server_level = http::core_loc(s.main().servers.at(0)->loc_confs);
    const uint64_t plain = location(server_level, "/plain/").skip_header_filters;
    const uint64_t hdr = location(server_level, "/hdr/").skip_header_filters;
    const uint64_t gz = location(server_level, "/gz/").skip_header_filters;
    // Nothing configured: at least gzip's, gunzip's and add_header's
    // filters are passed over; each directive keeps its own filter and
    // only it, and a nested location inherits what it inherits.
    CHECK(std::popcount(plain) >= 3);
    CHECK(std::popcount(plain & ~hdr) == 1);
    CHECK(std::popcount(plain & ~gz) == 1);
    CHECK((plain & ~hdr) != (plain & ~gz));
    CHECK(location(location(server_level, "/hdr/"), "/hdr/inner/").skip_header_filters == hdr);
    CHECK(location(server_level, "/plain/").skip_body_filters != 0);

    auto head = [&](std::string target) {
        Exchange x(s, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n");
        x.run();
        REQUIRE(x.stream.ended);
        http::ResponseHead& h = x.r().out;
        http::Header* added = h.find("X-Added");
        http::Header* ce = h.find("Content-Encoding");
        return std::to_string(h.status) + (added ? " added" : "") + (ce ? " " + std::string(ce->value) : "");
    };
    CHECK(head("/plain/") == "200");
    CHECK(head("/hdr/") == "200 added");
    CHECK(head("/hdr/inner/") == "200 added");
    CHECK(head("/gz/") == "200 gzip");
    // The "if" block's own structs were not asked: every filter runs there.
    CHECK(head("/if/?x=1") == "200 added");
}
