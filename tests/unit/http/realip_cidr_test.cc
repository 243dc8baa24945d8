#include "http/realip_cidr.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <sys/un.h>

#include <string>

using namespace gatehouse::http;

namespace {

sockaddr_storage addr(const char* ip, uint16_t port = 0) {
    sockaddr_storage sa{};
    if (inet_pton(AF_INET, ip, &reinterpret_cast<sockaddr_in&>(sa).sin_addr) == 1) {
        sa.ss_family = AF_INET;
        reinterpret_cast<sockaddr_in&>(sa).sin_port = htons(port);
    } else {
        REQUIRE(inet_pton(AF_INET6, ip, &reinterpret_cast<sockaddr_in6&>(sa).sin6_addr) == 1);
        sa.ss_family = AF_INET6;
        reinterpret_cast<sockaddr_in6&>(sa).sin6_port = htons(port);
    }
    return sa;
}

bool match(const char* cidr, const char* ip) {
    auto c = parse_cidr(cidr, nullptr);
    REQUIRE(c);
    sockaddr_storage sa = addr(ip);
    return cidr_match(*c, reinterpret_cast<const sockaddr*>(&sa));
}

std::string text(const sockaddr_storage& sa, uint16_t* port) {
    char b[INET6_ADDRSTRLEN];
    if (sa.ss_family == AF_INET) {
        *port = ntohs(reinterpret_cast<const sockaddr_in&>(sa).sin_port);
        return inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(sa).sin_addr, b, sizeof b);
    }
    *port = ntohs(reinterpret_cast<const sockaddr_in6&>(sa).sin6_port);
    return inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(sa).sin6_addr, b, sizeof b);
}

}  // namespace

TEST_CASE("http/realip_cidr: ranges match the addresses inside them") {
    CHECK(match("192.0.2.0/24", "192.0.2.255"));
    CHECK_FALSE(match("192.0.2.0/24", "192.0.3.1"));
    CHECK(match("127.0.0.1", "127.0.0.1"));
    CHECK_FALSE(match("127.0.0.1", "127.0.0.2"));
    CHECK(match("0.0.0.0/0", "203.0.113.9"));
    CHECK(match("10.0.0.0/7", "11.255.0.1"));
    CHECK(match("2001:db8::/32", "2001:db8:ffff::1"));
    CHECK_FALSE(match("2001:db8::/32", "2001:db9::1"));
    CHECK(match("::1", "::1"));
    CHECK(match("::/0", "2001:db8::1"));
    // Families do not mix, except an IPv4-mapped address in an IPv4 range.
    CHECK_FALSE(match("::/0", "192.0.2.1"));
    CHECK_FALSE(match("0.0.0.0/0", "2001:db8::1"));
    CHECK(match("192.0.2.0/24", "::ffff:192.0.2.7"));
}

TEST_CASE("http/realip_cidr: unix: matches UNIX-domain peers only") {
    auto c = parse_cidr("unix:", nullptr);
    REQUIRE(c);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    CHECK(cidr_match(*c, reinterpret_cast<const sockaddr*>(&un)));
    sockaddr_storage in = addr("127.0.0.1");
    CHECK_FALSE(cidr_match(*c, reinterpret_cast<const sockaddr*>(&in)));
    auto any = parse_cidr("0.0.0.0/0", nullptr);
    CHECK_FALSE(cidr_match(*any, reinterpret_cast<const sockaddr*>(&un)));
}

TEST_CASE("http/realip_cidr: parse errors and nginx's warning") {
    for (const char* bad : {"", "192.0.2.0/33", "2001:db8::/129", "192.0.2.0/", "192.0.2.0/x", "localhost",
                            "192.0.2.256", "unix:/tmp/s"}) {
        CAPTURE(bad);
        auto c = parse_cidr(bad, nullptr);
        REQUIRE_FALSE(c);
        CHECK(c.message() == "invalid parameter \"" + std::string(bad) + "\"");
    }
    std::string w;
    auto c = parse_cidr("192.0.2.1/24", &w);
    REQUIRE(c);
    CHECK(w == "low address bits of 192.0.2.1/24 are meaningless");
    CHECK(match("192.0.2.1/24", "192.0.2.200"));
    w.clear();
    REQUIRE(parse_cidr("192.0.2.0/24", &w));
    CHECK(w.empty());
}

TEST_CASE("http/realip_cidr: cidr_of holds one address") {
    sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2"), c6 = addr("2001:db8::1");
    Cidr one = cidr_of(reinterpret_cast<const sockaddr*>(&a));
    CHECK(cidr_match(one, reinterpret_cast<const sockaddr*>(&a)));
    CHECK_FALSE(cidr_match(one, reinterpret_cast<const sockaddr*>(&b)));
    Cidr six = cidr_of(reinterpret_cast<const sockaddr*>(&c6));
    CHECK(cidr_match(six, reinterpret_cast<const sockaddr*>(&c6)));
}

TEST_CASE("http/realip_cidr: addresses as proxies report them") {
    struct Row {
        const char* in;
        const char* ip;
        uint16_t port;
    };
    const Row ok[] = {
        {"192.0.2.1", "192.0.2.1", 0},
        {"192.0.2.1:8080", "192.0.2.1", 8080},
        {"2001:db8::1", "2001:db8::1", 0},
        {"[2001:db8::1]", "2001:db8::1", 0},
        {"[2001:DB8::1]:443", "2001:db8::1", 443},
        {"::ffff:192.0.2.1", "::ffff:192.0.2.1", 0},
    };
    for (const Row& row : ok) {
        CAPTURE(row.in);
        sockaddr_storage sa;
        REQUIRE(parse_addr_port(row.in, &sa));
        uint16_t port = 1;
        CHECK(text(sa, &port) == row.ip);
        CHECK(port == row.port);
    }
    for (const char* bad : {"", "unknown", "192.0.2.1:", "192.0.2.1:0", "192.0.2.1:65536", "[192.0.2.1]",
                            "[2001:db8::1", "[2001:db8::1]80", "192.0.2", "example.com:80"}) {
        CAPTURE(bad);
        sockaddr_storage sa;
        CHECK_FALSE(parse_addr_port(bad, &sa));
    }
}
