// Tests of random [two [least_conn]] (src/upstream/random.cc).
#include <doctest/doctest.h>

#include <algorithm>
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
}

TEST_CASE("upstream/random: draws follow the weights") {
    upstream::seed_random(42);
    Group g({"weight=3", "", "weight=2", "down"}, "random;\n");
    auto count = test::spread(g, 60000);
    CHECK(count[3] == 0);
    count.pop_back();
    test::check_shares(count, {3, 1, 2}, 0.01);
}

TEST_CASE("upstream/random: two least_conn takes the less loaded of two") {
    upstream::seed_random(7);
    Group g({"", "", ""}, "random two least_conn;\n");
    // a holds many connections: of two draws, a wins only against itself,
    // which "two" never draws, so a gets nothing while it is loaded.
    g.u().peers[0].st().conns.store(5);
    auto count = test::spread(g, 3000);
    CHECK(count[0] == 0);
    CHECK(count[1] > 1200);
    CHECK(count[2] > 1200);
    g.u().peers[0].st().conns.store(0);
    // Unloaded: the weights again.
    test::check_shares(test::spread(g, 30000), {1, 1, 1}, 0.02);
}

TEST_CASE("upstream/random: the tries of one request never repeat a peer") {
    upstream::seed_random(1);
    Group g({"", "", ""}, "random;\n");
    PeerPicker pk(g.u(), kT0);
    std::string tried;
    for (Peer* p = pk.next(); p; p = pk.next()) {
        tried += g.letter(p);
        pk.done(p, false, kT0);
    }
    std::sort(tried.begin(), tried.end());
    CHECK(tried == "abc");
}

TEST_CASE("upstream/random: \"backup\" is refused, as nginx") {
    test::HttpConf c;
    auto s = c.add("t.conf", "upstream u {\n random;\n server 127.0.0.1:1;\n server 127.0.0.1:2 backup;\n}");
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "invalid parameter \"backup\" in t.conf:4");
}
