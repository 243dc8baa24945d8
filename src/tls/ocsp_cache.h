// "ssl_ocsp_cache shared:NAME:SIZE": what responders said about client
// certificates ("ssl_ocsp"), kept in a shared memory zone for every
// worker, so that a client's next connections, to any worker, need no
// request [nginx ngx_ssl_ocsp_cache].
//
// Layout in the zone: this header, then a fixed array of slots. A slot
// is a whole value (a certificate's key, its status, until when), so a
// worker dying with the lock held leaves nothing to repair: at worst a
// half-written slot, whose key no lookup matches. The array is bounded
// by the zone: when the few slots a key may use are all live, the one
// expiring first is replaced (a full cache forgets, it never grows).
#pragma once

#include <openssl/x509.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/shm_lock.h"

namespace gatehouse::tls {

// "off" | "shared:NAME:SIZE" (the "shared:" prefix optional, as nginx).
// Errors: invalid OCSP cache "x"; OCSP cache "NAME" is too small.
struct OcspCacheSpec {
    std::string name;
    uint64_t size = 0;
};
Result<std::optional<OcspCacheSpec>> parse_ocsp_cache(std::string_view word);

// A certificate's identity in the cache: the SHA-1 of its DER CertID
// (issuer name and key hashes and serial, RFC 6960 4.1.1), which is what
// a responder answers about. Empty on error.
using OcspKey = std::array<uint8_t, 20>;
std::optional<OcspKey> ocsp_cache_key(X509* cert, X509* issuer);

// Without nextUpdate a status is kept for an hour [nginx].
inline constexpr int64_t kOcspCacheDefaultValid = 3600;

class OcspCache {
public:
    static constexpr uint64_t kMinZone = 8 * 1024;
    // Lays an empty cache out in a fresh zone (zeroed, or another
    // layout), or finds the one there; null when `size` is too small.
    // Master, before the workers fork.
    static OcspCache* attach(void* addr, size_t size);

    // The status (V_OCSP_CERTSTATUS_*) kept for `key` if still valid at `now`.
    std::optional<int> lookup(const OcspKey& key, int64_t now);
    // Keeps `status` until `valid` (clamped to at least now).
    void store(const OcspKey& key, int status, int64_t valid, int64_t now);

    size_t slots() const { return slots_; }

private:
    struct Slot {
        OcspKey key;
        int32_t status;
        int64_t valid;  // 0: free
    };
    static constexpr uint64_t kMagic = 0x6768'6f63'7370'0001;  // "ghocsp" v1
    static constexpr size_t kProbe = 8;  // slots a key may use
    OcspCache() = default;
    Slot* table() { return reinterpret_cast<Slot*>(reinterpret_cast<char*>(this) + sizeof(OcspCache)); }
    size_t home(const OcspKey& key) const;

    uint64_t magic_ = 0;
    uint64_t size_ = 0;
    uint64_t slots_ = 0;
    shm::Mutex mutex_;
};

}  // namespace gatehouse::tls
