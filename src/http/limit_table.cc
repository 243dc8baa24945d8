#include "http/limit_table.h"

#include <cstring>
#include <functional>
#include <new>

#include "core/assert.h"
#include "core/shm.h"
#include "core/shm_slab.h"

namespace gatehouse::http {

// The pool's root. Refs throughout (core/shm_slab.h, "Address
// independence").
struct LimitTable::Head {
    static constexpr uint64_t kMagic = 0x67682d6c696d7402ULL;  // "gh-limt", version 2
    uint64_t magic = kMagic;
    uint64_t buckets = 0;  // uint64_t[nbuckets]
    uint64_t nbuckets = 0;  // a power of two
    uint64_t newest = 0, oldest = 0;
    uint64_t nodes = 0;
    uint64_t key = 0;  // the declared key's text
    uint64_t key_len = 0;
    uint64_t seq = 0;        // LimitTable::next_seq()
    uint32_t sync_down = 0;  // atomic access only
};

namespace {

// About one bucket per 256 bytes of zone: a record with a short key takes
// a 64- or 128-byte block, so chains stay a few records long when full.
uint64_t buckets_for(size_t zone) {
    uint64_t n = 64;
    while (n * 2 * 256 <= zone && n < (uint64_t(1) << 24)) n *= 2;
    return n;
}

}  // namespace

LimitTable::Head* LimitTable::head() const { return static_cast<Head*>(pool_->root()); }

bool LimitTable::build() {
    const uint64_t nb = buckets_for(pool_->stats().pages * shm::Pool::kPageSize);
    void* h = pool_->alloc(sizeof(Head));
    void* b = pool_->alloc(nb * sizeof(uint64_t));
    void* k = pool_->alloc(key_.size());
    if (!h || !b || !k) {
        pool_->free(h);
        pool_->free(b);
        pool_->free(k);
        return false;
    }
    std::memset(b, 0, nb * sizeof(uint64_t));
    std::memcpy(k, key_.data(), key_.size());
    Head* head = ::new (h) Head;
    head->buckets = pool_->ref(b);
    head->nbuckets = nb;
    head->key = pool_->ref(k);
    head->key_len = key_.size();
    pool_->set_root(head);
    return true;
}

Result<LimitTable> LimitTable::open(const shm::ZoneRef& ref, std::string_view what, std::string_view key) {
    shm::Zone& z = *ref.zone;
    std::string name(z.name());
    if (z.size() < kMinZone) return make_error("zone \"" + name + "\" is too small");
    shm::Pool* pool = shm::Pool::attach(z.addr(), z.size());
    if (!pool) return make_error("zone \"" + name + "\" is too small");
    LimitTable t(pool, name, std::string(key));
    shm::Guard g(pool->mutex());
    if (g.owner_died()) pool->reset();
    Head* h = t.head();
    if (h && h->magic == Head::kMagic) {
        std::string_view old(pool->at<const char>(h->key), h->key_len);
        if (old != key)
            return make_error(std::string(what) + " \"" + name + "\" uses the \"" + std::string(key) +
                              "\" key while previously it used the \"" + std::string(old) + "\" key");
        return t;
    }
    if (h) pool->reset();
    if (!t.build()) return make_error("zone \"" + name + "\" is too small");
    return t;
}

LimitTable::Lock::Lock(LimitTable& t) : t_(t) {
    if (t.pool_->mutex().lock() == shm::Locked::OwnerDied) {
        // The dead holder may have been anywhere in an update: start the
        // zone afresh (every key's limit resets, as after a restart).
        t.pool_->reset();
        GH_CHECK(t.build());  // an empty pool of open()'s size had room
    }
}

LimitTable::Lock::~Lock() { t_.pool_->mutex().unlock(); }

uint64_t LimitTable::hash_key(std::string_view key) { return std::hash<std::string_view>{}(key); }

LimitTable::Node* LimitTable::find(uint64_t hash, std::string_view key) {
    Head* h = head();
    const uint64_t* b = pool_->at<uint64_t>(h->buckets);
    for (uint64_t r = b[hash & (h->nbuckets - 1)]; r;) {
        Node* n = pool_->at<Node>(r);
        if (n->hash == hash && n->key() == key) return n;
        r = n->chain;
    }
    return nullptr;
}

LimitTable::Node* LimitTable::insert(uint64_t hash, std::string_view key) {
    GH_ASSERT(key.size() <= kMaxKey);
    void* p = pool_->alloc(sizeof(Node) + key.size());
    if (!p) return nullptr;
    Head* h = head();
    Node* n = ::new (p) Node;
    n->hash = hash;
    n->key_len = static_cast<uint16_t>(key.size());
    std::memcpy(n + 1, key.data(), key.size());
    uint64_t* b = pool_->at<uint64_t>(h->buckets) + (hash & (h->nbuckets - 1));
    n->chain = *b;
    *b = pool_->ref(n);
    n->older = h->newest;
    if (h->newest) pool_->at<Node>(h->newest)->newer = pool_->ref(n);
    else h->oldest = pool_->ref(n);
    h->newest = pool_->ref(n);
    ++h->nodes;
    return n;
}

void LimitTable::erase(Node* n) {
    Head* h = head();
    const uint64_t self = pool_->ref(n);
    uint64_t* link = pool_->at<uint64_t>(h->buckets) + (n->hash & (h->nbuckets - 1));
    while (*link != self) {
        GH_CHECK(*link != 0);  // n is in its bucket
        link = &pool_->at<Node>(*link)->chain;
    }
    *link = n->chain;
    if (n->newer) pool_->at<Node>(n->newer)->older = n->older;
    else h->newest = n->older;
    if (n->older) pool_->at<Node>(n->older)->newer = n->newer;
    else h->oldest = n->newer;
    --h->nodes;
    pool_->free(n);
}

void LimitTable::touch(Node* n) {
    Head* h = head();
    const uint64_t self = pool_->ref(n);
    if (h->newest == self) return;
    // Unlink (n has a newer neighbour, since it is not the newest)...
    pool_->at<Node>(n->newer)->older = n->older;
    if (n->older) pool_->at<Node>(n->older)->newer = n->newer;
    else h->oldest = n->newer;
    // ...and put it first.
    n->newer = 0;
    n->older = h->newest;
    pool_->at<Node>(h->newest)->newer = self;
    h->newest = self;
}

LimitTable::Node* LimitTable::oldest() { return pool_->at<Node>(head()->oldest); }

LimitTable::Node* LimitTable::newest() { return pool_->at<Node>(head()->newest); }

LimitTable::Node* LimitTable::older(Node* n) { return pool_->at<Node>(n->older); }

uint64_t LimitTable::next_seq() { return ++head()->seq; }

uint64_t LimitTable::seq() const { return head()->seq; }

// The table is built before any use (a null head is a bug); the check also
// tells GCC so, which otherwise, inlining more in a profile-guided build,
// sees an atomic access through the null of Pool::at() and warns.
bool LimitTable::sync_down() const {
    const Head* h = head();
    GH_CHECK(h != nullptr);
    return __atomic_load_n(&h->sync_down, __ATOMIC_RELAXED) != 0;
}

void LimitTable::set_sync_down(bool down) {
    Head* h = head();
    GH_CHECK(h != nullptr);
    __atomic_store_n(&h->sync_down, down ? 1u : 0u, __ATOMIC_RELAXED);
}

size_t LimitTable::size() const { return head()->nodes; }

}  // namespace gatehouse::http
