#include "core/dns_message.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dns = gatehouse::dns;

namespace {

// Builds answers by hand, byte by byte, as a name server would send them.
struct Msg {
    std::vector<uint8_t> b;

    Msg& u8(uint8_t v) { b.push_back(v); return *this; }
    Msg& u16(uint16_t v) { b.push_back(static_cast<uint8_t>(v >> 8)); b.push_back(static_cast<uint8_t>(v)); return *this; }
    Msg& u32(uint32_t v) { u16(static_cast<uint16_t>(v >> 16)); return u16(static_cast<uint16_t>(v)); }
    Msg& name(const std::string& n) {
        size_t s = 0;
        while (s < n.size()) {
            size_t d = n.find('.', s);
            if (d == std::string::npos) d = n.size();
            u8(static_cast<uint8_t>(d - s));
            b.insert(b.end(), n.begin() + s, n.begin() + d);
            s = d + 1;
        }
        return u8(0);
    }
    Msg& ptr(uint16_t off) { return u16(static_cast<uint16_t>(0xc000 | off)); }
    Msg& header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns = 0, uint16_t ar = 0) {
        return u16(id).u16(flags).u16(qd).u16(an).u16(ns).u16(ar);
    }
    Msg& question(const std::string& n, uint16_t type) { return name(n).u16(type).u16(1); }
    // A record owned by the question's name (pointer to offset 12).
    Msg& a_rr(uint32_t ttl, uint8_t last) { return ptr(12).u16(1).u16(1).u32(ttl).u16(4).u8(127).u8(0).u8(0).u8(last); }
};

constexpr uint16_t kResp = 0x8180;  // QR, RD, RA

dns::Answer parse_ok(const Msg& m, const char* name = "example.com", uint16_t type = dns::kTypeA) {
    auto r = dns::parse_answer(m.b, 0x1234, name, type);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.message()));
    return *r;
}

std::string parse_err(const Msg& m, const char* name = "example.com", uint16_t type = dns::kTypeA) {
    auto r = dns::parse_answer(m.b, 0x1234, name, type);
    REQUIRE_FALSE(r.ok());
    return r.message();
}

}  // namespace

TEST_CASE("core/dns_message: normalize_name keeps host names only") {
    CHECK(dns::normalize_name("Example.COM") == "example.com");
    CHECK(dns::normalize_name("example.com.") == "example.com");
    CHECK(dns::normalize_name("a-b_c.d1") == "a-b_c.d1");
    CHECK(dns::normalize_name("") == "");
    CHECK(dns::normalize_name(".") == "");
    CHECK(dns::normalize_name("a..b") == "");
    CHECK(dns::normalize_name(".a") == "");
    CHECK(dns::normalize_name("a b") == "");
    CHECK(dns::normalize_name("a\\.b") == "");
    CHECK(dns::normalize_name(std::string(63, 'a') + ".b") == std::string(63, 'a') + ".b");
    CHECK(dns::normalize_name(std::string(64, 'a') + ".b") == "");
    std::string long_name;
    for (int i = 0; i < 63; ++i) long_name += "ab.";  // 189
    long_name += std::string(63, 'c');               // 252
    CHECK(dns::normalize_name(long_name) == long_name);
    CHECK(dns::normalize_name(long_name + "cc") == "");
}

TEST_CASE("core/dns_message: build_query writes header and one question") {
    auto q = dns::build_query(0xbeef, "ab.c", dns::kTypeAaaa);
    REQUIRE(q.ok());
    std::vector<uint8_t> want = {0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                                 2, 'a', 'b', 1, 'c', 0, 0, 28, 0, 1};
    CHECK(*q == want);
    CHECK_FALSE(dns::build_query(1, "Ab.c", dns::kTypeA).ok());  // not normalized
    CHECK_FALSE(dns::build_query(1, "a..c", dns::kTypeA).ok());
}

TEST_CASE("core/dns_message: an A answer gives its addresses and the smallest TTL") {
    Msg m;
    m.header(0x1234, kResp, 1, 2).question("example.com", 1).a_rr(300, 1).a_rr(60, 2);
    auto a = parse_ok(m);
    CHECK(a.rcode == 0);
    CHECK_FALSE(a.truncated);
    REQUIRE(a.addrs.size() == 2);
    CHECK(a.addrs[0][3] == 1);
    CHECK(a.addrs[1][3] == 2);
    CHECK(a.ttl == 60);
    CHECK(a.cname.empty());
}

TEST_CASE("core/dns_message: the question is matched case-insensitively") {
    Msg m;
    m.header(0x1234, kResp, 1, 1).question("ExAmple.Com", 1).a_rr(5, 9);
    CHECK(parse_ok(m).addrs.size() == 1);
}

