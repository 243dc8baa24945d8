#include "core/ip_ranges.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace gatehouse {

namespace {

constexpr Uint128 kV6Max = ~Uint128(0);
// Above this many IPv4 intervals, the /16 index (256 KiB) pays for itself.
constexpr size_t kIndexFrom = 4096;

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

Uint128 v6_number(const uint8_t* b) {
    Uint128 n = 0;
    for (int i = 0; i < 16; ++i) n = (n << 8) | b[i];
    return n;
}

uint32_t v4_number(const uint8_t* b) {
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

// Appends intervals in increasing order of start: a second interval at
// the same start replaces the first, and one with the value of the one
// before it is no new interval.
template <typename S>
struct Layout {
    std::vector<S>& start;
    std::vector<uint32_t>& value;

    void emit(S s, uint32_t v) {
        if (!start.empty() && start.back() == s) {
            value.back() = v;
            if (value.size() >= 2 && value[value.size() - 2] == v) {
                start.pop_back();
                value.pop_back();
            }
            return;
        }
        if (!value.empty() && value.back() == v) return;
        start.push_back(s);
        value.push_back(v);
    }
};

template <typename K>
struct Block {
    K first, last;  // inclusive
    uint32_t value;
};

// Lays out CIDR blocks: blocks are nested or disjoint, never partly
// overlapping, so sorted by first address and, at the same one, outer
// before inner, a stack of the blocks around the current address gives
// the longest prefix holding it. K is wide enough for "last + 1" of any
// block but the one ending at `max`; S stores the starts.
template <typename K, typename S>
void lay_out_blocks(std::vector<Block<K>>& blocks, K max, uint32_t none, Layout<S> out) {
    std::sort(blocks.begin(), blocks.end(), [](const Block<K>& a, const Block<K>& b) {
        return a.first != b.first ? a.first < b.first : a.last > b.last;
    });
    std::vector<Block<K>> open;
    open.push_back({0, max, none});
    out.emit(0, none);
    for (const Block<K>& b : blocks) {
        // The blocks that end before b: the address after each goes back
        // to the block around it.
        while (open.back().last < b.first) {
            K after = open.back().last + 1;
            open.pop_back();
            out.emit(static_cast<S>(after), open.back().value);
        }
        out.emit(static_cast<S>(b.first), b.value);
        open.push_back(b);
    }
    while (open.size() > 1) {
        Block<K> b = open.back();
        open.pop_back();
        if (b.last != max) out.emit(static_cast<S>(b.last + 1), open.back().value);
    }
}

}  // namespace

IpTable::IpTable() : v4_start_{0}, v4_value_{0}, v6_start_{0}, v6_value_{0} {}

void IpTable::index_v4() {
    v4_index_.clear();
    if (v4_start_.size() < kIndexFrom) return;
    v4_index_.resize(0x10000);
    size_t i = 0;
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const uint32_t a = h << 16;
        while (i + 1 < v4_start_.size() && v4_start_[i + 1] <= a) ++i;
        v4_index_[h] = static_cast<uint32_t>(i);
    }
}

uint32_t IpTable::find_v4(uint32_t addr) const {
    size_t lo = 0, hi = v4_start_.size();
    if (!v4_index_.empty()) {
        const uint32_t h = addr >> 16;
        lo = v4_index_[h];
        // The intervals starting inside this /16 come before the one
        // holding the next /16's first address.
        if (h != 0xffff) hi = v4_index_[h + 1] + 1;
    }
    auto it = std::upper_bound(v4_start_.begin() + static_cast<ptrdiff_t>(lo),
                               v4_start_.begin() + static_cast<ptrdiff_t>(hi), addr);
    return v4_value_[static_cast<size_t>(it - v4_start_.begin()) - 1];
}

uint32_t IpTable::find_v6(const uint8_t* bytes) const {
    auto it = std::upper_bound(v6_start_.begin(), v6_start_.end(), v6_number(bytes));
    return v6_value_[static_cast<size_t>(it - v6_start_.begin()) - 1];
}

uint32_t IpTable::find(const IpAddr& a) const {
    return a.family == AF_INET6 ? find_v6(a.bytes) : find_v4(v4_number(a.bytes));
}

size_t IpTable::memory() const {
    return v4_start_.capacity() * 4 + v4_value_.capacity() * 4 + v4_index_.capacity() * 4 +
           v6_start_.capacity() * 16 + v6_value_.capacity() * 4;
}

