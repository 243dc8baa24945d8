// MurmurHash2, 32 bits, seed 0: the hash nginx's split_clients and
// "hash ... consistent" use, so that a key lands in the same bucket on
// gatehouse as on nginx. Austin Appleby's algorithm (public domain),
// written here from its description: four bytes at a time little-endian,
// multiply by 0x5bd1e995 and shift by 24, the tail, then the final mix.
#pragma once

#include <cstdint>
#include <string_view>

namespace gatehouse {

constexpr uint32_t murmur2(std::string_view s) {
    constexpr uint32_t m = 0x5bd1e995;
    uint32_t h = static_cast<uint32_t>(s.size());
    size_t i = 0;
    for (; i + 4 <= s.size(); i += 4) {
        uint32_t k = static_cast<uint8_t>(s[i]) | static_cast<uint32_t>(static_cast<uint8_t>(s[i + 1])) << 8 |
                     static_cast<uint32_t>(static_cast<uint8_t>(s[i + 2])) << 16 |
                     static_cast<uint32_t>(static_cast<uint8_t>(s[i + 3])) << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (s.size() - i) {
        case 3: h ^= static_cast<uint32_t>(static_cast<uint8_t>(s[i + 2])) << 16; [[fallthrough]];
        case 2: h ^= static_cast<uint32_t>(static_cast<uint8_t>(s[i + 1])) << 8; [[fallthrough]];
        case 1:
            h ^= static_cast<uint8_t>(s[i]);
            h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

}  // namespace gatehouse
