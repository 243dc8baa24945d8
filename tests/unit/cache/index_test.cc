#include "cache/index.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/shm.h"
#include "core/shm_slab.h"
#include "forked.h"

using namespace gatehouse;
using namespace gatehouse::cache;

namespace {

constexpr char kTag = 0;
constexpr time_t kNow = 1'800'000'000;
constexpr time_t kInactive = 600;

struct Fixture {
    shm::ZoneRegistry reg;
    std::unique_ptr<shm::ZoneSet> gen = std::make_unique<shm::ZoneSet>(reg);
    shm::Zone* zone = nullptr;
    std::vector<Hash> evicted;

    explicit Fixture(size_t size = 64 * 1024) {
        auto z = gen->add("c", size, &kTag);
        REQUIRE(z.ok());
        zone = z->zone;
    }
    Index index() {
        auto i = Index::attach(*zone);
        REQUIRE(i.ok());
        return *i;
    }
};

Stored stored(uint64_t size, time_t valid_until = kNow + 60) {
    Stored s;
    s.valid_until = valid_until;
    s.status = 200;
    s.fs_size = size;
    s.stale_if_error = 5;
    return s;
}

Hash key(int i) { return hash_key("http://a/" + std::to_string(i)); }

}  // namespace

TEST_CASE("cache/index: a lookup makes a node and counts uses; storing makes it an entry") {
    Fixture f;
    Index ix = f.index();
    NodeInfo n = ix.lookup(key(1), kNow, kInactive, f.evicted);
    CHECK(n.known);
    CHECK_FALSE(n.exists);
    CHECK(n.uses == 1);
    CHECK(ix.lookup(key(1), kNow, kInactive, f.evicted).uses == 2);
    CHECK_FALSE(ix.peek(key(2)).known);

    ix.stored(key(1), stored(1000), kNow, kInactive, f.evicted);
    n = ix.peek(key(1));
    CHECK(n.exists);
    CHECK(n.valid_until == kNow + 60);
    CHECK(n.status == 200);
    CHECK(n.stale_if_error == 5);
    CHECK(n.fs_size == 1000);
    IndexStats s = ix.stats();
    CHECK(s.entries == 1);
    CHECK(s.nodes == 1);
    CHECK(s.size == 1000);
    // Stored again (a refresh): the size is replaced, not added.
    ix.stored(key(1), stored(400), kNow, kInactive, f.evicted);
    CHECK(ix.stats().size == 400);
    CHECK(ix.forget(key(1)));
    CHECK_FALSE(ix.forget(key(1)));
    CHECK(ix.stats().entries == 0);
    CHECK(ix.stats().size == 0);
    CHECK(f.evicted.empty());
}

TEST_CASE("cache/index: one request fills, the others wait, until the claim ends or lapses") {
    Fixture f;
    Index ix = f.index();
    ix.lookup(key(1), kNow, kInactive, f.evicted);
    CHECK(ix.claim_fill(key(1), kNow, kNow + 5));
    CHECK_FALSE(ix.claim_fill(key(1), kNow + 1, kNow + 6));
    CHECK(ix.peek(key(1)).fill_until == kNow + 5);
    // A claim older than proxy_cache_lock_age is taken over.
    CHECK(ix.claim_fill(key(1), kNow + 5, kNow + 10));
    ix.release(key(1));
    CHECK(ix.claim_fill(key(1), kNow + 6, kNow + 11));
    ix.stored(key(1), stored(10), kNow + 6, kInactive, f.evicted);
    CHECK(ix.peek(key(1)).fill_until == 0);
    // Updating is its own claim.
    const uint32_t gen = ix.peek(key(1)).file_gen;
    CHECK(ix.claim_update(key(1), kNow + 100, kNow + 105, gen) == Index::Claim::Taken);
    CHECK(ix.claim_update(key(1), kNow + 101, kNow + 106, gen) == Index::Claim::Held);
    CHECK(ix.claim_fill(key(1), kNow + 101, kNow + 102));
}

