// Tests of run-time peer sets (src/upstream/dynamic.cc): a server's
// addresses replaced at run time in the zone, the state of the peers that
// stay kept, the removed ones drained, every process seeing the change.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "balance_fixture.h"
#include "core/shm.h"
#include "event/resolver.h"
#include "upstream/balancer.h"

using namespace gatehouse;
using upstream::Peer;
using upstream::PeerPicker;
using upstream::UpstreamConf;

namespace {

constexpr event::Msec kT0 = 1'000'000;

// The addresses, as replace_addresses takes them.
std::vector<Peer> addrs(std::initializer_list<const char*> list, uint16_t port = 8080) {
    std::vector<Peer> out;
    for (const char* a : list) {
        Peer p;
        if (std::string_view(a).find(':') != std::string_view::npos) {
            auto& in6 = reinterpret_cast<sockaddr_in6&>(p.sa);
            in6.sin6_family = AF_INET6;
            in6.sin6_port = htons(port);
            REQUIRE(inet_pton(AF_INET6, a, &in6.sin6_addr) == 1);
            p.sa_len = sizeof(sockaddr_in6);
        } else {
            auto& in = reinterpret_cast<sockaddr_in&>(p.sa);
            in.sin_family = AF_INET;
            in.sin_port = htons(port);
            REQUIRE(inet_pton(AF_INET, a, &in.sin_addr) == 1);
            p.sa_len = sizeof(sockaddr_in);
        }
        out.push_back(p);
    }
    return out;
}

// "upstream u { zone z 64k; <body> }" read into its own generation.
struct Dyn {
    Dyn(shm::ZoneRegistry& reg, const std::string& body) : zones(reg), conf(&zones) {
        auto s = conf.add("u.conf", "upstream u {\n zone z 64k;\n resolver 127.0.0.1:53;\n" + body + "}\n");
        REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.message()));
        auto f = conf.finish();
        REQUIRE_MESSAGE(f.ok(), (f.ok() ? "" : f.message()));
        u = conf.find("u");
        REQUIRE(u != nullptr);
    }
    const upstream::Server& server(size_t i) const { return u->servers[i]; }

    shm::ZoneSet zones;
    test::HttpConf conf;
    UpstreamConf* u = nullptr;
};

// Which addresses n picks (each done at once) went to.
std::map<std::string, int> picks(UpstreamConf& u, int n, event::Msec now = kT0) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) {
        PeerPicker pk(u, now);
        Peer* p = pk.next();
        if (!p) {
            ++out["-"];
            continue;
        }
        ++out[p->text];
        pk.done(p, false, now);
    }
    return out;
}

Peer* find(UpstreamConf& u, const std::string& text) {
    for (Peer& p : u.peers)
        if (p.text == text && upstream::present(p)) return &p;
    return nullptr;
}

}  // namespace

TEST_CASE("upstream/dynamic: a resolve server starts empty and takes the addresses it is given") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server 127.0.0.1:8001;\n server example.test:8080 resolve max=4;\n");
    UpstreamConf& u = *d.u;
    // And the upstream API's 8 + 8 slots of a 64k zone (runtime_servers.cc).
    REQUIRE(u.peers.size() == 5 + 16);
    CHECK(u.servers[1].dynamic);
    CHECK(u.servers[1].host == "example.test");
    CHECK(u.servers[1].port == 8080);
    // Nothing resolved yet: only the fixed server.
    CHECK(picks(u, 4) == std::map<std::string, int>{{"127.0.0.1:8001", 4}});

    auto c = upstream::replace_addresses(u, d.server(1), addrs({"127.0.0.2", "127.0.0.3"}), kT0);
    REQUIRE(c.ok());
    CHECK(c->added == std::vector<std::string>{"127.0.0.2:8080", "127.0.0.3:8080"});
    CHECK(c->removed.empty());
    CHECK(c->dropped.empty());
    CHECK(upstream::server_addresses(u, d.server(1)) == std::vector<std::string>{"127.0.0.2:8080", "127.0.0.3:8080"});
    // Round robin over the three, equally.
    CHECK(picks(u, 6) ==
          std::map<std::string, int>{{"127.0.0.1:8001", 2}, {"127.0.0.2:8080", 2}, {"127.0.0.3:8080", 2}});

    // The same list again changes nothing.
    c = upstream::replace_addresses(u, d.server(1), addrs({"127.0.0.3", "127.0.0.2"}), kT0);
    REQUIRE(c.ok());
    CHECK_FALSE(c->changed());

    // Replaced: the new one only; an empty list empties the server.
    c = upstream::replace_addresses(u, d.server(1), addrs({"127.0.0.4"}), kT0);
    REQUIRE(c.ok());
    CHECK(c->added == std::vector<std::string>{"127.0.0.4:8080"});
    CHECK(c->removed == std::vector<std::string>{"127.0.0.2:8080", "127.0.0.3:8080"});
    CHECK(picks(u, 4) == std::map<std::string, int>{{"127.0.0.1:8001", 2}, {"127.0.0.4:8080", 2}});
    c = upstream::replace_addresses(u, d.server(1), {}, kT0);
    REQUIRE(c.ok());
    CHECK(c->removed == std::vector<std::string>{"127.0.0.4:8080"});
    CHECK(picks(u, 2) == std::map<std::string, int>{{"127.0.0.1:8001", 2}});
}

