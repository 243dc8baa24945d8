// The index of one cache ("proxy_cache_path ... keys_zone=name:size"):
// what every worker knows of each entry, in a shared memory zone, so that
// all of them serve, fill and evict one cache [nginx's cache nodes].
//
// An entry is known by the MD5 of its key (cache/key.h); its node holds
// what decides a request without touching the disk: whether a complete
// file exists, until when it is fresh, how long it may be served stale,
// how many requests asked for it (proxy_cache_min_uses), whether a request
// is filling it now (proxy_cache_lock) or refreshing it (updating), and
// its size on disk. The key itself and the response are in the file.
//
// Nodes live in a shm::Pool laid out over the zone, in a hash table of
// Pool refs and one LRU list (least recently used first). A reload with
// the same zone keeps the index (the pool and its root are found again);
// a resized zone starts empty and the cache loader fills it from disk.
// When the pool has no room for a new node, the least recently used nodes
// that nobody is filling are dropped to make room, and their hashes are
// handed back so that the caller removes their files [nginx: "could not
// allocate node", forced expiry].
//
// Locking: one shm::Mutex, the pool's, held by each call for a few
// pointer moves, never during I/O. A process that died holding it leaves
// the index in doubt: the next caller resets it to empty (the files stay;
// the loader is not run again, so entries come back as they are asked
// for and found on disk, see Index::lookup).
//
// Time: Unix seconds, passed in by the caller (the workers' cached clock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string_view>
#include <vector>

#include "cache/key.h"
#include "core/result.h"

namespace gatehouse {
class Arena;
}

namespace gatehouse::shm {
class Guard;
class Pool;
class Zone;
}  // namespace gatehouse::shm

namespace gatehouse::cache {

// What a node says (a copy: the node may change once the lock is gone).
struct NodeInfo {
    bool known = false;       // the index has a node (maybe without a file)
    bool exists = false;      // a complete file is on disk
    // The index may not know every file yet (the loader has not finished,
    // or the index was reset): a node without a file may still have one.
    bool cold = false;
    bool in_memory = false;   // the memory tier has a copy of the file
    bool revalidate_always = false;
    uint16_t status = 0;
    uint32_t uses = 0;        // requests since the node was made
    uint32_t stale_while_revalidate = 0;
    uint32_t stale_if_error = 0;
    time_t valid_until = 0;
    time_t fill_until = 0;    // a request fills the entry until then (0: none)
    time_t update_until = 0;  // a request refreshes it until then (0: none)
    uint64_t fs_size = 0;     // bytes on disk
    // An error status the proxy intercepted (error_page) is cached:
    // answered with that status until valid_until, without a file.
    uint16_t error = 0;
    // Changes whenever the node's file may have: stored, loaded, forgotten
    // (never the same for two files of one key in a zone's life), so that
    // a worker may keep a file open while this stays the same.
    uint32_t file_gen = 0;
    // lookup() with copy_to: the memory tier's copy (copy_memory()'s
    // format), empty when it has none.
    std::string_view memory_copy;
};

// What a completed (or revalidated) file says, for its node.
struct Stored {
    time_t valid_until = 0;
    uint32_t stale_while_revalidate = 0;
    uint32_t stale_if_error = 0;
    uint16_t status = 0;
    bool revalidate_always = false;
    uint64_t fs_size = 0;
};

struct IndexStats {
    uint64_t entries = 0;   // nodes with a file
    uint64_t nodes = 0;
    uint64_t size = 0;      // bytes on disk, as recorded
    bool loaded = false;    // the loader went through the directory
    uint64_t memory_objects = 0;  // copies in the memory tier
    uint64_t memory_bytes = 0;
};

class Index {
public:
    // The index in zone `z`, made empty or found again (see the top),
    // with its memory tier in `memory` when there is one. The error says
    // a zone cannot hold even an empty index.
    static Result<Index> attach(shm::Zone& z, shm::Zone* memory = nullptr);

