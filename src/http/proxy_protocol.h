// The PROXY protocol header ("listen ... proxy_protocol"): versions 1
// (text) and 2 (binary), as a load balancer in front of us sends them
// before the client's first byte to say whom the connection is for.
// Parsed strictly and incrementally, with no I/O and no allocation.
//
// Use (one parser per connection):
//
//     ProxyParser p(max_v2);
//     ProxyParseResult r = p.parse(buffered);   // every byte read so far
//     NeedMore: read more, call again with the same bytes and the new ones
//     Error:    log r.reason (+ the bytes when r.show_bytes), close
//     Done:     p.header() describes it; the client's bytes start at r.consumed
//
// `buffered` starts at the connection's first byte; each call passes the
// bytes of the previous call unchanged followed by new ones. Views in the
// header (tlvs) point into the `buffered` of the last call.
//
// Choices, each checked by tests/unit/http/proxy_protocol_test.cc:
// - Version 1: the line ends with CRLF within 107 bytes (the spec's
//   maximum). TCP4 takes IPv4 addresses, TCP6 IPv6 ones, ports 0-65535 in
//   decimal, fields separated by one space; "UNKNOWN" takes anything up to
//   CRLF and carries no address. The version is told from the first byte,
//   so a client speaking HTTP directly is rejected at once.
// - Version 2: the header (16 bytes + its length field) must fit in
//   `max_v2` bytes (client_header_buffer_size). LOCAL carries no address;
//   so does PROXY over a transport other than STREAM or with a family
//   other than INET/INET6 (UNSPEC, UNIX, unknown ones): the connection
//   goes on as nginx lets it. An address block shorter than its family
//   needs is an error. The TLVs after the addresses are walked once: one
//   that runs past the header's end makes the header broken (nginx checks
//   them only when a $proxy_protocol_tlv_ variable is read).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gatehouse::http {

inline constexpr size_t kProxyV1MaxLine = 107;  // the spec's bound, CRLF included
inline constexpr size_t kProxyV2HeadLen = 16;   // signature, version/command, family, length

struct ProxyHeader {
    int version = 0;             // 1 or 2
    bool local = false;          // v2 LOCAL: the balancer's own connection (health checks)
    // The client's (src) and the balancer's listening (dst) addresses;
    // false for LOCAL, UNKNOWN and the families carrying none.
    bool has_addresses = false;
    sockaddr_storage src{};
    sockaddr_storage dst{};
    char src_text[INET6_ADDRSTRLEN] = {};  // "192.0.2.1", "2001:db8::1"
    char dst_text[INET6_ADDRSTRLEN] = {};
    uint16_t src_port = 0;
    uint16_t dst_port = 0;
    // v2: the TLV bytes after the addresses (checked well formed); empty
    // otherwise. Points into the parsed buffer: a keeper copies them.
    std::string_view tlvs;
};

enum class ProxyParseState : uint8_t { NeedMore, Done, Error };

struct ProxyParseResult {
    ProxyParseState state = ProxyParseState::NeedMore;
    size_t consumed = 0;  // Done: the header's length
    // Error: nginx's wording. show_bytes: the caller appends the
    // offending bytes (`: "..."`, escaped) as nginx's "broken header" does.
    const char* reason = nullptr;
    bool show_bytes = false;
    int value = -1;  // when >= 0, appended as ": N" (the version, the command)
};

class ProxyParser {
public:
    // max_v2: the largest v2 header accepted, all of it (>= 16).
    explicit ProxyParser(size_t max_v2) : max_v2_(max_v2 < kProxyV2HeadLen ? kProxyV2HeadLen : max_v2) {}

    ProxyParseResult parse(std::string_view buffered);
    // Meaningful after Done.
    const ProxyHeader& header() const { return h_; }

private:
    ProxyParseResult parse_v1(std::string_view line, size_t consumed);
    ProxyParseResult parse_v2(std::string_view in);

    size_t max_v2_;
    size_t scanned_ = 0;  // v1: bytes already searched for the line end
    ProxyHeader h_;
};

// The value of a v2 TLV of `type` among `tlvs` (well formed, as
// ProxyHeader::tlvs), or nullopt.
std::optional<std::string_view> find_tlv(std::string_view tlvs, uint8_t type);

// The value $proxy_protocol_tlv_NAME has: NAME is "alpn", "authority",
// "unique_id", "netns", "ssl", "0xHH" (any TLV by type), "ssl_version",
// "ssl_cn", "ssl_cipher", "ssl_sig_alg", "ssl_key_alg", "ssl_0xHH" (a
// sub-TLV of the SSL TLV), or "ssl_verify" (its verify field, in decimal,
// written into `buf`, 11 bytes at least). nullopt when the header has no
// such TLV or NAME is none of these.
std::optional<std::string_view> lookup_tlv(std::string_view tlvs, std::string_view name, char* buf);

}  // namespace gatehouse::http
