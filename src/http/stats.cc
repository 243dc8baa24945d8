#include "http/stats.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "conf/registry.h"
#include "core/assert.h"
#include "core/shm.h"

namespace gatehouse::http::stats {

namespace {

// "gh-stats" and the header's and records' sizes: a zone of the right
// size left by another layout cannot pass for this one.
constexpr uint64_t kMagic = 0x67682d7374617473ull ^ sizeof(Area) ^ (sizeof(ZoneCounters) << 16) ^
                            (sizeof(upstream::PeerCounters) << 32);
constexpr char kTag = 0;

Area* g_area = nullptr;
ConnCounters* g_conn = nullptr;
ZoneCounters* g_zones = nullptr;  // &g_area->zone(slot, 0)

constexpr size_t round64(size_t n) { return (n + 63) / 64 * 64; }

// The tables' offsets from the header, in the order they follow it.
struct Offsets {
    size_t names, zones, peer_names, peers, end;
};
Offsets offsets(uint32_t max_zones, uint32_t max_peers) {
    Offsets o;
    o.names = round64(sizeof(Area));
    o.zones = round64(o.names + sizeof(ZoneName) * max_zones);
    o.peer_names = round64(o.zones + sizeof(ZoneCounters) * kSlots * max_zones);
    o.peers = round64(o.peer_names + sizeof(PeerName) * max_peers);
    o.end = o.peers + sizeof(upstream::PeerCounters) * max_peers;
    return o;
}

Area& local_area() {
    // Before init_worker (the master, unit tests) or without an http
    // block: counted here and seen by nobody else. Zeroed like a fresh
    // zone, aligned like one (the counters keep to their cache lines).
    struct Free {
        void operator()(void* p) const { std::free(p); }
    };
    static std::unique_ptr<void, Free> mem = [] {
        const size_t n = round64(area_bytes(Limits{}));
        void* p = std::aligned_alloc(64, n);
        GH_CHECK(p != nullptr);
        std::memset(p, 0, n);
        return std::unique_ptr<void, Free>(p);
    }();
    static Area* a = attach(mem.get(), Limits{});
    return *a;
}

constexpr std::string_view kCacheNames[] = {"MISS", "BYPASS", "EXPIRED", "STALE",
                                            "UPDATING", "REVALIDATED", "HIT"};
constexpr std::string_view kLimitReqNames[] = {"PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN",
                                               "REJECTED_DRY_RUN"};
constexpr std::string_view kLimitConnNames[] = {"PASSED", "REJECTED", "REJECTED_DRY_RUN"};

uint64_t load(const Counter& c) { return c.load(std::memory_order_relaxed); }
int64_t load(const Gauge& c) { return c.load(std::memory_order_relaxed); }
void add(Counter& c, uint64_t v = 1) { c.fetch_add(v, std::memory_order_relaxed); }
void add(Gauge& c, int64_t v) { c.fetch_add(v, std::memory_order_relaxed); }

Gauge* gauge_of(ConnCounters& c, ConnGauge::State s) {
    switch (s) {
        case ConnGauge::State::Reading: return &c.reading;
        case ConnGauge::State::Writing: return &c.writing;
        default: return nullptr;  // waiting is what the others leave
    }
}

}  // namespace

std::string_view name_of(Cache c) { return kCacheNames[static_cast<int>(c)]; }
std::string_view name_of(LimitReq c) { return kLimitReqNames[static_cast<int>(c)]; }
std::string_view name_of(LimitConn c) { return kLimitConnNames[static_cast<int>(c)]; }

size_t area_bytes(Limits l) { return offsets(l.zones, l.peers).end; }

ZoneName* Area::names_() { return reinterpret_cast<ZoneName*>(reinterpret_cast<char*>(this) + offsets(max_zones, max_peers).names); }
ZoneCounters* Area::zones_() {
    return reinterpret_cast<ZoneCounters*>(reinterpret_cast<char*>(this) + offsets(max_zones, max_peers).zones);
}
PeerName* Area::peer_names_() {
    return reinterpret_cast<PeerName*>(reinterpret_cast<char*>(this) + offsets(max_zones, max_peers).peer_names);
}
upstream::PeerCounters* Area::peers_() {
    return reinterpret_cast<upstream::PeerCounters*>(reinterpret_cast<char*>(this) +
                                                     offsets(max_zones, max_peers).peers);
}

Area* attach(void* mem, Limits l) {
    Area* a = static_cast<Area*>(mem);
    // Not by ZoneRef::reused: a zone declared again in the generation that
    // made it is not "reused", and is laid out already. The zone's name
    // carries the limits, so a laid-out zone has these.
    if (a->magic != kMagic) {
        // A fresh zone, which no worker uses yet: zeroed by mmap, so this
        // writes the same zeros with the types' blessing.
        a = std::construct_at(a);
        a->max_zones = l.zones;
        a->max_peers = l.peers;
        for (uint32_t i = 0; i < l.zones; ++i) std::construct_at(&a->name(i));
        for (uint32_t i = 0; i < kSlots * l.zones; ++i) std::construct_at(&a->zone(0, i));
        for (uint32_t i = 0; i < l.peers; ++i) {
            std::construct_at(&a->peer_name(i));
            std::construct_at(&a->peer(i));
        }
        a->magic = kMagic;
    }
    GH_CHECK(a->max_zones == l.zones && a->max_peers == l.peers);
    return a;
}

Result<Area*> declare(conf::Ctx& cx, Limits l) {
    shm::ZoneSet* zones = cx.zones();
    if (!zones) return nullptr;
    const std::string name =
        std::string(kZonePrefix) + '/' + std::to_string(l.zones) + '/' + std::to_string(l.peers);
    auto ref = zones->add(name, area_bytes(l), &kTag);
    if (!ref) return ref.error();
    return attach(ref->zone->addr(), l);
}

Area* declared(conf::Ctx& cx) {
    shm::ZoneSet* zones = cx.zones();
    if (!zones) return nullptr;
    for (const shm::ZoneRef& z : zones->zones())
        if (z.zone->tag() == &kTag) return static_cast<Area*>(z.zone->addr());
    return nullptr;
}

namespace {

// The index of `key` in a table of names, added when new (master, config
// time); `max` when the table is full.
template <size_t N, typename At>
uint32_t find_or_add(std::atomic<uint32_t>& count, At names, uint32_t max, std::string_view key) {
    const uint32_t n = count.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n; ++i) {
        const Name<N>& z = names(i);
        if (std::string_view(z.text, z.len.load(std::memory_order_relaxed)) == key) return i;
    }
    if (n == max) return max;
    Name<N>& z = names(n);
    std::memcpy(z.text, key.data(), key.size());
    z.len.store(static_cast<uint32_t>(key.size()), std::memory_order_relaxed);
    count.store(n + 1, std::memory_order_release);
    return n;
}

}  // namespace

