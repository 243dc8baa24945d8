// Bytes in flight: Slab, Buf and Chain [nginx buf/chain].
//
// A Slab is a ref-counted block of memory (a read buffer, a body buffer);
// a Buf is a window over a Slab, over memory that outlives the Buf (the
// config, the request arena), or over a range of an open file. Bufs are
// moved along a Chain from filter to filter; only a filter that changes
// bytes copies them. The `last` flag marks the end of a body, `flush` asks
// the writer to send what it holds now.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <memory_resource>
#include <string_view>
#include <utility>
#include <vector>

#include "core/assert.h"

namespace gatehouse {

// Freed slabs of a page or more, kept by the thread for the next
// request that wants one of the same size. Body buffers come and go
// with every response (five 16 KiB ones per proxied 64 KiB answer), and
// jemalloc hands such freed extents back to the kernel as it decays
// them: under a steady load of 64 KiB answers it madvise()d ~8 MB away
// 24 times a second, so that each request faulted its buffers in again
// (0.9 to 5.3 page faults per request against nginx's 0.01, strace and
// /proc/PID/stat).
//
// At most kMaxBytes are kept, of at most kSizes different capacities;
// release_slabs() frees them all, which the worker does when idle with
// the rest of its free heap (core/heap.h). Under AddressSanitizer every
// slab is freed, so that a use after free is still caught.
namespace slab_cache {
inline constexpr size_t kMinCap = 4096;
inline constexpr size_t kMaxBytes = 4 * 1024 * 1024;
inline constexpr size_t kSizes = 4;
// Memory for a slab of exactly `cap` bytes, or null.
void* take(size_t cap);
// Keeps the memory of a dead slab of `cap` bytes; false: not kept.
bool give(void* p, size_t cap);
size_t kept_bytes();
}  // namespace slab_cache
void release_slabs();

class Slab {
public:
    // A new slab of `cap` bytes with one reference.
    static Slab* make(size_t cap) {
        void* p = cap >= slab_cache::kMinCap ? slab_cache::take(cap) : nullptr;
        if (!p) p = std::malloc(sizeof(Slab) + cap);
        GH_CHECK(p != nullptr);  // out of memory aborts (STYLE.md section 4)
        return ::new (p) Slab(cap);
    }
    void ref() { ++refs_; }
    void unref() {
        if (--refs_ == 0) {
            const size_t cap = cap_;
            this->~Slab();
            if (cap < slab_cache::kMinCap || !slab_cache::give(this, cap)) std::free(this);
        }
    }
    char* data() { return reinterpret_cast<char*>(this + 1); }
    size_t capacity() const { return cap_; }
    uint32_t refs() const { return refs_; }

private:
    explicit Slab(size_t cap) : cap_(cap) {}
    size_t cap_;
    uint32_t refs_ = 1;
};

// A counted reference to a Slab.
class SlabRef {
public:
    SlabRef() = default;
    // Adopts one reference (as returned by Slab::make).
    static SlabRef adopt(Slab* s) {
        SlabRef r;
        r.s_ = s;
        return r;
    }
    SlabRef(const SlabRef& o) : s_(o.s_) {
        if (s_) s_->ref();
    }
    SlabRef(SlabRef&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    SlabRef& operator=(SlabRef o) noexcept {
        std::swap(s_, o.s_);
        return *this;
    }
    ~SlabRef() {
        if (s_) s_->unref();
    }
    Slab* get() const { return s_; }
    explicit operator bool() const { return s_ != nullptr; }

private:
    Slab* s_ = nullptr;
};

struct Buf {
    // Memory: [pos, last). Kept alive by `slab` when set; otherwise the
    // memory belongs to something that outlives the response (the config
    // generation, the request arena).
    const char* pos = nullptr;
    const char* last = nullptr;
    SlabRef slab;
    // File range [file_pos, file_last) of `fd`, not owned (the request's
    // cleanup closes it). fd < 0: memory buffer.
    int fd = -1;
    off_t file_pos = 0;
    off_t file_last = 0;
    bool last_buf = false;  // the end of the body
    bool flush = false;
    // A pipe piece (event/pipe.h): the next file_last - file_pos bytes
    // waiting in the pipe whose read end is `fd`. It counts as a file
    // range for everything but reading: only the writer takes it, with
    // splice() or read(), never at an offset.
    bool pipe = false;