TEST_CASE("upstream/dynamic: IPv6 addresses, duplicates, and more addresses than slots") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server example.test:8080 resolve max=2;\n");
    auto c = upstream::replace_addresses(*d.u, d.server(0), addrs({"::1", "127.0.0.2", "::1", "127.0.0.3"}), kT0);
    REQUIRE(c.ok());
    CHECK(c->added == std::vector<std::string>{"[::1]:8080", "127.0.0.2:8080"});
    CHECK(c->dropped == std::vector<std::string>{"127.0.0.3:8080"});
    // A group with nothing resolved answers "no peer" (the proxy's 502).
    c = upstream::replace_addresses(*d.u, d.server(0), {}, kT0);
    REQUIRE(c.ok());
    PeerPicker pk(*d.u, kT0);
    CHECK(pk.next() == nullptr);
}

TEST_CASE("upstream/dynamic: a peer that stays keeps its state, a new one starts fresh") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server example.test:8080 resolve max_fails=1 fail_timeout=10s slow_start=30s;\n");
    UpstreamConf& u = *d.u;
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2", "127.0.0.3"}), kT0).ok());
    Peer* a = find(u, "127.0.0.2:8080");
    REQUIRE(a != nullptr);
    // Added peers ramp up (slow_start) from the change.
    CHECK(a->st().slow_start_from == kT0);
    a->st().slow_start_from = 0;
    {
        PeerPicker pk(u, kT0);
        Peer* p = nullptr;
        while ((p = pk.next()) && p != a) pk.done(p, false, kT0);
        REQUIRE(p == a);
        pk.done(a, true, kT0);  // failed: out for fail_timeout
    }
    CHECK(a->st().fails == 1);
    const upstream::PeerState* st = &a->st();

    auto c = upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2", "127.0.0.4"}), kT0 + 1);
    REQUIRE(c.ok());
    CHECK(c->added == std::vector<std::string>{"127.0.0.4:8080"});
    CHECK(c->removed == std::vector<std::string>{"127.0.0.3:8080"});
    // The same peer, the same state: still failed, still out.
    CHECK(find(u, "127.0.0.2:8080") == a);
    CHECK(&a->st() == st);
    CHECK(a->st().fails == 1);
    Peer* n = find(u, "127.0.0.4:8080");
    REQUIRE(n != nullptr);
    CHECK(n->st().fails == 0);
    CHECK(n->st().slow_start_from == kT0 + 1);
    n->st().slow_start_from = 0;
    CHECK(picks(u, 3, kT0 + 2) == std::map<std::string, int>{{"127.0.0.4:8080", 3}});
}

TEST_CASE("upstream/dynamic: a removed peer drains: no new tries, its slot reused once idle") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server example.test:8080 resolve max=1;\n");
    UpstreamConf& u = *d.u;
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2"}), kT0).ok());
    PeerPicker busy(u, kT0);
    Peer* a = busy.next();
    REQUIRE(a != nullptr);
    CHECK(a->st().conns == 1);

    // Removed while a try is in flight: it finishes on the same address.
    auto c = upstream::replace_addresses(u, d.server(0), {}, kT0);
    REQUIRE(c.ok());
    CHECK(c->removed == std::vector<std::string>{"127.0.0.2:8080"});
    CHECK(upstream::server_addresses(u, d.server(0), true) == std::vector<std::string>{"127.0.0.2:8080"});
    CHECK(picks(u, 1) == std::map<std::string, int>{{"-", 1}});
    // The only slot is busy draining: a new address has no room yet.
    c = upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.3"}), kT0);
    REQUIRE(c.ok());
    CHECK(c->dropped == std::vector<std::string>{"127.0.0.3:8080"});
    CHECK(a->text == "127.0.0.2:8080");
    busy.done(a, false, kT0);
    CHECK(a->st().conns == 0);
    // Idle now: the slot takes the new address, with a fresh state.
    c = upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.3"}), kT0);
    REQUIRE(c.ok());
    CHECK(c->added == std::vector<std::string>{"127.0.0.3:8080"});
    CHECK(a->text == "127.0.0.3:8080");
    CHECK(a->st().picks == 0);
}

