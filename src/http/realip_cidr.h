// Address ranges and address texts for the realip module: the
// "set_real_ip_from" values and the addresses a trusted proxy reports.
//
// Pure functions, no I/O (a hostname in set_real_ip_from is resolved by
// the module, at configuration time). The blocks and their matching are
// core/cidr.h's, shared with allow/deny; this adds "unix:" and the
// dual-stack rule set_real_ip_from needs.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/cidr.h"
#include "core/result.h"

namespace gatehouse::http {

// "192.0.2.0/24", "2001:db8::/32", "192.0.2.1" (one address), or "unix:"
// (every UNIX-domain peer).
struct Cidr {
    bool unix_peers = false;  // "unix:"
    ::gatehouse::Cidr block;  // otherwise
};

// Parses "addr[/bits]" or "unix:". An address with bits set below the
// mask is accepted masked, as nginx does, with `warning` set to nginx's
// "low address bits of ... are meaningless"; otherwise `warning` is left
// alone. Errors: not an address, bits out of range.
Result<Cidr> parse_cidr(std::string_view s, std::string* warning);

// A range holding one address (a resolved hostname): /32 or /128.
Cidr cidr_of(const sockaddr* sa);

// Whether sa (AF_INET, AF_INET6 or AF_UNIX; null never) is in c. An
// IPv4-mapped IPv6 address ("::ffff:192.0.2.1") matches IPv4 ranges.
bool cidr_match(const Cidr& c, const sockaddr* sa);

// A client address as a proxy reports it: "192.0.2.1", "192.0.2.1:8080",
// "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:8080". Fills sa (port 0
// when none is given). False when s is none of these.
bool parse_addr_port(std::string_view s, sockaddr_storage* sa);

}  // namespace gatehouse::http
