// What the balancing methods, the zone and the health checks share: the
// availability rules, hashing, the random source, the EWMA, the group lock,
// the zone layout and the health check's configuration. Internal to
// src/upstream (and its unit tests); the proxy only needs upstream.h.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/regex.h"
#include "core/result.h"
#include "upstream/upstream.h"

namespace gatehouse {
class Arena;
}
namespace gatehouse::shm {
class Mutex;
class Zone;
}

namespace gatehouse::upstream {

// ---- availability (round_robin.cc) ------------------------------------------------

// Whether p may take a try now: not "down", not failed max_fails times
// within fail_timeout (ignored for a group of one), not over max_conns,
// not found failing by the health checks. `unchecked`: whether a peer the
// checks have not judged yet counts (the second pass, when no checked
// peer is usable; never with "mandatory").
bool usable(const UpstreamConf& u, const Peer& p, event::Msec now, bool unchecked);
// slow_start: a peer `f` of the way through its ramp is admitted with
// probability f (a random draw); always for a peer not ramping. Ends the
// ramp once it is over.
bool ramp_admits(const UpstreamConf& u, const Peer& p, event::Msec now);

// Which peers a method may offer on this pass.
struct Filter {
    bool unchecked = false;  // see usable()
    bool ramp = true;        // apply slow_start's draw (a second pass drops it)
};

// The methods. Each looks at peers[begin, end) (primaries or backups),
// offers only eligible() ones and returns its choice (not yet taken) or
// null. Called under the group's lock.
struct Balancers {
    // `among`: the candidates (by peer index), decided by the caller;
    // null: every eligible() peer.
    static Peer* round_robin(PeerPicker& pk, size_t begin, size_t end, Filter f,
                             const std::vector<bool>* among = nullptr);
    static Peer* least_conn(PeerPicker& pk, size_t begin, size_t end, Filter f);
    static Peer* hashed(PeerPicker& pk, size_t begin, size_t end, Filter f);
    static Peer* random(PeerPicker& pk, size_t begin, size_t end, Filter f);
    static Peer* least_time(PeerPicker& pk, size_t begin, size_t end, Filter f);
    // least_time: a response time sample for p, taken at `now`.
    static void sample(PeerPicker& pk, Peer& p, event::Msec now);

