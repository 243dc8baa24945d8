#include "core/addr_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <cstdio>
#include <cstring>

namespace gatehouse {

namespace {

// The decimal text of every byte value, for IPv4 addresses.
struct Octet {
    char text[4];
    uint8_t len;
};
constexpr auto kOctets = [] {
    std::array<Octet, 256> t{};
    for (unsigned v = 0; v < 256; ++v) {
        Octet& o = t[v];
        if (v >= 100) o.text[o.len++] = static_cast<char>('0' + v / 100);
        if (v >= 10) o.text[o.len++] = static_cast<char>('0' + v / 10 % 10);
        o.text[o.len++] = static_cast<char>('0' + v % 10);
    }
    return t;
}();

}  // namespace

void addr_text(const sockaddr* sa, char* out, size_t len, uint16_t* port) {
    out[0] = '\0';
    *port = 0;
    if (!sa) return;
    if (sa->sa_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        *port = ntohs(in->sin_port);
        // By hand: glibc's inet_ntop() formats IPv4 through sprintf(), and
        // the HTTP/1 front-end formats its client's address again for
        // every request after an idle keep-alive period.
        if (len < INET_ADDRSTRLEN) {
            inet_ntop(AF_INET, &in->sin_addr, out, static_cast<socklen_t>(len));
            return;
        }
        const auto* b = reinterpret_cast<const unsigned char*>(&in->sin_addr);
        char* p = out;
        for (int i = 0; i < 4; ++i) {
            const Octet& o = kOctets[b[i]];
            // Four bytes whatever the length: within INET_ADDRSTRLEN, and
            // what is past the digits is overwritten next.
            std::memcpy(p, o.text, 4);
            p += o.len;
            *p++ = '.';
        }
        p[-1] = '\0';
    } else if (sa->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        inet_ntop(AF_INET6, &in6->sin6_addr, out, static_cast<socklen_t>(len));
        *port = ntohs(in6->sin6_port);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, len, "unix:");
    }
}

}  // namespace gatehouse
