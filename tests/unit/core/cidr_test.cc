#include "core/cidr.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>
#include <string>

using gatehouse::Cidr;
using gatehouse::IpAddr;
using gatehouse::ip_of;
using gatehouse::parse_cidr;
using gatehouse::parse_ip;

namespace {

Cidr cidr(const char* s) { return parse_cidr(s).value().cidr; }
IpAddr ip(const char* s) { return parse_ip(s).value(); }

}  // namespace

TEST_CASE("core/cidr: IPv4 blocks, prefixes 0 to 32") {
    CHECK(cidr("10.0.0.0/8").contains(ip("10.255.1.2")));
    CHECK_FALSE(cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
    CHECK(cidr("192.168.1.1").contains(ip("192.168.1.1")));
    CHECK_FALSE(cidr("192.168.1.1").contains(ip("192.168.1.2")));
    CHECK(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    CHECK(cidr("172.16.0.0/12").contains(ip("172.31.255.255")));
    CHECK_FALSE(cidr("172.16.0.0/12").contains(ip("172.32.0.0")));
    CHECK(cidr("127.0.0.1/31").contains(ip("127.0.0.0")));
    CHECK(cidr("10.0.0.0/8").prefix == 8);
}

TEST_CASE("core/cidr: IPv6 blocks, and families never mix") {
    CHECK(cidr("::1").contains(ip("::1")));
    CHECK_FALSE(cidr("::1").contains(ip("::2")));
    CHECK(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
    CHECK_FALSE(cidr("2001:db8::/32").contains(ip("2001:db9::1")));
    CHECK(cidr("2001:db8::/33").contains(ip("2001:db8:7fff::1")));
    CHECK_FALSE(cidr("2001:db8::/33").contains(ip("2001:db8:8000::1")));
    CHECK(cidr("::/0").contains(ip("fe80::1")));
    CHECK_FALSE(cidr("::/0").contains(ip("127.0.0.1")));
    CHECK_FALSE(cidr("0.0.0.0/0").contains(ip("::1")));
}

TEST_CASE("core/cidr: an IPv4-mapped address is IPv4 only once unmapped") {
    IpAddr mapped = ip("::ffff:192.0.2.7");
    CHECK(mapped.v4_mapped());
    CHECK_FALSE(ip("::1").v4_mapped());
    CHECK_FALSE(ip("192.0.2.7").v4_mapped());
    CHECK_FALSE(cidr("192.0.2.0/24").contains(mapped));
    CHECK(cidr("192.0.2.0/24").contains(mapped.unmapped()));
    CHECK(cidr("::ffff:0:0/96").contains(mapped));
    CHECK(mapped.unmapped().family == AF_INET);
    CHECK(ip("::1").unmapped().family == AF_INET6);
}

TEST_CASE("core/cidr: host bits are cleared and reported") {
    auto p = parse_cidr("10.1.2.3/8");
    REQUIRE(p);
    CHECK(p->host_bits);
    CHECK(p->cidr.contains(ip("10.9.9.9")));
    CHECK(std::memcmp(p->cidr.addr.bytes, "\x0a\x00\x00\x00", 4) == 0);
    CHECK(parse_cidr("2001:db8::1/64")->host_bits);
    CHECK_FALSE(parse_cidr("10.0.0.0/8")->host_bits);
    CHECK_FALSE(parse_cidr("10.1.2.3")->host_bits);
    CHECK_FALSE(parse_cidr("2001:db8::/32")->host_bits);
}

TEST_CASE("core/cidr: what is not an address or a prefix is refused, with nginx's message") {
    const char* bad[] = {"", "10.0.0", "10.0.0.256", "10.0.0.0/33", "::/129", "10.0.0.0/",
                         "10.0.0.0/8x", "10.0.0.0/-1", "[::1]", "fe80::1%eth0", "localhost",
                         "1.2.3.4/8/8", "all", "unix:", "0x7f.0.0.1"};
    for (const char* s : bad) {
        CAPTURE(s);
        auto p = parse_cidr(s);
        REQUIRE_FALSE(p);
        CHECK(p.message() == "invalid parameter \"" + std::string(s) + "\"");
    }
}

TEST_CASE("core/cidr: ip_of reads inet and inet6 socket addresses, nothing else") {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    inet_pton(AF_INET, "198.51.100.4", &in.sin_addr);
    auto a = ip_of(reinterpret_cast<sockaddr*>(&in));
    REQUIRE(a);
    CHECK(cidr("198.51.100.0/24").contains(*a));
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:198.51.100.4", &in6.sin6_addr);
    auto b = ip_of(reinterpret_cast<sockaddr*>(&in6));
    REQUIRE(b);
    CHECK(b->v4_mapped());
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    CHECK_FALSE(ip_of(reinterpret_cast<sockaddr*>(&un)));
    CHECK_FALSE(ip_of(nullptr));
}
