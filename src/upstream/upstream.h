// Upstream groups: "upstream name { server ...; keepalive N; }" blocks,
// the implicit group a "proxy_pass http://host:port" makes, peer choice
// (the balancing methods), outgoing connections, the per-worker keepalive
// pool and the active health checks.
//
// Ownership: UpstreamConf, Server and Peer belong to the configuration
// generation (its arena or vectors in structs it owns). The run-time
// state of a peer (PeerState) is in the group's shared-memory zone when
// the block says "zone", so that every worker sees the same counters and
// they survive a reload that leaves the group unchanged; without a zone
// each worker keeps its own copy in the Peer, as nginx does. A dynamic
// server's peers are slots: a fixed number of Peers whose addresses the
// zone holds and changes at run time (dynamic.cc). Pooled
// connections belong to the worker's ConnectionTable; the pool only lists
// them.
//
// Files: upstream.cc (directives), round_robin.cc (PeerPicker, smooth
// weighted round robin, availability, passive health), least_conn.cc,
// hash.cc (ip_hash, hash, hash consistent), random.cc, least_time.cc,
// zone.cc, health.cc (active checks), pool.cc, connect.cc, dynamic.cc
// (run-time peer sets: servers whose addresses change without a reload,
// in zone slots), resolve.cc ("server NAME resolve"). balancer.h has
// what those files share, for them and the unit tests.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "conf/values.h"
#include "core/result.h"
#include "event/fwd.h"

namespace gatehouse::shm {
class Mutex;
class Zone;
}

namespace gatehouse::event {
struct ResolverSpec;
}

