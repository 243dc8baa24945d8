// "sticky cookie": the directive's arguments, a server's id and the
// Set-Cookie field (sticky.h). The pick itself is PeerPicker's
// (round_robin.cc), the cookie's reading and writing the proxy's.
#include "upstream/sticky.h"

#include <chrono>
#include <cstdio>
#include <utility>

#include "conf/values.h"
#include "core/md5.h"
#include "core/str.h"
#include "upstream/upstream.h"

namespace gatehouse::upstream {

namespace {

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// A cookie name is an RFC 6265 token (4.1.1): no separators, controls or
// spaces, or the field would not parse at the client.
bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s) {
        if (c <= 0x20 || c >= 0x7f) return false;
        if (std::string_view("()<>@,;:\\\"/[]?={}").find(static_cast<char>(c)) != std::string_view::npos)
            return false;
    }
    return true;
}

// An attribute value must not end the field early or split it.
bool is_attr_value(std::string_view s) {
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f || c == ';') return false;
    return true;
}

}  // namespace

Result<StickyCookie> parse_sticky(std::span<const std::string_view> args) {
    // NGINX Plus's other methods ("route", "learn") are not implemented:
    // refused by name rather than read as something else.
    if (args.empty() || args[0] != "cookie")
        return make_error("invalid parameter " + quoted(args.empty() ? "" : args[0]));
    if (args.size() < 2) return make_error("invalid number of arguments");
    StickyCookie c;
    if (!is_token(args[1])) return make_error("invalid cookie name " + quoted(args[1]));
    c.name = args[1];
    // Each key=value parameter once: a second one is more likely a
    // mistake than an override.
    enum : unsigned { kExpires = 1, kDomain = 2, kPath = 4, kSameSite = 8 };
    unsigned seen = 0;
    for (std::string_view a : args.subspan(2)) {
        std::string_view v;
        unsigned key = 0;
        for (auto [prefix, bit] : {std::pair{std::string_view("expires="), kExpires}, {"domain=", kDomain},
                                   {"path=", kPath}, {"samesite=", kSameSite}})
            if (a.starts_with(prefix)) {
                key = bit;
                v = a.substr(prefix.size());
            }
        if (key & seen) return make_error("duplicate parameter " + quoted(a));
        seen |= key;
        if (key == kExpires) {
            if (v == "max") {
                c.expires = kStickyMax;
                continue;
            }
            auto d = conf::parse_duration(v);
            if (!d || v.empty()) return make_error("invalid expires value " + quoted(v));
            c.expires = std::chrono::duration_cast<std::chrono::seconds>(*d).count();
        } else if (key == kDomain || key == kPath) {
            if (v.empty() || !is_attr_value(v))
                return make_error((key == kDomain ? "invalid domain value " : "invalid path value ") + quoted(v));
            (key == kDomain ? c.domain : c.path) = v;
        } else if (key == kSameSite) {
            if (v.size() > 1 && v[0] == '$') {
                c.samesite_var = v;
            } else if (iequals(v, "strict") || iequals(v, "lax") || iequals(v, "none")) {
                c.samesite = sticky_samesite(v);
            } else {
                return make_error("invalid samesite value " + quoted(v));
            }
        } else if (a == "httponly") {
            c.httponly = true;
        } else if (a == "secure") {
            c.secure = true;
        } else {
            return make_error("invalid parameter " + quoted(a));
        }
    }
    return c;
}

StickyId sticky_id(std::string_view addr_text) {
    const auto d = md5(addr_text);
    StickyId id;
    hex_lower(d.data(), d.size(), id.data());
    return id;
}

StickyId sticky_id(const Peer& p) { return sticky_id(p.text); }

std::string_view sticky_samesite(std::string_view v) {
    if (v.empty()) return {};
    if (iequals(v, "lax")) return "Lax";
    if (iequals(v, "none")) return "None";
    return "Strict";
}

std::string sticky_set_cookie(const StickyCookie& c, std::string_view id, time_t now, std::string_view samesite) {
    std::string s;
    s.reserve(c.name.size() + id.size() + 96 + c.domain.size() + c.path.size());
    s.append(c.name).append("=").append(id);
    if (c.expires == kStickyMax) {
        s.append("; expires=Thu, 31-Dec-2037 23:55:55 GMT");
    } else if (c.expires >= 0) {
        // RFC 6265's sane-cookie-date (5.1.1) with a four-digit year, the
        // Netscape dashes kept as nginx writes them; "max-age" too, which
        // a client prefers and which does not depend on its clock.
        static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        const time_t at = now + static_cast<time_t>(c.expires);
        struct tm tm;
        char buf[64];
        if (gmtime_r(&at, &tm) && tm.tm_year >= 0 && tm.tm_year <= 9999 - 1900) {
            const int n = snprintf(buf, sizeof buf, "%s, %02d-%s-%04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                                   tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                                   tm.tm_sec);
            if (n > 0 && static_cast<size_t>(n) < sizeof buf) s.append("; expires=").append(buf, n);
        }
        s.append("; max-age=").append(std::to_string(c.expires));
    }
    if (!c.domain.empty()) s.append("; domain=").append(c.domain);
    if (c.httponly) s.append("; httponly");
    if (!samesite.empty()) s.append("; samesite=").append(samesite);
    if (c.secure) s.append("; secure");
    if (!c.path.empty()) s.append("; path=").append(c.path);
    return s;
}

}  // namespace gatehouse::upstream
