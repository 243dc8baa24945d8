#include "http/realip_cidr.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "core/cidr.h"

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
        c.unix_peers = true;
        return c;
    }
    auto p = gatehouse::parse_cidr(s);
    if (!p) return p.error();
    if (p->host_bits && warning) *warning = "low address bits of " + std::string(s) + " are meaningless";
    c.block = p->cidr;
    return c;
}

Cidr cidr_of(const sockaddr* sa) {
    Cidr c;
    if (auto ip = ip_of(sa)) {
        c.block.addr = *ip;
        c.block.prefix = ip->family == AF_INET ? 32 : 128;
        memset(c.block.mask, 0xff, ip->family == AF_INET ? 4 : 16);
    }
    return c;
}

bool cidr_match(const Cidr& c, const sockaddr* sa) {
    if (sa->sa_family == AF_UNIX) return c.unix_peers;
    if (c.unix_peers) return false;
    auto ip = ip_of(sa);
    if (!ip) return false;
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    return c.block.contains(*ip) || (ip->v4_mapped() && c.block.contains(ip->unmapped()));
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
