#include "core/ip_ranges.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

using gatehouse::Cidr;
using gatehouse::CidrTableBuilder;
using gatehouse::IpAddr;
using gatehouse::IpTable;
using gatehouse::parse_cidr;
using gatehouse::parse_ip;
using gatehouse::RangeTableBuilder;

namespace {

Cidr cidr(const char* s) { return parse_cidr(s).value().cidr; }
uint32_t find(const IpTable& t, const char* a) { return t.find(parse_ip(a).value()); }
uint32_t v4(const char* a) {
    const IpAddr ip = parse_ip(a).value();
    return uint32_t{ip.bytes[0]} << 24 | uint32_t{ip.bytes[1]} << 16 | uint32_t{ip.bytes[2]} << 8 |
           ip.bytes[3];
}

}  // namespace

TEST_CASE("core/ip_ranges: an empty table gives the value for none everywhere") {
    CidrTableBuilder b;
    IpTable t = b.build(7);
    CHECK(find(t, "0.0.0.0") == 7);
    CHECK(find(t, "255.255.255.255") == 7);
    CHECK(find(t, "::") == 7);
    CHECK(find(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == 7);
    CHECK(t.v4_intervals() == 1);
}

TEST_CASE("core/ip_ranges: nested blocks, the longest prefix wins whatever the order") {
    for (bool reversed : {false, true}) {
        CidrTableBuilder b;
        std::vector<std::pair<const char*, uint32_t>> blocks = {
            {"0.0.0.0/0", 1}, {"10.0.0.0/8", 2}, {"10.1.0.0/16", 3}, {"10.1.2.0/24", 4}, {"10.1.2.3/32", 5}};
        if (reversed) std::reverse(blocks.begin(), blocks.end());
        for (auto [c, v] : blocks) CHECK_FALSE(b.add(cidr(c), v));
        IpTable t = b.build(0);
        CHECK(find(t, "9.255.255.255") == 1);
        CHECK(find(t, "10.0.0.0") == 2);
        CHECK(find(t, "10.0.255.255") == 2);
        CHECK(find(t, "10.1.0.0") == 3);
        CHECK(find(t, "10.1.2.2") == 4);
        CHECK(find(t, "10.1.2.3") == 5);
        CHECK(find(t, "10.1.2.4") == 4);
        CHECK(find(t, "10.1.3.0") == 3);
        CHECK(find(t, "10.2.0.0") == 2);
        CHECK(find(t, "11.0.0.0") == 1);
        CHECK(find(t, "255.255.255.255") == 1);
        // IPv4 blocks say nothing about IPv6 addresses.
        CHECK(find(t, "::1") == 0);
    }
}

TEST_CASE("core/ip_ranges: adjacent blocks and blocks sharing a first address") {
    CidrTableBuilder b;
    b.add(cidr("192.0.2.0/25"), 1);
    b.add(cidr("192.0.2.128/25"), 2);
    b.add(cidr("192.0.2.0/24"), 3);
    b.add(cidr("192.0.2.0/26"), 4);
    b.add(cidr("255.255.255.255"), 5);
    IpTable t = b.build(0);
    CHECK(find(t, "192.0.1.255") == 0);
    CHECK(find(t, "192.0.2.0") == 4);
    CHECK(find(t, "192.0.2.63") == 4);
    CHECK(find(t, "192.0.2.64") == 1);
    CHECK(find(t, "192.0.2.127") == 1);
    CHECK(find(t, "192.0.2.128") == 2);
    CHECK(find(t, "192.0.2.255") == 2);
    CHECK(find(t, "192.0.3.0") == 0);
    CHECK(find(t, "255.255.255.254") == 0);
    CHECK(find(t, "255.255.255.255") == 5);
}

TEST_CASE("core/ip_ranges: adjacent intervals with one value are merged") {
    CidrTableBuilder b;
    b.add(cidr("10.0.0.0/9"), 1);
    b.add(cidr("10.128.0.0/9"), 1);
    b.add(cidr("10.0.0.0/8"), 1);
    IpTable t = b.build(0);
    CHECK(t.v4_intervals() == 3);  // before 10/8, 10/8, after
    CHECK(find(t, "10.127.255.255") == 1);
    CHECK(find(t, "10.128.0.0") == 1);
}

TEST_CASE("core/ip_ranges: the same block again replaces its value") {
    CidrTableBuilder b;
    CHECK_FALSE(b.add(cidr("10.0.0.0/8"), 1));
    CHECK(b.add(cidr("10.0.0.0/8"), 2) == 1u);
    // Same address, another prefix: another block.
    CHECK_FALSE(b.add(cidr("10.0.0.0/16"), 3));
    CHECK(b.add(cidr("2001:db8::/32"), 4) == std::nullopt);
    CHECK(b.add(cidr("2001:db8::/32"), 5) == 4u);
    CHECK(b.size() == 3);
    IpTable t = b.build(0);
    CHECK(find(t, "10.1.0.0") == 2);
    CHECK(find(t, "10.0.1.0") == 3);
    CHECK(find(t, "2001:db8::1") == 5);
}

TEST_CASE("core/ip_ranges: delete removes one block exactly") {
    CidrTableBuilder b;
    b.add(cidr("0.0.0.0/0"), 1);
    b.add(cidr("127.0.0.0/8"), 2);
    b.add(cidr("127.0.0.1/32"), 3);
    CHECK(b.remove(cidr("127.0.0.0/8")));
    CHECK_FALSE(b.remove(cidr("127.0.0.0/8")));
    CHECK_FALSE(b.remove(cidr("127.0.0.0/16")));  // never added
    CHECK_FALSE(b.remove(cidr("::1")));
    IpTable t = b.build(0);
    CHECK(find(t, "127.0.0.1") == 3);  // the block inside stays
    CHECK(find(t, "127.0.0.2") == 1);
}

TEST_CASE("core/ip_ranges: IPv6 blocks, /0 to /128") {
    CidrTableBuilder b;
    b.add(cidr("::/0"), 1);
    b.add(cidr("2001:db8::/32"), 2);
    b.add(cidr("2001:db8:1::/48"), 3);
    b.add(cidr("::1"), 4);
    b.add(cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 5);
    b.add(cidr("10.0.0.0/8"), 6);
    IpTable t = b.build(0);
    CHECK(find(t, "::") == 1);
    CHECK(find(t, "::1") == 4);
    CHECK(find(t, "::2") == 1);
    CHECK(find(t, "2001:db8::") == 2);
    CHECK(find(t, "2001:db8:1::5") == 3);
    CHECK(find(t, "2001:db8:2::") == 2);
    CHECK(find(t, "2001:db9::") == 1);
    CHECK(find(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe") == 1);
    CHECK(find(t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == 5);
    // A mapped address is IPv6 here; the caller unmaps it if it wants.
    CHECK(find(t, "::ffff:10.0.0.1") == 1);
    CHECK(find(t, "10.0.0.1") == 6);
    CHECK(find(t, "11.0.0.1") == 0);
}

TEST_CASE("core/ip_ranges: many blocks agree with a plain longest-prefix search") {
    // Random nested and disjoint blocks, beyond the size where the /16
    // index is built, checked against a linear scan.
    std::mt19937 rng(14);
    struct B {
        uint32_t first;
        unsigned prefix;
        uint32_t value;
    };
    std::vector<B> blocks;
    CidrTableBuilder b;
    for (uint32_t i = 0; i < 6000; ++i) {
        unsigned prefix = 8 + rng() % 25;
        uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
        uint32_t first = (0x0a000000 | (rng() & 0x00ffffff)) & mask;
        Cidr c;
        c.addr.family = AF_INET;
        c.addr.bytes[0] = static_cast<uint8_t>(first >> 24);
        c.addr.bytes[1] = static_cast<uint8_t>(first >> 16);
        c.addr.bytes[2] = static_cast<uint8_t>(first >> 8);
        c.addr.bytes[3] = static_cast<uint8_t>(first);
        c.prefix = static_cast<uint8_t>(prefix);
        uint32_t value = 1 + rng() % 50;
        if (!b.add(c, value))
            blocks.push_back({first, prefix, value});
        else
            for (B& x : blocks)
                if (x.first == first && x.prefix == prefix) x.value = value;
    }
    IpTable t = b.build(0);
    CHECK(t.v4_intervals() > 4096);
    for (int i = 0; i < 20000; ++i) {
        uint32_t a = (i % 2) ? 0x0a000000 | (rng() & 0x00ffffff) : static_cast<uint32_t>(rng());
        unsigned best = 0;
        uint32_t want = 0;
        bool any = false;
        for (const B& x : blocks) {
            uint32_t mask = ~uint32_t{0} << (32 - x.prefix);
            if ((a & mask) == x.first && (!any || x.prefix > best)) {
                any = true;
                best = x.prefix;
                want = x.value;
            }
        }
        REQUIRE(t.find_v4(a) == want);
    }
}

TEST_CASE("core/ip_ranges: ranges, disjoint, with gaps") {
    RangeTableBuilder b;
    std::vector<uint32_t> replaced;
    CHECK_FALSE(b.add(v4("127.0.0.0"), v4("127.255.255.255"), 1, &replaced));
    CHECK_FALSE(b.add(v4("192.0.2.0"), v4("192.0.2.255"), 2, &replaced));
    CHECK_FALSE(b.add(v4("0.0.0.0"), v4("0.0.0.0"), 3, &replaced));
    CHECK_FALSE(b.add(v4("255.255.255.255"), v4("255.255.255.255"), 4, &replaced));
    IpTable t = b.build(9);
    CHECK(find(t, "0.0.0.0") == 3);
    CHECK(find(t, "0.0.0.1") == 9);
    CHECK(find(t, "126.255.255.255") == 9);
    CHECK(find(t, "127.0.0.0") == 1);
    CHECK(find(t, "127.255.255.255") == 1);
    CHECK(find(t, "128.0.0.0") == 9);
    CHECK(find(t, "192.0.2.128") == 2);
    CHECK(find(t, "255.255.255.254") == 9);
    CHECK(find(t, "255.255.255.255") == 4);
}

TEST_CASE("core/ip_ranges: a range inside, at the head or the tail of another") {
    std::vector<uint32_t> replaced;
    SUBCASE("inside: the old range is split around the new one") {
        RangeTableBuilder b;
        b.add(v4("127.0.0.0"), v4("127.0.0.255"), 1, &replaced);
        CHECK_FALSE(b.add(v4("127.0.0.1"), v4("127.0.0.2"), 2, &replaced));
        CHECK_FALSE(b.add(v4("127.0.0.1"), v4("127.0.0.1"), 3, &replaced));  // its head
        CHECK(replaced.empty());
        IpTable t = b.build(0);
        CHECK(find(t, "127.0.0.0") == 1);
        CHECK(find(t, "127.0.0.1") == 3);
        CHECK(find(t, "127.0.0.2") == 2);
        CHECK(find(t, "127.0.0.3") == 1);
        CHECK(find(t, "127.0.1.0") == 0);
    }
    SUBCASE("the same start") {
        RangeTableBuilder b;
        b.add(v4("127.0.0.0"), v4("127.0.0.255"), 1, &replaced);
        CHECK_FALSE(b.add(v4("127.0.0.0"), v4("127.0.0.1"), 2, &replaced));
        IpTable t = b.build(0);
        CHECK(find(t, "127.0.0.1") == 2);
        CHECK(find(t, "127.0.0.2") == 1);
    }
    SUBCASE("the same end") {
        RangeTableBuilder b;
        b.add(v4("127.0.0.0"), v4("127.0.0.255"), 1, &replaced);
        CHECK_FALSE(b.add(v4("127.0.0.1"), v4("127.0.0.255"), 2, &replaced));
        IpTable t = b.build(0);
        CHECK(find(t, "127.0.0.0") == 1);
        CHECK(find(t, "127.0.0.1") == 2);
        CHECK(find(t, "127.0.0.255") == 2);
    }
    SUBCASE("before and after, in any order") {
        RangeTableBuilder b;
        b.add(v4("127.0.0.1"), v4("127.0.0.255"), 1, &replaced);
        CHECK_FALSE(b.add(v4("127.0.0.0"), v4("127.0.0.0"), 2, &replaced));
        IpTable t = b.build(0);
        CHECK(find(t, "127.0.0.0") == 2);
        CHECK(find(t, "127.0.0.1") == 1);
    }
    SUBCASE("the same bounds replace the value") {
        RangeTableBuilder b;
        b.add(v4("10.0.0.0"), v4("10.0.0.9"), 1, &replaced);
        CHECK_FALSE(b.add(v4("10.0.0.0"), v4("10.0.0.9"), 2, &replaced));
        CHECK(replaced == std::vector<uint32_t>{1});
        CHECK(find(b.build(0), "10.0.0.5") == 2);
    }
}

TEST_CASE("core/ip_ranges: a partial overlap is refused, with the piece it overlaps") {
    RangeTableBuilder b;
    std::vector<uint32_t> replaced;
    b.add(v4("127.0.0.10"), v4("127.0.0.20"), 1, &replaced);
    auto o = b.add(v4("127.0.0.15"), v4("127.0.0.25"), 2, &replaced);
    REQUIRE(o);
    CHECK(o->start == v4("127.0.0.10"));
    CHECK(o->end == v4("127.0.0.20"));
    CHECK(b.add(v4("127.0.0.5"), v4("127.0.0.12"), 2, &replaced));
    CHECK(b.add(v4("127.0.0.0"), v4("127.0.0.255"), 2, &replaced));  // around it
}

TEST_CASE("core/ip_ranges: ranges across /16 boundaries are handled per /16, as nginx") {
    RangeTableBuilder b;
    std::vector<uint32_t> replaced;
    // Two ranges, each a whole /16 ...
    b.add(v4("10.0.0.0"), v4("10.0.255.255"), 1, &replaced);
    b.add(v4("10.1.0.0"), v4("10.1.255.255"), 2, &replaced);
    // ... and one over both: a duplicate of each piece, not an overlap.
    CHECK_FALSE(b.add(v4("10.0.0.0"), v4("10.1.255.255"), 3, &replaced));
    CHECK(replaced == std::vector<uint32_t>{1, 2});
    // A range with two /16 pieces, the second ending lower than the
    // first began (nginx f927ab882).
    CHECK_FALSE(b.add(v4("10.10.3.0"), v4("10.11.2.255"), 4, &replaced));
    CHECK_FALSE(b.add(v4("10.12.3.0"), v4("10.13.2.255"), 5, &replaced));
    IpTable t = b.build(0);
    CHECK(find(t, "10.1.7.7") == 3);
    CHECK(find(t, "10.10.2.255") == 0);
    CHECK(find(t, "10.10.3.0") == 4);
    CHECK(find(t, "10.11.2.1") == 4);
    CHECK(find(t, "10.11.3.0") == 0);
    CHECK(find(t, "10.13.2.1") == 5);
}

TEST_CASE("core/ip_ranges: delete takes ranges with exactly the bounds given") {
    RangeTableBuilder b;
    std::vector<uint32_t> replaced;
    b.add(v4("127.0.0.0"), v4("127.0.0.255"), 1, &replaced);
    b.add(v4("127.0.0.1"), v4("127.0.0.1"), 2, &replaced);
    CHECK_FALSE(b.remove(v4("127.0.0.0"), v4("127.0.0.255")));  // split already
    CHECK(b.remove(v4("127.0.0.0"), v4("127.0.0.0")));
    CHECK(b.remove(v4("127.0.0.2"), v4("127.0.0.255")));
    CHECK(b.remove(v4("127.0.0.1"), v4("127.0.0.1")));
    CHECK(b.size() == 0);
    CHECK_FALSE(b.remove(v4("127.0.0.1"), v4("127.0.0.1")));

    b.add(v4("127.0.0.0"), v4("127.1.0.0"), 3, &replaced);
    b.add(v4("10.10.3.0"), v4("10.11.2.255"), 4, &replaced);
    CHECK(b.remove(v4("127.0.0.0"), v4("127.1.0.0")));
    IpTable t = b.build(8);
    CHECK(find(t, "127.0.0.1") == 8);
    CHECK(find(t, "127.1.0.0") == 8);
    CHECK(find(t, "10.11.2.1") == 4);
    CHECK(t.v6_intervals() == 1);
    CHECK(find(t, "::1") == 8);
}

TEST_CASE("core/ip_ranges: a large table of ranges in increasing order") {
    RangeTableBuilder b;
    std::vector<uint32_t> replaced;
    for (uint32_t i = 0; i < 100000; ++i) b.add(0x7f000000 + 2 * i, 0x7f000000 + 2 * i, i % 7 + 1, &replaced);
    IpTable t = b.build(0);
    CHECK(t.find_v4(0x7f000000) == 1);
    CHECK(t.find_v4(0x7f000001) == 0);
    CHECK(t.find_v4(0x7f000000 + 2 * 99999) == 99999 % 7 + 1);
    CHECK(t.find_v4(0x7f000000 + 2 * 54321) == 54321 % 7 + 1);
    CHECK(t.find_v4(0x7f000000 + 2 * 54321 + 1) == 0);
    CHECK(t.find_v4(0x80000000) == 0);
}