TEST_CASE("core/dns_message: an AAAA answer") {
    Msg m;
    m.header(0x1234, kResp, 1, 1).question("example.com", 28);
    m.ptr(12).u16(28).u16(1).u32(10).u16(16);
    for (int i = 0; i < 15; ++i) m.u8(0);
    m.u8(1);
    auto a = parse_ok(m, "example.com", dns::kTypeAaaa);
    REQUIRE(a.addrs.size() == 1);
    CHECK(a.addrs[0][15] == 1);
    CHECK(a.ttl == 10);
}

TEST_CASE("core/dns_message: answers not matching the query are refused") {
    SUBCASE("wrong ID") {
        Msg m;
        m.header(0x1235, kResp, 1, 1).question("example.com", 1).a_rr(5, 1);
        CHECK(parse_err(m) == "wrong ID");
    }
    SUBCASE("a query, not a response") {
        Msg m;
        m.header(0x1234, 0x0100, 1, 1).question("example.com", 1).a_rr(5, 1);
        CHECK(parse_err(m) == "not a response");
    }
    SUBCASE("another opcode") {
        Msg m;
        m.header(0x1234, kResp | 0x2000, 1, 0).question("example.com", 1);
        CHECK(parse_err(m) == "wrong opcode");
    }
    SUBCASE("no question") {
        Msg m;
        m.header(0x1234, kResp, 0, 0);
        CHECK(parse_err(m) == "wrong question count");
    }
    SUBCASE("another name") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.org", 1).a_rr(5, 1);
        CHECK(parse_err(m) == "wrong question");
    }
    SUBCASE("another type") {
        Msg m;
        m.header(0x1234, kResp, 1, 0).question("example.com", 28);
        CHECK(parse_err(m) == "wrong question");
    }
    SUBCASE("another class") {
        Msg m;
        m.header(0x1234, kResp, 1, 0).name("example.com").u16(1).u16(3);
        CHECK(parse_err(m) == "wrong question");
    }
    SUBCASE("short header") {
        Msg m;
        m.u16(0x1234).u16(kResp);
        CHECK(parse_err(m) == "short message");
    }
    SUBCASE("a record past the end") {
        Msg m;
        m.header(0x1234, kResp, 1, 2).question("example.com", 1).a_rr(5, 1);
        CHECK(parse_err(m) == "bad record in answer");
    }
    SUBCASE("rdata longer than the message") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.com", 1).ptr(12).u16(1).u16(1).u32(5).u16(40).u32(0);
        CHECK(parse_err(m) == "bad record in answer");
    }
    SUBCASE("an A record of the wrong size") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.com", 1).ptr(12).u16(1).u16(1).u32(5).u16(3).u8(1).u8(2).u8(3);
        CHECK(parse_err(m) == "bad address record");
    }
}

TEST_CASE("core/dns_message: RCODE and TC are reported, records ignored") {
    SUBCASE("NXDOMAIN with a SOA: negative TTL is min(TTL, MINIMUM)") {
        Msg m;
        m.header(0x1234, kResp | 3, 1, 0, 1).question("example.com", 1);
        // SOA owned by "com" (offset 20: the question's second label).
        m.ptr(20).u16(6).u16(1).u32(900).u16(static_cast<uint16_t>(2 + 2 + 20));
        m.ptr(20).ptr(20).u32(1).u32(2).u32(3).u32(4).u32(30);
        auto a = parse_ok(m);
        CHECK(a.rcode == 3);
        CHECK(a.addrs.empty());
        CHECK(a.has_negative_ttl);
        CHECK(a.negative_ttl == 30);
    }
    SUBCASE("SERVFAIL") {
        Msg m;
        m.header(0x1234, kResp | 2, 1, 0).question("example.com", 1);
        auto a = parse_ok(m);
        CHECK(a.rcode == 2);
        CHECK_FALSE(a.has_negative_ttl);
    }
    SUBCASE("TC: nothing else is read") {
        Msg m;
        m.header(0x1234, kResp | 0x0200, 1, 5).question("example.com", 1).a_rr(5, 1);
        auto a = parse_ok(m);
        CHECK(a.truncated);
        CHECK(a.addrs.empty());
    }
    SUBCASE("no data: NOERROR without addresses") {
        Msg m;
        m.header(0x1234, kResp, 1, 0).question("example.com", 1);
        auto a = parse_ok(m);
        CHECK(a.rcode == 0);
        CHECK(a.addrs.empty());
        CHECK(a.cname.empty());
    }
}