Result<uint32_t> zone_index(Area& a, std::string_view name) {
    if (name.size() > kMaxZoneName)
        return make_error("status zone name \"" + std::string(name) + "\" is too long");
    const uint32_t i =
        find_or_add<kMaxZoneName>(a.zones, [&](uint32_t k) -> ZoneName& { return a.name(k); }, a.max_zones, name);
    // Names are kept across reloads: count those since the last restart.
    if (i == a.max_zones)
        return make_error("too many status zones (at most " + std::to_string(a.max_zones) +
                          " since the last restart, see \"status_zones_max\")");
    return i;
}

upstream::PeerCounters* peer_counters(Area& a, std::string_view key) {
    if (key.size() > kMaxPeerKey) return nullptr;
    const uint32_t i =
        find_or_add<kMaxPeerKey>(a.peers, [&](uint32_t k) -> PeerName& { return a.peer_name(k); }, a.max_peers, key);
    return i == a.max_peers ? nullptr : &a.peer(i);
}

void use(Area* a, int worker) {
    g_area = a ? a : &local_area();
    const uint32_t slot = static_cast<uint32_t>(worker < 0 ? 0 : worker) % kSlots;
    g_conn = &g_area->conn[slot];
    g_zones = &g_area->zone(slot, 0);
}

Area& current() {
    if (!g_area) use(nullptr, 0);
    return *g_area;
}

