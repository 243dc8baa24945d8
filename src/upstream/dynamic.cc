// Run-time peer sets: servers whose addresses change without a reload
// ("server NAME resolve", and later the upstream API of issue 17).
//
// The configuration gives such a server a fixed number of peers, its
// slots (Server::naddrs), in UpstreamConf::peers like any other: every
// method, the picker's "tried" bitmap, the health checks and the TLS
// session cache index peers, and a fixed vector keeps those indices and
// the Peer pointers requests hold valid for the generation's life. What
// changes is in the group's zone record: each slot's address and state
// (PeerSlot: free, active, draining) and a generation counter. A change
// is made once, by whoever calls replace_addresses() (one worker, under
// the group's lock); each worker then refreshes its own copies of the
// addresses (Peer::sa, text) and its hash ring when it sees the
// generation move (sync_peers, at pick time, under the same lock).
//
// A slot's address is rewritten only while the slot is free, and a
// draining slot becomes free only once no try uses it (its conns, every
// worker's, is 0): so a Peer a try holds never changes address under it,
// and the state of a peer that stays is never touched.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "core/log.h"
#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

SlotState state_of(const PeerSlot& s) { return static_cast<SlotState>(s.state.load(kRelaxed)); }
void set_state(PeerSlot& s, SlotState v) { s.state.store(static_cast<uint32_t>(v), kRelaxed); }

bool same(const sockaddr_storage& a, socklen_t alen, const sockaddr_storage& b, socklen_t blen) {
    return alen == blen && std::memcmp(&a, &b, alen) == 0;
}

// Only the bytes that name the address count: two sockaddrs of one
// address compare equal whatever the padding held.
void normalize(const sockaddr_storage& in, socklen_t len, sockaddr_storage& out, socklen_t& out_len) {
    out = sockaddr_storage{};
    if (in.ss_family == AF_INET && len >= sizeof(sockaddr_in)) {
        const auto& a = reinterpret_cast<const sockaddr_in&>(in);
        auto& b = reinterpret_cast<sockaddr_in&>(out);
        b.sin_family = AF_INET;
        b.sin_port = a.sin_port;
        b.sin_addr = a.sin_addr;
        out_len = sizeof(sockaddr_in);
    } else if (in.ss_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        const auto& a = reinterpret_cast<const sockaddr_in6&>(in);
        auto& b = reinterpret_cast<sockaddr_in6&>(out);
        b.sin6_family = AF_INET6;
        b.sin6_port = a.sin6_port;
        b.sin6_addr = a.sin6_addr;
        b.sin6_scope_id = a.sin6_scope_id;
        out_len = sizeof(sockaddr_in6);
    } else {
        std::memcpy(&out, &in, std::min<size_t>(len, sizeof out));
        out_len = len;
    }
}

// A fresh state for an address that takes a slot [as a new server: its
// weight, no failures, not checked yet].
void reset_state(Peer& p, event::Msec now) {
    PeerState& st = p.st();
    st = PeerState();
    st.effective_weight.store(peer_weight(p), kRelaxed);
    if (peer_slow_start(p) > 0) st.slow_start_from.store(now ? now : 1, kRelaxed);
}

}  // namespace

size_t first_peer(const UpstreamConf& u, const Server& s) {
    for (size_t i = 0; i < u.peers.size(); ++i)
        if (u.peers[i].server == &s) return i;
    return u.peers.size();
}

void sync_peers(UpstreamConf& u) {
    if (!u.zone_group) return;
    const uint64_t g = u.zone_group->generation.load(kRelaxed);
    if (g == u.seen_generation) return;
    for (Peer& p : u.peers) {
        if (!p.slot) continue;
        const bool live = present(p);
        const bool moved = state_of(*p.slot) != SlotState::Free && !same(p.sa, p.sa_len, p.slot->sa, p.slot->sa_len);
        if (p.live && (!live || moved)) close_idle_to(u, p);
        p.live = live;
        if (!moved) continue;
        p.sa = p.slot->sa;
        p.sa_len = p.slot->sa_len;
        p.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&p.sa));
    }
    size_t primaries = 0, backups = 0;
    for (size_t i = 0; i < u.peers.size(); ++i)
        if (present(u.peers[i])) ++(i < u.backup_start ? primaries : backups);
    // Computed with live_end cleared: tier() gives the whole tiers then.
    u.live_end.clear();
    std::vector<size_t> ends(u.tiers());
    for (size_t k = 0; k < ends.size(); ++k) {
        const auto [begin, end] = u.tier(k);
        ends[k] = begin;
        for (size_t i = begin; i < end; ++i)
            if (present(u.peers[i])) ends[k] = i + 1;
    }
    u.live_end = std::move(ends);
    u.live_primaries = primaries;
    u.live_backups = backups;
    // Every worker builds the same ring from the same slots.
    if (u.method == Method::Hash && u.consistent) build_ring(u);
    u.seen_generation = g;
}

