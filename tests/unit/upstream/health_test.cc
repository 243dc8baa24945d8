// Tests of the active health checks' pure parts (src/upstream/health.cc):
// "match" and "health_check" parsing, the verdict on a response, the
// state changes and what the balancers make of them (unchecked peers,
// "mandatory", slow_start). The probing itself runs in
// tests/integration/test_balancing.py.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "balance_fixture.h"
#include "core/shm.h"
#include "upstream/balancer.h"

using namespace gatehouse;
using gatehouse::test::Group;
using upstream::Health;
using upstream::Peer;
using upstream::PeerPicker;

namespace {

constexpr event::Msec kT0 = 1'000'000;

using Headers = std::map<std::string, std::string>;

const std::string_view* lookup(const void* ctx, std::string_view name) {
    static std::string_view v;
    const auto& h = *static_cast<const Headers*>(ctx);
    auto it = h.find(std::string(name));
    if (it == h.end()) return nullptr;
    v = it->second;
    return &v;
}

// A match block parsed from `body` ("status 200;" ...).
struct Parsed {
    test::HttpConf c;
    upstream::Match* m = nullptr;
    Status s;
    explicit Parsed(const std::string& body) {
        s = c.add("t.conf", "match m {\n" + body + "}\n");
        if (s) m = c.main().matches.at(0);
    }
};

std::string verdict(const std::string& body, int status, const Headers& h = {}, std::string_view text = "") {
    Parsed p(body);
    REQUIRE_MESSAGE(p.s.ok(), (p.s.ok() ? "" : p.s.message()));
    return upstream::check_response(p.m, status, lookup, &h, text);
}

void set_health(upstream::UpstreamConf& u, size_t i, Health h) {
    u.peers[i].st().health.store(static_cast<uint32_t>(h));
}

}  // namespace

TEST_CASE("upstream/health: the default verdict is 2xx or 3xx") {
    Headers h;
    CHECK(upstream::check_response(nullptr, 200, lookup, &h, "") == "");
    CHECK(upstream::check_response(nullptr, 302, lookup, &h, "") == "");
    CHECK(upstream::check_response(nullptr, 404, lookup, &h, "") == "status 404");
    CHECK(upstream::check_response(nullptr, 500, lookup, &h, "") == "status 500");
}

TEST_CASE("upstream/health: match tests") {
    struct Row {
        const char* body;
        int status;
        Headers headers;
        const char* text;
        const char* why;  // "" passes
    };
    const Row rows[] = {
        {"status 200;", 200, {}, "", ""},
        {"status 200;", 204, {}, "", "status 204"},
        {"status 200 204;", 204, {}, "", ""},
        {"status ! 500;", 200, {}, "", ""},
        {"status ! 500;", 500, {}, "", "status 500"},
        {"status 200-399;", 399, {}, "", ""},
        {"status ! 400-599;", 404, {}, "", "status 404"},
        {"status 301-303 307;", 307, {}, "", ""},
        {"header Content-Type = text/html;", 200, {{"Content-Type", "text/html"}}, "", ""},
        {"header Content-Type = text/html;", 200, {{"Content-Type", "text/plain"}}, "",
         "header \"Content-Type\" is \"text/plain\""},
        {"header Content-Type != text/html;", 200, {{"Content-Type", "text/plain"}}, "", ""},
        {"header Connection ~ close;", 200, {{"Connection", "close"}}, "", ""},
        {"header Connection !~ close;", 200, {{"Connection", "close"}}, "", "header \"Connection\" is \"close\""},
        {"header Host;", 200, {}, "", "header \"Host\" is missing"},
        {"header ! X-Accel-Redirect;", 200, {{"X-Accel-Redirect", "/x"}}, "", "header \"X-Accel-Redirect\" is present"},
        {"body ~ \"Welcome\";", 200, {}, "<h1>Welcome</h1>", ""},
        {"body ~ \"Welcome\";", 200, {}, "Goodbye", "body does not match \"Welcome\""},
        {"status 200-399;\nbody !~ \"maintenance mode\";", 200, {}, "in maintenance mode",
         "body matches \"maintenance mode\""},
        // Every test must pass; status comes first.
        {"status 200;\nheader X-Ok;", 500, {{"X-Ok", "1"}}, "", "status 500"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.body);
        CAPTURE(r.status);
        CHECK(verdict(r.body, r.status, r.headers, r.text) == r.why);
    }
}

