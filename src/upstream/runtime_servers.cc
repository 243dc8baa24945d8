// Run-time servers: what the upstream API (src/http/modules/api.cc) lists,
// adds, changes and removes, and the state file that keeps them.
//
// A group with a zone has its configured peers and, after them in each
// tier, the slots of its `api` servers (upstream.cc, add_api_slots). All
// of a peer's parameters are in the zone (PeerParams) and every method
// reads them there, so a change is one store under the group's lock that
// every worker sees at its next pick; a slot's address changes while the
// slot is free only, and the zone's generation tells each worker to
// refresh its copy (sync_peers, dynamic.cc).
//
// A change is applied whole or not at all: everything it asks is checked
// first, then the group's server list as it will be is written to the
// state file (when the group has one), and only then is the zone
// changed. All of it under the group's lock, so two workers changing one
// group take turns, and the file always says what the zone holds.
//
// Removing a server never cuts its requests: an added server's slot
// drains (no new request; reused once its connections, every worker's,
// are done), a configured server is marked removed. A reload that keeps
// the group's record keeps all of it; a changed group starts from its
// configuration (and state file) again.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

SlotState slot_state(const Peer& p) {
    return p.slot ? static_cast<SlotState>(p.slot->state.load(kRelaxed)) : SlotState::Fixed;
}

// A server the API lists: a configured peer not removed, or a slot with
// an address (a draining one is gone from the list: a zombie).
bool listed(const Peer& p) {
    if (p.params && (p.params->flags.load(kRelaxed) & kPeerRemoved)) return false;
    const SlotState st = slot_state(p);
    return st == SlotState::Fixed || st == SlotState::Active;
}

ServerInfo info_of(const UpstreamConf& u, size_t i, event::Msec now) {
    const Peer& p = u.peers[i];
    const PeerState& st = p.st();
    ServerInfo s;
    s.id = p.params ? p.params->id.load(kRelaxed) : static_cast<uint32_t>(i);
    s.server = p.text;
    s.name = p.server->api ? p.text : p.server->name;
    s.weight = peer_weight(p);
    s.max_conns = peer_max_conns(p);
    s.max_fails = peer_max_fails(p);
    s.fail_timeout_ms = peer_fail_timeout(p);
    s.slow_start_ms = peer_slow_start(p);
    s.backup = i >= u.backup_start;
    const uint32_t flags = peer_flags(p);
    s.down = flags & kPeerDown;
    s.drain = flags & kPeerDrain;
    s.active = st.conns.load(kRelaxed);
    s.requests = st.picks.load(kRelaxed);
    s.fails = st.fails.load(kRelaxed);
    s.totals = p.totals;
    s.last_check_passed = st.hc_passes.load(kRelaxed) > 0;
    const auto health = static_cast<Health>(st.health.load(kRelaxed));
    const bool failed = s.max_fails && s.fails >= s.max_fails &&
                        static_cast<int64_t>(now) - static_cast<int64_t>(st.checked.load(kRelaxed)) <= s.fail_timeout_ms;
    if (s.down) s.state = "down";
    else if (s.drain) s.state = "draining";
    else if (u.health && health == Health::Down) s.state = "unhealthy";
    else if (u.health && health == Health::Unchecked) s.state = "checking";
    else if (failed && !u.single()) s.state = "unavail";
    return s;
}

// Under the group's lock, synced.
std::vector<ServerInfo> listing(const UpstreamConf& u, event::Msec now) {
    std::vector<ServerInfo> out;
    for (size_t i = 0; i < u.peers.size(); ++i)
        if (listed(u.peers[i])) out.push_back(info_of(u, i, now));
    std::sort(out.begin(), out.end(), [](const ServerInfo& a, const ServerInfo& b) { return a.id < b.id; });
    return out;
}

// The peer index of listed server `id`, or peers.size().
size_t find_id(const UpstreamConf& u, uint32_t id) {
    for (size_t i = 0; i < u.peers.size(); ++i)
        if (listed(u.peers[i]) && u.peers[i].params && u.peers[i].params->id.load(kRelaxed) == id) return i;
    return u.peers.size();
}

ApiError error(int status, std::string code, std::string text) {
    return ApiError{status, std::move(code), std::move(text)};
}

std::string errno_text(int e) { return std::to_string(e) + ": " + std::strerror(e); }

