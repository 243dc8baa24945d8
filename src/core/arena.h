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

class Arena {
public:
    explicit Arena(size_t initial = 4096) : res_(initial) {}
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
    std::pmr::monotonic_buffer_resource res_;
    Cleanup* cleanups_ = nullptr;
};

}  // namespace gatehouse