TEST_CASE("cache/index: an update is not claimed for a file another update has replaced") {
    Fixture f;
    Index ix = f.index();
    ix.lookup(key(1), kNow, kInactive, f.evicted);
    ix.stored(key(1), stored(10), kNow, kInactive, f.evicted);
    const uint32_t first = ix.lookup(key(1), kNow + 100, kInactive, f.evicted).file_gen;
    CHECK(ix.claim_update(key(1), kNow + 100, kNow + 105, first) == Index::Claim::Taken);
    // Another request read the same stale file, then the update stored
    // its new one and gave the claim back.
    ix.stored(key(1), stored(11), kNow + 101, kInactive, f.evicted);
    CHECK(ix.claim_update(key(1), kNow + 101, kNow + 106, first) == Index::Claim::Changed);
    CHECK(ix.peek(key(1)).update_until == 0);
    const uint32_t second = ix.peek(key(1)).file_gen;
    CHECK(second != first);
    CHECK(ix.claim_update(key(1), kNow + 101, kNow + 106, second) == Index::Claim::Taken);
    // A file forgotten meanwhile (purged) is a change too.
    ix.release(key(1));
    CHECK(ix.forget(key(1)));
    CHECK(ix.claim_update(key(1), kNow + 102, kNow + 107, second) == Index::Claim::Changed);
}

TEST_CASE("cache/index: the manager evicts the inactive, then the least recently used over max_size") {
    Fixture f;
    Index ix = f.index();
    for (int i = 0; i < 10; ++i) {
        ix.lookup(key(i), kNow + i, kInactive, f.evicted);
        ix.stored(key(i), stored(100), kNow + i, kInactive, f.evicted);
    }
    // key(0) used again: the most recent now.
    ix.lookup(key(0), kNow + 20, kInactive, f.evicted);
    std::vector<Hash> victims;
    ix.evict(kNow + 20, 1000, 100, victims);
    CHECK(victims.empty());  // nothing inactive, size 1000 is allowed
    ix.evict(kNow + 20, 750, 100, victims);
    REQUIRE(victims.size() == 3);
    CHECK(victims[0] == key(1));
    CHECK(victims[1] == key(2));
    CHECK(victims[2] == key(3));
    CHECK(ix.stats().size == 700);
    // Inactive ones go whatever the size: 4..9 were last used before
    // kNow + 10, key(0) at kNow + 20.
    victims.clear();
    ix.evict(kNow + 10 + kInactive, UINT64_MAX, 100, victims);
    CHECK(victims.size() == 6);
    CHECK(ix.peek(key(0)).exists);
    // Never one being filled.
    ix.claim_fill(key(0), kNow + 2000, kNow + 2005);
    victims.clear();
    ix.evict(kNow + 2001, 0, 100, victims);
    CHECK(victims.empty());
    CHECK(ix.peek(key(0)).exists);
}

TEST_CASE("cache/index: a full zone drops its least recently used nodes for new ones") {
    Fixture f(16 * 1024);
    Index ix = f.index();
    const size_t cap = Index::capacity(16 * 1024);
    REQUIRE(cap > 10);
    for (int i = 0; i < static_cast<int>(cap) * 3; ++i) {
        NodeInfo n = ix.lookup(key(i), kNow, kInactive, f.evicted);
        REQUIRE(n.known);
        ix.stored(key(i), stored(1), kNow, kInactive, f.evicted);
    }
    // The newest are there, the oldest were handed back for removal.
    CHECK(ix.peek(key(static_cast<int>(cap) * 3 - 1)).exists);
    CHECK_FALSE(ix.peek(key(0)).known);
    CHECK(f.evicted.size() >= cap);
    CHECK(f.evicted[0] == key(0));
    IndexStats s = ix.stats();
    CHECK(s.entries == s.nodes);
    CHECK(s.size == s.entries);
}

