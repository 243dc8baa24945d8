// libFuzzer target for the PROXY protocol parser (src/http/proxy_protocol.h).
//
// Input: one byte seeding the split points, one byte choosing the v2
// limit, then the bytes a client sends. Checked for every input:
// - the result is well formed: Done consumed at most the bytes given (a
//   v1 line at most 107, a v2 header at most the limit), an address only
//   with an IPv4 or IPv6 family and its text, TLVs inside the header;
//   Error has a reason;
// - feeding the bytes growing piece by piece (each call from a fresh
//   copy, as the connection peeks) gives the same result and header;
// - every TLV name a variable can use is looked up safely.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/assert.h"
#include "http/proxy_protocol.h"

using namespace gatehouse::http;

namespace {

struct Outcome {
    ProxyParseState state = ProxyParseState::NeedMore;
    size_t consumed = 0;
    std::string reason;
    std::string src, dst, tlvs;
    uint16_t sport = 0, dport = 0;
    bool has = false, local = false;
};

bool operator==(const Outcome& a, const Outcome& b) {
    return a.state == b.state && a.consumed == b.consumed && a.reason == b.reason && a.src == b.src &&
           a.dst == b.dst && a.tlvs == b.tlvs && a.sport == b.sport && a.dport == b.dport && a.has == b.has &&
           a.local == b.local;
}

Outcome take(const ProxyParser& p, const ProxyParseResult& r, std::string_view buf) {
    Outcome o;
    o.state = r.state;
    if (r.state == ProxyParseState::Error) {
        GH_CHECK(r.reason != nullptr);
        o.reason = r.reason;
    }
    if (r.state != ProxyParseState::Done) return o;
    const ProxyHeader& h = p.header();
    GH_CHECK(r.consumed > 0 && r.consumed <= buf.size());
    if (h.version == 1) GH_CHECK(r.consumed <= kProxyV1MaxLine);
    if (h.has_addresses) {
        GH_CHECK(h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6);
        GH_CHECK(h.src.ss_family == h.dst.ss_family);
        GH_CHECK(h.src_text[0] != '\0' && h.dst_text[0] != '\0');
    }
    if (!h.tlvs.empty())
        GH_CHECK(h.tlvs.data() >= buf.data() && h.tlvs.data() + h.tlvs.size() <= buf.data() + r.consumed);
    char b[16];
    for (const char* name : {"alpn", "authority", "unique_id", "netns", "ssl", "ssl_verify", "ssl_version", "ssl_cn",
                             "ssl_0x21", "0x04", "0xff", "ssl_0xff"})
        (void)lookup_tlv(h.tlvs, name, b);
    o.consumed = r.consumed;
    o.src = h.src_text;
    o.dst = h.dst_text;
    o.sport = h.src_port;
    o.dport = h.dst_port;
    o.has = h.has_addresses;
    o.local = h.local;
    o.tlvs = std::string(h.tlvs);
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const uint8_t seed = data[0];
    const size_t max_v2 = 16 + (static_cast<size_t>(data[1]) << 3);
    const std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);

    ProxyParser whole(max_v2);
    const std::string all(in);
    const Outcome ref = take(whole, whole.parse(all), all);
    if (in.empty()) return 0;

    // Growing by 1..8 bytes a call, each call from a new copy.
    ProxyParser pieces(max_v2);
    Outcome got;
    size_t have = 0, k = seed;
    while (have < in.size()) {
        have = std::min(in.size(), have + 1 + (k++ % 8));
        const std::string copy(in.substr(0, have));
        got = take(pieces, pieces.parse(copy), copy);
        if (got.state != ProxyParseState::NeedMore) break;
    }
    GH_CHECK(got == ref);
    return 0;
}
