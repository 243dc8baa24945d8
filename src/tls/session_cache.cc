#include "tls/session_cache.h"

#include <cstring>
#include <new>

#include "core/log.h"

namespace gatehouse::tls {

namespace {

constexpr uint64_t kMagic = 0x67682d746c732d32ull;  // "gh-tls-2": the layout's version
// Below this, too few sessions fit to be worth sharing ("ssl_session_cache"
// asks for 32k at least).
constexpr size_t kMinZone = 16 * 1024;
constexpr size_t kZonePerBucket = 512;

uint32_t hash_id(std::span<const uint8_t> id) {
    // FNV-1a: session ids are random bytes, any mixing will do.
    uint32_t h = 2166136261u;
    for (uint8_t b : id) h = (h ^ b) * 16777619u;
    return h;
}

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

// A session's record, its DER right after it.
struct SharedSessionCache::Session {
    uint64_t next = 0;   // in the bucket's chain (Pool::ref), 0: the last
    uint64_t older = 0;  // in the queue, 0: the oldest
    uint64_t newer = 0;  // 0: the newest
    int64_t expires = 0;  // unix time
    uint32_t hash = 0;
    uint16_t der_len = 0;
    uint8_t id_len = 0;
    uint8_t id[kMaxId] = {};
    uint8_t* der() { return reinterpret_cast<uint8_t*>(this + 1); }
};

SharedSessionCache* SharedSessionCache::attach(void* addr, size_t size) {
    if (size < kMinZone) return nullptr;
    auto* c = static_cast<SharedSessionCache*>(addr);
    uint64_t magic = 0;
    std::memcpy(&magic, addr, sizeof magic);
    if (magic == kMagic && c->pool_magic_ == shm::Pool::kMagic && c->size_ == size) return c;
    // Fresh (zeroed) or another layout: lay out an empty cache. The master
    // does this before any worker maps the zone, so nobody holds the lock.
    c = ::new (addr) SharedSessionCache();
    c->size_ = size;
    size_t n = size / kZonePerBucket;
    c->buckets_ = static_cast<uint32_t>(n > UINT32_MAX ? UINT32_MAX : n);
    c->pool_offset_ = align_up(sizeof(SharedSessionCache) + c->buckets_ * sizeof(uint64_t), 64);
    std::memset(c->buckets(), 0, c->buckets_ * sizeof(uint64_t));
    shm::Pool* p = shm::Pool::create(static_cast<char*>(addr) + c->pool_offset_, size - c->pool_offset_);
    if (!p) return nullptr;
    {
        shm::Guard g(p->mutex());
        // One session must not flush a quarter of the cache or more.
        c->max_record_ = p->stats().pages * shm::Pool::kPageSize / 4;
    }
    c->pool_magic_ = shm::Pool::kMagic;
    c->magic_ = kMagic;
    return c;
}

shm::Pool& SharedSessionCache::pool() const {
    return *reinterpret_cast<shm::Pool*>(const_cast<char*>(reinterpret_cast<const char*>(this)) + pool_offset_);
}

uint64_t* SharedSessionCache::buckets() { return reinterpret_cast<uint64_t*>(this + 1); }

void SharedSessionCache::recover(const shm::Guard& g) {
    if (!g.owner_died()) return;
    // A worker died in the middle of an update: the chains, the queue or
    // the pool's own lists may be half-changed. Forget everything; clients
    // do a full handshake once.
    reset();
    GH_LOG(Alert, "shared TLS session cache reset after a worker died holding its lock");
}

void SharedSessionCache::reset() {
    std::memset(buckets(), 0, buckets_ * sizeof(uint64_t));
    oldest_ = newest_ = 0;
    pool().reset();
}

SharedSessionCache::Session* SharedSessionCache::lookup(std::span<const uint8_t> id, uint32_t hash) {
    shm::Pool& p = pool();
    for (uint64_t r = buckets()[hash % buckets_]; r;) {
        auto* s = p.at<Session>(r);
        if (s->hash == hash && s->id_len == id.size() && memcmp(s->id, id.data(), id.size()) == 0) return s;
        r = s->next;
    }
    return nullptr;
}

// Out of its chain and the queue, and freed.
void SharedSessionCache::drop(Session* s) {
    shm::Pool& p = pool();
    const uint64_t me = p.ref(s);
    uint64_t* link = &buckets()[s->hash % buckets_];
    while (*link != me) link = &p.at<Session>(*link)->next;
    *link = s->next;
    if (s->older)
        p.at<Session>(s->older)->newer = s->newer;
    else
        oldest_ = s->newer;
    if (s->newer)
        p.at<Session>(s->newer)->older = s->older;
    else
        newest_ = s->older;
    p.free(s);
}

void SharedSessionCache::store(std::span<const uint8_t> id, std::span<const uint8_t> der, time_t expires,
                               time_t now) {
    if (id.empty() || id.size() > kMaxId || der.size() > kMaxSession) return;
    const size_t need = sizeof(Session) + der.size();
    if (need > max_record_) return;
    const uint32_t h = hash_id(id);
    shm::Pool& p = pool();
    shm::Guard g(p.mutex());
    recover(g);
    // The same session stored again (a renewed ticket): the new one wins.
    if (Session* old = lookup(id, h)) drop(old);
    // A little housekeeping per store keeps expired sessions from piling
    // up at the old end, without ever walking the whole queue.
    for (int i = 0; i < 2 && oldest_; ++i) {
        Session* o = p.at<Session>(oldest_);
        if (o->expires > now) break;
        drop(o);
    }
    void* b = p.alloc(need);
    while (!b && oldest_) {
        drop(p.at<Session>(oldest_));
        b = p.alloc(need);
    }
    if (!b) return;
    auto* s = ::new (b) Session();
    s->expires = expires;
    s->hash = h;
    s->id_len = static_cast<uint8_t>(id.size());
    memcpy(s->id, id.data(), id.size());
    s->der_len = static_cast<uint16_t>(der.size());
    memcpy(s->der(), der.data(), der.size());
    const uint64_t me = p.ref(s);
    uint64_t& head = buckets()[h % buckets_];
    s->next = head;
    head = me;
    s->older = newest_;
    if (newest_)
        p.at<Session>(newest_)->newer = me;
    else
        oldest_ = me;
    newest_ = me;
}

size_t SharedSessionCache::find(std::span<const uint8_t> id, uint8_t* out, time_t now) {
    if (id.empty() || id.size() > kMaxId) return 0;
    const uint32_t h = hash_id(id);
    shm::Guard g(pool().mutex());
    recover(g);
    Session* s = lookup(id, h);
    if (!s) return 0;
    if (s->expires <= now) {
        drop(s);
        return 0;
    }
    memcpy(out, s->der(), s->der_len);
    return s->der_len;
}

void SharedSessionCache::remove(std::span<const uint8_t> id) {
    if (id.empty() || id.size() > kMaxId) return;
    const uint32_t h = hash_id(id);
    shm::Guard g(pool().mutex());
    recover(g);
    if (Session* s = lookup(id, h)) drop(s);
}

size_t SharedSessionCache::count(time_t now) {
    shm::Pool& p = pool();
    shm::Guard g(p.mutex());
    recover(g);
    size_t n = 0;
    for (uint64_t r = oldest_; r;) {
        auto* s = p.at<Session>(r);
        if (s->expires > now) ++n;
        r = s->newer;
    }
    return n;
}

}  // namespace gatehouse::tls