namespace gatehouse::upstream {

struct IdlePool;     // pool.cc
struct ZoneGroup;    // zone.cc: a group's record in its zone
struct HealthCheck;  // health.cc
struct Match;        // health.cc: a "match" block
struct PeerSlot;     // dynamic.cc: a run-time address in the zone
struct StickyCookie; // sticky.h: "sticky cookie"

// One "server" line. A host name resolves to one Peer per address.
struct Server {
    std::string name;        // as written: "backend1.local:8080", "unix:/run/app.sock"
    uint32_t weight = 1;     // weight=
    uint32_t max_fails = 1;  // max_fails=
    conf::Duration fail_timeout{std::chrono::seconds(10)};  // fail_timeout=
    uint32_t max_conns = 0;  // max_conns= (0: no limit)
    // 0: a primary. "backup" is 1, "backup=N" N: the fallback tier it
    // is in. Tiers are used in increasing order, each only when no server
    // of the ones before it is usable; nginx's one "backup" tier is 1.
    uint8_t backup = 0;
    bool down = false;       // down
    bool drain = false;      // drain: a state file's only (runtime_servers.cc)
    conf::Duration slow_start{0};  // slow_start= (0: none)
    std::string where;       // file:line
    // How many Peers it made: the addresses its name resolved to (1 for an
    // IP literal or a Unix socket). They sit together in
    // UpstreamConf::peers, in the order getaddrinfo() gave them, IPv4
    // first. For a server with run-time addresses (`dynamic`), the number
    // of slots it has: its Peers are slots whose address the zone holds
    // (PeerSlot) and changes at run time (replace_addresses).
    size_t naddrs = 0;
    // "resolve": the name is resolved at run time by the group's resolver
    // (resolve.cc), again whenever its TTL (or the resolver's valid=)
    // expires; `host` and `port` are what is resolved. Not at config time:
    // the group may start empty (502 until the name resolves, as nginx).
    bool resolve = false;
    std::string host;
    uint16_t port = 0;
    // The server's addresses live in zone slots (resolve, or issue 17's
    // API), not in the configuration: see PeerSlot.
    bool dynamic = false;
    // Its resolution state's index in the zone record (ZoneGroup::dns),
    // set by attach_zone for "resolve" servers.
    uint32_t dns_index = 0;
    // Not a server line: the slots the upstream API adds servers to
    // (runtime_servers.cc), one such server per tier they may go to
    // (primaries, and backups where the method has them). `dynamic` too.
    bool api = false;
};

// "resolve" servers get this many slots (the most addresses their name
// may have at once) unless "max=N" says otherwise.
constexpr uint32_t kDefaultResolveSlots = 16;
constexpr uint32_t kMaxResolveSlots = 1024;

// Health as the active checks see it (health_check). Without checks a
// peer stays Unchecked, which counts as healthy.
enum class Health : uint32_t { Unchecked = 0, Up = 1, Down = 2 };

// Totals kept for the metrics page (http/modules/metrics.cc): only ever
// added to, lock-free, by whichever worker ends a try or runs a check.
// They live in the metrics' own shared zone (http/stats.h), not in the
// group's, so that counting costs the group's zone no room; see
// Peer::totals.
struct PeerCounters {
    // Upper bounds (ms) of the response-time histogram (time from the try's
    // start to the response head, or to its failure); one more bucket for
    // the rest.
    static constexpr uint32_t kTimeBucketsMs[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
    static constexpr uint32_t kTimeBuckets = sizeof kTimeBucketsMs / sizeof kTimeBucketsMs[0] + 1;
    std::atomic<uint64_t> responses[5] = {};  // 1xx..5xx, 502/504 for failed tries
    std::atomic<uint64_t> fails{0};           // tries counted against max_fails
    std::atomic<uint64_t> unavailable{0};     // times max_fails made it unavailable
    std::atomic<uint64_t> checks{0};          // active health checks run
    std::atomic<uint64_t> check_fails{0};     // of which failed
    std::atomic<uint64_t> unhealthy{0};       // times the checks made it unhealthy
    std::atomic<uint64_t> time_ms{0};         // the histogram's sum
    std::atomic<uint64_t> time_buckets[kTimeBuckets] = {};  // not cumulative
    std::atomic<uint64_t> response_ms{0};     // tries' whole durations, summed
    std::atomic<uint64_t> sent{0};            // bytes written to the peer
    std::atomic<uint64_t> received{0};        // bytes read from it

    // A try on the peer ended with `status` (0: none): `ms` to the
    // response head (or to the failure), `whole_ms` to its end, with
    // `out` bytes written to the peer and `in` read from it.
    void count_try(int status, int64_t ms, int64_t whole_ms, uint64_t out, uint64_t in) {
        constexpr auto r = std::memory_order_relaxed;
        if (status >= 100 && status < 600) responses[status / 100 - 1].fetch_add(1, r);
        const uint64_t t = ms < 0 ? 0 : static_cast<uint64_t>(ms);
        time_ms.fetch_add(t, r);
        response_ms.fetch_add(whole_ms < 0 ? t : static_cast<uint64_t>(whole_ms), r);
        sent.fetch_add(out, r);
        received.fetch_add(in, r);
        uint32_t b = 0;
        while (b + 1 < kTimeBuckets && t > kTimeBucketsMs[b]) ++b;
        time_buckets[b].fetch_add(1, r);
    }
};

// The run-time state of one peer. Every field is a lock-free (so
// address-free) atomic: in a zone, all workers read and write it. The
// fields the smooth weighted round robin reads together change under the
// group's lock (GroupLock, balancer.h); the others are single counters.
// Copying (config time only) copies the values.
struct PeerState {
    std::atomic<int64_t> current_weight{0};
    std::atomic<int64_t> effective_weight{1};
    std::atomic<uint32_t> conns{0};      // connections in use (least_conn, max_conns)
    std::atomic<uint32_t> fails{0};      // within fail_timeout
    std::atomic<uint64_t> accessed{0};   // event::Msec of the last failure
    std::atomic<uint64_t> checked{0};    // event::Msec of the last failure or probe
    // Since when the peer is back after being unavailable (slow_start),
    // 0 when it is not ramping up.
    std::atomic<uint64_t> slow_start_from{0};
    std::atomic<uint32_t> health{0};     // Health
    std::atomic<uint32_t> hc_fails{0};   // consecutive failed checks
    std::atomic<uint32_t> hc_passes{0};  // consecutive passed checks
    // least_time: the peak-EWMA response time in microseconds and when it
    // was last updated (event::Msec); 0 samples: ewma_at 0.
    std::atomic<int64_t> ewma_us{0};
    std::atomic<uint64_t> ewma_at{0};
    std::atomic<uint64_t> picks{0};      // tries sent to it, every worker's

