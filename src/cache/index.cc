#include "cache/index.h"

#include <cstring>
#include <new>

#include "core/arena.h"
#include "core/assert.h"
#include "core/log.h"
#include "core/shm.h"
#include "core/shm_slab.h"

namespace gatehouse::cache {

namespace {

constexpr uint64_t kMagic = 0x6768636163686932ULL;  // "ghcachi2": the root's layout version

// One entry. Refs (shm::Pool::ref), not pointers, link them.
struct Node {
    Hash key;
    uint64_t bucket_next = 0;
    uint64_t lru_prev = 0;
    uint64_t lru_next = 0;
    int64_t valid_until = 0;
    int64_t expire = 0;       // inactive after this
    int64_t fill_until = 0;
    int64_t update_until = 0;
    uint64_t fs_size = 0;
    uint32_t uses = 0;
    uint32_t swr = 0;
    uint32_t sie = 0;
    uint16_t status = 0;
    uint64_t mem_ref = 0;   // the memory tier's copy of the file (mem pool ref)
    uint32_t mem_len = 0;
    uint32_t mem_gen = 0;   // valid while equal to Root::mem_gen
    uint16_t error = 0;  // an intercepted error status is cached (no file)
    uint8_t exists = 0;
    uint8_t revalidate_always = 0;
    uint32_t file_gen = 0;  // which file the node describes (NodeInfo::file_gen)
};
static_assert(sizeof(Node) <= 128, "a node fits the pool's 128-byte class");

}  // namespace

struct Index::Root {
    uint64_t magic = kMagic;
    uint64_t buckets = 0;   // ref of uint64_t[nbuckets]
    uint64_t nbuckets = 0;  // a power of two
    uint64_t lru_head = 0;  // least recently used
    uint64_t lru_tail = 0;
    uint64_t nodes = 0;
    uint64_t entries = 0;
    uint64_t size = 0;
    uint8_t loaded = 0;
    // Bumped when the memory tier's pool is reset (a process died holding
    // its lock): every node's copy is forgotten at once.
    uint32_t mem_gen = 1;
    uint64_t mem_objects = 0;
    uint64_t mem_bytes = 0;
    uint32_t file_gen = 0;  // the last Node::file_gen given
};

size_t Index::capacity(size_t zone_size) {
    // A node takes a 128-byte block, the table 4 bytes a node on average.
    const size_t pages = zone_size / shm::Pool::kPageSize;
    return pages > 4 ? (pages - 4) * shm::Pool::kPageSize / 132 : 0;
}

namespace {

uint64_t* table(shm::Pool& p, Index::Root& r) { return p.at<uint64_t>(r.buckets); }

Node* node(shm::Pool& p, uint64_t ref) { return p.at<Node>(ref); }

uint64_t& bucket(shm::Pool& p, Index::Root& r, const Hash& h) {
    return table(p, r)[h.head() & (r.nbuckets - 1)];
}

Node* find(shm::Pool& p, Index::Root& r, const Hash& h) {
    for (uint64_t ref = bucket(p, r, h); ref; ref = node(p, ref)->bucket_next) {
        Node* n = node(p, ref);
        if (n->key == h) return n;
    }
    return nullptr;
}

void lru_unlink(shm::Pool& p, Index::Root& r, Node* n) {
    const uint64_t self = p.ref(n);
    (n->lru_prev ? node(p, n->lru_prev)->lru_next : r.lru_head) = n->lru_next;
    (n->lru_next ? node(p, n->lru_next)->lru_prev : r.lru_tail) = n->lru_prev;
    n->lru_prev = n->lru_next = 0;
    (void)self;
}

void lru_append(shm::Pool& p, Index::Root& r, Node* n) {
    const uint64_t self = p.ref(n);
    n->lru_prev = r.lru_tail;
    n->lru_next = 0;
    (r.lru_tail ? node(p, r.lru_tail)->lru_next : r.lru_head) = self;
    r.lru_tail = self;
}

bool has_mem(const Index::Root& r, const Node* n) { return n->mem_ref && n->mem_gen == r.mem_gen; }

// The memory tier's lock, taken inside the index's (always in that
// order). A process that died holding it leaves the pool in doubt: it
// starts empty and every node's copy is forgotten (Root::mem_gen).
class MemGuard {
public:
    MemGuard(shm::Pool& mem, Index::Root& r) : g_(mem.mutex()) {
        if (g_.owner_died()) {
            mem.reset();
            ++r.mem_gen;
            r.mem_objects = r.mem_bytes = 0;
        }
    }

private:
    shm::Guard g_;
};

void free_mem(shm::Pool* mem, Index::Root& r, Node* n) {
    if (!mem || !n->mem_ref) return;
    MemGuard mg(*mem, r);
    if (has_mem(r, n)) {
        mem->free(mem->at(n->mem_ref));
        --r.mem_objects;
        r.mem_bytes -= n->mem_len;
    }
    n->mem_ref = 0;
    n->mem_len = 0;
}

void drop(shm::Pool& p, Index::Root& r, Node* n, shm::Pool* mem) {
    free_mem(mem, r, n);
    uint64_t* link = &bucket(p, r, n->key);
    const uint64_t self = p.ref(n);
    while (*link != self) link = &node(p, *link)->bucket_next;
    *link = n->bucket_next;
    lru_unlink(p, r, n);
    if (n->exists) {
        --r.entries;
        r.size -= n->fs_size;
    }
    --r.nodes;
    p.free(n);
}

// Room for one node: the least recently used ones nobody fills go.
Node* make(shm::Pool& p, Index::Root& r, const Hash& h, time_t now, std::vector<Hash>& evicted, shm::Pool* mem) {
    void* b = p.alloc(sizeof(Node));
    for (uint64_t ref = r.lru_head; !b && ref;) {
        Node* victim = node(p, ref);
        ref = victim->lru_next;
        if (victim->fill_until > now || victim->update_until > now) continue;
        if (victim->exists) evicted.push_back(victim->key);
        drop(p, r, victim, mem);
        b = p.alloc(sizeof(Node));
    }
    if (!b) return nullptr;
    Node* n = new (b) Node;
    n->key = h;
    uint64_t& head = bucket(p, r, h);
    n->bucket_next = head;
    head = p.ref(n);
    lru_append(p, r, n);
    ++r.nodes;
    return n;
}

NodeInfo info(const Node* n) {
    NodeInfo i;
    if (!n) return i;
    i.known = true;
    i.exists = n->exists;
    i.revalidate_always = n->revalidate_always;
    i.status = n->status;
    i.uses = n->uses;
    i.stale_while_revalidate = n->swr;
    i.stale_if_error = n->sie;
    i.valid_until = n->valid_until;
    i.fill_until = n->fill_until;
    i.update_until = n->update_until;
    i.fs_size = n->fs_size;
    i.error = n->error;
    i.file_gen = n->file_gen;
    return i;
}

NodeInfo info(const Index::Root& r, const Node* n) {
    NodeInfo i = info(n);
    if (n) i.in_memory = has_mem(r, n);
    i.cold = !r.loaded;
    return i;
}

void set_stored(Index::Root& r, Node* n, const Stored& s, shm::Pool* mem) {
    free_mem(mem, r, n);  // the copy of the file this one replaces
    n->file_gen = ++r.file_gen;
    if (n->exists) r.size -= n->fs_size;
    else ++r.entries;
    n->exists = 1;
    n->error = 0;
    n->fs_size = s.fs_size;
    r.size += s.fs_size;
    n->valid_until = s.valid_until;
    n->swr = s.stale_while_revalidate;
    n->sie = s.stale_if_error;
    n->status = s.status;
    n->revalidate_always = s.revalidate_always;
}

// The root in a fresh or reset pool: the table sized for the zone.
Index::Root* build(shm::Pool& p, size_t zone_size) {
    void* b = p.alloc(sizeof(Index::Root));
    if (!b) return nullptr;
    auto* r = new (b) Index::Root;
    uint64_t n = 16;
    while (n < Index::capacity(zone_size) / 2) n <<= 1;
    void* t = p.alloc(n * sizeof(uint64_t));
    if (!t) {
        p.free(b);
        return nullptr;
    }
    std::memset(t, 0, n * sizeof(uint64_t));
    r->buckets = p.ref(t);
    r->nbuckets = n;
    p.set_root(r);
    return r;
}

}  // namespace

// Takes the lock; repairs an index a dead process left in doubt.
Index::Root& Index::locked(shm::Guard& g) {
    if (g.owner_died()) {
        GH_LOG(Alert, "a process died holding the lock of cache zone \"%.*s\": its index starts empty, "
                      "entries are found again on disk",
               static_cast<int>(zone_->name().size()), zone_->name().data());
        pool_->reset();
        root_ = build(*pool_, zone_->size());
        if (mem_) {
            // The nodes that held the memory tier's copies are gone.
            shm::Guard mg(mem_->mutex());
            mem_->reset();
            mem_->set_root(mem_->alloc(1));
        }
        // A fresh pool of the zone's size has room for an empty index:
        // attach() checked.
        GH_CHECK(root_ != nullptr);
    }
    return *root_;
}

Result<Index> Index::attach(shm::Zone& z, shm::Zone* memory) {
    shm::Pool* pool = shm::Pool::attach(z.addr(), z.size());
    if (!pool) return make_error("cache zone \"" + std::string(z.name()) + "\" is too small");
    shm::Guard g(pool->mutex());
    auto* r = static_cast<Root*>(pool->root());
    if (g.owner_died() || !r || r->magic != kMagic) {
        pool->reset();
        r = build(*pool, z.size());
        if (!r) return make_error("cache zone \"" + std::string(z.name()) + "\" is too small");
    }
    shm::Pool* mem = nullptr;
    if (memory) {
        // Its pool is found again with the index (a reload), or laid out
        // empty, and then so are the nodes' copies.
        mem = shm::Pool::attach(memory->addr(), memory->size());
        if (!mem) return make_error("cache memory zone \"" + std::string(memory->name()) + "\" is too small");
        shm::Guard mg(mem->mutex());
        if (mg.owner_died() || mem->root() == nullptr) {
            mem->reset();
            void* marker = mem->alloc(1);
            if (!marker) return make_error("cache memory zone \"" + std::string(memory->name()) + "\" is too small");
            mem->set_root(marker);
            ++r->mem_gen;
            r->mem_objects = r->mem_bytes = 0;
        }
    }
    return Index(&z, pool, r, mem, memory ? memory->size() : 0);
}

bool Index::put_memory(const Hash& h, std::string_view bytes) {
    // More than half the tier could only fit by emptying it: refused
    // before anything is dropped for it.
    if (!mem_ || bytes.empty() || bytes.size() > mem_size_ / 2) return false;
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    shm::Pool& p = *pool_;
    Node* n = find(p, r, h);
    if (!n || !n->exists) return false;
    free_mem(mem_, r, n);
    MemGuard mg(*mem_, r);
    void* b = mem_->alloc(bytes.size());
    // No room: the least recently used copies go first (their nodes and
    // files stay), never this node's, at most a bounded number of them.
    size_t tries = 0;
    for (uint64_t ref = r.lru_head; !b && ref && tries < 1024; ++tries) {
        Node* victim = node(p, ref);
        ref = victim->lru_next;
        if (victim == n || !has_mem(r, victim)) continue;
        mem_->free(mem_->at(victim->mem_ref));
        --r.mem_objects;
        r.mem_bytes -= victim->mem_len;
        victim->mem_ref = 0;
        victim->mem_len = 0;
        b = mem_->alloc(bytes.size());
    }
    if (!b) return false;
    std::memcpy(b, bytes.data(), bytes.size());
    n->mem_ref = mem_->ref(b);
    n->mem_len = static_cast<uint32_t>(bytes.size());
    n->mem_gen = r.mem_gen;
    ++r.mem_objects;
    r.mem_bytes += bytes.size();
    return true;
}

namespace {

// The memory tier's copy of n's file, into `a`; the index is locked.
std::string_view copy_of(shm::Pool* mem, Index::Root& r, const Node* n, Arena& a) {
    if (!mem || !n || !has_mem(r, n)) return {};
    MemGuard mg(*mem, r);
    if (!has_mem(r, n)) return {};
    char* out = static_cast<char*>(a.alloc(n->mem_len, 16));
    std::memcpy(out, mem->at(n->mem_ref), n->mem_len);
    return {out, n->mem_len};
}

}  // namespace

std::string_view Index::copy_memory(const Hash& h, Arena& a) {
    if (!mem_) return {};
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    return copy_of(mem_, r, find(*pool_, r, h), a);
}

NodeInfo Index::lookup(const Hash& h, time_t now, time_t inactive, std::vector<Hash>& evicted, Arena* copy_to) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    shm::Pool& p = *pool_;
    Node* n = find(p, r, h);
    if (!n) {
        n = make(p, r, h, now, evicted, mem_);
        if (!n) {
            NodeInfo none;
            none.cold = !r.loaded;
            return none;
        }
    } else {
        lru_unlink(p, r, n);
        lru_append(p, r, n);
    }
    if (n->uses < UINT32_MAX) ++n->uses;
    n->expire = now + inactive;
    NodeInfo i = info(r, n);
    if (copy_to && i.in_memory) i.memory_copy = copy_of(mem_, r, n, *copy_to);
    return i;
}