TEST_CASE("upstream/dynamic: a draining peer given back keeps its state") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server example.test:8080 resolve;\n");
    UpstreamConf& u = *d.u;
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2"}), kT0).ok());
    PeerPicker busy(u, kT0);
    Peer* a = busy.next();
    REQUIRE(a != nullptr);
    REQUIRE(upstream::replace_addresses(u, d.server(0), {}, kT0).ok());
    auto c = upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2"}), kT0);
    REQUIRE(c.ok());
    CHECK(c->added == std::vector<std::string>{"127.0.0.2:8080"});
    CHECK(a->st().conns == 1);
    CHECK(a->st().picks == 1);
    busy.done(a, false, kT0);
}

TEST_CASE("upstream/dynamic: the change is made once and every process sees it") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server 127.0.0.1:8001;\n server example.test:8080 resolve;\n");
    UpstreamConf& u = *d.u;
    CHECK(picks(u, 1) == std::map<std::string, int>{{"127.0.0.1:8001", 1}});
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // Another "worker" resolves the name.
        auto c = upstream::replace_addresses(u, d.server(1), addrs({"127.0.0.2"}), kT0);
        _exit(c.ok() && c->added.size() == 1 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // This one's next pick follows, with its own copy of the address.
    CHECK(picks(u, 4) == std::map<std::string, int>{{"127.0.0.1:8001", 2}, {"127.0.0.2:8080", 2}});
}

TEST_CASE("upstream/dynamic: every method balances over the current peers") {
    const char* methods[] = {"least_conn;", "random;", "random two;", "least_time header;", "hash $x;", "ip_hash;"};
    for (const char* m : methods) {
        CAPTURE(m);
        shm::ZoneRegistry reg;
        Dyn d(reg, std::string(" ") + m + "\n server example.test:8080 resolve;\n");
        UpstreamConf& u = *d.u;
        CHECK(picks(u, 1) == std::map<std::string, int>{{"-", 1}});
        REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2", "127.0.0.3"}), kT0).ok());
        auto seen = picks(u, 200);
        CHECK(seen.count("-") == 0);
        CHECK(seen["127.0.0.2:8080"] + seen["127.0.0.3:8080"] == 200);
        REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.4"}), kT0).ok());
        CHECK(picks(u, 20) == std::map<std::string, int>{{"127.0.0.4:8080", 20}});
    }
}

TEST_CASE("upstream/dynamic: hash consistent rebuilds its ring, moving only the removed peer's keys") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " hash $k consistent;\n server example.test:8080 resolve;\n");
    UpstreamConf& u = *d.u;
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2", "127.0.0.3", "127.0.0.4"}), kT0).ok());
    auto where = [&](int key) {
        PeerPicker pk(u, kT0);
        pk.set_key("key" + std::to_string(key));
        Peer* p = pk.next();
        REQUIRE(p != nullptr);
        std::string t = p->text;
        pk.done(p, false, kT0);
        return t;
    };
    std::vector<std::string> before;
    for (int k = 0; k < 300; ++k) before.push_back(where(k));
    CHECK(u.ring.size() == 3 * upstream::kRingPointsPerWeight);
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2", "127.0.0.3"}), kT0).ok());
    int moved = 0;
    for (int k = 0; k < 300; ++k) {
        const std::string now = where(k);
        CHECK(now != "127.0.0.4:8080");
        if (before[k] != "127.0.0.4:8080") CHECK(now == before[k]);
        moved += now != before[k];
    }
    CHECK(u.ring.size() == 2 * upstream::kRingPointsPerWeight);
    CHECK(moved > 0);
    CHECK(moved < 200);
}

TEST_CASE("upstream/dynamic: a reload keeps the slots, a changed group starts with their addresses") {
    shm::ZoneRegistry reg;
    auto g1 = std::make_unique<Dyn>(reg, " server example.test:8080 resolve;\n");
    REQUIRE(upstream::replace_addresses(*g1->u, g1->server(0), addrs({"127.0.0.2"}), kT0).ok());
    // Unchanged: the same record, the same slots.
    Dyn g2(reg, " server example.test:8080 resolve;\n");
    CHECK(g2.u->zone_group == g1->u->zone_group);
    CHECK(upstream::server_addresses(*g2.u, g2.server(0)) == std::vector<std::string>{"127.0.0.2:8080"});
    // Another port: a new record, starting with the name's addresses.
    Dyn g3(reg, " server example.test:8081 resolve;\n");
    CHECK(g3.u->zone_group != g1->u->zone_group);
    CHECK(upstream::server_addresses(*g3.u, g3.server(0)) == std::vector<std::string>{"127.0.0.2:8081"});
}