    PeerState() = default;
    PeerState(const PeerState& o) { *this = o; }
    PeerState& operator=(const PeerState& o);
};

// The parameters a peer is balanced by. In a group with a zone they are
// the zone's (PeerParams), which the upstream API changes at run time
// for every worker at once; they start as the server line says. Without
// a zone, the Server's. Read them through the peer_*() accessors below.
struct PeerParams {
    std::atomic<uint32_t> weight{1};
    std::atomic<uint32_t> max_fails{1};
    std::atomic<uint32_t> max_conns{0};
    std::atomic<uint32_t> flags{0};  // kPeerDown | kPeerDrain | kPeerRemoved
    std::atomic<int64_t> fail_timeout_ms{10000};
    std::atomic<int64_t> slow_start_ms{0};
    // The API's server id: unique in the group for the record's life
    // (ZoneGroup::next_id gives the next one).
    std::atomic<uint32_t> id{0};
    uint32_t pad = 0;
};
inline constexpr uint32_t kPeerDown = 1;     // "down": takes no request
// "drain": takes no new request; its requests in flight finish [NGINX Plus].
inline constexpr uint32_t kPeerDrain = 2;
// A server of the configuration the API deleted: no request, not listed;
// back when a reload changes the group (a new record starts from the
// configuration).
inline constexpr uint32_t kPeerRemoved = 4;

// One address to connect to.
struct Peer {
    const Server* server = nullptr;
    sockaddr_storage sa{};
    socklen_t sa_len = 0;
    std::string text;        // "127.0.0.1:8080", "[::1]:80", "unix:/p": $upstream_addr
    // Where the metrics count this peer's tries and checks: set at config
    // time by the metrics module for the peers of groups with a zone (a
    // record in its shared zone, mapped for the generation's life); null:
    // not counted.
    PeerCounters* totals = nullptr;
    // Run-time state: st() is the zone's copy when the group has a zone
    // (`shared`, owner: the zone, mapped for the generation's life), else
    // `local`, this worker's own.
    PeerState local;
    PeerState* shared = nullptr;
    PeerState& st() { return shared ? *shared : local; }
    const PeerState& st() const { return shared ? *shared : local; }
    // A slot of a dynamic server (owner: the zone, like `shared`; null for
    // a peer the configuration fixed). The slot's address is the truth;
    // sa, sa_len and text are this worker's copy, refreshed under the
    // group's lock when the group's generation moves (sync_peers), and
    // changed only for a slot that was free, so never under a try that
    // still uses the peer. Empty while the slot is free.
    PeerSlot* slot = nullptr;
    // A slot: whether this worker last saw it with an address in use
    // (sync_peers), to close the pooled connections of one that went.
    bool live = false;
    // The zone's parameters (owner: the zone, like `shared`), null
    // without a zone: the Server's count then.
    PeerParams* params = nullptr;
};

// What a pick reads: the zone's values when the peer has them.
inline uint32_t peer_weight(const Peer& p) {
    return p.params ? p.params->weight.load(std::memory_order_relaxed) : p.server->weight;
}
inline uint32_t peer_max_fails(const Peer& p) {
    return p.params ? p.params->max_fails.load(std::memory_order_relaxed) : p.server->max_fails;
}
inline uint32_t peer_max_conns(const Peer& p) {
    return p.params ? p.params->max_conns.load(std::memory_order_relaxed) : p.server->max_conns;
}
inline int64_t peer_fail_timeout(const Peer& p) {  // milliseconds
    return p.params ? p.params->fail_timeout_ms.load(std::memory_order_relaxed) : p.server->fail_timeout.count();
}
inline int64_t peer_slow_start(const Peer& p) {  // milliseconds
    return p.params ? p.params->slow_start_ms.load(std::memory_order_relaxed) : p.server->slow_start.count();
}
inline uint32_t peer_flags(const Peer& p) {
    return p.params ? p.params->flags.load(std::memory_order_relaxed) : (p.server->down ? kPeerDown : 0);
}

// The balancing method of a group: the block's "least_conn", "ip_hash",
// "hash", "random" or "least_time" directive; round robin by default.
enum class Method : uint8_t { RoundRobin, LeastConn, IpHash, Hash, Random, LeastTime };

// A point of the consistent hash ring ("hash ... consistent").
struct RingPoint {
    uint32_t hash = 0;
    uint32_t peer = 0;  // index in UpstreamConf::peers
};

struct UpstreamConf {
    std::string name;              // "backend", or "127.0.0.1:8080" when implicit
    std::vector<Server> servers;
    std::vector<Peer> peers;       // primaries first, then backups by tier
    size_t backup_start = 0;       // peers[backup_start..] are backups
    // Where each tier's peers begin in `peers`: [0] is 0 (the primaries),
    // [1] is backup_start, then one entry per further "backup=N" value, in
    // increasing N (absent values take no entry). Empty: one tier, every
    // peer (groups made by hand, like proxy_pass's run-time ones).
    std::vector<size_t> tier_start;
    bool implicit = false;         // made by proxy_pass, not an upstream block
    std::string host;              // for $proxy_host: "backend", "127.0.0.1:8080"
    std::string where;
    // "keepalive N": idle connections kept per worker (0: no pool).
    uint32_t keepalive = 0;
    conf::Duration keepalive_timeout{std::chrono::seconds(60)};  // "keepalive_timeout"
    uint64_t keepalive_requests = 1000;                           // "keepalive_requests"
    conf::Duration keepalive_time{std::chrono::hours(1)};        // "keepalive_time"

