// The server's counters in shared memory: connections and requests (what
// stub_status shows), the status zones' traffic, TLS handshakes and the
// outcomes of the cache and the limits (what "metrics" exports).
//
// Where they live. One zone, which every configuration generation with
// an http block declares, named after its limits ("gatehouse:stats/128/
// 1024": status_zones_max and status_peers_max, which size the tables):
// the registry hands the same mapping to the next generation when the
// limits are unchanged (core/shm.h), so a reload keeps the counts, and
// since old and new workers add to that one zone, nothing is counted
// twice. New limits make a new zone, starting from zero (as a resized
// zone does in nginx); the old workers keep theirs until they exit. A
// binary upgrade (exec) starts from zero, as nginx's does.
//
// Lock-free. Each worker adds to its own slot (its worker number modulo
// kSlots) with relaxed atomic adds, so the request path never waits nor
// shares a cache line with another worker; a reader (stub_status, the
// metrics page, the $connections_* variables) sums the slots. Two workers
// on one slot (an old one still finishing after a reload, or more than
// kSlots workers) stay correct: the adds are atomic.
//
// Gauges (active, reading, writing) are kept as increments and decrements
// of the same slots; the sum is the gauge. A worker killed with open
// connections leaves its share in the sum, as nginx's counters do.
//
// Who calls. The protocol front-ends own one ConnGauge per client
// connection and move it between states (the seam: front-ends never name
// the counters below); request accounting is done by the metrics module
// at the log phase; init_worker picks the slot. Everything else reads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "conf/fwd.h"
#include "core/result.h"
#include "upstream/upstream.h"

