#include "http/proxy_protocol.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>

using namespace gatehouse::http;
using namespace std::literals;

namespace {

struct Outcome {
    ProxyParseState state = ProxyParseState::NeedMore;
    size_t consumed = 0;
    std::string reason;
    int value = -1;
    ProxyHeader h;
    std::string tlvs;
};

// Feeds `in` growing by `piece` bytes at a time, as the connection does
// (every call sees all the bytes so far).
Outcome run(std::string_view in, size_t piece = SIZE_MAX, size_t max_v2 = 1024) {
    ProxyParser p(max_v2);
    Outcome o;
    size_t have = 0;
    do {
        have = std::min(in.size(), piece == SIZE_MAX ? in.size() : have + piece);
        const std::string copy(in.substr(0, have));
        ProxyParseResult r = p.parse(copy);
        o.state = r.state;
        if (r.state == ProxyParseState::Error) {
            o.reason = r.reason;
            o.value = r.value;
            return o;
        }
        if (r.state == ProxyParseState::Done) {
            o.consumed = r.consumed;
            o.h = p.header();
            o.tlvs = std::string(o.h.tlvs);
            o.h.tlvs = {};
            return o;
        }
    } while (have < in.size());
    return o;
}

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

std::string v2(uint8_t ver_cmd, uint8_t fam, std::string body) {
    std::string s = kSig;
    s += static_cast<char>(ver_cmd);
    s += static_cast<char>(fam);
    s += static_cast<char>(body.size() >> 8);
    s += static_cast<char>(body.size() & 0xff);
    return s + body;
}

std::string tlv(uint8_t type, std::string_view v) {
    std::string s(1, static_cast<char>(type));
    s += static_cast<char>(v.size() >> 8);
    s += static_cast<char>(v.size() & 0xff);
    return s + std::string(v);
}

const std::string kInet4Addrs("\xc0\x00\x02\x01\xc0\x00\x02\x02\x00\x7b\x16\x2e", 12);  // 192.0.2.1:123 -> .2:5678

}  // namespace

TEST_CASE("http/proxy_protocol: v1 TCP4, TCP6 and the bytes after it") {
    std::string in = "PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\nGET / HTTP/1.0\r\n";
    Outcome o = run(in);
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK(o.consumed == in.find("GET"));
    CHECK(o.h.version == 1);
    CHECK(o.h.has_addresses);
    CHECK(o.h.src_text == "192.0.2.1"sv);
    CHECK(o.h.dst_text == "192.0.2.2"sv);
    CHECK(o.h.src_port == 123);
    CHECK(o.h.dst_port == 5678);
    CHECK(o.h.src.ss_family == AF_INET);

    o = run("PROXY TCP6 2001:Db8::1 2001:db8::2 65535 0\r\n");
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK(o.h.src_text == "2001:db8::1"sv);
    CHECK(o.h.dst_text == "2001:db8::2"sv);
    CHECK(o.h.src_port == 65535);
    CHECK(o.h.dst_port == 0);
    CHECK(o.h.src.ss_family == AF_INET6);
}

TEST_CASE("http/proxy_protocol: v1 UNKNOWN carries no address") {
    for (auto in : {"PROXY UNKNOWN\r\n"sv, "PROXY UNKNOWN 1 2 3 4 5 6\r\n"sv}) {
        Outcome o = run(in);
        REQUIRE(o.state == ProxyParseState::Done);
        CHECK(o.consumed == in.size());
        CHECK_FALSE(o.h.has_addresses);
        CHECK(o.h.src_text == ""sv);
    }
}

