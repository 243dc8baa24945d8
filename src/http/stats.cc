#include "http/stats.h"

#include <cstring>
#include <memory>
#include <string>

#include "conf/registry.h"
#include "core/shm.h"

namespace gatehouse::http::stats {

namespace {

// "gh-stats" and the layout's size: a zone of the right size left by
// another layout cannot pass for this one.
constexpr uint64_t kMagic = 0x67682d7374617473ull ^ sizeof(Area);
constexpr char kTag = 0;

Area* g_area = nullptr;
ConnCounters* g_conn = nullptr;
ZoneCounters* g_zones = nullptr;  // g_area->zone[slot]

Area& local_area() {
    // Before init_worker (the master, unit tests) or without an http
    // block: counted here and seen by nobody else.
    static std::unique_ptr<Area> a = std::make_unique<Area>();
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

Area* attach(void* mem) {
    Area* a = static_cast<Area*>(mem);
    // Not by ZoneRef::reused: a zone declared again in the generation that
    // made it is not "reused", and is laid out already.
    if (a->magic != kMagic) {
        // A fresh zone, which no worker uses yet: zeroed by mmap, so this
        // writes the same zeros with the types' blessing.
        a = std::construct_at(a);
        a->magic = kMagic;
    }
    return a;
}

Result<Area*> declare(conf::Ctx& cx) {
    shm::ZoneSet* zones = cx.zones();
    if (!zones) return nullptr;
    auto ref = zones->add(kZoneName, sizeof(Area), &kTag);
    if (!ref) return ref.error();
    return attach(ref->zone->addr());
}

namespace {

// The index of `key` in a table of names, added when new (master, config
// time); `max` when the table is full.
template <size_t N>
uint32_t find_or_add(std::atomic<uint32_t>& count, Name<N>* names, uint32_t max, std::string_view key) {
    const uint32_t n = count.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n; ++i) {
        const Name<N>& z = names[i];
        if (std::string_view(z.text, z.len.load(std::memory_order_relaxed)) == key) return i;
    }
    if (n == max) return max;
    Name<N>& z = names[n];
    std::memcpy(z.text, key.data(), key.size());
    z.len.store(static_cast<uint32_t>(key.size()), std::memory_order_relaxed);
    count.store(n + 1, std::memory_order_release);
    return n;
}

}  // namespace

Result<uint32_t> zone_index(Area& a, std::string_view name) {
    if (name.size() > kMaxZoneName)
        return make_error("status zone name \"" + std::string(name) + "\" is too long");
    const uint32_t i = find_or_add(a.zones, a.names, kMaxZones, name);
    if (i == kMaxZones)
        return make_error("too many status zones (at most " + std::to_string(kMaxZones) +
                          " since the last restart)");
    return i;
}

upstream::PeerCounters* peer_counters(Area& a, std::string_view key) {
    if (key.size() > kMaxPeerKey) return nullptr;
    const uint32_t i = find_or_add(a.peers, a.peer_names, kMaxPeers, key);
    return i == kMaxPeers ? nullptr : &a.peer[i];
}

void use(Area* a, int worker) {
    g_area = a ? a : &local_area();
    const uint32_t slot = static_cast<uint32_t>(worker < 0 ? 0 : worker) % kSlots;
    g_conn = &g_area->conn[slot];
    g_zones = g_area->zone[slot];
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
        const ZoneCounters& z = a.zone[s][zone];
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
