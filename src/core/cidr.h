// IP addresses and CIDR blocks from configuration text, and the test
// whether a client's address falls in one: "allow"/"deny" here, trusted
// proxies ("set_real_ip_from") and the like elsewhere.
//
// Pure functions and plain values: no allocation, no state. A block is
// kept as address and mask, both in network order, so that a match is a
// few ANDs whatever the family.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "core/result.h"

namespace gatehouse {

// One address, IPv4 (the first 4 bytes of `bytes`) or IPv6.
struct IpAddr {
    sa_family_t family = AF_UNSPEC;  // AF_INET or AF_INET6
    uint8_t bytes[16] = {};

    // "::ffff:a.b.c.d" (RFC 4291 2.5.5.2): an IPv4 client reaching an
    // IPv6 socket.
    bool v4_mapped() const;
    // The IPv4 address a mapped one carries; the address itself otherwise.
    IpAddr unmapped() const;
};

// The address of a socket address; nullopt for anything but AF_INET and
// AF_INET6 (a Unix socket's peer, null).
std::optional<IpAddr> ip_of(const sockaddr* sa);

// "a.b.c.d" or an IPv6 literal (RFC 4291 2.2), no brackets, no zone.
std::optional<IpAddr> parse_ip(std::string_view s);

struct Cidr {
    IpAddr addr;           // with the host bits cleared
    uint8_t mask[16] = {};
    uint8_t prefix = 0;    // bits in the mask

    // The family matches and the network bits are equal. An IPv4 block
    // does not contain "::ffff:a.b.c.d": callers decide whether a mapped
    // client counts as IPv4 (IpAddr::unmapped), as nginx's modules do.
    bool contains(const IpAddr& a) const;
};

struct ParsedCidr {
    Cidr cidr;
    // The text had bits set beyond the prefix ("10.1.2.3/8"): they were
    // cleared; nginx warns "low address bits of ... are meaningless".
    bool host_bits = false;
};

// "10.0.0.0/8", "2001:db8::/32", or an address alone (a /32 or /128
// block). The prefix is decimal, at most 32 or 128. The error is
// `invalid parameter "TEXT"`, nginx's wording for a bad allow/deny or
// set_real_ip_from argument.
Result<ParsedCidr> parse_cidr(std::string_view s);

}  // namespace gatehouse
