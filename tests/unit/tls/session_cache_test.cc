// Tests of src/tls/session_cache.h: the shared cache's index and ring,
// on ordinary memory (the zone's layout does not depend on how it is
// mapped).
#include "tls/session_cache.h"

#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

using gatehouse::tls::SharedSessionCache;

namespace {

struct Zone {
    explicit Zone(size_t n) : size(n), mem(new uint64_t[n / 8]()) {}
    void* addr() { return mem.get(); }
    size_t size;
    std::unique_ptr<uint64_t[]> mem;
};

std::vector<uint8_t> id(int n) {
    std::vector<uint8_t> v(32, 0xab);
    memcpy(v.data(), &n, sizeof n);
    return v;
}

std::vector<uint8_t> der(int n, size_t len = 200) {
    std::vector<uint8_t> v(len, static_cast<uint8_t>(n));
    memcpy(v.data() + len - sizeof n, &n, sizeof n);
    return v;
}

}  // namespace

TEST_CASE("tls/session_cache: store, find, remove") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    REQUIRE(c != nullptr);
    uint8_t out[SharedSessionCache::kMaxSession];
    CHECK(c->find(id(1), out, 100) == 0);
    c->store(id(1), der(1), 200, 100);
    c->store(id(2), der(2, 300), 200, 100);
    REQUIRE(c->find(id(1), out, 150) == 200);
    CHECK(memcmp(out, der(1).data(), 200) == 0);
    REQUIRE(c->find(id(2), out, 150) == 300);
    CHECK(out[1] == 2);
    CHECK(c->count(150) == 2);
    c->remove(id(1));
    CHECK(c->find(id(1), out, 150) == 0);
    CHECK(c->count(150) == 1);
}

TEST_CASE("tls/session_cache: expired sessions are not found") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    uint8_t out[SharedSessionCache::kMaxSession];
    c->store(id(1), der(1), 200, 100);
    CHECK(c->find(id(1), out, 199) == 200);
    CHECK(c->find(id(1), out, 200) == 0);
}

TEST_CASE("tls/session_cache: attaching again keeps the sessions") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    c->store(id(3), der(3), 500, 100);
    SharedSessionCache* again = SharedSessionCache::attach(z.addr(), z.size);
    CHECK(again == c);
    uint8_t out[SharedSessionCache::kMaxSession];
    CHECK(again->find(id(3), out, 101) == 200);
    // Another size is another layout: empty.
    SharedSessionCache* smaller = SharedSessionCache::attach(z.addr(), 32 * 1024);
    REQUIRE(smaller != nullptr);
    CHECK(smaller->find(id(3), out, 101) == 0);
}

TEST_CASE("tls/session_cache: the ring evicts the oldest, never returns overwritten bytes") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    uint8_t out[SharedSessionCache::kMaxSession];
    // Far more than fits: 1000 sessions of ~1 KiB in a 64 KiB zone.
    for (int i = 0; i < 1000; ++i) c->store(id(i), der(i, 1000), 10000, 100);
    CHECK(c->find(id(0), out, 101) == 0);
    size_t found = 0;
    for (int i = 0; i < 1000; ++i) {
        size_t n = c->find(id(i), out, 101);
        if (n == 0) continue;
        ++found;
        REQUIRE(n == 1000);
        int tail = 0;
        memcpy(&tail, out + n - sizeof tail, sizeof tail);
        CHECK(out[1] == static_cast<uint8_t>(i));
        CHECK(tail == i);
    }
    CHECK(found > 10);
    CHECK(found < 70);
    CHECK(c->find(id(999), out, 101) == 1000);
}

TEST_CASE("tls/session_cache: what does not fit is not stored") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    uint8_t out[SharedSessionCache::kMaxSession];
    c->store(id(1), der(1, SharedSessionCache::kMaxSession + 1), 500, 100);
    CHECK(c->find(id(1), out, 101) == 0);
    c->store(std::vector<uint8_t>(33, 1), der(1), 500, 100);  // an id too long
    CHECK(c->count(101) == 0);
    CHECK(SharedSessionCache::attach(z.addr(), 1024) == nullptr);
}
