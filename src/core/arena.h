// Arena: bump allocation whose lifetime is an owner's (a configuration
// generation, a request). Everything allocated is freed at once when the
// arena dies; objects with non-trivial destructors made with make<T>() are
// destroyed then, in reverse order of creation.
#pragma once

#include <memory_resource>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

namespace gatehouse {

// The first block of a request's arena, kept by the thread for the next
// request instead of going back to the allocator: a request whose
// allocations fit in it (a proxied one with its upstream's state, a
// static file) costs no malloc and no free for its arena. Before, a
// proxied request took two aligned allocations and frees, about 650 of
// its 21,000 instructions (callgrind).
//
// At most kMaxCached free blocks are kept (a burst of concurrent
// requests frees the rest); release_arena_blocks() gives them all back,
// which the worker does when idle with the rest of its free heap. 128
// blocks (2 MiB): with 64 clients, as many proxied requests wait on their
// origins at once, and a cache of 32 made up to half of them allocate
// and free their 16 KiB through jemalloc's large-size path (~1,000
// instructions and an arena lock each); callgrind saw 18,700 to 20,000
// instructions per request from run to run, as many requests overlapped.
// Under AddressSanitizer every block is a fresh allocation, so that a
// use after a request ended is still caught.
namespace arena_block {
inline constexpr size_t kSize = 16384;
inline constexpr size_t kMaxCached = 128;
void* take();
void give(void* p);
}  // namespace arena_block
void release_arena_blocks();

class Arena {
public:
    explicit Arena(size_t initial = 4096) : res_(initial) {}
    // A request's arena, whose first block holds at least `first` bytes:
    // a cached block when it is enough, the rest (rarely) from the
    // allocator.
    struct RequestBlock {};
    Arena(RequestBlock, size_t first) : block_(first), res_(block_.p, block_.size, std::pmr::new_delete_resource()) {}
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    ~Arena() {
        for (Cleanup* c = cleanups_; c; c = c->next) c->fn(c->obj);
    }

    std::pmr::memory_resource* resource() { return &res_; }

    void* alloc(size_t n, size_t align = alignof(std::max_align_t)) {
        return res_.allocate(n, align);
    }

    template <typename T, typename... A>
    T* make(A&&... a) {
        void* p = alloc(sizeof(T), alignof(T));
        T* t = ::new (p) T(std::forward<A>(a)...);
        if constexpr (!std::is_trivially_destructible_v<T>) {
            auto* c = static_cast<Cleanup*>(alloc(sizeof(Cleanup), alignof(Cleanup)));
            c->fn = [](void* o) { static_cast<T*>(o)->~T(); };
            c->obj = t;
            c->next = cleanups_;
            cleanups_ = c;
        }
        return t;
    }

    // A copy of s that lives as long as the arena.
    std::string_view dup(std::string_view s) {
        if (s.empty()) return {};
        char* p = static_cast<char*>(alloc(s.size(), 1));
        std::char_traits<char>::copy(p, s.data(), s.size());
        return {p, s.size()};
    }

private:
    struct Cleanup {
        void (*fn)(void*);
        void* obj;
        Cleanup* next;
    };
    // Goes back to the cache after res_ (declared before it, so destroyed
    // after it) and after the cleanups, which may use its memory.
    struct Block {
        void* p = nullptr;
        size_t size = 0;
        bool cached = false;
        Block() = default;
        explicit Block(size_t first);
        Block(const Block&) = delete;
        Block& operator=(const Block&) = delete;
        ~Block();
    };
    Block block_;
    std::pmr::monotonic_buffer_resource res_;
    Cleanup* cleanups_ = nullptr;
};

}  // namespace gatehouse
