// Tests of src/conf/values.h: a row per unit and per error message.
#include "conf/values.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>
#include <string>

using namespace std::chrono_literals;
using gatehouse::conf::Address;
using gatehouse::conf::AddressRules;
using gatehouse::conf::Duration;
using gatehouse::conf::parse_address;
using gatehouse::conf::parse_duration;
using gatehouse::conf::parse_flag;
using gatehouse::conf::parse_number;
using gatehouse::conf::parse_size;

namespace {

template <typename R>
std::string error_of(const R& r) {
    REQUIRE_FALSE(r.ok());
    return r.message();
}

AddressRules listen_rules() {
    AddressRules r;
    r.port_only = true;
    r.wildcard = true;
    r.names = false;
    return r;
}

}  // namespace

// ---- parse_size -------------------------------------------------------------

TEST_CASE("conf/value: parse_size takes every nginx unit") {
    CHECK(parse_size("0").value() == 0);
    CHECK(parse_size("512").value() == 512);
    CHECK(parse_size("10k").value() == 10 * 1024);
    CHECK(parse_size("10K").value() == 10 * 1024);
    CHECK(parse_size("1m").value() == 1024 * 1024);
    CHECK(parse_size("1M").value() == 1024 * 1024);
    CHECK(parse_size("2g").value() == 2ull << 30);
    CHECK(parse_size("2G").value() == 2ull << 30);
    CHECK(parse_size("007").value() == 7);
}

TEST_CASE("conf/value: parse_size limits") {
    CHECK(parse_size("18446744073709551615").value() == UINT64_MAX);
    CHECK(parse_size("18014398509481983k").value() == 18014398509481983ull * 1024);
    CHECK(error_of(parse_size("18014398509481984k")) == "size \"18014398509481984k\" is too large");
    CHECK(error_of(parse_size("17179869184g")) == "size \"17179869184g\" is too large");
    CHECK(error_of(parse_size("18446744073709551616")) ==
          "size \"18446744073709551616\" is too large");
}

TEST_CASE("conf/value: parse_size errors") {
    CHECK(error_of(parse_size("")) == "invalid size \"\"");
    CHECK(error_of(parse_size("10q")) == "invalid size \"10q\"");
    CHECK(error_of(parse_size("k")) == "invalid size \"k\"");
    CHECK(error_of(parse_size("-1")) == "invalid size \"-1\"");
    CHECK(error_of(parse_size("+1")) == "invalid size \"+1\"");
    CHECK(error_of(parse_size("1.5k")) == "invalid size \"1.5k\"");
    CHECK(error_of(parse_size(" 1k")) == "invalid size \" 1k\"");
    CHECK(error_of(parse_size("1k ")) == "invalid size \"1k \"");
    CHECK(error_of(parse_size("1kk")) == "invalid size \"1kk\"");
    CHECK(error_of(parse_size("1kb")) == "invalid size \"1kb\"");
    CHECK(error_of(parse_size("1t")) == "invalid size \"1t\"");
}

// ---- parse_duration ---------------------------------------------------------

TEST_CASE("conf/value: parse_duration takes every nginx unit") {
    CHECK(parse_duration("30").value() == 30s);
    CHECK(parse_duration("0").value() == 0ms);
    CHECK(parse_duration("500ms").value() == 500ms);
    CHECK(parse_duration("30s").value() == 30s);
    CHECK(parse_duration("1m").value() == 1min);
    CHECK(parse_duration("1h").value() == 1h);
    CHECK(parse_duration("1d").value() == 24h);
    CHECK(parse_duration("1w").value() == 7 * 24h);
    CHECK(parse_duration("1M").value() == 30 * 24h);
    CHECK(parse_duration("1y").value() == 365 * 24h);
}

TEST_CASE("conf/value: parse_duration combines units from the largest down") {
    CHECK(parse_duration("1h 30m").value() == 90min);
    CHECK(parse_duration("1h30m").value() == 90min);
    CHECK(parse_duration("1m 30s").value() == 90s);
    CHECK(parse_duration("1s 500ms").value() == 1500ms);
    CHECK(parse_duration("1y 1M 1w 1d 1h 1m 1s 1ms").value() ==
          Duration(365 * 24h + 30 * 24h + 7 * 24h + 24h + 1h + 1min + 1s + 1ms));
    // A bare number after minutes or larger units is seconds.
    CHECK(parse_duration("1m 30").value() == 90s);
    CHECK(parse_duration("1h 5").value() == 1h + 5s);
    CHECK(parse_duration("  10s  ").value() == 10s);
}