    // The balancing method and its parameters.
    Method method = Method::RoundRobin;
    // "hash key [consistent]": the key as written. The upstream layer
    // cannot evaluate variables (http is above it): the proxy compiles
    // the key from hash_node (owner: the generation's tree) into
    // hash_value (an http::ComplexValue in the generation arena) at config
    // time, and passes its value per request with PeerPicker::set_key().
    std::string hash_key;
    const conf::Node* hash_node = nullptr;
    const void* hash_value = nullptr;
    bool consistent = false;
    std::vector<RingPoint> ring;    // consistent: sorted by hash (hash.cc)
    bool random_two = false;        // "random two [least_conn]"
    bool least_time_header = true;  // "least_time header" (false: last_byte)
    // "sticky cookie ...": session persistence (sticky.h), consulted by
    // PeerPicker before the method. Owner: the generation arena; null
    // without it (the usual group: then no request looks for a cookie).
    StickyCookie* sticky = nullptr;

    // "zone name [size]": the shared-memory zone of the peers' state.
    std::string zone_name;
    size_t zone_size = 0;           // 0: declared with a size elsewhere
    // "api_servers_max" in the block: the slots the API adds servers to,
    // per tier (unset: the http block's, else the zone's size's).
    std::optional<uint32_t> api_servers;
    shm::Zone* zone = nullptr;        // owner: the registry, for the generation's life
    // In the zone (zone.cc), mapped for the generation's life: pointers
    // made by the master, valid in every worker because zones are mapped
    // before the fork, at one address.
    ZoneGroup* zone_group = nullptr;
    shm::Mutex* zone_lock = nullptr;  // GroupLock's

    // "health_check": the active checks (owner: the generation arena).
    HealthCheck* health = nullptr;

    // "state file": the servers, written there at each change the API
    // makes and read back when the configuration is loaded (the block
    // has no server lines then). Empty: none.
    std::string state_path;
    std::string state_where;  // file:line of the directive
    // The servers the state file held at load, for a record that starts
    // anew (a reused one has them already): runtime_servers.cc. `name`
    // is the address, `naddrs` unused.
    struct StateServer {
        Server params;
        sockaddr_storage sa{};
        socklen_t sa_len = 0;
    };
    std::vector<StateServer> state_servers;

    // Servers with "resolve": the resolver they use, the block's
    // "resolver" (and "resolver_timeout"), else the http block's (owner:
    // the generation arena). Null when the group has no resolve server.
    const event::ResolverSpec* resolver = nullptr;
    conf::Duration resolver_timeout{std::chrono::seconds(30)};
    bool resolves = false;  // a server has "resolve"

    // ---- config-time bookkeeping (nothing reads these at run time) ----
    // Implicit groups: the port the target gave ("host:8080"), 0 when it
    // gave none ("backend": maybe an upstream block defined later) or is a
    // Unix socket; default_port is the scheme's, for resolving a name.
    uint16_t port = 0;
    uint16_t default_port = 80;
    // A name without a port not yet matched to a block nor resolved: done
    // by upstream_module's postconfiguration.
    bool pending = false;
    // Which of "keepalive", "keepalive_timeout", "keepalive_requests",
    // "keepalive_time" the block set (bits private to upstream.cc), for
    // "is duplicate".
    uint8_t directives_set = 0;
    // The block's own "resolver" and "resolver_timeout", read by
    // resolver_module into a location-level array of this block's (made
    // by the first of them; null: neither).
    conf::ConfArray resolver_level = nullptr;

    // ---- run time --------------------------------------------------------
    // The worker's keepalive pool of this group, made by the first
    // keep_idle(). Owner: pool.cc (close_idle() frees it and resets this).
    IdlePool* idle = nullptr;
    // Without a zone: the tier this worker's last pick came from, so that
    // a switch between tiers is logged once (with a zone, the zone's).
    uint32_t local_tier = 0;

    size_t tiers() const { return tier_start.empty() ? 1 : tier_start.size(); }
    // peers[first, second) are tier k's, as far as its last peer with an
    // address (live_end).
    std::pair<size_t, size_t> tier(size_t k) const {
        const size_t begin = tier_start.empty() ? 0 : tier_start[k];
        size_t end = k + 1 < tier_start.size() ? tier_start[k + 1] : peers.size();
        if (k < live_end.size()) end = std::max(begin, std::min(end, live_end[k]));
        return {begin, end};
    }
    // Groups with a zone: one past each tier's last present() peer, as
    // this worker last synced them (sync_peers), so that a pick does not
    // walk the free slots at a tier's end (runtime_servers.cc fills the
    // lowest first). Empty: every tier to its end.
    std::vector<size_t> live_end;

