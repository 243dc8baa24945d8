// Tests of ip_hash and hash [consistent] (src/upstream/hash.cc):
// stickiness, weights, what happens when a peer goes, the ketama ring.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <map>
#include <string>
#include <vector>

#include "balance_fixture.h"
#include "upstream/balancer.h"

using namespace gatehouse;
using gatehouse::test::Group;
using upstream::Peer;
using upstream::PeerPicker;

namespace {

constexpr event::Msec kT0 = 1'000'000;

sockaddr_in v4(const char* ip) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

char pick_key(Group& g, const std::string& key, event::Msec now = kT0) {
    PeerPicker pk(g.u(), now);
    pk.set_key(key);
    Peer* p = pk.next();
    pk.done(p, false, now);
    return g.letter(p);
}

char pick_client(Group& g, const char* ip) {
    PeerPicker pk(g.u(), kT0);
    sockaddr_in sa = v4(ip);
    pk.set_client(reinterpret_cast<const sockaddr*>(&sa));
    Peer* p = pk.next();
    pk.done(p, false, kT0);
    return g.letter(p);
}

std::string server_line(int port, const std::string& params = "") {
    return "127.0.0.1:" + std::to_string(port) + " " + params;
}

}  // namespace

TEST_CASE("upstream/hash: ip_hash keeps a client (its /24) on one server") {
    Group g({"", "", ""}, "ip_hash;\n");
    std::vector<int> count(3, 0);
    for (int i = 0; i < 3000; ++i) {
        std::string ip = "10." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ".7";
        char first = pick_client(g, ip.c_str());
        ++count[static_cast<size_t>(first - 'a')];
        // The same client, and its neighbours in the /24, again and again.
        CHECK(pick_client(g, ip.c_str()) == first);
        std::string same24 = ip.substr(0, ip.rfind('.')) + ".200";
        CHECK(pick_client(g, same24.c_str()) == first);
    }
    // 3000 distinct /24s spread about evenly.
    test::check_shares(count, {1, 1, 1}, 0.04);
}

TEST_CASE("upstream/hash: ip_hash maps clients as nginx does") {
    // nginx's arithmetic on the first three octets: 127.0.1.x .. 127.0.30.x
    // split evenly over two and three servers behind nginx, and so here.
    CHECK(upstream::ip_hash_round(upstream::kIpHashStart, std::vector<uint8_t>{127, 0, 1}) ==
          ((89 * 113 + 127) % 6271 * 113 % 6271 * 113 + 1) % 6271);
    for (size_t n : {2, 3}) {
        Group g(std::vector<std::string>(n, ""), "ip_hash;\n");
        std::vector<int> count(n, 0);
        for (int i = 1; i <= 30; ++i) {
            std::string ip = "127.0." + std::to_string(i) + ".2";
            ++count[static_cast<size_t>(pick_client(g, ip.c_str()) - 'a')];
        }
        CHECK(count == std::vector<int>(n, static_cast<int>(30 / n)));
    }
}

TEST_CASE("upstream/hash: ip_hash sends every Unix socket client to one server, as 0.0.0.x") {
    for (size_t n : {2, 3, 5}) {
        Group g(std::vector<std::string>(n, ""), "ip_hash;\n");
        const char zero = pick_client(g, "0.0.0.9");
        for (int i = 0; i < 10; ++i) {
            PeerPicker pk(g.u(), kT0);
            sockaddr_un un{};
            un.sun_family = AF_UNIX;
            pk.set_client(reinterpret_cast<const sockaddr*>(&un));
            Peer* p = pk.next();
            pk.done(p, false, kT0);
            CHECK(g.letter(p) == zero);
        }
    }
}

TEST_CASE("upstream/hash: ip_hash without a client address is round robin") {
    Group g({"", ""}, "ip_hash;\n");
    CHECK(test::spread(g, 4) == std::vector<int>{2, 2});
}

TEST_CASE("upstream/hash: an empty key is round robin, consistent or not") {
    for (const char* method : {"hash $arg_a;\n", "hash $arg_a consistent;\n"}) {
        CAPTURE(method);
        Group g({"", "", ""}, method);
        std::vector<int> count(3, 0);
        for (int i = 0; i < 6; ++i) ++count[static_cast<size_t>(pick_key(g, "") - 'a')];
        CHECK(count == std::vector<int>{2, 2, 2});
    }
}

TEST_CASE("upstream/hash: a key sticks, shares follow the weights") {
    Group g({"weight=2", "", ""}, "hash $request_uri;\n");
    CHECK(g.u().hash_key == "$request_uri");
    std::map<std::string, char> first;
    std::vector<int> count(3, 0);
    for (int i = 0; i < 20000; ++i) {
        std::string key = "/item/" + std::to_string(i);
        char c = pick_key(g, key);
        first[key] = c;
        ++count[static_cast<size_t>(c - 'a')];
    }
    test::check_shares(count, {2, 1, 1}, 0.02);
    for (auto& [key, c] : first) {
        if (key.size() % 7 != 0) continue;  // a sample is enough
        CHECK(pick_key(g, key) == c);
    }
}

