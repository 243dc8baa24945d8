// PeerPicker: nginx's smooth weighted round robin [nginx
// ngx_http_upstream_round_robin.c].
//
// Each pick adds every usable peer's effective weight to its current
// weight, takes the peer with the largest current weight (the first one on
// a tie) and takes the sum of the effective weights off the winner. Over
// one cycle each peer wins as often as its weight, spread out: weights
// 5, 1, 1 give a a b a c a a. A failure lowers the effective weight by
// weight / max_fails; each pick then raises it by one back toward the
// weight, so a peer that failed recovers its share gradually.
//
// The counters live in the Peer, per worker for now (each worker balances
// on its own, as nginx without a "zone"); they move to a shared-memory
// zone later without changing this interface.
#include "upstream/upstream.h"

#include <cstdint>

#include "core/log.h"

namespace gatehouse::upstream {

namespace {

// Signed: a picker made at `now` may look at a peer another request
// marked failed a moment later (checked > now), which must count as
// recent, not as long ago.
int64_t since(event::Msec now, event::Msec then) {
    return static_cast<int64_t>(now) - static_cast<int64_t>(then);
}

// Failed max_fails times, the last time within fail_timeout: skipped
// until fail_timeout has passed since it was last checked.
bool failed_recently(const Peer& p, event::Msec now) {
    const Server& s = *p.server;
    return s.max_fails && p.fails >= s.max_fails && since(now, p.checked) <= s.fail_timeout.count();
}

}  // namespace

PeerPicker::PeerPicker(UpstreamConf& u, event::Msec now)
    : u_(u), now_(now), tried_(u.peers.size(), false) {}

Peer* PeerPicker::take(Peer* p) {
    tried_[static_cast<size_t>(p - u_.peers.data())] = true;
    ++tried_count_;
    ++p->conns;
    return p;
}

Peer* PeerPicker::pick(size_t begin, size_t end) {
    Peer* best = nullptr;
    int64_t total = 0;
    for (size_t i = begin; i < end; ++i) {
        Peer& p = u_.peers[i];
        const Server& s = *p.server;
        if (tried_[i] || s.down || failed_recently(p, now_)) continue;
        if (s.max_conns && p.conns >= s.max_conns) continue;
        p.current_weight += p.effective_weight;
        total += p.effective_weight;
        if (p.effective_weight < static_cast<int64_t>(s.weight)) ++p.effective_weight;
        if (!best || p.current_weight > best->current_weight) best = &p;
    }
    if (!best) return nullptr;
    best->current_weight -= total;
    // Picked after its fail_timeout: this request probes it. Moving
    // `checked` keeps other requests off it until the probe ends or
    // fail_timeout passes again; success then clears its failures (done).
    if (since(now_, best->checked) > best->server->fail_timeout.count()) best->checked = now_;
    return best;
}

Peer* PeerPicker::next() {
    if (u_.peers.empty()) return nullptr;
    if (u_.single()) {
        // One primary and no backup: never considered unavailable, so
        // max_fails does not apply; still down and max_conns do [nginx].
        Peer& p = u_.peers[0];
        const Server& s = *p.server;
        if (tried_[0] || s.down || (s.max_conns && p.conns >= s.max_conns)) return nullptr;
        return take(&p);
    }
    if (!backup_) {
        if (Peer* p = pick(0, u_.backup_start)) return take(p);
        if (u_.backup_start == u_.peers.size()) return nullptr;
        // No usable primary: this request goes on with the backups only.
        backup_ = true;
    }
    Peer* p = pick(u_.backup_start, u_.peers.size());
    return p ? take(p) : nullptr;
}

void PeerPicker::done(Peer* p, bool failed, event::Msec now) {
    if (!p) return;
    if (p->conns) --p->conns;
    if (u_.single()) return;
    const Server& s = *p->server;
    if (!failed) {
        // A success after a probe (checked moved past the last failure)
        // makes the peer fully available again.
        if (p->accessed < p->checked) p->fails = 0;
        return;
    }
    ++p->fails;
    p->accessed = now;
    p->checked = now;
    if (s.max_fails) {
        p->effective_weight -= s.weight / s.max_fails;
        if (p->fails >= s.max_fails)
            GH_LOG(Warn,
                   "upstream server temporarily disabled while connecting to upstream, "
                   "upstream: \"%s\"",
                   p->text.c_str());
    }
    if (p->effective_weight < 0) p->effective_weight = 0;
}

}  // namespace gatehouse::upstream