// ---- CIDR -------------------------------------------------------------------

size_t CidrTableBuilder::hash_of(uint64_t k) { return mix(k); }
size_t CidrTableBuilder::hash_of(const V6Key& k) {
    return mix(k.hi ^ mix(k.lo ^ k.prefix));
}

CidrTableBuilder::V6Key CidrTableBuilder::V6Key::of(const Cidr& c) {
    const Uint128 a = v6_number(c.addr.bytes);
    return V6Key{static_cast<uint64_t>(a >> 64), static_cast<uint64_t>(a), c.prefix};
}

template <typename K>
typename CidrTableBuilder::FlatMap<K>::Slot* CidrTableBuilder::FlatMap<K>::find(const K& k) {
    if (slots_.empty()) return nullptr;
    const size_t mask = slots_.size() - 1;
    for (size_t i = hash_of(k) & mask;; i = (i + 1) & mask) {
        Slot& s = slots_[i];
        if (s.state == kEmpty) return nullptr;
        if (s.state == kFull && s.key == k) return &s;
    }
}

template <typename K>
void CidrTableBuilder::FlatMap<K>::grow() {
    std::vector<Slot> old = std::move(slots_);
    // At most half full, counting tombstones; twice the live size at least.
    size_t n = 64;
    while (n < size_ * 4) n *= 2;
    slots_.assign(n, Slot{});
    used_ = size_;
    const size_t mask = n - 1;
    for (const Slot& s : old)
        if (s.state == kFull) {
            size_t i = hash_of(s.key) & mask;
            while (slots_[i].state != kEmpty) i = (i + 1) & mask;
            slots_[i] = s;
        }
}

