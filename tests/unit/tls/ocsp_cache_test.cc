// Tests of src/tls/ocsp_cache.h: "ssl_ocsp_cache" values, the keys, and
// the table laid out in a plain buffer standing for the zone.
#include "tls/ocsp_cache.h"

#include <doctest/doctest.h>
#include <openssl/ocsp.h>

#include <cstring>
#include <vector>

#include "tls/test_pki.h"

using namespace gatehouse::tls;
using gatehouse::test::Pki;

namespace {

OcspKey key(int n) {
    OcspKey k{};
    std::memcpy(k.data(), &n, sizeof n);
    k[19] = static_cast<uint8_t>(n);
    return k;
}

}  // namespace

TEST_CASE("tls/ocsp_cache: parse_ocsp_cache takes off and shared:name:size") {
    auto off = parse_ocsp_cache("off");
    REQUIRE(off);
    CHECK_FALSE(off->has_value());
    auto s = parse_ocsp_cache("shared:OCSP:1m");
    REQUIRE(s);
    REQUIRE(s->has_value());
    CHECK((*s)->name == "OCSP");
    CHECK((*s)->size == 1024 * 1024);
    s = parse_ocsp_cache("OCSP:64k");  // "shared:" may be left out [nginx]
    REQUIRE(s);
    CHECK((*s)->size == 64 * 1024);
    CHECK(parse_ocsp_cache("shared:OCSP").message() == "invalid OCSP cache \"shared:OCSP\"");
    CHECK(parse_ocsp_cache("shared::1m").message() == "invalid OCSP cache \"shared::1m\"");
    CHECK(parse_ocsp_cache("shared:OCSP:lots").message() == "invalid OCSP cache \"shared:OCSP:lots\"");
    CHECK(parse_ocsp_cache("shared:OCSP:1k").message() == "OCSP cache \"OCSP\" is too small");
}

TEST_CASE("tls/ocsp_cache: a certificate's key is its CertID's") {
    Pki p;
    auto a = ocsp_cache_key(p.leaf, p.ca);
    auto b = ocsp_cache_key(p.other, p.ca);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(*a != *b);
    CHECK(*a == *ocsp_cache_key(p.leaf, p.ca));
}

TEST_CASE("tls/ocsp_cache: statuses are kept until their validity ends") {
    std::vector<char> zone(OcspCache::kMinZone);
    CHECK(OcspCache::attach(zone.data(), 100) == nullptr);
    OcspCache* c = OcspCache::attach(zone.data(), zone.size());
    REQUIRE(c);
    CHECK(c->slots() > 100);
    CHECK_FALSE(c->lookup(key(1), 1000));
    c->store(key(1), V_OCSP_CERTSTATUS_GOOD, 2000, 1000);
    c->store(key(2), V_OCSP_CERTSTATUS_REVOKED, 2000, 1000);
    CHECK(c->lookup(key(1), 1500) == V_OCSP_CERTSTATUS_GOOD);
    CHECK(c->lookup(key(2), 2000) == V_OCSP_CERTSTATUS_REVOKED);
    CHECK_FALSE(c->lookup(key(1), 2001));
    // A newer answer replaces the older one.
    c->store(key(1), V_OCSP_CERTSTATUS_REVOKED, 3000, 1000);
    CHECK(c->lookup(key(1), 2500) == V_OCSP_CERTSTATUS_REVOKED);
    // Attached again (a reload): the same cache, its entries kept.
    OcspCache* again = OcspCache::attach(zone.data(), zone.size());
    CHECK(again == c);
    CHECK(again->lookup(key(2), 1500) == V_OCSP_CERTSTATUS_REVOKED);
}

TEST_CASE("tls/ocsp_cache: a full cache forgets, bounded by its zone") {
    std::vector<char> zone(OcspCache::kMinZone);
    OcspCache* c = OcspCache::attach(zone.data(), zone.size());
    REQUIRE(c);
    const int n = static_cast<int>(c->slots()) * 4;
    for (int i = 0; i < n; ++i) c->store(key(i), V_OCSP_CERTSTATUS_GOOD, 5000 + i, 1000);
    int kept = 0;
    for (int i = 0; i < n; ++i) kept += c->lookup(key(i), 1000).has_value();
    CHECK(kept <= static_cast<int>(c->slots()));
    CHECK(kept > 0);
    // The latest one is always found.
    CHECK(c->lookup(key(n - 1), 1000) == V_OCSP_CERTSTATUS_GOOD);
}
