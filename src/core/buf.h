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

class Slab {
public:
    // A new slab of `cap` bytes with one reference.
    static Slab* make(size_t cap) {
        void* p = std::malloc(sizeof(Slab) + cap);
        GH_CHECK(p != nullptr);  // out of memory aborts (STYLE.md section 4)
        return ::new (p) Slab(cap);
    }
    void ref() { ++refs_; }
    void unref() {
        if (--refs_ == 0) {
            this->~Slab();
            std::free(this);
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

    static Buf memory(std::string_view s) {
        Buf b;
        b.pos = s.data();
        b.last = s.data() + s.size();
        return b;
    }
    static Buf file(int fd, off_t from, off_t to) {
        Buf b;
        b.fd = fd;
        b.file_pos = from;
        b.file_last = to;
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

// A list of Bufs, usually allocated in a request arena.
class Chain {
public:
    explicit Chain(std::pmr::memory_resource* r = std::pmr::get_default_resource()) : bufs_(r) {}
    void push(Buf b) { bufs_.push_back(std::move(b)); }
    void reserve(size_t n) { bufs_.reserve(n); }
    // Moves other's Bufs to the end of this chain; other is left empty.
    // Into an empty chain of the same arena it is a swap of the vectors:
    // a filter passing its input through costs no copy and no allocation,
    // and the storage goes back and forth between the stages.
    void append(Chain& other) {
        if (bufs_.empty() && bufs_.get_allocator() == other.bufs_.get_allocator()) {
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
    auto begin() { return bufs_.begin(); }
    auto end() { return bufs_.end(); }
    auto begin() const { return bufs_.begin(); }
    auto end() const { return bufs_.end(); }
    void erase_front(size_t n) { bufs_.erase(bufs_.begin(), bufs_.begin() + static_cast<ptrdiff_t>(n)); }
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
    std::pmr::vector<Buf> bufs_;
};

}  // namespace gatehouse
