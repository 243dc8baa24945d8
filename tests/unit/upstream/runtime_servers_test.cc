// Tests of run-time servers (src/upstream/runtime_servers.cc): what the
// upstream API lists, adds, changes and removes in a group's zone, the
// slots a zone has room for, a change refused whole, and the state file.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "balance_fixture.h"
#include "core/shm.h"
#include "upstream/balancer.h"

using namespace gatehouse;
using upstream::ApiError;
using upstream::Peer;
using upstream::PeerPicker;
using upstream::ServerChange;
using upstream::ServerInfo;
using upstream::UpstreamConf;

namespace {

constexpr event::Msec kT0 = 1'000'000;

// "upstream u { zone z SIZE; <body> }" read into its own generation.
struct Group {
    Group(shm::ZoneRegistry& reg, const std::string& body, const std::string& size = "64k")
        : zones(reg), conf(&zones) {
        auto s = conf.add("u.conf", "upstream u {\n zone z " + size + ";\n" + body + "}\n");
        REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.message()));
        auto f = conf.finish();
        REQUIRE_MESSAGE(f.ok(), (f.ok() ? "" : f.message()));
        u = conf.find("u");
        REQUIRE(u != nullptr);
    }
    shm::ZoneSet zones;
    test::HttpConf conf;
    UpstreamConf* u = nullptr;
};

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

ServerChange add(const std::string& server) {
    ServerChange c;
    c.server = server;
    return c;
}

