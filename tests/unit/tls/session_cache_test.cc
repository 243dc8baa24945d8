// Tests of src/tls/session_cache.h: the shared cache's index, queue and
// records, on ordinary memory (the zone's layout does not depend on how it
// is mapped), and in a zone shared with a child for the lock.
#include "tls/session_cache.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/shm.h"
#include "forked.h"
#include "temp_dir.h"

using gatehouse::tls::SharedSessionCache;

namespace {

// Zeroed and aligned as a zone is (16 bytes at least).
struct Zone {
    explicit Zone(size_t n) : size(n), mem(new std::max_align_t[n / sizeof(std::max_align_t)]()) {}
    void* addr() { return mem.get(); }
    size_t size;
    std::unique_ptr<std::max_align_t[]> mem;
};

// The error log in a file for the test's lifetime.
struct LogFile {
    gatehouse::test::TempDir dir;
    gatehouse::log::ErrorLog log;
    LogFile() {
        log.add(dir / "error.log", gatehouse::log::Level::Info);
        REQUIRE(log.open().ok());
        gatehouse::log::set_error_log(&log);
    }
    ~LogFile() { gatehouse::log::set_error_log(nullptr); }
    std::string text() const {
        std::ifstream f(dir / "error.log");
        return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    }
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

TEST_CASE("tls/session_cache: a full cache evicts the oldest, never returns overwritten bytes") {
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

TEST_CASE("tls/session_cache: eviction goes oldest first") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    uint8_t out[SharedSessionCache::kMaxSession];
    for (int i = 0; i < 2000; ++i) c->store(id(i), der(i, 180), 10000, 100);
    // What is left is the newest sessions, without a gap.
    int first = -1;
    for (int i = 0; i < 2000; ++i)
        if (c->find(id(i), out, 101) != 0) {
            first = i;
            break;
        }
    REQUIRE(first > 0);
    for (int i = first; i < 2000; ++i) REQUIRE(c->find(id(i), out, 101) == 180);
    CHECK(c->count(101) == static_cast<size_t>(2000 - first));
    // About a 256-byte block each, in a 64 KiB zone.
    CHECK(c->count(101) > 150);
    CHECK(c->count(101) < 256);
}

TEST_CASE("tls/session_cache: a session stored again replaces the first copy") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    uint8_t out[SharedSessionCache::kMaxSession];
    c->store(id(1), der(1, 200), 500, 100);
    c->store(id(1), der(2, 300), 500, 100);
    CHECK(c->count(101) == 1);
    REQUIRE(c->find(id(1), out, 101) == 300);
    CHECK(out[0] == 2);
    c->remove(id(1));
    gatehouse::shm::Guard g(c->pool().mutex());
    auto s = c->pool().stats();
    CHECK(s.free_pages == s.pages);  // every record went back to the pool
}

TEST_CASE("tls/session_cache: expired sessions make room first") {
    Zone z(64 * 1024);
    SharedSessionCache* c = SharedSessionCache::attach(z.addr(), z.size);
    uint8_t out[SharedSessionCache::kMaxSession];
    c->store(id(1), der(1), 150, 100);
    c->store(id(2), der(2), 150, 100);
    c->store(id(3), der(3), 1000, 100);
    CHECK(c->count(100) == 3);
    // Storing after they expired drops them from the old end.
    c->store(id(4), der(4), 1000, 200);
    CHECK(c->count(100) == 2);
    CHECK(c->find(id(3), out, 200) == 200);
    CHECK(c->find(id(4), out, 200) == 200);
}

TEST_CASE("tls/session_cache: a worker dying with the lock held leaves an empty, working cache") {
    LogFile log;
    gatehouse::shm::ZoneRegistry reg;
    gatehouse::shm::ZoneSet gen(reg);
    const int tag = 0;
    auto zone = gen.add("SSL", 64 * 1024, &tag);
    REQUIRE(zone.ok());
    SharedSessionCache* c = SharedSessionCache::attach(zone->zone->addr(), zone->zone->size());
    REQUIRE(c != nullptr);
    c->store(id(1), der(1), 500, 100);
    gatehouse::test::killed_after([&] { (void)c->pool().mutex().lock(); });
    uint8_t out[SharedSessionCache::kMaxSession];
    CHECK(c->find(id(1), out, 101) == 0);
    CHECK(log.text().find("shared TLS session cache reset after a worker died holding its lock") !=
          std::string::npos);
    c->store(id(2), der(2), 500, 100);
    CHECK(c->find(id(2), out, 101) == 200);
}
