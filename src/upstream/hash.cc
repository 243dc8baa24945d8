// ip_hash and "hash key [consistent]": a request's key picks its peer, so
// the same client (ip_hash) or the same key goes to the same server while
// the group stays the same.
//
// Plain hashing maps the key's hash onto the primaries' weights laid end
// to end (a peer of weight 3 owns three slots), over every primary,
// usable or not, so that a peer going down moves only its own keys; an
// unusable choice is hashed again, up to 20 times, then round robin takes
// over [nginx ngx_http_upstream_hash_module.c, ip_hash's 20 tries].
// ip_hash hashes with nginx's own arithmetic (see ip_hash_round), so that
// each client goes to the server it would go to behind nginx.
//
// "consistent" places 160 points per weight unit of each primary on a ring
// of 32-bit hashes (ketama); a key goes to the owner of the first point at
// or after its hash, or, that owner unusable, to the next point's. A
// server's points hash its own address, so removing one of N servers
// moves only the keys it owned, about 1/N of them.
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

constexpr int kHashTries = 20;

uint32_t mix(uint64_t h) {
    // A 64-bit finalizer (MurmurHash3's fmix64 constants), folded to 32.
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return static_cast<uint32_t>(h ^ (h >> 32));
}

}  // namespace

uint32_t hash_bytes(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return mix(h);
}

size_t ip_hash_key(const sockaddr* sa, uint8_t out[16]) {
    if (sa->sa_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        std::memcpy(out, &in->sin_addr, 3);
        return 3;
    }
    if (sa->sa_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        const auto* b = reinterpret_cast<const uint8_t*>(&in6->sin6_addr);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            std::memcpy(out, b + 12, 3);
            return 3;
        }
        std::memcpy(out, b, 16);
        return 16;
    }
    // A Unix socket's clients share one pseudo-address of three zero
    // octets, so they keep to one server, as behind nginx.
    std::memset(out, 0, 3);
    return 3;
}

uint32_t ip_hash_round(uint32_t h, std::span<const uint8_t> key) {
    for (uint8_t b : key) h = (h * 113 + b) % 6271;
    return h;
}

void build_ring(UpstreamConf& u) {
    u.ring.clear();
    for (size_t i = 0; i < u.backup_start; ++i) {
        const Peer& p = u.peers[i];
        // Slots without an address (or draining) have no points: the
        // ring is rebuilt when they change (sync_peers).
        if (!present(p)) continue;
        const uint32_t n = kRingPointsPerWeight * peer_weight(p);
        std::string name = p.text + "-";
        const size_t base = name.size();
        for (uint32_t k = 0; k < n; ++k) {
            name.resize(base);
            name += std::to_string(k);
            u.ring.push_back(RingPoint{hash_bytes(name), static_cast<uint32_t>(i)});
        }
    }
    // Equal hashes (rare) keep a stable order: by peer.
    std::sort(u.ring.begin(), u.ring.end(), [](const RingPoint& a, const RingPoint& b) {
        return a.hash != b.hash ? a.hash < b.hash : a.peer < b.peer;
    });
}

size_t ring_find(std::span<const RingPoint> ring, uint32_t h) {
    auto it = std::lower_bound(ring.begin(), ring.end(), h,
                               [](const RingPoint& p, uint32_t v) { return p.hash < v; });
    return it == ring.end() ? 0 : static_cast<size_t>(it - ring.begin());
}

Peer* Balancers::hashed(PeerPicker& pk, size_t begin, size_t end, Filter f) {
    UpstreamConf& u = group(pk);
    // ip_hash without an IP client (a Unix socket, or the caller did not
    // say), "hash" with an empty key: round robin, as nginx.
    if (!has_hash(pk)) return round_robin(pk, begin, end, f);
    const uint32_t h = hash(pk);
    if (u.method == Method::Hash && u.consistent && !u.ring.empty()) {
        const size_t n = u.ring.size();
        const size_t start = ring_find(u.ring, h);
        // Each peer is judged once: its first point decides.
        std::vector<bool> seen(u.peers.size(), false);
        size_t judged = 0;
        for (size_t k = 0; k < n && judged < end - begin; ++k) {
            const size_t i = u.ring[(start + k) % n].peer;
            if (i < begin || i >= end || seen[i]) continue;
            seen[i] = true;
            ++judged;
            if (eligible(pk, i, f)) return &u.peers[i];
        }
        return nullptr;
    }
    // The weights of the peers with an address: slots without one (or
    // draining) own no part of the hash space.
    auto weight = [&](size_t i) -> uint64_t { return present(u.peers[i]) ? peer_weight(u.peers[i]) : 0; };
    uint64_t total = 0;
    for (size_t i = begin; i < end; ++i) total += weight(i);
    if (total == 0) return nullptr;
    const bool ip = u.method == Method::IpHash;
    const std::span<const uint8_t> key = client_key(pk);
    uint32_t x = ip ? ip_hash_round(kIpHashStart, key) : h;
    for (int t = 0; t < kHashTries; ++t) {
        uint64_t w = x % total;
        size_t i = begin;
        while (w >= weight(i)) {
            w -= weight(i);
            ++i;
        }
        if (eligible(pk, i, f)) return &u.peers[i];
        // Hash again: the same key always tries the same sequence.
        x = ip ? ip_hash_round(x, key) : mix((static_cast<uint64_t>(x) << 32) | static_cast<uint64_t>(t + 1));
    }
    return round_robin(pk, begin, end, f);
}

}  // namespace gatehouse::upstream
