// Tests of PeerPicker (src/upstream/round_robin.cc): nginx's smooth
// weighted round robin sequences, down, backup, max_conns and
// max_fails/fail_timeout, with time passed in by hand.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fixture.h"
#include "upstream/upstream.h"

using namespace gatehouse;
using gatehouse::test::CapturedLog;
using gatehouse::test::Group;
using upstream::Peer;
using upstream::PeerPicker;

namespace {

constexpr event::Msec kT0 = 1'000'000;

// `n` requests, each taking the first peer offered and succeeding.
std::string sequence(Group& g, size_t n, event::Msec now = kT0) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        PeerPicker pk(g.u(), now);
        Peer* p = pk.next();
        out += g.letter(p);
        pk.done(p, false, now);
    }
    return out;
}

// One request that fails on the first peer offered; returns its letter.
char fail_once(Group& g, event::Msec now) {
    PeerPicker pk(g.u(), now);
    Peer* p = pk.next();
    pk.done(p, true, now);
    return g.letter(p);
}

}  // namespace

TEST_CASE("upstream/round_robin: nginx's smooth sequences") {
    struct Row {
        std::vector<std::string> params;
        const char* cycle;  // what nginx gives over one cycle (sum of weights)
    };
    const Row rows[] = {
        {{"weight=5", "weight=1", "weight=1"}, "aabacaa"},  // nginx's own example
        {{"", "", ""}, "abc"},
        {{"weight=2", ""}, "aba"},
        {{"weight=3", "weight=2"}, "ababa"},
        {{"weight=4", "weight=2", "weight=1"}, "abacaba"},
        {{"weight=1", "weight=2", "weight=3"}, "cbacbc"},
        {{"weight=10", ""}, "aaaaabaaaaa"},
        {{"weight=3", "weight=3", "weight=1"}, "abcabab"},
    };
    for (const Row& r : rows) {
        CAPTURE(r.cycle);
        Group g(r.params);
        const std::string cycle = r.cycle;
        // The same cycle again and again: current weights return to zero.
        CHECK(sequence(g, cycle.size() * 3) == cycle + cycle + cycle);
    }
}

TEST_CASE("upstream/round_robin: a host name's addresses share the server's weight") {
    // localhost may give 127.0.0.1 and ::1; each address is a peer of
    // weight 2, so each comes twice per cycle.
    test::HttpConf c;
    REQUIRE(c.add("u.conf", "upstream u { server localhost:8001 weight=2; server 127.0.0.2:8002; }").ok());
    REQUIRE(c.finish().ok());
    upstream::UpstreamConf& u = *c.find("u");
    const size_t n = u.servers[0].naddrs;
    REQUIRE(n >= 1);
    REQUIRE(u.peers.size() == n + 1);
    std::vector<int> count(u.peers.size());
    for (size_t i = 0; i < 2 * n + 1; ++i) {
        PeerPicker pk(u, kT0);
        Peer* p = pk.next();
        REQUIRE(p != nullptr);
        ++count[static_cast<size_t>(p - u.peers.data())];
        pk.done(p, false, kT0);
    }
    for (size_t i = 0; i < n; ++i) CHECK(count[i] == 2);
    CHECK(count[n] == 1);
}

TEST_CASE("upstream/round_robin: each try of a request excludes the peers tried") {
    Group g({"weight=5", "", ""});
    PeerPicker pk(g.u(), kT0);
    std::string tried;
    for (int i = 0; i < 3; ++i) {
        Peer* p = pk.next();
        tried += g.letter(p);
        // A failure not counted against max_fails (say, a 404 the
        // configuration does not retry on) still moves on.
        pk.done(p, false, kT0);
    }
    CHECK(tried == "abc");
    CHECK(pk.tried() == 3);
    CHECK(pk.next() == nullptr);
}

