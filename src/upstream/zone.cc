// The "zone" of an upstream group: the peers' run-time state in shared
// memory, so that every worker counts the same failures and connections,
// follows the same round robin sequence and sees the health checks'
// verdicts, and so that a reload which leaves the group unchanged keeps
// them.
//
// Layout: a shm::Pool (core/shm_slab.h) over the whole zone. Its root is
// a ZoneRoot: the list of the groups' records and the locks they take.
// Each record is one block (several groups may share one zone):
//
//   ZoneGroup (signature, next, lock index, prober) | PeerState x n
//
// Only the master allocates and frees records, at config time, under the
// pool's lock; workers change the states inside, never the pool. A reload
// finds the record of a group whose name and signature (servers and their
// parameters) are unchanged and goes on with it, so the old generation's
// workers, still finishing their requests, and the new ones share the
// counters. A changed group gets a new record; the old one stays for the
// old workers. The master knows which generations use which record
// (RecordHold below); a config load frees the records that no generation
// holds any more, before it looks for its groups'. When a new record does
// not fit even then, the records of the older generations still running
// are freed too and their state starts anew (logged at warn): their
// workers then write into memory the new records may use, until they
// exit. The records of the generation being loaded are never freed for
// one another: if they do not fit together, the load fails.
//
// The locks live in the root, not in the records, and the root is never
// freed: starting anew cannot lay a new record over a lock an old
// worker holds or waits on. Records take the kGroupLocks locks in turn;
// groups sharing one wait on each other a little, never on themselves
// (GroupLock is taken for one group at a time).
//
// Address independence: the list holds Pool::ref offsets; the pointers to
// states and locks in UpstreamConf and Peer are process-local, made by
// the master and valid in the workers because zones are mapped before the
// fork, at one address in every process.
#include <netinet/in.h>

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/log.h"
#include "core/shm.h"
#include "core/shm_slab.h"
#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

static_assert(std::atomic<int64_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free,
              "zone counters must be lock-free to be shared between processes");

constexpr uint64_t kMagic = 0x6768757073747a33ULL;  // "ghupstz3": the root's and records' layout version
constexpr uint32_t kGroupLocks = 4;

struct ZoneRoot {
    uint64_t magic = kMagic;
    uint64_t groups = 0;  // the first record (Pool::ref), 0: none
    uint32_t next_lock = 0;
    shm::Mutex locks[kGroupLocks];
};

// A generation's use of a record, in the master's memory. It lives in the
// generation's arena and so goes with the generation, once the last of
// its workers has exited: a record no hold names is used by no running
// worker. Process-local on purpose: a worker inherits the table by fork()
// and drops the old generations' holds when it frees them, changing its
// own copy only; and only the master, loading a configuration, reads it.
struct RecordHold {
    RecordHold(const shm::Zone* z, uint64_t r, const Arena* g) : zone(z), record(r), gen(g) { all().push_back(this); }
    ~RecordHold() { std::erase(all(), this); }
    RecordHold(const RecordHold&) = delete;
    RecordHold& operator=(const RecordHold&) = delete;

    static std::vector<const RecordHold*>& all() {
        static std::vector<const RecordHold*> v;
        return v;
    }
    // Whether a generation (`by`, or any when null) holds the record.
    static bool held(const shm::Zone* z, uint64_t r, const Arena* by = nullptr) {
        for (const RecordHold* h : all())
            if (h->zone == z && h->record == r && (!by || h->gen == by)) return true;
        return false;
    }

    const shm::Zone* zone;
    uint64_t record;  // Pool::ref
    const Arena* gen;
};

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

// The zone's root, made in a fresh (or reset) pool. Null: no room.
ZoneRoot* root_of(shm::Pool& pool) {
    auto* r = static_cast<ZoneRoot*>(pool.root());
    if (r && r->magic == kMagic) return r;
    void* b = pool.alloc(sizeof(ZoneRoot));
    if (!b) return nullptr;
    // Fresh memory: nobody holds these locks yet.
    r = ::new (b) ZoneRoot();
    pool.set_root(r);
    return r;
}

// Frees the records `keep` says no to.
template <typename Keep>
void free_records(shm::Pool& pool, ZoneRoot& root, Keep keep) {
    for (uint64_t* link = &root.groups; *link;) {
        const uint64_t r = *link;
        auto* g = pool.at<ZoneGroup>(r);
        if (keep(r)) {
            link = &g->next;
            continue;
        }
        *link = g->next;
        pool.free(g);
    }
}

std::string too_small(const shm::Zone& z, const UpstreamConf& u, size_t pages) {
    return "zone \"" + std::string(z.name()) + "\" is too small for upstream \"" + u.name + "\" (" +
           std::to_string(shm::Pool::region_for(pages)) + " bytes needed)";
}

// The index in the record's slots() of peer i (a dynamic server's).
size_t slot_index(const UpstreamConf& u, size_t i) {
    size_t k = 0;
    for (size_t j = 0; j < i; ++j) k += u.peers[j].server->dynamic;
    return k;
}

