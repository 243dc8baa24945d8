// Tests of src/http/limiter.h (the leaky bucket with injected time) and
// src/http/limit_table.h (the shared per-key table), and a benchmark of
// one limit_req decision: hash, zone lock, lookup, arithmetic, commit.
// The benchmark prints its figure; it is measured, never asserted.
#include "http/limiter.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/shm.h"
#include "core/shm_slab.h"
#include "forked.h"
#include "http/limit_table.h"

namespace lim = gatehouse::http::limiter;
using gatehouse::http::LimitTable;
using gatehouse::shm::ZoneRegistry;
using gatehouse::shm::ZoneSet;

namespace {

const int kTag = 0;

// What limit_req does for one request on one limit (the last one: it
// commits at once): true when accepted; *delay is its wait.
bool decide(lim::Bucket& b, bool fresh, uint64_t now, int64_t rate, int64_t burst, int64_t delay_thr,
            uint64_t* delay = nullptr) {
    if (fresh) {
        b = {0, now};
        if (delay) *delay = 0;
        return true;
    }
    int64_t e = lim::excess_after(b, now, rate);
    if (lim::over_burst(e, burst)) return false;
    lim::commit(b, e, now);
    if (delay) *delay = lim::delay_ms(e, delay_thr, rate);
    return true;
}

}  // namespace

TEST_CASE("http/limiter: rate=2r/s burst=1 nodelay: two pass, the third is refused") {
    lim::Bucket b;
    const uint64_t t = 1'000'000;
    CHECK(decide(b, true, t, 2000, 1000, lim::kNoDelay));
    CHECK(decide(b, false, t, 2000, 1000, lim::kNoDelay));
    CHECK(b.excess == 1000);
    CHECK_FALSE(decide(b, false, t, 2000, 1000, lim::kNoDelay));
    CHECK(b.excess == 1000);  // a refusal changes nothing
    // 500 ms leaks one request at 2r/s.
    CHECK(decide(b, false, t + 500, 2000, 1000, lim::kNoDelay));
    CHECK(b.excess == 1000);
    CHECK(b.last == t + 500);
}

TEST_CASE("http/limiter: without burst only the rate passes") {
    lim::Bucket b;
    CHECK(decide(b, true, 0, 1000, 0, 0));
    CHECK_FALSE(decide(b, false, 999, 1000, 0, 0));
    CHECK(decide(b, false, 1000, 1000, 0, 0));
}

TEST_CASE("http/limiter: the excess never goes below zero") {
    lim::Bucket b{0, 100};
    CHECK(lim::excess_after(b, 200, 1'000'000) == 0);  // 1000r/s for 100 ms: 100 requests leaked
    lim::Bucket c{3000, 0};
    CHECK(lim::excess_after(c, 1000, 1000) == 3000);  // one leaked, one added
    CHECK(lim::excess_after(c, 0, 1000) == 4000);
}

TEST_CASE("http/limiter: rates per minute keep their fraction") {
    // 30r/m is 500 thousandths per second: one request per 2 s.
    lim::Bucket b{1000, 0};
    CHECK(lim::excess_after(b, 1000, 500) == 1500);
    CHECK(lim::excess_after(b, 2000, 500) == 1000);
}

TEST_CASE("http/limiter: delays are the excess above the threshold, leaked at the rate") {
    CHECK(lim::delay_ms(1000, 0, 2000) == 500);
    CHECK(lim::delay_ms(2000, 1000, 500) == 2000);
    CHECK(lim::delay_ms(1000, 1000, 500) == 0);
    CHECK(lim::delay_ms(5000, lim::kNoDelay, 1) == 0);
}

TEST_CASE("http/limiter: clocks a little behind count no time, far behind 1 ms") {
    CHECK(lim::elapsed(1000, 1500) == 0);
    CHECK(lim::elapsed(1000, 1000 + 60001) == 1);
    CHECK(lim::elapsed(5000, 1000) == 4000);
    // Within the same ms, `last` stays: the leak's fraction is not lost.
    lim::Bucket b{1000, 10};
    lim::commit(b, 2000, 10);
    CHECK(b.last == 10);
}

TEST_CASE("http/limiter: months idle at the highest rate do not wrap") {
    lim::Bucket b{lim::kMaxBurst, 0};
    const uint64_t months = uint64_t(1) << 42;
    CHECK(lim::excess_after(b, months, lim::kMaxRate) == 0);
    CHECK(lim::expired(b, months, lim::kMaxRate));
}

