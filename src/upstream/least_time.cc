// least_time header|last_byte: a latency-aware choice. Each peer keeps a
// peak-EWMA of its response times (the time to the response head, or to
// its last byte), shared by the workers through the zone. A request goes
// to the peer with the lowest
//
//     (average + 1 ms) x (connections in use + 1) / weight
//
// so that a slow origin gets fewer requests, and a fast one only until its
// queue makes it as slow; ties (no samples yet) go round robin. The
// average jumps up at once on a slow answer and drifts back down with the
// time constant kEwmaDecayMs, also while the peer gets no requests; an
// average older than that counts as none, so a peer that was slow is
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
    std::vector<double> score(u.peers.size(), 0.0);
    double best = 0.0;
    size_t first = end, ties = 0;
    for (size_t i = begin; i < end; ++i) {
        if (!eligible(pk, i, f)) continue;
        ok[i] = true;
        const Peer& p = u.peers[i];
        const PeerState& st = p.st();
        const double avg = ewma_at(st.ewma_us.load(std::memory_order_relaxed),
                                   st.ewma_at.load(std::memory_order_relaxed), t);
        const double conns = st.conns.load(std::memory_order_relaxed);
        score[i] = (avg + 1000.0) * (conns + 1.0) / p.server->weight;
        if (first == end || score[i] < best) {
            best = score[i];
            first = i;
            ties = 1;
        } else if (score[i] == best) {
            ++ties;
        }
    }
    if (first == end) return nullptr;
    if (ties == 1) return &u.peers[first];
    for (size_t i = begin; i < end; ++i)
        if (ok[i] && score[i] != best) ok[i] = false;
    return round_robin(pk, begin, end, f, &ok);
}

}  // namespace gatehouse::upstream
