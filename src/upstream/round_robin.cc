// PeerPicker: availability, passive health (max_fails, fail_timeout),
// the dispatch to the group's method, and nginx's smooth weighted round
// robin [nginx ngx_http_upstream_round_robin.c].
//
// Each pick adds every usable peer's effective weight to its current
// weight, takes the peer with the largest current weight (the first one on
// a tie) and takes the sum of the effective weights off the winner. Over
// one cycle each peer wins as often as its weight, spread out: weights
// 5, 1, 1 give a a b a c a a. A failure lowers the effective weight by
// weight / max_fails; each pick then raises it by one back toward the
// weight, so a peer that failed recovers its share gradually.
//
// The counters are in PeerState: the zone's when the group has one (all
// workers pick from one sequence, under the group's lock, as nginx with a
// zone), else the worker's own.
#include <cstdint>
#include <cstring>

#include "core/log.h"
#include "upstream/balancer.h"
#include "upstream/sticky.h"
#include "upstream/upstream.h"

namespace gatehouse::upstream {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// Signed: a picker made at `now` may look at a peer another request
// marked failed a moment later (checked > now), which must count as
// recent, not as long ago.
int64_t since(event::Msec now, uint64_t then) {
    return static_cast<int64_t>(now) - static_cast<int64_t>(then);
}

// Failed max_fails times, the last time within fail_timeout: skipped
// until fail_timeout has passed since it was last checked.
bool failed_recently(const Peer& p, event::Msec now) {
    const uint32_t max_fails = peer_max_fails(p);
    const PeerState& st = p.st();
    return max_fails && st.fails.load(kRelaxed) >= max_fails &&
           since(now, st.checked.load(kRelaxed)) <= peer_fail_timeout(p);
}

// Round robin, ip_hash's fallback and the ties of least_conn and
// least_time may use backups; hash, ip_hash and random have none (nginx
// refuses "backup" with them).
bool backups_allowed(Method m) {
    return m == Method::RoundRobin || m == Method::LeastConn || m == Method::LeastTime;
}

}  // namespace

PeerState& PeerState::operator=(const PeerState& o) {
    current_weight.store(o.current_weight.load(kRelaxed), kRelaxed);
    effective_weight.store(o.effective_weight.load(kRelaxed), kRelaxed);
    conns.store(o.conns.load(kRelaxed), kRelaxed);
    fails.store(o.fails.load(kRelaxed), kRelaxed);
    accessed.store(o.accessed.load(kRelaxed), kRelaxed);
    checked.store(o.checked.load(kRelaxed), kRelaxed);
    slow_start_from.store(o.slow_start_from.load(kRelaxed), kRelaxed);
    health.store(o.health.load(kRelaxed), kRelaxed);
    hc_fails.store(o.hc_fails.load(kRelaxed), kRelaxed);
    hc_passes.store(o.hc_passes.load(kRelaxed), kRelaxed);
    ewma_us.store(o.ewma_us.load(kRelaxed), kRelaxed);
    ewma_at.store(o.ewma_at.load(kRelaxed), kRelaxed);
    picks.store(o.picks.load(kRelaxed), kRelaxed);
    return *this;
}

PeerStatus peer_status(const UpstreamConf& u, const Peer& p, event::Msec now) {
    if (p.slot) {
        const auto s = static_cast<SlotState>(p.slot->state.load(kRelaxed));
        if (s == SlotState::Free) return PeerStatus::Vacant;
        if (s == SlotState::Draining) return PeerStatus::Draining;
    }
    if (p.server->down) return PeerStatus::Down;
    if (u.health) {
        const auto h = static_cast<Health>(p.st().health.load(kRelaxed));
        if (h == Health::Down) return PeerStatus::Unhealthy;
        if (h == Health::Unchecked) return PeerStatus::Checking;
    }
    if (!u.single() && failed_recently(p, now)) return PeerStatus::Unavailable;
    return PeerStatus::Up;
}