    // The zone generation (ZoneGroup::generation) this worker's copies of
    // the slots' addresses and the hash ring follow; ~0: not synced yet.
    uint64_t seen_generation = ~uint64_t{0};

    // Groups with slots (dynamic servers): the primaries and backups with
    // an address, as this worker last synced them (sync_peers); ~0: a
    // group without slots, whose peers are all there.
    size_t live_primaries = ~size_t{0};
    size_t live_backups = 0;

    // Primary peers only, one of them: nginx ignores max_fails and
    // fail_timeout then (the peer is never considered unavailable). For
    // a group with slots, one with an address [nginx counts the peers a
    // resolved name has now].
    bool single() const {
        if (live_primaries != ~size_t{0}) return live_primaries == 1 && live_backups == 0;
        return backup_start == 1 && peers.size() == 1;
    }
};

struct UpstreamMainConf {
    std::vector<UpstreamConf*> upstreams;  // owner: the generation arena
    // "match" blocks, for health_check match= (owner: the generation arena).
    std::vector<Match*> matches;
    // The block whose directives are being read: set by the "upstream"
    // handler for the walk of its children, null elsewhere.
    UpstreamConf* current = nullptr;
    std::optional<uint32_t> api_servers;  // "api_servers_max" at http level
};

extern const conf::Module upstream_module;

// ---- config time -------------------------------------------------------------

// The group a "proxy_pass" target names: an upstream block called `name`
// (which may be defined later in the file: settled by upstream_module's
// postconfiguration), or, for "host:port" / "unix:/path", an implicit
// group whose host name is resolved now (getaddrinfo in the master; a name
// that does not resolve is an error naming file:line). `default_port`
// applies when none is given.
Result<UpstreamConf*> find_or_add(conf::Ctx& cx, const conf::Node& n, std::string_view target,
                                  uint16_t default_port);
//
// Details for the caller (the proxy module):
//  - `target` is the authority only, without scheme or URI: "backend",
//    "127.0.0.1:8080", "[::1]:8080", "example.com", "unix:/run/app.sock"
//    (for "unix:/path:/uri", everything from the ':' after the path is
//    ignored). Names compare case-insensitively, as nginx.
//  - The pointer is stable and final for the life of the generation: a
//    name referring to an upstream block defined later is the very
//    UpstreamConf that block fills when it is read (no alias, nothing to
//    follow). Its servers and peers are complete only after
//    upstream_module's postconfiguration, which comes before the proxy's
//    in the module list; don't read them earlier.
//  - The same target with the same port (or, without one, the same
//    default_port) gives the same group, so its peers' state is shared.
//  - Errors, as nginx: "upstream \"backend\" may not have port 8080"
//    (a block of that name exists), host not found (for a target with a
//    port or a Unix socket: now, naming this node; for a bare name that no
//    block claims: in postconfiguration, naming the first reference).

// The addresses of "host[:port]", "[v6]:port", an IP literal or
// "unix:/path": one Peer each (server null, weights not set), IPv4 first.
// Uses getaddrinfo() (AF_UNSPEC, SOCK_STREAM): config time, master only,
// never in a worker. Errors read "host not found in upstream \"x\"" with
// x as `address` (the caller adds " in file:line").
Result<std::vector<Peer>> resolve(std::string_view address, uint16_t default_port);

// ---- for the metrics page (read only) ----------------------------------------------

// What a peer is now, as an operator names it. Down: its server says
// "down"; Draining: a run-time address removed, its tries in flight
// finishing; Unhealthy: the active checks failed it; Checking: checks
// are configured and none has passed yet; Unavailable: max_fails within
// fail_timeout; Vacant: a slot without an address (nothing to show).
enum class PeerStatus : uint8_t { Up, Down, Unhealthy, Draining, Checking, Unavailable, Vacant };
PeerStatus peer_status(const UpstreamConf& u, const Peer& p, event::Msec now);

// ---- run-time peer sets (dynamic.cc) ----------------------------------------------

// What replace_addresses() did, as addresses ("10.0.0.1:80"), for the log.
struct AddressChange {
    std::vector<std::string> added;    // took a slot, with a fresh state
    std::vector<std::string> removed;  // draining: no new tries
    // Addresses left out: the server has no free slot for them (its
    // "max=" is too small), or they were given twice.
    std::vector<std::string> dropped;
    bool changed() const { return !added.empty() || !removed.empty(); }
};

// The addresses of server `s` (a dynamic server of u, which has a zone)
// become `addrs` (each Peer's sa and sa_len only: the port included), for
// every worker at once:
//  - a slot whose address is in `addrs` stays, its state (fails, conns,
//    health, EWMA...) untouched; one that was draining is back in use;
//  - the other used slots drain: no method offers them any more, tries in
//    flight finish and count as before; the slot is reused once no
//    connection uses it any more (conns 0, in every worker);
//  - an address not in a slot takes a free one with a fresh state (its
//    weight, slow_start from `now` when the server has one, unchecked by
//    the health checks).
// Bumps the group's generation, so that each worker refreshes its copies
// (sync_peers) at its next pick. Takes the group's lock: don't hold it.
// Errors: u has no zone, s is not a dynamic server of u.
// Any worker (or the master at config time) may call it; this is also the
// seam for an API that adds and removes servers (issue 17).
Result<AddressChange> replace_addresses(UpstreamConf& u, const Server& s, const std::vector<Peer>& addrs,
                                        event::Msec now);
// The addresses server `s` has now (its used slots, draining ones too
// when `draining`), as text. Takes the group's lock.
std::vector<std::string> server_addresses(UpstreamConf& u, const Server& s, bool draining = false);

// ---- run-time servers: the upstream API (runtime_servers.cc) -----------------------
//
// A group with a zone has, besides its server lines, slots the API adds
// servers to: as many as "api_servers_max" says (in the block, else in
// http) for primaries, and as many for backups when the method has
// backups; without it, one per kZoneBytesPerApiSlot of the zone's size,
// kApiSlotsMax at most (64k: 8, 512k and more: 64). A zone too small for
// the slots asked is a configuration error. Every change is made under the
// group's lock in the zone, whole (checked first, then written to the
// state file when the group has one, then applied), and every worker
// sees it at its next pick (the zone's generation, sync_peers).
constexpr size_t kApiSlotsMax = 64;
constexpr size_t kZoneBytesPerApiSlot = 8192;
constexpr uint32_t kMostApiSlots = 4096;  // "api_servers_max" takes 0..this

// One server (one peer) as the API shows it.
struct ServerInfo {
    uint32_t id = 0;
    std::string server;  // its address: "127.0.0.1:8081"
    std::string name;    // as the server line wrote it; the address for added ones
    uint32_t weight = 1;
    uint32_t max_conns = 0;
    uint32_t max_fails = 1;
    int64_t fail_timeout_ms = 10000;
    int64_t slow_start_ms = 0;
    bool backup = false;
    bool down = false;
    bool drain = false;
    // Run time, read only: "up", "down", "draining", "unavail" (max_fails
    // reached), "unhealthy" or "checking" (health_check).
    const char* state = "up";
    uint32_t active = 0;    // connections in use, every worker's
    uint64_t requests = 0;  // tries sent to it
    uint32_t fails = 0;     // failures within fail_timeout
    // Its counters (null when status_peers_max left it uncounted): in
    // the shared stats zone, valid for the generation's life.
    const PeerCounters* totals = nullptr;
    bool last_check_passed = false;  // health_check: the last one passed
};

// A POST's server, or what a PATCH changes (the fields it gives).
struct ServerChange {
    std::optional<std::string> server;
    std::optional<uint32_t> weight, max_conns, max_fails;
    std::optional<int64_t> fail_timeout_ms, slow_start_ms;
    std::optional<bool> backup, down, drain;
};

// Why a change was refused: the HTTP status, NGINX Plus's error code and
// the text for the client. status 0: done.
struct ApiError {
    int status = 0;
    std::string code;
    std::string text;
    explicit operator bool() const { return status != 0; }
};

// Every server of u in id order. Takes the group's lock.
std::vector<ServerInfo> list_servers(UpstreamConf& u, event::Msec now);
// The removed servers whose requests in flight still run.
size_t zombies(UpstreamConf& u);
// Adds a server (c.server set) to u, which has a zone. `out`: the server.
ApiError add_server(UpstreamConf& u, const ServerChange& c, event::Msec now, ServerInfo& out);
// Changes server `id` as c says. `out`: the server afterwards.
ApiError change_server(UpstreamConf& u, uint32_t id, const ServerChange& c, event::Msec now, ServerInfo& out);
// Removes server `id`: no new request; its requests in flight finish.
ApiError remove_server(UpstreamConf& u, uint32_t id);
// "10s", "500ms": a duration as the API and the state file write it.
std::string duration_text(int64_t ms);
// Config time, after attach_zone: a new record takes the servers the
// state file held (UpstreamConf::state_servers); a reused one has them.
Status load_state(UpstreamConf& u);

// ---- run time (worker) ----------------------------------------------------------

// The peers one request has tried, a bit each. Up to 64 peers the bits
// live inline, so a request to a usual pool allocates nothing here (a
// std::vector<bool> cost a heap allocation per proxied request); larger
// pools take an array.
class TriedPeers {
public:
    explicit TriedPeers(size_t n) {
        if (n > kInline) heap_ = std::make_unique<uint64_t[]>((n + kInline - 1) / kInline);
    }
    bool test(size_t i) const { return (words()[i / kInline] >> (i % kInline)) & 1U; }
    void set(size_t i) { words()[i / kInline] |= uint64_t{1} << (i % kInline); }

private:
    static constexpr size_t kInline = 64;
    uint64_t* words() { return heap_ ? heap_.get() : &inline_; }
    const uint64_t* words() const { return heap_ ? heap_.get() : &inline_; }
    uint64_t inline_ = 0;
    std::unique_ptr<uint64_t[]> heap_;  // value-initialized: all clear
};

// Peer choice for one request, by the group's method:
//   round robin   nginx's smooth weighted round robin (the same sequence)
//   least_conn    fewest connections per weight; ties by round robin
//   ip_hash       the client's /24 (IPv4) or address (IPv6), weighted
//   hash          the key, weighted; "consistent": a ketama ring of 160
//                 points per weight unit
//   random        weighted; "two": the better of two by connections
//   least_time    drawn by weight / cost^3, the cost being the peak-EWMA
//                 response time x (connections + 1); ties by round robin
// Every method skips down peers, peers over max_conns, peers that failed
// max_fails times within fail_timeout and peers the health checks found
// failing; peers in slow_start are offered in proportion to how far
// their ramp is. Backups (round robin, least_conn, least_time) only when
// no primary is usable, and the servers of "backup=N" only when none of
// the tiers below N is. The hashing methods fall back to round robin
// when 20 tries found nothing usable, as nginx. Each try excludes the
// peers already tried.
class PeerPicker {
public:
    PeerPicker(UpstreamConf& u, event::Msec now);
    // The next peer to try, or null when none is left (the caller answers
    // 502). Counts a connection on it.
    Peer* next();
    // The same, at time `now` (a retry after a timeout happens well after
    // the picker was made; availability is judged at `now`).
    Peer* next(event::Msec now) {
        now_ = now;
        return next();
    }
    // The try on p ended. failed: a connect error, timeout or invalid
    // response counted against max_fails (proxy_next_upstream decides).
    // least_time last_byte (and header, when header_received() was not
    // called) takes the time since next() gave p as a sample.
    void done(Peer* p, bool failed, event::Msec now);
    size_t tried() const { return tried_count_; }

