#include "conf/values.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstring>

namespace gatehouse::conf {

namespace {

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool all_digits(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

}  // namespace

Result<uint64_t> parse_number(std::string_view s, uint64_t max) {
    if (!all_digits(s)) return make_error("invalid number " + quoted(s));
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v > max)
        return make_error("number " + quoted(s) + " is out of range");
    return v;
}

Result<uint64_t> parse_size(std::string_view s) {
    if (s.empty()) return make_error("invalid size \"\"");
    uint64_t mult = 1;
    std::string_view digits = s;
    switch (s.back()) {
        case 'k': case 'K': mult = 1ull << 10; digits.remove_suffix(1); break;
        case 'm': case 'M': mult = 1ull << 20; digits.remove_suffix(1); break;
        case 'g': case 'G': mult = 1ull << 30; digits.remove_suffix(1); break;
        default: break;
    }
    if (!all_digits(digits)) return make_error("invalid size " + quoted(s));
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc() || p != digits.data() + digits.size() || v > UINT64_MAX / mult)
        return make_error("size " + quoted(s) + " is too large");
    return v * mult;
}

Result<Duration> parse_duration(std::string_view s) {
    // Units from the largest down; each may appear once, in this order.
    struct Unit {
        std::string_view name;
        uint64_t ms;
    };
    static constexpr Unit kUnits[] = {
        {"y", 365ull * 86400 * 1000}, {"M", 30ull * 86400 * 1000}, {"w", 7ull * 86400 * 1000},
        {"d", 86400ull * 1000},       {"h", 3600ull * 1000},       {"m", 60ull * 1000},
        {"s", 1000},                  {"ms", 1},
    };
    constexpr uint64_t kMax = static_cast<uint64_t>(INT64_MAX) / 2;
    auto bad = [&] { return make_error("invalid time " + quoted(s)); };
    if (s.empty()) return bad();
    uint64_t total = 0;
    size_t next_unit = 0;  // index into kUnits of the smallest unit still allowed
    size_t i = 0;
    bool any = false;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ') ++i;
        if (i == s.size()) break;
        size_t d0 = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        if (i == d0) return bad();
        uint64_t v = 0;
        auto [p, ec] = std::from_chars(s.data() + d0, s.data() + i, v);
        if (ec != std::errc()) return make_error("time " + quoted(s) + " is too large");
        (void)p;
        size_t u0 = i;
        while (i < s.size() && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) ++i;
        std::string_view unit = s.substr(u0, i - u0);
        uint64_t mult = 0;
        if (unit.empty()) {
            // A bare number is seconds, and only as the last element.
            mult = 1000;
            if (next_unit > 6) return bad();
            next_unit = 8;
        } else {
            size_t k = next_unit;
            for (; k < std::size(kUnits); ++k)
                if (kUnits[k].name == unit) break;
            if (k == std::size(kUnits)) return bad();
            mult = kUnits[k].ms;
            next_unit = k + 1;
        }
        if (v > kMax / mult || total > kMax - v * mult)
            return make_error("time " + quoted(s) + " is too large");
        total += v * mult;
        any = true;
    }
    if (!any) return bad();
    return Duration(static_cast<int64_t>(total));
}

Result<bool> parse_flag(std::string_view s) {
    if (s == "on") return true;
    if (s == "off") return false;
    return make_error("invalid value " + quoted(s) + ", it must be \"on\" or \"off\"");
}

std::string Address::text() const {
    switch (kind) {
        case Kind::Unix: return "unix:" + path;
        case Kind::Inet6: return "[" + host + "]:" + std::to_string(port);
        default: return host + ":" + std::to_string(port);
    }
}

std::string sockaddr_text(const sockaddr* sa) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (sa->sa_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    return "?";
}

namespace {

bool valid_hostname(std::string_view h) {
    if (h.empty() || h.size() > 253) return false;
    for (char c : h) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok) return false;
    }
    return h.front() != '.' && h.front() != '-';
}

Result<uint16_t> parse_port(std::string_view p, std::string_view whole) {
    if (!all_digits(p) || p.size() > 5) return make_error("invalid port in " + quoted(whole));
    unsigned v = 0;
    std::from_chars(p.data(), p.data() + p.size(), v);
    if (v == 0 || v > 65535) return make_error("invalid port in " + quoted(whole));
    return static_cast<uint16_t>(v);
}

}  // namespace

