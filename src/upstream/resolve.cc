// "server NAME resolve": the workers resolve the name through the group's
// resolver (event/resolver.h, never blocking) and give its addresses to
// the server's slots (replace_addresses, dynamic.cc), again each time the
// answer expires (its TTL, or the resolver's valid=).
//
// Once for all workers: the expiry and a "being asked until" mark are in
// the zone (ServerDns), and a worker asks only when, under the group's
// lock, the answer has expired and nobody is asking. Every worker has a
// timer that looks at its groups' servers (at the next expiry, at most a
// second apart, so that a name is asked again even if the worker that was
// asking exited), and a pick that finds an answer expired fires it at
// once. The worker that asked applies the answer; the others follow the
// zone's generation at their next pick.
//
// A failed lookup (server failure, timeout...) keeps the addresses and
// asks again when the resolver's negative entry expires, a second later
// at the soonest; "no such name" and "no address" empty the server, as
// nginx: its requests get 502 (or go to the other servers) until the
// name resolves again.
#include <netinet/in.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "event/loop.h"
#include "event/resolver.h"
#include "event/timer.h"
#include "event/worker.h"
#include "upstream/balancer.h"

namespace gatehouse::upstream {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
// The soonest a name is asked again after an answer, and the longest a
// worker waits before looking at its servers again.
constexpr event::Msec kMinRecheckMs = 1000;
constexpr event::Msec kMaxTickMs = 1000;

// One "resolve" server of one group, in this worker.
struct Job {
    UpstreamConf* u = nullptr;  // owner: the generation, alive as long as the worker
    size_t server = 0;          // index in u->servers
    event::ResolveQuery query;
};

struct Resolving {
    std::vector<std::unique_ptr<Job>> jobs;
    event::Timer tick;
    bool running = false;
};

Resolving& resolving() {
    static Resolving r;
    return r;
}

ServerDns& dns_of(Job& j) { return j.u->zone_group->dns()[j.u->servers[j.server].dns_index]; }

std::string joined(const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
}

void arm_tick(event::Msec delay) {
    event::worker_loop().arm(resolving().tick, std::chrono::milliseconds(delay));
}

// Whether this worker is the one to ask for j's name now; marks it asked.
bool claim(Job& j, event::Msec now) {
    GroupLock lock(*j.u);
    ServerDns& d = dns_of(j);
    if (d.expires.load(kRelaxed) > now || d.asking_until.load(kRelaxed) > now) return false;
    // The resolver gives up after resolver_timeout; a second more covers
    // the answer's way back before another worker may ask.
    d.asking_until.store(now + static_cast<event::Msec>(j.u->resolver_timeout.count()) + 1000, kRelaxed);
    return true;
}

void answered(Job* j) {
    UpstreamConf& u = *j->u;
    const Server& s = u.servers[j->server];
    const event::ResolveQuery& q = j->query;
    const event::Msec now = event::worker_loop().now();
    if (q.error == event::ResolveError::None || q.error == event::ResolveError::NxDomain) {
        std::vector<Peer> addrs;
        for (const event::ResolvedAddr& a : q.addrs) {
            Peer p;
            p.sa = a.sa;
            p.sa_len = a.len;
            if (p.sa.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&p.sa)->sin_port = htons(s.port);
            else if (p.sa.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&p.sa)->sin6_port = htons(s.port);
            else continue;
            addrs.push_back(p);
        }
        auto c = replace_addresses(u, s, addrs, now);
        if (c && c->changed()) {
            GH_LOG(Notice, "upstream \"%s\": server \"%s\" resolved: added [%s], removed [%s]", u.name.c_str(),
                   s.name.c_str(), joined(c->added).c_str(), joined(c->removed).c_str());
        }
        if (c && !c->dropped.empty()) {
            GH_LOG(Warn, "upstream \"%s\": server \"%s\" has no free slot for [%s] (max=%zu)", u.name.c_str(),
                   s.name.c_str(), joined(c->dropped).c_str(), s.naddrs);
        }
        if (q.error == event::ResolveError::NxDomain) {
            GH_LOG(Warn, "upstream \"%s\": server \"%s\": \"%s\" could not be resolved (%d: %.*s)", u.name.c_str(),
                   s.name.c_str(), s.host.c_str(), static_cast<int>(q.error),
                   static_cast<int>(event::resolve_strerror(q.error).size()), event::resolve_strerror(q.error).data());
        }
    } else {
        const std::string_view why = event::resolve_strerror(q.error);
        GH_LOG(Error, "upstream \"%s\": server \"%s\": \"%s\" could not be resolved (%d: %.*s), its addresses are kept",
               u.name.c_str(), s.name.c_str(), s.host.c_str(), static_cast<int>(q.error), static_cast<int>(why.size()),
               why.data());
    }
    const event::Msec expires = std::max<event::Msec>(q.valid_until, now + kMinRecheckMs);
    {
        GroupLock lock(u);
        ServerDns& d = dns_of(*j);
        d.expires.store(expires, kRelaxed);
        d.asking_until.store(0, kRelaxed);
    }
    arm_tick(std::min<event::Msec>(expires - now, kMaxTickMs));
}

void ask(Job& j) {
    const Server& s = j.u->servers[j.server];
    event::Resolver& r = event::worker_resolver(*j.u->resolver);
    j.query.done = event::Callback::to<&answered>(&j);
    if (r.resolve(j.query, s.host, j.u->resolver_timeout) == event::Resolve::Done) answered(&j);
}

void on_tick(void*) {
    const event::Msec now = event::worker_loop().now();
    event::Msec next = kMaxTickMs;
    for (auto& j : resolving().jobs) {
        if (j->query.pending()) continue;
        if (claim(*j, now)) {
            ask(*j);
            continue;
        }
        const event::Msec e = dns_of(*j).expires.load(kRelaxed);
        if (e > now) next = std::min(next, e - now);
    }
    if (!resolving().tick.armed()) arm_tick(next);
}

}  // namespace

void start_resolving(UpstreamMainConf* m) {
    if (!m) return;
    Resolving& r = resolving();
    for (UpstreamConf* u : m->upstreams) {
        if (!u->resolves || !u->zone_group || !u->resolver) continue;
        for (size_t i = 0; i < u->servers.size(); ++i) {
            if (!u->servers[i].resolve) continue;
            auto j = std::make_unique<Job>();
            j->u = u;
            j->server = i;
            r.jobs.push_back(std::move(j));
        }
    }
    if (r.jobs.empty()) return;
    r.running = true;
    r.tick.cb = event::Callback{&on_tick, nullptr};
    arm_tick(0);
}

void stop_resolving() {
    Resolving& r = resolving();
    if (!r.running) return;
    r.running = false;
    event::worker_loop().cancel(r.tick);
    r.jobs.clear();  // cancels the lookups in flight
}

void resolve_if_due(const UpstreamConf& u, event::Msec now) {
    Resolving& r = resolving();
    if (!u.resolves || !r.running || !u.zone_group) return;
    for (size_t i = 0; i < u.servers.size(); ++i) {
        if (!u.servers[i].resolve) continue;
        const ServerDns& d = u.zone_group->dns()[u.servers[i].dns_index];
        if (d.expires.load(kRelaxed) <= now && d.asking_until.load(kRelaxed) <= now) {
            arm_tick(0);
            return;
        }
    }
}

}  // namespace gatehouse::upstream