NodeInfo Index::peek(const Hash& h) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    return info(r, find(*pool_, r, h));
}

namespace {

// A claim on a node: `field` is its deadline. No node (evicted since the
// lookup): nobody can hold it.
bool claim(shm::Pool& p, Index::Root& r, const Hash& h, time_t now, time_t until, int64_t Node::*field) {
    Node* n = find(p, r, h);
    if (!n) return true;
    if (n->*field > now) return false;
    n->*field = until;
    return true;
}

}  // namespace

bool Index::claim_fill(const Hash& h, time_t now, time_t until) {
    shm::Guard g(pool_->mutex());
    return claim(*pool_, locked(g), h, now, until, &Node::fill_until);
}

Index::Claim Index::claim_update(const Hash& h, time_t now, time_t until, uint32_t file_gen) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    if (const Node* n = find(*pool_, r, h); n && n->file_gen != file_gen) return Claim::Changed;
    return claim(*pool_, r, h, now, until, &Node::update_until) ? Claim::Taken : Claim::Held;
}

void Index::stored(const Hash& h, const Stored& s, time_t now, time_t inactive, std::vector<Hash>& evicted) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    shm::Pool& p = *pool_;
    Node* n = find(p, r, h);
    if (!n && !(n = make(p, r, h, now, evicted, mem_))) return;
    set_stored(r, n, s, mem_);
    n->fill_until = n->update_until = 0;
    n->expire = now + inactive;
}

