// ASCII case-insensitive comparison, for the protocol tokens HTTP compares
// that way (field names, codings, "close", schemes). Locale-free on
// purpose: strcasecmp() follows LC_CTYPE, and a protocol element must not
// compare differently because of the environment a process inherited.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

namespace gatehouse {

constexpr char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

// Eight bytes at once: 'A'-'Z' get 0x20, every other byte stays, so two
// words fold equal exactly when their bytes are equal under ascii_lower().
// The high bit of each byte's low seven bits plus 0x3f says ">= 'A'", plus
// 0x25 says "> 'Z'" (no carry crosses a byte); bytes >= 0x80 are left out.
inline uint64_t fold_word(uint64_t w) {
    constexpr uint64_t kHigh = 0x8080808080808080ull;
    const uint64_t low7 = w & ~kHigh;
    const uint64_t upper = (low7 + 0x3f3f3f3f3f3f3f3full) & ~(low7 + 0x2525252525252525ull) & ~w & kHigh;
    return w | (upper >> 2);
}

inline uint64_t load_word(const char* p) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
}

inline uint64_t load_half(const char* p) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    return w;
}

constexpr bool iequals_bytes(const char* a, const char* b, size_t n) {
    // Field names are compared by the dozen per message, most of 4 to 19
    // bytes: words, the last one overlapping, cost a third of the byte
    // loop's instructions (callgrind) for names of that size.
    if (!std::is_constant_evaluated() && n >= 4) {
        if (n < 8) {
            const uint64_t x = load_half(a) | load_half(a + n - 4) << 32;
            const uint64_t y = load_half(b) | load_half(b + n - 4) << 32;
            return x == y || fold_word(x) == fold_word(y);
        }
        for (size_t i = 0; i + 8 < n; i += 8) {
            const uint64_t x = load_word(a + i), y = load_word(b + i);
            if (x != y && fold_word(x) != fold_word(y)) return false;
        }
        const uint64_t x = load_word(a + n - 8), y = load_word(b + n - 8);
        return x == y || fold_word(x) == fold_word(y);
    }
    // Equal bytes need no folding.
    for (size_t i = 0; i < n; ++i)
        if (a[i] != b[i] && ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

// Most compared names differ in length: a field name goes down a list of
// a dozen names per response, so the length test is kept inline and the
// byte loop runs only for names of the same length.
[[gnu::always_inline]] constexpr bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && iequals_bytes(a.data(), b.data(), a.size());
}

constexpr bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// The value of a hexadecimal digit, either case; -1 for anything else.
constexpr int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// `n` bytes as 2n lower-case hexadecimal digits into `out` (a digest's
// text: cache keys, sticky ids).
constexpr void hex_lower(const uint8_t* bytes, size_t n, char* out) {
    constexpr char kDigits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; ++i) {
        out[2 * i] = kDigits[bytes[i] >> 4];
        out[2 * i + 1] = kDigits[bytes[i] & 15];
    }
}

// Without the optional whitespace (spaces and tabs, RFC 9110 5.6.3) at
// either end: a list element or a field value.
constexpr std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Appends text and numbers to memory sized beforehand (a response head in
// a request arena): what would not fit is cut, never written past `end`;
// callers size the memory for the worst case.
struct FixedWriter {
    char* p;
    char* end;
    void put(std::string_view s) {
        size_t n = std::min<size_t>(s.size(), static_cast<size_t>(end - p));
        if (n) std::memcpy(p, s.data(), n);
        p += n;
    }
    // A string literal: its length is a constant here, so the copy is a
    // few moves instead of a call to memcpy (a response head is two dozen
    // of these).
    template <size_t N>
    void lit(const char (&s)[N]) {
        constexpr size_t n = N - 1;
        if (static_cast<size_t>(end - p) >= n) {
            std::memcpy(p, s, n);
            p += n;
        } else {
            put(std::string_view(s, n));
        }
    }
    void num(uint64_t v) {
        char b[24];
        auto [e, ec] = std::to_chars(b, b + sizeof b, v);
        (void)ec;
        put({b, static_cast<size_t>(e - b)});
    }
};

}  // namespace gatehouse