TEST_CASE("upstream/hash: a key whose server is unusable goes elsewhere, then comes back") {
    test::CapturedLog log;
    Group g({"max_fails=1 fail_timeout=10s", "", ""}, "hash $arg_id;\n");
    // A key of a.
    std::string key;
    for (int i = 0; key.empty(); ++i)
        if (pick_key(g, "k" + std::to_string(i)) == 'a') key = "k" + std::to_string(i);
    PeerPicker pk(g.u(), kT0);
    pk.set_key(key);
    Peer* p = pk.next();
    REQUIRE(g.letter(p) == 'a');
    pk.done(p, true, kT0);
    char other = pick_key(g, key, kT0 + 1);
    CHECK(other != 'a');
    CHECK(pick_key(g, key, kT0 + 2) == other);  // sticks to its second choice
    CHECK(pick_key(g, key, kT0 + 10001) == 'a');  // a is back after fail_timeout
}

TEST_CASE("upstream/hash: the consistent ring has 160 points per weight unit") {
    Group g({"", "weight=3"}, "hash $uri consistent;\n");
    CHECK(g.u().consistent);
    CHECK(g.u().ring.size() == 160 * 4);
    for (size_t i = 1; i < g.u().ring.size(); ++i) CHECK(g.u().ring[i - 1].hash <= g.u().ring[i].hash);
    CHECK(upstream::ring_find(g.u().ring, 0) == 0);
    CHECK(upstream::ring_find(g.u().ring, UINT32_MAX) <= g.u().ring.size() - 1);
}

TEST_CASE("upstream/hash: consistent: removing one of N servers moves about 1/N of the keys") {
    constexpr int kKeys = 20000;
    for (int n : {3, 5, 10}) {
        CAPTURE(n);
        std::vector<std::string> all, without;
        for (int i = 0; i < n; ++i) all.push_back("");
        Group full(all, "hash $uri consistent;\n");
        // The same servers but the last one (ports 8001.. as Group makes them).
        std::string text = "upstream u {\n hash $uri consistent;\n";
        for (int i = 0; i < n - 1; ++i) text += " server " + server_line(8001 + i) + ";\n";
        text += "}\n";
        test::HttpConf c;
        REQUIRE(c.add("u.conf", text).ok());
        REQUIRE(c.finish().ok());
        upstream::UpstreamConf& less = *c.find("u");
        int moved = 0;
        int owned_by_removed = 0;
        for (int k = 0; k < kKeys; ++k) {
            std::string key = "/obj/" + std::to_string(k);
            PeerPicker a(full.u(), kT0), b(less, kT0);
            a.set_key(key);
            b.set_key(key);
            Peer* pa = a.next();
            Peer* pb = b.next();
            REQUIRE(pa);
            REQUIRE(pb);
            a.done(pa, false, kT0);
            b.done(pb, false, kT0);
            if (pa->text == "127.0.0.1:" + std::to_string(8000 + n)) ++owned_by_removed;
            if (pa->text != pb->text) ++moved;
        }
        // Only the removed server's keys move.
        CHECK(moved == owned_by_removed);
        const double fraction = static_cast<double>(moved) / kKeys;
        MESSAGE("n=" << n << " moved " << fraction << " of the keys, 1/n = " << 1.0 / n);
        CHECK(fraction <= 1.2 / n);
        CHECK(fraction >= 0.5 / n);
    }
}

TEST_CASE("upstream/hash: consistent: a down server's keys go to the next point's owner") {
    Group g({"", "", ""}, "hash $uri consistent;\n");
    std::map<std::string, char> before;
    for (int k = 0; k < 500; ++k) before["/" + std::to_string(k)] = pick_key(g, "/" + std::to_string(k));
    // Marking b down in the running group (as a health check would):
    g.u().peers[0].st().health.store(static_cast<uint32_t>(upstream::Health::Up));
    g.u().peers[1].st().health.store(static_cast<uint32_t>(upstream::Health::Down));
    g.u().peers[2].st().health.store(static_cast<uint32_t>(upstream::Health::Up));
    upstream::HealthCheck hc;
    g.u().health = &hc;
    for (auto& [key, c] : before) {
        char now = pick_key(g, key);
        if (c != 'b') CHECK(now == c);
        else CHECK(now != 'b');
    }
    g.u().health = nullptr;
}

TEST_CASE("upstream/hash: \"backup\" is refused, as nginx, in either order") {
    for (const char* text : {"upstream u {\n hash $uri;\n server 127.0.0.1:1;\n server 127.0.0.1:2 backup;\n}",
                             "upstream u {\n server 127.0.0.1:1;\n server 127.0.0.1:2 backup;\n ip_hash;\n}"}) {
        CAPTURE(text);
        test::HttpConf c;
        auto s = c.add("t.conf", text);
        REQUIRE_FALSE(s.ok());
        CHECK(s.message().find("invalid parameter \"backup\"") == 0);
        CHECK(s.message().find("t.conf:") != std::string::npos);
    }
}