TEST_CASE("upstream/health: match errors") {
    struct Row {
        std::string text;
        std::string message;
    };
    const Row rows[] = {
        {"status 99;", "invalid status \"99\" in t.conf:2"},
        {"status 300-200;", "invalid status \"300-200\" in t.conf:2"},
        {"status !;", "invalid status \"!\" in t.conf:2"},
        {"header A B;", "invalid number of arguments in \"header\" in t.conf:2"},
        {"header A ?? b;", "invalid operator \"??\" in \"header\" in t.conf:2"},
        {"body \"x\";", "invalid arguments in \"body\": use \"body ~ regex\" or \"body !~ regex\" in t.conf:2"},
        {"body ~ \"(\";", "t.conf:2"},
        {"color red;", "unknown test \"color\" in \"match\" in t.conf:2"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.text);
        Parsed p(r.text + "\n");
        REQUIRE_FALSE(p.s.ok());
        CHECK(p.s.message().find(r.message) != std::string::npos);
    }
    test::HttpConf c;
    auto s = c.add("t.conf", "match a { }\nmatch a { }\n");
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "duplicate match \"a\" in t.conf:2");
}

TEST_CASE("upstream/health: health_check parameters") {
    shm::ZoneRegistry reg;
    // The match block may come after its use.
    shm::ZoneSet gen2(reg);
    test::HttpConf c(&gen2);
    REQUIRE(c.add("t.conf", "upstream u {\n server 127.0.0.1:1;\n zone z 64k;\n health_check interval=2s fails=3 passes=2 "
                            "uri=/hc port=9000 match=ok timeout=500ms mandatory;\n}\nmatch ok { status 200; }\n")
                .ok());
    REQUIRE(c.finish().ok());
    const upstream::HealthCheck& hc = *c.find("u")->health;
    CHECK(hc.interval.count() == 2000);
    CHECK(hc.timeout.count() == 500);
    CHECK(hc.fails == 3);
    CHECK(hc.passes == 2);
    CHECK(hc.uri == "/hc");
    CHECK(hc.port == 9000);
    CHECK(hc.mandatory);
    REQUIRE(hc.match != nullptr);
    CHECK(hc.match->name == "ok");

    struct Row {
        std::string params;
        std::string message;
    };
    const Row rows[] = {
        {"interval=0", "invalid parameter \"interval=0\" in t.conf:4"},
        {"fails=0", "invalid parameter \"fails=0\" in t.conf:4"},
        {"passes=x", "invalid parameter \"passes=x\" in t.conf:4"},
        {"uri=hc", "invalid parameter \"uri=hc\" in t.conf:4"},
        {"port=70000", "invalid parameter \"port=70000\" in t.conf:4"},
        {"jitter=1s", "invalid parameter \"jitter=1s\" in t.conf:4"},
        {"match=nosuch", "match \"nosuch\" not found in t.conf:4"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.params);
        shm::ZoneSet z(reg);
        test::HttpConf e(&z);
        auto s = e.add("t.conf", "upstream u {\n server 127.0.0.1:1;\n zone z 64k;\n health_check " + r.params + ";\n}\n");
        if (s) s = e.finish();
        REQUIRE_FALSE(s.ok());
        CHECK(s.message() == r.message);
    }
}

TEST_CASE("upstream/health: fails and passes change the state, each change logged") {
    test::CapturedLog log;
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    Group g({"", "slow_start=30s"}, "zone z 64k;\nhealth_check fails=2 passes=3;\n", &gen);
    upstream::UpstreamConf& u = g.u();
    Peer& b = u.peers[1];
    auto health = [&] { return static_cast<Health>(b.st().health.load()); };
    CHECK(health() == Health::Unchecked);
    upstream::record_check(u, b, true, "", kT0);
    CHECK(health() == Health::Up);
    upstream::record_check(u, b, false, "status 500", kT0);
    CHECK(health() == Health::Up);  // one failure of two
    upstream::record_check(u, b, true, "", kT0);
    upstream::record_check(u, b, false, "status 500", kT0);
    CHECK(health() == Health::Up);  // not consecutive
    upstream::record_check(u, b, false, "status 500", kT0);
    CHECK(health() == Health::Down);
    CHECK(log.text().find("[warn]") != std::string::npos);
    CHECK(log.text().find("upstream server \"127.0.0.1:8002\" of upstream \"u\" is unhealthy: health check of \"/\" "
                          "failed: status 500") != std::string::npos);
    upstream::record_check(u, b, true, "", kT0 + 1);
    upstream::record_check(u, b, true, "", kT0 + 2);
    CHECK(health() == Health::Down);
    upstream::record_check(u, b, true, "", kT0 + 3);
    CHECK(health() == Health::Up);
    CHECK(log.text().find("upstream server \"127.0.0.1:8002\" of upstream \"u\" is healthy again: 3 health checks "
                          "passed, slow start begins") != std::string::npos);
    CHECK(b.st().slow_start_from == kT0 + 3);
    // Unchecked and failing at once: down on the first failure.
    upstream::record_check(u, u.peers[0], false, "timed out", kT0);
    CHECK(u.peers[0].st().health == static_cast<uint32_t>(Health::Down));
}