Result<AddressChange> replace_addresses(UpstreamConf& u, const Server& s, const std::vector<Peer>& addrs,
                                        event::Msec now) {
    if (!u.zone_group) return make_error("upstream \"" + u.name + "\" has no zone");
    const size_t begin = first_peer(u, s);
    if (!s.dynamic || begin == u.peers.size())
        return make_error("server \"" + s.name + "\" of upstream \"" + u.name + "\" has no run-time addresses");
    const size_t end = begin + s.naddrs;

    // The wanted addresses, normalized, each once.
    std::vector<std::pair<sockaddr_storage, socklen_t>> want;
    AddressChange out;
    for (const Peer& a : addrs) {
        sockaddr_storage sa;
        socklen_t len = 0;
        normalize(a.sa, a.sa_len, sa, len);
        bool dup = false;
        for (const auto& w : want) dup = dup || same(w.first, w.second, sa, len);
        if (dup) continue;
        want.emplace_back(sa, len);
    }

    GroupLock lock(u);
    std::vector<bool> placed(want.size(), false);
    // Slots that keep their address: active ones stay as they are,
    // draining ones come back with the state they had.
    for (size_t i = begin; i < end; ++i) {
        PeerSlot& slot = *u.peers[i].slot;
        const SlotState st = state_of(slot);
        if (st == SlotState::Free) continue;
        bool keep = false;
        for (size_t k = 0; k < want.size() && !keep; ++k) {
            if (placed[k] || !same(want[k].first, want[k].second, slot.sa, slot.sa_len)) continue;
            placed[k] = keep = true;
        }
        const std::string text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&slot.sa));
        if (keep) {
            if (st == SlotState::Draining) {
                set_state(slot, SlotState::Active);
                out.added.push_back(text);
            }
            continue;
        }
        if (st == SlotState::Active) out.removed.push_back(text);
        // No try in any worker uses it: free at once; else it drains and
        // is freed by a later change, once its conns reached 0.
        set_state(slot, u.peers[i].st().conns.load(kRelaxed) == 0 ? SlotState::Free : SlotState::Draining);
    }
    // New addresses take the free slots, then drained ones.
    for (size_t k = 0; k < want.size(); ++k) {
        if (placed[k]) continue;
        size_t at = end;
        for (size_t i = begin; i < end && at == end; ++i)
            if (state_of(*u.peers[i].slot) == SlotState::Free) at = i;
        for (size_t i = begin; i < end && at == end; ++i)
            if (state_of(*u.peers[i].slot) == SlotState::Draining && u.peers[i].st().conns.load(kRelaxed) == 0)
                at = i;
        const std::string text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&want[k].first));
        if (at == end) {
            out.dropped.push_back(text);
            continue;
        }
        PeerSlot& slot = *u.peers[at].slot;
        slot.sa = want[k].first;
        slot.sa_len = want[k].second;
        reset_state(u.peers[at], now);
        set_state(slot, SlotState::Active);
        out.added.push_back(text);
    }
    u.zone_group->generation.fetch_add(1, kRelaxed);
    sync_peers(u);
    return out;
}

std::vector<std::string> server_addresses(UpstreamConf& u, const Server& s, bool draining) {
    std::vector<std::string> out;
    GroupLock lock(u);
    sync_peers(u);
    const size_t begin = first_peer(u, s);
    for (size_t i = begin; i < u.peers.size() && u.peers[i].server == &s; ++i) {
        const Peer& p = u.peers[i];
        if (!p.slot) {
            out.push_back(p.text);
            continue;
        }
        const SlotState st = state_of(*p.slot);
        if (st == SlotState::Active || (draining && st == SlotState::Draining)) out.push_back(p.text);
    }
    return out;
}

}  // namespace gatehouse::upstream