TEST_CASE("conf/value: parse_duration errors") {
    CHECK(error_of(parse_duration("")) == "invalid time \"\"");
    CHECK(error_of(parse_duration("   ")) == "invalid time \"   \"");
    CHECK(error_of(parse_duration("5 parsecs")) == "invalid time \"5 parsecs\"");
    CHECK(error_of(parse_duration("s")) == "invalid time \"s\"");
    CHECK(error_of(parse_duration("1x")) == "invalid time \"1x\"");
    CHECK(error_of(parse_duration("1S")) == "invalid time \"1S\"");
    CHECK(error_of(parse_duration("1H")) == "invalid time \"1H\"");
    CHECK(error_of(parse_duration("-1s")) == "invalid time \"-1s\"");
    CHECK(error_of(parse_duration("1.5s")) == "invalid time \"1.5s\"");
    CHECK(error_of(parse_duration("1s 1m")) == "invalid time \"1s 1m\"");
    CHECK(error_of(parse_duration("1m 1m")) == "invalid time \"1m 1m\"");
    CHECK(error_of(parse_duration("1s 30")) == "invalid time \"1s 30\"");
    CHECK(error_of(parse_duration("1ms 1")) == "invalid time \"1ms 1\"");
    CHECK(error_of(parse_duration("30 30")) == "invalid time \"30 30\"");
    CHECK(error_of(parse_duration("1s;")) == "invalid time \"1s;\"");
}

TEST_CASE("conf/value: parse_duration limits") {
    CHECK(parse_duration("4611686018427387903ms").value() == Duration(INT64_MAX / 2));
    CHECK(error_of(parse_duration("4611686018427387904ms")) ==
          "time \"4611686018427387904ms\" is too large");
    CHECK(error_of(parse_duration("5000000000000000")) == "time \"5000000000000000\" is too large");
    CHECK(error_of(parse_duration("99999999999999999999s")) ==
          "time \"99999999999999999999s\" is too large");
    CHECK(error_of(parse_duration("146235604338y")) == "time \"146235604338y\" is too large");
    // The sum overflows though each part fits.
    CHECK(error_of(parse_duration("100000000y 4611686018427387903ms")) ==
          "time \"100000000y 4611686018427387903ms\" is too large");
}

// ---- parse_flag -------------------------------------------------------------

TEST_CASE("conf/value: parse_flag") {
    CHECK(parse_flag("on").value() == true);
    CHECK(parse_flag("off").value() == false);
    CHECK(error_of(parse_flag("yes")) == "invalid value \"yes\", it must be \"on\" or \"off\"");
    CHECK(error_of(parse_flag("On")) == "invalid value \"On\", it must be \"on\" or \"off\"");
    CHECK(error_of(parse_flag("")) == "invalid value \"\", it must be \"on\" or \"off\"");
    CHECK(error_of(parse_flag("on ")) == "invalid value \"on \", it must be \"on\" or \"off\"");
}

// ---- parse_number -----------------------------------------------------------

TEST_CASE("conf/value: parse_number") {
    CHECK(parse_number("0").value() == 0);
    CHECK(parse_number("42").value() == 42);
    CHECK(parse_number("007").value() == 7);
    CHECK(parse_number("18446744073709551615").value() == UINT64_MAX);
    CHECK(parse_number("1024", 1024).value() == 1024);
    CHECK(error_of(parse_number("1025", 1024)) == "number \"1025\" is out of range");
    CHECK(error_of(parse_number("18446744073709551616")) ==
          "number \"18446744073709551616\" is out of range");
    CHECK(error_of(parse_number("")) == "invalid number \"\"");
    CHECK(error_of(parse_number("-1")) == "invalid number \"-1\"");
    CHECK(error_of(parse_number("+1")) == "invalid number \"+1\"");
    CHECK(error_of(parse_number("1k")) == "invalid number \"1k\"");
    CHECK(error_of(parse_number("0x10")) == "invalid number \"0x10\"");
    CHECK(error_of(parse_number(" 1")) == "invalid number \" 1\"");
}

