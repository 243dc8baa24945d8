// Tests of src/upstream/upstream.cc: the "upstream" block and its
// directives (a row per error message, with file:line), find_or_add()
// for the targets proxy_pass gives, before and after their block, and
// resolve().
#include "upstream/upstream.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <chrono>
#include <string>

#include "fixture.h"

using namespace std::chrono_literals;
using namespace gatehouse;
using gatehouse::test::HttpConf;
using upstream::UpstreamConf;

namespace {

std::string error_of(std::string text) {
    HttpConf c;
    auto s = c.add("t.conf", std::move(text));
    if (s) s = c.finish();
    REQUIRE_FALSE(s.ok());
    return s.message();
}

uint16_t port_of(const upstream::Peer& p) {
    if (p.sa.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(p.sa).sin_port);
    return ntohs(reinterpret_cast<const sockaddr_in6&>(p.sa).sin6_port);
}

}  // namespace

// ---- the block --------------------------------------------------------------

TEST_CASE("upstream/conf: a block with every parameter") {
    HttpConf c;
    auto s = c.add("t.conf",
                   "upstream backend {\n"
                   "  server 127.0.0.1:8001 weight=5 max_fails=3 fail_timeout=30s max_conns=10;\n"
                   "  server 127.0.0.2 backup;\n"
                   "  server unix:/run/app.sock down;\n"
                   "  keepalive 16;\n"
                   "  keepalive_timeout 30s;\n"
                   "  keepalive_requests 100;\n"
                   "}\n");
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.message()));
    REQUIRE(c.finish().ok());
    UpstreamConf* u = c.find("backend");
    REQUIRE(u != nullptr);
    CHECK_FALSE(u->implicit);
    CHECK(u->host == "backend");
    CHECK(u->where == "t.conf:1");
    CHECK(u->keepalive == 16);
    CHECK(u->keepalive_timeout == 30s);
    CHECK(u->keepalive_requests == 100);

    REQUIRE(u->servers.size() == 3);
    const auto& s1 = u->servers[0];
    CHECK(s1.name == "127.0.0.1:8001");
    CHECK(s1.weight == 5);
    CHECK(s1.max_fails == 3);
    CHECK(s1.fail_timeout == 30s);
    CHECK(s1.max_conns == 10);
    CHECK_FALSE(s1.backup);
    CHECK_FALSE(s1.down);
    CHECK(s1.where == "t.conf:2");
    const auto& s2 = u->servers[1];
    CHECK(s2.weight == 1);
    CHECK(s2.max_fails == 1);
    CHECK(s2.fail_timeout == 10s);
    CHECK(s2.max_conns == 0);
    CHECK(s2.backup);
    CHECK(u->servers[2].down);

    // Primaries first (in order), then the backups.
    REQUIRE(u->peers.size() == 3);
    CHECK(u->backup_start == 2);
    CHECK(u->peers[0].text == "127.0.0.1:8001");
    CHECK(u->peers[0].server == &u->servers[0]);
    CHECK(u->peers[0].st().effective_weight == 5);
    CHECK(u->peers[0].st().current_weight == 0);
    CHECK(u->peers[1].text == "unix:/run/app.sock");
    CHECK(u->peers[1].server == &u->servers[2]);
    CHECK(u->peers[2].text == "127.0.0.2:80");
    CHECK(u->peers[2].server == &u->servers[1]);
    CHECK_FALSE(u->single());
}

TEST_CASE("upstream/conf: defaults") {
    HttpConf c;
    REQUIRE(c.add("t.conf", "upstream b { server 127.0.0.1; }").ok());
    REQUIRE(c.finish().ok());
    UpstreamConf* u = c.find("b");
    REQUIRE(u != nullptr);
    CHECK(u->keepalive == 0);
    CHECK(u->keepalive_timeout == 60s);
    CHECK(u->keepalive_requests == 1000);
    CHECK(u->single());
    CHECK(u->peers[0].text == "127.0.0.1:80");
}

