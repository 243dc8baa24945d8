#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "event/timer.h"

using namespace gatehouse::event;

namespace {

// A timer that records its id in a shared log when it fires, and can run
// one extra action from inside its callback.
struct Probe {
    Probe(std::vector<int>& log, int id) : log(log), id(id) {
        t.cb = Callback::to<&Probe::fire>(this);
    }
    void fire() {
        log.push_back(id);
        if (then) then(this);
    }
    std::vector<int>& log;
    int id;
    void (*then)(Probe*) = nullptr;
    TimerQueue* q = nullptr;   // for `then`
    Probe* other = nullptr;    // for `then`
    Timer t;
};

}  // namespace

TEST_CASE("event/timer: expired timers run in deadline order") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2), c(log, 3);
    q.arm_at(c.t, 300);
    q.arm_at(a.t, 100);
    q.arm_at(b.t, 200);
    CHECK(q.size() == 3);
    CHECK(q.next_deadline() == 100);

    CHECK(q.run_expired(99) == 0);
    CHECK(log.empty());
    CHECK(q.run_expired(200) == 2);
    CHECK(log == std::vector<int>{1, 2});
    CHECK_FALSE(a.t.armed());
    CHECK(c.t.armed());
    CHECK(q.next_deadline() == 300);
    CHECK(q.run_expired(1000) == 1);
    CHECK(log == std::vector<int>{1, 2, 3});
    CHECK(q.empty());
    CHECK_FALSE(q.next_deadline());
}

TEST_CASE("event/timer: equal deadlines run in the order armed") {
    TimerQueue q;
    std::vector<int> log;
    std::vector<std::unique_ptr<Probe>> ps;
    for (int i = 0; i < 8; ++i) ps.push_back(std::make_unique<Probe>(log, i));
    for (auto& p : ps) q.arm_at(p->t, 500);
    q.run_expired(500);
    CHECK(log == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("event/timer: cancel removes, from any place in the heap") {
    TimerQueue q;
    std::vector<int> log;
    std::vector<std::unique_ptr<Probe>> ps;
    for (int i = 0; i < 10; ++i) {
        ps.push_back(std::make_unique<Probe>(log, i));
        q.arm_at(ps.back()->t, static_cast<Msec>(100 + 10 * i));
    }
    q.cancel(ps[0]->t);  // the top
    q.cancel(ps[5]->t);  // the middle
    q.cancel(ps[9]->t);  // the last
    q.cancel(ps[9]->t);  // not armed: no-op
    CHECK(q.size() == 7);
    CHECK_FALSE(ps[5]->t.armed());
    q.run_expired(10000);
    CHECK(log == std::vector<int>{1, 2, 3, 4, 6, 7, 8});
}

TEST_CASE("event/timer: re-arming moves a timer, earlier or later") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2), c(log, 3);
    q.arm_at(a.t, 100);
    q.arm_at(b.t, 200);
    q.arm_at(c.t, 300);
    q.arm_at(a.t, 400);  // later
    q.arm_at(c.t, 50);   // earlier
    CHECK(q.size() == 3);
    CHECK(a.t.deadline() == 400);
    CHECK(q.next_deadline() == 50);
    q.run_expired(1000);
    CHECK(log == std::vector<int>{3, 2, 1});
}

TEST_CASE("event/timer: a re-armed timer counts as armed last among equals") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2);
    q.arm_at(a.t, 100);
    q.arm_at(b.t, 100);
    q.arm_at(a.t, 100);
    q.run_expired(100);
    CHECK(log == std::vector<int>{2, 1});
}

TEST_CASE("event/timer: a callback arming another timer runs it on the next pass") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2), c(log, 3);
    a.q = &q;
    a.other = &b;
    a.then = [](Probe* p) { p->q->arm_at(p->other->t, 100); };  // already due
    q.arm_at(a.t, 100);
    q.arm_at(c.t, 100);
    CHECK(q.run_expired(100) == 2);
    CHECK(log == std::vector<int>{1, 3});
    CHECK(b.t.armed());
    CHECK(q.run_expired(100) == 1);
    CHECK(log == std::vector<int>{1, 3, 2});
}

TEST_CASE("event/timer: a callback may re-arm itself without spinning") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1);
    a.q = &q;
    a.then = [](Probe* p) { p->q->arm_at(p->t, p->t.deadline()); };
    q.arm_at(a.t, 10);
    CHECK(q.run_expired(10) == 1);
    CHECK(a.t.armed());
    CHECK(q.run_expired(10) == 1);
    CHECK(log == std::vector<int>{1, 1});
}

TEST_CASE("event/timer: a callback cancelling a due timer stops it running") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2);
    a.q = &q;
    a.other = &b;
    a.then = [](Probe* p) { p->q->cancel(p->other->t); };
    q.arm_at(a.t, 100);
    q.arm_at(b.t, 150);
    CHECK(q.run_expired(200) == 1);
    CHECK(log == std::vector<int>{1});
    CHECK(q.empty());
}

TEST_CASE("event/timer: destroying an armed timer cancels it") {
    TimerQueue q;
    std::vector<int> log;
    Probe keep(log, 1);
    q.arm_at(keep.t, 300);
    {
        Probe gone(log, 2);
        q.arm_at(gone.t, 100);
        CHECK(q.size() == 2);
    }
    CHECK(q.size() == 1);
    CHECK(q.next_deadline() == 300);
    q.run_expired(1000);
    CHECK(log == std::vector<int>{1});
}