std::vector<std::string> servers(UpstreamConf& u) {
    std::vector<std::string> out;
    for (const ServerInfo& s : upstream::list_servers(u, kT0)) out.push_back(std::to_string(s.id) + " " + s.server);
    return out;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

TEST_CASE("upstream/runtime_servers: the slots a zone has room for") {
    shm::ZoneRegistry reg;
    {
        // 64k: 8 for primaries, 8 for backups (round robin has backups),
        // after the configured peers of each tier.
        Group g(reg, " server 127.0.0.1:8001;\n server 127.0.0.1:8002 backup;\n");
        CHECK(g.u->peers.size() == 2 + 16);
        CHECK(g.u->backup_start == 1 + 8);
        CHECK(g.u->servers[2].api);
        CHECK(g.u->servers[3].backup == 1);
    }
    {
        // ip_hash has no backups: primaries only; 1m: the most, 64.
        Group g(reg, " ip_hash;\n server 127.0.0.1:8001;\n", "1m");
        CHECK(g.u->peers.size() == 1 + 64);
    }
    {
        // 4k: no room.
        Group g(reg, " server 127.0.0.1:8001;\n", "4k");
        CHECK(g.u->peers.size() == 1);
        ServerInfo s;
        ApiError e = upstream::add_server(*g.u, add("127.0.0.2:80"), kT0, s);
        CHECK(e.status == 400);
        CHECK(e.code == "UpstreamOutOfMemory");
    }
}

TEST_CASE("upstream/runtime_servers: add, change, remove, as every pick sees them") {
    shm::ZoneRegistry reg;
    Group g(reg, " server 127.0.0.1:8001 weight=2 max_fails=3;\n server 127.0.0.1:8002 backup;\n");
    UpstreamConf& u = *g.u;
    auto list = upstream::list_servers(u, kT0);
    REQUIRE(list.size() == 2);
    CHECK(list[0].id == 0);
    CHECK(list[0].server == "127.0.0.1:8001");
    CHECK(list[0].weight == 2);
    CHECK(list[0].max_fails == 3);
    CHECK(std::string(list[0].state) == "up");
    CHECK(list[1].backup);
    CHECK(picks(u, 3) == std::map<std::string, int>{{"127.0.0.1:8001", 3}});

    ServerInfo s;
    ServerChange c = add("127.0.0.1:8003");
    c.weight = 2;
    REQUIRE_FALSE(upstream::add_server(u, c, kT0, s));
    CHECK(s.id == 2);
    CHECK(s.server == "127.0.0.1:8003");
    CHECK(s.weight == 2);
    CHECK(picks(u, 4) == std::map<std::string, int>{{"127.0.0.1:8001", 2}, {"127.0.0.1:8003", 2}});
    // A pick walks a tier as far as its last server, not its free slots.
    CHECK(u.tier(0) == std::pair<size_t, size_t>{0, 2});
    CHECK(u.tier(1) == std::pair<size_t, size_t>{9, 10});
    // The same address twice: 409.
    ApiError e = upstream::add_server(u, add("127.0.0.1:8003"), kT0, s);
    CHECK(e.status == 409);
    CHECK(e.text == "server \"127.0.0.1:8003\" exists in upstream \"u\"");

    // Weight, down, drain.
    ServerChange w;
    w.weight = 6;
    REQUIRE_FALSE(upstream::change_server(u, 2, w, kT0, s));
    CHECK(s.weight == 6);
    CHECK(picks(u, 8) == std::map<std::string, int>{{"127.0.0.1:8001", 2}, {"127.0.0.1:8003", 6}});
    ServerChange d;
    d.drain = true;
    REQUIRE_FALSE(upstream::change_server(u, 2, d, kT0, s));
    CHECK(std::string(s.state) == "draining");
    CHECK(picks(u, 3) == std::map<std::string, int>{{"127.0.0.1:8001", 3}});
    ServerChange down;
    down.down = true;
    REQUIRE_FALSE(upstream::change_server(u, 0, down, kT0, s));
    // Primaries all out: the backup.
    CHECK(picks(u, 2) == std::map<std::string, int>{{"127.0.0.1:8002", 2}});
    // The address and the tier cannot change.
    ServerChange addr;
    addr.server = "127.0.0.1:9999";
    e = upstream::change_server(u, 0, addr, kT0, s);
    CHECK(e.code == "UpstreamServerImmutable");
    CHECK(e.text == "server \"0\" address is immutable");
    CHECK(upstream::change_server(u, 7, down, kT0, s).status == 404);

    // A server with a try in flight drains when removed; a new server
    // never reuses its slot nor its id before the try ends.
    d.drain = false;
    REQUIRE_FALSE(upstream::change_server(u, 2, d, kT0, s));
    PeerPicker held(u, kT0);
    Peer* p = held.next();
    REQUIRE(p != nullptr);
    CHECK(p->text == "127.0.0.1:8003");
    REQUIRE_FALSE(upstream::remove_server(u, 2));
    CHECK(servers(u) == std::vector<std::string>{"0 127.0.0.1:8001", "1 127.0.0.1:8002"});
    CHECK(upstream::zombies(u) == 1);
    CHECK(picks(u, 2) == std::map<std::string, int>{{"127.0.0.1:8002", 2}});
    // Its address stays while the try uses it.
    CHECK(p->text == "127.0.0.1:8003");
    held.done(p, false, kT0);
    CHECK(upstream::zombies(u) == 0);
    REQUIRE_FALSE(upstream::add_server(u, add("127.0.0.1:8004"), kT0, s));
    CHECK(s.id == 3);
    // A configured server can be removed too (back once a reload changes the group).
    REQUIRE_FALSE(upstream::remove_server(u, 1));
    CHECK(servers(u) == std::vector<std::string>{"0 127.0.0.1:8001", "3 127.0.0.1:8004"});
    CHECK(upstream::remove_server(u, 1).status == 404);
    // Host names are refused (the worker would block on them).
    e = upstream::add_server(u, add("example.test:80"), kT0, s);
    CHECK(e.code == "UpstreamBadAddress");
}

TEST_CASE("upstream/runtime_servers: a full group refuses, whole") {
    shm::ZoneRegistry reg;
    Group g(reg, " ip_hash;\n server 127.0.0.1:8001;\n", "16k");
    UpstreamConf& u = *g.u;
    ServerInfo s;
    REQUIRE_FALSE(upstream::add_server(u, add("127.0.0.1:8002"), kT0, s));
    REQUIRE_FALSE(upstream::add_server(u, add("127.0.0.1:8003"), kT0, s));
    const auto before = servers(u);
    ApiError e = upstream::add_server(u, add("127.0.0.1:8004"), kT0, s);
    CHECK(e.status == 400);
    CHECK(e.text == "upstream \"u\" memory exhausted");
    CHECK(servers(u) == before);
    // No backups with ip_hash.
    ServerChange b = add("127.0.0.1:8005");
    b.backup = true;
    CHECK(upstream::add_server(u, b, kT0, s).code == "UpstreamNoBackup");
}

TEST_CASE("upstream/runtime_servers: the state file is written at each change and read at load") {
    char dir[] = "/tmp/gh_state_test_XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    const std::string path = std::string(dir) + "/u.state";
    {
        std::ofstream f(path);
        f << "# kept by gatehouse\nserver 127.0.0.1:8001 weight=2 max_conns=3 max_fails=0 fail_timeout=5s\n"
             "  slow_start=500ms down;\nserver 127.0.0.1:8002 backup drain;\n";
    }
    {
        shm::ZoneRegistry reg;
        Group g(reg, " state " + path + ";\n");
        UpstreamConf& u = *g.u;
        auto list = upstream::list_servers(u, kT0);
        REQUIRE(list.size() == 2);
        CHECK(list[0].server == "127.0.0.1:8001");
        CHECK(list[0].weight == 2);
        CHECK(list[0].max_conns == 3);
        CHECK(list[0].max_fails == 0);
        CHECK(list[0].fail_timeout_ms == 5000);
        CHECK(list[0].slow_start_ms == 500);
        CHECK(list[0].down);
        CHECK(list[1].backup);
        CHECK(list[1].drain);
        ServerInfo s;
        REQUIRE_FALSE(upstream::add_server(u, add("127.0.0.1:8003"), kT0, s));
        CHECK(slurp(path) ==
              "server 127.0.0.1:8001 weight=2 max_conns=3 max_fails=0 fail_timeout=5s slow_start=500ms down;\n"
              "server 127.0.0.1:8002 weight=1 max_conns=0 max_fails=1 fail_timeout=10s slow_start=0s backup drain;\n"
              "server 127.0.0.1:8003 weight=1 max_conns=0 max_fails=1 fail_timeout=10s slow_start=0s;\n");
        REQUIRE_FALSE(upstream::remove_server(u, 0));
        CHECK(slurp(path) ==
              "server 127.0.0.1:8002 weight=1 max_conns=0 max_fails=1 fail_timeout=10s slow_start=0s backup drain;\n"
              "server 127.0.0.1:8003 weight=1 max_conns=0 max_fails=1 fail_timeout=10s slow_start=0s;\n");
        // A file that cannot be written: refused, nothing changed.
        const std::string kept = path + ".kept";
        REQUIRE(::rename(path.c_str(), kept.c_str()) == 0);
        REQUIRE(::mkdir(path.c_str(), 0700) == 0);
        ApiError e = upstream::add_server(u, add("127.0.0.1:8004"), kT0, s);
        CHECK(e.status == 500);
        CHECK(servers(u) == std::vector<std::string>{"1 127.0.0.1:8002", "2 127.0.0.1:8003"});
        ::rmdir(path.c_str());
        REQUIRE(::rename(kept.c_str(), path.c_str()) == 0);
    }
    {
        // Loaded into a new zone (a restart): the same servers.
        shm::ZoneRegistry reg;
        Group g(reg, " state " + path + ";\n");
        CHECK(servers(*g.u) == std::vector<std::string>{"0 127.0.0.1:8002", "1 127.0.0.1:8003"});
    }
    {
        std::ofstream f(path);
        f << "server 127.0.0.1:8001 weight=x;\n";
    }
    {
        shm::ZoneRegistry reg;
        shm::ZoneSet zones(reg);
        test::HttpConf conf(&zones);
        auto st = conf.add("u.conf", "upstream u {\n zone z 64k;\n state " + path + ";\n}\n");
        REQUIRE_FALSE(st.ok());
        CHECK(st.message() == "invalid parameter \"weight=x\" in " + path + ":1 in u.conf:3");
        st = conf.add("v.conf", "upstream v {\n zone z;\n state " + std::string(dir) + "/none;\n server 127.0.0.1:1;\n}\n");
        REQUIRE_FALSE(st.ok());
        CHECK(st.message() == "\"server\" directives are not allowed with \"state\" in upstream \"v\" in v.conf:4");
    }
    ::unlink(path.c_str());
    ::rmdir(dir);
}
