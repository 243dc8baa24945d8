#include "core/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>
#include <string>

namespace gatehouse {

bool IpAddr::v4_mapped() const {
    static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return family == AF_INET6 && std::memcmp(bytes, kPrefix, sizeof kPrefix) == 0;
}

IpAddr IpAddr::unmapped() const {
    if (!v4_mapped()) return *this;
    IpAddr a;
    a.family = AF_INET;
    std::memcpy(a.bytes, bytes + 12, 4);
    return a;
}

std::optional<IpAddr> ip_of(const sockaddr* sa) {
    if (!sa) return std::nullopt;
    IpAddr a;
    if (sa->sa_family == AF_INET) {
        a.family = AF_INET;
        std::memcpy(a.bytes, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
        return a;
    }
    if (sa->sa_family == AF_INET6) {
        a.family = AF_INET6;
        std::memcpy(a.bytes, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
        return a;
    }
    return std::nullopt;
}

std::optional<IpAddr> parse_ip(std::string_view s) {
    // inet_pton wants a C string; anything longer than the longest IPv6
    // text ("ffff:...:255.255.255.255", 45 characters) is not an address.
    char text[INET6_ADDRSTRLEN + 1];
    if (s.empty() || s.size() >= sizeof text) return std::nullopt;
    s.copy(text, s.size());
    text[s.size()] = '\0';
    IpAddr a;
    if (s.find(':') == std::string_view::npos) {
        // inet_pton takes dotted quads only, as nginx's ngx_inet_addr.
        if (inet_pton(AF_INET, text, a.bytes) != 1) return std::nullopt;
        a.family = AF_INET;
        return a;
    }
    if (inet_pton(AF_INET6, text, a.bytes) != 1) return std::nullopt;
    a.family = AF_INET6;
    return a;
}

bool Cidr::contains(const IpAddr& a) const {
    if (a.family != addr.family) return false;
    size_t n = a.family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < n; ++i)
        if ((a.bytes[i] & mask[i]) != addr.bytes[i]) return false;
    return true;
}

Result<ParsedCidr> parse_cidr(std::string_view s) {
    auto invalid = [&] { return make_error("invalid parameter \"" + std::string(s) + "\""); };
    std::string_view host = s, bits;
    size_t slash = s.find('/');
    if (slash != std::string_view::npos) {
        host = s.substr(0, slash);
        bits = s.substr(slash + 1);
    }
    auto ip = parse_ip(host);
    if (!ip) return invalid();
    unsigned max = ip->family == AF_INET ? 32 : 128;
    unsigned prefix = max;
    if (slash != std::string_view::npos) {
        auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
        if (bits.empty() || ec != std::errc() || end != bits.data() + bits.size() || prefix > max)
            return invalid();
    }
    ParsedCidr p;
    p.cidr.prefix = static_cast<uint8_t>(prefix);
    p.cidr.addr.family = ip->family;
    for (unsigned i = 0; i < max / 8; ++i) {
        unsigned take = prefix > i * 8 ? prefix - i * 8 : 0;
        uint8_t m = take >= 8 ? 0xff : static_cast<uint8_t>(0xff00u >> take);
        p.cidr.mask[i] = m;
        p.cidr.addr.bytes[i] = ip->bytes[i] & m;
        if (ip->bytes[i] & ~m) p.host_bits = true;
    }
    return p;
}

}  // namespace gatehouse
