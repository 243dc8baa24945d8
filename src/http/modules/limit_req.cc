// limit_req_module: request rate limits per key, shared by every worker
// [nginx ngx_http_limit_req_module; the code is ours].
//
//     limit_req_zone $binary_remote_addr zone=one:10m rate=5r/s;
//     limit_req zone=one burst=10 delay=4;
//
// Preaccess phase. Each key has a leaky bucket (http/limiter.h) in the
// zone's shared table (http/limit_table.h). Every limit_req of the
// location applies; a request refused by one is counted by none. An
// accepted request whose excess passes a limit's delay threshold waits,
// on a loop timer, for the longest of the limits' delays: the worker
// goes on serving others meanwhile, and a client that leaves ends the
// request (Request::abort_on_client_close). A request is limited once:
// after an internal redirect the handler finds Request::limit_req_status
// set and declines.
//
// Zone records are evicted when the zone is full or on the way: each
// check first drops up to two least-recently-used records that are idle
// (a minute unused and leaked to nothing); when a new record finds no
// room, the least recently used one goes whatever its state, and if
// there is still none the request gets limit_req_status, logged at alert.
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "conf/values.h"
#include "core/shm.h"
#include "event/timer.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/limit_conf.h"
#include "http/limit_sync.h"
#include "http/limit_table.h"
#include "http/limiter.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module limit_req_module;

namespace {

using Node = LimitTable::Node;

// A "limit_req_zone"; owner: the generation arena.
struct ReqZone {
    std::string name;
    ComplexValue key;
    int64_t rate = 0;  // thousandths of a request per second
    LimitTable table;
    SyncConf sync;      // sync=, fail=
    std::string where;  // file:line, for an unknown sync= block
};

struct LimitReqMain {
    std::vector<ReqZone*> zones;  // "limit_req_zone", in order
};

struct ReqLimit {
    ReqZone* zone = nullptr;
    int64_t burst = 0;  // thousandths
    int64_t delay = 0;  // thousandths; limiter::kNoDelay for "nodelay"
};

struct LimitReqConf {
    // "limit_req": a level with any inherits none [nginx].
    std::vector<ReqLimit> limits;
    std::optional<int> status;             // "limit_req_status", 503
    std::optional<log::Level> log_level;   // "limit_req_log_level", error
    std::optional<bool> dry_run;           // "limit_req_dry_run", off
};

void merge(const LimitReqConf& up, LimitReqConf& c) {
    if (c.limits.empty()) c.limits = up.limits;
    conf::inherit(c.status, up.status, 503);
    conf::inherit(c.log_level, up.log_level, log::Level::Error);
    conf::inherit(c.dry_run, up.dry_run, false);
}

enum ReqStatus : uint8_t { kPassed = 1, kDelayed, kRejected, kDelayedDryRun, kRejectedDryRun };

// ---- the decision -----------------------------------------------------------

// Drops idle records from the old end of the zone; `force` drops the
// oldest one whatever its state (no room for a new record), unless a
// check holds it.
void expire(ReqZone& z, uint64_t now, bool force) {
    for (int i = force ? 0 : 1; i < 3; ++i) {
        Node* o = z.table.oldest();
        if (!o || o->count) return;
        if (i != 0 && !limiter::expired({o->excess, o->last}, now, z.rate)) return;
        z.table.erase(o);
    }
}

enum class Verdict : uint8_t { Skipped, Held, Accepted, Busy, NoRoom, Unsynced };

// A record checked: the zone's sync (http/limit_sync.h) sends it in its
// next batch, with the requests accepted since (Node::unsynced, counted
// at commit).
void mark(ReqZone& z, Node* n) {
    n->seen = z.table.next_seq();
    n->dirty = 1;
}

// An accepted request, for the sync's next batch: its count and the time
// of the first since the last batch (Redis leaks from then, not from the
// batch's time, see limit_sync.cc).
void count_accepted(Node* n, uint64_t now) {
    if (n->unsynced++ == 0) n->first = now;
}

// One limit's check, under its zone's lock. The last limit of a location
// commits at once (`account`); the others only hold their record until
// every limit said yes, so that a request refused by one is counted by
// none [nginx]. `excess` is what the request would leave.
Verdict check(ReqZone& z, const ReqLimit& l, std::string_view key, uint64_t now, bool account, Node** held,
              int64_t* excess) {
    const uint64_t hash = LimitTable::hash_key(key);
    LimitTable::Lock lock(z.table);
    expire(z, now, false);
    Node* n = z.table.find(hash, key);
    if (n) {
        z.table.touch(n);
        if (z.sync.synced()) mark(z, n);
        const int64_t e = limiter::excess_after({n->excess, n->last}, now, z.rate);
        *excess = e;
        if (limiter::over_burst(e, l.burst)) return Verdict::Busy;
        if (account) {
            limiter::Bucket b{n->excess, n->last};
            limiter::commit(b, e, now);
            n->excess = b.excess;
            n->last = b.last;
            count_accepted(n, now);
            return Verdict::Accepted;
        }
        ++n->count;
        *held = n;
        return Verdict::Held;
    }
    *excess = 0;
    n = z.table.insert(hash, key);
    if (!n) {
        expire(z, now, true);
        n = z.table.insert(hash, key);
        if (!n) return Verdict::NoRoom;
    }
    n->excess = 0;
    n->last = now;
    if (z.sync.synced()) mark(z, n);
    if (account) {
        count_accepted(n, now);
        return Verdict::Accepted;
    }
    n->count = 1;
    *held = n;
    return Verdict::Held;
}

// Whether a held record is still the zone's: a process dying with the
// lock between check() and account() resets the zone (LimitTable::Lock),
// and the record is gone with everything else.
bool still_there(ReqZone& z, Node* n) { return z.table.find(n->hash, n->key()) == n && n->count > 0; }

// Commits a held record and lets it go; its delay.
uint64_t account(ReqZone& z, const ReqLimit& l, Node* n, uint64_t now, int64_t* excess) {
    LimitTable::Lock lock(z.table);
    if (!still_there(z, n)) {
        *excess = 0;
        return 0;
    }
    limiter::Bucket b{n->excess, n->last};
    const int64_t e = limiter::excess_after(b, now, z.rate);
    limiter::commit(b, e, now);
    n->excess = b.excess;
    n->last = b.last;
    count_accepted(n, now);
    // The sync may have taken the record since check() marked it: mark
    // it again, or this count would wait for the key's next check.
    if (z.sync.synced()) {
        z.table.touch(n);
        mark(z, n);
    }
    --n->count;
    *excess = e;
    return limiter::delay_ms(e, l.delay, z.rate);
}

void release(ReqZone& z, Node* n) {
    LimitTable::Lock lock(z.table);
    if (still_there(z, n)) --n->count;
}

std::string excess_text(int64_t e) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%" PRId64 ".%03" PRId64, e / 1000, e % 1000);
    return buf;
}