bool usable(const UpstreamConf& u, const Peer& p, event::Msec now, bool unchecked) {
    // "down", and "drain": no new request (those in flight finish).
    if (peer_flags(p) & (kPeerDown | kPeerDrain)) return false;
    // A free slot has no address; a draining one takes no new try.
    if (!present(p)) return false;
    const PeerState& st = p.st();
    if (u.health) {
        auto h = static_cast<Health>(st.health.load(kRelaxed));
        if (h == Health::Down) return false;
        if (h == Health::Unchecked && (!unchecked || u.health->mandatory)) return false;
    }
    // A group of one is never considered unavailable: max_fails does not
    // apply [nginx].
    if (!u.single() && failed_recently(p, now)) return false;
    const uint32_t max_conns = peer_max_conns(p);
    if (max_conns && st.conns.load(kRelaxed) >= max_conns) return false;
    return true;
}

bool ramp_admits(const UpstreamConf& u, const Peer& p, event::Msec now) {
    const PeerState& st = p.st();
    const uint64_t from = st.slow_start_from.load(kRelaxed);
    if (from == 0) return true;
    const int64_t span = peer_slow_start(p);
    const int64_t in = since(now, from);
    if (span <= 0 || in >= span || u.single()) {
        const_cast<PeerState&>(st).slow_start_from.store(0, kRelaxed);
        return true;
    }
    if (in <= 0) return false;
    return random_unit() * static_cast<double>(span) < static_cast<double>(in);
}

bool Balancers::eligible(PeerPicker& pk, size_t i, Filter f) {
    if (pk.tried_.test(i)) return false;
    const Peer& p = pk.u_.peers[i];
    if (!usable(pk.u_, p, pk.now_, f.unchecked)) return false;
    if (f.ramp && !ramp_admits(pk.u_, p, pk.now_)) {
        pk.ramp_refused_ = true;
        return false;
    }
    return true;
}

Peer* Balancers::round_robin(PeerPicker& pk, size_t begin, size_t end, Filter f,
                             const std::vector<bool>* among) {
    UpstreamConf& u = pk.u_;
    Peer* best = nullptr;
    int64_t total = 0;
    int64_t best_cw = 0;
    for (size_t i = begin; i < end; ++i) {
        if (among ? !(*among)[i] : !eligible(pk, i, f)) continue;
        Peer& p = u.peers[i];
        PeerState& st = p.st();
        const int64_t ew = st.effective_weight.load(kRelaxed);
        const int64_t cw = st.current_weight.load(kRelaxed) + ew;
        st.current_weight.store(cw, kRelaxed);
        total += ew;
        if (ew < static_cast<int64_t>(peer_weight(p))) st.effective_weight.store(ew + 1, kRelaxed);
        if (!best || cw > best_cw) {
            best = &p;
            best_cw = cw;
        }
    }
    if (!best) return nullptr;
    best->st().current_weight.store(best_cw - total, kRelaxed);
    return best;
}

PeerPicker::PeerPicker(UpstreamConf& u, event::Msec now)
    : u_(u), now_(now), tried_(u.peers.size()) {}

void PeerPicker::set_key(std::string_view key) {
    if (u_.method != Method::Hash) return;
    // An empty key hashes nothing: round robin [nginx].
    have_hash_ = !key.empty();
    hash_ = have_hash_ ? hash_bytes(key) : 0;
}

void PeerPicker::set_client(const sockaddr* sa) {
    if (u_.method != Method::IpHash || !sa) return;
    client_len_ = static_cast<uint8_t>(ip_hash_key(sa, client_));
    have_hash_ = client_len_ > 0;
}

void PeerPicker::header_received(Peer* p, event::Msec now) {
    if (!p || u_.method != Method::LeastTime || !u_.least_time_header || sampled_) return;
    Balancers::sample(*this, *p, now);
    sampled_ = true;
}