TEST_CASE("http/limiter: a record expires after a minute once leaked") {
    lim::Bucket b{1000, 0};
    CHECK_FALSE(lim::expired(b, 59'999, 1'000'000));
    CHECK(lim::expired(b, 60'000, 1000));
    lim::Bucket big{100'000'000, 0};
    CHECK_FALSE(lim::expired(big, 60'000, 1000));
}

TEST_CASE("http/limit_table: records are found, aged and erased; the key is kept") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("one", 64 * 1024, &kTag);
    REQUIRE(ref);
    auto t = LimitTable::open(*ref, "limit_req", "$binary_remote_addr");
    REQUIRE(t);
    {
        LimitTable::Lock lock(*t);
        CHECK(t->oldest() == nullptr);
        auto* a = t->insert(LimitTable::hash_key("a"), "a");
        auto* b = t->insert(LimitTable::hash_key("b"), "b");
        REQUIRE(a);
        REQUIRE(b);
        CHECK(t->size() == 2);
        CHECK(t->find(LimitTable::hash_key("a"), "a") == a);
        CHECK(t->find(LimitTable::hash_key("c"), "c") == nullptr);
        CHECK(t->oldest() == a);
        t->touch(a);
        CHECK(t->oldest() == b);
        t->erase(b);
        CHECK(t->oldest() == a);
        CHECK(t->find(LimitTable::hash_key("b"), "b") == nullptr);
        a->excess = 7000;
    }
    // A second generation keeping the zone finds the records...
    ZoneSet gen2(reg);
    auto ref2 = gen2.add("one", 64 * 1024, &kTag);
    REQUIRE(ref2);
    CHECK(ref2->reused);
    auto t2 = LimitTable::open(*ref2, "limit_req", "$binary_remote_addr");
    REQUIRE(t2);
    {
        LimitTable::Lock lock(*t2);
        auto* a = t2->find(LimitTable::hash_key("a"), "a");
        REQUIRE(a);
        CHECK(a->excess == 7000);
    }
    // ...unless its key changed.
    auto t3 = LimitTable::open(*ref2, "limit_req", "$remote_addr");
    REQUIRE_FALSE(t3);
    CHECK(t3.error().message ==
          "limit_req \"one\" uses the \"$remote_addr\" key while previously it used the \"$binary_remote_addr\" key");
}

TEST_CASE("http/limit_table: a full zone says so; freeing makes room") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("small", LimitTable::kMinZone, &kTag);
    REQUIRE(ref);
    auto t = LimitTable::open(*ref, "limit_conn_zone", "$uri");
    REQUIRE(t);
    LimitTable::Lock lock(*t);
    std::vector<std::string> keys;
    for (int i = 0;; ++i) {
        std::string k = "key-" + std::to_string(i);
        if (!t->insert(LimitTable::hash_key(k), k)) break;
        keys.push_back(k);
        REQUIRE(i < 100000);
    }
    CHECK(keys.size() > 200);  // 32 KiB of 64-byte records, less the buckets
    t->erase(t->oldest());
    CHECK(t->insert(LimitTable::hash_key("new"), "new") != nullptr);
    CHECK(t->find(LimitTable::hash_key(keys[1]), keys[1]) != nullptr);
    CHECK(t->find(LimitTable::hash_key(keys[0]), keys[0]) == nullptr);
}

TEST_CASE("http/limit_table: a process killed holding the lock leaves an empty, usable table") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("crash", 64 * 1024, &kTag);
    REQUIRE(ref);
    auto t = LimitTable::open(*ref, "limit_req", "$binary_remote_addr");
    REQUIRE(t);
    {
        LimitTable::Lock lock(*t);
        REQUIRE(t->insert(LimitTable::hash_key("a"), "a"));
    }
    // A worker dies inside its critical section, the table maybe half
    // updated: the next holder starts it afresh.
    auto* pool = static_cast<gatehouse::shm::Pool*>(ref->zone->addr());
    gatehouse::test::killed_after([&] { (void)pool->mutex().lock(); });
    LimitTable::Lock lock(*t);
    CHECK(t->size() == 0);
    CHECK(t->find(LimitTable::hash_key("a"), "a") == nullptr);
    CHECK(t->insert(LimitTable::hash_key("b"), "b") != nullptr);
}

TEST_CASE("http/limit_table: too small a zone is refused") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("tiny", 4096, &kTag);
    REQUIRE(ref);
    auto t = LimitTable::open(*ref, "limit_req", "$uri");
    REQUIRE_FALSE(t);
    CHECK(t.error().message == "zone \"tiny\" is too small");
}

// The goal: under 1 us per request, zone lookup and lock included.
TEST_CASE("http/limit_req: benchmark of one decision (printed, not asserted)") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("bench", 10 * 1024 * 1024, &kTag);
    REQUIRE(ref);
    auto t = LimitTable::open(*ref, "limit_req", "$binary_remote_addr");
    REQUIRE(t);
    // 10000 clients' 4-byte addresses, as $binary_remote_addr.
    std::vector<std::string> keys;
    for (uint32_t i = 0; i < 10000; ++i) keys.emplace_back(reinterpret_cast<const char*>(&i), 4);
    const int64_t rate = 10'000, burst = 20'000;
    const int kRounds = 1'000'000;
    int accepted = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) {
        const std::string& k = keys[static_cast<size_t>(i) % keys.size()];
        const uint64_t now = 1'000'000 + static_cast<uint64_t>(i / 1000);
        const uint64_t h = LimitTable::hash_key(k);
        LimitTable::Lock lock(*t);
        LimitTable::Node* n = t->find(h, k);
        if (!n) {
            n = t->insert(h, k);
            REQUIRE(n);
            n->excess = 0;
            n->last = now;
            ++accepted;
            continue;
        }
        t->touch(n);
        lim::Bucket b{n->excess, n->last};
        const int64_t e = lim::excess_after(b, now, rate);
        if (lim::over_burst(e, burst)) continue;
        lim::commit(b, e, now);
        n->excess = b.excess;
        n->last = b.last;
        ++accepted;
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
    CHECK(accepted > 0);
    std::printf("limit_req decision: %.1f ns (hash, lock, lookup, leaky bucket, commit; %d keys, %d rounds)\n",
                static_cast<double>(ns.count()) / kRounds, static_cast<int>(keys.size()), kRounds);
}