namespace gatehouse::http::stats {

inline constexpr std::string_view kZonePrefix = "gatehouse:stats";
inline constexpr uint32_t kSlots = 16;
// The sizes of the two tables of names ("status_zones_max",
// "status_peers_max"): the defaults, and the most the directives take.
//   Status zones ("status_zone"): names in the order first declared,
//   kept across reloads; a configuration declaring more is refused.
//   Upstream peers counted (those of groups with a zone), by "group
//   address" (or "group #index" for a run-time slot), kept across
//   reloads like the zones' names; peers beyond are not counted.
// A zone costs kSlots ZoneCounters (3 KiB), a peer about 300 bytes.
struct Limits {
    static constexpr uint32_t kDefaultZones = 128;
    static constexpr uint32_t kMostZones = 16384;
    static constexpr uint32_t kDefaultPeers = 1024;
    static constexpr uint32_t kMostPeers = 65536;
    uint32_t zones = kDefaultZones;
    uint32_t peers = kDefaultPeers;
};
inline constexpr size_t kMaxZoneName = 63;
inline constexpr size_t kMaxPeerKey = 127;
// The request-duration histogram's upper bounds, in milliseconds (the
// Prometheus client defaults); one more bucket counts the rest (+Inf).
inline constexpr uint32_t kBucketsMs[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
inline constexpr uint32_t kBuckets = sizeof kBucketsMs / sizeof kBucketsMs[0] + 1;

// The compressors' codings, as http::Coding numbers them (accept_encoding.h).
inline constexpr uint32_t kCodings = 3;

using Counter = std::atomic<uint64_t>;
using Gauge = std::atomic<int64_t>;

// Outcomes counted by name ($upstream_cache_status, $limit_req_status,
// $limit_conn_status); the index into Outcomes.
enum class Cache : uint8_t { Miss, Bypass, Expired, Stale, Updating, Revalidated, Hit, Count };
enum class LimitReq : uint8_t { Passed, Delayed, Rejected, DelayedDryRun, RejectedDryRun, Count };
enum class LimitConn : uint8_t { Passed, Rejected, RejectedDryRun, Count };
std::string_view name_of(Cache c);
std::string_view name_of(LimitReq c);
std::string_view name_of(LimitConn c);

struct alignas(64) ConnCounters {
    Counter accepted{0};
    Counter handled{0};
    Counter requests{0};
    Gauge active{0};
    Gauge reading{0};
    Gauge writing{0};
    Counter tls_handshakes{0};
    Counter tls_failed{0};
    Counter tls_reused{0};
    Counter cache[static_cast<int>(Cache::Count)] = {};
    Counter cache_bytes[static_cast<int>(Cache::Count)] = {};
    Counter limit_req[static_cast<int>(LimitReq::Count)] = {};
    Counter limit_conn[static_cast<int>(LimitConn::Count)] = {};
    // By coding (http::Coding: zstd, br, gzip): bytes into and out of
    // the compressor, for responses compressed to the end.
    Counter compressed_in[kCodings] = {};
    Counter compressed_out[kCodings] = {};
};

struct alignas(64) ZoneCounters {
    // Server zones: requests between their first phase and their log
    // line (a worker's share may be negative; the sum is not).
    Gauge processing{0};
    Counter requests{0};
    Counter responses[5] = {};  // 1xx..5xx
    Counter bytes_in{0};        // request heads and bodies
    Counter bytes_out{0};       // response heads and bodies
    Counter duration_ms{0};     // the histogram's sum
    Counter buckets[kBuckets] = {};  // not cumulative: bucket i only
};

// A name in a table (status zones, peers), written by the master at
// config time before any worker of that generation runs; `len` is stored
// before the table's count is raised (release).
template <size_t N>
struct Name {
    char text[N + 1] = {};
    std::atomic<uint32_t> len{0};
};
using ZoneName = Name<kMaxZoneName>;
using PeerName = Name<kMaxPeerKey>;

// The zone's layout: this header, then the tables sized by its limits
// (names of the zones, each slot's zone counters, names of the peers,
// the peers' counters), found by the accessors. Constructed once in a
// fresh zone (attach()); the limits never change in a zone.
struct Area {
    uint64_t magic = 0;
    uint32_t max_zones = 0;
    uint32_t max_peers = 0;
    std::atomic<uint32_t> zones{0};  // names in use
    std::atomic<uint32_t> peers{0};  // names in use
    ConnCounters conn[kSlots];

    ZoneName& name(uint32_t i) { return names_()[i]; }
    const ZoneName& name(uint32_t i) const { return const_cast<Area*>(this)->names_()[i]; }
    ZoneCounters& zone(uint32_t slot, uint32_t i) { return zones_()[slot * max_zones + i]; }
    const ZoneCounters& zone(uint32_t slot, uint32_t i) const { return const_cast<Area*>(this)->zone(slot, i); }
    PeerName& peer_name(uint32_t i) { return peer_names_()[i]; }
    // Shared by every worker (no slots): a peer's tries are few next to
    // a zone's requests, and the upstream zone's state is shared as well.
    upstream::PeerCounters& peer(uint32_t i) { return peers_()[i]; }

private:
    ZoneName* names_();
    ZoneCounters* zones_();
    PeerName* peer_names_();
    upstream::PeerCounters* peers_();
};

// The bytes an area of these limits takes.
size_t area_bytes(Limits l);

// Sums over the slots, read without locks: each value is exact, the set
// of them a near-instant snapshot.
struct ConnTotals {
    uint64_t accepted = 0, handled = 0, requests = 0;
    int64_t active = 0, reading = 0, writing = 0;
    int64_t waiting() const { return active - reading - writing; }
    uint64_t tls_handshakes = 0, tls_failed = 0, tls_reused = 0;
    uint64_t cache[static_cast<int>(Cache::Count)] = {};
    uint64_t cache_bytes[static_cast<int>(Cache::Count)] = {};
    uint64_t limit_req[static_cast<int>(LimitReq::Count)] = {};
    uint64_t limit_conn[static_cast<int>(LimitConn::Count)] = {};
    uint64_t compressed_in[kCodings] = {};
    uint64_t compressed_out[kCodings] = {};
};
struct ZoneTotals {
    int64_t processing = 0;
    uint64_t requests = 0;
    uint64_t responses[5] = {};
    uint64_t bytes_in = 0, bytes_out = 0, duration_ms = 0;
    uint64_t buckets[kBuckets] = {};  // not cumulative
};

// ---- config time (master) ------------------------------------------------

// Declares the zone in the generation being loaded (idempotent within
// it for the same limits) and lays it out when fresh. Null when cx has
// no zones (unit tests): counting then goes to this process's own area,
// see current(). Errors are ZoneSet::add's.
Result<Area*> declare(conf::Ctx& cx, Limits l);
// The area declare() gave the generation being loaded (stub_status_module
// declares it first, in its postconfiguration); null when cx has no
// zones, or declare() was not called.
Area* declared(conf::Ctx& cx);
// Lays out `mem` (area_bytes(l) bytes, zeroed when fresh) or finds the
// layout already there.
Area* attach(void* mem, Limits l);
// The index of status zone `name`, given it when new. Error: "too many
// status zones" beyond a.max_zones.
Result<uint32_t> zone_index(Area& a, std::string_view name);
// The counters of peer `key`, made when new; null when a.max_peers are
// taken or the key is longer than kMaxPeerKey.
upstream::PeerCounters* peer_counters(Area& a, std::string_view key);

// ---- worker ------------------------------------------------------------------

// Counting goes to area `a`, slot `worker % kSlots` (init_worker); until
// then, and with a null area, to a process-local area of default limits.
void use(Area* a, int worker);
Area& current();
ConnCounters& mine();
ZoneCounters& mine(uint32_t zone);

ConnTotals conn_totals(const Area& a);
ZoneTotals zone_totals(const Area& a, uint32_t zone);

// ---- the seam the front-ends call ------------------------------------------

// The state of one client connection as stub_status counts it: Waiting
// (no request in it: idle keep-alive, or accepted and nothing read yet,
// or a TLS handshake), Reading (a request head is arriving), Writing (a
// request is being served). Owned by the front-end's connection object;
// accepted() once, then moves; the destructor (or closed()) takes it out.
class ConnGauge {
public:
    enum class State : uint8_t { Closed, Waiting, Reading, Writing };
    ConnGauge() = default;
    ConnGauge(const ConnGauge&) = delete;
    ConnGauge& operator=(const ConnGauge&) = delete;
    ~ConnGauge() { closed(); }

    // Counts it accepted and handled, active and waiting.
    void accepted();
    // Reading counts a request (nginx counts one when its first byte
    // arrives), and so does Writing straight from Waiting. No-op when
    // already there or closed.
    void to(State s);
    void closed();
    State state() const { return state_; }
    // Takes over `from`'s connection, counting nothing (HTTP/1 hands a
    // connection to HTTP/2: still one connection, accepted once).
    void adopt(ConnGauge& from) {
        closed();
        state_ = from.state_;
        from.state_ = State::Closed;
    }
    // One more request on a connection that serves several at once
    // (HTTP/2 streams): Writing from Waiting, else counted as is.
    void request_started();

private:
    State state_ = State::Closed;
};

// A TLS handshake with a client ended: ok or not, resumed a session or not.
void tls_handshake(bool ok, bool reused);
// The compression filter finished a response body in `coding`
// (http::Coding) from `in` bytes to `out`.
void compressed(uint8_t coding, uint64_t in, uint64_t out);

}  // namespace gatehouse::http::stats