TEST_CASE("http/proxy_protocol: a header split anywhere parses the same") {
    std::string in = "PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\n";
    for (size_t piece = 1; piece < in.size(); ++piece) {
        Outcome o = run(in, piece);
        REQUIRE(o.state == ProxyParseState::Done);
        CHECK(o.consumed == in.size());
        CHECK(o.h.src_port == 123);
    }
    std::string b = v2(0x21, 0x11, kInet4Addrs + tlv(0x01, "h2"));
    for (size_t piece = 1; piece < b.size(); ++piece) {
        Outcome o = run(b, piece);
        REQUIRE(o.state == ProxyParseState::Done);
        CHECK(o.consumed == b.size());
        CHECK(o.tlvs == tlv(0x01, "h2"));
    }
    CHECK(run("PROXY TCP4 192.0.2.1").state == ProxyParseState::NeedMore);
    CHECK(run(kSig.substr(0, 5)).state == ProxyParseState::NeedMore);
    CHECK(run(v2(0x21, 0x11, kInet4Addrs).substr(0, 20)).state == ProxyParseState::NeedMore);
}

TEST_CASE("http/proxy_protocol: v1 errors") {
    const char* bad[] = {
        "GET / HTTP/1.0\r\n",                          // no header at all
        "PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",      // unknown protocol
        "PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",        // a field missing
        "PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",     // two spaces
        "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",    // IPv6 in TCP4
        "PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",    // IPv4 in TCP6
        "PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n",  // port too big
        "PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n",     // not a number
        "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",     // trailing space
        "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",        // LF alone (waits, then too long below)
        "PROXY UNKNOWNX\r\n",
        "proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n",
    };
    for (const char* in : bad) {
        CAPTURE(in);
        Outcome o = run(in);
        if (std::string_view(in).ends_with("2\n")) {
            CHECK(o.state == ProxyParseState::NeedMore);
            continue;
        }
        CHECK(o.state == ProxyParseState::Error);
        CHECK(o.reason == "broken header");
    }
    // A client speaking HTTP directly is refused at its first byte.
    CHECK(run("G").state == ProxyParseState::Error);
    // The spec's 107 bytes, CRLF included: a longer line is broken.
    std::string unk = "PROXY UNKNOWN ";
    std::string ok = unk + std::string(kProxyV1MaxLine - unk.size() - 2, 'x') + "\r\n";
    CHECK(run(ok).state == ProxyParseState::Done);
    std::string too_long = unk + std::string(kProxyV1MaxLine - unk.size() - 1, 'x') + "\r\n";
    CHECK(run(too_long).state == ProxyParseState::Error);
    CHECK(run(too_long, 1).state == ProxyParseState::Error);
}

TEST_CASE("http/proxy_protocol: v2 PROXY over INET and INET6") {
    Outcome o = run(v2(0x21, 0x11, kInet4Addrs) + "GET");
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK(o.consumed == 28);
    CHECK(o.h.version == 2);
    CHECK(o.h.has_addresses);
    CHECK(o.h.src_text == "192.0.2.1"sv);
    CHECK(o.h.dst_text == "192.0.2.2"sv);
    CHECK(o.h.src_port == 123);
    CHECK(o.h.dst_port == 5678);

    std::string a6(36, '\0');
    a6[0] = 0x20, a6[1] = 0x01, a6[2] = 0x0d, a6[3] = static_cast<char>(0xb8), a6[15] = 1;
    a6[16] = 0x20, a6[17] = 0x01, a6[18] = 0x0d, a6[19] = static_cast<char>(0xb8), a6[31] = 2;
    a6[33] = 123, a6[34] = 0x16, a6[35] = 0x2e;
    o = run(v2(0x21, 0x21, a6));
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK(o.h.src_text == "2001:db8::1"sv);
    CHECK(o.h.dst_text == "2001:db8::2"sv);
    CHECK(o.h.src_port == 123);
    CHECK(o.h.dst_port == 5678);
}

TEST_CASE("http/proxy_protocol: v2 headers that carry no address") {
    // LOCAL: whatever follows is ignored.
    Outcome o = run(v2(0x20, 0x11, kInet4Addrs));
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK(o.h.local);
    CHECK_FALSE(o.h.has_addresses);
    CHECK(o.consumed == 28);
    // AF_UNSPEC, AF_UNIX, an unknown family, a DGRAM transport.
    CHECK_FALSE(run(v2(0x21, 0x01, "")).h.has_addresses);
    CHECK(run(v2(0x21, 0x01, "")).state == ProxyParseState::Done);
    o = run(v2(0x21, 0x31, std::string(216, 'u') + tlv(0x01, "x")));
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK_FALSE(o.h.has_addresses);
    CHECK(o.tlvs == tlv(0x01, "x"));
    o = run(v2(0x21, 0x41, "\x01\x02\x03\x04"));
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK(o.consumed == 20);
    CHECK_FALSE(o.h.has_addresses);
    o = run(v2(0x21, 0x12, kInet4Addrs));
    REQUIRE(o.state == ProxyParseState::Done);
    CHECK_FALSE(o.h.has_addresses);
}