TEST_CASE("core/dns_message: only the asked name's records count") {
    Msg m;
    m.header(0x1234, kResp, 1, 2).question("example.com", 1);
    // An address for another name, slipped into the answer.
    m.name("evil.org").u16(1).u16(1).u32(5).u16(4).u32(0x0a000001);
    m.a_rr(5, 7);
    auto a = parse_ok(m);
    REQUIRE(a.addrs.size() == 1);
    CHECK(a.addrs[0][3] == 7);
}

TEST_CASE("core/dns_message: CNAME chains are followed within the answer") {
    SUBCASE("to addresses, TTL the smallest along the chain") {
        Msg m;
        m.header(0x1234, kResp, 1, 3).question("example.com", 1);
        size_t cname_at = m.b.size() + 12;
        m.ptr(12).u16(5).u16(1).u32(20).u16(6).u8(3).u8('w').u8('w').u8('w').ptr(12);  // -> www.example.com
        m.ptr(static_cast<uint16_t>(cname_at)).u16(1).u16(1).u32(100).u16(4).u32(0x7f000005);
        m.name("other.com").u16(1).u16(1).u32(100).u16(4).u32(0x7f000006);
        auto a = parse_ok(m);
        REQUIRE(a.addrs.size() == 1);
        CHECK(a.addrs[0][3] == 5);
        CHECK(a.ttl == 20);
    }
    SUBCASE("leaving the answer: the name to ask next") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.com", 1);
        m.ptr(12).u16(5).u16(1).u32(20).u16(11).name("alias.net");
        auto a = parse_ok(m);
        CHECK(a.addrs.empty());
        CHECK(a.cname == "alias.net");
        CHECK(a.ttl == 20);
    }
    SUBCASE("a CNAME loop ends at the chain limit") {
        Msg m;
        m.header(0x1234, kResp, 1, 2).question("example.com", 1);
        m.ptr(12).u16(5).u16(1).u32(20).u16(5).name("a.b");
        m.name("a.b").u16(5).u16(1).u32(20).u16(2).ptr(12);
        CHECK(parse_err(m) == "CNAME chain too long");
    }
    SUBCASE("a CNAME whose name overruns its rdata") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.com", 1);
        m.ptr(12).u16(5).u16(1).u32(20).u16(2).name("alias.net");
        CHECK(parse_err(m) == "bad CNAME record");
    }
}

TEST_CASE("core/dns_message: names are bounded and cannot loop") {
    SUBCASE("a pointer to itself") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.com", 1);
        size_t at = m.b.size();
        m.ptr(static_cast<uint16_t>(at)).u16(1).u16(1).u32(5).u16(4).u32(1);
        CHECK(parse_err(m) == "bad record in answer");
    }
    SUBCASE("a pointer forwards") {
        Msg m;
        m.header(0x1234, kResp, 1, 1).question("example.com", 1);
        size_t at = m.b.size();
        m.ptr(static_cast<uint16_t>(at + 2)).u16(1).u16(1).u32(5).u16(4).u32(1);
        CHECK(parse_err(m) == "bad record in answer");
    }
    SUBCASE("a pointer in the question") {
        Msg m;
        m.header(0x1234, kResp, 1, 0).ptr(12).u16(1).u16(1);
        CHECK(parse_err(m) == "bad name in question");
    }
    SUBCASE("a name over 255 bytes") {
        Msg m;
        m.header(0x1234, kResp, 1, 0);
        for (int i = 0; i < 5; ++i) m.u8(63).b.insert(m.b.end(), 63, 'a');
        m.u8(0).u16(1).u16(1);
        CHECK(parse_err(m) == "bad name in question");
    }
    SUBCASE("a label with a dot") {
        Msg m;
        m.header(0x1234, kResp, 1, 0).u8(3).u8('a').u8('.').u8('b').u8(0).u16(1).u16(1);
        CHECK(parse_err(m, "a.b") == "bad name in question");
    }
    SUBCASE("extended label types") {
        Msg m;
        m.header(0x1234, kResp, 1, 0).u8(0x41).u8(0).u16(1).u16(1);
        CHECK(parse_err(m) == "bad name in question");
    }
}

TEST_CASE("core/dns_message: a TTL over 2^31-1 counts as zero") {
    Msg m;
    m.header(0x1234, kResp, 1, 1).question("example.com", 1).a_rr(0x80000000u, 1);
    CHECK(parse_ok(m).ttl == 0);
}

TEST_CASE("core/dns_message: a query parses as the question of its answer") {
    auto q = dns::build_query(0x1234, "example.com", dns::kTypeA);
    REQUIRE(q.ok());
    std::vector<uint8_t> resp = *q;
    resp[2] = 0x81;
    resp[3] = 0x80;
    auto a = dns::parse_answer(resp, 0x1234, "example.com", dns::kTypeA);
    REQUIRE(a.ok());
    CHECK(a->addrs.empty());
}
