#include "core/heap.h"

#include "core/arena.h"
#include "core/buf.h"
#include "objs/gh_config.h"

#if GH_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#elif !GH_ASAN
#include <malloc.h>
#endif

namespace gatehouse {

void release_free_heap() {
    // First: these go back to the allocator, then to the kernel.
    release_arena_blocks();
    release_slabs();
#if GH_HAVE_JEMALLOC
    static_assert(MALLCTL_ARENAS_ALL == 4096, "the name below spells MALLCTL_ARENAS_ALL");
    // The thread cache first: what it holds is not free to the arenas.
    mallctl("thread.tcache.flush", nullptr, nullptr, nullptr, 0);
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0);
#elif !GH_ASAN
    malloc_trim(0);
#endif
}

}  // namespace gatehouse
