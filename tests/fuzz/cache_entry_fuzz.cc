// libFuzzer target for cache entry files (src/cache/entry.h): whatever a
// file holds, header_length() and parse_header() return an error or an
// Entry whose views lie inside the bytes given and whose lengths agree
// with the file size; parse, serialize, parse gives the same entry.
//
// Input: the first 8 bytes are the file size to claim (little-endian,
// taken modulo a few MB so that both agreeing and disagreeing sizes come
// up), the rest is the file's start.
#include <cstdint>
#include <cstring>
#include <string>

#include "cache/entry.h"
#include "core/assert.h"

using namespace gatehouse::cache;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 8) return 0;
    uint64_t claim;
    std::memcpy(&claim, data, 8);
    const char* bytes = reinterpret_cast<const char*>(data + 8);
    const size_t n = size - 8;
    std::span<const char> in(bytes, n);
    auto need = header_length(in);
    if (!need) return 0;
    GH_CHECK(*need >= kHeaderSize);
    GH_CHECK(*need <= kHeaderSize + kMaxKey + kMaxVary + kMaxEtag + kMaxHead);
    // Claim a size that agrees with what the header says more often than
    // chance would.
    const uint64_t file_size = (claim & 1) ? n : claim % (8u << 20);
    auto e = parse_header(in, file_size);
    if (!e) return 0;
    auto inside = [&](std::string_view v) { GH_CHECK(v.empty() || (v.data() >= bytes && v.data() + v.size() <= bytes + n)); };
    inside(e->key);
    inside(e->vary);
    inside(e->etag);
    inside(e->head);
    GH_CHECK(e->body_start == *need && e->body_start + e->meta.body_len == file_size);
    std::string again = serialize_header(e->meta, e->key, e->vary, e->etag, e->head);
    GH_CHECK(again.size() == e->body_start);
    auto e2 = parse_header(again, file_size);
    GH_CHECK(e2 && e2->key == e->key && e2->head == e->head && e2->meta.valid_until == e->meta.valid_until);
    return 0;
}