// Waiting out a delay; in the request arena (its Timer is cancelled if
// the request goes first: the client left).
struct Delay {
    explicit Delay(Request& r) : r(r) { timer.cb = event::Callback::to<&Delay::done>(this); }
    void done() {
        log::Scope s(&r.log_ctx);
        r.abort_on_client_close = false;
        post_resume(r);
    }
    Request& r;
    event::Timer timer;
};

Next run_limit_req(Request& r) {
    // Once per client request: not again after an internal redirect, and
    // not for its subrequests (auth_request), which it already paid for.
    if (r.limit_req_status || r.parent) return Next::Decline;
    const LimitReqConf& c = r.loc_conf<LimitReqConf>(limit_req_module);
    if (c.limits.empty()) return Next::Decline;

    const uint64_t now = event::worker_loop().now();
    const size_t nlimits = c.limits.size();
    auto** held = static_cast<Node**>(r.arena().alloc(sizeof(Node*) * nlimits, alignof(Node*)));
    Verdict v = Verdict::Skipped;
    int64_t excess = 0;
    size_t i = 0, last = 0;
    for (; i < nlimits; ++i) {
        held[i] = nullptr;
        const ReqLimit& l = c.limits[i];
        std::string_view key = l.zone->key.eval(r);
        if (key.empty()) continue;  // not limited
        if (key.size() > LimitTable::kMaxKey) {
            log_for_request(r, log::Level::Error, 0,
                            "the value of the \"" + l.zone->key.text() + "\" key is more than 65535 bytes: \"" +
                                std::string(key) + "\"");
            continue;
        }
        last = i;
        if (l.zone->sync.fail_closed && l.zone->table.sync_down()) {
            v = Verdict::Unsynced;  // fail=closed: no fleet count, no request
            break;
        }
        v = check(*l.zone, l, key, now, i + 1 == nlimits, &held[i], &excess);
        if (v == Verdict::Busy || v == Verdict::NoRoom) break;
    }
    if (v == Verdict::Unsynced) {
        for (size_t j = 0; j < i; ++j)
            if (held[j]) release(*c.limits[j].zone, held[j]);
        log_for_request(r, *c.log_level, 0,
                        std::string("limiting requests") + (*c.dry_run ? ", dry run" : "") +
                            ", redis unreachable (fail=closed) by zone \"" + c.limits[i].zone->name + "\"");
        if (*c.dry_run) {
            r.limit_req_status = kRejectedDryRun;
            return Next::Decline;
        }
        r.limit_req_status = kRejected;
        return respond_status(r, *c.status);
    }
    if (v == Verdict::Skipped) return Next::Decline;

    const bool dry = *c.dry_run;
    if (v == Verdict::Busy || v == Verdict::NoRoom) {
        for (size_t j = 0; j < i; ++j)
            if (held[j]) release(*c.limits[j].zone, held[j]);
        const ReqLimit& l = c.limits[i];
        if (v == Verdict::Busy)
            log_for_request(r, *c.log_level, 0,
                            std::string("limiting requests") + (dry ? ", dry run" : "") +
                                ", excess: " + excess_text(excess) + " by zone \"" + l.zone->name + "\"");
        else
            log_for_request(r, log::Level::Alert, 0, "could not allocate node in limit_req zone \"" + l.zone->name + "\"");
        if (dry) {
            r.limit_req_status = kRejectedDryRun;
            return Next::Decline;
        }
        r.limit_req_status = kRejected;
        return respond_status(r, *c.status);
    }

    // Accepted by all: commit the held ones; the longest delay wins.
    if (v == Verdict::Held) excess = 0;  // the last limit was skipped (an empty key)
    const ReqLimit* by = &c.limits[last];
    uint64_t delay = limiter::delay_ms(excess, by->delay, by->zone->rate);
    for (size_t j = 0; j < nlimits; ++j) {
        if (!held[j]) continue;
        int64_t e = 0;
        const uint64_t d = account(*c.limits[j].zone, c.limits[j], held[j], now, &e);
        if (d > delay) {
            delay = d;
            excess = e;
            by = &c.limits[j];
        }
    }
    if (delay == 0) {
        r.limit_req_status = kPassed;
        return Next::Decline;
    }
    log_for_request(r, limit_conf::lower(*c.log_level), 0,
                    std::string("delaying request") + (dry ? ", dry run" : "") + ", excess: " + excess_text(excess) +
                        ", by zone \"" + by->zone->name + "\"");
    if (dry) {
        r.limit_req_status = kDelayedDryRun;
        return Next::Decline;
    }
    r.limit_req_status = kDelayed;
    Delay* d = r.arena().make<Delay>(r);
    r.abort_on_client_close = true;
    event::worker_loop().arm(d->timer, std::chrono::milliseconds(delay));
    return Next::Suspend;
}

