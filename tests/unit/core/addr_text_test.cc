#include "core/addr_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using gatehouse::addr_text;

namespace {

std::string text4(uint32_t host_order, uint16_t port, uint16_t* got_port, size_t len = INET6_ADDRSTRLEN) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(host_order);
    in.sin_port = htons(port);
    char out[INET6_ADDRSTRLEN];
    addr_text(reinterpret_cast<const sockaddr*>(&in), out, len, got_port);
    return out;
}

}  // namespace

TEST_CASE("addr_text formats IPv4 as inet_ntop does, whatever the byte values") {
    // Every value in every position (0, one, two and three digits).
    for (uint32_t v = 0; v < 256; ++v) {
        for (int shift = 0; shift < 32; shift += 8) {
            const uint32_t a = (v << shift) | (shift == 0 ? 0x0a000000u : 7u);
            in_addr ia{htonl(a)};
            char want[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &ia, want, sizeof want);
            uint16_t port = 0;
            CHECK(text4(a, 8080, &port) == want);
            CHECK(port == 8080);
        }
    }
    uint16_t port = 0;
    CHECK(text4(0xffffffffu, 65535, &port) == "255.255.255.255");
    CHECK(port == 65535);
    CHECK(text4(0, 0, &port) == "0.0.0.0");
    // A buffer too small for the longest address: inet_ntop's rules.
    CHECK(text4(0x7f000001u, 1, &port, 4) == "");
}

TEST_CASE("addr_text formats IPv6 without brackets, UNIX as unix:, null as empty") {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
    in6.sin6_port = htons(443);
    char out[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    addr_text(reinterpret_cast<const sockaddr*>(&in6), out, sizeof out, &port);
    CHECK(std::string(out) == "2001:db8::1");
    CHECK(port == 443);

    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    addr_text(reinterpret_cast<const sockaddr*>(&un), out, sizeof out, &port);
    CHECK(std::string(out) == "unix:");
    CHECK(port == 0);

    addr_text(nullptr, out, sizeof out, &port);
    CHECK(std::string(out).empty());
}
