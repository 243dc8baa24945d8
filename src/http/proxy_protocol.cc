#include "http/proxy_protocol.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace gatehouse::http {

namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr char kV2Sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
constexpr std::string_view kV2Signature(kV2Sig, sizeof kV2Sig);

// v2 fields (the spec, section 2.2).
constexpr uint8_t kCmdLocal = 0x0, kCmdProxy = 0x1;
constexpr uint8_t kFamInet = 0x1, kFamInet6 = 0x2;
constexpr uint8_t kTransportStream = 0x1;
constexpr size_t kInetAddrLen = 12, kInet6AddrLen = 36, kUnixAddrLen = 216;
constexpr uint8_t kFamUnix = 0x3;

// The v2 TLV types a variable names ($proxy_protocol_tlv_alpn).
struct TlvName {
    std::string_view name;
    uint8_t type;
    bool ssl_sub;  // a sub-TLV of the SSL TLV (0x20)
};
constexpr uint8_t kTlvSsl = 0x20;
constexpr size_t kSslFixedLen = 5;  // client (1) and verify (4) before the sub-TLVs
constexpr TlvName kTlvNames[] = {
    {"alpn", 0x01, false},        {"authority", 0x02, false},  {"unique_id", 0x05, false},
    {"ssl", kTlvSsl, false},      {"netns", 0x30, false},      {"ssl_version", 0x21, true},
    {"ssl_cn", 0x22, true},       {"ssl_cipher", 0x23, true},  {"ssl_sig_alg", 0x24, true},
    {"ssl_key_alg", 0x25, true},
};

bool parse_port(std::string_view s, uint16_t* port) {
    if (s.empty() || s.size() > 5) return false;
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v > 65535) return false;
    *port = static_cast<uint16_t>(v);
    return true;
}

// "192.0.2.1" (family AF_INET) or "2001:db8::1" (AF_INET6) into sa.
bool parse_ip(std::string_view s, int family, uint16_t port, sockaddr_storage* sa) {
    char z[INET6_ADDRSTRLEN];
    if (s.empty() || s.size() >= sizeof z) return false;
    memcpy(z, s.data(), s.size());
    z[s.size()] = '\0';
    memset(sa, 0, sizeof *sa);
    if (family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(sa);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        return inet_pton(AF_INET, z, &in->sin_addr) == 1;
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(sa);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    return inet_pton(AF_INET6, z, &in6->sin6_addr) == 1;
}

void fill_text(ProxyHeader& h) {
    auto text = [](const sockaddr_storage& sa, char* out) {
        if (sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(sa).sin_addr, out, INET6_ADDRSTRLEN);
        else
            inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(sa).sin6_addr, out, INET6_ADDRSTRLEN);
    };
    text(h.src, h.src_text);
    text(h.dst, h.dst_text);
}

// Splits off the text up to the next single space; false when there is none.
bool next_field(std::string_view& rest, std::string_view* field) {
    size_t sp = rest.find(' ');
    if (sp == std::string_view::npos) return false;
    *field = rest.substr(0, sp);
    rest.remove_prefix(sp + 1);
    return true;
}

// Walks a TLV list: each is type (1), length (2, network order), value.
// Calls f(type, value) for each; false when one runs past the end.
template <class F>
bool walk_tlvs(std::string_view tlvs, F f) {
    while (!tlvs.empty()) {
        if (tlvs.size() < 3) return false;
        const auto* b = reinterpret_cast<const uint8_t*>(tlvs.data());
        size_t len = static_cast<size_t>(b[1]) << 8 | b[2];
        if (tlvs.size() - 3 < len) return false;
        if (!f(b[0], tlvs.substr(3, len))) return true;
        tlvs.remove_prefix(3 + len);
    }
    return true;
}

// "0x1f", "0x000ae": a TLV type in hex, as nginx's variable names give it.
std::optional<uint8_t> hex_type(std::string_view s) {
    if (s.size() < 3 || s.substr(0, 2) != "0x") return std::nullopt;
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), v, 16);
    if (ec != std::errc() || p != s.data() + s.size() || v > 0xff) return std::nullopt;
    return static_cast<uint8_t>(v);
}

}  // namespace