TEST_CASE("upstream/health: unhealthy peers take no request; unchecked ones only when nothing else") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    Group g({"", "", ""}, "zone z 64k;\nhealth_check;\n", &gen);
    upstream::UpstreamConf& u = g.u();
    // Nothing checked yet: better a request to an unchecked peer than 502.
    CHECK(test::spread(g, 3, kT0) == std::vector<int>{1, 1, 1});
    set_health(u, 0, Health::Up);
    // a is the only one known good.
    CHECK(test::spread(g, 3, kT0) == std::vector<int>{3, 0, 0});
    set_health(u, 1, Health::Up);
    set_health(u, 2, Health::Down);
    CHECK(test::spread(g, 4, kT0) == std::vector<int>{2, 2, 0});
    set_health(u, 0, Health::Down);
    set_health(u, 1, Health::Down);
    PeerPicker pk(u, kT0);
    CHECK(pk.next() == nullptr);
}

TEST_CASE("upstream/health: mandatory: unchecked peers take no request") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    Group g({"", ""}, "zone z 64k;\nhealth_check mandatory;\n", &gen);
    PeerPicker pk(g.u(), kT0);
    CHECK(pk.next() == nullptr);
    set_health(g.u(), 1, Health::Up);
    CHECK(test::spread(g, 2, kT0) == std::vector<int>{0, 2});
}

TEST_CASE("upstream/health: backups take over when every primary fails its checks") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    Group g({"", "", "backup"}, "zone z 64k;\nhealth_check;\n", &gen);
    for (size_t i = 0; i < 3; ++i) set_health(g.u(), i, Health::Up);
    CHECK(test::spread(g, 4, kT0) == std::vector<int>{2, 2, 0});
    set_health(g.u(), 0, Health::Down);
    set_health(g.u(), 1, Health::Down);
    CHECK(test::spread(g, 4, kT0) == std::vector<int>{0, 0, 4});
}

TEST_CASE("upstream/round_robin: slow_start ramps a returning peer's share up") {
    test::CapturedLog log;
    upstream::seed_random(3);
    Group g({"max_fails=1 fail_timeout=1s slow_start=10s", ""});
    upstream::UpstreamConf& u = g.u();
    // a fails, is out for fail_timeout, then a probe succeeds: back, ramping.
    PeerPicker pk(u, kT0);
    Peer* a = pk.next();
    REQUIRE(g.letter(a) == 'a');
    pk.done(a, true, kT0);
    const event::Msec back = kT0 + 1001;
    PeerPicker probe(u, back);
    Peer* p = probe.next();
    while (g.letter(p) != 'a') {
        probe.done(p, false, back);
        PeerPicker again(u, back);
        p = again.next();
        if (g.letter(p) == 'a') {
            again.done(p, false, back);
            break;
        }
        again.done(p, false, back);
    }
    if (g.letter(p) == 'a') probe.done(p, false, back);
    CHECK(log.text().find("is available again: a request succeeded after fail_timeout, slow start begins") !=
          std::string::npos);
    REQUIRE(u.peers[0].st().slow_start_from == back);
    // The share of a, a quarter, half and all the way through the ramp.
    auto share = [&](event::Msec at) {
        auto c = test::spread(g, 4000, at);
        return static_cast<double>(c[0]) / 4000;
    };
    const double q = share(back + 2500), h = share(back + 5000), full = share(back + 10000);
    MESSAGE("a's share: " << q << " at 25 %, " << h << " at 50 %, " << full << " after");
    CHECK(q < h);
    CHECK(h < full);
    CHECK(q < 0.25);
    CHECK(full == doctest::Approx(0.5).epsilon(0.01));
    CHECK(u.peers[0].st().slow_start_from == 0);  // the ramp is over
}
