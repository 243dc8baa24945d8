// Tests of least_time (src/upstream/least_time.cc): the peak-EWMA and how
// it moves requests away from a slow peer, with time injected.
#include <doctest/doctest.h>

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

TEST_CASE("upstream/least_time: the peak-EWMA jumps up and decays down") {
    using upstream::ewma_at;
    using upstream::ewma_update;
    // The first sample is the average.
    CHECK(ewma_update(0, 0, 5000, kT0) == 5000);
    // A higher one replaces it at once (the peak).
    CHECK(ewma_update(5000, kT0, 50000, kT0 + 1) == 50000);
    // A lower one blends in, by how long ago the last update was.
    CHECK(ewma_update(50000, kT0, 1000, kT0) == 50000);
    const int64_t tau = static_cast<int64_t>(upstream::kEwmaDecayMs);
    const int64_t one_tau = ewma_update(50000, kT0, 1000, kT0 + tau);
    CHECK(one_tau > 18000);  // 50000 e^-1 + 1000 (1 - e^-1) = 19026
    CHECK(one_tau < 20000);
    // Without samples it decays toward zero.
    CHECK(ewma_at(50000, kT0, kT0) == doctest::Approx(50000));
    CHECK(ewma_at(50000, kT0, kT0 + tau) == doctest::Approx(18394).epsilon(0.01));
    CHECK(ewma_at(50000, kT0, kT0 + tau + 1) == 0);  // too old: no sample
    CHECK(ewma_at(123, 0, kT0) == 0);  // no sample yet
}

TEST_CASE("upstream/least_time: a slow peer gets less traffic, and is tried again later") {
    Group g({"", ""}, "least_time last_byte;\n");
    // a answers in 1 ms, b in 50 ms; 4 requests in flight at a time.
    event::Msec now = kT0;
    std::vector<int> count(2, 0);
    struct Flight {
        std::unique_ptr<PeerPicker> pk;
        Peer* p;
        event::Msec ends;
    };
    std::vector<Flight> flights;
    for (int i = 0; i < 2000; ++i) {
        while (flights.size() >= 4) {
            // The earliest one ends.
            size_t e = 0;
            for (size_t k = 1; k < flights.size(); ++k)
                if (flights[k].ends < flights[e].ends) e = k;
            if (flights[e].ends > now) now = flights[e].ends;
            flights[e].pk->done(flights[e].p, false, now);
            flights.erase(flights.begin() + static_cast<long>(e));
        }
        auto pk = std::make_unique<PeerPicker>(g.u(), now);
        Peer* p = pk->next();
        REQUIRE(p);
        const bool slow = g.letter(p) == 'b';
        ++count[slow];
        flights.push_back({std::move(pk), p, now + (slow ? 50 : 1)});
    }
    MESSAGE("fast " << count[0] << ", slow " << count[1]);
    CHECK(count[1] * 10 < count[0]);
    for (auto& f : flights) f.pk->done(f.p, false, now);
    // Idle a while: b's average decays and it is offered a request again.
    PeerPicker later(g.u(), now + 60000);
    bool b_again = false;
    for (int i = 0; i < 4 && !b_again; ++i) {
        PeerPicker pk(g.u(), now + 60000 + static_cast<event::Msec>(i));
        Peer* p = pk.next();
        b_again = g.letter(p) == 'b';
        pk.done(p, false, now + 60000 + static_cast<event::Msec>(i));
    }
    CHECK(b_again);
}

TEST_CASE("upstream/least_time: header takes the time to the response head when told") {
    Group g({"", ""}, "least_time header;\n");
    CHECK(g.u().least_time_header);
    PeerPicker pk(g.u(), kT0);
    Peer* p = pk.next();
    pk.header_received(p, kT0 + 20);
    pk.done(p, false, kT0 + 500);  // the body took long: not counted
    CHECK(p->st().ewma_us.load() == 20000);
}

TEST_CASE("upstream/least_time: ties go weighted round robin") {
    Group g({"", ""}, "least_time header;\n");
    // Instant answers: every cost is the floor, a tie.
    CHECK(test::spread(g, 4) == std::vector<int>{2, 2});
    Group w({"weight=2", ""}, "least_time header;\n");
    CHECK(test::spread(w, 6) == std::vector<int>{4, 2});
}

// A pool across two regions, seen from the first: a answers in 5 ms,
// then its latency grows steadily to 200 ms while b (the far region)
// stays at 90 ms. One request at a time, time moving with the answers.
// a's share must fall gradually, as its latency crosses b's, and never
// bounce back up while a only gets slower.
TEST_CASE("upstream/least_time: a region that slows down is drained gradually, not flapped") {
    upstream::seed_random(7);
    Group g({"", ""}, "least_time last_byte;\n");
    event::Msec now = kT0;
    constexpr int kRequests = 6000, kWindow = 500;
    std::vector<double> share;
    int in_window = 0, to_a = 0;
    for (int i = 0; i < kRequests; ++i) {
        const double a_ms = 5.0 + 195.0 * i / kRequests;
        PeerPicker pk(g.u(), now);
        Peer* p = pk.next();
        REQUIRE(p);
        const bool is_a = g.letter(p) == 'a';
        to_a += is_a;
        now += static_cast<event::Msec>(is_a ? a_ms : 90.0);
        pk.done(p, false, now);
        if (++in_window == kWindow) {
            share.push_back(static_cast<double>(to_a) / kWindow);
            in_window = to_a = 0;
        }
    }
    std::string shown;
    for (double s : share) shown += std::to_string(static_cast<int>(s * 100)) + "% ";
    MESSAGE("a's share per " << kWindow << " requests as it slows from 5 to 200 ms (b: 90 ms): " << shown);
    CHECK(share.front() > 0.9);
    CHECK(share.back() < 0.15);
    int between = 0;
    for (double s : share) between += s > 0.2 && s < 0.8;
    CHECK(between >= 2);  // a middle ground, not a switch
    for (size_t k = 1; k < share.size(); ++k) {
        CAPTURE(k);
        CHECK(share[k] <= share[k - 1] + 0.08);  // no rebound beyond the noise
    }
}
