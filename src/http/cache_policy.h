// Whether and how long a shared cache may keep a response (RFC 9111), in
// nginx's order of authority, as a pure function of the origin's head:
//
//   X-Accel-Expires   the first one: "0" stores nothing, "@T" is fresh
//                     until the Unix time T, "N" for N seconds
//   Cache-Control     no-store, private (and no-cache, see below) store
//                     nothing; s-maxage, else max-age, sets the lifetime;
//                     stale-while-revalidate=N and stale-if-error=N are
//                     kept even when X-Accel-Expires sets the lifetime
//   Expires           the lifetime when neither of the above set one
//   proxy_cache_valid the lifetime by status when the origin said nothing
//
// and, whatever set the lifetime: Set-Cookie, or "Vary: *", store
// nothing. Each header can be ignored ("proxy_ignore_headers").
//
// "Cache-Control: no-cache" allows storing a response only to revalidate
// it before every use (RFC 9111 5.2.2.4). That is what gatehouse does when
// it can revalidate: "proxy_cache_revalidate on" and a validator (ETag or
// Last-Modified) in the response; the entry is then stale from the start.
// Otherwise it stores nothing, as nginx always does. max-age=0 (or an
// s-maxage of 0) is the same "store to revalidate".
//
// Statuses: with an explicit lifetime from the origin any final status but
// 206 may be stored (RFC 9111 3); proxy_cache_valid names the statuses it
// applies to. 206 (a part of a representation) is never stored here: the
// cache keeps whole responses and answers ranges from them.
#pragma once

#include <cstdint>
#include <ctime>
#include <span>
#include <string_view>

namespace gatehouse::http {

// "proxy_ignore_headers".
enum CacheIgnore : uint8_t {
    kIgnoreXAccelExpires = 1 << 0,
    kIgnoreExpires = 1 << 1,
    kIgnoreCacheControl = 1 << 2,
    kIgnoreSetCookie = 1 << 3,
    kIgnoreVary = 1 << 4,
};

// One "proxy_cache_valid" rule: `status` 0 stands for "any".
struct CacheValid {
    uint16_t status = 0;
    int64_t seconds = 0;
};

struct CacheField {
    std::string_view name;
    std::string_view value;
};

struct CacheInput {
    int status = 0;
    std::span<const CacheField> headers;  // as the origin sent them, in order
    time_t now = 0;
    uint8_t ignore = 0;                   // CacheIgnore bits
    std::span<const CacheValid> valid;    // in configuration order
    bool can_revalidate = false;          // "proxy_cache_revalidate on"
};

struct CacheVerdict {
    bool store = false;
    // Why not, for the debug log ("Set-Cookie", "no-store"...).
    std::string_view why_not;
    // Fresh until then (may be in the past: stored, but stale at once).
    time_t valid_until = 0;
    // Cache-Control extensions, in seconds past valid_until (0: none).
    uint32_t stale_while_revalidate = 0;
    uint32_t stale_if_error = 0;
    // Every use needs a revalidation (no-cache, max-age=0).
    bool revalidate_always = false;
    // The response's own "Age" (RFC 9111 5.1), added to the time spent
    // in the cache in the Age of a hit.
    uint32_t age = 0;
};

CacheVerdict cache_verdict(const CacheInput& in);

// Parses one "proxy_cache_valid" time as the rules above need; exposed
// for tests. Decimal seconds, saturating at INT32_MAX (a lifetime beyond
// 68 years is forever); -1 when not a number.
int64_t parse_delta_seconds(std::string_view s);

}  // namespace gatehouse::http