    // ---- what the caller (the proxy) tells before the first next() -----
    // "hash": the key's value for this request (the group's hash_key
    // evaluated). Without it, or when it is empty, the group is balanced
    // round robin, as nginx. Copied.
    void set_key(std::string_view key);
    // ip_hash: the client's address. Without it (or for a Unix-socket
    // client) ip_hash falls back to round robin, as nginx. Copied.
    void set_client(const sockaddr* sa);
    // least_time header: the response head of the try on p arrived at
    // `now` (the sample is the time since next() gave p).
    void header_received(Peer* p, event::Msec now);
    // "sticky cookie": the value of the client's cookie (a server's
    // sticky_id). The first next() then takes that server if it is
    // present and usable (not down or draining, not failed max_fails
    // times, under max_conns, not found failing by the health checks;
    // slow_start's draw does not apply: the session is already there),
    // and, for a backup, only when no server of a lower tier is usable.
    // Otherwise, and for every retry, the method chooses as if no cookie
    // had come [NGINX Plus]. Ignored for groups without "sticky" and for
    // values that are not an id. Copied.
    void set_sticky(std::string_view id);

private:
    UpstreamConf& u_;
    event::Msec now_;
    TriedPeers tried_;
    size_t tried_count_ = 0;
    // The tier this request picks from: it moves on when no peer of the
    // current one is usable, and never back.
    size_t tier_ = 0;
    bool have_hash_ = false;
    uint32_t hash_ = 0;          // "hash": of the key
    uint8_t client_[16] = {};    // ip_hash: the address bytes it hashes
    uint8_t client_len_ = 0;
    event::Msec picked_at_ = 0;  // when next() gave the current peer
    bool sampled_ = false;       // header_received() took this try's sample