Result<Address> parse_address(std::string_view s, const AddressRules& rules) {
    Address a;
    auto bad = [&](std::string_view why) {
        return make_error(std::string(why) + " in address " + quoted(s));
    };
    if (s.empty()) return make_error("empty address");
    // inet_pton() and sun_path stop at a NUL: "127.0.0.1\0junk" must not
    // pass for 127.0.0.1.
    if (s.find('\0') != std::string_view::npos) return bad("invalid character");
    if (s.substr(0, 5) == "unix:") {
        if (!rules.unix_path) return bad("unix sockets are not allowed");
        std::string_view p = s.substr(5);
        if (p.empty() || p[0] != '/') return bad("unix socket path must be absolute");
        sockaddr_un un{};
        if (p.size() >= sizeof un.sun_path) return bad("unix socket path is too long");
        un.sun_family = AF_UNIX;
        std::memcpy(un.sun_path, p.data(), p.size());
        a.kind = Address::Kind::Unix;
        a.path = std::string(p);
        std::memcpy(&a.sa, &un, sizeof un);
        a.sa_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + p.size() + 1);
        return a;
    }
    std::string_view host, port;
    if (s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos) return bad("missing \"]\"");
        host = s.substr(1, close - 1);
        std::string_view rest = s.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':') return bad("unexpected characters after \"]\"");
            port = rest.substr(1);
            if (port.empty()) return bad("empty port");
        }
        in6_addr a6{};
        std::string h(host);
        if (inet_pton(AF_INET6, h.c_str(), &a6) != 1) return bad("invalid IPv6 address");
        a.kind = Address::Kind::Inet6;
        a.host = h;
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = a6;
        std::memcpy(&a.sa, &sin6, sizeof sin6);
        a.sa_len = sizeof sin6;
    } else {
        size_t colon = s.rfind(':');
        if (colon != std::string_view::npos) {
            if (s.find(':') != colon) return bad("IPv6 addresses must be in brackets");
            host = s.substr(0, colon);
            port = s.substr(colon + 1);
            if (port.empty()) return bad("empty port");
            if (host.empty()) return bad("empty host");
        } else if (rules.port_only && all_digits(s)) {
            host = "*";
            port = s;
        } else {
            host = s;
        }
        in_addr a4{};
        std::string h(host);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        if (h == "*") {
            if (!rules.wildcard) return bad("\"*\" is not allowed");
            sin.sin_addr.s_addr = htonl(INADDR_ANY);
            a.kind = Address::Kind::Inet;
        } else if (inet_pton(AF_INET, h.c_str(), &a4) == 1) {
            sin.sin_addr = a4;
            a.kind = Address::Kind::Inet;
        } else {
            if (!valid_hostname(h)) return bad("invalid host");
            if (!rules.names) return bad("host names are not allowed");
            a.kind = Address::Kind::Name;
        }
        a.host = h;
        if (a.kind == Address::Kind::Inet) {
            std::memcpy(&a.sa, &sin, sizeof sin);
            a.sa_len = sizeof sin;
        }
    }
    a.port = rules.default_port;
    if (!port.empty()) {
        auto p = parse_port(port, s);
        if (!p) return p.error();
        a.port = *p;
        a.port_given = true;
    }
    if (a.kind == Address::Kind::Inet)
        reinterpret_cast<sockaddr_in*>(&a.sa)->sin_port = htons(a.port);
    else if (a.kind == Address::Kind::Inet6)
        reinterpret_cast<sockaddr_in6*>(&a.sa)->sin6_port = htons(a.port);
    return a;
}

std::vector<HostAddress> lookup_host(const std::string& host, uint16_t port, int socktype, bool addrconfig) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = socktype;
    if (addrconfig) hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    std::vector<HostAddress> out;
    const std::string service = std::to_string(port);
    if (getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0) return out;
    for (addrinfo* r = res; r; r = r->ai_next) {
        if ((r->ai_family != AF_INET && r->ai_family != AF_INET6) || r->ai_addrlen > sizeof(sockaddr_storage))
            continue;
        HostAddress& h = out.emplace_back();
        std::memcpy(&h.sa, r->ai_addr, r->ai_addrlen);
        h.len = r->ai_addrlen;
    }
    freeaddrinfo(res);
    return out;
}

}  // namespace gatehouse::conf
