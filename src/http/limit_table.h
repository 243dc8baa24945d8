// LimitTable: the per-key records of a limit_req or limit_conn zone, in a
// shared memory zone (core/shm.h) so that every worker counts the same
// client the same, and found again after a reload that keeps the zone.
//
// Layout: a shm::Pool (core/shm_slab.h) fills the zone; its root is a Head
// holding a fixed array of hash buckets, a least-recently-used list and a
// copy of the key the zone was declared with (a reload that changes the
// key of a kept zone is refused, as nginx does: the records would mean
// something else). A record (Node) is one pool block: the links, the
// counters both modules use, then the key's bytes. Links are Pool::ref()
// offsets, not pointers.
//
// Locking: every member below except open() and the accessors is called
// with mutex() held, through Lock, which repairs the table when a process
// died holding it (the records are dropped: the limits start afresh, which
// is what a fresh zone would do). Hold it for one lookup and update: no
// I/O, no logging.
//
// Ownership: a LimitTable is a small handle in the generation arena (the
// zone's conf); what it points to lives in the zone, which outlives the
// generation's workers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/shm_lock.h"

namespace gatehouse::shm {
class Pool;
struct ZoneRef;
}  // namespace gatehouse::shm

namespace gatehouse::http {

class LimitTable {
public:
    // One key's record. `count`: limit_req, the checks of this key in
    // progress (a record in use is never evicted); limit_conn, the
    // requests holding it. `excess` and `last`: limit_req's bucket
    // (http/limiter.h).
    struct Node {
        uint64_t chain = 0;           // next in the bucket
        uint64_t newer = 0, older = 0;  // the LRU list
        uint64_t hash = 0;
        int64_t excess = 0;
        uint64_t last = 0;
        // "sync=" (http/limit_sync.h): the table's check sequence number
        // when the record was last checked (next_seq()), the requests
        // limit_req accepted since the last batch to Redis, and whether
        // it was checked since that batch; `first` is when the first of
        // those accepted requests came (ms, the loop's clock).
        uint64_t seen = 0;
        uint64_t first = 0;
        uint32_t unsynced = 0;
        uint32_t dirty = 0;
        // limit_conn's "sync=": the other nodes' count of this key, as
        // Redis last answered.
        uint32_t remote = 0;
        uint32_t count = 0;
        uint16_t key_len = 0;
        std::string_view key() const { return {reinterpret_cast<const char*>(this + 1), key_len}; }
    };

    // Lays the table out in a zone, or finds it there (ref.reused, or a
    // second declaration in one generation). `what` ("limit_req") and the
    // zone's name go into the errors:
    //   limit_req "one" uses the "$a" key while previously it used the "$b" key
    //   zone "one" is too small
    // Called by the master at configuration time; the zone's mutex is
    // taken, since old workers may be using a kept zone.
    static Result<LimitTable> open(const shm::ZoneRef& ref, std::string_view what, std::string_view key);

    LimitTable() = default;

    std::string_view name() const { return name_; }

    // Holds the table's lock; repairs the table after a dead holder.
    class Lock {
    public:
        explicit Lock(LimitTable& t);
        ~Lock();
        Lock(const Lock&) = delete;
        Lock& operator=(const Lock&) = delete;

    private:
        LimitTable& t_;
    };

    // ---- with the lock held -------------------------------------------------

    // The record of `key` (with its hash, from hash_key()), or null.
    Node* find(uint64_t hash, std::string_view key);
    // A new record for `key` (not present), zeroed, newest in the LRU
    // list; null when the zone has no room (the caller evicts and retries,
    // or refuses).
    Node* insert(uint64_t hash, std::string_view key);
    void erase(Node* n);
    // Makes n the most recently used.
    void touch(Node* n);
    // The least recently used record, or null.
    Node* oldest();
    size_t size() const;

    // The newest record (the most recently used), or null; and the one
    // just older than n, or null. For the sync's walk over the records
    // checked since its last batch (they are the newest).
    Node* newest();
    Node* older(Node* n);
    // A check's sequence number, increasing: records checked after a
    // walk read seq() carry a larger one, whichever process checked
    // them (a clock read at the start of another worker's iteration
    // would not order them).
    uint64_t next_seq();
    uint64_t seq() const;

    // Any time, without the lock: whether the zone's sync to Redis is
    // down (http/limit_sync.h), as its owner worker last said. Every
    // worker of the node reads it ("fail=closed").
    bool sync_down() const;
    void set_sync_down(bool down);

    // Any time.
    static uint64_t hash_key(std::string_view key);
    // Keys longer than this are never stored (Node::key_len).
    static constexpr size_t kMaxKey = 65535;
    // The smallest zone accepted, as nginx's 8 pages of 4 KiB.
    static constexpr size_t kMinZone = 32 * 1024;

private:
    struct Head;
    LimitTable(shm::Pool* p, std::string name, std::string key) : pool_(p), name_(std::move(name)), key_(std::move(key)) {}
    Head* head() const;
    // Builds an empty Head in the pool (after a reset); false: no room.
    bool build();

    shm::Pool* pool_ = nullptr;
    std::string name_;
    std::string key_;  // as declared, for build()
};

}  // namespace gatehouse::http