    static Buf memory(std::string_view s) {
        Buf b;
        b.pos = s.data();
        b.last = s.data() + s.size();
        return b;
    }
    // The first `len` bytes of `s`, which the Buf keeps alive.
    static Buf in_slab(SlabRef s, size_t len) {
        Buf b;
        b.pos = s.get()->data();
        b.last = b.pos + len;
        b.slab = std::move(s);
        return b;
    }
    static Buf file(int fd, off_t from, off_t to) {
        Buf b;
        b.fd = fd;
        b.file_pos = from;
        b.file_last = to;
        return b;
    }
    // The bytes of the next `n` that a pipe holds (see `pipe`).
    static Buf pipe_piece(int fd, size_t n) {
        Buf b = file(fd, 0, static_cast<off_t>(n));
        b.pipe = true;
        return b;
    }
    bool in_file() const { return fd >= 0; }
    size_t size() const {
        return in_file() ? static_cast<size_t>(file_last - file_pos)
                         : static_cast<size_t>(last - pos);
    }
    bool empty() const { return size() == 0; }
    std::string_view view() const { return {pos, static_cast<size_t>(last - pos)}; }
    // The window narrowed, memory or file alike (n <= size()): without
    // its first n bytes; to its first n bytes.
    void consume(size_t n) {
        if (in_file()) file_pos += static_cast<off_t>(n);
        else pos += n;
    }
    void truncate(size_t n) {
        if (in_file()) file_last = file_pos + static_cast<off_t>(n);
        else last = pos + n;
    }
};

// The storage under Chain and event::ChainWriter: a vector of Bufs with
// room for kInline of them in place, then memory from a resource (a
// request arena). Most chains on the request path carry one or two Bufs
// (a head, a body piece, the end), and each fresh std::pmr::vector paid
// an arena allocation and its growth code on its first push: six per
// proxied request, 800 instructions of its 23,000 (callgrind).
class BufVec {
public:
    static constexpr size_t kInline = 2;

    explicit BufVec(std::pmr::memory_resource* r) : mem_(r) {}
    BufVec(const BufVec&) = delete;
    BufVec& operator=(const BufVec&) = delete;
    ~BufVec() {
        clear();
        release();
    }

    std::pmr::memory_resource* resource() const { return mem_; }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    Buf* begin() { return p_; }
    Buf* end() { return p_ + n_; }
    const Buf* begin() const { return p_; }
    const Buf* end() const { return p_ + n_; }
    Buf& operator[](size_t i) { return p_[i]; }
    const Buf& operator[](size_t i) const { return p_[i]; }
    Buf& front() { return p_[0]; }
    Buf& back() { return p_[n_ - 1]; }
    const Buf& back() const { return p_[n_ - 1]; }

