#include "core/arena.h"

#include <cstdlib>

#include "core/assert.h"
#include "objs/gh_config.h"

namespace gatehouse {

namespace {

// Per thread: a worker's loop is one thread; any other thread that makes
// requests' arenas keeps its own.
struct Cache {
    void* free[arena_block::kMaxCached];
    size_t n = 0;
    ~Cache() {
        while (n) std::free(free[--n]);
    }
};
thread_local Cache cache;

}  // namespace

void* arena_block::take() {
#if !GH_ASAN
    if (cache.n) return cache.free[--cache.n];
#endif
    void* p = std::malloc(kSize);
    GH_CHECK(p != nullptr);  // out of memory aborts (STYLE.md section 4)
    return p;
}

void arena_block::give(void* p) {
#if !GH_ASAN
    if (cache.n < kMaxCached) {
        cache.free[cache.n++] = p;
        return;
    }
#endif
    std::free(p);
}

Arena::Block::Block(size_t first) : size(first), cached(first <= arena_block::kSize) {
    if (cached) {
        p = arena_block::take();
        size = arena_block::kSize;
    } else {
        p = std::malloc(first);
        GH_CHECK(p != nullptr);
    }
}

Arena::Block::~Block() {
    if (cached)
        arena_block::give(p);
    else
        std::free(p);
}

void release_arena_blocks() {
    while (cache.n) std::free(cache.free[--cache.n]);
}

}  // namespace gatehouse
