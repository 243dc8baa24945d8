// Tests of src/tls/ticket_keys.h: nginx's key file layouts.
#include "tls/ticket_keys.h"

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "temp_dir.h"

using namespace gatehouse::tls;

namespace {

std::vector<uint8_t> counting(size_t n) {
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i);
    return b;
}

bool same(const uint8_t* p, const std::vector<uint8_t>& b, size_t from, size_t len) {
    return memcmp(p, b.data() + from, len) == 0;
}

}  // namespace

TEST_CASE("tls/ticket_keys: 80 bytes are name, HMAC secret, AES-256 key") {
    auto b = counting(80);
    TicketKey k = parse_ticket_key(b).value();
    CHECK(k.size == 80);
    CHECK(k.aes_len() == 32);
    CHECK(k.hmac_len() == 32);
    CHECK(same(k.name, b, 0, 16));
    CHECK(same(k.hmac_key, b, 16, 32));
    CHECK(same(k.aes_key, b, 48, 32));
}

TEST_CASE("tls/ticket_keys: 48 bytes are name, AES-128 key, HMAC secret") {
    auto b = counting(48);
    TicketKey k = parse_ticket_key(b).value();
    CHECK(k.size == 48);
    CHECK(k.aes_len() == 16);
    CHECK(k.hmac_len() == 16);
    CHECK(same(k.name, b, 0, 16));
    CHECK(same(k.aes_key, b, 16, 16));
    CHECK(same(k.hmac_key, b, 32, 16));
}

TEST_CASE("tls/ticket_keys: other sizes are refused") {
    for (size_t n : {0, 16, 47, 49, 79, 81, 96}) {
        auto b = counting(n);
        auto k = parse_ticket_key(b);
        REQUIRE_FALSE(k.ok());
        CHECK(k.message() == std::to_string(n) + " bytes, it must be 80 or 48");
    }
}

TEST_CASE("tls/ticket_keys: read_ticket_key names the file") {
    gatehouse::test::TempDir d;
    std::string good = d.write("t.key", std::string(80, 'k'));
    CHECK(read_ticket_key(good).value().size == 80);
    std::string bad = d.write("bad.key", "short");
    auto k = read_ticket_key(bad);
    REQUIRE_FALSE(k.ok());
    CHECK(k.message() == "\"" + bad + "\" has 5 bytes, it must be 80 or 48");
    auto missing = read_ticket_key(d / "none.key");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.message().find("open() \"" + (d / "none.key") + "\" failed") == 0);
}

TEST_CASE("tls/ticket_keys: the process key is made once") {
    const TicketKey& a = process_ticket_key();
    const TicketKey& b = process_ticket_key();
    CHECK(&a == &b);
    CHECK(a.size == 80);
    static const uint8_t zero[16] = {};
    CHECK(memcmp(a.name, zero, 16) != 0);
}

namespace {

// A zeroed, suitably aligned stand-in for a fresh shared memory zone.
struct FakeZone {
    alignas(64) uint8_t bytes[TicketRing::kZoneSize] = {};
};

std::string name_of(const TicketKey& k) { return std::string(reinterpret_cast<const char*>(k.name), 16); }

}  // namespace

TEST_CASE("tls/ticket_keys: a ring starts with one key and is found again") {
    static FakeZone z;
    TicketRing* r = TicketRing::attach(z.bytes, sizeof z.bytes, 1000);
    REQUIRE(r != nullptr);
    TicketKey out[TicketRing::kKeys];
    REQUIRE(r->keys(1000, 300, out) == 1);
    std::string first = name_of(out[0]);
    // A reused zone (a reload) keeps its keys.
    CHECK(TicketRing::attach(z.bytes, sizeof z.bytes, 2000) == r);
    REQUIRE(r->keys(1299, 300, out) == 1);
    CHECK(name_of(out[0]) == first);
    CHECK(TicketRing::attach(z.bytes, 16, 1000) == nullptr);
}

TEST_CASE("tls/ticket_keys: a ring rotates every period and keeps three keys") {
    static FakeZone z;
    TicketRing* r = TicketRing::attach(z.bytes, sizeof z.bytes, 0);
    TicketKey out[TicketRing::kKeys];
    r->keys(0, 300, out);
    std::string k0 = name_of(out[0]);
    // One period later: a new key encrypts, the old one still decrypts.
    REQUIRE(r->keys(300, 300, out) == 2);
    std::string k1 = name_of(out[0]);
    CHECK(k1 != k0);
    CHECK(name_of(out[1]) == k0);
    REQUIRE(r->keys(600, 300, out) == 3);
    CHECK(name_of(out[2]) == k0);
    // A third rotation drops the first key.
    REQUIRE(r->keys(900, 300, out) == 3);
    for (const TicketKey& k : out) CHECK(name_of(k) != k0);
    CHECK(name_of(out[2]) == k1);
    // Not due: nothing changes; a clock going back changes nothing.
    std::string newest = name_of(out[0]);
    r->keys(1199, 300, out);
    CHECK(name_of(out[0]) == newest);
    r->keys(5, 300, out);
    CHECK(name_of(out[0]) == newest);
}

TEST_CASE("tls/ticket_keys: an idle ring replaces every key at once") {
    static FakeZone z;
    TicketRing* r = TicketRing::attach(z.bytes, sizeof z.bytes, 0);
    TicketKey out[TicketRing::kKeys];
    r->keys(300, 300, out);
    std::string a = name_of(out[0]), b = name_of(out[1]);
    REQUIRE(r->keys(100000, 300, out) == 3);
    for (const TicketKey& k : out) {
        CHECK(name_of(k) != a);
        CHECK(name_of(k) != b);
    }
    // The next rotation is one period after the catch-up, not before.
    std::string newest = name_of(out[0]);
    r->keys(100299, 300, out);
    CHECK(name_of(out[0]) == newest);
}