    // Not tried by this request, usable(), admitted by the ramp. The draw
    // is made once per call: call it once per peer and pass.
    static bool eligible(PeerPicker& pk, size_t i, Filter f);
    static event::Msec now(const PeerPicker& pk) { return pk.now_; }
    static bool has_hash(const PeerPicker& pk) { return pk.have_hash_; }
    static uint32_t hash(const PeerPicker& pk) { return pk.hash_; }
    static std::span<const uint8_t> client_key(const PeerPicker& pk) { return {pk.client_, pk.client_len_}; }
    static UpstreamConf& group(PeerPicker& pk) { return pk.u_; }
};

// ---- hashing (hash.cc) --------------------------------------------------------------

// A 32-bit hash of s, well mixed in every bit (FNV-1a, then a finalizer),
// for keys and ring points.
uint32_t hash_bytes(std::string_view s);
// ip_hash's key: the first three octets of an IPv4 address (an IPv4-mapped
// IPv6 address counts as IPv4), the whole of an IPv6 one, copied to out;
// returns how many (3 or 16); other families (Unix sockets) all get three
// zero octets [nginx].
size_t ip_hash_key(const sockaddr* sa, uint8_t out[16]);
// ip_hash's hash is nginx's arithmetic, so that clients land on the same
// servers as behind nginx (a migration keeps sessions where they are):
// from kIpHashStart, each round folds the key's bytes in, h = (h * 113 +
// byte) % 6271; a first round chooses, another one follows each unusable
// choice.
constexpr uint32_t kIpHashStart = 89;
uint32_t ip_hash_round(uint32_t h, std::span<const uint8_t> key);
// The consistent hash ring: 160 points per weight unit for each primary
// peer, placed by hashing its address and the point's number, so that a
// peer's points do not depend on the other peers.
void build_ring(UpstreamConf& u);
constexpr uint32_t kRingPointsPerWeight = 160;
// The index of the first point at or after h, wrapping to 0.
size_t ring_find(std::span<const RingPoint> ring, uint32_t h);

// ---- the random source (random.cc) ------------------------------------------------------

// Per process (each worker seeds its own at first use), not for secrets.
uint64_t random_u64();
// [0, 1).
double random_unit();
// Tests: a fixed sequence from here on.
void seed_random(uint64_t seed);

// ---- least_time (least_time.cc) -----------------------------------------------------------

// The peak-EWMA: a sample above the average replaces it at once (a slow
// origin is noticed on its first slow answer); below, it is blended in
// with a weight that grows with the time since the last update. Between
// samples the average decays toward zero with the same time constant and,
// once older than it, counts as no sample: a peer that was slow gets
// tried again and its average follows it back down.
constexpr double kEwmaDecayMs = 10000.0;
// The average after `sample_us` at `now`; old_at 0 means no sample yet.
int64_t ewma_update(int64_t old_us, event::Msec old_at, int64_t sample_us, event::Msec now);
// The average as seen at `now` (decayed since old_at; 0 once older than
// kEwmaDecayMs).
double ewma_at(int64_t old_us, event::Msec old_at, event::Msec now);

// ---- the group lock and the zone (zone.cc) -----------------------------------------------------

// What a peer's slot holds (dynamic servers, dynamic.cc).
enum class SlotState : uint32_t {
    Fixed = 0,     // not a slot: the configuration's address, always there
    Free = 1,      // no address
    Active = 2,    // an address the methods offer
    Draining = 3,  // removed: offered no more, its tries in flight finish
};

// A run-time address, one per peer in the zone record (Fixed for the
// configuration's peers). The address changes under the group's lock
// only, and only while the slot is free (see replace_addresses), so a
// worker reading it under the lock sees it whole.
struct PeerSlot {
    std::atomic<uint32_t> state{0};  // SlotState
    uint32_t sa_len = 0;
    sockaddr_storage sa{};
};

// The run-time resolution of one server ("resolve"), one per server in
// the zone record; unused for the others.
struct ServerDns {
    // event::Msec: when the answer expires (its TTL, or valid=) and the
    // name is to be asked again; 0: at once.
    std::atomic<uint64_t> expires{0};
    // A worker asked and is waiting for the answer until then: the others
    // do not ask too. Past it (that worker exited, say), anyone may.
    std::atomic<uint64_t> asking_until{0};
    // Hash of the group and server names ("u/example.net"): how a changed
    // group's new record finds the addresses an older record resolved
    // (a reload starts with them rather than empty). 0: not resolved.
    uint64_t name_hash = 0;
    uint32_t first_slot = 0;  // the server's slots: index in slots()
    uint32_t nslots = 0;
};

// A group's record in its zone, a block of the zone's shm::Pool: what
// tells a reloaded group it is the same, and the peers' states, which
// follow the record. The lock is not in the record but one of the zone
// root's (see zone.cc), named by index.
//
//   ZoneGroup | PeerState x npeers | PeerSlot x nslots | ServerDns x ndns
//             | PeerParams x npeers
//
// nslots: the peers of dynamic servers, in peer order; ndns: the
// "resolve" servers, in server order (Server::dns_index). A group
// without either takes no more room than before they existed.
struct ZoneGroup {
    uint64_t signature = 0;          // group_signature() and the record's name
    uint64_t next = 0;               // the next record (Pool::ref), 0: the last
    uint32_t npeers = 0;
    uint32_t lock = 0;               // index of the group's lock in the zone
    std::atomic<int32_t> prober{0};  // pid of the worker running the checks
    std::atomic<uint32_t> tier{0};   // the tier of the last pick (PeerPicker::note_tier)
    uint32_t nslots = 0;
    uint32_t ndns = 0;
    // Moves (under the lock) whenever a slot changes: workers compare it
    // with UpstreamConf::seen_generation to refresh their copies.
    std::atomic<uint64_t> generation{0};
    // The id the next server the API adds gets (PeerParams::id).
    std::atomic<uint32_t> next_id{0};
    // Set once a new record took the servers of the group's state file
    // (runtime_servers.cc): a record a reload reuses has them already.
    std::atomic<uint32_t> state_loaded{0};
    PeerState* peers() { return reinterpret_cast<PeerState*>(this + 1); }
    PeerSlot* slots() { return reinterpret_cast<PeerSlot*>(peers() + npeers); }
    ServerDns* dns() { return reinterpret_cast<ServerDns*>(slots() + nslots); }
    PeerParams* params() { return reinterpret_cast<PeerParams*>(dns() + ndns); }
};
static_assert(sizeof(PeerState) % alignof(PeerSlot) == 0 && sizeof(PeerSlot) % alignof(ServerDns) == 0 &&
              sizeof(ServerDns) % alignof(PeerParams) == 0);

// Holds the group's lock (a shm::Mutex in the zone) for its lifetime;
// no-op without a zone. One group lock at a time: groups may share a
// lock, and taking one twice aborts. A worker that died holding it (a
// crash) is reported to the next holder, which goes on: the states are
// atomics, each whole.
class GroupLock {
public:
    explicit GroupLock(UpstreamConf& u);
    ~GroupLock();
    GroupLock(const GroupLock&) = delete;
    GroupLock& operator=(const GroupLock&) = delete;

private:
    shm::Mutex* lock_ = nullptr;
};

// The pool bytes a group's record takes: npeers peers, nslots of them
// slots, ndns "resolve" servers (and every peer's PeerParams).
size_t zone_group_bytes(size_t npeers, size_t nslots, size_t ndns);
// Finds u's record in z (a zone reused from the previous generation, the
// group unchanged: its state goes on) or allocates a new one, and points
// every peer's `shared` at its state. `gen` is the generation's arena: it
// holds the record for the generation's life, after which a later load
// frees it (unless another generation uses it). A reused zone without
// room for a changed group, even after that, is started anew (logged at
// warn: the old generations' workers then write into states the new one
// uses until they exit); the records of this generation are kept.
// Errors: the zone is too small for the group even when empty, or for the
// groups of this generation together.
Status attach_zone(UpstreamConf& u, shm::Zone& z, Arena& gen);
// The signature attach_zone() compares: the peers' addresses and every
// server parameter.
uint64_t group_signature(const UpstreamConf& u);

// ---- run-time peer sets (dynamic.cc) ----------------------------------------------------

// Whether p has an address the methods may offer: a fixed peer the API
// did not delete, or a slot in use and not draining.
inline bool present(const Peer& p) {
    if (p.params && (p.params->flags.load(std::memory_order_relaxed) & kPeerRemoved)) return false;
    return !p.slot || static_cast<SlotState>(p.slot->state.load(std::memory_order_relaxed)) == SlotState::Active;
}
// Brings this worker's copies of the slots' addresses (Peer::sa, text)
// and the consistent hash ring up to the zone's generation. Under the
// group's lock (GroupLock); cheap when nothing changed. No-op without a
// zone.
void sync_peers(UpstreamConf& u);
// Closes this worker's idle pooled connections to p's address (a slot
// that lost it: removed origins keep no connection until
// keepalive_timeout). No-op before the worker pooled any.
void close_idle_to(UpstreamConf& u, const Peer& p);
// The index in u.peers of server s's first peer.
size_t first_peer(const UpstreamConf& u, const Server& s);

// ---- "resolve" (resolve.cc) ---------------------------------------------------------------

// Starts this worker's part in resolving the "resolve" servers of every
// group (a timer; the lookups go through event::worker_resolver). `m`
// may be null. Worker time, every worker.
void start_resolving(UpstreamMainConf* m);
// Stops it: cancels the timer and the lookups in flight (graceful
// shutdown, worker exit).
void stop_resolving();
// A pick found u's answers maybe expired: looks at them now (fires the
// timer) rather than at the next tick. No-op outside a resolving worker
// (unit tests, the master). Cheap: called under the group's lock.
void resolve_if_due(const UpstreamConf& u, event::Msec now);

// ---- active health checks (health.cc) ----------------------------------------------------------

// One test of a "match" block.
struct MatchHeader {
    enum class Op : uint8_t { Present, Absent, Equal, NotEqual, Regex, NotRegex };
    std::string name;
    Op op = Op::Present;
    std::string value;
    std::unique_ptr<Regex> re;
};

// "match name { status ...; header ...; body ...; }": every test must pass.
struct Match {
    std::string name;
    std::string where;  // file:line
    // "status [!] code|lo-hi ...": any of the ranges (none of them with
    // "!"); no status test: 2xx and 3xx pass.
    std::vector<std::pair<uint16_t, uint16_t>> status;
    bool status_not = false;
    std::vector<MatchHeader> headers;
    // "body [!]~ regex": the first 256 KiB of the body.
    std::unique_ptr<Regex> body;
    bool body_not = false;
};
constexpr size_t kMatchBodyMax = 256 * 1024;

// "health_check [interval=T] [fails=N] [passes=N] [uri=/path] [port=N]
// [match=name] [timeout=T] [mandatory]" in an upstream block with a zone.
struct HealthCheck {
    conf::Duration interval{std::chrono::seconds(5)};
    conf::Duration timeout{std::chrono::seconds(5)};  // connect to verdict
    uint32_t fails = 1;
    uint32_t passes = 1;
    std::string uri = "/";
    uint16_t port = 0;          // 0: the server's
    bool mandatory = false;     // unchecked peers take no request
    std::string match_name;     // resolved in postconfiguration
    const Match* match = nullptr;
    std::string where;
};

// The verdict on a health check's response: empty when it passes, else
// why not ("status 500", "header \"X\" is missing", "body does not match
// \"re\""). `m` null: status 2xx or 3xx. `find` gives a header's value or
// null.
using HeaderLookup = const std::string_view* (*)(const void* ctx, std::string_view name);
std::string check_response(const Match* m, int status, HeaderLookup find, const void* ctx,
                           std::string_view body);
// Whether the verdict needs the body (a "body" test).
inline bool needs_body(const Match* m) { return m && m->body; }

// Parses a "match" block's children into m; the error names file:line.
Status parse_match(conf::Ctx& cx, const conf::Node& n, Match& m);
// Parses "health_check" parameters.
Status parse_health_check(conf::Ctx& cx, const conf::Node& n, HealthCheck& hc);

// The state changes of a checked peer, applied by the prober: logs them
// at warn and starts slow_start when a peer comes back.
void record_check(UpstreamConf& u, Peer& p, bool passed, std::string_view why, event::Msec now);

}  // namespace gatehouse::upstream
