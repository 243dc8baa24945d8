#include "core/md5.h"

#include <cstring>

namespace gatehouse {

namespace {

// T[i] = floor(2^32 * |sin(i + 1)|), RFC 1321 3.4.
constexpr uint32_t kT[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

// The rotation of each step: four per round, repeated.
constexpr int kShift[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

constexpr uint32_t rotl(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

uint32_t load_le32(const unsigned char* p) {
    return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
           static_cast<uint32_t>(p[3]) << 24;
}

// One round of sixteen steps: `R` picks the function, the word order and
// the rotations. Unrolled, the variable renaming costs nothing and every
// index and constant is an immediate (~9 instructions a step).
template <int R>
inline void round(uint32_t& a, uint32_t& b, uint32_t& c, uint32_t& d, const uint32_t x[16]) {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
        const int i = R * 16 + j;
        uint32_t f;
        int k;
        if constexpr (R == 0) {
            f = (b & c) | (~b & d), k = i;
        } else if constexpr (R == 1) {
            f = (b & d) | (c & ~d), k = (5 * i + 1) % 16;
        } else if constexpr (R == 2) {
            f = b ^ c ^ d, k = (3 * i + 5) % 16;
        } else {
            f = c ^ (b | ~d), k = (7 * i) % 16;
        }
        const uint32_t t = d;
        d = c;
        c = b;
        b = b + rotl(a + f + x[k] + kT[i], kShift[R][j % 4]);
        a = t;
    }
}

void block(uint32_t st[4], const unsigned char* p) {
    uint32_t x[16];
    for (int i = 0; i < 16; ++i) x[i] = load_le32(p + 4 * i);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    round<0>(a, b, c, d, x);
    round<1>(a, b, c, d, x);
    round<2>(a, b, c, d, x);
    round<3>(a, b, c, d, x);
    st[0] += a, st[1] += b, st[2] += c, st[3] += d;
}

}  // namespace

std::array<uint8_t, 16> md5(std::string_view data) {
    uint32_t st[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    size_t n = data.size();
    for (; n >= 64; n -= 64, p += 64) block(st, p);
    // The rest, 0x80, zeros up to 56 bytes of a block, the length in bits
    // (little-endian, 64 bits): one block more, or two.
    unsigned char tail[128] = {};
    std::memcpy(tail, p, n);
    tail[n] = 0x80;
    const size_t len = n < 56 ? 64 : 128;
    const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
    for (int i = 0; i < 8; ++i) tail[len - 8 + i] = static_cast<unsigned char>(bits >> (8 * i));
    block(st, tail);
    if (len == 128) block(st, tail + 64);
    std::array<uint8_t, 16> out;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(st[i] >> (8 * j));
    return out;
}

}  // namespace gatehouse
