// The "zone" of an upstream group: the peers' run-time state in shared
// memory, so that every worker counts the same failures and connections,
// follows the same round robin sequence and sees the health checks'
// verdicts, and so that a reload which leaves the group unchanged keeps
// them.
//
// Layout: a header, then one record per group that used the zone (several
// groups may share one zone), each followed by its peers' PeerStates:
//
//   ZoneHeader | ZoneGroup "backend/80" | PeerState x n | ZoneGroup ... | free
//
// Records are only added (by the master, at config time, before it forks
// the workers); a reload finds the record of a group whose name and
// signature (servers and their parameters) are unchanged and goes on with
// it, so the old generation's workers, still finishing their requests,
// and the new ones share the counters. A changed group gets a new record;
// the old one stays for the old workers. When the zone is full, it is
// started anew.
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "core/log.h"
#include "core/shm.h"
#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

static_assert(std::atomic<int64_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free,
              "zone counters must be lock-free to be shared between processes");

constexpr uint64_t kMagic = 0x6768757073747a31ULL;  // "ghupstz1": layout version 1
constexpr size_t kAlign = 64;                        // a cache line per record

struct ZoneHeader {
    uint64_t magic = 0;
    uint64_t used = 0;  // bytes from the start of the zone, records included
};

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

size_t header_bytes() { return align_up(sizeof(ZoneHeader)); }

uint64_t fnv(uint64_t h, const void* data, size_t n) {
    const auto* b = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

template <typename T>
uint64_t fnv_value(uint64_t h, T v) {
    return fnv(h, &v, sizeof v);
}

// The record's name: the group's, and the default port for the second
// reference of a block ("http://b" and "https://b" above "upstream b").
std::string record_name(const UpstreamConf& u) {
    return u.name + "/" + std::to_string(u.default_port);
}

void init_header(shm::Zone& z) {
    auto* h = new (z.addr()) ZoneHeader();
    h->magic = kMagic;
    h->used = header_bytes();
}

}  // namespace

GroupLock::GroupLock(UpstreamConf& u) {
    if (!u.zone_group) return;
    word_ = &u.zone_group->lock;
    const int32_t me = static_cast<int32_t>(::getpid());
    for (uint32_t spins = 0;; ++spins) {
        int32_t holder = 0;
        if (word_->compare_exchange_weak(holder, me, std::memory_order_acquire, std::memory_order_relaxed)) return;
        if (spins < 64) continue;
        sched_yield();
        // A holder that died (a crashed worker) would block every worker
        // for good: after a while, check and take the lock over.
        if (spins % 1024 == 0 && holder != 0 && ::kill(holder, 0) != 0 && errno == ESRCH) {
            if (word_->compare_exchange_strong(holder, me, std::memory_order_acquire)) return;
        }
    }
}

GroupLock::~GroupLock() {
    if (word_) word_->store(0, std::memory_order_release);
}

size_t zone_group_bytes(size_t npeers) { return align_up(sizeof(ZoneGroup) + npeers * sizeof(PeerState)); }

uint64_t group_signature(const UpstreamConf& u) {
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv_value(h, u.peers.size());
    for (const Peer& p : u.peers) {
        const Server& s = *p.server;
        h = fnv(h, p.text.data(), p.text.size() + 1);
        h = fnv_value(h, s.weight);
        h = fnv_value(h, s.max_fails);
        h = fnv_value(h, static_cast<int64_t>(s.fail_timeout.count()));
        h = fnv_value(h, s.max_conns);
        h = fnv_value(h, static_cast<int64_t>(s.slow_start.count()));
        h = fnv_value(h, static_cast<uint8_t>(s.backup | s.down << 1));
    }
    return h;
}

Status attach_zone(UpstreamConf& u, shm::Zone& z) {
    auto* base = static_cast<char*>(z.addr());
    auto* h = reinterpret_cast<ZoneHeader*>(base);
    if (h->magic != kMagic) init_header(z);
    const std::string name = record_name(u);
    const uint64_t sig = group_signature(u);
    const size_t need = zone_group_bytes(u.peers.size());
    if (name.size() >= sizeof(ZoneGroup::name))
        return make_error("upstream name \"" + u.name + "\" is too long for zone \"" + std::string(z.name()) + "\"");
    if (header_bytes() + need > z.size())
        return make_error("zone \"" + std::string(z.name()) + "\" is too small for upstream \"" + u.name + "\" (" +
                          std::to_string(header_bytes() + need) + " bytes needed)");

    ZoneGroup* g = nullptr;
    for (size_t off = header_bytes(); off < h->used;) {
        auto* r = reinterpret_cast<ZoneGroup*>(base + off);
        if (r->size == 0) break;  // not reached: records are never empty
        if (r->signature == sig && r->npeers == u.peers.size() && name == r->name) g = r;
        off += r->size;
    }
    if (!g) {
        if (h->used + need > z.size()) {
            GH_LOG(Warn, "zone \"%.*s\" is full, the state of its upstreams starts anew",
                   static_cast<int>(z.name().size()), z.name().data());
            init_header(z);
        }
        g = new (base + h->used) ZoneGroup();
        std::memcpy(g->name, name.c_str(), name.size() + 1);
        g->signature = sig;
        g->npeers = static_cast<uint32_t>(u.peers.size());
        g->size = static_cast<uint32_t>(need);
        for (size_t i = 0; i < u.peers.size(); ++i) {
            auto* st = new (g->peers() + i) PeerState();
            st->effective_weight.store(u.peers[i].server->weight, std::memory_order_relaxed);
        }
        h->used += need;
    }
    for (size_t i = 0; i < u.peers.size(); ++i) u.peers[i].shared = g->peers() + i;
    u.zone = &z;
    u.zone_group = g;
    return {};
}

}  // namespace gatehouse::upstream