ConnCounters& mine() {
    if (!g_conn) use(nullptr, 0);
    return *g_conn;
}

ZoneCounters& mine(uint32_t zone) {
    if (!g_zones) use(nullptr, 0);
    return g_zones[zone];
}

ConnTotals conn_totals(const Area& a) {
    ConnTotals t;
    for (const ConnCounters& c : a.conn) {
        t.accepted += load(c.accepted);
        t.handled += load(c.handled);
        t.requests += load(c.requests);
        t.active += load(c.active);
        t.reading += load(c.reading);
        t.writing += load(c.writing);
        t.tls_handshakes += load(c.tls_handshakes);
        t.tls_failed += load(c.tls_failed);
        t.tls_reused += load(c.tls_reused);
        for (int i = 0; i < static_cast<int>(Cache::Count); ++i) {
            t.cache[i] += load(c.cache[i]);
            t.cache_bytes[i] += load(c.cache_bytes[i]);
        }
        for (int i = 0; i < static_cast<int>(LimitReq::Count); ++i) t.limit_req[i] += load(c.limit_req[i]);
        for (int i = 0; i < static_cast<int>(LimitConn::Count); ++i) t.limit_conn[i] += load(c.limit_conn[i]);
        for (uint32_t i = 0; i < kCodings; ++i) {
            t.compressed_in[i] += load(c.compressed_in[i]);
            t.compressed_out[i] += load(c.compressed_out[i]);
        }
    }
    return t;
}

ZoneTotals zone_totals(const Area& a, uint32_t zone) {
    ZoneTotals t;
    for (uint32_t s = 0; s < kSlots; ++s) {
        const ZoneCounters& z = a.zone(s, zone);
        t.processing += load(z.processing);
        t.requests += load(z.requests);
        for (int i = 0; i < 5; ++i) t.responses[i] += load(z.responses[i]);
        t.bytes_in += load(z.bytes_in);
        t.bytes_out += load(z.bytes_out);
        t.duration_ms += load(z.duration_ms);
        for (uint32_t b = 0; b < kBuckets; ++b) t.buckets[b] += load(z.buckets[b]);
    }
    return t;
}

void ConnGauge::accepted() {
    ConnCounters& c = mine();
    add(c.accepted);
    add(c.handled);
    add(c.active, 1);
    state_ = State::Waiting;
}

void ConnGauge::to(State s) {
    if (state_ == s || state_ == State::Closed || s == State::Closed) return;
    ConnCounters& c = mine();
    if (Gauge* g = gauge_of(c, state_)) add(*g, -1);
    if (Gauge* g = gauge_of(c, s)) add(*g, 1);
    // A request starts when its head does, or when it is served with no
    // head seen arriving (made by the front-end itself).
    if (s == State::Reading || (s == State::Writing && state_ == State::Waiting)) add(c.requests);
    state_ = s;
}

void ConnGauge::request_started() {
    if (state_ == State::Closed) return;
    if (state_ != State::Writing) return to(State::Writing);
    add(mine().requests);
}

void ConnGauge::closed() {
    if (state_ == State::Closed) return;
    ConnCounters& c = mine();
    if (Gauge* g = gauge_of(c, state_)) add(*g, -1);
    add(c.active, -1);
    state_ = State::Closed;
}

void tls_handshake(bool ok, bool reused) {
    ConnCounters& c = mine();
    if (!ok) {
        add(c.tls_failed);
        return;
    }
    add(c.tls_handshakes);
    if (reused) add(c.tls_reused);
}

void compressed(uint8_t coding, uint64_t in, uint64_t out) {
    if (coding >= kCodings) return;
    ConnCounters& c = mine();
    add(c.compressed_in[coding], in);
    add(c.compressed_out[coding], out);
}

}  // namespace gatehouse::http::stats