template <typename K>
std::pair<uint32_t*, bool> CidrTableBuilder::FlatMap<K>::try_emplace(const K& k, uint32_t v) {
    if (Slot* s = find(k)) return {&s->value, false};
    if ((used_ + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    size_t i = hash_of(k) & mask;
    while (slots_[i].state == kFull) i = (i + 1) & mask;
    if (slots_[i].state == kEmpty) ++used_;
    slots_[i] = Slot{k, v, kFull};
    ++size_;
    return {&slots_[i].value, true};
}

template <typename K>
bool CidrTableBuilder::FlatMap<K>::erase(const K& k) {
    Slot* s = find(k);
    if (!s) return false;
    s->state = kDeleted;
    --size_;
    return true;
}

std::optional<uint32_t> CidrTableBuilder::add(const Cidr& c, uint32_t value) {
    auto [slot, added] = c.addr.family == AF_INET6
                             ? v6_.try_emplace(V6Key::of(c), value)
                             : v4_.try_emplace(uint64_t{v4_number(c.addr.bytes)} << 8 | c.prefix, value);
    if (added) return std::nullopt;
    return std::exchange(*slot, value);
}

bool CidrTableBuilder::remove(const Cidr& c) {
    if (c.addr.family == AF_INET6) return v6_.erase(V6Key::of(c));
    return v4_.erase(uint64_t{v4_number(c.addr.bytes)} << 8 | c.prefix);
}

IpTable CidrTableBuilder::build(uint32_t none) {
    IpTable t;
    {
        std::vector<Block<uint64_t>> blocks;
        blocks.reserve(v4_.size());
        v4_.for_each([&](uint64_t key, uint32_t value) {
            const uint64_t first = key >> 8;
            const unsigned host_bits = 32 - static_cast<unsigned>(key & 0xff);
            blocks.push_back({first, first | ((uint64_t{1} << host_bits) - 1), value});
        });
        v4_ = {};
        t.v4_start_.clear();
        t.v4_value_.clear();
        lay_out_blocks<uint64_t, uint32_t>(blocks, 0xffffffff, none,
                                           Layout<uint32_t>{t.v4_start_, t.v4_value_});
        t.v4_start_.shrink_to_fit();
        t.v4_value_.shrink_to_fit();
    }
    {
        std::vector<Block<Uint128>> blocks;
        blocks.reserve(v6_.size());
        v6_.for_each([&](const V6Key& key, uint32_t value) {
            const Uint128 host = key.prefix == 0 ? kV6Max : (Uint128(1) << (128 - key.prefix)) - 1;
            blocks.push_back({key.addr(), key.addr() | host, value});
        });
        v6_ = {};
        t.v6_start_.clear();
        t.v6_value_.clear();
        lay_out_blocks<Uint128, Uint128>(blocks, kV6Max, none,
                                         Layout<Uint128>{t.v6_start_, t.v6_value_});
        t.v6_start_.shrink_to_fit();
        t.v6_value_.shrink_to_fit();
    }
    t.index_v4();
    return t;
}

// ---- ranges -----------------------------------------------------------------

RangeTableBuilder::RangeTableBuilder() = default;

std::optional<RangeTableBuilder::Overlap> RangeTableBuilder::add(uint32_t start, uint32_t end,
                                                                 uint32_t value,
                                                                 std::vector<uint32_t>* replaced) {
    replaced->clear();
    if (high_.empty()) high_.resize(0x10000);
    // One piece per /16 the range spans: its first and last are partial.
    for (uint64_t n = start; n <= end; n = (n | 0xffff) + 1) {
        const uint32_t h = static_cast<uint32_t>(n >> 16);
        const auto s = static_cast<uint16_t>(n & 0xffff);
        const auto e = static_cast<uint16_t>((n | 0xffff) > end ? end & 0xffff : 0xffff);
        std::vector<Piece>& v = high_[h];
        // The last piece starting at or before e decides.
        auto it = std::upper_bound(v.begin(), v.end(), e,
                                   [](uint16_t x, const Piece& p) { return x < p.start; });
        if (it == v.begin()) {
            v.insert(it, Piece{s, e, value});
            ++count_;
            continue;
        }
        const auto i = (it - v.begin()) - 1;
        Piece& p = v[static_cast<size_t>(i)];
        if (s > p.end) {  // after it
            v.insert(it, Piece{s, e, value});
            ++count_;
        } else if (s == p.start && e == p.end) {
            replaced->push_back(p.value);
            p.value = value;
        } else if (s > p.start && e < p.end) {  // inside: split it in two around the new one
            const Piece tail{static_cast<uint16_t>(e + 1), p.end, p.value};
            p.end = static_cast<uint16_t>(s - 1);
            const Piece add[2] = {Piece{s, e, value}, tail};
            v.insert(v.begin() + i + 1, add, add + 2);
            count_ += 2;
        } else if (s == p.start && e < p.end) {  // its head
            p.start = static_cast<uint16_t>(e + 1);
            v.insert(v.begin() + i, Piece{s, e, value});
            ++count_;
        } else if (s > p.start && e == p.end) {  // its tail
            p.end = static_cast<uint16_t>(s - 1);
            v.insert(v.begin() + i + 1, Piece{s, e, value});
            ++count_;
        } else {
            return Overlap{h << 16 | p.start, h << 16 | p.end};
        }
    }
    return std::nullopt;
}

bool RangeTableBuilder::remove(uint32_t start, uint32_t end) {
    bool all = true;
    for (uint64_t n = start; n <= end; n = (n | 0xffff) + 1) {
        const uint32_t h = static_cast<uint32_t>(n >> 16);
        const auto s = static_cast<uint16_t>(n & 0xffff);
        const auto e = static_cast<uint16_t>((n | 0xffff) > end ? end & 0xffff : 0xffff);
        if (high_.empty()) {
            all = false;
            continue;
        }
        std::vector<Piece>& v = high_[h];
        auto it = std::lower_bound(v.begin(), v.end(), s,
                                   [](const Piece& p, uint16_t x) { return p.start < x; });
        if (it != v.end() && it->start == s && it->end == e) {
            v.erase(it);
            --count_;
        } else {
            all = false;
        }
    }
    return all;
}

IpTable RangeTableBuilder::build(uint32_t none) {
    IpTable t;
    t.v4_start_.clear();
    t.v4_value_.clear();
    {
        Layout<uint32_t> out{t.v4_start_, t.v4_value_};
        out.emit(0, none);
        for (size_t h = 0; h < high_.size(); ++h) {
            for (const Piece& p : high_[h]) {
                const uint32_t base = static_cast<uint32_t>(h) << 16;
                out.emit(base | p.start, p.value);
                if ((base | p.end) != 0xffffffff) out.emit((base | p.end) + 1, none);
            }
            std::vector<Piece>().swap(high_[h]);  // what is laid out is no longer needed
        }
        t.v4_start_.shrink_to_fit();
        t.v4_value_.shrink_to_fit();
    }
    t.v6_value_[0] = none;
    high_ = {};
    count_ = 0;
    t.index_v4();
    return t;
}

}  // namespace gatehouse