TEST_CASE("upstream/conf: errors name the file and line") {
    struct Row {
        const char* text;
        const char* message;
    };
    const Row rows[] = {
        {"upstream b {\n server 127.0.0.1 weight=0;\n}", "invalid parameter \"weight=0\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 weight=x;\n}", "invalid parameter \"weight=x\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 weight=;\n}", "invalid parameter \"weight=\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 max_fails=-1;\n}", "invalid parameter \"max_fails=-1\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 max_conns=many;\n}", "invalid parameter \"max_conns=many\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 fail_timeout=soon;\n}", "invalid parameter \"fail_timeout=soon\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 slow_start=soon;\n}", "invalid parameter \"slow_start=soon\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 backups;\n}", "invalid parameter \"backups\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 backup=0;\n}", "invalid parameter \"backup=0\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 backup=256;\n}", "invalid parameter \"backup=256\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 backup=;\n}", "invalid parameter \"backup=\" in t.conf:2"},
        {"upstream b {\n hash $uri;\n server 127.0.0.1 backup=2;\n}", "invalid parameter \"backup=2\" in t.conf:3"},
        {"upstream b {\n server 127.0.0.1 backup=2;\n server 127.0.0.2 backup;\n}", "no servers in upstream \"b\" in t.conf:1"},
        {"upstream b {\n server example.test resolve;\n}",
         "resolving names at run time requires upstream \"b\" in t.conf:1 to be in shared memory"},
        {"upstream b {\n server nosuch.invalid:80;\n}", "host not found in upstream \"nosuch.invalid:80\" in t.conf:2"},
        {"upstream b {\n server nosuch.invalid;\n}", "host not found in upstream \"nosuch.invalid\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1:0;\n}", "invalid port in upstream \"127.0.0.1:0\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1:http;\n}", "invalid port in upstream \"127.0.0.1:http\" in t.conf:2"},
        {"upstream b {\n server unix:run/app.sock;\n}",
         "unix socket path must be absolute in upstream \"unix:run/app.sock\" in t.conf:2"},
        {"upstream b {\n server ::1;\n}", "IPv6 addresses must be in brackets in upstream \"::1\" in t.conf:2"},
        {"upstream b {\n}", "no servers are inside upstream in t.conf:1"},
        {"upstream b {\n keepalive 4;\n}", "no servers are inside upstream in t.conf:1"},
        {"upstream b {\n server 127.0.0.1 backup;\n}", "no servers in upstream \"b\" in t.conf:1"},
        {"upstream b { server 127.0.0.1; }\nupstream b { server 127.0.0.2; }", "duplicate upstream \"b\" in t.conf:2"},
        {"upstream b { server 127.0.0.1; }\nupstream B { server 127.0.0.2; }", "duplicate upstream \"B\" in t.conf:2"},
        {"upstream b {\n server 127.0.0.1;\n keepalive 0;\n}", "invalid value \"0\" in \"keepalive\" directive in t.conf:3"},
        {"upstream b {\n server 127.0.0.1;\n keepalive -1;\n}", "invalid value \"-1\" in \"keepalive\" directive in t.conf:3"},
        {"upstream b {\n server 127.0.0.1;\n keepalive 1;\n keepalive 2;\n}", "\"keepalive\" directive is duplicate in t.conf:4"},
        {"upstream b {\n server 127.0.0.1;\n keepalive_timeout 1s;\n keepalive_timeout 2s;\n}",
         "\"keepalive_timeout\" directive is duplicate in t.conf:4"},
        {"upstream b {\n server 127.0.0.1;\n keepalive_timeout never;\n}",
         "invalid time \"never\" in \"keepalive_timeout\" directive in t.conf:3"},
        {"upstream b {\n server 127.0.0.1;\n keepalive_requests 1;\n keepalive_requests 2;\n}",
         "\"keepalive_requests\" directive is duplicate in t.conf:4"},
        {"upstream b {\n server 127.0.0.1;\n keepalive_requests lots;\n}",
         "invalid number \"lots\" in \"keepalive_requests\" directive in t.conf:3"},
        {"keepalive 4;", "\"keepalive\" directive is not allowed here in t.conf:1"},
        {"upstream b {\n server 127.0.0.1;\n listen 80;\n}", "\"listen\" directive is not allowed here in t.conf:3"},
        {"upstream b {\n server 127.0.0.1;\n location / { }\n}", "\"location\" directive is not allowed here in t.conf:3"},
        {"upstream b {\n server;\n}", "invalid number of arguments in \"server\" directive in t.conf:2"},
        {"upstream b {\n server 127.0.0.1 { }\n}", "directive \"server\" is not terminated by \";\" in t.conf:2"},
        {"upstream {\n server 127.0.0.1;\n}", "invalid number of arguments in \"upstream\" directive in t.conf:1"},
        {"upstream b;", "directive \"upstream\" has no opening \"{\" in t.conf:1"},
        {"server { upstream b { server 127.0.0.1; } }", "\"upstream\" directive is not allowed here in t.conf:1"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.text);
        CHECK(error_of(r.text) == r.message);
    }
}