void Index::release(const Hash& h) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    if (Node* n = find(*pool_, r, h)) n->fill_until = n->update_until = 0;
}

void Index::stored_error(const Hash& h, uint16_t status, time_t valid_until, time_t now, time_t inactive,
                         std::vector<Hash>& evicted) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    shm::Pool& p = *pool_;
    Node* n = find(p, r, h);
    if (!n && !(n = make(p, r, h, now, evicted, mem_))) return;
    free_mem(mem_, r, n);
    if (n->exists) {
        evicted.push_back(n->key);
        --r.entries;
        r.size -= n->fs_size;
        n->exists = 0;
        n->fs_size = 0;
    }
    n->file_gen = ++r.file_gen;
    n->error = status;
    n->status = status;
    n->valid_until = valid_until;
    n->fill_until = n->update_until = 0;
    n->expire = now + inactive;
}

bool Index::forget(const Hash& h) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    Node* n = find(*pool_, r, h);
    if (!n) return false;
    n->error = 0;
    n->file_gen = ++r.file_gen;
    free_mem(mem_, r, n);
    const bool had = n->exists;
    if (n->exists) {
        --r.entries;
        r.size -= n->fs_size;
        n->exists = 0;
        n->fs_size = 0;
    }
    n->valid_until = 0;
    return had;
}

