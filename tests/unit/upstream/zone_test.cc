// Tests of the upstream "zone" (src/upstream/zone.cc): the peers' state in
// shared memory, kept by a reload that leaves the group unchanged.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "balance_fixture.h"
#include "forked.h"
#include "core/shm.h"
#include "core/shm_slab.h"
#include "upstream/balancer.h"

using namespace gatehouse;
using gatehouse::test::Group;
using upstream::Peer;
using upstream::PeerPicker;

namespace {
constexpr event::Msec kT0 = 1'000'000;
const std::string kZone = "zone z 64k;\n";

// The records in the zone's pool: its blocks but the root.
size_t records(shm::Zone* z) {
    shm::Pool* p = shm::Pool::attach(z->addr(), z->size());
    shm::Guard g(p->mutex());
    auto s = p->stats();
    size_t n = s.large.used;
    for (const auto& c : s.small) n += c.used;
    return n - 1;
}

// "upstream NAME { server ... x n; zone ...; }"
std::string block(const std::string& name, int servers, const std::string& zone) {
    std::string t = "upstream " + name + " {\n";
    for (int i = 0; i < servers; ++i) t += " server 127.0.0.1:" + std::to_string(9000 + i) + ";\n";
    return t + " " + zone + "\n}\n";
}
}  // namespace

TEST_CASE("upstream/zone: the state lives in the zone and survives an unchanged reload") {
    test::CapturedLog log;
    shm::ZoneRegistry reg;
    auto gen1 = std::make_unique<shm::ZoneSet>(reg);
    auto g1 = std::make_unique<Group>(std::vector<std::string>{"max_fails=1", ""}, kZone, gen1.get());
    upstream::UpstreamConf& u1 = g1->u();
    REQUIRE(u1.zone_group != nullptr);
    REQUIRE(u1.peers[0].shared != nullptr);
    CHECK(static_cast<void*>(u1.peers[0].shared) > u1.zone->addr());
    PeerPicker pk(u1, kT0);
    Peer* a = pk.next();
    REQUIRE(g1->letter(a) == 'a');
    pk.done(a, true, kT0);
    CHECK(u1.peers[0].st().fails == 1);
    CHECK(u1.peers[0].local.fails == 0);

    // The next generation, same group: the same zone, the same state.
    shm::ZoneSet gen2(reg);
    Group g2({"max_fails=1", ""}, kZone, &gen2);
    CHECK(g2.u().zone == u1.zone);
    CHECK(g2.u().peers[0].shared == u1.peers[0].shared);
    CHECK(g2.u().peers[0].st().fails == 1);
    // a is still out of the rotation in the new generation.
    CHECK(test::spread(g2, 4, kT0 + 1) == std::vector<int>{0, 4});

    // A changed group starts anew, next to the old one's record.
    shm::ZoneSet gen3(reg);
    Group g3({"max_fails=2", ""}, kZone, &gen3);
    CHECK(g3.u().zone == u1.zone);
    CHECK(g3.u().peers[0].shared != u1.peers[0].shared);
    CHECK(g3.u().peers[0].st().fails == 0);
    g1.reset();
    gen1.reset();
}

TEST_CASE("upstream/zone: every process sees the same counters") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    Group g({"", ""}, kZone, &gen);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // A "worker": takes two connections and keeps them.
        PeerPicker p1(g.u(), kT0), p2(g.u(), kT0);
        p1.next();
        p2.next();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(g.u().peers[0].st().conns == 1);
    CHECK(g.u().peers[1].st().conns == 1);
    // The round robin goes on where the other process left it.
    CHECK(g.u().peers[0].st().picks + g.u().peers[1].st().picks == 2);
}

TEST_CASE("upstream/zone: errors") {
    shm::ZoneRegistry reg;
    struct Row {
        std::string text;
        std::string message;
    };
    const Row rows[] = {
        {"upstream u {\n server 127.0.0.1:1;\n zone z 1k;\n}", "zone \"z\" is too small in t.conf:3"},
        {"upstream u {\n server 127.0.0.1:1;\n zone z;\n}",
         "zero size of shared memory zone \"z\" in t.conf:3"},
        {"upstream u {\n server 127.0.0.1:1;\n zone z 64k;\n zone y 64k;\n}", "\"zone\" directive is duplicate in t.conf:4"},
        {"upstream u {\n server 127.0.0.1:1;\n zone z 64k;\n}\nupstream v {\n server 127.0.0.1:2;\n zone z 128k;\n}",
         "the size 131072 of shared memory zone \"z\" conflicts with already declared size 65536 in t.conf:7"},
        {"upstream u {\n server 127.0.0.1:1;\n zone z lots;\n}", "invalid size \"lots\" in \"zone\" directive in t.conf:3"},
        {"upstream u {\n server 127.0.0.1:1;\n health_check;\n}",
         "\"health_check\" requires \"zone\" in upstream \"u\" in t.conf:3"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.text);
        shm::ZoneSet gen(reg);
        test::HttpConf c(&gen);
        auto s = c.add("t.conf", r.text);
        if (s) s = c.finish();
        REQUIRE_FALSE(s.ok());
        CHECK(s.message() == r.message);
    }
    // Without zones (the fixture's default): refused.
    test::HttpConf c;
    auto s = c.add("t.conf", "upstream u {\n server 127.0.0.1:1;\n zone z 64k;\n}");
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "shared memory zones are not available here in t.conf:3");
}

