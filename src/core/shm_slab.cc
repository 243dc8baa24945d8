#include "core/shm_slab.h"

#include <bit>
#include <cstring>
#include <new>

#include "core/assert.h"

namespace gatehouse::shm {

namespace {

constexpr uint32_t kNone = UINT32_MAX;  // no page: the end of a list
constexpr size_t kHeaderAlign = 64;     // the descriptors start on a cache line

static_assert(std::has_single_bit(Pool::kPageSize) && std::has_single_bit(Pool::kMinBlock));
static_assert(Pool::kMinBlock << (Pool::kClasses - 1) == Pool::kMaxSmall);
// A page of the smallest class has a bit per block in a 32-bit word.
static_assert(Pool::kPageSize / Pool::kMinBlock <= 32);

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

size_t block_size(size_t cls) { return Pool::kMinBlock << cls; }

size_t slots_of(size_t cls) { return Pool::kPageSize / block_size(cls); }

uint32_t full_mask(size_t cls) {
    size_t n = slots_of(cls);
    return n == 32 ? UINT32_MAX : (uint32_t{1} << n) - 1;
}

// The class of a small block of n bytes (1 <= n <= kMaxSmall).
size_t class_of(size_t n) {
    size_t b = std::bit_ceil(n < Pool::kMinBlock ? Pool::kMinBlock : n);
    return static_cast<size_t>(std::countr_zero(b) - std::countr_zero(Pool::kMinBlock));
}

}  // namespace

// A page's descriptor. Every page's `kind` is accurate at all times, so
// that free() can check its argument and a run can look at its
// neighbours' first and last pages to merge with them.
struct Pool::Page {
    enum Kind : uint8_t {
        kFree,       // the first page of a free run: `word` its length, in free_runs_
        kFreeTail,   // the last page of a free run of 2 or more: `word` its first page
        kFreeInner,  // another page of a free run
        kSmall,      // cut into blocks of class `cls`: `word` the bitmap of those in use
        kLarge,      // the first page of an allocated run: `word` its length
        kLargeInner, // another page of an allocated run
    };
    uint32_t next = kNone;  // the list it is in (free runs, a class's partial pages)
    uint32_t prev = kNone;
    uint32_t word = 0;
    uint8_t kind = kFreeInner;
    uint8_t cls = 0;
    uint16_t pad = 0;
};

struct Pool::Layout {
    uint32_t npages = 0;
    uint64_t first_page = 0;
};

Pool::Layout Pool::layout(size_t size) {
    static_assert(sizeof(Page) == 16, "descriptors cost 16 bytes a page");
    const size_t header = align_up(sizeof(Pool), kHeaderAlign);
    Layout l;
    if (size < header) return l;
    size_t n = (size - header) / (kPageSize + sizeof(Page));
    if (n > kNone - 1) n = kNone - 1;  // page indices are 32-bit; the rest goes unused
    // Aligning page 0 to kPageSize may cost one page.
    while (n > 0 && align_up(header + n * sizeof(Page), kPageSize) + n * kPageSize > size) --n;
    l.npages = static_cast<uint32_t>(n);
    l.first_page = align_up(header + n * sizeof(Page), kPageSize);
    return l;
}

size_t Pool::region_for(size_t pages) {
    return align_up(align_up(sizeof(Pool), kHeaderAlign) + pages * sizeof(Page), kPageSize) + pages * kPageSize;
}

size_t Pool::pages_for(size_t n) { return n <= kMaxSmall ? 1 : (n + kPageSize - 1) / kPageSize; }

Pool::Pool(size_t size, const Layout& l) : size_(size), first_page_(l.first_page), npages_(l.npages) {}

Pool* Pool::create(void* addr, size_t size) {
    GH_CHECK(reinterpret_cast<uintptr_t>(addr) % kMinBlock == 0);
    Layout l = layout(size);
    if (l.npages == 0) return nullptr;
    // Nobody uses the region (see the header): constructing the lock over
    // whatever was there is safe.
    Pool* p = ::new (addr) Pool(size, l);
    p->clear();
    p->magic_ = kMagic;
    return p;
}

Pool* Pool::attach(void* addr, size_t size) {
    static_assert(offsetof(Pool, magic_) == 0, "the magic is the region's first 8 bytes");
    uint64_t magic = 0;
    if (size >= sizeof magic) std::memcpy(&magic, addr, sizeof magic);
    if (magic == kMagic) {
        auto* p = static_cast<Pool*>(addr);
        Layout l = layout(size);
        if (p->size_ == size && p->npages_ == l.npages && p->first_page_ == l.first_page) return p;
    }
    return create(addr, size);
}

Pool::Page* Pool::pages() const {
    const size_t header = align_up(sizeof(Pool), kHeaderAlign);
    return reinterpret_cast<Page*>(const_cast<char*>(reinterpret_cast<const char*>(this)) + header);
}

char* Pool::page_addr(uint32_t i) const {
    return const_cast<char*>(reinterpret_cast<const char*>(this)) + first_page_ + size_t{i} * kPageSize;
}

// Every page free in one run; no block, no root. Cumulative counters stay.
void Pool::clear() {
    Page* pg = pages();
    for (uint32_t i = 0; i < npages_; ++i) pg[i] = Page{};
    free_runs_ = kNone;
    for (uint32_t& h : partial_) h = kNone;
    free_pages_ = 0;
    root_ = 0;
    for (Counters& c : small_) c.pages = c.used = 0;
    large_.pages = large_.used = 0;
    add_free_run(0, npages_);
}

void Pool::reset() {
    GH_ASSERT(mutex_.held());
    clear();
    ++resets_;
}

void Pool::push(uint32_t& head, uint32_t i) {
    Page* pg = pages();
    pg[i].prev = kNone;
    pg[i].next = head;
    if (head != kNone) pg[head].prev = i;
    head = i;
}

void Pool::unlink(uint32_t& head, uint32_t i) {
    Page* pg = pages();
    if (pg[i].prev != kNone)
        pg[pg[i].prev].next = pg[i].next;
    else
        head = pg[i].next;
    if (pg[i].next != kNone) pg[pg[i].next].prev = pg[i].prev;
    pg[i].next = pg[i].prev = kNone;
}

// Marks [first, first + n) free and lists it; its inner pages are
// already kFreeInner.
void Pool::add_free_run(uint32_t first, uint32_t n) {
    Page* pg = pages();
    pg[first].kind = Page::kFree;
    pg[first].word = n;
    if (n > 1) {
        pg[first + n - 1].kind = Page::kFreeTail;
        pg[first + n - 1].word = first;
    }
    push(free_runs_, first);
    free_pages_ += n;
}

// The first free run of at least n pages, cut to n: its first page, or
// kNone. The rest of the run stays free.
uint32_t Pool::take_run(uint32_t n) {
    Page* pg = pages();
    for (uint32_t i = free_runs_; i != kNone; i = pg[i].next) {
        const uint32_t len = pg[i].word;
        if (len < n) continue;
        unlink(free_runs_, i);
        free_pages_ -= len;
        pg[i].kind = Page::kFreeInner;
        if (len > n) add_free_run(i + n, len - n);
        return i;
    }
    return kNone;
}

// Frees the run [first, first + n), merged with a free run on either side.
void Pool::give_run(uint32_t first, uint32_t n) {
    Page* pg = pages();
    for (uint32_t i = first; i < first + n; ++i) pg[i] = Page{};
    const uint32_t after = first + n;
    if (after < npages_ && pg[after].kind == Page::kFree) {
        const uint32_t len = pg[after].word;
        unlink(free_runs_, after);
        free_pages_ -= len;
        pg[after].kind = Page::kFreeInner;
        n += len;  // its tail, if any, is re-marked below
    }
    if (first > 0) {
        Page& before = pg[first - 1];
        uint32_t head = kNone;
        if (before.kind == Page::kFree) head = first - 1;
        if (before.kind == Page::kFreeTail) head = before.word;
        if (head != kNone) {
            const uint32_t len = pg[head].word;
            unlink(free_runs_, head);
            free_pages_ -= len;
            before.kind = Page::kFreeInner;
            pg[head].kind = Page::kFreeInner;
            first = head;
            n += len;
        }
    }
    add_free_run(first, n);
}

void* Pool::alloc(size_t n) {
    GH_ASSERT(mutex_.held());
    if (n == 0) n = 1;
    return n <= kMaxSmall ? alloc_small(class_of(n)) : alloc_large(n);
}

void* Pool::alloc_small(size_t cls) {
    Page* pg = pages();
    Counters& c = small_[cls];
    uint32_t i = partial_[cls];
    if (i == kNone) {
        i = take_run(1);
        if (i == kNone) {
            ++c.fails;
            return nullptr;
        }
        pg[i].kind = Page::kSmall;
        pg[i].cls = static_cast<uint8_t>(cls);
        pg[i].word = 0;
        push(partial_[cls], i);
        ++c.pages;
    }
    Page& p = pg[i];
    const int slot = std::countr_one(p.word);
    p.word |= uint32_t{1} << slot;
    if (p.word == full_mask(cls)) unlink(partial_[cls], i);
    ++c.used;
    ++c.allocs;
    return page_addr(i) + static_cast<size_t>(slot) * block_size(cls);
}

void* Pool::alloc_large(size_t n) {
    const size_t want = (n + kPageSize - 1) / kPageSize;
    const uint32_t i = want <= npages_ ? take_run(static_cast<uint32_t>(want)) : kNone;
    if (i == kNone) {
        ++large_.fails;
        return nullptr;
    }
    Page* pg = pages();
    pg[i].kind = Page::kLarge;
    pg[i].word = static_cast<uint32_t>(want);
    for (uint32_t j = i + 1; j < i + want; ++j) pg[j].kind = Page::kLargeInner;
    large_.pages += static_cast<uint32_t>(want);
    ++large_.used;
    ++large_.allocs;
    return page_addr(i);
}

void Pool::free(void* p) {
    GH_ASSERT(mutex_.held());
    if (!p) return;
    const char* c = static_cast<const char*>(p);
    GH_CHECK(c >= page_addr(0) && c < page_addr(npages_));
    const size_t off = static_cast<size_t>(c - page_addr(0));
    const auto i = static_cast<uint32_t>(off / kPageSize);
    const size_t in_page = off % kPageSize;
    Page& pg = pages()[i];
    if (pg.kind == Page::kLarge) {
        GH_CHECK(in_page == 0);
        const uint32_t n = pg.word;
        large_.pages -= n;
        --large_.used;
        give_run(i, n);
        return;
    }
    // Anything else than a block in use: a pointer into a run, a page
    // that is free, a block freed twice.
    GH_CHECK(pg.kind == Page::kSmall);
    const size_t cls = pg.cls;
    GH_CHECK(in_page % block_size(cls) == 0);
    const uint32_t bit = uint32_t{1} << (in_page / block_size(cls));
    GH_CHECK(pg.word & bit);
    const bool was_full = pg.word == full_mask(cls);
    pg.word &= ~bit;
    --small_[cls].used;
    if (pg.word == 0) {
        // Every class has two blocks a page at least: an emptied page was
        // not full, so it is in the partial list.
        unlink(partial_[cls], i);
        --small_[cls].pages;
        give_run(i, 1);
    } else if (was_full) {
        push(partial_[cls], i);
    }
}

void Pool::set_root(void* p) {
    GH_ASSERT(mutex_.held());
    GH_CHECK(!p || (static_cast<char*>(p) >= page_addr(0) && static_cast<char*>(p) < page_addr(npages_)));
    root_ = ref(p);
}

Pool::Stats Pool::stats() const {
    GH_ASSERT(mutex_.held());
    Stats s;
    s.pages = npages_;
    s.free_pages = free_pages_;
    for (size_t i = 0; i < kClasses; ++i) {
        const Counters& c = small_[i];
        s.small[i] = {block_size(i), c.pages, c.used, c.pages * slots_of(i), c.allocs, c.fails};
        s.fails += c.fails;
    }
    s.large = {0, large_.pages, large_.used, large_.used, large_.allocs, large_.fails};
    s.fails += large_.fails;
    s.resets = resets_;
    return s;
}

}  // namespace gatehouse::shm
