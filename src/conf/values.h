// Value parsers for directive arguments, as nginx reads them.
//
// Each returns the typed value or an error that names the kind of value
// ("invalid size \"10q\""); the registry adds the directive and file:line.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gatehouse::conf {

using Duration = std::chrono::milliseconds;

// "512", "10k", "10K", "1m", "2g": bytes. No sign, no fraction.
Result<uint64_t> parse_size(std::string_view s);

// "30", "30s", "500ms", "1h", "1h 30m", "1d", "1w", "1M" (30 days),
// "1y" (365 days). A bare number is seconds. Units may be combined, each at
// most once and from the larger to the smaller, as nginx accepts.
Result<Duration> parse_duration(std::string_view s);

// "on" or "off".
Result<bool> parse_flag(std::string_view s);

// A plain non-negative decimal number that fits in `max`.
Result<uint64_t> parse_number(std::string_view s, uint64_t max = UINT64_MAX);

struct Address {
    enum class Kind : uint8_t { Inet, Inet6, Unix, Name };
    Kind kind = Kind::Inet;
    std::string host;      // literal as written without brackets, "*" for any
    std::string path;      // Unix sockets
    uint16_t port = 0;
    bool port_given = false;
    // Valid for Inet, Inet6 and Unix; Name needs resolving first.
    sockaddr_storage sa{};
    socklen_t sa_len = 0;

    // "127.0.0.1:80", "[::1]:8080", "unix:/run/g.sock", "example.com:80".
    std::string text() const;
};

// The text of an IPv4 or IPv6 socket address with its port, as
// Address::text() writes it: "127.0.0.1:80", "[::1]:8080"; "?" for other
// families. For logs and $upstream_addr.
std::string sockaddr_text(const sockaddr* sa);

struct AddressRules {
    uint16_t default_port = 80;
    bool port_only = false;  // "8080" alone means *:8080 ("listen")
    bool wildcard = false;   // "*:80" allowed ("listen")
    bool unix_path = true;   // "unix:/path" allowed
    bool names = true;       // host names allowed (resolved by the caller)
};

// "host:port", "host", "*:port", "port", "[::1]:port", "[::]", "unix:/path".
Result<Address> parse_address(std::string_view s, const AddressRules& rules);

// The IPv4 and IPv6 addresses of a host name, with `port`, in the order
// getaddrinfo() gives them; empty when the name is not found. Blocking:
// configuration time only, in the master, the one place a lookup may
// block (STYLE.md, section 5). `socktype` is SOCK_STREAM or SOCK_DGRAM;
// `addrconfig` asks only for families this host has an address of
// (AI_ADDRCONFIG).
struct HostAddress {
    sockaddr_storage sa{};
    socklen_t len = 0;
};
std::vector<HostAddress> lookup_host(const std::string& host, uint16_t port, int socktype,
                                     bool addrconfig = false);

}  // namespace gatehouse::conf