void PeerPicker::set_sticky(std::string_view id) {
    // Not an id (another server's cookie, a stale format, junk): as if
    // none came. Only the length is checked here: the peers' ids decide.
    if (!u_.sticky || id.size() != sizeof sticky_) return;
    std::memcpy(sticky_, id.data(), sizeof sticky_);
    have_sticky_ = true;
}

// The cookie's server when it may take this request, else null. Under the
// group's lock, after sync_peers (a slot's address, and so its id, is
// this worker's current copy). The ids are computed here rather than
// kept: a dynamic server's slots change address at run time, and a group
// is a handful of peers (an MD5 of a short string each).
Peer* PeerPicker::sticky_choice() {
    const std::string_view want(sticky_, sizeof sticky_);
    for (size_t t = 0; t < u_.tiers(); ++t) {
        const auto [begin, end] = u_.tier(t);
        bool lower_usable = false;
        for (size_t i = begin; i < end; ++i) {
            Peer& p = u_.peers[i];
            if (!present(p) || view(sticky_id(p)) != want) continue;
            // "unchecked": a peer the health checks have not judged yet
            // keeps its sessions, except with "mandatory" (usable()).
            if (!usable(u_, p, now_, true)) return nullptr;
            if (t > 0 && !backups_allowed(u_.method)) return nullptr;
            tier_ = t;
            return &p;
        }
        // Not in this tier. A backup holds its sessions only while the
        // tiers below it have no usable server: once one is back, the
        // clients return to it (and get a new cookie).
        for (size_t i = begin; i < end && !lower_usable; ++i) lower_usable = usable(u_, u_.peers[i], now_, true);
        if (lower_usable) return nullptr;
    }
    return nullptr;
}

Peer* PeerPicker::take(Peer* p) {
    tried_.set(static_cast<size_t>(p - u_.peers.data()));
    ++tried_count_;
    PeerState& st = p->st();
    st.conns.fetch_add(1, kRelaxed);
    st.picks.fetch_add(1, kRelaxed);
    // Picked after its fail_timeout: this request probes it. Moving
    // `checked` keeps other requests off it until the probe ends or
    // fail_timeout passes again; success then clears its failures (done).
    if (since(now_, st.checked.load(kRelaxed)) > peer_fail_timeout(*p))
        st.checked.store(now_, kRelaxed);
    picked_at_ = now_;
    sampled_ = false;
    return p;
}

Peer* PeerPicker::choose(size_t begin, size_t end, bool unchecked) {
    if (begin == end) return nullptr;
    Filter f;
    f.unchecked = unchecked;
    for (;;) {
        ramp_refused_ = false;
        Peer* p = nullptr;
        switch (u_.method) {
            case Method::RoundRobin: p = Balancers::round_robin(*this, begin, end, f); break;
            case Method::LeastConn: p = Balancers::least_conn(*this, begin, end, f); break;
            case Method::IpHash:
            case Method::Hash: p = Balancers::hashed(*this, begin, end, f); break;
            case Method::Random: p = Balancers::random(*this, begin, end, f); break;
            case Method::LeastTime: p = Balancers::least_time(*this, begin, end, f); break;
        }
        // Every candidate was ramping and lost its draw: better a ramping
        // peer than none.
        if (p || !ramp_refused_ || !f.ramp) return p;
        f.ramp = false;
    }
}

Peer* PeerPicker::next() {
    if (u_.peers.empty()) return nullptr;
    GroupLock lock(u_);
    // Another worker may have changed a dynamic server's addresses.
    sync_peers(u_);
    resolve_if_due(u_, now_);
    // "sticky": the cookie's server first, on the first try only; a retry
    // is the method's (the cookie then names whichever server answers).
    if (have_sticky_) {
        have_sticky_ = false;
        if (tried_count_ == 0)
            if (Peer* p = sticky_choice()) {
                note_tier();
                return take(p);
            }
    }
    // With health checks, peers not judged yet come second (and never
    // with "mandatory", where usable() refuses them on both passes).
    const int passes = u_.health && !u_.health->mandatory ? 2 : 1;
    for (;;) {
        const auto [begin, end] = u_.tier(tier_);
        for (int pass = 0; pass < passes; ++pass)
            if (Peer* p = choose(begin, end, pass == 1)) {
                note_tier();
                return take(p);
            }
        if (tier_ + 1 >= u_.tiers() || !backups_allowed(u_.method)) return nullptr;
        // No usable peer in this tier: this request goes on with the next
        // one only.
        ++tier_;
    }
}