// The state file's text for `servers`: server lines, as the configuration
// would have them.
std::string state_text(const std::vector<ServerInfo>& servers) {
    std::string out;
    for (const ServerInfo& s : servers) {
        out += "server " + s.server + " weight=" + std::to_string(s.weight) +
               " max_conns=" + std::to_string(s.max_conns) + " max_fails=" + std::to_string(s.max_fails) +
               " fail_timeout=" + duration_text(s.fail_timeout_ms) + " slow_start=" + duration_text(s.slow_start_ms);
        if (s.backup) out += " backup";
        if (s.down) out += " down";
        if (s.drain) out += " drain";
        out += ";\n";
    }
    return out;
}

// Rewrites u's state file to hold `servers`; nothing for a group
// without one. In place (the master made the file the workers' at
// load; they cannot make files in its directory): the whole text in one
// write, then the file cut to it.
ApiError write_state(const UpstreamConf& u, const std::vector<ServerInfo>& servers) {
    if (u.state_path.empty()) return {};
    const std::string text = state_text(servers);
    const int fd = ::open(u.state_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        const int e = errno;
        GH_LOG(Crit, "open() \"%s\" failed (%s)", u.state_path.c_str(), errno_text(e).c_str());
        return error(500, "UpstreamStateFileError", "state file \"" + u.state_path + "\" cannot be written (" + errno_text(e) + ")");
    }
    ssize_t n = ::pwrite(fd, text.data(), text.size(), 0);
    const int e = n < 0 ? errno : 0;
    const bool ok = n == static_cast<ssize_t>(text.size()) && ::ftruncate(fd, static_cast<off_t>(text.size())) == 0;
    const int e2 = ok ? 0 : (e ? e : errno);
    ::close(fd);
    if (!ok) {
        GH_LOG(Crit, "write() to \"%s\" failed (%s)", u.state_path.c_str(), errno_text(e2).c_str());
        return error(500, "UpstreamStateFileError", "state file \"" + u.state_path + "\" cannot be written (" + errno_text(e2) + ")");
    }
    return {};
}

// The stores of a server's parameters in the zone.
void store_params(Peer& p, const ServerChange& c) {
    PeerParams& pp = *p.params;
    if (c.weight) {
        pp.weight.store(*c.weight, kRelaxed);
        // The new weight counts from the next pick on [the smooth round
        // robin's effective weight climbs back to the weight otherwise].
        p.st().effective_weight.store(*c.weight, kRelaxed);
    }
    if (c.max_conns) pp.max_conns.store(*c.max_conns, kRelaxed);
    if (c.max_fails) pp.max_fails.store(*c.max_fails, kRelaxed);
    if (c.fail_timeout_ms) pp.fail_timeout_ms.store(*c.fail_timeout_ms, kRelaxed);
    if (c.slow_start_ms) pp.slow_start_ms.store(*c.slow_start_ms, kRelaxed);
    uint32_t flags = pp.flags.load(kRelaxed);
    if (c.down) flags = *c.down ? flags | kPeerDown : flags & ~kPeerDown;
    if (c.drain) flags = *c.drain ? flags | kPeerDrain : flags & ~kPeerDrain;
    pp.flags.store(flags, kRelaxed);
}

void apply_to_info(ServerInfo& s, const ServerChange& c) {
    if (c.weight) s.weight = *c.weight;
    if (c.max_conns) s.max_conns = *c.max_conns;
    if (c.max_fails) s.max_fails = *c.max_fails;
    if (c.fail_timeout_ms) s.fail_timeout_ms = *c.fail_timeout_ms;
    if (c.slow_start_ms) s.slow_start_ms = *c.slow_start_ms;
    if (c.down) s.down = *c.down;
    if (c.drain) s.drain = *c.drain;
}

// A free slot of the `api` server of the tier (backup or not), or one
// drained dry; peers.size() when none is left.
size_t free_slot(const UpstreamConf& u, bool backup) {
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < u.peers.size(); ++i) {
            const Peer& p = u.peers[i];
            if (!p.server->api || (p.server->backup != 0) != backup) continue;
            const SlotState st = slot_state(p);
            if (st == SlotState::Free) return i;
            if (pass == 1 && st == SlotState::Draining && p.st().conns.load(kRelaxed) == 0) return i;
        }
    }
    return u.peers.size();
}