TEST_CASE("upstream/round_robin: one request tries every peer once, in pools of any size") {
    // The tried set lives inline up to 64 peers and in an array past it:
    // both sides of that edge, and a pool several words long.
    for (size_t n : {1U, 63U, 64U, 65U, 130U}) {
        CAPTURE(n);
        Group g{std::vector<std::string>(n)};
        PeerPicker pk(g.u(), kT0);
        std::vector<int> seen(n);
        for (size_t i = 0; i < n; ++i) {
            Peer* p = pk.next();
            REQUIRE(p != nullptr);
            ++seen[static_cast<size_t>(p - g.u().peers.data())];
            pk.done(p, false, kT0);
        }
        CHECK(pk.tried() == n);
        CHECK(pk.next() == nullptr);
        CHECK(std::count(seen.begin(), seen.end(), 1) == static_cast<long>(n));
    }
}

TEST_CASE("upstream/round_robin: down servers are never picked") {
    Group g({"", "down", ""});
    CHECK(sequence(g, 6) == "acacac");

    Group all({"down", "down"});
    PeerPicker pk(all.u(), kT0);
    CHECK(pk.next() == nullptr);
}

TEST_CASE("upstream/round_robin: backups only when no primary is usable") {
    CapturedLog log;  // keeps the failure warnings off the output
    SUBCASE("primaries fine: never a backup") {
        Group g({"", "", "backup"});
        CHECK(sequence(g, 6) == "ababab");
    }
    SUBCASE("every primary down") {
        Group g({"down", "down", "backup", "backup"});
        CHECK(sequence(g, 4) == "cdcd");
    }
    SUBCASE("one primary left: still no backup") {
        Group g({"down", "", "backup"});
        CHECK(sequence(g, 3) == "bbb");
    }
    SUBCASE("a request whose primaries all failed goes on to the backups") {
        Group g({"max_fails=0", "max_fails=0", "backup"});
        PeerPicker pk(g.u(), kT0);
        std::string tried;
        for (Peer* p = pk.next(); p; p = pk.next()) {
            tried += g.letter(p);
            pk.done(p, true, kT0);
        }
        CHECK(tried == "abc");
    }
    SUBCASE("primaries unavailable after failures, until fail_timeout") {
        Group g({"fail_timeout=10s", "backup"});
        CHECK(fail_once(g, kT0) == 'a');
        CHECK(sequence(g, 3, kT0 + 5000) == "bbb");
        // fail_timeout over: the primary is tried again, and a success
        // makes it the choice again.
        CHECK(sequence(g, 3, kT0 + 10001) == "aaa");
    }
    SUBCASE("primaries over max_conns") {
        Group g({"max_conns=1", "backup"});
        PeerPicker first(g.u(), kT0);
        Peer* a = first.next();
        CHECK(g.letter(a) == 'a');
        CHECK(sequence(g, 2) == "bb");
        first.done(a, false, kT0);
        CHECK(sequence(g, 2) == "aa");
    }
}