void v_limit_req_status(Request& r, VarValue& v, uintptr_t) {
    static constexpr std::string_view kNames[] = {"", "PASSED", "DELAYED", "REJECTED", "DELAYED_DRY_RUN",
                                                  "REJECTED_DRY_RUN"};
    if (r.limit_req_status == 0 || r.limit_req_status > kRejectedDryRun) {
        v.not_found = true;
        return;
    }
    v.s = kNames[r.limit_req_status];
}

// ---- directives ---------------------------------------------------------------

using conf::Ctx;
using Conf = conf::Node;

bool starts(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// "rate=5r/s", "rate=30r/m": thousandths of a request per second.
Result<int64_t> parse_rate(std::string_view arg) {
    std::string_view v = arg.substr(5);
    int64_t scale = 1;
    if (v.size() > 3 && v.substr(v.size() - 3) == "r/s") {
        v.remove_suffix(3);
    } else if (v.size() > 3 && v.substr(v.size() - 3) == "r/m") {
        v.remove_suffix(3);
        scale = 60;
    }
    auto n = conf::parse_number(v, limiter::kMaxRate / 1000);
    if (!n || *n == 0) return make_error("invalid rate \"" + std::string(arg) + "\"");
    return static_cast<int64_t>(*n) * 1000 / scale;
}

Status set_zone(Ctx& cx, const Conf& n, LimitReqMain& m) {
    auto key = ComplexValue::compile(cx, n, n.args[0].text);
    if (!key) return key.error();
    std::optional<limit_conf::ZoneArg> zone;
    int64_t rate = 1000;
    SyncConf sync;
    for (size_t i = 1; i < n.args.size(); ++i) {
        const std::string& a = n.args[i].text;
        if (starts(a, "zone=")) {
            auto z = limit_conf::parse_zone(a);
            if (!z) return cx.error(n, z.error().message);
            zone = std::move(*z);
        } else if (starts(a, "rate=")) {
            auto r = parse_rate(a);
            if (!r) return cx.error(n, r.error().message);
            rate = *r;
        } else if (auto sy = parse_sync_arg(a, sync); !sy) {
            return cx.error(n, sy.error().message);
        } else if (*sy) {
            continue;
        } else if (a == "sync") {
            // NGINX Plus shares such a zone with the other nodes of a
            // cluster. Without a synchronization configured the zone is
            // this node's alone, which is said rather than left silent.
            GH_LOG(Warn, "\"sync\" of limit_req_zone: zones are not synchronized between nodes, "
                         "the limit applies per node in %s", n.where().c_str());
        } else {
            return cx.error(n, "invalid parameter \"" + a + "\"");
        }
    }
    if (!zone) return cx.error(n, "\"limit_req_zone\" must have \"zone\" parameter");
    for (const ReqZone* z : m.zones)
        if (z->name == zone->name)
            return cx.error(n, "limit_req_zone \"" + zone->name + "\" is already bound to key \"" + z->key.text() + "\"");
    auto table = limit_conf::open_zone(cx, n, *zone, &limit_req_module, "limit_req", key->text());
    if (!table) return table.error();
    ReqZone* z = cx.arena().make<ReqZone>();
    z->name = zone->name;
    z->key = std::move(*key);
    z->rate = rate;
    z->table = std::move(*table);
    z->sync = std::move(sync);
    z->where = n.where();
    m.zones.push_back(z);
    return {};
}

Status set_limit(Ctx& cx, const Conf& n, LimitReqConf& c) {
    const LimitReqMain* m = cx.conf<LimitReqMain>(limit_req_module, conf::Level::Main);
    std::string_view name;
    bool named = false;
    ReqLimit l;
    for (const conf::Arg& arg : n.args) {
        const std::string& a = arg.text;
        if (starts(a, "zone=")) {
            name = std::string_view(a).substr(5);
            named = true;
        } else if (starts(a, "burst=")) {
            auto b = conf::parse_number(std::string_view(a).substr(6), limiter::kMaxBurst / 1000);
            if (!b || *b == 0) return cx.error(n, "invalid burst value \"" + a + "\"");
            l.burst = static_cast<int64_t>(*b) * 1000;
        } else if (starts(a, "delay=")) {
            auto d = conf::parse_number(std::string_view(a).substr(6), limiter::kMaxBurst / 1000);
            if (!d || *d == 0) return cx.error(n, "invalid delay value \"" + a + "\"");
            l.delay = static_cast<int64_t>(*d) * 1000;
        } else if (a == "nodelay") {
            l.delay = limiter::kNoDelay;
        } else {
            return cx.error(n, "invalid parameter \"" + a + "\"");
        }
    }
    if (!named) return cx.error(n, "\"limit_req\" must have \"zone\" parameter");
    if (m)
        for (ReqZone* z : m->zones)
            if (z->name == name) l.zone = z;
    if (!l.zone) return cx.error(n, "unknown limit_req_zone \"" + std::string(name) + "\"");
    for (const ReqLimit& o : c.limits)
        if (o.zone == l.zone) return cx.duplicate(n);
    c.limits.push_back(l);
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"limit_req_zone", conf::kHttp, conf::Arity{3, 6, false}, conf::custom<set_zone>()},
    {"limit_req", conf::kHttpSrvLoc, conf::Take13, conf::custom<set_limit>()},
    {"limit_req_status", conf::kHttpSrvLoc, conf::Take1,
     conf::custom<limit_conf::set_status<LimitReqConf, &LimitReqConf::status>>()},
    {"limit_req_log_level", conf::kHttpSrvLoc, conf::Take1,
     conf::custom<limit_conf::set_log_level<LimitReqConf, &LimitReqConf::log_level>>()},
    {"limit_req_dry_run", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LimitReqConf::dry_run>()},
};