    bool ramp_refused_ = false;  // a peer was refused by slow_start's draw
    bool have_sticky_ = false;   // sticky_ holds the cookie's id
    char sticky_[32] = {};

    Peer* choose(size_t begin, size_t end, bool unchecked);
    Peer* sticky_choice();
    void note_tier();
    Peer* take(Peer* p);
    friend struct Balancers;  // the methods' files (balancer.h)
};

// The local address an outgoing connection starts from ("proxy_bind").
struct LocalAddr {
    sockaddr_storage sa{};
    socklen_t sa_len = 0;
    bool transparent = false;  // IP_TRANSPARENT: may be another host's address
    std::string_view text;     // as written, for errors; lives as long as the LocalAddr
};

// Starts a non-blocking connect() to p, from `local` when given (not for
// a Unix-socket peer). The Connection comes from the worker's table (it
// counts against worker_connections), is registered with the loop for
// read and write, and is writable once connected; the caller checks
// SO_ERROR then (see connect_result). The error names the call, the
// address and errno; *local_failed says it was the local address's
// (bind(), IP_TRANSPARENT), which nginx answers 500 without trying
// another peer.
Result<event::Connection*> open_connection(const Peer& p, const LocalAddr* local = nullptr,
                                           bool* local_failed = nullptr);
// 0 when the connect succeeded, else the errno (ECONNREFUSED...).
int connect_result(event::Connection& c);

// The keepalive pool of one worker. An idle connection is watched: if the
// origin closes it or sends anything, or keepalive_timeout passes, it is
// closed and dropped from the pool.
// A connection to p's address, ready for a request, or null. The caller
// owns it again (its handlers must be set anew).
// `*opened`, when given, gets the time keep_idle() was told it was made.
event::Connection* take_idle(UpstreamConf& u, const Peer& p, const void* tag = nullptr,
                             event::Msec* opened = nullptr);
// Gives c (which completed a response that allows reuse, with
// `requests` served on it) back to the pool; closes it instead when the
// pool is full (the oldest idle one is closed to make room),
// keepalive_requests is reached, or it was made (`opened`, the loop's
// clock; 0: not known, no limit) keepalive_time ago or more: a
// connection lives that long at most, however busy, and its last request
// is not cut.
void keep_idle(UpstreamConf& u, const Peer& p, event::Connection& c, uint64_t requests,
               const void* tag = nullptr, event::Msec opened = 0);
//
// Details for the caller:
//  - keep_idle() takes c over whatever happens (kept or closed): the
//    caller must not touch it again and must free its own state without
//    going through c (c.data is reset to null, the handlers and timer
//    callbacks are replaced, both timers cancelled). A c the caller closed
//    already is ignored.
//  - take_idle() returns the most recently kept connection to p's address
//    with io.on_read/on_write and the timer callbacks empty, no timer
//    armed, c.data null and c.requests the `requests` given to keep_idle,
//    so the caller can count on toward keepalive_requests. It still
//    counts in p.conns only if the caller got p from PeerPicker::next().
//  - A kept connection the origin closes may still be handed out if the
//    FIN arrives after take_idle(): the first write or read then fails,
//    and the caller retries (idempotent requests, RFC 9110, 9.2.2).
//  - `tag` tells connections to the same address apart: take_idle()
//    only returns one kept with the same tag. The proxy passes its TLS
//    settings (null: plain TCP), so a pooled TLS connection goes back
//    only to a request that would have made the same one. A connection
//    kept with c.transport set keeps it: take_idle() returns it with the
//    transport intact, and the pool disposes of it
//    (event::Transport::dispose) when it closes the connection itself.
//  - Worker time only: uses event::worker_loop() and event::worker_connections().

// ---- health checks (health.cc) ---------------------------------------------------

// Starts the active checks of every group with "health_check", in the
// worker numbered `slot` only when it is 0: one prober for all workers,
// the results shared through the zones. `m` may be null (no http block).
// Worker time, after event::set_worker().
void start_health_checks(UpstreamMainConf* m, int slot);
// Stops them: closes the probes' connections and cancels their timers
// (graceful shutdown, worker exit; before the ConnectionTable goes).
void stop_health_checks();

// Closes every pooled connection (worker exit). The pools point at the
// UpstreamConf they serve: call it before that generation is freed, and
// before the ConnectionTable goes.
void close_idle();
// The same at graceful shutdown, and from then on keep_idle() closes what
// it is given instead of keeping it: requests the retiring worker still
// finishes must not leave pooled connections that hold it up until
// keepalive_timeout [nginx: no caching when ngx_exiting]. close_idle()
// allows keeping again.
void retire_idle();

}  // namespace gatehouse::upstream