TEST_CASE("upstream/dynamic: errors") {
    shm::ZoneRegistry reg;
    {
        Dyn d(reg, " server 127.0.0.1:8001;\n");
        auto c = upstream::replace_addresses(*d.u, d.server(0), addrs({"127.0.0.2"}), kT0);
        REQUIRE_FALSE(c.ok());
        CHECK(c.message() == "server \"127.0.0.1:8001\" of upstream \"u\" has no run-time addresses");
    }
    struct Row {
        std::string text;
        std::string message;
    };
    const Row rows[] = {
        {"upstream u {\n server example.test resolve;\n}",
         "resolving names at run time requires upstream \"u\" in t.conf:1 to be in shared memory"},
        {"upstream u {\n zone z 64k;\n server example.test resolve;\n}",
         "no resolver defined to resolve names at run time in upstream \"u\" in t.conf:1"},
        {"upstream u {\n zone z 64k;\n server example.test resolve;\n resolver 127.0.0.1;\n resolver 127.0.0.2;\n}",
         "\"resolver\" directive is duplicate in t.conf:5"},
        {"upstream u {\n zone z 64k;\n server example.test resolve;\n resolver_timeout soon;\n}",
         "invalid time \"soon\" in \"resolver_timeout\" directive in t.conf:4"},
        {"upstream u {\n zone z 64k;\n server example.test max=2;\n}", "invalid parameter \"max=2\" in t.conf:3"},
        {"upstream u {\n zone z 64k;\n server example.test resolve max=0;\n}",
         "invalid parameter \"max=0\" in t.conf:3"},
        {"upstream u {\n zone z 64k;\n server example.test resolve max=1025;\n}",
         "invalid parameter \"max=1025\" in t.conf:3"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.text);
        shm::ZoneSet gen(reg);
        test::HttpConf c(&gen);
        auto s = c.add("t.conf", r.text);
        if (s.ok()) s = c.finish();
        REQUIRE_FALSE(s.ok());
        CHECK(s.message() == r.message);
    }
}

TEST_CASE("upstream/dynamic: a name with one address is a group of one, max_fails does not apply") {
    shm::ZoneRegistry reg;
    Dyn d(reg, " server example.test:8080 resolve max_fails=1 fail_timeout=60s;\n");
    UpstreamConf& u = *d.u;
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2"}), kT0).ok());
    auto fail_one = [&](event::Msec now) {
        PeerPicker pk(u, now);
        Peer* p = pk.next();
        REQUIRE(p != nullptr);
        pk.done(p, true, now);
        return p->text;
    };
    CHECK(fail_one(kT0) == "127.0.0.2:8080");
    // Still offered, as nginx does for a group of one [upstream_resolve_reload.t].
    CHECK(picks(u, 2, kT0 + 1) == std::map<std::string, int>{{"127.0.0.2:8080", 2}});
    // Two addresses: a failure takes one out.
    REQUIRE(upstream::replace_addresses(u, d.server(0), addrs({"127.0.0.2", "127.0.0.3"}), kT0 + 2).ok());
    CHECK(fail_one(kT0 + 3) == "127.0.0.2:8080");
    CHECK(picks(u, 2, kT0 + 4) == std::map<std::string, int>{{"127.0.0.3:8080", 2}});
}

TEST_CASE("upstream/dynamic: the block's resolver, else the http block's, each setting on its own") {
    shm::ZoneRegistry reg;
    shm::ZoneSet gen(reg);
    test::HttpConf c(&gen);
    REQUIRE(c.add("t.conf", "resolver 127.0.0.9 valid=5s;\nresolver_timeout 7s;\n"
                            "upstream a {\n zone z 64k;\n server a.test resolve;\n}\n"
                            "upstream b {\n zone z;\n server b.test resolve;\n resolver 127.0.0.8;\n}\n"
                            "upstream c {\n zone z;\n server c.test resolve;\n resolver_timeout 2s;\n}\n")
                .ok());
    auto f = c.finish();
    REQUIRE_MESSAGE(f.ok(), (f.ok() ? "" : f.message()));
    auto* a = c.find("a");
    auto* b = c.find("b");
    auto* cc = c.find("c");
    REQUIRE(a->resolver != nullptr);
    CHECK(a->resolver->servers[0].text == "127.0.0.9:53");
    CHECK(a->resolver_timeout == std::chrono::seconds(7));
    CHECK(b->resolver->servers[0].text == "127.0.0.8:53");
    CHECK(b->resolver_timeout == std::chrono::seconds(7));
    CHECK(cc->resolver == a->resolver);
    CHECK(cc->resolver_timeout == std::chrono::seconds(2));
}