TEST_CASE("http/proxy_protocol: v2 errors") {
    Outcome o = run(v2(0x11, 0x11, kInet4Addrs));
    CHECK(o.state == ProxyParseState::Error);
    CHECK(o.reason == "unknown PROXY protocol version");
    CHECK(o.value == 1);
    o = run(v2(0x22, 0x11, kInet4Addrs));
    CHECK(o.reason == "unknown PROXY protocol command");
    CHECK(o.value == 2);
    // The address block shorter than the family's.
    o = run(v2(0x21, 0x11, kInet4Addrs.substr(0, 8)));
    CHECK(o.reason == "broken header");
    o = run(v2(0x21, 0x21, std::string(12, '\0')));
    CHECK(o.reason == "broken header");
    // A TLV running past the end.
    o = run(v2(0x21, 0x11, kInet4Addrs + tlv(0x01, "abc").substr(0, 4)));
    CHECK(o.reason == "broken header");
    o = run(v2(0x21, 0x11, kInet4Addrs + "\x01\x00"));
    CHECK(o.reason == "broken header");
    // Bounded by the caller's limit, known from the length field alone.
    o = run(v2(0x21, 0x11, kInet4Addrs + tlv(0x04, std::string(100, 'n'))).substr(0, 16), SIZE_MAX, 64);
    CHECK(o.reason == "header is too large");
    // A broken signature.
    o = run(std::string("\r\n\r\n\0\r\nQUIX\n", 12));
    CHECK(o.reason == "broken header");
}

TEST_CASE("http/proxy_protocol: TLV lookups by name, as the variables") {
    std::string sub = tlv(0x21, "TLSv1.2") + tlv(0x22, "example.com") + tlv(0x23, "AES256-SHA") +
                      tlv(0x24, "SHA1") + tlv(0x25, "RSA512");
    std::string ssl = std::string("\x01\x00\x00\x00\xff", 5) + sub;
    std::string tlvs = tlv(0x01, "ALPN1") + tlv(0x02, "localhost") + tlv(0x03, "4321") + tlv(0x05, "UNIQQ") +
                       tlv(0x20, ssl) + tlv(0x30, "NETNS") + tlv(0xae, "12345");
    Outcome o = run(v2(0x21, 0x11, kInet4Addrs + tlvs));
    REQUIRE(o.state == ProxyParseState::Done);
    REQUIRE(o.tlvs == tlvs);
    char buf[16];
    auto get = [&](std::string_view name) { return lookup_tlv(tlvs, name, buf).value_or("<none>"); };
    CHECK(get("alpn") == "ALPN1");
    CHECK(get("0x01") == "ALPN1");
    CHECK(get("authority") == "localhost");
    CHECK(get("0x3") == "4321");
    CHECK(get("unique_id") == "UNIQQ");
    CHECK(get("netns") == "NETNS");
    CHECK(get("0x000ae") == "12345");
    CHECK(get("ssl") == ssl);
    CHECK(get("ssl_verify") == "255");
    CHECK(get("ssl_version") == "TLSv1.2");
    CHECK(get("ssl_0x21") == "TLSv1.2");
    CHECK(get("ssl_cn") == "example.com");
    CHECK(get("ssl_cipher") == "AES256-SHA");
    CHECK(get("ssl_sig_alg") == "SHA1");
    CHECK(get("ssl_key_alg") == "RSA512");
    CHECK(get("0x0e") == "<none>");
    CHECK(get("0x100") == "<none>");
    CHECK(get("nonsense") == "<none>");
    CHECK(get("0x") == "<none>");
    CHECK(get("ssl_what") == "<none>");
}
