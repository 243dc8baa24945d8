// random [two [least_conn]]: a peer drawn with probability proportional to
// its weight; with "two", two distinct peers are drawn that way and the one
// with fewer connections per weight wins (the "power of two choices":
// nearly least_conn's balance, without every worker herding onto the same
// least loaded peer) [nginx ngx_http_upstream_random_module.c].
//
// The draws only ever see usable peers, so no retry is needed; the random
// source is a per-process xorshift generator seeded at first use.
#include <sys/time.h>
#include <unistd.h>

#include <vector>

#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

uint64_t g_state = 0;

uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// One of `w` (indices into peers, with their weights) by weight, skipping
// the index `skip`.
size_t draw(const std::vector<std::pair<size_t, uint64_t>>& w, uint64_t total, size_t skip) {
    uint64_t r = random_u64() % total;
    for (size_t k = 0; k < w.size(); ++k) {
        if (k == skip) continue;
        if (r < w[k].second) return k;
        r -= w[k].second;
    }
    return w.size() - 1;  // not reached: r < total
}

}  // namespace

void seed_random(uint64_t seed) { g_state = splitmix(seed) | 1; }

uint64_t random_u64() {
    if (g_state == 0) {
        timeval tv{};
        gettimeofday(&tv, nullptr);
        seed_random(static_cast<uint64_t>(getpid()) << 32 ^ static_cast<uint64_t>(tv.tv_usec) ^
                    static_cast<uint64_t>(tv.tv_sec));
    }
    // xorshift64*
    g_state ^= g_state >> 12;
    g_state ^= g_state << 25;
    g_state ^= g_state >> 27;
    return g_state * 0x2545f4914f6cdd1dULL;
}

double random_unit() { return static_cast<double>(random_u64() >> 11) * 0x1.0p-53; }

Peer* Balancers::random(PeerPicker& pk, size_t begin, size_t end, Filter f) {
    UpstreamConf& u = group(pk);
    std::vector<std::pair<size_t, uint64_t>> w;
    uint64_t total = 0;
    for (size_t i = begin; i < end; ++i) {
        if (!eligible(pk, i, f)) continue;
        w.emplace_back(i, peer_weight(u.peers[i]));
        total += peer_weight(u.peers[i]);
    }
    if (w.empty()) return nullptr;
    const size_t a = draw(w, total, w.size());
    if (!u.random_two || w.size() == 1) return &u.peers[w[a].first];
    const size_t b = draw(w, total - w[a].second, a);
    const Peer& pa = u.peers[w[a].first];
    const Peer& pb = u.peers[w[b].first];
    const uint64_t ca = pa.st().conns.load(std::memory_order_relaxed);
    const uint64_t cb = pb.st().conns.load(std::memory_order_relaxed);
    // conns / weight, compared without division; a tie keeps the first.
    return cb * w[a].second < ca * w[b].second ? &u.peers[w[b].first] : &u.peers[w[a].first];
}

}  // namespace gatehouse::upstream
