// Session persistence: NGINX Plus's "sticky cookie" in an upstream block.
//
// The seam, in three parts, so that the proxy knows no more than that a
// group may name a server in a cookie:
//  - config: parse_sticky() reads the directive's arguments into a
//    StickyCookie (UpstreamConf::sticky; null for the groups without it,
//    which then pay nothing per request);
//  - the pick: the proxy hands the cookie's value to
//    PeerPicker::set_sticky(); the picker's first next() takes the server
//    it names when that server is usable, else balances by the group's
//    method as if no cookie had come (retries too);
//  - the response: the proxy asks sticky_set_cookie() for the field that
//    names the peer that answered, when the client's cookie did not
//    name it already.
//
// A server's id is the MD5 of its address as $upstream_addr writes it
// ("127.0.0.1:8081", "[::1]:80", "unix:/run/app.sock"), in hex, as NGINX
// Plus's: the same in every worker and after a reload, without showing
// the address to the client.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gatehouse::conf {
struct Node;
}

namespace gatehouse::upstream {

struct Peer;

// "sticky cookie name [expires=time] [domain=domain] [httponly]
// [samesite=strict|lax|none|$variable] [secure] [path=path]".
struct StickyCookie {
    std::string name;
    // Seconds from the response; kStickySession: no expires attribute (a
    // session cookie); kStickyMax: "expires=max".
    int64_t expires = -1;
    std::string domain;  // empty: no Domain attribute
    std::string path;    // empty: no Path attribute
    bool httponly = false;
    bool secure = false;
    // "Strict", "Lax", "None"; empty: no SameSite attribute. A variable
    // ("$v") is kept as written in samesite_var and evaluated per
    // response by the proxy (the upstream layer cannot evaluate
    // variables): it compiles it from `node` into samesite_value (an
    // http::ComplexValue in the generation arena) at config time.
    std::string samesite;
    std::string samesite_var;
    const conf::Node* node = nullptr;  // owner: the generation's tree
    const void* samesite_value = nullptr;
};
inline constexpr int64_t kStickySession = -1;
inline constexpr int64_t kStickyMax = -2;

// The arguments after "sticky" (args[0] must be "cookie"). Errors are
// the message the registry prints with file:line: "invalid parameter
// \"x\"", "invalid expires value \"x\"", "invalid samesite value \"x\"".
Result<StickyCookie> parse_sticky(std::span<const std::string_view> args);

// A server's id: 32 lower-case hex digits.
using StickyId = std::array<char, 32>;
StickyId sticky_id(std::string_view addr_text);
StickyId sticky_id(const Peer& p);
inline std::string_view view(const StickyId& id) { return {id.data(), id.size()}; }

// The value of the Set-Cookie field naming `id`, `now` the wall clock's
// seconds (for expires=). `samesite`: the attribute's value for this
// response (the literal's, or the variable's mapped by
// sticky_samesite()); empty: none. Attributes in NGINX Plus's order:
// expires, domain, httponly, samesite, secure, path.
std::string sticky_set_cookie(const StickyCookie& c, std::string_view id, time_t now, std::string_view samesite);

// A "samesite=$variable" value as NGINX Plus maps it: empty stays empty
// (no attribute), strict/lax/none (any case) their canonical spelling,
// anything else "Strict".
std::string_view sticky_samesite(std::string_view value);

}  // namespace gatehouse::upstream
