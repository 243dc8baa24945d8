// Tests of least_conn (src/upstream/least_conn.cc): the fewest connections
// per weight, ties by weighted round robin, backups, max_conns.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "balance_fixture.h"
#include "upstream/upstream.h"

using namespace gatehouse;
using gatehouse::test::Group;
using upstream::Peer;
using upstream::PeerPicker;

namespace {
constexpr event::Msec kT0 = 1'000'000;
}

TEST_CASE("upstream/least_conn: idle peers tie, so the shares follow the weights") {
    Group g({"weight=3", "weight=2", ""}, "least_conn;\n");
    // With every request done before the next, the counts always tie and
    // the weighted round robin decides: exactly 3:2:1.
    test::check_shares(test::spread(g, 3000), {3, 2, 1}, 0.0001);
}

TEST_CASE("upstream/least_conn: the peer with the fewest connections per weight") {
    Group g({"", "", "weight=2"}, "least_conn;\n");
    std::vector<std::unique_ptr<PeerPicker>> open;
    auto hold = [&]() {
        open.push_back(std::make_unique<PeerPicker>(g.u(), kT0));
        return g.letter(open.back()->next());
    };
    // Held connections: each pick goes where conns / weight is lowest.
    std::string seq;
    for (int i = 0; i < 8; ++i) seq += hold();
    // c (weight 2) takes two for each one of a and b.
    int a = 0, b = 0, c = 0;
    for (char x : seq) (x == 'a' ? a : x == 'b' ? b : c)++;
    CHECK(a == 2);
    CHECK(b == 2);
    CHECK(c == 4);
    // Releasing a's connections makes it the choice.
    for (size_t i = 0; i < seq.size(); ++i)
        if (seq[i] == 'a') open[i]->done(&g.u().peers[0], false, kT0);
    CHECK(hold() == 'a');
    CHECK(hold() == 'a');
}

TEST_CASE("upstream/least_conn: max_conns, down and backups") {
    Group g({"max_conns=1", "down", "backup"}, "least_conn;\n");
    PeerPicker first(g.u(), kT0);
    Peer* a = first.next();
    CHECK(g.letter(a) == 'a');
    // a is full, b is down: the backup.
    PeerPicker second(g.u(), kT0);
    CHECK(g.letter(second.next()) == 'c');
    first.done(a, false, kT0);
    PeerPicker third(g.u(), kT0);
    CHECK(g.letter(third.next()) == 'a');
}
