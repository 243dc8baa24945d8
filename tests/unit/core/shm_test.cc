// Tests of src/core/shm.h: zones are shared with forked children, reused
// across generations by name and size, renewed when resized, unmapped when
// the last generation referencing them goes, and the errors of add().
#include "core/shm.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>

using gatehouse::shm::Zone;
using gatehouse::shm::ZoneRegistry;
using gatehouse::shm::ZoneSet;

namespace {

const int kCacheTag = 0;  // stand-ins for module addresses
const int kLimitTag = 0;

// Forks a child that runs fn and exits with its result; returns that.
template <typename Fn>
int in_child(Fn fn) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) ::_exit(fn());
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("core/shm: a child's writes are seen by the parent, and the reverse") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto z = gen.add("counters", 10000, &kCacheTag);
    REQUIRE(z.ok());
    CHECK_FALSE(z->reused);
    auto* p = static_cast<char*>(z->zone->addr());
    REQUIRE(p != nullptr);
    CHECK(z->zone->size() == 10000);
    CHECK(p[0] == 0);  // fresh zones are zeroed
    std::strcpy(p, "from the master");
    CHECK(in_child([&] {
              if (std::strcmp(p, "from the master") != 0) return 1;
              std::strcpy(p + 5000, "from a worker");
              return 0;
          }) == 0);
    CHECK(std::strcmp(p + 5000, "from a worker") == 0);
}

TEST_CASE("core/shm: a reload reuses a zone of the same name and size") {
    ZoneRegistry reg;
    auto gen1 = std::make_unique<ZoneSet>(reg);
    auto a1 = gen1->add("a", 4096, &kCacheTag);
    auto b1 = gen1->add("b", 4096, &kCacheTag);
    REQUIRE((a1.ok() && b1.ok()));
    std::strcpy(static_cast<char*>(a1->zone->addr()), "kept");

    // The new generation keeps "a", drops "b", resizes nothing.
    auto gen2 = std::make_unique<ZoneSet>(reg);
    auto a2 = gen2->add("a", 4096, &kCacheTag);
    REQUIRE(a2.ok());
    CHECK(a2->reused);
    CHECK(a2->zone == a1->zone);
    CHECK(a2->zone->addr() == a1->zone->addr());
    CHECK(std::strcmp(static_cast<char*>(a2->zone->addr()), "kept") == 0);
    CHECK(a2->zone->generations() == 2);
    CHECK(reg.mapped() == 2);

    // The old generation's last worker exits: "b" is unmapped, "a" stays.
    gen1.reset();
    CHECK(reg.mapped() == 1);
    CHECK(reg.find("b") == nullptr);
    CHECK(reg.find("a") == a2->zone);
    CHECK(a2->zone->generations() == 1);
    // Still mapped and intact in the running generation.
    CHECK(std::strcmp(static_cast<char*>(a2->zone->addr()), "kept") == 0);
}

TEST_CASE("core/shm: a resized zone is a new, empty one; the old goes with its generation") {
    ZoneRegistry reg;
    auto gen1 = std::make_unique<ZoneSet>(reg);
    auto a1 = gen1->add("a", 4096, &kCacheTag);
    REQUIRE(a1.ok());
    std::strcpy(static_cast<char*>(a1->zone->addr()), "old");
    ZoneSet gen2(reg);
    auto a2 = gen2.add("a", 8192, &kCacheTag);
    REQUIRE(a2.ok());
    CHECK_FALSE(a2->reused);
    CHECK(a2->zone != a1->zone);
    CHECK(static_cast<char*>(a2->zone->addr())[0] == 0);
    CHECK(reg.mapped() == 2);
    CHECK(reg.find("a") == a2->zone);  // the newest
    gen1.reset();
    CHECK(reg.mapped() == 1);
    // A third generation with the new size reuses the new zone.
    ZoneSet gen3(reg);
    auto a3 = gen3.add("a", 8192, &kCacheTag);
    REQUIRE(a3.ok());
    CHECK(a3->reused);
    CHECK(a3->zone == a2->zone);
}

TEST_CASE("core/shm: a failed reload releases what it made and keeps what it reused") {
    ZoneRegistry reg;
    ZoneSet running(reg);
    auto a = running.add("a", 4096, &kCacheTag);
    REQUIRE(a.ok());
    {
        ZoneSet failed(reg);
        REQUIRE(failed.add("a", 4096, &kCacheTag).ok());
        REQUIRE(failed.add("new", 4096, &kCacheTag).ok());
        CHECK(reg.mapped() == 2);
        // ... the configuration fails further on: the generation is dropped.
    }
    CHECK(reg.mapped() == 1);
    CHECK(reg.find("a") == a->zone);
    CHECK(a->zone->generations() == 1);
}

TEST_CASE("core/shm: declaring a zone again in one generation") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto a = gen.add("a", 4096, &kCacheTag);
    REQUIRE(a.ok());
    auto same = gen.add("a", 4096, &kCacheTag);
    REQUIRE(same.ok());
    CHECK(same->zone == a->zone);
    auto any = gen.add("a", 0, &kCacheTag);  // "the zone, whatever its size"
    REQUIRE(any.ok());
    CHECK(any->zone == a->zone);
    CHECK(a->zone->generations() == 1);
    CHECK(gen.zones().size() == 1);
}

TEST_CASE("core/shm: errors") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    REQUIRE(gen.add("a", 4096, &kCacheTag).ok());
    CHECK(gen.add("a", 8192, &kCacheTag).message() ==
          "the size 8192 of shared memory zone \"a\" conflicts with already declared size 4096");
    CHECK(gen.add("a", 4096, &kLimitTag).message() ==
          "shared memory zone \"a\" is already used by another module");
    CHECK(gen.add("z", 0, &kCacheTag).message() == "zero size of shared memory zone \"z\"");
    auto huge = gen.add("huge", size_t{1} << 60, &kCacheTag);
    REQUIRE_FALSE(huge.ok());
    CHECK(huge.message().rfind("mmap(MAP_ANONYMOUS|MAP_SHARED, 1152921504606846976) failed (12: ", 0) == 0);
    // Across generations, a name taken by another module is refused too.
    ZoneSet next(reg);
    CHECK(next.add("a", 4096, &kLimitTag).message() ==
          "shared memory zone \"a\" is already used by another module");
    CHECK(reg.mapped() == 1);
}

TEST_CASE("core/shm: the process registry is one object") {
    CHECK(&gatehouse::shm::registry() == &gatehouse::shm::registry());
}
