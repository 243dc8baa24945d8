// least_conn: the peer with the fewest connections in use for its weight
// (conns / weight, compared without division); peers that tie share the
// requests by smooth weighted round robin [nginx
// ngx_http_upstream_least_conn_module.c]. With a zone the counts are
// every worker's, so the choice sees the whole proxy's load.
#include <vector>

#include "upstream/balancer.h"

namespace gatehouse::upstream {

Peer* Balancers::least_conn(PeerPicker& pk, size_t begin, size_t end, Filter f) {
    UpstreamConf& u = group(pk);
    std::vector<bool> ok(u.peers.size(), false);
    // The best ratio so far, as the fraction best_c / best_w.
    uint64_t best_c = 0, best_w = 0;
    size_t ties = 0;
    size_t first = end;
    for (size_t i = begin; i < end; ++i) {
        if (!eligible(pk, i, f)) continue;
        ok[i] = true;
        const Peer& p = u.peers[i];
        const uint64_t c = p.st().conns.load(std::memory_order_relaxed);
        const uint64_t w = peer_weight(p);
        if (first == end || c * best_w < best_c * w) {
            best_c = c;
            best_w = w;
            ties = 1;
            first = i;
        } else if (c * best_w == best_c * w) {
            ++ties;
        }
    }
    if (first == end) return nullptr;
    if (ties == 1) return &u.peers[first];
    for (size_t i = begin; i < end; ++i) {
        if (!ok[i]) continue;
        const Peer& p = u.peers[i];
        const uint64_t c = p.st().conns.load(std::memory_order_relaxed);
        if (c * best_w != best_c * peer_weight(p)) ok[i] = false;
    }
    return round_robin(pk, begin, end, f, &ok);
}

}  // namespace gatehouse::upstream