uint64_t dns_name_hash(const UpstreamConf& u, const Server& s) {
    const std::string key = u.name + "/" + s.host;
    uint64_t h = fnv(0xcbf29ce484222325ULL, key.data(), key.size());
    return h ? h : 1;
}

// A changed group's new record starts with the addresses an older record
// (the previous generation's, still in the zone) had resolved for the same
// name, with this server's port, and their expiry: a reload neither
// empties the group until the name resolves again nor asks it at once
// [nginx: upstream_resolve_reload.t, "preresolve"]. Their state starts
// anew, as the group's others.
void preresolve(shm::Pool& pool, ZoneRoot& root, ZoneGroup& g, const Server& s, ServerDns& d) {
    for (uint64_t r = root.groups; r; r = pool.at<ZoneGroup>(r)->next) {
        ZoneGroup& old = *pool.at<ZoneGroup>(r);
        for (uint32_t k = 0; k < old.ndns; ++k) {
            ServerDns& od = old.dns()[k];
            if (od.name_hash != d.name_hash || od.nslots == 0) continue;
            uint32_t at = d.first_slot;
            for (uint32_t j = 0; j < od.nslots && at < d.first_slot + d.nslots; ++j) {
                PeerSlot& from = old.slots()[od.first_slot + j];
                if (static_cast<SlotState>(from.state.load(std::memory_order_relaxed)) != SlotState::Active) continue;
                PeerSlot& to = g.slots()[at++];
                to.sa = from.sa;
                to.sa_len = from.sa_len;
                if (to.sa.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&to.sa)->sin_port = htons(s.port);
                else if (to.sa.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&to.sa)->sin6_port = htons(s.port);
                to.state.store(static_cast<uint32_t>(SlotState::Active), std::memory_order_relaxed);
            }
            d.expires.store(od.expires.load(std::memory_order_relaxed), std::memory_order_relaxed);
            return;
        }
    }
}

}  // namespace

GroupLock::GroupLock(UpstreamConf& u) {
    if (!u.zone_lock) return;
    lock_ = u.zone_lock;
    if (lock_->lock() == shm::Locked::OwnerDied) {
        // A worker died choosing or penalising a peer. Every state is a
        // set of atomics, each whole: at worst one peer's current weight
        // was not lowered yet (one pick off the smooth round robin), or a
        // failure was counted without its weight penalty. Nothing to
        // repair.
        GH_LOG(Alert, "upstream \"%s\" goes on after a worker died holding its zone's lock", u.name.c_str());
    }
}

GroupLock::~GroupLock() {
    if (lock_) lock_->unlock();
}

size_t zone_group_bytes(size_t npeers, size_t nslots, size_t ndns) {
    return sizeof(ZoneGroup) + npeers * sizeof(PeerState) + nslots * sizeof(PeerSlot) + ndns * sizeof(ServerDns) +
           npeers * sizeof(PeerParams);
}

uint64_t group_signature(const UpstreamConf& u) {
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv_value(h, u.peers.size());
    for (const Peer& p : u.peers) {
        const Server& s = *p.server;
        // A dynamic server's slots are the same whatever they hold: its
        // name says what they resolve (and its port, the addresses').
        const std::string& text = s.dynamic ? s.name : p.text;
        h = fnv(h, text.data(), text.size() + 1);
        h = fnv_value(h, static_cast<uint8_t>(s.resolve | s.dynamic << 1 | s.api << 2));
        h = fnv_value(h, s.weight);
        h = fnv_value(h, s.max_fails);
        h = fnv_value(h, static_cast<int64_t>(s.fail_timeout.count()));
        h = fnv_value(h, s.max_conns);
        h = fnv_value(h, static_cast<int64_t>(s.slow_start.count()));
        h = fnv_value(h, static_cast<uint16_t>(s.backup | s.down << 8));
    }
    return h;
}