TEST_CASE("upstream/round_robin: backup=N tiers, in order, then back") {
    CapturedLog log;
    SUBCASE("\"backup\" is tier 1; the order of the lines does not matter") {
        Group g({"backup=2", "", "backup", "backup=2"});
        REQUIRE(g.u().tiers() == 3);
        // Peers are placed by tier: b, then c, then a and d.
        CHECK(g.u().tier(0) == std::pair<size_t, size_t>{0, 1});
        CHECK(g.u().tier(1) == std::pair<size_t, size_t>{1, 2});
        CHECK(g.u().tier(2) == std::pair<size_t, size_t>{2, 4});
        CHECK(g.u().backup_start == 1);
        CHECK(sequence(g, 3) == "bbb");
    }
    SUBCASE("a request falls through every tier, never back") {
        Group g({"max_fails=0", "backup=1 max_fails=0", "backup=2 max_fails=0", "backup=2 max_fails=0"});
        PeerPicker pk(g.u(), kT0);
        std::string tried;
        for (Peer* p = pk.next(); p; p = pk.next()) {
            tried += g.letter(p);
            pk.done(p, true, kT0);
        }
        CHECK(tried == "abcd");
    }
    SUBCASE("tier 1 down: tier 2 takes the requests, then tier 1 when it is back") {
        Group g({"fail_timeout=10s", "backup=1 fail_timeout=10s", "backup=2"});
        CHECK(fail_once(g, kT0) == 'a');
        CHECK(sequence(g, 2, kT0 + 1) == "bb");
        CHECK(fail_once(g, kT0 + 2) == 'b');
        CHECK(sequence(g, 2, kT0 + 3) == "cc");
        const std::string text = log.text();
        CHECK(text.find("upstream \"u\" switched from its primary servers to its backup=1 servers: "
                        "no server of a lower tier is usable") != std::string::npos);
        CHECK(text.find("upstream \"u\" switched from its backup=1 servers to its backup=2 servers") !=
              std::string::npos);
        // a's fail_timeout is over first: back to the primary tier at once.
        CHECK(sequence(g, 2, kT0 + 10001) == "aa");
        CHECK(log.text().find("upstream \"u\" switched back from its backup=2 servers to its primary servers") !=
              std::string::npos);
    }
    SUBCASE("a plain \"backup\" group logs its switch too") {
        Group g({"down", "backup"});
        CHECK(sequence(g, 2) == "bb");
        const std::string text = log.text();
        const auto at = text.find("switched from its primary servers to its backup=1 servers");
        CHECK(at != std::string::npos);
        CHECK(text.find("switched", at + 1) == std::string::npos);  // once, not per request
    }
}

TEST_CASE("upstream/round_robin: max_fails within fail_timeout") {
    CapturedLog log;
    // b never fails here (max_fails=0 keeps it out of the accounting), so
    // the sequences below only depend on a.
    Group g({"max_fails=2 fail_timeout=10s", "max_fails=0"});
    auto& a = g.u().peers[0];
    // One failure of two: still in the rotation.
    CHECK(fail_once(g, kT0) == 'a');
    CHECK(a.st().fails == 1);
    CHECK(sequence(g, 3, kT0 + 1) == "bab");
    CHECK(log.text().find("temporarily disabled") == std::string::npos);
    // The second failure within fail_timeout disables it.
    CHECK(fail_once(g, kT0 + 3) == 'a');
    CHECK(a.st().fails == 2);
    CHECK(log.text().find("[warn]") != std::string::npos);
    CHECK(log.text().find("upstream server temporarily disabled while connecting to upstream, "
                          "upstream: \"127.0.0.1:8001\"") != std::string::npos);
    // For fail_timeout, counted from the last failure.
    CHECK(sequence(g, 4, kT0 + 3 + 10000) == "bbbb");

    // fail_timeout passed: the first request that gets to a probes it
    // (the second one, as the current weights stand); meanwhile the others
    // keep off it.
    const event::Msec later = kT0 + 3 + 10001;
    CHECK(sequence(g, 1, later) == "b");
    PeerPicker probe(g.u(), later);
    Peer* p = probe.next();
    REQUIRE(g.letter(p) == 'a');
    CHECK(sequence(g, 3, later + 1) == "bbb");
    SUBCASE("the probe succeeds: available again, failures forgotten") {
        probe.done(p, false, later + 2);
        CHECK(a.st().fails == 0);
        CHECK(sequence(g, 4, later + 3).find('a') != std::string::npos);
    }
    SUBCASE("the probe fails: disabled for another fail_timeout") {
        probe.done(p, true, later + 2);
        CHECK(a.st().fails == 3);
        CHECK(sequence(g, 3, later + 2 + 10000) == "bbb");
        CHECK(sequence(g, 2, later + 2 + 10001).find('a') != std::string::npos);
    }
}

