// Address-to-value tables: every IPv4 and IPv6 address maps to one value
// index, found in O(log n). The "geo" module's base [nginx geo module]:
// CIDR blocks where the longest prefix wins, or IPv4 ranges with nginx's
// rules for overlaps and deletions.
//
// Two builders collect the entries in the order written, reporting what
// nginx warns about (a duplicate, a deletion of nothing) or refuses (an
// overlapping range); build() then lays them out as one sorted array of
// disjoint intervals per family, adjacent intervals with the same value
// merged. A lookup is a binary search in that array (for IPv4, first
// narrowed to the address's /16 by a direct index when the table is
// large), whatever the order or the nesting of the entries.
//
// Values are the caller's indices (into its table of deduplicated
// strings): 4 bytes per interval, plus 4 (IPv4) or 16 (IPv6) for its
// start. Pure data, no I/O; a built table is immutable and may be read by
// any number of threads.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/cidr.h"

namespace gatehouse {

using Uint128 = unsigned __int128;

class IpTable {
public:
    // An empty table: every address has value 0.
    IpTable();

    // The value of an address, IPv4 in host order.
    uint32_t find_v4(uint32_t addr) const;
    // The value of an IPv6 address (bytes in network order, as IpAddr's).
    uint32_t find_v6(const uint8_t* bytes) const;
    // By a.family; an IPv4-mapped IPv6 address is looked up as IPv6 here
    // (the caller decides, as nginx's modules do, whether it counts as
    // IPv4: IpAddr::unmapped).
    uint32_t find(const IpAddr& a) const;

    size_t v4_intervals() const { return v4_start_.size(); }
    size_t v6_intervals() const { return v6_start_.size(); }
    // Bytes held, for the figures an operator is shown.
    size_t memory() const;

private:
    friend class CidrTableBuilder;
    friend class RangeTableBuilder;
    void index_v4();

    // Interval i covers [start[i], start[i+1]) and has value[i]; start[0]
    // is 0, so every address falls in one.
    std::vector<uint32_t> v4_start_, v4_value_;
    // With many intervals: for each /16 h, the interval holding h<<16, so
    // that the search runs among that /16's intervals only. Empty when
    // the table is small (the index is 256 KiB).
    std::vector<uint32_t> v4_index_;
    std::vector<Uint128> v6_start_;
    std::vector<uint32_t> v6_value_;
};

// CIDR blocks, IPv4 and IPv6; the longest prefix holding an address gives
// its value. The same block written again replaces the value.
class CidrTableBuilder {
public:
    // Adds block c (host bits clear, as parse_cidr leaves them). When the
    // same block (address and prefix) is there already, its value is
    // replaced and the old one returned: nginx warns "duplicate network".
    std::optional<uint32_t> add(const Cidr& c, uint32_t value);
    // Removes exactly block c; false when it is not there ("no network
    // ... to delete"). Blocks inside or around it stay.
    bool remove(const Cidr& c);
    size_t size() const { return v4_.size() + v6_.size(); }
    // The table; `none` is the value of the addresses no block holds (a
    // "/0" block, nginx's "default", covers them all). The builder is
    // left empty.
    IpTable build(uint32_t none);

private:
    // Two halves rather than a Uint128, whose 16-byte alignment would pad
    // a slot to 48 bytes: a million IPv6 blocks take 64 MB of slots, not 96.
    struct V6Key {
        uint64_t hi, lo;
        uint8_t prefix;
        bool operator==(const V6Key&) const = default;
        static V6Key of(const Cidr& c);
        Uint128 addr() const { return Uint128(hi) << 64 | lo; }
    };
    static size_t hash_of(uint64_t k);
    static size_t hash_of(const V6Key& k);
    // Open addressing with linear probing: a probe is one cache line,
    // where a node-based map chases pointers (for a million blocks, most
    // of the load time). Deleted slots stay as tombstones until it grows.
    template <typename K>
    class FlatMap {
    public:
        // The value slot of k, and whether it was added (with v).
        std::pair<uint32_t*, bool> try_emplace(const K& k, uint32_t v);
        bool erase(const K& k);
        size_t size() const { return size_; }
        template <typename F>
        void for_each(F&& f) const {
            for (const Slot& s : slots_)
                if (s.state == kFull) f(s.key, s.value);
        }

    private:
        enum : uint8_t { kEmpty, kFull, kDeleted };
        struct Slot {
            K key{};
            uint32_t value = 0;
            uint8_t state = kEmpty;
        };
        Slot* find(const K& k);
        void grow();
        std::vector<Slot> slots_;  // a power of two in size
        size_t size_ = 0;          // full slots
        size_t used_ = 0;          // full and deleted slots
    };
    // IPv4 key: the first address shifted left by 8, ORed with the prefix.
    FlatMap<uint64_t> v4_;
    FlatMap<V6Key> v6_;
};

// IPv4 ranges "a.b.c.d-e.f.g.h" with nginx's rules. nginx keeps ranges per
// /16 and applies each rule to every /16 a range spans, so the outcome of
// overlapping ranges is nginx's only if the same split is made: a range
// crossing a /16 boundary is handled as its pieces.
//
// Within a /16, against the last range there that starts at or before
// the new one's end: no overlap, it is inserted; the same bounds, its
// value is replaced (nginx warns "duplicate range"); strictly inside, the
// old range is split around it; sharing its start or its end, the old
// range is shortened; any other overlap refuses the new range.
class RangeTableBuilder {
public:
    RangeTableBuilder();

    struct Overlap {
        uint32_t start = 0, end = 0;  // the existing piece, host order
    };
    // Adds [start, end] (host order, start <= end). `replaced` (cleared
    // first) gets the old value of each piece that had exactly these
    // bounds. On an overlap nginx refuses, returns it; pieces before it
    // may have been added (the configuration is invalid anyway).
    std::optional<Overlap> add(uint32_t start, uint32_t end, uint32_t value,
                               std::vector<uint32_t>* replaced);
    // Removes the pieces of [start, end] that are there with exactly these
    // bounds; false when some piece was not ("no address range ... to
    // delete"). A range is never cut by a deletion.
    bool remove(uint32_t start, uint32_t end);
    size_t size() const { return count_; }
    // The table; `none` (nginx's "default") fills the gaps. The builder is
    // left empty.
    IpTable build(uint32_t none);

private:
    struct Piece {
        uint16_t start, end;  // the low halves, inclusive
        uint32_t value;
    };
    std::vector<std::vector<Piece>> high_;  // by the high 16 bits
    size_t count_ = 0;
};

}  // namespace gatehouse
