// Byte ranges (RFC 9110 14): reading the "Range" field, writing
// "Content-Range", and cutting a body down to one range.
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
#include <span>
#include <string_view>

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
RangeRequest parse_range(std::string_view field, uint64_t length, uint64_t max_ranges = UINT64_MAX);

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

}  // namespace gatehouse::http
