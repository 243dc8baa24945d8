// Tests of src/http/stats.h: the layout found again in a reused zone,
// status zone names kept and bounded, the connection states as
// stub_status counts them, and sums over the workers' slots.
#include "http/stats.h"

#include <doctest/doctest.h>
#include <sys/mman.h>

#include <string>

namespace stats = gatehouse::http::stats;
using State = stats::ConnGauge::State;

namespace {

// A zeroed mapping the size of an area of limits `l`, as a fresh zone is.
struct Mapping {
    explicit Mapping(stats::Limits l = {})
        : n(stats::area_bytes(l)), p(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) {
        REQUIRE(p != MAP_FAILED);
    }
    ~Mapping() { ::munmap(p, n); }
    size_t n;
    void* p;
};

}  // namespace

TEST_CASE("http/stats: a reused zone keeps its counts and names") {
    Mapping m;
    stats::Area* a = stats::attach(m.p, {});
    CHECK(stats::zone_index(*a, "s:site").value() == 0);
    CHECK(stats::zone_index(*a, "l:api").value() == 1);
    a->conn[3].accepted.fetch_add(5);
    // The next generation attaches to the same memory.
    stats::Area* b = stats::attach(m.p, {});
    CHECK(b == a);
    CHECK(stats::conn_totals(*b).accepted == 5);
    CHECK(stats::zone_index(*b, "l:api").value() == 1);
    CHECK(stats::zone_index(*b, "s:other").value() == 2);
}

TEST_CASE("http/stats: status zone names are bounded") {
    Mapping m;
    stats::Area* a = stats::attach(m.p, {});
    CHECK(stats::zone_index(*a, std::string(stats::kMaxZoneName, 'x')));
    auto tooLong = stats::zone_index(*a, std::string(stats::kMaxZoneName + 1, 'x'));
    REQUIRE_FALSE(tooLong);
    CHECK(tooLong.error().message.find("is too long") != std::string::npos);
    for (uint32_t i = 1; i < stats::Limits::kDefaultZones; ++i) CHECK(stats::zone_index(*a, "z" + std::to_string(i)));
    auto full = stats::zone_index(*a, "one more");
    REQUIRE_FALSE(full);
    CHECK(full.error().message.find("too many status zones") != std::string::npos);
}

TEST_CASE("http/stats: connection states move the gauges") {
    Mapping m;
    stats::Area* a = stats::attach(m.p, {});
    stats::use(a, 0);
    {
        stats::ConnGauge g;
        g.accepted();
        auto t = stats::conn_totals(*a);
        CHECK((t.accepted == 1 && t.handled == 1 && t.active == 1 && t.waiting() == 1 && t.requests == 0));
        g.to(State::Reading);
        g.to(State::Reading);  // more of the same head: no new request
        t = stats::conn_totals(*a);
        CHECK((t.reading == 1 && t.waiting() == 0 && t.requests == 1));
        g.to(State::Writing);
        t = stats::conn_totals(*a);
        CHECK((t.reading == 0 && t.writing == 1 && t.requests == 1));
        g.to(State::Waiting);
        // A request the front-end makes without a head arriving (no
        // Reading before it) counts too.
        g.to(State::Writing);
        t = stats::conn_totals(*a);
        CHECK((t.writing == 1 && t.requests == 2));
    }  // closed by its destructor
    auto t = stats::conn_totals(*a);
    CHECK((t.active == 0 && t.reading == 0 && t.writing == 0 && t.waiting() == 0));
    stats::use(nullptr, 0);
}

TEST_CASE("http/stats: the slots of every worker are summed") {
    Mapping m;
    stats::Area* a = stats::attach(m.p, {});
    const uint32_t z = stats::zone_index(*a, "s:site").value();
    for (int worker = 0; worker < 20; ++worker) {  // more workers than slots share them
        stats::use(a, worker);
        stats::ConnGauge g;
        g.accepted();
        g.to(State::Writing);
        stats::mine(z).requests.fetch_add(1);
        stats::mine(z).buckets[worker % stats::kBuckets].fetch_add(1);
        stats::tls_handshake(true, worker % 2 == 0);
        stats::tls_handshake(false, false);
        g.closed();
    }
    stats::use(nullptr, 0);
    auto t = stats::conn_totals(*a);
    CHECK(t.accepted == 20);
    CHECK(t.requests == 20);
    CHECK(t.active == 0);
    CHECK(t.tls_handshakes == 20);
    CHECK(t.tls_reused == 10);
    CHECK(t.tls_failed == 20);
    auto zt = stats::zone_totals(*a, z);
    CHECK(zt.requests == 20);
    uint64_t in_buckets = 0;
    for (uint64_t b : zt.buckets) in_buckets += b;
    CHECK(in_buckets == 20);
}

TEST_CASE("http/stats: the tables are as large as the limits say") {
    const stats::Limits l{.zones = 3, .peers = 2};
    CHECK(stats::area_bytes(l) < stats::area_bytes({}));
    Mapping m(l);
    stats::Area* a = stats::attach(m.p, l);
    CHECK((a->max_zones == 3 && a->max_peers == 2));
    for (int i = 0; i < 3; ++i) CHECK(stats::zone_index(*a, "z" + std::to_string(i)).value() == i);
    auto full = stats::zone_index(*a, "z3");
    REQUIRE_FALSE(full);
    CHECK(full.error().message == "too many status zones (at most 3 since the last restart, see \"status_zones_max\")");
    // Known names are still found.
    CHECK(stats::zone_index(*a, "z1").value() == 1);
    gatehouse::upstream::PeerCounters* p0 = stats::peer_counters(*a, "u 127.0.0.1:1");
    gatehouse::upstream::PeerCounters* p1 = stats::peer_counters(*a, "u 127.0.0.1:2");
    CHECK((p0 && p1 && p0 != p1));
    CHECK(stats::peer_counters(*a, "u 127.0.0.1:3") == nullptr);
    CHECK(stats::peer_counters(*a, "u 127.0.0.1:1") == p0);
    // Each table's last entry is inside the mapping, and apart from the next.
    auto* end = static_cast<char*>(m.p) + m.n;
    CHECK(reinterpret_cast<char*>(p1 + 1) <= end);
    CHECK(reinterpret_cast<char*>(&a->zone(stats::kSlots - 1, 2) + 1) <= reinterpret_cast<char*>(&a->peer_name(0)));
    // Every slot's counters of a zone are summed.
    stats::use(a, 5);
    stats::mine(2).requests.fetch_add(2);
    stats::use(a, 6);
    stats::mine(2).requests.fetch_add(1);
    stats::use(nullptr, 0);
    CHECK(stats::zone_totals(*a, 2).requests == 3);
    CHECK(stats::zone_totals(*a, 1).requests == 0);
}
