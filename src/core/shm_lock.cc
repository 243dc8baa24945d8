#include "core/shm_lock.h"

#include <unistd.h>

#include <cerrno>

#include "core/assert.h"
#include "core/log.h"

namespace gatehouse::shm {

namespace {

static_assert(std::atomic<int32_t>::is_always_lock_free, "a lock-free atomic is address-free: shareable");

// The error-checking type is what turns a second lock() by the holder
// into EDEADLK rather than a wait that never ends.
pthread_mutexattr_t make_attr() {
    pthread_mutexattr_t a;
    GH_CHECK(pthread_mutexattr_init(&a) == 0);
    GH_CHECK(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0);
    GH_CHECK(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0);
    GH_CHECK(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK) == 0);
    return a;
}

}  // namespace

Mutex::Mutex() {
    pthread_mutexattr_t a = make_attr();
    GH_CHECK(pthread_mutex_init(&m_, &a) == 0);
    pthread_mutexattr_destroy(&a);
}

Locked Mutex::lock() {
    int rc = pthread_mutex_lock(&m_);
    Locked state = Locked::Ok;
    if (rc == EOWNERDEAD) {
        // Usable again from now on, whatever the caller does next (see the
        // contract in the header); only what the lock protects is suspect.
        GH_CHECK(pthread_mutex_consistent(&m_) == 0);
        state = Locked::OwnerDied;
    } else if (rc != 0) {
        // EDEADLK: this thread holds it already, a bug that would otherwise
        // wait forever. ENOTRECOVERABLE cannot happen: every EOWNERDEAD is
        // made consistent above. Anything else: the bytes are not a lock.
        GH_LOG_ERRNO(Alert, rc, "pthread_mutex_lock() of a shared memory lock failed");
        GH_CHECK(rc == 0);
    }
#if GH_DEBUG
    holder_.store(static_cast<int32_t>(::gettid()), std::memory_order_relaxed);
#endif
    return state;
}

void Mutex::unlock() {
#if GH_DEBUG
    holder_.store(0, std::memory_order_relaxed);
#endif
    int rc = pthread_mutex_unlock(&m_);
    if (rc != 0) {
        // EPERM: not held by this thread, a bug.
        GH_LOG_ERRNO(Alert, rc, "pthread_mutex_unlock() of a shared memory lock failed");
        GH_CHECK(rc == 0);
    }
}

bool Mutex::held() const {
#if GH_DEBUG
    return holder_.load(std::memory_order_relaxed) == static_cast<int32_t>(::gettid());
#else
    return true;
#endif
}

}  // namespace gatehouse::shm