    // How many nodes a zone of `size` bytes holds, about (for the docs
    // and the checks at configuration time).
    static size_t capacity(size_t zone_size);

    // A request for `h` at `now`: counts the use, moves it to the recent
    // end, pushes its inactivity deadline to now + inactive. Makes the
    // node when there is none (so that min_uses counts), evicting as
    // said at the top; `evicted` receives the hashes whose files must go.
    // With `copy_to`, a copy the memory tier has is made there under the
    // same lock (NodeInfo::memory_copy): a hit takes the index's lock once.
    NodeInfo lookup(const Hash& h, time_t now, time_t inactive, std::vector<Hash>& evicted,
                    Arena* copy_to = nullptr);
    // The node as it is, changing nothing.
    NodeInfo peek(const Hash& h);

    // proxy_cache_lock: the right to fill `h` until `until`. False when
    // another request holds it (and `until` of theirs has not passed).
    bool claim_fill(const Hash& h, time_t now, time_t until);
    // Updating a stale entry: one request refreshes it, until `until`.
    // Changed, and nothing claimed, when the node no longer describes
    // the file `file_gen` the caller found stale: an update stored a new
    // one meanwhile (and gave its claim back), which the caller should
    // look at before it refreshes again.
    enum class Claim : uint8_t { Taken, Held, Changed };
    Claim claim_update(const Hash& h, time_t now, time_t until, uint32_t file_gen);
    // The file is complete (or was revalidated): the node says so; the
    // fill and update claims end. `evicted` as for lookup().
    void stored(const Hash& h, const Stored& s, time_t now, time_t inactive, std::vector<Hash>& evicted);
    // An intercepted error: the node answers `status` until
    // `valid_until`; a file it had goes (its hash to `evicted`).
    void stored_error(const Hash& h, uint16_t status, time_t valid_until, time_t now, time_t inactive,
                      std::vector<Hash>& evicted);
    // The fill or update ended without a new file: the claims end, the
    // node is otherwise unchanged.
    void release(const Hash& h);
    // The file is gone or unusable: the node forgets it (purge, a file
    // that did not parse). True when there was a file.
    bool forget(const Hash& h);

    // The cache manager: nodes inactive since `now`, then the least
    // recently used while the recorded size exceeds `max_size`, up to
    // `max` of them; never a node being filled. Their hashes go to
    // `victims` (the manager removes the files).
    void evict(time_t now, uint64_t max_size, size_t max, std::vector<Hash>& victims);
    // The cache loader: a file found on disk. Keeps a node that requests
    // made meanwhile.
    void loaded(const Hash& h, const Stored& s, time_t now, time_t inactive, std::vector<Hash>& evicted);
    void set_loaded();

    IndexStats stats();

    // ---- the memory tier ("proxy_cache_path ... memory=") ----
    // A copy of the file of `h` (whole: header, head, body) kept in shared
    // memory and served without touching the disk. The disk stays the
    // source of truth: a copy goes when its node changes (a new file, a
    // revalidation, purge, eviction) and after a restart. When the tier is
    // full, the least recently used copies go. False when it has no room.
    bool put_memory(const Hash& h, std::string_view bytes);
    // The copy, into `a`; empty when there is none.
    std::string_view copy_memory(const Hash& h, Arena& a);

    struct Root;  // in the pool; see index.cc

private:
    Index(shm::Zone* z, shm::Pool* pool, Root* root, shm::Pool* mem, size_t mem_size)
        : zone_(z), pool_(pool), root_(root), mem_(mem), mem_size_(mem_size) {}
    Root& locked(shm::Guard& g);

    shm::Zone* zone_;  // owner: the zone registry; outlives every worker
    shm::Pool* pool_;
    Root* root_;
    shm::Pool* mem_;  // the memory tier, or null
    size_t mem_size_;
};

}  // namespace gatehouse::cache
