#include "core/buf.h"

#include <cstdlib>

#include "objs/gh_config.h"

namespace gatehouse {

namespace {

// Per thread, as arena blocks are (core/arena.cc): a worker's loop is one
// thread. A free slab's first bytes link it to the next of its size.
struct FreeSlab {
    FreeSlab* next;
};

struct Cache {
    size_t cap[slab_cache::kSizes] = {};
    FreeSlab* head[slab_cache::kSizes] = {};
    size_t bytes = 0;

    void clear() {
        for (size_t i = 0; i < slab_cache::kSizes; ++i) {
            while (FreeSlab* f = head[i]) {
                head[i] = f->next;
                std::free(f);
            }
            cap[i] = 0;
        }
        bytes = 0;
    }
    ~Cache() { clear(); }
};
thread_local Cache cache;

}  // namespace

void* slab_cache::take(size_t cap) {
    for (size_t i = 0; i < kSizes; ++i) {
        if (cache.cap[i] != cap || !cache.head[i]) continue;
        FreeSlab* f = cache.head[i];
        cache.head[i] = f->next;
        cache.bytes -= cap;
        return f;
    }
    return nullptr;
}

bool slab_cache::give(void* p, size_t cap) {
#if GH_ASAN
    (void)p;
    (void)cap;
    return false;
#else
    if (cache.bytes + cap > kMaxBytes) return false;
    // Its size's list, or a free one: a size whose list ran empty gives
    // its place to the next size that comes.
    size_t slot = kSizes;
    for (size_t i = 0; i < kSizes; ++i) {
        if (cache.cap[i] == cap) {
            slot = i;
            break;
        }
        if (slot == kSizes && !cache.head[i]) slot = i;
    }
    if (slot == kSizes) return false;
    cache.cap[slot] = cap;
    auto* f = static_cast<FreeSlab*>(p);
    f->next = cache.head[slot];
    cache.head[slot] = f;
    cache.bytes += cap;
    return true;
#endif
}

size_t slab_cache::kept_bytes() { return cache.bytes; }

void release_slabs() { cache.clear(); }

}  // namespace gatehouse