// sync=NAME names a "redis" block anywhere at the http level.
Status postconfiguration(Ctx& cx) {
    auto* m = cx.conf<LimitReqMain>(limit_req_module, conf::Level::Main);
    if (!m) return {};
    for (ReqZone* z : m->zones)
        if (auto s = resolve_sync(cx, z->sync, z->where); !s) return s;
    return {};
}

Status init_worker(const conf::Roots& g, int slot) {
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    auto* m = main ? static_cast<LimitReqMain*>(main[limit_req_module.index]) : nullptr;
    if (!m) return {};
    for (ReqZone* z : m->zones)
        if (z->sync.synced()) start_sync(z->table, z->sync, z->name, z->rate, slot);
    return {};
}

bool limit_req_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return !static_cast<const LimitReqConf*>(loc[limit_req_module.index])->limits.empty();
}

constexpr PhaseHandler kPhases[] = {{Phase::Preaccess, run_limit_req, limit_req_wanted}};

constexpr VariableDef kVariables[] = {
    {"limit_req_status", v_limit_req_status, 0, kVarNoCache},
};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

}  // namespace

extern const conf::Module limit_req_module{
    .name = "limit_req",
    .directives = kDirectives,
    .main = conf::level<LimitReqMain>(),
    .loc = conf::level<LimitReqConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .init_worker = init_worker,
    .quit_worker = pause_all_syncs,
    .exit_worker = stop_all_syncs,
};

}  // namespace gatehouse::http