    void reserve(size_t n) {
        if (n > cap_) grow(n);
    }
    void push_back(Buf&& b) {
        if (n_ == cap_) grow(cap_ * 2);
        ::new (p_ + n_) Buf(std::move(b));
        ++n_;
    }
    // Before `at` (begin() <= at <= end()).
    void insert(Buf* at, Buf&& b) {
        size_t i = static_cast<size_t>(at - p_);
        push_back(std::move(b));
        for (size_t k = n_ - 1; k > i; --k) std::swap(p_[k], p_[k - 1]);
    }
    // Removes the first n.
    void erase_front(size_t n) {
        for (size_t k = n; k < n_; ++k) p_[k - n] = std::move(p_[k]);
        shrink_to(n_ - n);
    }
    void clear() { shrink_to(0); }
    // Exchanges contents with o (same resource): the buffers themselves
    // when both are out of place, else the Bufs one by one.
    void swap(BufVec& o) {
        GH_ASSERT(mem_ == o.mem_);
        if (p_ != inline_ptr() && o.p_ != o.inline_ptr()) {
            std::swap(p_, o.p_);
            std::swap(n_, o.n_);
            std::swap(cap_, o.cap_);
            return;
        }
        BufVec* a = this;
        BufVec* b = &o;
        if (a->n_ < b->n_) std::swap(a, b);  // a: the longer
        size_t common = b->n_;
        for (size_t k = 0; k < common; ++k) std::swap(a->p_[k], b->p_[k]);
        for (size_t k = common; k < a->n_; ++k) b->push_back(std::move(a->p_[k]));
        a->shrink_to(common);
    }

private:
    Buf* inline_ptr() { return reinterpret_cast<Buf*>(inline_); }
    void shrink_to(size_t n) {
        while (n_ > n) p_[--n_].~Buf();
    }
    void grow(size_t want) {
        size_t cap = want < 4 ? 4 : want;
        Buf* q = static_cast<Buf*>(mem_->allocate(cap * sizeof(Buf), alignof(Buf)));
        for (size_t k = 0; k < n_; ++k) {
            ::new (q + k) Buf(std::move(p_[k]));
            p_[k].~Buf();
        }
        release();
        p_ = q;
        cap_ = cap;
    }
    void release() {
        if (p_ != inline_ptr()) mem_->deallocate(p_, cap_ * sizeof(Buf), alignof(Buf));
        p_ = inline_ptr();
        cap_ = kInline;
    }

    std::pmr::memory_resource* mem_;
    Buf* p_ = inline_ptr();
    size_t n_ = 0;
    size_t cap_ = kInline;
    alignas(Buf) unsigned char inline_[kInline * sizeof(Buf)];
};

// A list of Bufs, usually allocated in a request arena.
class Chain {
public:
    explicit Chain(std::pmr::memory_resource* r = std::pmr::get_default_resource()) : bufs_(r) {}
    void push(Buf b) { bufs_.push_back(std::move(b)); }
    void reserve(size_t n) { bufs_.reserve(n); }
    // Moves other's Bufs to the end of this chain; other is left empty.
    // Into an empty chain of the same arena it is a swap: a filter
    // passing its input through costs no allocation, and the storage
    // goes back and forth between the stages.
    void append(Chain& other) {
        if (bufs_.empty() && bufs_.resource() == other.bufs_.resource()) {
            bufs_.swap(other.bufs_);
            return;
        }
        for (auto& b : other.bufs_) bufs_.push_back(std::move(b));
        other.bufs_.clear();
    }
    bool empty() const { return bufs_.empty(); }
    size_t size() const { return bufs_.size(); }
    Buf& operator[](size_t i) { return bufs_[i]; }
    Buf& front() { return bufs_.front(); }
    Buf& back() { return bufs_.back(); }
    Buf* begin() { return bufs_.begin(); }
    Buf* end() { return bufs_.end(); }
    const Buf* begin() const { return bufs_.begin(); }
    const Buf* end() const { return bufs_.end(); }
    void erase_front(size_t n) { bufs_.erase_front(n); }
    void clear() { bufs_.clear(); }
    // The body ends in this chain.
    bool last() const { return !bufs_.empty() && bufs_.back().last_buf; }
    // Drops the data and keeps the end: what is left is one empty Buf
    // with last_buf when the chain ended the body, else nothing (a body
    // that must not go out, but whose end must).
    void drop_data() {
        bool end = last();
        bufs_.clear();
        if (end) {
            Buf e;
            e.last_buf = true;
            bufs_.push_back(std::move(e));
        }
    }
    uint64_t bytes() const {
        uint64_t n = 0;
        for (const auto& b : bufs_) n += b.size();
        return n;
    }

private:
    BufVec bufs_;
};

}  // namespace gatehouse