Status attach_zone(UpstreamConf& u, shm::Zone& z, Arena& gen) {
    size_t nslots = 0, ndns = 0;
    for (const Peer& p : u.peers) nslots += p.server->dynamic;
    for (Server& s : u.servers)
        if (s.resolve) s.dns_index = static_cast<uint32_t>(ndns++);
    const size_t need = zone_group_bytes(u.peers.size(), nslots, ndns);
    const size_t root_pages = shm::Pool::pages_for(sizeof(ZoneRoot));
    // Enough for the root and this record, in whole pages (a small block
    // may share its page, so this errs on the safe side by one page).
    if (z.size() < shm::Pool::region_for(root_pages + shm::Pool::pages_for(need)))
        return make_error(too_small(z, u, root_pages + shm::Pool::pages_for(need)));
    shm::Pool* pool = shm::Pool::attach(z.addr(), z.size());
    GH_CHECK(pool != nullptr);  // the size was checked above
    shm::Guard lock(pool->mutex());
    // Only the master allocates here, and a master's zones end with it:
    // nobody can have died holding this lock.
    GH_CHECK(!lock.owner_died());
    ZoneRoot* root = root_of(*pool);
    GH_CHECK(root != nullptr);  // an empty pool of that size has room for it

    // The records of generations that are gone go first, so that a group
    // changed back to an old form starts afresh rather than from a state
    // its workers left behind.
    free_records(*pool, *root, [&](uint64_t r) { return RecordHold::held(&z, r); });

    const uint64_t sig = fnv(group_signature(u), record_name(u).c_str(), record_name(u).size() + 1);
    ZoneGroup* g = nullptr;
    for (uint64_t r = root->groups; r && !g;) {
        auto* rec = pool->at<ZoneGroup>(r);
        if (rec->signature == sig && rec->npeers == u.peers.size() && rec->nslots == nslots && rec->ndns == ndns) g = rec;
        r = rec->next;
    }
    if (!g) {
        auto ours = [&](uint64_t r) { return RecordHold::held(&z, r, &gen); };
        auto others = [&] {
            for (uint64_t r = root->groups; r; r = pool->at<ZoneGroup>(r)->next)
                if (!ours(r)) return true;
            return false;
        };
        void* b = pool->alloc(need);
        if (!b && others()) {
            GH_LOG(Warn, "zone \"%.*s\" is full, the state of its upstreams starts anew",
                   static_cast<int>(z.name().size()), z.name().data());
            free_records(*pool, *root, ours);
            b = pool->alloc(need);
        }
        if (!b) {
            // This generation's own groups do not fit together.
            size_t pages = root_pages + shm::Pool::pages_for(need);
            for (uint64_t r = root->groups; r; r = pool->at<ZoneGroup>(r)->next)
                {
                const ZoneGroup* o = pool->at<ZoneGroup>(r);
                pages += shm::Pool::pages_for(zone_group_bytes(o->npeers, o->nslots, o->ndns));
            }
            return make_error(too_small(z, u, pages));
        }
        g = ::new (b) ZoneGroup();
        g->signature = sig;
        g->npeers = static_cast<uint32_t>(u.peers.size());
        g->nslots = static_cast<uint32_t>(nslots);
        g->ndns = static_cast<uint32_t>(ndns);
        g->lock = root->next_lock++ % kGroupLocks;
        for (size_t i = 0; i < u.peers.size(); ++i) {
            auto* st = ::new (g->peers() + i) PeerState();
            st->effective_weight.store(u.peers[i].server->weight, std::memory_order_relaxed);
        }
        // The parameters start as the server lines say; the API's slots
        // get theirs when a server takes them. Ids go in server order.
        uint32_t id = 0;
        for (const Server& s : u.servers) {
            const size_t first = first_peer(u, s);
            for (size_t i = first; i < first + s.naddrs && i < u.peers.size(); ++i) {
                auto* pp = ::new (g->params() + i) PeerParams();
                pp->weight.store(s.weight, std::memory_order_relaxed);
                pp->max_fails.store(s.max_fails, std::memory_order_relaxed);
                pp->max_conns.store(s.max_conns, std::memory_order_relaxed);
                pp->fail_timeout_ms.store(s.fail_timeout.count(), std::memory_order_relaxed);
                pp->slow_start_ms.store(s.slow_start.count(), std::memory_order_relaxed);
                pp->flags.store(s.down ? kPeerDown : 0, std::memory_order_relaxed);
                if (!s.api) pp->id.store(id++, std::memory_order_relaxed);
            }
        }
        g->next_id.store(id, std::memory_order_relaxed);
        for (size_t i = 0; i < nslots; ++i) {
            auto* slot = ::new (g->slots() + i) PeerSlot();
            slot->state.store(static_cast<uint32_t>(SlotState::Free), std::memory_order_relaxed);
        }
        for (const Server& s : u.servers) {
            if (!s.resolve) continue;
            auto* d = ::new (g->dns() + s.dns_index) ServerDns();
            d->name_hash = dns_name_hash(u, s);
            d->first_slot = static_cast<uint32_t>(slot_index(u, first_peer(u, s)));
            d->nslots = static_cast<uint32_t>(s.naddrs);
            preresolve(*pool, *root, *g, s, *d);
        }
        g->next = root->groups;
        root->groups = pool->ref(g);
    }
    gen.make<RecordHold>(&z, pool->ref(g), &gen);
    for (size_t i = 0, k = 0; i < u.peers.size(); ++i) {
        u.peers[i].shared = g->peers() + i;
        u.peers[i].params = g->params() + i;
        u.peers[i].slot = u.peers[i].server->dynamic ? g->slots() + k++ : nullptr;
    }
    u.zone = &z;
    u.zone_group = g;
    u.zone_lock = &root->locks[g->lock];
    return {};
}

}  // namespace gatehouse::upstream
