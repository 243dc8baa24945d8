#include "core/addr_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>

namespace gatehouse {

void addr_text(const sockaddr* sa, char* out, size_t len, uint16_t* port) {
    out[0] = '\0';
    *port = 0;
    if (!sa) return;
    if (sa->sa_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        inet_ntop(AF_INET, &in->sin_addr, out, static_cast<socklen_t>(len));
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        inet_ntop(AF_INET6, &in6->sin6_addr, out, static_cast<socklen_t>(len));
        *port = ntohs(in6->sin6_port);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, len, "unix:");
    }
}

}  // namespace gatehouse
