// The subrequest seam on the test stream: a child Request for a URI, run
// by the phase engine on a Subrequest (the third http::Stream), whose head
// the parent reads and which wakes the parent from the loop.
//
// The parents here are not run through their own phases: each is marked
// done, so that the wake-up (Request::resume_ev, posted) finds nothing
// to do, and the test reads the Subrequest directly.
#include "http/subrequest.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <vector>

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
    location @named {
        add_header X-Uri $uri always;
        add_header X-Args $args always;
        return 204;
    }
    location = /facts {
        internal;
        set $seen "$status $body_bytes_sent $bytes_sent";
        add_header X-Seen $seen always;
        return 200 "a body of its own";
    }
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

namespace {

std::string field_of(const http::Subrequest& s, std::string_view n) {
    for (const http::Header& f : s.head().headers)
        if (iequals(f.name, n)) return std::string(f.value);
    return "(none)";
}

}  // namespace

TEST_CASE("http/subrequest: a named location keeps the parent's URI and arguments; a missing one is a 500") {
    Site site(kConf);
    Exchange x(site, "GET /orig?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    x.r().uri = "/orig";
    x.r().args = "q=1";
    http::Subrequest* s = http::Subrequest::start(x.r(), "@named");
    REQUIRE(s);
    CHECK(s->done());
    CHECK(s->status() == 204);
    CHECK(field_of(*s, "X-Uri") == "/orig");
    CHECK(field_of(*s, "X-Args") == "q=1");
    site.settle();
    s->release();

    http::Subrequest* missing = http::Subrequest::start(x.r(), "@missing");
    REQUIRE(missing);
    CHECK(missing->done());
    CHECK(missing->status() == 500);
    site.settle();
    missing->release();
}

TEST_CASE("http/subrequest: with parent_response the child sees the parent's response and counts none of its own") {
    Site site(kConf);
    Exchange x(site, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    x.r().out.status = 404;
    x.r().counters.body_bytes_sent = 1234;
    x.r().counters.bytes_sent = 1400;
    http::SubrequestOptions o;
    o.parent_response = true;
    http::Subrequest* s = http::Subrequest::start(x.r(), "/facts", o);
    REQUIRE(s);
    CHECK(s->done());
    // Its own answer goes out as usual (and is dropped)...
    CHECK(s->status() == 200);
    // ...but it began with the parent's facts, and its body was not
    // counted.
    CHECK(field_of(*s, "X-Seen") == "404 1234 1400");
    CHECK(s->child().counters.body_bytes_sent == 1234);
    site.settle();
    s->release();
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

namespace {

constexpr const char* kBackgroundConf = R"(
log_format sub "$uri $args $request_method [$request_body] $content_length $status";
server {
    listen 127.0.0.1:8080;
    client_body_buffer_size 16;
    location / { return 200 "parent"; }
    location = /copy {
        internal;
        log_subrequest on;
        access_log logs/sub.log sub;
        add_header X-Body "[$request_body]" always;
        return 204;
    }
    location = /quiet { internal; access_log logs/sub.log sub; return 204; }
}
)";

// The bytes of a child's kept body, files read.
std::string kept_bytes(const http::Request& c) {
    std::string out;
    if (!c.body_kept) return out;
    for (const Buf& b : c.body_kept->bufs) {
        if (!b.in_file()) {
            out.append(b.view());
            continue;
        }
        std::string s(b.size(), '\0');
        REQUIRE(::pread(b.fd, s.data(), s.size(), b.file_pos) == static_cast<ssize_t>(s.size()));
        out += s;
    }
    return out;
}

void read_parent_body(test::Site& site, Exchange& x) {
    REQUIRE(http::read_whole_body(x.r(), [](http::Request&) {}));
    site.settle();
    REQUIRE(x.r().body_kept);
    REQUIRE(x.r().body_kept->complete);
}

}  // namespace

TEST_CASE("http/subrequest: the parent's method, arguments and body, in memory or in a file") {
    Site site(kBackgroundConf);
    bool in_file = false;
    SUBCASE("in memory") {}
    SUBCASE("in a temp file") { in_file = true; }
    const std::string body = in_file ? std::string(100, 'f') : std::string("small");
    Exchange x(site, "PUT /orig?q=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(body.size()) +
                         "\r\n\r\n");
    x.stream.request_body = body;
    park(x);
    read_parent_body(site, x);
    CHECK((x.r().body_kept->fd >= 0) == in_file);
    x.r().args = "q=1";
    http::SubrequestOptions o;
    o.parent_method = true;
    o.parent_body = true;
    o.parent_args = true;
    http::Subrequest* s = http::Subrequest::start(x.r(), "/copy", o);
    REQUIRE(s);
    CHECK(s->status() == 204);
    http::Request& c = s->child();
    CHECK(c.method == "PUT");
    CHECK(c.args == "q=1");
    CHECK(c.has_body);
    CHECK(c.content_length == body.size());
    CHECK(kept_bytes(c) == body);
    if (in_file) {
        // Its own descriptor, for the same file.
        CHECK(c.body_kept->bufs.begin()->fd != x.r().body_kept->fd);
    } else {
        bool seen = false;
        for (const http::Header& h : s->head().headers) seen |= h.name == "X-Body" && h.value == "[small]";
        CHECK(seen);
    }
    // The parent's body is untouched, for its own handler.
    CHECK(x.r().body_kept->size == body.size());
    site.settle();
    s->release();
    // "log_subrequest on": the child's line, written when it was released.
    CHECK(site.dir.read("logs/sub.log") ==
          (in_file ? "/copy q=1 PUT [-] 100 204\n" : "/copy q=1 PUT [small] 5 204\n"));
}

TEST_CASE("http/subrequest: without log_subrequest a child is not logged; its URI's arguments win") {
    Site site(kBackgroundConf);
    Exchange x(site, "GET /orig?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    x.r().args = "q=1";
    http::SubrequestOptions o;
    o.parent_args = true;
    http::Subrequest* s = http::Subrequest::start(x.r(), "/quiet?own=1", o);
    REQUIRE(s);
    CHECK(s->child().args == "own=1");
    site.settle();
    s->release();
    // (The file is opened, empty, with the configuration.)
    CHECK(site.dir.read("logs/sub.log").empty());
}

TEST_CASE("http/subrequest: a background child does not wake its parent and goes by itself") {
    Site site(kBackgroundConf);
    Exchange x(site, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    x.r().abort_on_client_close = false;
    http::SubrequestOptions o;
    o.background = true;
    http::Subrequest* s = http::Subrequest::start(x.r(), "/copy", o);
    REQUIRE(s);
    CHECK(x.r().background == 1);
    // The parent's own setting is left alone: it does not wait.
    CHECK_FALSE(x.r().abort_on_client_close);
    int finished = 0;
    event::Event finish{{[](void* p) { ++*static_cast<int*>(p); }, &finished}};
    CHECK(http::hold_for_background(x.r(), finish, true));
    CHECK(x.r().outlive_client);
    site.settle();
    CHECK_FALSE(x.r().resume_ev.posted());
    CHECK_FALSE(s->has_child());
    CHECK(x.r().background == 0);
    // The stream that held the parent hears it once.
    CHECK(finished == 1);
    CHECK_FALSE(http::hold_for_background(x.r(), finish, true));
    CHECK(site.dir.read("logs/sub.log") == "/copy  GET [-] - 204\n");
}

TEST_CASE("http/subrequest: the first hold runs the after_response hooks, once") {
    Site site(R"(
log_format sub "$uri $request_method $status";
server {
    listen 127.0.0.1:8080;
    post_action /after;
    location = /after { internal; log_subrequest on; access_log logs/sub.log sub; return 204; }
}
)");
    Exchange x(site, "DELETE /x HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(x);
    x.r().uri = "/x";
    x.r().out.status = 404;
    CHECK_FALSE(x.r().response_complete);
    int finished = 0;
    event::Event finish{{[](void* p) { ++*static_cast<int*>(p); }, &finished}};
    // post_action's hook started a background child: the request waits.
    CHECK(http::hold_for_background(x.r(), finish, true));
    CHECK(x.r().response_complete);
    CHECK(x.r().background == 1);
    site.settle();
    CHECK(finished == 1);
    // Asked again when the child is over: nothing starts again.
    CHECK_FALSE(http::hold_for_background(x.r(), finish, true));
    CHECK(x.r().background == 0);
    // The client's method; its own status once it answered.
    CHECK(site.dir.read("logs/sub.log") == "/after DELETE 204\n");

    // An orphan's response, made whole after its client left: nothing
    // follows it.
    Exchange y(site, "GET /y HTTP/1.1\r\nHost: localhost\r\n\r\n");
    park(y);
    y.r().uri = "/y";
    CHECK_FALSE(http::hold_for_background(y.r(), finish, false));
    CHECK_FALSE(y.r().response_complete);
    CHECK(y.r().background == 0);
}

TEST_CASE("http/subrequest: background children are bounded per request") {
    // An origin that never answers keeps them running.
    int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(lfd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(lfd, 128) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    Site slow("server { listen 127.0.0.1:8080; location = /slow { proxy_pass http://127.0.0.1:" +
              std::to_string(ntohs(a.sin_port)) + "; proxy_read_timeout 1h; } }");
    {
        auto y = std::make_unique<Exchange>(slow, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        park(*y);
        http::SubrequestOptions o;
        o.background = true;
        for (unsigned i = 0; i < http::kMaxBackground; ++i) REQUIRE(http::Subrequest::start(y->r(), "/slow", o));
        CHECK(y->r().background == http::kMaxBackground);
        CHECK(http::Subrequest::start(y->r(), "/slow", o) == nullptr);
        // A waited one is not counted.
        CHECK(http::Subrequest::start(y->r(), "/slow") != nullptr);
        slow.settle();
        // The parent goes (its client left before its response ended):
        // every child goes with it, without reaching it.
        y.reset();
    }
    ::close(lfd);
}

TEST_CASE("http/subrequest: a body that cannot be copied starts no child and leaves the parent as it was") {
    Site site(kBackgroundConf);
    Exchange x(site, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n");
    x.stream.request_body = std::string(100, 'f');
    park(x);
    read_parent_body(site, x);
    REQUIRE(x.r().body_kept->fd >= 0);
    x.r().abort_on_client_close = true;
    // No descriptor left for the child's copy of the temp file.
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit low = old;
    low.rlim_cur = 256;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    std::vector<int> fill;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) fill.push_back(fd);
    http::SubrequestOptions o;
    o.parent_body = true;
    http::Subrequest* waited = http::Subrequest::start(x.r(), "/copy", o);
    o.background = true;
    http::Subrequest* background = http::Subrequest::start(x.r(), "/copy", o);
    for (int fd : fill) ::close(fd);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(waited == nullptr);
    CHECK(background == nullptr);
    CHECK(x.r().abort_on_client_close);
    CHECK(x.r().background == 0);
    site.settle();
    CHECK(site.dir.read("logs/sub.log").empty());
}

TEST_CASE("http/subrequest: post_action's hook is called only in a generation that configures it") {
    // ModuleHooks::filters_used, for after_response: every other
    // generation's complete responses run no hook at all.
    Site plain("server { listen 127.0.0.1:8080; location / { return 200 x; } }");
    Site with(R"(server { listen 127.0.0.1:8080;
        location / { return 200 x; }
        location /p/ { post_action /done; } })");
    CHECK(plain.main().after_response.empty());
    CHECK(with.main().after_response.size() == 1);
}
