// Tests of src/core/shm_lock.h: the lock excludes across processes, a
// holder killed with SIGKILL is reported to the next locker and the lock
// works again, and locking it twice aborts instead of hanging. Children
// are forked processes sharing a real zone; readiness goes through pipes
// and waitpid(), never sleeps.
#include "core/shm_lock.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <new>

#include "core/shm.h"
#include "forked.h"

using gatehouse::shm::Guard;
using gatehouse::shm::Locked;
using gatehouse::shm::Mutex;

namespace {

const int kTag = 0;

// What the tests share: a lock and what it protects.
struct Shared {
    Mutex mutex;
    uint64_t counter = 0;
};

// A zone holding a fresh Shared, as a module lays out a fresh zone.
struct Fixture {
    gatehouse::shm::ZoneRegistry reg;
    gatehouse::shm::ZoneSet gen{reg};
    Shared* s = nullptr;
    Fixture() {
        auto z = gen.add("lock test", 4096, &kTag);
        REQUIRE(z.ok());
        s = ::new (z->zone->addr()) Shared();
    }
};

struct Pipe {
    int fd[2] = {-1, -1};
    Pipe() { REQUIRE(::pipe(fd) == 0); }
    ~Pipe() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
    void put(char c) { REQUIRE(::write(fd[1], &c, 1) == 1); }
    // Blocks until the other side writes a byte (or closes: 0).
    char get() {
        char c = 0;
        return ::read(fd[0], &c, 1) == 1 ? c : 0;
    }
};

// A child that takes the lock, says so on `ready` ('O' when it was Ok,
// 'D' when the owner had died), then waits to be killed.
pid_t hold_until_killed(Shared* s, Pipe& ready) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        Locked l = s->mutex.lock();
        char c = l == Locked::Ok ? 'O' : 'D';
        if (::write(ready.fd[1], &c, 1) != 1) ::_exit(1);
        for (;;) ::pause();
    }
    return pid;
}

void kill_and_reap(pid_t pid) {
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
}

}  // namespace

TEST_CASE("core/shm_lock: two processes incrementing under the lock lose no update") {
    Fixture f;
    constexpr int kEach = 20000;
    pid_t kids[2];
    for (pid_t& k : kids) {
        k = ::fork();
        REQUIRE(k >= 0);
        if (k == 0) {
            for (int i = 0; i < kEach; ++i) {
                Guard g(f.s->mutex);
                // A read and a write apart: without the lock, the other
                // process's increments in between would be lost.
                uint64_t v = *static_cast<volatile uint64_t*>(&f.s->counter);
                *static_cast<volatile uint64_t*>(&f.s->counter) = v + 1;
            }
            ::_exit(0);
        }
    }
    for (pid_t k : kids) {
        int status = 0;
        REQUIRE(::waitpid(k, &status, 0) == k);
        CHECK(WIFEXITED(status));
    }
    Guard g(f.s->mutex);
    CHECK_FALSE(g.owner_died());
    CHECK(f.s->counter == 2 * kEach);
}

TEST_CASE("core/shm_lock: a holder killed with SIGKILL is reported, and the lock works again") {
    Fixture f;
    Pipe ready;
    pid_t holder = hold_until_killed(f.s, ready);
    REQUIRE(ready.get() == 'O');
    kill_and_reap(holder);

    // The next locker is told, and holds the lock.
    CHECK(f.s->mutex.lock() == Locked::OwnerDied);
    CHECK(f.s->mutex.held());
    f.s->counter = 0;  // the "repair"
    f.s->mutex.unlock();
    // Consistent again: for this process and for another.
    CHECK(f.s->mutex.lock() == Locked::Ok);
    f.s->mutex.unlock();
    Pipe again;
    pid_t next = hold_until_killed(f.s, again);
    CHECK(again.get() == 'O');
    kill_and_reap(next);
    Guard g(f.s->mutex);
    CHECK(g.owner_died());
}

TEST_CASE("core/shm_lock: a locker dying while it repairs passes the news on") {
    Fixture f;
    Pipe first, second;
    pid_t a = hold_until_killed(f.s, first);
    REQUIRE(first.get() == 'O');
    kill_and_reap(a);
    pid_t b = hold_until_killed(f.s, second);
    CHECK(second.get() == 'D');  // b was told, and dies before repairing
    kill_and_reap(b);
    {
        Guard g(f.s->mutex);
        CHECK(g.owner_died());
    }
    // The guard released it.
    Guard g(f.s->mutex);
    CHECK_FALSE(g.owner_died());
}

TEST_CASE("core/shm_lock: locking it twice aborts instead of waiting forever") {
    Fixture f;
    int sig = gatehouse::test::dies_with([&] {
        // Were it to wait, SIGALRM ends the child and the check below fails.
        ::alarm(10);
        (void)f.s->mutex.lock();
        (void)f.s->mutex.lock();
    });
    CHECK(sig == SIGABRT);
    // The abort released it, as any death does.
    Guard g(f.s->mutex);
    CHECK(g.owner_died());
}
