// Giving freed heap memory back to the kernel.
//
// A worker's allocator keeps the pages a burst of requests freed, to
// serve the next burst without asking the kernel again: jemalloc returns
// them only as it decays them, which it does while it allocates, so a
// worker that goes quiet after a burst keeps them however long it stays
// quiet (10,000 connections opened 256 at a time and then idle left ~9 MB
// of such pages in a worker, 900 bytes per connection). The worker calls
// release_free_heap() once each time it has been idle for a moment
// (event::Loop::set_idle), so what an idle worker holds is what its idle
// connections need.
#pragma once

#include <chrono>

namespace gatehouse {

// How long a worker waits with nothing to do before it releases.
inline constexpr std::chrono::milliseconds kHeapReleaseIdle{200};

// Returns the allocator's unused pages to the kernel (and, first, the
// cached blocks of request arenas, core/arena.h, and the cached slabs,
// core/buf.h): jemalloc's thread cache is flushed and every arena
// purged; glibc's heap is trimmed. Not under AddressSanitizer, whose
// allocator keeps freed memory on purpose.
// Costs a few madvise() calls per MB released.
void release_free_heap();

}  // namespace gatehouse
