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

namespace gatehouse {

constexpr char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

constexpr bool iequals_bytes(const char* a, const char* b, size_t n) {
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
    void num(uint64_t v) {
        char b[24];
        auto [e, ec] = std::to_chars(b, b + sizeof b, v);
        (void)ec;
        put({b, static_cast<size_t>(e - b)});
    }
};

}  // namespace gatehouse