ProxyParseResult ProxyParser::parse(std::string_view in) {
    ProxyParseResult r;
    if (in.empty()) return r;
    // The first byte tells the version: 'P' (v1) or CR (v2's signature).
    if (in[0] == kV2Signature[0]) return parse_v2(in);
    size_t n = std::min(in.size(), kV1Prefix.size());
    if (in.substr(0, n) != kV1Prefix.substr(0, n)) {
        r.state = ProxyParseState::Error;
        r.reason = "broken header";
        r.show_bytes = true;
        return r;
    }
    // Look for the line's end, from where the last call stopped.
    const size_t limit = std::min(in.size(), kProxyV1MaxLine);
    for (size_t i = scanned_ ? scanned_ - 1 : 0; i + 1 < limit; ++i)
        if (in[i] == '\r' && in[i + 1] == '\n') return parse_v1(in.substr(0, i), i + 2);
    scanned_ = limit;
    if (limit == kProxyV1MaxLine) {
        r.state = ProxyParseState::Error;
        r.reason = "broken header";
        r.show_bytes = true;
    }
    return r;
}

ProxyParseResult ProxyParser::parse_v1(std::string_view line, size_t consumed) {
    ProxyParseResult r;
    r.state = ProxyParseState::Error;
    r.reason = "broken header";
    r.show_bytes = true;
    h_ = ProxyHeader{};
    h_.version = 1;
    std::string_view rest = line.substr(kV1Prefix.size());
    // "UNKNOWN", alone or followed by anything: the sender could not tell
    // (the spec, 2.1); the connection goes on with its own address.
    if (rest == "UNKNOWN" || rest.substr(0, 8) == "UNKNOWN ") {
        r.state = ProxyParseState::Done;
        r.consumed = consumed;
        r.reason = nullptr;
        r.show_bytes = false;
        return r;
    }
    int family;
    if (rest.substr(0, 5) == "TCP4 ") family = AF_INET;
    else if (rest.substr(0, 5) == "TCP6 ") family = AF_INET6;
    else return r;
    rest.remove_prefix(5);
    std::string_view src, dst, sport;
    if (!next_field(rest, &src) || !next_field(rest, &dst) || !next_field(rest, &sport)) return r;
    std::string_view dport = rest;
    if (!parse_port(sport, &h_.src_port) || !parse_port(dport, &h_.dst_port)) return r;
    if (!parse_ip(src, family, h_.src_port, &h_.src) || !parse_ip(dst, family, h_.dst_port, &h_.dst)) return r;
    h_.has_addresses = true;
    fill_text(h_);
    r.state = ProxyParseState::Done;
    r.consumed = consumed;
    r.reason = nullptr;
    r.show_bytes = false;
    return r;
}