// ---- parse_address ----------------------------------------------------------

TEST_CASE("conf/value: parse_address: IPv4 host:port") {
    auto a = parse_address("127.0.0.1:8080", AddressRules{});
    REQUIRE(a.ok());
    CHECK(a->kind == Address::Kind::Inet);
    CHECK(a->host == "127.0.0.1");
    CHECK(a->port == 8080);
    CHECK(a->port_given);
    CHECK(a->text() == "127.0.0.1:8080");
    REQUIRE(a->sa_len == sizeof(sockaddr_in));
    sockaddr_in sin;
    std::memcpy(&sin, &a->sa, sizeof sin);
    CHECK(sin.sin_family == AF_INET);
    CHECK(ntohs(sin.sin_port) == 8080);
    CHECK(ntohl(sin.sin_addr.s_addr) == INADDR_LOOPBACK);
}

TEST_CASE("conf/value: parse_address: the default port") {
    AddressRules r;
    r.default_port = 443;
    auto a = parse_address("10.0.0.1", r);
    REQUIRE(a.ok());
    CHECK(a->port == 443);
    CHECK_FALSE(a->port_given);
    CHECK(a->text() == "10.0.0.1:443");
    sockaddr_in sin;
    std::memcpy(&sin, &a->sa, sizeof sin);
    CHECK(ntohs(sin.sin_port) == 443);
    CHECK(parse_address("10.0.0.1:1", r)->port == 1);
    CHECK(parse_address("10.0.0.1:65535", r)->port == 65535);
}

TEST_CASE("conf/value: parse_address: IPv6 in brackets") {
    auto a = parse_address("[::1]:8080", AddressRules{});
    REQUIRE(a.ok());
    CHECK(a->kind == Address::Kind::Inet6);
    CHECK(a->host == "::1");
    CHECK(a->port == 8080);
    CHECK(a->text() == "[::1]:8080");
    REQUIRE(a->sa_len == sizeof(sockaddr_in6));
    sockaddr_in6 sin6;
    std::memcpy(&sin6, &a->sa, sizeof sin6);
    CHECK(sin6.sin6_family == AF_INET6);
    CHECK(ntohs(sin6.sin6_port) == 8080);
    CHECK(IN6_IS_ADDR_LOOPBACK(&sin6.sin6_addr));

    auto any = parse_address("[::]", AddressRules{});
    REQUIRE(any.ok());
    CHECK(any->port == 80);
    CHECK_FALSE(any->port_given);
    CHECK(any->text() == "[::]:80");
    CHECK(parse_address("[2001:db8::1]:443", AddressRules{})->host == "2001:db8::1");
}

TEST_CASE("conf/value: parse_address: unix sockets") {
    auto a = parse_address("unix:/run/g.sock", AddressRules{});
    REQUIRE(a.ok());
    CHECK(a->kind == Address::Kind::Unix);
    CHECK(a->path == "/run/g.sock");
    CHECK(a->text() == "unix:/run/g.sock");
    sockaddr_un un;
    std::memcpy(&un, &a->sa, sizeof un);
    CHECK(un.sun_family == AF_UNIX);
    CHECK(std::string(un.sun_path) == "/run/g.sock");
    CHECK(a->sa_len == offsetof(sockaddr_un, sun_path) + 12);
}

TEST_CASE("conf/value: parse_address: host names") {
    auto a = parse_address("example.com:80", AddressRules{});
    REQUIRE(a.ok());
    CHECK(a->kind == Address::Kind::Name);
    CHECK(a->host == "example.com");
    CHECK(a->port == 80);
    CHECK(a->sa_len == 0);  // resolved by the caller
    CHECK(a->text() == "example.com:80");
    CHECK(parse_address("localhost", AddressRules{})->kind == Address::Kind::Name);
    CHECK(parse_address("my_host-1.local:1", AddressRules{}).ok());
}