TEST_CASE("upstream/conf: keepalive directives only in upstream blocks") {
    // "keepalive_timeout" and "keepalive_requests" are also http core's
    // (client side): in http they are those.
    HttpConf c;
    CHECK(c.add("t.conf", "keepalive_timeout 5s;\nkeepalive_requests 10;\n").ok());
}

// ---- find_or_add ---------------------------------------------------------------

TEST_CASE("upstream/find_or_add: a block defined earlier") {
    HttpConf c;
    REQUIRE(c.add("a.conf", "upstream backend { server 127.0.0.1:8001; }").ok());
    auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "backend", 80);
    REQUIRE(u.ok());
    CHECK(*u == c.find("backend"));
    CHECK_FALSE((*u)->implicit);
    // Case does not matter, as nginx.
    auto again = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "BackEnd", 443);
    REQUIRE(again.ok());
    CHECK(*again == *u);
    CHECK(c.finish().ok());
}

TEST_CASE("upstream/find_or_add: a block defined later fills the same object") {
    HttpConf c;
    auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "backend", 80);
    REQUIRE(u.ok());
    UpstreamConf* early = *u;
    CHECK(early->servers.empty());
    REQUIRE(c.add("a.conf", "upstream backend {\n server 127.0.0.1:8001 weight=2;\n server 127.0.0.1:8002;\n keepalive 8;\n}").ok());
    REQUIRE(c.finish().ok());
    CHECK(c.main().upstreams.size() == 1);
    CHECK(c.find("backend") == early);
    CHECK_FALSE(early->implicit);
    CHECK(early->where == "a.conf:1");
    CHECK(early->keepalive == 8);
    REQUIRE(early->peers.size() == 2);
    CHECK(early->peers[0].text == "127.0.0.1:8001");
    CHECK(early->peers[0].st().effective_weight == 2);
    CHECK(early->peers[0].server == &early->servers[0]);
}

TEST_CASE("upstream/find_or_add: two default ports before the block both get it") {
    HttpConf c;
    auto http = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "backend", 80);
    auto https = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "backend", 443);
    REQUIRE(http.ok());
    REQUIRE(https.ok());
    CHECK(*http != *https);
    REQUIRE(c.add("a.conf", "upstream backend { server 127.0.0.1:8001; server 127.0.0.1:8002 backup; }").ok());
    REQUIRE(c.finish().ok());
    for (UpstreamConf* u : {*http, *https}) {
        CHECK_FALSE(u->implicit);
        REQUIRE(u->peers.size() == 2);
        CHECK(u->backup_start == 1);
        CHECK(u->peers[0].text == "127.0.0.1:8001");
        CHECK(u->peers[1].server == &u->servers[1]);
    }
}

