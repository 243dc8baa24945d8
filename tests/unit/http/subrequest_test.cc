// The subrequest seam on the test stream: a child Request for a URI, run
// by the phase engine on a Subrequest (the third http::Stream), whose head
// the parent reads and which wakes the parent from the loop.
//
// The parents here are not run through their own phases: each is marked
// done, so that the wake-up (Request::resume_ev, posted) finds nothing
// to do, and the test reads the Subrequest directly.
#include "http/subrequest.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include "http/body.h"
#include "test_stream.h"

using namespace gatehouse;
using gatehouse::test::Exchange;
using gatehouse::test::Site;

namespace {

constexpr const char* kConf = R"(
server {
    listen 127.0.0.1:8080;
    location / { return 200 "parent"; }
    location = /sub {
        internal;
        add_header X-Uri $uri always;
        add_header X-Args $args always;
        add_header X-Method $request_method always;
        add_header X-Request-Uri $request_uri always;
        add_header X-Token $http_x_token always;
        add_header X-Mine $mine always;
        add_header X-Body "[$request_body]" always;
        return 204;
    }
    location = /guarded {
        internal;
        auth_request /deny;
        return 204;
    }
    location = /deny { set $mine "deny"; return 403; }
    location = /page { return 200 "a body nobody reads"; }
    location = /cut { return 444; }
}
)";

// A parent that is not run (see the top of this file).
void park(Exchange& x) { x.r().done = true; }

}  // namespace

TEST_CASE("http/subrequest: the child answers from its location and wakes the parent from the loop") {
    Site site(kConf);
    Exchange x(site, "POST /orig?q=1 HTTP/1.1\r\nHost: localhost\r\nX-Token: t1\r\nContent-Length: 3\r\n\r\n");
    x.stream.request_body = "abc";
    park(x);
    x.r().uri = "/orig";
    x.r().vars[site.main().vars.find("mine")] = http::VarValue{"from-parent", true, false};
    http::Subrequest* s = http::Subrequest::start(x.r(), "/sub?a=1");
    REQUIRE(s);
    // "return 204" ends at once, but the parent hears it from the loop.
    CHECK(s->done());
    CHECK_FALSE(s->failed());
    CHECK(x.r().resume_ev.posted());
    CHECK(s->status() == 204);
    const http::ResponseHead& h = s->head();
    auto field = [&](std::string_view n) {
        for (const http::Header& f : h.headers)
            if (iequals(f.name, n)) return std::string(f.value);
        return std::string("(none)");
    };
    CHECK(field("X-Uri") == "/sub");
    CHECK(field("X-Args") == "a=1");
    // A GET, whatever the parent's method [nginx]; $request_method says
    // the client's.
    CHECK(s->child().method == "GET");
    CHECK(field("X-Method") == "POST");
    CHECK(field("X-Request-Uri") == "/orig?q=1");
    CHECK(field("X-Token") == "t1");
    CHECK(field("X-Mine") == "from-parent");
    CHECK(field("X-Body") == "[]");
    // Nothing went to the client.
    CHECK_FALSE(x.stream.head_sent);
    site.settle();
    s->release();
    CHECK_FALSE(s->has_child());
    CHECK(s->status() == 204);

    // The parent's body is still there for its own handler.
    static std::string got;
    got.clear();
    REQUIRE(http::read_whole_body(x.r(), [](http::Request& r) {
        for (const Buf& b : r.body_kept->bufs) got.append(b.view());
    }));
    site.settle();
    CHECK(got == "abc");
}

TEST_CASE("http/subrequest: the Access phase is skipped, internal locations answer") {
    Site site(kConf);
    Exchange x(site, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    http::Subrequest* s = http::Subrequest::start(x.r(), "/guarded");
    REQUIRE(s);
    site.settle();
    CHECK(s->done());
    // auth_request in the child's location did not run: 204, not 403.
    CHECK(s->status() == 204);
}

TEST_CASE("http/subrequest: the body is dropped; an abort fails the child") {
    Site site(kConf);
    Exchange x(site, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    http::Subrequest* s = http::Subrequest::start(x.r(), "/page");
    REQUIRE(s);
    CHECK(s->done());
    CHECK(s->status() == 200);
    CHECK(s->head().content_length == 19u);
    CHECK(x.stream.body.empty());

    http::Subrequest* cut = http::Subrequest::start(x.r(), "/cut");
    REQUIRE(cut);
    CHECK(cut->done());
    CHECK(cut->failed());
    CHECK(cut->status() == 444);
}

TEST_CASE("http/subrequest: the parent waits on its client while the child runs; release gives it back") {
    // An origin that accepts (the kernel does, from the backlog) and
    // never answers: the child waits on it.
    int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(lfd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(lfd, 8) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    const std::string port = std::to_string(ntohs(a.sin_port));

    Site site("server { listen 127.0.0.1:8080; location = /slow { proxy_pass http://127.0.0.1:" + port +
              "; proxy_read_timeout 1h; } }");

    SUBCASE("release") {
        Exchange x(site, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        park(x);
        x.r().abort_on_client_close = false;
        http::Subrequest* s = http::Subrequest::start(x.r(), "/slow");
        REQUIRE(s);
        site.settle();
        CHECK_FALSE(s->done());
        CHECK(x.r().abort_on_client_close);
        s->release();
        CHECK(s->done());
        CHECK_FALSE(x.r().abort_on_client_close);
        site.settle();
    }
    SUBCASE("the parent goes first") {
        auto x = std::make_unique<Exchange>(site, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        park(*x);
        http::Subrequest* s = http::Subrequest::start(x->r(), "/slow");
        REQUIRE(s);
        site.settle();
        CHECK_FALSE(s->done());
        // The parent and its arena go (a client that closed): the child
        // goes with them, without reaching the parent.
        x.reset();
    }
    // Either way the origin's connection was closed by the child's end.
    int c = ::accept(lfd, nullptr, nullptr);
    REQUIRE(c >= 0);
    timeval tv{5, 0};  // a connection left open fails the test, not hangs it
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(c, buf, sizeof buf, 0)) > 0) {
    }
    CHECK(n == 0);
    ::close(c);
    ::close(lfd);
}
