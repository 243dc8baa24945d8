#include "cache/entry.h"

#include <cstring>

namespace gatehouse::cache {

// The fixed header, offset by offset (see entry.h for what follows it):
//
//    0 magic[8]      8 body_start u32   12 flags u32
//   16 valid_until i64                  24 stored_at i64
//   32 last_modified i64                40 age u32     44 swr u32
//   48 sie u32      52 status u16      54 etag_len u16
//   56 key_len u32  60 vary_len u16    62 zero u16
//   64 variant[16]                      80 body_len u64
//   88 head_len u32 92 zero u32
namespace {

template <typename T>
void put(char* out, size_t at, T v) {
    // Little-endian on every machine gatehouse builds for (x86-64, arm64);
    // a big-endian reader would refuse the magic's neighbours, not misread.
    std::memcpy(out + at, &v, sizeof v);
}

template <typename T>
T get(const char* in, size_t at) {
    T v;
    std::memcpy(&v, in + at, sizeof v);
    return v;
}

}  // namespace

void encode_u64(uint64_t v, char out[8]) { std::memcpy(out, &v, 8); }

std::string serialize_header(const EntryMeta& m, std::string_view key, std::string_view vary,
                             std::string_view etag, std::string_view head) {
    const size_t body_start = kHeaderSize + key.size() + vary.size() + etag.size() + head.size();
    std::string out(kHeaderSize, '\0');
    char* h = out.data();
    std::memcpy(h, kMagic, sizeof kMagic);
    put<uint32_t>(h, 8, static_cast<uint32_t>(body_start));
    put<uint32_t>(h, 12, m.flags);
    put<int64_t>(h, 16, static_cast<int64_t>(m.valid_until));
    put<int64_t>(h, 24, static_cast<int64_t>(m.stored_at));
    put<int64_t>(h, 32, static_cast<int64_t>(m.last_modified));
    put<uint32_t>(h, 40, m.age);
    put<uint32_t>(h, 44, m.stale_while_revalidate);
    put<uint32_t>(h, 48, m.stale_if_error);
    put<int16_t>(h, 52, m.status);
    put<uint16_t>(h, 54, static_cast<uint16_t>(etag.size()));
    put<uint32_t>(h, 56, static_cast<uint32_t>(key.size()));
    put<uint16_t>(h, 60, static_cast<uint16_t>(vary.size()));
    std::memcpy(h + 64, m.variant.bytes.data(), 16);
    put<uint64_t>(h, kBodyLenOffset, m.body_len);
    put<uint32_t>(h, 88, static_cast<uint32_t>(head.size()));
    out.reserve(body_start);
    out += key;
    out += vary;
    out += etag;
    out += head;
    return out;
}

Result<size_t> header_length(std::span<const char> first) {
    if (first.size() < kHeaderSize) return make_error("cache file is cut short");
    const char* h = first.data();
    if (std::memcmp(h, kMagic, sizeof kMagic) != 0) return make_error("cache file has a bad magic");
    const uint32_t key_len = get<uint32_t>(h, 56);
    const uint16_t vary_len = get<uint16_t>(h, 60);
    const uint16_t etag_len = get<uint16_t>(h, 54);
    const uint32_t head_len = get<uint32_t>(h, 88);
    if (key_len > kMaxKey || vary_len > kMaxVary || etag_len > kMaxEtag || head_len > kMaxHead)
        return make_error("cache file has a bad header");
    return kHeaderSize + size_t{key_len} + vary_len + etag_len + head_len;
}

Result<Entry> parse_header(std::span<const char> data, uint64_t file_size) {
    auto need = header_length(data);
    if (!need) return need.error();
    const char* h = data.data();
    Entry e;
    const uint32_t body_start = get<uint32_t>(h, 8);
    if (body_start != *need || get<uint16_t>(h, 62) != 0 || get<uint32_t>(h, 92) != 0)
        return make_error("cache file has a bad header");
    if (data.size() < *need) return make_error("cache file is cut short");
    EntryMeta& m = e.meta;
    m.flags = get<uint32_t>(h, 12);
    m.valid_until = static_cast<time_t>(get<int64_t>(h, 16));
    m.stored_at = static_cast<time_t>(get<int64_t>(h, 24));
    m.last_modified = static_cast<time_t>(get<int64_t>(h, 32));
    m.age = get<uint32_t>(h, 40);
    m.stale_while_revalidate = get<uint32_t>(h, 44);
    m.stale_if_error = get<uint32_t>(h, 48);
    m.status = get<int16_t>(h, 52);
    std::memcpy(m.variant.bytes.data(), h + 64, 16);
    m.body_len = get<uint64_t>(h, kBodyLenOffset);
    if (m.status < 200 || m.status > 999) return make_error("cache file has a bad header");
    // The body's length is written last: a file whose size disagrees was
    // cut short (or grew), and is not an entry.
    if (file_size < body_start || file_size - body_start != m.body_len)
        return make_error("cache file is cut short");
    size_t at = kHeaderSize;
    auto take = [&](size_t n) {
        std::string_view v(h + at, n);
        at += n;
        return v;
    };
    e.key = take(get<uint32_t>(h, 56));
    e.vary = take(get<uint16_t>(h, 60));
    e.etag = take(get<uint16_t>(h, 54));
    e.head = take(get<uint32_t>(h, 88));
    // The head must be a whole one: a status line, fields, the empty line.
    if (e.head.size() < 16 || e.head.substr(0, 5) != "HTTP/" ||
        e.head.substr(e.head.size() - 4) != "\r\n\r\n")
        return make_error("cache file has a bad header");
    e.body_start = body_start;
    return e;
}

}  // namespace gatehouse::cache