TEST_CASE("upstream/find_or_add: a bare name without a block is a host") {
    HttpConf c;
    auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "localhost", 8080);
    REQUIRE(u.ok());
    auto same = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "localhost", 8080);
    CHECK(*same == *u);
    REQUIRE(c.finish().ok());
    CHECK((*u)->implicit);
    CHECK((*u)->name == "localhost");
    CHECK((*u)->host == "localhost");
    REQUIRE_FALSE((*u)->peers.empty());
    CHECK((*u)->peers[0].text == "127.0.0.1:8080");
    REQUIRE((*u)->servers.size() == 1);
    CHECK((*u)->servers[0].naddrs == (*u)->peers.size());
    CHECK((*u)->backup_start == (*u)->peers.size());
}

TEST_CASE("upstream/find_or_add: a bare name that does not resolve fails at the end") {
    HttpConf c;
    auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "\n\nproxy_pass x;"), "nosuch.invalid", 80);
    REQUIRE(u.ok());  // an upstream block may still come
    auto s = c.finish();
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "host not found in upstream \"nosuch.invalid\" in p.conf:3");
}

TEST_CASE("upstream/find_or_add: host:port is resolved at once") {
    HttpConf c;
    auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "127.0.0.1:8080", 80);
    REQUIRE(u.ok());
    CHECK((*u)->implicit);
    CHECK((*u)->name == "127.0.0.1:8080");
    CHECK((*u)->host == "127.0.0.1:8080");
    CHECK((*u)->where == "p.conf:1");
    REQUIRE((*u)->peers.size() == 1);
    CHECK((*u)->peers[0].text == "127.0.0.1:8080");
    CHECK((*u)->single());
    CHECK((*u)->peers[0].server == &(*u)->servers[0]);
    CHECK((*u)->servers[0].weight == 1);
    // The same target: the same group, so its peers' state is shared.
    auto same = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "127.0.0.1:8080", 80);
    CHECK(*same == *u);
    auto other = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "127.0.0.1:8081", 80);
    CHECK(*other != *u);
    CHECK(c.finish().ok());
}

TEST_CASE("upstream/find_or_add: $proxy_host and names of implicit groups") {
    struct Row {
        const char* target;
        uint16_t default_port;
        const char* name;
        const char* host;
        const char* peer;
    };
    const Row rows[] = {
        {"127.0.0.1:80", 80, "127.0.0.1:80", "127.0.0.1", "127.0.0.1:80"},
        {"127.0.0.1:443", 443, "127.0.0.1:443", "127.0.0.1", "127.0.0.1:443"},
        {"127.0.0.1:8443", 443, "127.0.0.1:8443", "127.0.0.1:8443", "127.0.0.1:8443"},
        {"localhost:8080", 80, "localhost:8080", "localhost:8080", "127.0.0.1:8080"},
        {"[::1]:8080", 80, "[::1]:8080", "[::1]:8080", "[::1]:8080"},
        {"unix:/run/app.sock", 80, "unix:/run/app.sock", "localhost", "unix:/run/app.sock"},
        {"unix:/run/app.sock:/uri/", 80, "unix:/run/app.sock", "localhost", "unix:/run/app.sock"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.target);
        HttpConf c;
        auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), r.target, r.default_port);
        REQUIRE_MESSAGE(u.ok(), (u.ok() ? "" : u.message()));
        CHECK((*u)->name == r.name);
        CHECK((*u)->host == r.host);
        REQUIRE_FALSE((*u)->peers.empty());
        CHECK((*u)->peers[0].text == r.peer);
    }
}

