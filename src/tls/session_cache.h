// "ssl_session_cache shared:NAME:SIZE": TLS sessions kept in a shared
// memory zone, so that a session made by one worker resumes on another.
//
// Layout of the zone:
//
//   SharedSessionCache (this header) | index: a chain head per bucket | shm::Pool (the rest)
//
// Each session is one record allocated from the pool (core/shm_slab.h):
// its id, its expiry, its DER, a link in its bucket's chain (by a hash of
// the id) and links in a queue ordered by when it was stored. There is a
// bucket per 512 bytes of zone, about two sessions: lookup, insertion and
// removal are O(1). Storing drops a session with the same id, then up to
// two expired ones from the old end of the queue; when the pool has no
// room, the oldest sessions are evicted until the new one fits. Records
// and heads hold Pool::ref offsets, never pointers.
//
// Ownership: the object lives in the zone itself (attach() places it at
// the zone's address). A zone reused by a reload keeps its sessions.
// Workers hold the pool's lock (a shm::Mutex) for each lookup, insertion
// and removal; a worker dying with it held leaves the cache emptied by
// the next locker (logged at alert), never a stuck lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <span>

#include "core/shm_slab.h"

namespace gatehouse::tls {

class SharedSessionCache {
public:
    // Sessions larger than this (DER) are not stored: a client certificate
    // chain can make them so; they resume within their worker only if a
    // builtin cache is also configured.
    static constexpr size_t kMaxSession = 4096;
    static constexpr size_t kMaxId = 32;  // SSL_MAX_SSL_SESSION_ID_LENGTH

    // The cache in [addr, addr + size), `addr` aligned to 16 bytes (a
    // zone's is): the one laid out there for this size by this version,
    // sessions kept (a reused zone, or the zone named again by another
    // server of the same generation); else an empty one laid out. Null
    // when size is too small for a useful cache. Called by the master at
    // configuration time; it takes no lock, since a kept layout is only
    // read.
    static SharedSessionCache* attach(void* addr, size_t size);

    // The operations behind OpenSSL's session callbacks (installed by
    // Context::set_session_cache), with the time injected.
    void store(std::span<const uint8_t> id, std::span<const uint8_t> der, time_t expires, time_t now);
    // Copies the session's DER into `out` (kMaxSession bytes); its size, or
    // 0 when absent or expired.
    size_t find(std::span<const uint8_t> id, uint8_t* out, time_t now);
    void remove(std::span<const uint8_t> id);

    // Sessions stored and not expired, for tests and statistics.
    size_t count(time_t now);

    // The pool holding the sessions; its mutex() is the cache's lock. For
    // statistics (stats(), under the lock) and tests.
    shm::Pool& pool() const;

private:
    struct Session;
    SharedSessionCache() = default;
    uint64_t* buckets();
    // With the lock just taken: empties the cache if its last holder died.
    void recover(const shm::Guard& g);
    void reset();
    Session* lookup(std::span<const uint8_t> id, uint32_t hash);
    void drop(Session* s);

    uint64_t magic_ = 0;
    uint64_t pool_magic_ = 0;  // Pool::kMagic when laid out: its version too
    uint64_t size_ = 0;
    uint64_t pool_offset_ = 0;  // from this
    uint64_t max_record_ = 0;   // a quarter of the pool: larger is not stored
    uint64_t oldest_ = 0;       // the queue's ends (Pool::ref), 0: empty
    uint64_t newest_ = 0;
    uint32_t buckets_ = 0;
};

}  // namespace gatehouse::tls