TEST_CASE("upstream/zone: two groups share a zone; the size comes from one of them") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    test::HttpConf c(&gen);
    REQUIRE(c.add("t.conf", "upstream u { server 127.0.0.1:1; zone z 64k; }\n"
                            "upstream v { server 127.0.0.1:2; server 127.0.0.1:3; zone z; }\n")
                .ok());
    REQUIRE(c.finish().ok());
    auto* u = c.find("u");
    auto* v = c.find("v");
    CHECK(u->zone == v->zone);
    CHECK(u->zone_group != v->zone_group);
    CHECK(u->zone_lock != v->zone_lock);
    CHECK(v->peers[1].shared != nullptr);
}

TEST_CASE("upstream/zone: a full zone starts anew") {
    test::CapturedLog log;
    shm::ZoneRegistry reg;
    // 4 KiB: room for a few small records only.
    std::vector<std::unique_ptr<shm::ZoneSet>> gens;
    std::vector<std::unique_ptr<Group>> groups;
    for (int i = 1; i <= 40; ++i) {
        gens.push_back(std::make_unique<shm::ZoneSet>(reg));
        groups.push_back(std::make_unique<Group>(std::vector<std::string>{"weight=" + std::to_string(i)},
                                                 "zone z 4k;\n", gens.back().get()));
        CHECK(groups.back()->u().zone_group != nullptr);
    }
    CHECK(log.text().find("zone \"z\" is full, the state of its upstreams starts anew") != std::string::npos);
}

TEST_CASE("upstream/zone: a record goes once no generation uses it") {
    shm::ZoneRegistry reg;
    auto gen1 = std::make_unique<shm::ZoneSet>(reg);
    auto g1 = std::make_unique<Group>(std::vector<std::string>{"max_fails=1", ""}, kZone, gen1.get());
    shm::Zone* z = g1->u().zone;
    CHECK(records(z) == 1);
    // Changed: a new record; the old one stays for gen1's workers.
    auto gen2 = std::make_unique<shm::ZoneSet>(reg);
    auto g2 = std::make_unique<Group>(std::vector<std::string>{"max_fails=2", ""}, kZone, gen2.get());
    CHECK(records(z) == 2);
    g2->u().peers[0].st().fails = 1;
    // gen1's workers are gone: the next load frees its record.
    g1.reset();
    gen1.reset();
    CHECK(records(z) == 2);
    shm::ZoneSet gen3(reg);
    Group g3({"max_fails=2", ""}, kZone, &gen3);
    CHECK(records(z) == 1);
    CHECK(g3.u().zone_group == g2->u().zone_group);
    CHECK(g3.u().peers[0].st().fails == 1);
    // Back to gen1's form once gen2 is gone too: a fresh record, not what
    // gen1's workers left.
    g2.reset();
    gen2.reset();
    shm::ZoneSet gen4(reg);
    Group g4({"max_fails=1", ""}, kZone, &gen4);
    CHECK(records(z) == 2);  // g3's and g4's
    CHECK(g4.u().peers[0].st().fails == 0);
}

TEST_CASE("upstream/zone: groups of one generation are never laid over each other") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    test::HttpConf c(&gen);
    // Each of the 20-server groups fits a 4k zone alone, not both.
    REQUIRE(c.add("t.conf", block("u", 20, "zone z 4k;") + block("v", 20, "zone z;")).ok());
    auto s = c.finish();
    REQUIRE_FALSE(s.ok());
    CHECK(s.message().find("zone \"z\" is too small for upstream \"v\" (") == 0);
    CHECK(s.message().find(" bytes needed) in t.conf:") != std::string::npos);
    shm::ZoneSet gen2(reg);
    test::HttpConf alone(&gen2);
    REQUIRE(alone.add("t.conf", block("u", 20, "zone y 4k;")).ok());
    CHECK(alone.finish().ok());
}

TEST_CASE("upstream/zone: a worker killed holding the group's lock does not stop the others") {
    test::CapturedLog log;
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    Group g({"", ""}, kZone, &gen);
    // The lock outlives the lambda: the child dies holding it.
    gatehouse::test::killed_after([&] {
        static std::optional<upstream::GroupLock> held;
        held.emplace(g.u());
    });
    CHECK(test::spread(g, 4, kT0) == std::vector<int>{2, 2});
    CHECK(log.text().find("upstream \"u\" goes on after a worker died holding its zone's lock") !=
          std::string::npos);
}