bool has_api_tier(const UpstreamConf& u, bool backup) {
    for (const Server& s : u.servers)
        if (s.api && (s.backup != 0) == backup) return true;
    return false;
}

// Takes slot i for address `sa` with parameters `c`, a fresh state and
// the next id. Under the lock.
void fill_slot(UpstreamConf& u, size_t i, const sockaddr_storage& sa, socklen_t len, const ServerChange& c,
               event::Msec now) {
    Peer& p = u.peers[i];
    PeerParams& pp = *p.params;
    pp.weight.store(c.weight.value_or(1), kRelaxed);
    pp.max_conns.store(c.max_conns.value_or(0), kRelaxed);
    pp.max_fails.store(c.max_fails.value_or(1), kRelaxed);
    pp.fail_timeout_ms.store(c.fail_timeout_ms.value_or(10000), kRelaxed);
    pp.slow_start_ms.store(c.slow_start_ms.value_or(0), kRelaxed);
    pp.flags.store((c.down.value_or(false) ? kPeerDown : 0) | (c.drain.value_or(false) ? kPeerDrain : 0), kRelaxed);
    pp.id.store(u.zone_group->next_id.fetch_add(1, kRelaxed), kRelaxed);
    PeerState& st = p.st();
    st = PeerState();
    st.effective_weight.store(pp.weight.load(kRelaxed), kRelaxed);
    if (pp.slow_start_ms.load(kRelaxed) > 0) st.slow_start_from.store(now ? now : 1, kRelaxed);
    p.slot->sa = sa;
    p.slot->sa_len = len;
    p.slot->state.store(static_cast<uint32_t>(SlotState::Active), kRelaxed);
}

}  // namespace

std::string duration_text(int64_t ms) {
    if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

std::vector<ServerInfo> list_servers(UpstreamConf& u, event::Msec now) {
    GroupLock lock(u);
    sync_peers(u);
    return listing(u, now);
}

size_t zombies(UpstreamConf& u) {
    GroupLock lock(u);
    size_t n = 0;
    for (const Peer& p : u.peers) {
        const bool gone = slot_state(p) == SlotState::Draining ||
                          (p.params && (p.params->flags.load(kRelaxed) & kPeerRemoved));
        if (gone && p.st().conns.load(kRelaxed) > 0) ++n;
    }
    return n;
}

ApiError add_server(UpstreamConf& u, const ServerChange& c, event::Msec now, ServerInfo& out) {
    if (!u.zone_group) return error(400, "UpstreamStatic", "upstream is static");
    if (!c.server) return error(400, "UpstreamConfFormatError", "missing \"server\" argument");
    conf::AddressRules rules;
    rules.default_port = 80;
    auto a = conf::parse_address(*c.server, rules);
    if (!a) return error(400, "UpstreamBadAddress", a.message());
    // The worker never blocks on a lookup (STYLE.md, section 5); names
    // would need the resolver's run-time machinery: an address only.
    if (a->kind == conf::Address::Kind::Name)
        return error(400, "UpstreamBadAddress", "server \"" + *c.server + "\" is not an address");
    const bool backup = c.backup.value_or(false);
    if (backup && !has_api_tier(u, true)) return error(400, "UpstreamNoBackup", "upstream \"" + u.name + "\" has no backup");
    sockaddr_storage sa{};
    std::memcpy(&sa, &a->sa, a->sa_len);
    const std::string text = a->kind == conf::Address::Kind::Unix
                                 ? a->text()
                                 : conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&sa));

    GroupLock lock(u);
    sync_peers(u);
    std::vector<ServerInfo> now_list = listing(u, now);
    for (const ServerInfo& s : now_list)
        if (s.server == text) return error(409, "EntryExists", "server \"" + text + "\" exists in upstream \"" + u.name + "\"");
    const size_t at = free_slot(u, backup);
    if (at == u.peers.size()) return error(400, "UpstreamOutOfMemory", "upstream \"" + u.name + "\" memory exhausted");

    ServerInfo will;
    will.id = u.zone_group->next_id.load(kRelaxed);
    will.server = text;
    will.backup = backup;
    apply_to_info(will, c);
    now_list.push_back(will);
    if (ApiError e = write_state(u, now_list)) return e;

    fill_slot(u, at, sa, a->sa_len, c, now);
    u.zone_group->generation.fetch_add(1, kRelaxed);
    sync_peers(u);
    out = info_of(u, at, now);
    GH_LOG(Notice, "upstream \"%s\": server \"%s\" added (id %u)", u.name.c_str(), text.c_str(), out.id);
    return {};
}