// A group's requests moving to another tier is what an operator watching
// a failover wants to see, once per move: the group remembers the tier of
// its last pick (in the zone, for every worker at once; else per worker).
// Called under the group's lock.
void PeerPicker::note_tier() {
    const auto now = static_cast<uint32_t>(tier_);
    uint32_t was;
    if (u_.zone_group) {
        was = u_.zone_group->tier.exchange(now, kRelaxed);
    } else {
        was = u_.local_tier;
        u_.local_tier = now;
    }
    if (was == now || was >= u_.tiers()) return;
    auto name = [&](size_t t) {
        const uint8_t b = u_.peers[u_.tier(t).first].server->backup;
        return b == 0 ? std::string("primary") : "backup=" + std::to_string(b);
    };
    if (now > was)
        GH_LOG(Warn, "upstream \"%s\" switched from its %s servers to its %s servers: no server of a lower tier is usable",
               u_.name.c_str(), name(was).c_str(), name(now).c_str());
    else
        GH_LOG(Notice, "upstream \"%s\" switched back from its %s servers to its %s servers",
               u_.name.c_str(), name(was).c_str(), name(now).c_str());
}

void PeerPicker::done(Peer* p, bool failed, event::Msec now) {
    if (!p) return;
    PeerState& st = p->st();
    // Never below zero, even if a zone was started anew under an old
    // generation's connections.
    uint32_t c = st.conns.load(kRelaxed);
    while (c > 0 && !st.conns.compare_exchange_weak(c, c - 1, kRelaxed)) {
    }
    if (u_.method == Method::LeastTime && !failed && !sampled_) Balancers::sample(*this, *p, now);
    sampled_ = false;
    if (failed && p->totals) p->totals->fails.fetch_add(1, kRelaxed);
    if (u_.single()) return;
    const uint32_t max_fails = peer_max_fails(*p);
    const int64_t slow_start = peer_slow_start(*p);
    if (!failed) {
        // A success after a probe (checked moved past the last failure)
        // makes the peer fully available again.
        if (st.accessed.load(kRelaxed) < st.checked.load(kRelaxed)) {
            const uint32_t had = st.fails.exchange(0, kRelaxed);
            if (max_fails && had >= max_fails) {
                if (slow_start > 0) st.slow_start_from.store(now ? now : 1, kRelaxed);
                GH_LOG(Warn, "upstream server \"%s\" of upstream \"%s\" is available again: a request succeeded after fail_timeout%s",
                       p->text.c_str(), u_.name.c_str(), slow_start > 0 ? ", slow start begins" : "");
            }
        }
        return;
    }
    GroupLock lock(u_);
    const uint32_t fails = st.fails.fetch_add(1, kRelaxed) + 1;
    st.accessed.store(now, kRelaxed);
    st.checked.store(now, kRelaxed);
    // The failure that makes it unavailable, once per period.
    if (p->totals && max_fails && fails == max_fails)
        p->totals->unavailable.fetch_add(1, kRelaxed);
    int64_t ew = st.effective_weight.load(kRelaxed);
    if (max_fails) {
        ew -= peer_weight(*p) / max_fails;
        if (fails >= max_fails)
            GH_LOG(Warn,
                   "upstream server temporarily disabled while connecting to upstream, "
                   "upstream: \"%s\", reason: %u failure%s within fail_timeout %lldms",
                   p->text.c_str(), fails, fails == 1 ? "" : "s",
                   static_cast<long long>(peer_fail_timeout(*p)));
    }
    st.effective_weight.store(ew < 0 ? 0 : ew, kRelaxed);
}

}  // namespace gatehouse::upstream
