// Text built from variables on its way into a message head.
//
// A variable may hold any byte: $uri is percent-decoded, so "%0d%0a" in a
// request is a CR LF in $uri, and "%20" a space. Written as it is into a
// field value ("add_header X $uri", "proxy_set_header", the Location of
// "return 302 ...$uri") such text ends the field line early and starts a
// field of the client's choosing; in a request line ("proxy_pass
// http://b$uri") it smuggles a second request to the origin. nginx writes
// it as it is; gatehouse writes those bytes percent-encoded instead, so
// the field keeps its meaning as far as it can, and logs that it did.
//
// Every head gatehouse writes goes through these, at the one place where
// it is final: the response head and trailers in output.cc, the request
// to an origin in the proxy (build_request_head).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/arena.h"

namespace gatehouse::http {

// CR and LF end a field line; NUL cuts it for many parsers.
inline bool breaks_field(unsigned char c) { return c == '\r' || c == '\n' || c == '\0'; }
// A request-target also ends at a space; other controls and DEL are not
// allowed in it either (RFC 9112 3.2).
inline bool breaks_target(unsigned char c) { return c <= 0x20 || c == 0x7f; }

// A token (RFC 9110 5.6.2): what a method or a field name must be.
inline bool is_token(std::string_view s) {
    constexpr std::string_view punct = "!#$%&'*+-.^_`|~";
    if (s.empty()) return false;
    for (char c : s) {
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && punct.find(c) == std::string_view::npos) return false;
    }
    return true;
}

// `s` with each byte that `bad` says as "%XX"; `s` itself when there is
// none (the usual case, no copy). `changed`, if given, tells which.
// Whether s may hold a control byte (below 0x20, or DEL): a word at a
// time, for the usual value that has none. False positives are fine.
// The last bytes are one more word overlapping the one before (or two
// overlapping halves, for a value shorter than a word), not a byte loop:
// a response head has a dozen values, most not a multiple of 8 long.
inline bool word_may_have_controls(uint64_t w) {
    constexpr uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
    const uint64_t del = w ^ (kOnes * 0x7f);
    return ((w - kOnes * 0x20) & ~w & kHighs) | ((del - kOnes) & ~del & kHighs);
}

inline bool may_have_controls(std::string_view s) {
    const char* p = s.data();
    const size_t n = s.size();
    if (n < 8) {
        if (n < 4) {
            for (size_t i = 0; i < n; ++i) {
                const auto c = static_cast<unsigned char>(p[i]);
                if (c < 0x20 || c == 0x7f) return true;
            }
            return false;
        }
        uint32_t lo, hi;
        std::memcpy(&lo, p, 4);
        std::memcpy(&hi, p + n - 4, 4);
        return word_may_have_controls(lo | static_cast<uint64_t>(hi) << 32);
    }
    uint64_t w;
    for (size_t i = 0; i + 8 < n; i += 8) {
        std::memcpy(&w, p + i, 8);
        if (word_may_have_controls(w)) return true;
    }
    std::memcpy(&w, p + n - 8, 8);
    return word_may_have_controls(w);
}

template <bool (*bad)(unsigned char)>
std::string_view encode_breaking(std::string_view s, Arena& a, bool* changed = nullptr) {
    if (changed) *changed = false;
    // Every byte `bad` names is a control byte (or, for targets, SP).
    if (!may_have_controls(s) && (bad(' ') == false || s.find(' ') == std::string_view::npos)) return s;
    size_t n = 0;
    for (char c : s) n += bad(static_cast<unsigned char>(c));
    if (changed) *changed = n > 0;
    if (n == 0) return s;
    char* out = static_cast<char*>(a.alloc(s.size() + 2 * n, 1));
    char* w = out;
    constexpr char kHex[] = "0123456789ABCDEF";
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (bad(u)) {
            *w++ = '%';
            *w++ = kHex[u >> 4];
            *w++ = kHex[u & 15];
        } else {
            *w++ = c;
        }
    }
    return {out, s.size() + 2 * n};
}

}  // namespace gatehouse::http