ApiError change_server(UpstreamConf& u, uint32_t id, const ServerChange& c, event::Msec now, ServerInfo& out) {
    if (!u.zone_group) return error(400, "UpstreamStatic", "upstream is static");
    GroupLock lock(u);
    sync_peers(u);
    const size_t i = find_id(u, id);
    if (i == u.peers.size()) return error(404, "UpstreamServerNotFound", "server not found");
    Peer& p = u.peers[i];
    if (c.server && *c.server != p.text)
        return error(400, "UpstreamServerImmutable", "server \"" + std::to_string(id) + "\" address is immutable");
    if (c.backup && *c.backup != (i >= u.backup_start))
        return error(400, "UpstreamServerImmutable", "server \"" + std::to_string(id) + "\" backup is immutable");
    std::vector<ServerInfo> will = listing(u, now);
    for (ServerInfo& s : will)
        if (s.id == id) apply_to_info(s, c);
    if (ApiError e = write_state(u, will)) return e;
    store_params(p, c);
    // The consistent hash ring follows the weights: every worker rebuilds
    // it at its next pick.
    u.zone_group->generation.fetch_add(1, kRelaxed);
    sync_peers(u);
    out = info_of(u, i, now);
    GH_LOG(Notice, "upstream \"%s\": server \"%s\" (id %u) changed", u.name.c_str(), p.text.c_str(), id);
    return {};
}

ApiError remove_server(UpstreamConf& u, uint32_t id) {
    if (!u.zone_group) return error(400, "UpstreamStatic", "upstream is static");
    GroupLock lock(u);
    sync_peers(u);
    const size_t i = find_id(u, id);
    if (i == u.peers.size()) return error(404, "UpstreamServerNotFound", "server not found");
    Peer& p = u.peers[i];
    // A "resolve" server's addresses are the resolver's to change.
    if (p.slot && !p.server->api)
        return error(400, "UpstreamServerImmutable", "server \"" + std::to_string(id) + "\" not removable");
    std::vector<ServerInfo> will = listing(u, 0);
    std::erase_if(will, [&](const ServerInfo& s) { return s.id == id; });
    if (ApiError e = write_state(u, will)) return e;
    if (p.slot) {
        // Its tries in flight finish; the slot is reused once they did.
        const bool busy = p.st().conns.load(kRelaxed) > 0;
        p.slot->state.store(static_cast<uint32_t>(busy ? SlotState::Draining : SlotState::Free), kRelaxed);
    } else {
        p.params->flags.fetch_or(kPeerRemoved, kRelaxed);
    }
    u.zone_group->generation.fetch_add(1, kRelaxed);
    sync_peers(u);
    GH_LOG(Notice, "upstream \"%s\": server \"%s\" (id %u) removed", u.name.c_str(), p.text.c_str(), id);
    return {};
}

Status load_state(UpstreamConf& u) {
    if (u.state_path.empty() || !u.zone_group) return {};
    GroupLock lock(u);
    if (u.zone_group->state_loaded.exchange(1, kRelaxed)) return {};
    for (const UpstreamConf::StateServer& ss : u.state_servers) {
        const Server& s = ss.params;
        const size_t at = free_slot(u, s.backup != 0);
        if (at == u.peers.size())
            return make_error("upstream \"" + u.name + "\" has no room for server \"" + s.name + "\" of state file \"" +
                              u.state_path + "\"");
        ServerChange c;
        c.weight = s.weight;
        c.max_conns = s.max_conns;
        c.max_fails = s.max_fails;
        c.fail_timeout_ms = s.fail_timeout.count();
        c.slow_start_ms = s.slow_start.count();
        c.down = s.down;
        c.drain = s.drain;
        // A reload's state starts as a restart's: no slow start.
        fill_slot(u, at, ss.sa, ss.sa_len, c, 0);
        u.peers[at].st().slow_start_from.store(0, kRelaxed);
    }
    u.zone_group->generation.fetch_add(1, kRelaxed);
    sync_peers(u);
    return {};
}

}  // namespace gatehouse::upstream
