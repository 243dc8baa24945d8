// shm::Pool: a slab allocator inside a shared memory zone (core/shm.h),
// for the structures workers share: session caches, the upstream zone's
// records, and the coming cache index, rate-limit and metrics zones. The
// idea is nginx's slab pool; the code is ours.
//
// Layout of the region [addr, addr + size) it is laid out in:
//
//   Pool (this header: magic, lock, lists, counters) | Page x n | pad | n pages of kPageSize
//
// Blocks of at most kMaxSmall bytes come from size classes, the powers of
// two from kMinBlock to kMaxSmall: a page is cut into blocks of one class,
// its descriptor's bitmap telling which are in use; a class keeps a list
// of its pages with a free block. Larger blocks are runs of whole pages,
// taken first-fit from a list of free runs; freed runs merge with their
// free neighbours. alloc() never aborts: it returns null when there is
// no room, and the caller evicts something or refuses. A page whose blocks
// are all freed goes back to the free runs.
//
// Address independence. Everything the pool keeps is a page index or an
// offset from the pool's start: the region may be mapped at different
// addresses in different processes. Users should store ref()s, not
// pointers, in their blocks for the same reason; a user that stores
// pointers relies on zones being mapped at one address in every process
// (they are: mapped by the master before it forks) and says so.
//
// Alignment. Every block is aligned to kMinBlock (16: any scalar type);
// a block of a size class to its size; a run of pages to kPageSize. That
// is relative to the region's start, which must be aligned to kMinBlock;
// a zone starts on a memory page, so the guarantees hold in a zone.
//
// Lifetime across reloads. attach() keeps a pool laid out by this layout
// version (kMagic, the first 8 bytes of the region) for this size, with
// every block and the root; anything else (a fresh zone's zeros, another
// size, another version of this code) is laid out anew, empty. That is
// what a module calls whether its ZoneRef is fresh or reused: a fresh
// zone is zeroed, so the first declaration lays the pool out and a second
// declaration by the same generation (two upstream blocks naming one
// zone) finds it. The module then finds its own structure again through
// root(), set by whoever built it.
//
// Locking. The pool holds one shm::Mutex (core/shm_lock.h), for its own
// lists and for whatever its user keeps in the blocks: the user takes
// mutex() around its whole operation and calls the members below with it
// held (checked in debug builds). On Locked::OwnerDied the pool's lists
// themselves may be half-updated: the user calls reset() (every block is
// gone, the root too) and rebuilds, or starts without its structure. The
// exceptions, usable without the lock: mutex(), ref(), at(), and
// attach()/create() at configuration time in the master, on a pool no
// worker uses yet or whose layout is kept.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/shm_lock.h"

namespace gatehouse::shm {

class Pool {
public:
    static constexpr size_t kPageSize = 512;
    static constexpr size_t kMinBlock = 16;
    static constexpr size_t kMaxSmall = kPageSize / 2;  // larger: runs of pages
    static constexpr size_t kClasses = 5;                // 16, 32, 64, 128, 256
    // "gh-slab" and the layout version (the last byte).
    static constexpr uint64_t kMagic = 0x67682d736c616201ULL;

    // What the pool holds, for the coming metrics and for tests. "Since
    // laid out": reset() keeps those counters, create() zeroes them.
    struct Stats {
        struct Class {
            size_t size = 0;      // bytes per block (0: the large runs)
            size_t pages = 0;     // pages holding this class's blocks
            size_t used = 0;      // blocks (runs) handed out now
            size_t slots = 0;     // blocks on those pages, used or not (runs: used)
            uint64_t allocs = 0;  // successful alloc() since laid out
            uint64_t fails = 0;   // alloc() that found no room, since laid out
        };
        size_t pages = 0;       // pages in the pool
        size_t free_pages = 0;  // in free runs
        Class small[kClasses];  // by size, kMinBlock first
        Class large;            // runs of pages
        uint64_t fails = 0;     // every class's, and the large runs'
        uint64_t resets = 0;    // reset() calls since laid out
    };

    // Lays out an empty pool in [addr, addr + size), whatever was there.
    // Null when the region cannot hold one page. `addr` must be aligned to
    // kMinBlock.
    static Pool* create(void* addr, size_t size);
    // The pool laid out there by this version for this size, kept as it
    // is; else create(). See "Lifetime across reloads" above.
    static Pool* attach(void* addr, size_t size);

    // Sizing: the pages a block of n bytes takes (a small block takes a
    // share of one), and the bytes of a region whose pool has n pages.
    static size_t pages_for(size_t n);
    static size_t region_for(size_t pages);

    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    Mutex& mutex() { return mutex_; }

    // ---- with mutex() held ------------------------------------------------

    // A block of at least n bytes (n = 0 counts as 1), not zeroed, aligned
    // as said above; null when there is no room (counted in stats()).
    void* alloc(size_t n);
    // Gives back a block from alloc() of this pool; null is ignored.
    // Anything else (a pointer inside a block, a second free) aborts.
    void free(void* p);
    // Drops every block and the root: the pool is as laid out, empty.
    void reset();

    // The user's structure, found again after a reload: a block of this
    // pool, or null (the initial value, and after reset()).
    void* root() const { return at(root_); }
    void set_root(void* p);

    Stats stats() const;

    // ---- any time -----------------------------------------------------------

    // A block's address as an offset that means the same in every process
    // (0 for null), and back.
    uint64_t ref(const void* p) const {
        return p ? static_cast<uint64_t>(static_cast<const char*>(p) - reinterpret_cast<const char*>(this)) : 0;
    }
    void* at(uint64_t r) const {
        return r ? const_cast<char*>(reinterpret_cast<const char*>(this)) + r : nullptr;
    }
    template <typename T>
    T* at(uint64_t r) const {
        return static_cast<T*>(at(r));
    }

private:
    struct Page;
    struct Layout;
    struct Counters {
        uint32_t pages = 0;
        uint32_t used = 0;
        uint64_t allocs = 0;
        uint64_t fails = 0;
    };

    Pool(size_t size, const Layout& l);
    static Layout layout(size_t size);

    Page* pages() const;
    char* page_addr(uint32_t i) const;
    void clear();
    void* alloc_small(size_t cls);
    void* alloc_large(size_t n);
    uint32_t take_run(uint32_t n);
    void give_run(uint32_t first, uint32_t n);
    void add_free_run(uint32_t first, uint32_t n);
    void push(uint32_t& head, uint32_t i);
    void unlink(uint32_t& head, uint32_t i);

    // The magic first: attach() reads it before trusting anything else.
    uint64_t magic_ = 0;
    uint64_t size_ = 0;        // of the region
    uint64_t first_page_ = 0;  // offset of page 0
    uint32_t npages_ = 0;
    uint32_t free_runs_ = 0;         // head of the free runs' list (a page index)
    uint32_t partial_[kClasses] = {};  // heads: each class's pages with a free block
    uint32_t free_pages_ = 0;
    uint64_t root_ = 0;  // ref()
    Counters small_[kClasses];
    Counters large_;
    uint64_t resets_ = 0;
    Mutex mutex_;
};

}  // namespace gatehouse::shm
