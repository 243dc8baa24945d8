// The file of one cache entry: a header of our own, the response head as
// the origin sent it, then the body.
//
//   offset 0   EntryHeader, fixed layout (kHeaderSize bytes, little-endian)
//              the key, the Vary value, the ETag   (lengths in the header)
//              the origin's head: status line and fields, CRLF-separated,
//              ending with the empty line, as received
//   body_start the body, body_len bytes, nothing after it
//
// A file is written whole to a temp file and renamed into place, its
// header written last with the body's length: a file cut short (a crash
// or a full disk while writing) has a length the header does not agree
// with, and parse_header() refuses it, as it refuses any other file that
// is not an entry of this version. A refused file is a miss; the cache
// removes it.
//
// Fields are read with memcpy at fixed offsets, never by casting the
// buffer: a file is untrusted input (another program, another version, a
// disk error), and its parser is fuzzed (tests/fuzz/cache_entry_fuzz.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>

#include "cache/key.h"
#include "core/result.h"

namespace gatehouse::cache {

inline constexpr char kMagic[8] = {'G', 'H', 'C', 'A', 'C', 'H', 'E', '1'};
inline constexpr size_t kHeaderSize = 96;
// Bounds a reader can trust before reading further.
inline constexpr size_t kMaxKey = 64 * 1024;
inline constexpr size_t kMaxVary = 4096;
inline constexpr size_t kMaxEtag = 1024;
inline constexpr size_t kMaxHead = 1024 * 1024;

enum EntryFlags : uint32_t {
    kRevalidateAlways = 1 << 0,  // no-cache, max-age=0: revalidate before every use
};

struct EntryMeta {
    // Fresh through this second, inclusive: whole seconds make the age
    // uncertain by one, and nginx gives the benefit to the entry
    // ("max-age=1" is still a hit in the next second).
    time_t valid_until = 0;
    time_t stored_at = 0;        // when the response arrived (or was revalidated)
    uint32_t age = 0;            // the origin's Age then
    uint32_t stale_while_revalidate = 0;
    uint32_t stale_if_error = 0;
    uint32_t flags = 0;          // EntryFlags
    int16_t status = 0;
    time_t last_modified = -1;   // -1: none
    Hash variant{};              // of the request's Vary values (zero: no Vary)
    uint64_t body_len = 0;
};

// A parsed file: the meta data and views into the bytes given to
// parse_header().
struct Entry {
    EntryMeta meta;
    std::string_view key;
    std::string_view vary;   // the Vary field's value; empty: none
    std::string_view etag;   // with its quotes; empty: none
    std::string_view head;   // the origin's head, status line first
    uint64_t body_start = 0;
};

// The bytes before the body: header, key, vary, etag and head, with
// body_len as given (0 while the body is still being written).
std::string serialize_header(const EntryMeta& m, std::string_view key, std::string_view vary,
                             std::string_view etag, std::string_view head);
// The offset and bytes of the body length inside the header, to write it
// once the body is complete (pwrite at kBodyLenOffset).
inline constexpr size_t kBodyLenOffset = 80;
void encode_u64(uint64_t v, char out[8]);

// How many bytes of the file parse_header() needs: kHeaderSize first,
// then what the header says (at most kHeaderSize + the limits above).
// The error when the first kHeaderSize bytes are not a header.
Result<size_t> header_length(std::span<const char> first);

// `data`: at least header_length() bytes from the file's start;
// `file_size`: the file's whole size. Errors name what is wrong, for the
// log ("cache file has a bad magic", "...is cut short").
Result<Entry> parse_header(std::span<const char> data, uint64_t file_size);

}  // namespace gatehouse::cache