TEST_CASE("conf/value: parse_address: listen forms") {
    auto port = parse_address("8080", listen_rules());
    REQUIRE(port.ok());
    CHECK(port->kind == Address::Kind::Inet);
    CHECK(port->host == "*");
    CHECK(port->port == 8080);
    CHECK(port->text() == "*:8080");
    sockaddr_in sin;
    std::memcpy(&sin, &port->sa, sizeof sin);
    CHECK(sin.sin_addr.s_addr == htonl(INADDR_ANY));

    auto star = parse_address("*:80", listen_rules());
    REQUIRE(star.ok());
    CHECK(star->host == "*");
    CHECK(star->port == 80);
    CHECK(parse_address("*", listen_rules())->port == 80);
}

TEST_CASE("conf/value: parse_address errors") {
    AddressRules any;
    CHECK(error_of(parse_address("", any)) == "empty address");
    CHECK(error_of(parse_address("unix:", any)) ==
          "unix socket path must be absolute in address \"unix:\"");
    CHECK(error_of(parse_address("unix:run/g.sock", any)) ==
          "unix socket path must be absolute in address \"unix:run/g.sock\"");
    std::string long_path = "unix:/" + std::string(200, 'x');
    CHECK(error_of(parse_address(long_path, any)) ==
          "unix socket path is too long in address \"" + long_path + "\"");
    CHECK(error_of(parse_address("[::1", any)) == "missing \"]\" in address \"[::1\"");
    CHECK(error_of(parse_address("[::1]80", any)) ==
          "unexpected characters after \"]\" in address \"[::1]80\"");
    CHECK(error_of(parse_address("[::1]:", any)) == "empty port in address \"[::1]:\"");
    CHECK(error_of(parse_address("[zz]:80", any)) == "invalid IPv6 address in address \"[zz]:80\"");
    CHECK(error_of(parse_address("[127.0.0.1]:80", any)) ==
          "invalid IPv6 address in address \"[127.0.0.1]:80\"");
    CHECK(error_of(parse_address("::1", any)) ==
          "IPv6 addresses must be in brackets in address \"::1\"");
    CHECK(error_of(parse_address("host:", any)) == "empty port in address \"host:\"");
    CHECK(error_of(parse_address(":80", any)) == "empty host in address \":80\"");
    CHECK(error_of(parse_address("bad host:80", any)) == "invalid host in address \"bad host:80\"");
    CHECK(error_of(parse_address("-x:80", any)) == "invalid host in address \"-x:80\"");
    CHECK(error_of(parse_address(".x", any)) == "invalid host in address \".x\"");
    CHECK(error_of(parse_address("*:80", any)) == "\"*\" is not allowed in address \"*:80\"");
    CHECK(error_of(parse_address(std::string_view("127.0.0.1\0x:80", 14), any)) ==
          std::string("invalid character in address \"127.0.0.1\0x:80\"", 45));
}

TEST_CASE("conf/value: parse_address port errors") {
    AddressRules any;
    CHECK(error_of(parse_address("1.2.3.4:0", any)) == "invalid port in \"1.2.3.4:0\"");
    CHECK(error_of(parse_address("1.2.3.4:65536", any)) == "invalid port in \"1.2.3.4:65536\"");
    CHECK(error_of(parse_address("1.2.3.4:123456", any)) == "invalid port in \"1.2.3.4:123456\"");
    CHECK(error_of(parse_address("1.2.3.4:http", any)) == "invalid port in \"1.2.3.4:http\"");
    CHECK(error_of(parse_address("1.2.3.4:-1", any)) == "invalid port in \"1.2.3.4:-1\"");
    CHECK(error_of(parse_address("[::1]:99999", any)) == "invalid port in \"[::1]:99999\"");
}

TEST_CASE("conf/value: parse_address rules refuse what they do not allow") {
    AddressRules r;
    r.unix_path = false;
    CHECK(error_of(parse_address("unix:/x", r)) ==
          "unix sockets are not allowed in address \"unix:/x\"");
    CHECK(error_of(parse_address("example.com", listen_rules())) ==
          "host names are not allowed in address \"example.com\"");
    // Without port_only, a bare number is a (numeric) host name.
    auto n = parse_address("8080", AddressRules{});
    REQUIRE(n.ok());
    CHECK(n->kind == Address::Kind::Name);
    CHECK(n->port == 80);
}
