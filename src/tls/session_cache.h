// "ssl_session_cache shared:NAME:SIZE": TLS sessions kept in a shared
// memory zone, so that a session made by one worker resumes on another.
//
// Layout of the zone: a header (with a process-shared, robust mutex), an
// index of fixed entries in sets of kWays, and a ring of session records.
// Records are appended to the ring; when it wraps, the oldest are
// overwritten and their index entries become stale (an entry is valid
// while its record is inside the last ring-size bytes written). Lookup
// and insertion touch one index set: O(1), no allocation, no
// fragmentation, oldest sessions evicted first.
//
// Ownership: the object lives in the zone itself (attach() places it at
// the zone's address). A zone reused by a reload keeps its sessions.
// Workers lock it for each lookup, insertion and removal; a worker dying
// with the lock held leaves the index emptied by the next locker, never a
// stuck lock.
#pragma once

#include <pthread.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <span>

namespace gatehouse::tls {

class SharedSessionCache {
public:
    // Sessions larger than this (DER) are not stored: a client certificate
    // chain can make them so; they resume within their worker only if a
    // builtin cache is also configured.
    static constexpr size_t kMaxSession = 4096;
    static constexpr size_t kMaxId = 32;  // SSL_MAX_SSL_SESSION_ID_LENGTH
    static constexpr size_t kWays = 8;

    // The cache in [addr, addr + size): attaches to one already laid out
    // there for this size, else lays out an empty one. Null when size is
    // too small for a useful cache.
    static SharedSessionCache* attach(void* addr, size_t size);

    // The operations behind OpenSSL's session callbacks (installed by
    // Context::set_session_cache), with the time injected.
    void store(std::span<const uint8_t> id, std::span<const uint8_t> der, time_t expires, time_t now);
    // Copies the session's DER into `out` (kMaxSession bytes); its size, or
    // 0 when absent or expired.
    size_t find(std::span<const uint8_t> id, uint8_t* out, time_t now);
    void remove(std::span<const uint8_t> id);

    // Sessions indexed and not expired, for tests and statistics.
    size_t count(time_t now);

private:
    struct Entry;
    SharedSessionCache() = default;
    bool lock();
    void unlock();
    void reset_index();
    Entry* entries();
    uint8_t* ring();
    bool valid(const Entry& e) const;
    Entry* lookup(std::span<const uint8_t> id, uint32_t hash);

    uint64_t magic_ = 0;
    uint64_t size_ = 0;
    uint64_t ring_size_ = 0;
    uint64_t write_pos_ = 0;  // absolute: ring offset is write_pos_ % ring_size_
    uint32_t sets_ = 0;
    pthread_mutex_t mutex_;  // process-shared and robust
};

}  // namespace gatehouse::tls
