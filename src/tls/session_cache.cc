#include "tls/session_cache.h"

#include <cerrno>
#include <cstring>
#include <new>

#include "core/log.h"

namespace gatehouse::tls {

namespace {

constexpr uint64_t kMagic = 0x67682d746c732d31ull;  // "gh-tls-1"

// A record in the ring: the id, then the DER session.
struct Record {
    uint8_t id_len;
    uint8_t id[SharedSessionCache::kMaxId];
    uint8_t pad;
    uint16_t der_len;
};

uint32_t hash_id(std::span<const uint8_t> id) {
    // FNV-1a: session ids are random bytes, any mixing will do.
    uint32_t h = 2166136261u;
    for (uint8_t b : id) h = (h ^ b) * 16777619u;
    return h ? h : 1;  // 0 marks an empty entry
}

}  // namespace

struct SharedSessionCache::Entry {
    uint64_t pos = 0;     // absolute ring position of the record
    int64_t expires = 0;  // unix time
    uint32_t hash = 0;    // 0: empty
    uint32_t len = 0;     // record bytes
};

SharedSessionCache* SharedSessionCache::attach(void* addr, size_t size) {
    size_t header = (sizeof(SharedSessionCache) + 63) / 64 * 64;
    if (size < header + 16 * 1024) return nullptr;
    auto* c = static_cast<SharedSessionCache*>(addr);
    if (c->magic_ == kMagic && c->size_ == size) return c;
    // Fresh (zeroed) or another layout: lay out an empty cache. The master
    // does this before any worker maps the zone, so nobody holds the lock.
    c = ::new (addr) SharedSessionCache();
    c->size_ = size;
    // An eighth of the zone for the index, the rest for records: with
    // records of ~200 to ~1000 bytes there are more entries than records.
    size_t index_bytes = (size - header) / 8;
    c->sets_ = static_cast<uint32_t>(index_bytes / (sizeof(Entry) * kWays));
    if (c->sets_ == 0) c->sets_ = 1;
    c->ring_size_ = size - header - c->sets_ * kWays * sizeof(Entry);
    c->write_pos_ = 0;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&c->mutex_, &a);
    pthread_mutexattr_destroy(&a);
    c->reset_index();
    c->magic_ = kMagic;
    return c;
}

SharedSessionCache::Entry* SharedSessionCache::entries() {
    size_t header = (sizeof(SharedSessionCache) + 63) / 64 * 64;
    return reinterpret_cast<Entry*>(reinterpret_cast<uint8_t*>(this) + header);
}

uint8_t* SharedSessionCache::ring() { return reinterpret_cast<uint8_t*>(entries() + sets_ * kWays); }

void SharedSessionCache::reset_index() {
    Entry* e = entries();
    for (size_t i = 0; i < sets_ * kWays; ++i) e[i] = Entry{};
}

bool SharedSessionCache::lock() {
    int rc = pthread_mutex_lock(&mutex_);
    if (rc == EOWNERDEAD) {
        // A worker died in the middle of an update: the index may point at
        // half-written records. Forget everything; clients do a full
        // handshake once.
        reset_index();
        pthread_mutex_consistent(&mutex_);
        GH_LOG(Alert, "shared TLS session cache reset after a worker died holding its lock");
        return true;
    }
    return rc == 0;
}

void SharedSessionCache::unlock() { pthread_mutex_unlock(&mutex_); }

bool SharedSessionCache::valid(const Entry& e) const {
    // Overwritten once the writer has gone a whole ring past the record.
    return e.hash != 0 && e.pos + e.len <= write_pos_ && write_pos_ - e.pos <= ring_size_;
}

SharedSessionCache::Entry* SharedSessionCache::lookup(std::span<const uint8_t> id, uint32_t hash) {
    Entry* set = entries() + (hash % sets_) * kWays;
    for (size_t i = 0; i < kWays; ++i) {
        Entry& e = set[i];
        if (e.hash != hash || !valid(e)) continue;
        const auto* r = reinterpret_cast<const Record*>(ring() + e.pos % ring_size_);
        if (r->id_len == id.size() && memcmp(r->id, id.data(), id.size()) == 0) return &e;
    }
    return nullptr;
}

void SharedSessionCache::store(std::span<const uint8_t> id, std::span<const uint8_t> der, time_t expires,
                               time_t now) {
    if (id.empty() || id.size() > kMaxId || der.size() > kMaxSession) return;
    const size_t need = (sizeof(Record) + der.size() + 7) / 8 * 8;
    if (need > ring_size_ / 4) return;
    uint32_t h = hash_id(id);
    if (!lock()) return;
    // A record never wraps: skip to the start when the end is too close.
    uint64_t pos = write_pos_;
    uint64_t off = pos % ring_size_;
    if (off + need > ring_size_) pos += ring_size_ - off;
    Record* r = reinterpret_cast<Record*>(ring() + pos % ring_size_);
    r->id_len = static_cast<uint8_t>(id.size());
    memcpy(r->id, id.data(), id.size());
    r->der_len = static_cast<uint16_t>(der.size());
    memcpy(reinterpret_cast<uint8_t*>(r) + sizeof(Record), der.data(), der.size());
    write_pos_ = pos + need;
    // The entry: the same session's, else a free or stale one, else the
    // one of the oldest record in the set.
    Entry* slot = lookup(id, h);
    if (!slot) {
        Entry* set = entries() + (h % sets_) * kWays;
        Entry* oldest = &set[0];
        for (size_t i = 0; i < kWays; ++i) {
            if (!valid(set[i]) || set[i].expires <= now) {
                slot = &set[i];
                break;
            }
            if (set[i].pos < oldest->pos) oldest = &set[i];
        }
        if (!slot) slot = oldest;
    }
    slot->pos = pos;
    slot->len = static_cast<uint32_t>(need);
    slot->expires = expires;
    slot->hash = h;
    unlock();
}

size_t SharedSessionCache::find(std::span<const uint8_t> id, uint8_t* out, time_t now) {
    if (id.empty() || id.size() > kMaxId) return 0;
    uint32_t h = hash_id(id);
    if (!lock()) return 0;
    size_t n = 0;
    if (Entry* e = lookup(id, h)) {
        if (e->expires > now) {
            const auto* r = reinterpret_cast<const Record*>(ring() + e->pos % ring_size_);
            n = r->der_len;
            memcpy(out, reinterpret_cast<const uint8_t*>(r) + sizeof(Record), n);
        } else {
            *e = Entry{};
        }
    }
    unlock();
    return n;
}

void SharedSessionCache::remove(std::span<const uint8_t> id) {
    if (id.empty() || id.size() > kMaxId) return;
    uint32_t h = hash_id(id);
    if (!lock()) return;
    if (Entry* e = lookup(id, h)) *e = Entry{};
    unlock();
}

size_t SharedSessionCache::count(time_t now) {
    if (!lock()) return 0;
    size_t n = 0;
    Entry* e = entries();
    for (size_t i = 0; i < sets_ * kWays; ++i)
        if (valid(e[i]) && e[i].expires > now) ++n;
    unlock();
    return n;
}

}  // namespace gatehouse::tls
