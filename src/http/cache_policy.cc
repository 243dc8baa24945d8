#include "http/cache_policy.h"

#include <algorithm>
#include <climits>

#include "core/str.h"
#include "http/conditional.h"

namespace gatehouse::http {

namespace {

// Calls fn(name, value) for each directive of a Cache-Control value:
// comma-separated, "name" or "name=value" or name="value".
template <typename Fn>
void for_each_directive(std::string_view v, Fn fn) {
    while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view item = v.substr(0, comma);
        v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
        item = trim_ows(item);
        if (item.empty()) continue;
        size_t eq = item.find('=');
        std::string_view name = trim_ows(item.substr(0, eq));
        std::string_view value;
        if (eq != std::string_view::npos) {
            value = trim_ows(item.substr(eq + 1));
            if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
                value = value.substr(1, value.size() - 2);
        }
        fn(name, value);
    }
}

// What Cache-Control said, all of its fields together.
struct CacheControl {
    bool seen = false;
    bool no_store = false;
    bool no_cache = false;
    int64_t lifetime = -1;  // s-maxage, else max-age; -1: neither
    int64_t s_maxage = -1;
    int64_t max_age = -1;
    int64_t swr = -1;
    int64_t sie = -1;
};

void read_cache_control(std::string_view v, CacheControl& cc) {
    cc.seen = true;
    for_each_directive(v, [&](std::string_view name, std::string_view value) {
        if (iequals(name, "no-store") || iequals(name, "private")) {
            cc.no_store = true;
        } else if (iequals(name, "no-cache")) {
            cc.no_cache = true;
        } else if (iequals(name, "s-maxage")) {
            // An invalid value makes the response stale (RFC 9111 4.2.1).
            int64_t n = parse_delta_seconds(value);
            cc.s_maxage = n < 0 ? 0 : n;
        } else if (iequals(name, "max-age")) {
            int64_t n = parse_delta_seconds(value);
            cc.max_age = n < 0 ? 0 : n;
        } else if (iequals(name, "stale-while-revalidate")) {
            cc.swr = parse_delta_seconds(value);
        } else if (iequals(name, "stale-if-error")) {
            cc.sie = parse_delta_seconds(value);
        }
    });
    cc.lifetime = cc.s_maxage >= 0 ? cc.s_maxage : cc.max_age;
}

uint32_t clamp32(int64_t n) { return n <= 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(n, INT32_MAX)); }

time_t add(time_t now, int64_t seconds) {
    // Saturate: "forever" must not wrap into the past.
    if (seconds > static_cast<int64_t>(INT64_MAX) - now) return static_cast<time_t>(INT64_MAX);
    return now + static_cast<time_t>(seconds);
}

}  // namespace

int64_t parse_delta_seconds(std::string_view s) {
    if (s.empty()) return -1;
    int64_t n = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return -1;
        if (n < INT32_MAX) n = n * 10 + (c - '0');
    }
    return std::min<int64_t>(n, INT32_MAX);
}

CacheVerdict cache_verdict(const CacheInput& in) {
    CacheVerdict v;
    auto refuse = [&](std::string_view why) {
        v.store = false;
        v.why_not = why;
        return v;
    };
    if (in.status < 200 || in.status == 206 || in.status == 304) return refuse("status");

    CacheControl cc;
    bool x_accel = false;
    time_t x_accel_until = 0;
    bool x_accel_off = false;
    bool expires_seen = false;
    time_t expires = 0;
    bool validator = false;
    for (const CacheField& f : in.headers) {
        if (iequals(f.name, "X-Accel-Expires")) {
            // The first one decides; another is ignored [nginx].
            if ((in.ignore & kIgnoreXAccelExpires) || x_accel || x_accel_off) continue;
            std::string_view s = trim_ows(f.value);
            bool at = !s.empty() && s[0] == '@';
            int64_t n = parse_delta_seconds(at ? s.substr(1) : s);
            if (n < 0) continue;  // not a number: as if absent
            if (!at && n == 0) {
                x_accel_off = true;
                continue;
            }
            x_accel = true;
            x_accel_until = at ? static_cast<time_t>(n) : add(in.now, n);
        } else if (iequals(f.name, "Cache-Control")) {
            if (!(in.ignore & kIgnoreCacheControl)) read_cache_control(f.value, cc);
        } else if (iequals(f.name, "Expires")) {
            if ((in.ignore & kIgnoreExpires) || expires_seen) continue;
            expires_seen = true;
            // An invalid date means "already expired" (RFC 9111 5.3).
            time_t t = parse_http_date(trim_ows(f.value));
            expires = t < 0 ? 0 : t;
        } else if (iequals(f.name, "Set-Cookie")) {
            if (!(in.ignore & kIgnoreSetCookie)) return refuse("Set-Cookie");
        } else if (iequals(f.name, "Vary")) {
            if (in.ignore & kIgnoreVary) continue;
            bool star = false;
            for_each_directive(f.value, [&](std::string_view name, std::string_view) { star |= name == "*"; });
            if (star) return refuse("Vary: *");
        } else if (iequals(f.name, "ETag") || iequals(f.name, "Last-Modified")) {
            validator = true;
        } else if (iequals(f.name, "Age")) {
            int64_t a = parse_delta_seconds(trim_ows(f.value));
            if (a > 0) v.age = clamp32(a);
        }
    }
    if (x_accel_off) return refuse("X-Accel-Expires: 0");
    v.stale_while_revalidate = clamp32(cc.swr);
    v.stale_if_error = clamp32(cc.sie);

    if (x_accel) {
        // Cache-Control's lifetime and no-cache give way; its extensions
        // stay (see the top).
        v.store = true;
        v.valid_until = x_accel_until;
        return v;
    }
    if (cc.no_store) return refuse("Cache-Control: no-store or private");
    const bool revalidate = cc.no_cache || cc.lifetime == 0;
    if (revalidate) {
        if (!in.can_revalidate || !validator) return refuse("Cache-Control: no-cache or max-age=0");
        v.store = true;
        v.revalidate_always = true;
        v.valid_until = in.now;
        return v;
    }
    if (cc.lifetime > 0) {
        v.store = true;
        v.valid_until = add(in.now, cc.lifetime);
        return v;
    }
    if (expires_seen) {
        // Expires in the past: nothing to keep [nginx].
        if (expires <= in.now) return refuse("Expires in the past");
        v.store = true;
        v.valid_until = expires;
        return v;
    }
    for (const CacheValid& rule : in.valid) {
        if (rule.status != 0 && rule.status != in.status) continue;
        if (rule.seconds <= 0) return refuse("proxy_cache_valid 0");
        v.store = true;
        v.valid_until = add(in.now, rule.seconds);
        return v;
    }
    return refuse("no lifetime");
}

}  // namespace gatehouse::http
