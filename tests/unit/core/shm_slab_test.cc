// Tests of src/core/shm_slab.h: every size class and large runs, what a
// full pool does, reuse of freed blocks, a randomized workload checked
// against a shadow model, attach() across reloads and layout changes,
// and the pool shared with a forked process.
#include "core/shm_slab.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "core/shm.h"
#include "forked.h"

using gatehouse::shm::Guard;
using gatehouse::shm::Pool;

namespace {

const int kTag = 0;

// A page-aligned, zeroed region, as a fresh zone is (private: these tests
// do not fork).
struct Region {
    explicit Region(size_t n) : size(n) {
        addr = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(addr != MAP_FAILED);
    }
    ~Region() { ::munmap(addr, size); }
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    void* addr;
    size_t size;
};

uintptr_t offset_in(const Pool* p, const void* b) {
    return reinterpret_cast<uintptr_t>(b) - reinterpret_cast<uintptr_t>(p);
}

}  // namespace

TEST_CASE("core/shm_slab: every size class, aligned to its size") {
    Region r(64 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    REQUIRE(p != nullptr);
    Guard g(p->mutex());
    CHECK_FALSE(g.owner_died());
    struct Row {
        size_t ask;
        size_t cls;  // index in Stats::small
    };
    const Row rows[] = {{0, 0}, {1, 0},  {16, 0},  {17, 1},  {32, 1},  {33, 2},
                        {64, 2}, {65, 3}, {128, 3}, {129, 4}, {255, 4}, {256, 4}};
    for (const Row& row : rows) {
        CAPTURE(row.ask);
        const size_t size = Pool::kMinBlock << row.cls;
        const auto before = p->stats().small[row.cls];
        void* b = p->alloc(row.ask);
        REQUIRE(b != nullptr);
        CHECK(offset_in(p, b) % size == 0);
        CHECK(reinterpret_cast<uintptr_t>(b) % size == 0);
        std::memset(b, 0x5a, size);  // the whole block is usable
        const auto after = p->stats().small[row.cls];
        CHECK(after.size == size);
        CHECK(after.used == before.used + 1);
        CHECK(after.allocs == before.allocs + 1);
        CHECK(after.slots == after.pages * (Pool::kPageSize / size));
        CHECK(after.pages == (after.used + Pool::kPageSize / size - 1) / (Pool::kPageSize / size));
    }
    auto s = p->stats();
    size_t pages = 0;
    for (const auto& c : s.small) pages += c.pages;
    CHECK(pages == Pool::kClasses + 1);  // three 256-byte blocks take two pages
    CHECK(s.pages == s.free_pages + pages);
    CHECK(s.large.used == 0);
    CHECK(s.fails == 0);
}

TEST_CASE("core/shm_slab: blocks of a class fill a page, then take another") {
    Region r(64 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    Guard g(p->mutex());
    const size_t per_page = Pool::kPageSize / 64;
    std::vector<char*> blocks;
    for (size_t i = 0; i < per_page + 1; ++i) blocks.push_back(static_cast<char*>(p->alloc(50)));
    CHECK(p->stats().small[2].pages == 2);
    // The first page's blocks are contiguous, none shared.
    for (size_t i = 1; i < per_page; ++i) CHECK(blocks[i] == blocks[0] + i * 64);
    // Emptied, a page goes back to the free runs.
    p->free(blocks.back());
    CHECK(p->stats().small[2].pages == 1);
    CHECK(p->stats().small[2].used == per_page);
}

TEST_CASE("core/shm_slab: large blocks are runs of pages") {
    Region r(64 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    Guard g(p->mutex());
    const size_t free0 = p->stats().free_pages;
    struct Row {
        size_t ask;
        size_t pages;
    };
    const Row rows[] = {{Pool::kMaxSmall + 1, 1}, {Pool::kPageSize, 1}, {Pool::kPageSize + 1, 2},
                        {10 * Pool::kPageSize, 10}};
    size_t taken = 0;
    for (const Row& row : rows) {
        CAPTURE(row.ask);
        CHECK(Pool::pages_for(row.ask) == row.pages);
        void* b = p->alloc(row.ask);
        REQUIRE(b != nullptr);
        CHECK(offset_in(p, b) % Pool::kPageSize == 0);
        std::memset(b, 0xa5, row.ask);
        taken += row.pages;
        CHECK(p->stats().free_pages == free0 - taken);
        CHECK(p->stats().large.pages == taken);
    }
    CHECK(p->stats().large.used == 4);
    CHECK(p->stats().large.allocs == 4);
}

TEST_CASE("core/shm_slab: a full pool returns null and counts it") {
    Region r(Pool::region_for(8));
    Pool* p = Pool::create(r.addr, r.size);
    REQUIRE(p != nullptr);
    Guard g(p->mutex());
    CHECK(p->stats().pages == 8);
    CHECK(p->alloc(9 * Pool::kPageSize) == nullptr);  // more than the pool
    CHECK(p->stats().large.fails == 1);
    std::vector<void*> runs;
    for (int i = 0; i < 4; ++i) runs.push_back(p->alloc(2 * Pool::kPageSize));
    for (void* b : runs) CHECK(b != nullptr);
    CHECK(p->stats().free_pages == 0);
    CHECK(p->alloc(1) == nullptr);
    CHECK(p->alloc(Pool::kPageSize) == nullptr);
    auto s = p->stats();
    CHECK(s.small[0].fails == 1);
    CHECK(s.large.fails == 2);
    CHECK(s.fails == 3);
    // Room again once something is freed: callers evict, then retry.
    p->free(runs[1]);
    void* a = p->alloc(1);
    void* b = p->alloc(Pool::kPageSize);
    CHECK(a != nullptr);
    CHECK(b != nullptr);
    CHECK(p->alloc(Pool::kPageSize) == nullptr);
}

TEST_CASE("core/shm_slab: a freed block is handed out again") {
    Region r(64 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    Guard g(p->mutex());
    for (size_t n : {size_t{24}, size_t{200}, size_t{3000}}) {
        CAPTURE(n);
        void* keep = p->alloc(n);
        void* b = p->alloc(n);
        p->free(b);
        CHECK(p->alloc(n) == b);
        CHECK(keep != b);
    }
    p->free(nullptr);  // ignored
}

TEST_CASE("core/shm_slab: free runs merge with their neighbours") {
    Region r(Pool::region_for(16));
    Pool* p = Pool::create(r.addr, r.size);
    Guard g(p->mutex());
    std::vector<void*> b;
    for (int i = 0; i < 8; ++i) b.push_back(p->alloc(2 * Pool::kPageSize));
    CHECK(p->alloc(1) == nullptr);
    // Freed in an order that merges after, before, and both.
    for (int i : {2, 0, 1, 5, 7, 6, 4, 3}) p->free(b[i]);
    CHECK(p->stats().free_pages == 16);
    CHECK(p->alloc(16 * Pool::kPageSize) != nullptr);  // one run again
}

TEST_CASE("core/shm_slab: a randomized workload never overlaps blocks nor loses bytes") {
    Region r(256 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    Guard g(p->mutex());
    struct Live {
        size_t size;
        uint8_t fill;
    };
    std::map<char*, Live> live;  // the shadow model, by address
    std::mt19937 rng(20240611);
    std::uniform_int_distribution<int> op(0, 99);
    std::uniform_int_distribution<size_t> small(1, Pool::kMaxSmall);
    std::uniform_int_distribution<size_t> large(Pool::kMaxSmall + 1, 6 * Pool::kPageSize);
    size_t allocated = 0, refused = 0;
    auto intact = [](char* b, const Live& l) {
        for (size_t i = 0; i < l.size; ++i)
            if (static_cast<uint8_t>(b[i]) != l.fill) return false;
        return true;
    };
    for (int step = 0; step < 20000; ++step) {
        const int o = op(rng);
        if (o < 55 || live.empty()) {
            const size_t n = o % 5 == 0 ? large(rng) : small(rng);
            auto* b = static_cast<char*>(p->alloc(n));
            if (!b) {
                ++refused;
                continue;
            }
            ++allocated;
            REQUIRE(b >= reinterpret_cast<char*>(p));
            REQUIRE(b + n <= reinterpret_cast<char*>(p) + r.size);
            // No overlap with the neighbours in address order.
            auto next = live.lower_bound(b);
            if (next != live.end()) REQUIRE(b + n <= next->first);
            if (next != live.begin()) {
                auto prev = std::prev(next);
                REQUIRE(prev->first + prev->second.size <= b);
            }
            const auto fill = static_cast<uint8_t>(step);
            std::memset(b, fill, n);
            live[b] = {n, fill};
        } else {
            auto it = live.begin();
            std::advance(it, std::uniform_int_distribution<size_t>(0, live.size() - 1)(rng));
            REQUIRE(intact(it->first, it->second));
            p->free(it->first);
            live.erase(it);
        }
        if (step % 1000 == 0) {
            auto s = p->stats();
            size_t used = s.large.used;
            for (const auto& c : s.small) used += c.used;
            REQUIRE(used == live.size());
        }
    }
    CHECK(allocated > 5000);
    CHECK(refused > 0);  // the workload reached a full pool
    CHECK(p->stats().fails == refused);
    for (auto& [b, l] : live) {
        REQUIRE(intact(b, l));
        p->free(b);
    }
    auto s = p->stats();
    CHECK(s.free_pages == s.pages);
    CHECK(p->alloc(s.pages * Pool::kPageSize) != nullptr);  // nothing leaked, all merged
}

TEST_CASE("core/shm_slab: attach keeps the blocks and the root; a changed layout starts empty") {
    Region r(64 * 1024);
    Pool* p = Pool::attach(r.addr, r.size);  // zeroed: laid out
    REQUIRE(p != nullptr);
    char* block = nullptr;
    size_t pages = 0;
    {
        Guard g(p->mutex());
        pages = p->stats().pages;
        CHECK(p->root() == nullptr);
        block = static_cast<char*>(p->alloc(100));
        std::memcpy(block, "kept", 5);
        p->set_root(block);
    }
    // A reload with the same zone: kept.
    Pool* again = Pool::attach(r.addr, r.size);
    CHECK(again == p);
    {
        Guard g(again->mutex());
        CHECK(again->root() == block);
        CHECK(std::strcmp(static_cast<char*>(again->root()), "kept") == 0);
        CHECK(again->stats().small[3].used == 1);
        CHECK(again->ref(block) == p->ref(block));
        CHECK(again->at<char>(again->ref(block)) == block);
    }
    // Another version of the layout (its magic): empty.
    uint64_t other = Pool::kMagic + 1;
    std::memcpy(r.addr, &other, sizeof other);
    Pool* fresh = Pool::attach(r.addr, r.size);
    REQUIRE(fresh != nullptr);
    {
        Guard g(fresh->mutex());
        CHECK(fresh->root() == nullptr);
        CHECK(fresh->stats().small[3].used == 0);
        CHECK(fresh->stats().small[3].allocs == 0);
        fresh->set_root(fresh->alloc(100));
    }
    // Another size: empty too.
    Pool* smaller = Pool::attach(r.addr, r.size / 2);
    REQUIRE(smaller != nullptr);
    Guard g(smaller->mutex());
    CHECK(smaller->root() == nullptr);
    CHECK(smaller->stats().pages < pages);
}

TEST_CASE("core/shm_slab: reset drops every block and the root") {
    Region r(64 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    Guard g(p->mutex());
    const size_t pages = p->stats().free_pages;
    p->set_root(p->alloc(10));
    p->alloc(5000);
    p->reset();
    auto s = p->stats();
    CHECK(p->root() == nullptr);
    CHECK(s.free_pages == pages);
    CHECK(s.small[0].used == 0);
    CHECK(s.large.used == 0);
    CHECK(s.small[0].allocs == 1);  // counters since laid out stay
    CHECK(s.resets == 1);
}

TEST_CASE("core/shm_slab: sizes") {
    auto pages_in = [](void* addr, size_t size) -> size_t {
        Pool* p = Pool::create(addr, size);
        if (!p) return 0;
        Guard g(p->mutex());
        return p->stats().pages;
    };
    Region tiny(4096);
    CHECK(pages_in(tiny.addr, 64) == 0);
    for (size_t n : {size_t{1}, size_t{7}, size_t{100}}) {
        CAPTURE(n);
        Region r(Pool::region_for(n));
        CHECK(pages_in(r.addr, r.size) == n);
        CHECK(pages_in(r.addr, r.size - 1) == n - 1);
    }
    // The smallest upstream zone, 4 KiB, has 7 pages.
    CHECK(pages_in(tiny.addr, tiny.size) == 7);
}

TEST_CASE("core/shm_slab: freeing what is not a block in use aborts") {
    Region r(64 * 1024);
    Pool* p = Pool::create(r.addr, r.size);
    char* small = nullptr;
    char* large = nullptr;
    {
        Guard g(p->mutex());
        small = static_cast<char*>(p->alloc(40));
        large = static_cast<char*>(p->alloc(2000));
    }
    auto free_in_child = [p](void* b, bool twice) {
        return gatehouse::test::dies_with([=] {
            Guard g(p->mutex());
            p->free(b);
            if (twice) p->free(b);
        });
    };
    CHECK(free_in_child(small, true) == SIGABRT);
    CHECK(free_in_child(small + 16, false) == SIGABRT);
    CHECK(free_in_child(large + Pool::kPageSize, false) == SIGABRT);
    CHECK(free_in_child(large, true) == SIGABRT);
    CHECK(free_in_child(reinterpret_cast<char*>(p), false) == SIGABRT);
    CHECK(free_in_child(small, false) == 0);  // the control
}

TEST_CASE("core/shm_slab: a pool in a zone is shared with forked workers and kept by a reload") {
    gatehouse::shm::ZoneRegistry reg;
    auto gen1 = std::make_unique<gatehouse::shm::ZoneSet>(reg);
    auto z = gen1->add("slab", 64 * 1024, &kTag);
    REQUIRE(z.ok());
    Pool* p = Pool::attach(z->zone->addr(), z->zone->size());
    REQUIRE(p != nullptr);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        // A worker builds a structure and leaves it at the root.
        Guard g(p->mutex());
        auto* b = static_cast<char*>(p->alloc(300));
        if (!b) ::_exit(1);
        std::memcpy(b, "from a worker", 14);
        p->set_root(b);
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    // The next generation declares the zone again: reused, found again.
    gatehouse::shm::ZoneSet gen2(reg);
    auto z2 = gen2.add("slab", 64 * 1024, &kTag);
    REQUIRE(z2.ok());
    CHECK(z2->reused);
    gen1.reset();
    Pool* q = Pool::attach(z2->zone->addr(), z2->zone->size());
    Guard g(q->mutex());
    REQUIRE(q->root() != nullptr);
    CHECK(std::strcmp(static_cast<char*>(q->root()), "from a worker") == 0);
    CHECK(q->stats().large.used == 1);
}

TEST_CASE("core/shm_slab: after a holder died, reset gives a usable pool") {
    gatehouse::shm::ZoneRegistry reg;
    gatehouse::shm::ZoneSet gen(reg);
    auto z = gen.add("slab", 64 * 1024, &kTag);
    REQUIRE(z.ok());
    Pool* p = Pool::attach(z->zone->addr(), z->zone->size());
    // Killed in the middle of its work, the lock held.
    gatehouse::test::killed_after([&] {
        (void)p->mutex().lock();
        p->alloc(100);
    });
    Guard g(p->mutex());
    REQUIRE(g.owner_died());
    p->reset();
    CHECK(p->stats().small[3].used == 0);
    CHECK(p->alloc(100) != nullptr);
}
