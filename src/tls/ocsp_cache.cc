#include "tls/ocsp_cache.h"

#include <openssl/ocsp.h>
#include <openssl/sha.h>

#include <cstring>
#include <new>

#include "conf/values.h"

namespace gatehouse::tls {

Result<std::optional<OcspCacheSpec>> parse_ocsp_cache(std::string_view w) {
    if (w == "off") return std::optional<OcspCacheSpec>();
    auto invalid = [&] { return make_error("invalid OCSP cache \"" + std::string(w) + "\""); };
    std::string_view rest = w.starts_with("shared:") ? w.substr(7) : w;
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return invalid();
    auto size = conf::parse_size(rest.substr(colon + 1));
    if (!size) return invalid();
    OcspCacheSpec s{std::string(rest.substr(0, colon)), *size};
    if (s.size < OcspCache::kMinZone) return make_error("OCSP cache \"" + s.name + "\" is too small");
    return std::optional<OcspCacheSpec>(std::move(s));
}

std::optional<OcspKey> ocsp_cache_key(X509* cert, X509* issuer) {
    OCSP_CERTID* id = OCSP_cert_to_id(nullptr, cert, issuer);
    if (!id) return std::nullopt;
    unsigned char* der = nullptr;
    int len = i2d_OCSP_CERTID(id, &der);
    OCSP_CERTID_free(id);
    if (len <= 0) return std::nullopt;
    OcspKey k;
    SHA1(der, static_cast<size_t>(len), k.data());
    OPENSSL_free(der);
    return k;
}

OcspCache* OcspCache::attach(void* addr, size_t size) {
    if (size < kMinZone) return nullptr;
    auto* c = static_cast<OcspCache*>(addr);
    uint64_t magic = 0;
    std::memcpy(&magic, addr, sizeof magic);
    if (magic == kMagic && c->size_ == size) return c;
    // Fresh or another layout: the master lays it out before any worker
    // maps it, so nobody holds the lock.
    c = ::new (addr) OcspCache();
    c->size_ = size;
    c->slots_ = (size - sizeof(OcspCache)) / sizeof(Slot);
    std::memset(c->table(), 0, c->slots_ * sizeof(Slot));
    c->magic_ = kMagic;
    return c;
}

size_t OcspCache::home(const OcspKey& key) const {
    uint64_t h = 0;
    std::memcpy(&h, key.data(), sizeof h);  // a SHA-1: already uniform
    return static_cast<size_t>(h % slots_);
}

std::optional<int> OcspCache::lookup(const OcspKey& key, int64_t now) {
    // Whole slots only are written under the lock: nothing to repair
    // after a holder died (see the header).
    shm::Guard g(mutex_);
    size_t i = home(key);
    for (size_t n = 0; n < kProbe && n < slots_; ++n, i = (i + 1) % slots_) {
        const Slot& s = table()[i];
        if (s.valid != 0 && s.key == key) {
            if (s.valid < now) return std::nullopt;
            return s.status;
        }
    }
    return std::nullopt;
}

void OcspCache::store(const OcspKey& key, int status, int64_t valid, int64_t now) {
    if (valid < now) valid = now;
    if (valid == 0) valid = 1;  // 0 marks a free slot
    shm::Guard g(mutex_);
    size_t i = home(key);
    Slot* victim = nullptr;
    for (size_t n = 0; n < kProbe && n < slots_; ++n, i = (i + 1) % slots_) {
        Slot& s = table()[i];
        if (s.valid != 0 && s.key == key) {
            victim = &s;
            break;
        }
        // A free or expired slot, else the one expiring first.
        bool dead = s.valid == 0 || s.valid < now;
        if (!victim || (dead && !(victim->valid == 0 || victim->valid < now)) ||
            (!dead && victim->valid >= now && s.valid < victim->valid))
            victim = &s;
        if (dead) break;
    }
    victim->key = key;
    victim->status = status;
    victim->valid = valid;
}

}  // namespace gatehouse::tls