TEST_CASE("upstream/round_robin: a failure costs weight / max_fails, regained one per pick") {
    CapturedLog log;  // keeps the failure warnings off the output
    Group g({"weight=4 max_fails=2", "weight=4"});
    auto& a = g.u().peers[0];
    CHECK(fail_once(g, kT0) == 'a');
    CHECK(a.st().effective_weight == 2);
    PeerPicker pk(g.u(), kT0);
    pk.done(pk.next(), false, kT0);
    CHECK(a.st().effective_weight == 3);
    PeerPicker pk2(g.u(), kT0);
    pk2.done(pk2.next(), false, kT0);
    CHECK(a.st().effective_weight == 4);
    PeerPicker pk3(g.u(), kT0);
    pk3.done(pk3.next(), false, kT0);
    CHECK(a.st().effective_weight == 4);  // never above the weight
}

TEST_CASE("upstream/round_robin: max_fails=0 never disables") {
    CapturedLog log;  // keeps the failure warnings off the output
    Group g({"max_fails=0", ""});
    uint32_t a_picks = 0;
    for (int i = 0; i < 6; ++i) {
        PeerPicker pk(g.u(), kT0);
        Peer* p = pk.next();
        bool is_a = g.letter(p) == 'a';
        a_picks += is_a;
        pk.done(p, is_a, kT0);  // a fails every time
    }
    CHECK(a_picks == 3);
    CHECK(g.u().peers[0].st().fails == 3);
    CHECK(sequence(g, 4, kT0 + 1).find('a') != std::string::npos);
}

TEST_CASE("upstream/round_robin: max_conns counts connections in use") {
    Group g({"max_conns=2", ""});
    auto& a = g.u().peers[0];
    PeerPicker p1(g.u(), kT0), p2(g.u(), kT0), p3(g.u(), kT0), p4(g.u(), kT0);
    Peer* x1 = p1.next();  // a
    Peer* x2 = p2.next();  // b
    Peer* x3 = p3.next();  // a: its second connection
    CHECK(std::string{g.letter(x1), g.letter(x2), g.letter(x3)} == "aba");
    CHECK(a.st().conns == 2);
    Peer* x4 = p4.next();  // a is full
    CHECK(g.letter(x4) == 'b');
    p1.done(x1, false, kT0);
    CHECK(a.st().conns == 1);
    // Room again: a is back in the rotation (b's turn first, by weight).
    PeerPicker p5(g.u(), kT0), p6(g.u(), kT0);
    Peer* x5 = p5.next();
    Peer* x6 = p6.next();
    CHECK(std::string{g.letter(x5), g.letter(x6)} == "ba");
    CHECK(a.st().conns == 2);
    for (auto [pk, p] : {std::pair{&p2, x2}, {&p3, x3}, {&p4, x4}, {&p5, x5}, {&p6, x6}})
        pk->done(p, false, kT0);
    CHECK(a.st().conns == 0);
    CHECK(g.u().peers[1].st().conns == 0);

    SUBCASE("every peer full: none") {
        Group full({"max_conns=1"}, "");
        PeerPicker q1(full.u(), kT0), q2(full.u(), kT0);
        Peer* y = q1.next();
        REQUIRE(y != nullptr);
        CHECK(q2.next() == nullptr);
        q1.done(y, false, kT0);
    }
}

TEST_CASE("upstream/round_robin: a single server ignores max_fails") {
    CapturedLog log;
    Group g({"max_fails=1 fail_timeout=10s"});
    REQUIRE(g.u().single());
    CHECK(fail_once(g, kT0) == 'a');
    CHECK(fail_once(g, kT0 + 1) == 'a');
    CHECK(sequence(g, 2, kT0 + 2) == "aa");
    CHECK(log.text().find("temporarily disabled") == std::string::npos);
    // One try per request: nothing else to go to.
    PeerPicker pk(g.u(), kT0);
    Peer* p = pk.next();
    pk.done(p, true, kT0);
    CHECK(pk.next() == nullptr);

    SUBCASE("with a backup it is not single") {
        Group b({"max_fails=1", "backup"});
        CHECK_FALSE(b.u().single());
        CHECK(fail_once(b, kT0) == 'a');
        CHECK(sequence(b, 2, kT0 + 1) == "bb");
    }
    SUBCASE("down still applies") {
        Group d({"down"});
        PeerPicker q(d.u(), kT0);
        CHECK(q.next() == nullptr);
    }
}

