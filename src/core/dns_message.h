// DNS messages as the resolver needs them (RFC 1035, 2181, 2308, 3596):
// a query for one name's A or AAAA records, and the parse of the answer
// with every check an answer from the network needs before it is
// believed. Pure: no I/O, no clock; the resolver (event/resolver.h)
// sends and times.
//
// What an answer must be to be used: a response (QR) to a standard query
// with our ID, echoing our one question (name case-insensitively, type,
// class IN); names well formed (labels of at most 63 bytes, at most 255
// bytes in all, compression pointers pointing strictly backwards, so no
// loop); every record inside the message. Only records of the asked name
// count, following CNAMEs from it within the answer section, so that an
// answer cannot slip in addresses of another name (cache poisoning
// through "additional" addresses).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gatehouse::dns {

inline constexpr uint16_t kTypeA = 1;
inline constexpr uint16_t kTypeCname = 5;
inline constexpr uint16_t kTypeSoa = 6;
inline constexpr uint16_t kTypeAaaa = 28;
inline constexpr uint16_t kClassIn = 1;

// RCODEs (RFC 1035 4.1.1).
inline constexpr uint8_t kNoError = 0;
inline constexpr uint8_t kFormErr = 1;
inline constexpr uint8_t kServFail = 2;
inline constexpr uint8_t kNxDomain = 3;
inline constexpr uint8_t kNotImp = 4;
inline constexpr uint8_t kRefused = 5;

// A UDP message without EDNS (RFC 1035 4.2.1).
inline constexpr size_t kMaxUdpSize = 512;
// CNAMEs followed from the asked name within one answer.
inline constexpr int kMaxCnameChain = 8;

// The lookup form of a host name: lower case, without the trailing dot of
// a fully qualified one. Empty when it cannot be a DNS name: empty, an
// empty label ("a..b", ".a"), a label over 63 bytes, over 253 bytes in
// all, or a byte that no host name has (only letters, digits, '-', '_').
std::string normalize_name(std::string_view name);

// A standard query with recursion desired, one question (name, type,
// class IN). `name` must be normalized (normalize_name); error otherwise.
Result<std::vector<uint8_t>> build_query(uint16_t id, std::string_view name, uint16_t qtype);

// A checked answer.
struct Answer {
    uint8_t rcode = kNoError;
    // TC: the answer did not fit; nothing else was read (ask over TCP).
    bool truncated = false;
    // The addresses of the asked name, of the asked type: 4 bytes (A) or
    // 16 (AAAA) each, in the answer's order.
    std::vector<std::array<uint8_t, 16>> addrs;
    // The smallest TTL of the records used (addresses and the CNAMEs that
    // led to them), in seconds; RFC 2181 8: over 2^31-1 counts as 0.
    uint32_t ttl = 0;
    // NOERROR without addresses where the CNAME chain left the answer:
    // the name at its end, to be asked next (normalized). Empty otherwise.
    std::string cname;
    // NXDOMAIN or no data: how long the negative answer may be cached
    // (RFC 2308 5: the SOA record's TTL, capped by its MINIMUM field),
    // when the authority section had a SOA record.
    bool has_negative_ttl = false;
    uint32_t negative_ttl = 0;
};

// Checks and reads `msg` as the answer to query `id` for `name`
// (normalized) of `qtype`. An error names what was wrong ("wrong ID",
// "wrong question", "bad name", "short message"...); the caller logs it
// and ignores the message, as a spoofed or broken one.
Result<Answer> parse_answer(std::span<const uint8_t> msg, uint16_t id, std::string_view name,
                            uint16_t qtype);

}  // namespace gatehouse::dns
