// Byte ranges (RFC 9110 14): reading the "Range" field, writing
// "Content-Range", and cutting a body down to one range or to the parts
// of a multipart/byteranges answer.
//
// The parser follows nginx's rules rather than the RFC's leniency where
// they differ, so that clients see what nginx would answer:
//   - only the "bytes" unit, case-insensitive; anything else is ignored;
//   - a syntax error anywhere in the list makes the request unsatisfiable
//     (416; RFC 9110 14.2 allows rejecting as well as ignoring);
//   - ranges that start past the end are skipped; if none is left: 416;
//   - for an empty representation ranges are ignored (200);
//   - more ranges than max_ranges, or ranges adding up to more bytes than
//     the representation (overlaps used to amplify a response), are
//     ignored: the whole representation is sent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <span>
#include <string_view>
#include <vector>

#include "core/buf.h"

namespace gatehouse::http {

struct ByteRange {
    uint64_t start = 0;
    uint64_t end = 0;  // exclusive
    uint64_t size() const { return end - start; }
    bool operator==(const ByteRange&) const = default;
};

enum class RangeVerdict : uint8_t {
    Ignore,         // send the whole representation (200)
    Satisfiable,    // send `first` (206), or all if the caller does not do lists
    Unsatisfiable,  // 416 with "Content-Range: bytes */length"
};

struct RangeRequest {
    RangeVerdict verdict = RangeVerdict::Ignore;
    ByteRange first;   // Satisfiable: the first range, clipped to the length
    size_t count = 0;  // Satisfiable: how many ranges the list holds
};

// `field` is the Range field's value; `length` the representation's size.
// `all`, when given, receives every satisfiable range in the order sent.
RangeRequest parse_range(std::string_view field, uint64_t length, uint64_t max_ranges = UINT64_MAX,
                         std::pmr::vector<ByteRange>* all = nullptr);

// Sorts `ranges` by their start and merges those that overlap, as RFC 9110
// 15.3.7.2 allows ("a client cannot rely on receiving ... the same order
// that it requested"): the parts of a multipart answer can then be cut
// from the body as it streams, in one pass.
void order_ranges(std::pmr::vector<ByteRange>& ranges);

// Room for the longest Content-Range value.
inline constexpr size_t kContentRangeMax = 72;
// "bytes 0-99/1000" for `r` (RFC 9110 14.4), written to `out`.
std::string_view format_content_range(ByteRange r, uint64_t length, std::span<char, kContentRangeMax> out);
// "bytes */1000", the value sent with 416.
std::string_view format_unsatisfied_range(uint64_t length, std::span<char, kContentRangeMax> out);

// Cuts a body, chain by chain, to one range: bytes before and after it are
// dropped, buffers across its edges are trimmed (memory and file buffers
// alike, without copying) and the buffer that completes the range is
// marked last_buf. Whatever arrives after that is dropped. If the body
// ends before the range does, its end is passed on as an empty last_buf.
class RangeSlicer {
public:
    explicit RangeSlicer(ByteRange r) : range_(r) {}
    // Moves what is kept from `in` to `out`; `in` is left empty.
    void run(Chain& in, Chain& out);
    bool done() const { return done_; }

private:
    ByteRange range_;
    uint64_t offset_ = 0;  // of the next input byte in the whole body
    bool done_ = false;
};

// Cuts a body to several ranges, ascending and disjoint (order_ranges),
// for multipart/byteranges (RFC 9110 14.6): each part's bytes after its
// head (`heads[i]`: the delimiter and the part's fields), then `tail`, the
// closing delimiter, marked last_buf. Buffers are trimmed without copying;
// one input buffer may feed several parts. A body that ends before the
// last part does is ended there with an empty last_buf, as RangeSlicer's.
class MultipartSlicer {
public:
    MultipartSlicer(std::span<const ByteRange> ranges, std::span<const std::string_view> heads,
                    std::string_view tail)
        : ranges_(ranges), heads_(heads), tail_(tail) {}
    void run(Chain& in, Chain& out);
    bool done() const { return done_; }

private:
    std::span<const ByteRange> ranges_;
    std::span<const std::string_view> heads_;
    std::string_view tail_;
    size_t part_ = 0;       // the part being cut
    bool head_out_ = false; // its head went out
    uint64_t offset_ = 0;   // of the next input byte in the whole body
    bool done_ = false;
};

}  // namespace gatehouse::http
