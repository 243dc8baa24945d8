// shm::Mutex: the one lock that processes sharing a zone (core/shm.h)
// take to change what it holds. It lives inside the zone, next to what it
// protects; a shm::Pool (core/shm_slab.h) carries one for its own blocks
// and for whatever its user keeps in them.
//
// It is a POSIX mutex, process-shared and robust, and error-checking:
//
//   - Robust. A process killed while holding it (a worker crashing, a
//     SIGKILL) does not wedge the others: the kernel releases it when the
//     holder dies, and the next lock() gets it with Locked::OwnerDied.
//   - Never a self-deadlock. Locking it again from the process (thread)
//     that holds it is a bug; it aborts with file:line (GH_CHECK) instead
//     of waiting forever. Being robust, the lock is then released by the
//     abort like by any death.
//
// The contract on Locked::OwnerDied: the caller holds the lock, and what
// it protects may be half-updated (the dead holder stopped anywhere in
// its critical section). Before unlocking, the caller repairs it, or
// resets it to a state that needs no repair (an empty cache, a pool
// reset). The lock itself is usable again already: lock() marks it
// consistent before returning, so a caller that dies while repairing
// passes OwnerDied on to the next locker, and unlocking never makes it
// unusable for good (ENOTRECOVERABLE). Structures that need no repair
// (whole atomics, copies of whole values) say so where they take the lock.
//
// Placement. Construct it in memory no process uses yet: a fresh zone
// (zeroed, not yet forked into workers) or a block just allocated. Never
// construct it again over a lock a process may hold or wait on; it has no
// destructor to call: it goes with the zone.
//
// Address independence. The kernel finds the lock by the shared page
// under it and each process records its own address of it, so the zone
// may be mapped anywhere in each process (zones happen to be mapped at
// one address in all of them, see core/shm.h; the lock does not rely on
// it).
//
// Hold it briefly: no I/O, no waiting, and one zone lock at a time (no
// order between locks is defined). A worker stopped while holding it
// (SIGSTOP) blocks the others until it runs again.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>

namespace gatehouse::shm {

// What lock() found.
enum class Locked : uint8_t {
    Ok,         // taken
    OwnerDied,  // taken, after its holder died holding it: repair (see top)
};

class Mutex {
public:
    // Initialises it unlocked (see "Placement" above).
    Mutex();
    Mutex(const Mutex&) = delete;
    Mutex& operator=(const Mutex&) = delete;

    // Waits for the lock and takes it. Aborts if this thread holds it.
    [[nodiscard]] Locked lock();
    // Releases it; aborts if this thread does not hold it.
    void unlock();

    // Debug builds: whether this thread holds it (for GH_ASSERT in the
    // functions that require the lock). Release builds: always true.
    bool held() const;

private:
    pthread_mutex_t m_;
    std::atomic<int32_t> holder_{0};  // debug builds: the holder's thread id, 0 when free
};

// Holds a Mutex for its lifetime.
//
//     shm::Guard g(pool.mutex());
//     if (g.owner_died()) rebuild();   // see the contract above
class Guard {
public:
    explicit Guard(Mutex& m) : m_(m), state_(m.lock()) {}
    ~Guard() { m_.unlock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

    bool owner_died() const { return state_ == Locked::OwnerDied; }

private:
    Mutex& m_;
    Locked state_;
};

}  // namespace gatehouse::shm