TEST_CASE("upstream/find_or_add: errors") {
    SUBCASE("a port on a block's name") {
        HttpConf c;
        REQUIRE(c.add("a.conf", "upstream backend { server 127.0.0.1; }").ok());
        auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "\nproxy_pass x;"), "backend:8080", 80);
        REQUIRE_FALSE(u.ok());
        CHECK(u.message() == "upstream \"backend\" may not have port 8080 in p.conf:2");
    }
    SUBCASE("a block after a reference with a port") {
        HttpConf c;
        auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "\nproxy_pass x;"), "localhost:8080", 80);
        REQUIRE(u.ok());
        auto s = c.add("a.conf", "upstream localhost { server 127.0.0.1; }");
        REQUIRE_FALSE(s.ok());
        CHECK(s.message() == "upstream \"localhost\" may not have port 8080 in p.conf:2");
    }
    SUBCASE("host not found, naming the host as nginx does") {
        HttpConf c;
        auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "nosuch.invalid:8080", 80);
        REQUIRE_FALSE(u.ok());
        CHECK(u.message() == "host not found in upstream \"nosuch.invalid\" in p.conf:1");
    }
    SUBCASE("a bad port") {
        HttpConf c;
        auto u = upstream::find_or_add(c.cx(), c.node("p.conf", "proxy_pass x;"), "127.0.0.1:99999", 80);
        REQUIRE_FALSE(u.ok());
        CHECK(u.message() == "invalid port in upstream \"127.0.0.1:99999\" in p.conf:1");
    }
}

// ---- resolve ------------------------------------------------------------------

TEST_CASE("upstream/resolve: names, literals and unix sockets") {
    SUBCASE("localhost:80") {
        auto r = upstream::resolve("localhost:80", 8080);
        REQUIRE(r.ok());
        REQUIRE_FALSE(r->empty());
        // IPv4 first, as nginx orders them.
        CHECK((*r)[0].text == "127.0.0.1:80");
        CHECK((*r)[0].sa.ss_family == AF_INET);
        CHECK((*r)[0].sa_len == sizeof(sockaddr_in));
        CHECK(port_of((*r)[0]) == 80);
        for (const auto& p : *r) CHECK(p.server == nullptr);
    }
    SUBCASE("127.0.0.1 takes the default port") {
        auto r = upstream::resolve("127.0.0.1", 8080);
        REQUIRE(r.ok());
        REQUIRE(r->size() == 1);
        CHECK((*r)[0].text == "127.0.0.1:8080");
        CHECK(port_of((*r)[0]) == 8080);
        in_addr want{};
        inet_pton(AF_INET, "127.0.0.1", &want);
        CHECK(reinterpret_cast<const sockaddr_in&>((*r)[0].sa).sin_addr.s_addr == want.s_addr);
    }
    SUBCASE("[::1]:81") {
        auto r = upstream::resolve("[::1]:81", 80);
        REQUIRE(r.ok());
        REQUIRE(r->size() == 1);
        CHECK((*r)[0].text == "[::1]:81");
        CHECK((*r)[0].sa.ss_family == AF_INET6);
        CHECK(port_of((*r)[0]) == 81);
    }
    SUBCASE("unix:/path") {
        auto r = upstream::resolve("unix:/tmp/gh-app.sock", 80);
        REQUIRE(r.ok());
        REQUIRE(r->size() == 1);
        const auto& p = (*r)[0];
        CHECK(p.text == "unix:/tmp/gh-app.sock");
        CHECK(p.sa.ss_family == AF_UNIX);
        CHECK(std::string(reinterpret_cast<const sockaddr_un&>(p.sa).sun_path) == "/tmp/gh-app.sock");
    }
    SUBCASE("errors") {
        auto r = upstream::resolve("nosuch.invalid:80", 80);
        REQUIRE_FALSE(r.ok());
        CHECK(r.message() == "host not found in upstream \"nosuch.invalid:80\"");
        auto e = upstream::resolve("bad host:80", 80);
        REQUIRE_FALSE(e.ok());
        CHECK(e.message() == "invalid host in upstream \"bad host:80\"");
    }
}
