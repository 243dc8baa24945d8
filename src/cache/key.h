// Cache keys: the text a request is filed under ("proxy_cache_key",
// by default $scheme$proxy_host$request_uri), its MD5, and where the
// entry's file lives under a cache directory.
//
// MD5 as nginx does: not for security (the whole key is stored in the
// entry and compared on every hit, so a collision is a miss, never the
// wrong response), but because it names the files, and a cache directory
// written by nginx and by gatehouse then has one layout: the file is the
// 32 hex digits of the hash, under directories named by its last digits
// ("levels=1:2": .../c/29/b7f54b2df7773722d382f4809d65029c).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gatehouse::cache {

struct Hash {
    std::array<uint8_t, 16> bytes{};
    bool operator==(const Hash&) const = default;
    // The first 8 bytes as a number: what the index buckets by.
    uint64_t head() const;
};

Hash hash_key(std::string_view key);

// "levels=": 1 to 3 levels of 1 or 2 hex digits each.
struct Levels {
    uint8_t n = 0;
    uint8_t len[3] = {};
    // The characters a path takes beyond the directory and the 32 digits.
    size_t extra() const { return n + len[0] + len[1] + len[2]; }
};
// "1:2" and the like; the error says what is wrong with it.
Result<Levels> parse_levels(std::string_view s);

inline constexpr size_t kHexLen = 32;
std::array<char, kHexLen> hex(const Hash& h);

// dir + "/" + the level directories + "/" + the hex name.
std::string entry_path(std::string_view dir, const Levels& l, const Hash& h);
// The level directories alone, relative ("c/29"), for making them.
std::string level_dirs(const Levels& l, const Hash& h);
// A file name as entry_path() makes it, back to its hash: false when the
// name is not 32 hex digits (the loader skips such files).
bool parse_hex(std::string_view name, Hash& out);

}  // namespace gatehouse::cache