void Index::evict(time_t now, uint64_t max_size, size_t max, std::vector<Hash>& victims) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    shm::Pool& p = *pool_;
    for (uint64_t ref = r.lru_head; ref && victims.size() < max;) {
        Node* n = node(p, ref);
        ref = n->lru_next;
        if (n->fill_until > now || n->update_until > now) continue;
        const bool inactive = n->expire <= now;
        if (!inactive && r.size <= max_size) {
            // The list is in order of use: what follows is more recent,
            // so nothing further is inactive.
            break;
        }
        if (n->exists) victims.push_back(n->key);
        drop(p, r, n, mem_);
    }
}

void Index::loaded(const Hash& h, const Stored& s, time_t now, time_t inactive, std::vector<Hash>& evicted) {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    shm::Pool& p = *pool_;
    Node* n = find(p, r, h);
    if (n && n->exists) return;  // a request found it first
    if (!n && !(n = make(p, r, h, now, evicted, mem_))) return;
    set_stored(r, n, s, mem_);
    n->expire = now + inactive;
}

void Index::set_loaded() {
    shm::Guard g(pool_->mutex());
    locked(g).loaded = 1;
}

IndexStats Index::stats() {
    shm::Guard g(pool_->mutex());
    Root& r = locked(g);
    IndexStats s;
    s.entries = r.entries;
    s.nodes = r.nodes;
    s.size = r.size;
    s.loaded = r.loaded;
    s.memory_objects = r.mem_objects;
    s.memory_bytes = r.mem_bytes;
    return s;
}

}  // namespace gatehouse::cache