TEST_CASE("upstream/round_robin: next(now) judges availability at the retry's time") {
    CapturedLog log;  // keeps the failure warnings off the output
    Group g({"fail_timeout=10s", "fail_timeout=10s"});
    CHECK(fail_once(g, kT0) == 'a');
    // A request that started long before a's failure expired still sees
    // it disabled when asked at kT0 + 5 s, and available at kT0 + 11 s.
    PeerPicker early(g.u(), kT0 + 5000);
    Peer* p = early.next();
    CHECK(g.letter(p) == 'b');
    early.done(p, true, kT0 + 5000);  // b now failed too
    CHECK(early.next(kT0 + 11000) == &g.u().peers[0]);
}

TEST_CASE("upstream/round_robin: the totals and status the metrics page shows") {
    using upstream::PeerStatus;
    CapturedLog log;
    Group g({"max_fails=2 fail_timeout=10s", "max_fails=0", "down"});
    auto& a = g.u().peers[0];
    upstream::PeerCounters totals;  // where the metrics module points it
    a.totals = &totals;
    CHECK(upstream::peer_status(g.u(), a, kT0) == PeerStatus::Up);
    CHECK(upstream::peer_status(g.u(), g.u().peers[2], kT0) == PeerStatus::Down);
    CHECK(fail_once(g, kT0) == 'a');
    CHECK(totals.fails == 1);
    CHECK(totals.unavailable == 0);
    CHECK(upstream::peer_status(g.u(), a, kT0) == PeerStatus::Up);
    CHECK(sequence(g, 1, kT0 + 1) == "b");
    CHECK(fail_once(g, kT0 + 2) == 'a');
    // The second failure made it unavailable: counted once, whatever
    // failures follow while it is.
    CHECK(totals.fails == 2);
    CHECK(totals.unavailable == 1);
    CHECK(upstream::peer_status(g.u(), a, kT0 + 3) == PeerStatus::Unavailable);
    CHECK(upstream::peer_status(g.u(), a, kT0 + 2 + 10001) == PeerStatus::Up);
    // The totals stay when a success resets the balancer's own count.
    bool probed = false;
    for (int i = 0; i < 4 && !probed; ++i) {
        PeerPicker pk(g.u(), kT0 + 2 + 10001);
        Peer* p = pk.next();
        probed = p == &a;
        pk.done(p, false, kT0 + 2 + 10002);
    }
    REQUIRE(probed);
    CHECK(a.st().fails == 0);
    CHECK(totals.fails == 2);
}

TEST_CASE("upstream/round_robin: a try's status class and time go to the histogram") {
    upstream::PeerCounters c;
    c.count_try(200, 3, 4, 100, 1000);       // bucket 0 (<= 5 ms)
    c.count_try(502, 5, -1, 100, 0);       // bucket 0, bounds are inclusive
    c.count_try(404, 6, 9, 50, 200);       // bucket 1
    c.count_try(0, 20000, 20000, 0, 0);     // no response: time only, the +Inf bucket
    CHECK(c.responses[1] == 1);
    CHECK(c.responses[3] == 1);
    CHECK(c.responses[4] == 1);
    CHECK(c.time_buckets[0] == 2);
    CHECK(c.time_buckets[1] == 1);
    CHECK(c.time_buckets[upstream::PeerCounters::kTimeBuckets - 1] == 1);
    CHECK(c.time_ms == 20014);
    // Whole tries (the head's time when the try has none), and bytes.
    CHECK(c.response_ms == 4 + 5 + 9 + 20000);
    CHECK(c.sent == 250);
    CHECK(c.received == 1200);
}