ProxyParseResult ProxyParser::parse_v2(std::string_view in) {
    ProxyParseResult r;
    auto fail = [&r](const char* why, bool bytes) {
        r.state = ProxyParseState::Error;
        r.reason = why;
        r.show_bytes = bytes;
        return r;
    };
    size_t n = std::min(in.size(), kV2Signature.size());
    if (in.substr(0, n) != kV2Signature.substr(0, n)) return fail("broken header", true);
    if (in.size() < kProxyV2HeadLen) return r;
    const auto* b = reinterpret_cast<const uint8_t*>(in.data());
    // Version and command are checked before the length is waited for: a
    // bad one is known now.
    if ((b[12] >> 4) != 2) {
        r.value = b[12] >> 4;
        return fail("unknown PROXY protocol version", false);
    }
    const uint8_t cmd = b[12] & 0x0f;
    if (cmd != kCmdLocal && cmd != kCmdProxy) {
        r.value = cmd;
        return fail("unknown PROXY protocol command", false);
    }
    const size_t len = static_cast<size_t>(b[14]) << 8 | b[15];
    if (kProxyV2HeadLen + len > max_v2_) return fail("header is too large", false);
    if (in.size() < kProxyV2HeadLen + len) return r;

    h_ = ProxyHeader{};
    h_.version = 2;
    r.state = ProxyParseState::Done;
    r.consumed = kProxyV2HeadLen + len;
    std::string_view body = in.substr(kProxyV2HeadLen, len);
    // LOCAL: the receiver must ignore the address block (the spec, 2.2).
    if (cmd == kCmdLocal) {
        h_.local = true;
        return r;
    }
    const uint8_t family = b[13] >> 4, transport = b[13] & 0x0f;
    size_t addr_len;
    if (family == kFamInet) addr_len = kInetAddrLen;
    else if (family == kFamInet6) addr_len = kInet6AddrLen;
    else if (family == kFamUnix) addr_len = kUnixAddrLen;
    else if (family == 0) addr_len = 0;
    else return r;  // an unknown family: its address length is unknown too, TLVs unreachable
    if (body.size() < addr_len) return fail("broken header", true);
    const auto* a = reinterpret_cast<const uint8_t*>(body.data());
    if (transport == kTransportStream && family == kFamInet) {
        auto* s = reinterpret_cast<sockaddr_in*>(&h_.src);
        auto* d = reinterpret_cast<sockaddr_in*>(&h_.dst);
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
        h_.src_port = ntohs(s->sin_port);
        h_.dst_port = ntohs(d->sin_port);
        h_.has_addresses = true;
    } else if (transport == kTransportStream && family == kFamInet6) {
        auto* s = reinterpret_cast<sockaddr_in6*>(&h_.src);
        auto* d = reinterpret_cast<sockaddr_in6*>(&h_.dst);
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
        h_.src_port = ntohs(s->sin6_port);
        h_.dst_port = ntohs(d->sin6_port);
        h_.has_addresses = true;
    }
    if (h_.has_addresses) fill_text(h_);
    h_.tlvs = body.substr(addr_len);
    if (!walk_tlvs(h_.tlvs, [](uint8_t, std::string_view) { return true; })) {
        h_ = ProxyHeader{};
        return fail("broken header", true);
    }
    return r;
}

std::optional<std::string_view> find_tlv(std::string_view tlvs, uint8_t type) {
    std::optional<std::string_view> found;
    walk_tlvs(tlvs, [&](uint8_t t, std::string_view v) {
        if (t != type) return true;
        found = v;
        return false;
    });
    return found;
}

std::optional<std::string_view> lookup_tlv(std::string_view tlvs, std::string_view name, char* buf) {
    auto ssl_sub = [&](uint8_t type) -> std::optional<std::string_view> {
        auto ssl = find_tlv(tlvs, kTlvSsl);
        if (!ssl || ssl->size() < kSslFixedLen) return std::nullopt;
        return find_tlv(ssl->substr(kSslFixedLen), type);
    };
    for (const TlvName& t : kTlvNames)
        if (t.name == name) return t.ssl_sub ? ssl_sub(t.type) : find_tlv(tlvs, t.type);
    if (name == "ssl_verify") {
        auto ssl = find_tlv(tlvs, kTlvSsl);
        if (!ssl || ssl->size() < kSslFixedLen) return std::nullopt;
        const auto* p = reinterpret_cast<const uint8_t*>(ssl->data()) + 1;
        uint32_t v = static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
                     static_cast<uint32_t>(p[2]) << 8 | p[3];
        auto [end, ec] = std::to_chars(buf, buf + 11, v);
        (void)ec;
        return std::string_view(buf, static_cast<size_t>(end - buf));
    }
    if (name.substr(0, 4) == "ssl_") {
        if (auto t = hex_type(name.substr(4))) return ssl_sub(*t);
        return std::nullopt;
    }
    if (auto t = hex_type(name)) return find_tlv(tlvs, *t);
    return std::nullopt;
}

}  // namespace gatehouse::http
