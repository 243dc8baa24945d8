#include "http/realip_cidr.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace gatehouse::http {

namespace {

// inet_pton on a view (it wants a NUL-terminated string).
bool pton(int family, std::string_view s, void* out) {
    char z[INET6_ADDRSTRLEN + 1];
    if (s.empty() || s.size() >= sizeof z) return false;
    memcpy(z, s.data(), s.size());
    z[s.size()] = '\0';
    return inet_pton(family, z, out) == 1;
}

void set_port(sockaddr_storage* sa, uint16_t port) {
    if (sa->ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(sa)->sin_port = htons(port);
    else reinterpret_cast<sockaddr_in6*>(sa)->sin6_port = htons(port);
}

bool ip_only(std::string_view s, sockaddr_storage* sa) {
    memset(sa, 0, sizeof *sa);
    auto* in = reinterpret_cast<sockaddr_in*>(sa);
    if (pton(AF_INET, s, &in->sin_addr)) {
        in->sin_family = AF_INET;
        return true;
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(sa);
    if (pton(AF_INET6, s, &in6->sin6_addr)) {
        in6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

bool port_of(std::string_view s, uint16_t* port) {
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v == 0 || v > 65535) return false;
    *port = static_cast<uint16_t>(v);
    return true;
}

}  // namespace

Result<Cidr> parse_cidr(std::string_view s, std::string* warning) {
    Cidr c;
    if (s == "unix:") {
        c.family = AF_UNIX;
        return c;
    }
    std::string_view addr = s, bits_text;
    size_t slash = s.find('/');
    if (slash != std::string_view::npos) {
        addr = s.substr(0, slash);
        bits_text = s.substr(slash + 1);
    }
    size_t len;
    if (pton(AF_INET, addr, c.addr)) {
        c.family = AF_INET;
        len = 4;
    } else if (pton(AF_INET6, addr, c.addr)) {
        c.family = AF_INET6;
        len = 16;
    } else {
        return make_error("invalid parameter \"" + std::string(s) + "\"");
    }
    uint32_t bits = static_cast<uint32_t>(len * 8);
    if (slash != std::string_view::npos) {
        auto [p, ec] = std::from_chars(bits_text.data(), bits_text.data() + bits_text.size(), bits);
        if (bits_text.empty() || ec != std::errc() || p != bits_text.data() + bits_text.size() || bits > len * 8)
            return make_error("invalid parameter \"" + std::string(s) + "\"");
    }
    bool low_bits = false;
    for (size_t i = 0; i < len; ++i) {
        uint32_t b = bits >= 8 ? 8 : bits;
        bits -= b;
        c.mask[i] = static_cast<uint8_t>(b == 0 ? 0 : 0xff << (8 - b));
        if (c.addr[i] & ~c.mask[i]) low_bits = true;
        c.addr[i] &= c.mask[i];
    }
    if (low_bits && warning) *warning = "low address bits of " + std::string(s) + " are meaningless";
    return c;
}

Cidr cidr_of(const sockaddr* sa) {
    Cidr c;
    c.family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        memcpy(c.addr, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
        memset(c.mask, 0xff, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(c.addr, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
        memset(c.mask, 0xff, 16);
    }
    return c;
}

bool cidr_match(const Cidr& c, const sockaddr* sa) {
    const uint8_t* a = nullptr;
    int family = sa->sa_family;
    if (family == AF_INET) {
        a = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr);
    } else if (family == AF_INET6) {
        const in6_addr& a6 = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
        a = a6.s6_addr;
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        if (c.family == AF_INET && IN6_IS_ADDR_V4MAPPED(&a6)) {
            family = AF_INET;
            a += 12;
        }
    }
    if (family != c.family) return false;
    if (family == AF_UNIX) return true;
    const size_t len = family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < len; ++i)
        if ((a[i] & c.mask[i]) != c.addr[i]) return false;
    return true;
}

bool parse_addr_port(std::string_view s, sockaddr_storage* sa) {
    if (!s.empty() && s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos) return false;
        sockaddr_storage t;
        if (!ip_only(s.substr(1, close - 1), &t) || t.ss_family != AF_INET6) return false;
        std::string_view rest = s.substr(close + 1);
        uint16_t port = 0;
        if (!rest.empty() && (rest[0] != ':' || !port_of(rest.substr(1), &port))) return false;
        *sa = t;
        set_port(sa, port);
        return true;
    }
    if (ip_only(s, sa)) return true;
    // "192.0.2.1:8080": an IPv6 address without brackets has no port.
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return false;
    uint16_t port = 0;
    if (!port_of(s.substr(colon + 1), &port) || !ip_only(s.substr(0, colon), sa) || sa->ss_family != AF_INET)
        return false;
    set_port(sa, port);
    return true;
}

}  // namespace gatehouse::http