TEST_CASE("cache/index: kept by a reload; shared with a forked worker; reset after a holder died") {
    Fixture f;
    {
        Index ix = f.index();
        ix.lookup(key(1), kNow, kInactive, f.evicted);
        ix.stored(key(1), stored(10), kNow, kInactive, f.evicted);
    }
    // A worker stores another.
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        auto i = Index::attach(*f.zone);
        std::vector<Hash> ev;
        if (!i) ::_exit(1);
        i->stored(key(2), stored(20), kNow, kInactive, ev);
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WEXITSTATUS(status) == 0);
    // The next generation finds both.
    shm::ZoneSet gen2(f.reg);
    auto z2 = gen2.add("c", 64 * 1024, &kTag);
    REQUIRE(z2.ok());
    CHECK(z2->reused);
    auto ix2 = Index::attach(*z2->zone);
    REQUIRE(ix2.ok());
    CHECK(ix2->peek(key(1)).exists);
    CHECK(ix2->peek(key(2)).fs_size == 20);
    CHECK(ix2->stats().size == 30);

    // A worker killed holding the lock: the next call starts empty.
    shm::Pool* pool = shm::Pool::attach(z2->zone->addr(), z2->zone->size());
    gatehouse::test::killed_after([&] { (void)pool->mutex().lock(); });
    CHECK_FALSE(ix2->peek(key(1)).known);
    CHECK(ix2->stats().nodes == 0);
    CHECK_FALSE(ix2->stats().loaded);
    ix2->lookup(key(3), kNow, kInactive, f.evicted);
    CHECK(ix2->peek(key(3)).known);
}

TEST_CASE("cache/index: the memory tier keeps copies of stored entries and drops them with the node's file") {
    Fixture f;
    auto mz = f.gen->add("c@memory", 16 * 1024, &kTag);
    REQUIRE(mz.ok());
    auto made = Index::attach(*f.zone, mz->zone);
    REQUIRE(made.ok());
    Index ix = *made;
    Arena a;
    // Only an entry with a file may have a copy.
    ix.lookup(key(1), kNow, kInactive, f.evicted);
    CHECK_FALSE(ix.put_memory(key(1), "bytes"));
    ix.stored(key(1), stored(100), kNow, kInactive, f.evicted);
    CHECK(ix.put_memory(key(1), std::string(3000, 'x')));
    CHECK(ix.peek(key(1)).in_memory);
    CHECK(ix.copy_memory(key(1), a) == std::string(3000, 'x'));
    CHECK(ix.stats().memory_objects == 1);
    // A lookup given an arena copies it at once; without one it does not.
    const NodeInfo with = ix.lookup(key(1), kNow, kInactive, f.evicted, &a);
    CHECK(with.in_memory);
    CHECK(with.memory_copy == std::string(3000, 'x'));
    CHECK(ix.lookup(key(1), kNow, kInactive, f.evicted).memory_copy.empty());
    // A new file replaces the copy; so does forgetting it.
    ix.stored(key(1), stored(100), kNow, kInactive, f.evicted);
    CHECK_FALSE(ix.peek(key(1)).in_memory);
    CHECK(ix.copy_memory(key(1), a).empty());
    CHECK(ix.lookup(key(1), kNow, kInactive, f.evicted, &a).memory_copy.empty());
    CHECK(ix.put_memory(key(1), "again"));
    ix.forget(key(1));
    CHECK(ix.copy_memory(key(1), a).empty());
    CHECK(ix.stats().memory_objects == 0);
    CHECK(ix.stats().memory_bytes == 0);
    // Full: the least recently used copies make room.
    for (int i = 2; i < 12; ++i) {
        ix.lookup(key(i), kNow, kInactive, f.evicted);
        ix.stored(key(i), stored(100), kNow, kInactive, f.evicted);
        CHECK(ix.put_memory(key(i), std::string(3000, static_cast<char>('a' + i))));
    }
    CHECK_FALSE(ix.peek(key(2)).in_memory);
    CHECK(ix.peek(key(11)).in_memory);
    CHECK(ix.copy_memory(key(11), a) == std::string(3000, static_cast<char>('a' + 11)));
    CHECK(ix.stats().memory_bytes <= 16 * 1024);
    // Too large for the whole tier: refused, nothing else lost.
    const uint64_t before = ix.stats().memory_objects;
    CHECK_FALSE(ix.put_memory(key(11), std::string(64 * 1024, 'z')));
    CHECK(ix.stats().memory_objects <= before);
    // A reload finds the copies again.
    auto again = Index::attach(*f.zone, mz->zone);
    REQUIRE(again.ok());
    CHECK(again->peek(key(10)).in_memory);
}