TEST_CASE("event/timer: a destroyed queue leaves its timers disarmed") {
    std::vector<int> log;
    Probe a(log, 1);
    {
        TimerQueue q;
        q.arm_at(a.t, 100);
        CHECK(a.t.armed());
    }
    CHECK_FALSE(a.t.armed());
}

TEST_CASE("event/timer: a cancelled or postponed entry neither fires nor sets the wait") {
    // Cancel and re-arm-later leave the heap entry where it was; what the
    // queue reports must not show it.
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2), c(log, 3);
    q.arm_at(a.t, 100);
    q.arm_at(b.t, 200);
    q.arm_at(c.t, 300);
    q.cancel(a.t);
    q.arm_at(b.t, 400);  // later: the entry stays at 200 until settled
    CHECK(q.size() == 2);
    CHECK(q.wake_by() == 200);  // a's entry is dropped, b's is not moved yet
    CHECK(q.run_expired(200) == 0);  // the early wake moves b's entry
    CHECK(q.wake_by() == 300);
    CHECK(q.next_deadline() == 300);
    CHECK(q.run_expired(399) == 1);
    CHECK(log == std::vector<int>{3});
    CHECK(b.t.armed());
    CHECK(q.run_expired(400) == 1);
    CHECK(log == std::vector<int>{3, 2});
    CHECK(q.empty());
    CHECK_FALSE(q.next_deadline());
}

TEST_CASE("event/timer: cancel, then arm again, fires once at the new deadline") {
    TimerQueue q;
    std::vector<int> log;
    Probe a(log, 1), b(log, 2);
    q.arm_at(a.t, 100);
    q.arm_at(b.t, 150);
    for (Msec d = 200; d < 2000; d += 100) {  // the keep-alive pattern
        q.cancel(a.t);
        CHECK_FALSE(a.t.armed());
        q.arm_at(a.t, d);
    }
    q.arm_at(a.t, 120);  // earlier than its entry's key: moves up at once
    CHECK(q.next_deadline() == 120);
    CHECK(q.run_expired(10000) == 2);
    CHECK(log == std::vector<int>{1, 2});
}

TEST_CASE("event/timer: destroying a cancelled timer drops its lingering entry") {
    TimerQueue q;
    std::vector<int> log;
    Probe keep(log, 1);
    q.arm_at(keep.t, 300);
    {
        auto gone = std::make_unique<Probe>(log, 2);
        q.arm_at(gone->t, 100);
        q.cancel(gone->t);
        CHECK(q.size() == 1);
    }  // under ASan a dangling entry shows here
    CHECK(q.next_deadline() == 300);
    CHECK(q.run_expired(1000) == 1);
    CHECK(log == std::vector<int>{1});
}

TEST_CASE("event/timer: a timer cancelled on one queue may be armed on another") {
    std::vector<int> log;
    Probe a(log, 1);
    TimerQueue q1, q2;
    q1.arm_at(a.t, 100);
    q1.cancel(a.t);
    q2.arm_at(a.t, 50);
    CHECK(q1.empty());
    CHECK_FALSE(q1.next_deadline());
    CHECK(q2.run_expired(50) == 1);
    CHECK(log == std::vector<int>{1});
}

TEST_CASE("event/timer: random arm, re-arm and cancel match a sorted model") {
    // The model: (deadline, arm order) -> id, exactly the heap's order.
    TimerQueue q;
    std::vector<int> log;
    std::vector<std::unique_ptr<Probe>> ps;
    constexpr int kTimers = 300;
    for (int i = 0; i < kTimers; ++i) ps.push_back(std::make_unique<Probe>(log, i));
    std::map<std::pair<Msec, uint64_t>, int> model;
    std::vector<std::pair<Msec, uint64_t>> key(kTimers);
    std::vector<bool> armed(kTimers, false);
    uint64_t seq = 0;
    Msec now = 0;
    std::mt19937 rng(12345);

    for (int round = 0; round < 200; ++round) {
        for (int op = 0; op < 20; ++op) {
            int i = static_cast<int>(rng() % kTimers);
            if (rng() % 16 == 0) {
                // Destroyed, armed or not: its entry must leave the heap.
                ps[i] = std::make_unique<Probe>(log, i);
                if (armed[i]) model.erase(key[i]);
                armed[i] = false;
            } else if (rng() % 4 == 0) {
                q.cancel(ps[i]->t);
                if (armed[i]) model.erase(key[i]);
                armed[i] = false;
            } else {
                Msec d = now + rng() % 500;
                q.arm_at(ps[i]->t, d);
                if (armed[i]) model.erase(key[i]);
                key[i] = {d, seq++};
                model[key[i]] = i;
                armed[i] = true;
            }
        }
        REQUIRE(q.size() == model.size());
        if (!model.empty()) REQUIRE(q.next_deadline() == model.begin()->first.first);
        now += rng() % 100;
        std::vector<int> want;
        while (!model.empty() && model.begin()->first.first <= now) {
            int i = model.begin()->second;
            want.push_back(i);
            armed[i] = false;
            model.erase(model.begin());
        }
        log.clear();
        q.run_expired(now);
        REQUIRE(log == want);
    }
}
