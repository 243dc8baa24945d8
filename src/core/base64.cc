#include "core/base64.h"

#include <array>
#include <cstdint>

namespace gatehouse {

namespace {

constexpr int8_t kInvalid = -1;

using Table = std::array<int8_t, 256>;

// The value of each character of a 64-character alphabet.
constexpr Table table_of(std::string_view alphabet) {
    Table t{};
    t.fill(kInvalid);
    for (size_t i = 0; i < alphabet.size(); ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
}

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr Table kValue = table_of(kAlphabet);
constexpr Table kUrlValue = table_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

std::optional<size_t> decode(std::string_view in, char* out, const Table& value) {
    // Up to two '=' end the input, and only where they complete a quantum.
    size_t n = in.size();
    size_t pad = 0;
    while (n > 0 && in[n - 1] == '=' && pad < 2) {
        --n;
        ++pad;
    }
    if (pad > 0 && in.size() % 4 != 0) return std::nullopt;
    if (n % 4 == 1) return std::nullopt;  // 6 bits cannot make a byte
    size_t w = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; ++i) {
        const int8_t v = value[static_cast<unsigned char>(in[i])];
        if (v == kInvalid) return std::nullopt;
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[w++] = static_cast<char>((acc >> bits) & 0xff);
        }
    }
    return w;
}

}  // namespace

size_t encode_base64(std::string_view in, char* out) {
    size_t w = 0;
    size_t i = 0;
    auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(in[k])); };
    for (; i + 3 <= in.size(); i += 3) {
        const uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
        out[w++] = kAlphabet[v >> 18 & 63];
        out[w++] = kAlphabet[v >> 12 & 63];
        out[w++] = kAlphabet[v >> 6 & 63];
        out[w++] = kAlphabet[v & 63];
    }
    // One or two bytes left: two or three characters, then padding.
    if (const size_t left = in.size() - i; left > 0) {
        const uint32_t v = byte(i) << 16 | (left == 2 ? byte(i + 1) << 8 : 0);
        out[w++] = kAlphabet[v >> 18 & 63];
        out[w++] = kAlphabet[v >> 12 & 63];
        out[w++] = left == 2 ? kAlphabet[v >> 6 & 63] : '=';
        out[w++] = '=';
    }
    return w;
}

std::optional<size_t> decode_base64(std::string_view in, char* out) { return decode(in, out, kValue); }

std::optional<size_t> decode_base64url(std::string_view in, char* out) { return decode(in, out, kUrlValue); }

}  // namespace gatehouse
