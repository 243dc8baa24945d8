// least_time header|last_byte: a latency-aware choice. Each peer keeps a
// peak-EWMA of its response times (the time to the response head, or to
// its last byte), shared by the workers through the zone. Its cost is
//
//     (average + 1 ms) x (connections in use + 1)
//
// and a request goes to a peer drawn with probability proportional to
// weight / cost^3. The cube makes the choice sharp where costs differ
// much (a near region at 5 ms against a far one at 90 ms: 99.97 % near;
// at twice the other's cost, 11 %) and soft where they are close, so that a region whose latency grows
// loses its traffic gradually as it crosses the others' instead of all
// at once, back and forth at every crossing (flapping); taking the lowest
// cost outright did that. The draw also keeps a trickle of samples on
// every peer. Equal costs (no samples yet, instant answers) go weighted
// round robin, which is the same shares without the draw.
//
// The average jumps up at once on a slow answer and drifts back down with
// the time constant kEwmaDecayMs, also while the peer gets no requests;
// an average older than that counts as none, so a peer that was slow is
// tried again after a while, and its next answer says whether it still
// is [Finagle/Linkerd "peak EWMA"].
#include <cmath>
#include <vector>

#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

double decay(event::Msec from, event::Msec to) {
    if (to <= from) return 1.0;
    return std::exp(-static_cast<double>(to - from) / kEwmaDecayMs);
}

}  // namespace

double ewma_at(int64_t old_us, event::Msec old_at, event::Msec now) {
    // No sample, or one too old to say anything: the peer is as good as
    // an unknown one, and so gets tried again.
    if (old_at == 0 || now > old_at + static_cast<event::Msec>(kEwmaDecayMs)) return 0.0;
    return static_cast<double>(old_us) * decay(old_at, now);
}

int64_t ewma_update(int64_t old_us, event::Msec old_at, int64_t sample_us, event::Msec now) {
    if (old_at == 0 || sample_us >= old_us) return sample_us;
    const double w = decay(old_at, now);
    return static_cast<int64_t>(static_cast<double>(old_us) * w + static_cast<double>(sample_us) * (1.0 - w));
}

void Balancers::sample(PeerPicker& pk, Peer& p, event::Msec now) {
    const event::Msec from = pk.picked_at_;
    const int64_t us = now > from ? static_cast<int64_t>(now - from) * 1000 : 0;
    GroupLock lock(group(pk));
    PeerState& st = p.st();
    const int64_t v = ewma_update(st.ewma_us.load(std::memory_order_relaxed),
                                  st.ewma_at.load(std::memory_order_relaxed), us, now);
    st.ewma_us.store(v, std::memory_order_relaxed);
    // 0 means "no sample": a clock at 0 (tests) still counts as one.
    st.ewma_at.store(now ? now : 1, std::memory_order_relaxed);
}

Peer* Balancers::least_time(PeerPicker& pk, size_t begin, size_t end, Filter f) {
    UpstreamConf& u = group(pk);
    const event::Msec t = now(pk);
    std::vector<bool> ok(u.peers.size(), false);
    std::vector<double> share(u.peers.size(), 0.0);
    double total = 0.0, first_cost = -1.0;
    bool all_equal = true;
    size_t n = 0;
    for (size_t i = begin; i < end; ++i) {
        if (!eligible(pk, i, f)) continue;
        ok[i] = true;
        ++n;
        const Peer& p = u.peers[i];
        const PeerState& st = p.st();
        const double avg = ewma_at(st.ewma_us.load(std::memory_order_relaxed),
                                   st.ewma_at.load(std::memory_order_relaxed), t);
        const double conns = st.conns.load(std::memory_order_relaxed);
        const double cost = (avg + 1000.0) * (conns + 1.0);
        if (first_cost < 0) first_cost = cost;
        else if (cost != first_cost) all_equal = false;
        share[i] = peer_weight(p) / (cost * cost * cost);
        total += share[i];
    }
    if (n == 0) return nullptr;
    if (all_equal) return round_robin(pk, begin, end, f, &ok);
    double x = random_unit() * total;
    size_t last = end;
    for (size_t i = begin; i < end; ++i) {
        if (!ok[i]) continue;
        last = i;
        if (x < share[i]) return &u.peers[i];
        x -= share[i];
    }
    return &u.peers[last];  // rounding left x at the very top
}

}  // namespace gatehouse::upstream
