// limit_conn_module: concurrent requests per key, counted across every
// worker [nginx ngx_http_limit_conn_module; the code is ours].
//
//     limit_conn_zone $binary_remote_addr zone=addr:10m;
//     limit_conn addr 10;
//
// Preaccess phase, after limit_req (module order, as nginx). Each key's
// record in the zone's shared table (http/limit_table.h) counts the
// requests holding it; a request takes one count per limit of its
// location, or is refused with limit_conn_status when a count is at its
// limit. The counts are given back when the request ends, however it
// ends (response written, client gone, worker shutting down): a Hold in
// the request arena gives its count back from its destructor, and the
// record goes with its last count. A worker that crashes cannot give its
// counts back (as in nginx): those keys stay counted until the zone is
// reset by a restart or a resize; a worker killed holding the zone's
// lock resets the zone for everyone (LimitTable::Lock).
//
// A request is limited once: after an internal redirect the handler
// finds Request::limit_conn_status set and declines.
//
// "limit_conn_zone ... sync=NAME" (http/limit_sync.h) adds the other
// nodes' count of the key (Node::remote, from Redis) to the node's own;
// such a zone's records stay at count 0 until the sync sent the 0.
#include <ctime>
#include <string>
#include <vector>

#include "conf/values.h"
#include "core/shm.h"
#include "http/core_module.h"
#include "http/limit_conf.h"
#include "http/limit_sync.h"
#include "http/limit_table.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module limit_conn_module;

namespace {

// A "limit_conn_zone"; owner: the generation arena.
struct ConnZone {
    std::string name;
    ComplexValue key;
    LimitTable table;
    SyncConf sync;      // sync=, fail=
    std::string where;  // file:line, for an unknown sync= block
};

struct LimitConnMain {
    std::vector<ConnZone*> zones;  // "limit_conn_zone", in order
};

struct ConnLimit {
    ConnZone* zone = nullptr;
    uint32_t conn = 0;
};

struct LimitConnConf {
    // "limit_conn": a level with any inherits none [nginx].
    std::vector<ConnLimit> limits;
    std::optional<int> status;            // "limit_conn_status", 503
    std::optional<log::Level> log_level;  // "limit_conn_log_level", error
    std::optional<bool> dry_run;          // "limit_conn_dry_run", off
};

void merge(const LimitConnConf& up, LimitConnConf& c) {
    if (c.limits.empty()) c.limits = up.limits;
    conf::inherit(c.status, up.status, 503);
    conf::inherit(c.log_level, up.log_level, log::Level::Error);
    conf::inherit(c.dry_run, up.dry_run, false);
}

enum ConnStatus : uint8_t { kPassed = 1, kRejected, kRejectedDryRun };

// nginx keeps a key's length in a byte.
constexpr size_t kMaxKey = 255;

// One count taken by a request; in its arena, given back by the
// destructor (the request's end) or by give_back() (a later limit of the
// same request refused it). `node` lives in the zone, mapped at one
// address in every process, while its count is held.
// A record checked or changed: a synced zone's next batch sends it
// (http/limit_sync.h); it becomes the newest, where the sync looks.
void mark(LimitTable& t, LimitTable::Node* n) {
    t.touch(n);
    n->seen = t.next_seq();
    n->dirty = 1;
}

struct Hold {
    Hold(LimitTable& t, LimitTable::Node* n, bool synced) : table(&t), node(n), synced(synced) {}
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { give_back(); }
    void give_back() {
        if (!node) return;
        LimitTable::Lock lock(*table);
        // A zone reset (a process died holding the lock) dropped every
        // record: nothing to give back then.
        if (table->find(node->hash, node->key()) == node && node->count > 0) {
            --node->count;
            // A synced zone's record stays at 0 until the sync told
            // Redis (the sync erases it then).
            if (synced) mark(*table, node);
            else if (node->count == 0) table->erase(node);
        }
        node = nullptr;
    }
    LimitTable* table;
    LimitTable::Node* node;
    bool synced;
};

enum class Take : uint8_t { Taken, Full, NoRoom, Unsynced };

Take take(ConnZone& z, uint32_t limit, std::string_view key, LimitTable::Node** out) {
    // fail=closed: no fleet count, no request.
    if (z.sync.fail_closed && z.table.sync_down()) return Take::Unsynced;
    const uint64_t hash = LimitTable::hash_key(key);
    LimitTable::Lock lock(z.table);
    LimitTable::Node* n = z.table.find(hash, key);
    if (!n) {
        n = z.table.insert(hash, key);
        if (!n) return Take::NoRoom;
    }
    const bool synced = z.sync.synced();
    if (synced) mark(z.table, n);
    // With sync=, the other nodes' count too, as Redis last said; not
    // while Redis is away (fail=open: the node's own limit).
    const uint32_t remote = synced && !z.table.sync_down() ? n->remote : 0;
    if (n->count + remote >= limit) return Take::Full;
    ++n->count;
    *out = n;
    return Take::Taken;
}

Next run_limit_conn(Request& r) {
    // A subrequest (auth_request) runs inside its parent, already counted.
    if (r.limit_conn_status || r.parent) return Next::Decline;
    const LimitConnConf& c = r.loc_conf<LimitConnConf>(limit_conn_module);
    if (c.limits.empty()) return Next::Decline;

    const size_t nlimits = c.limits.size();
    auto** holds = static_cast<Hold**>(r.arena().alloc(sizeof(Hold*) * nlimits, alignof(Hold*)));
    for (size_t i = 0; i < nlimits; ++i) {
        holds[i] = nullptr;
        const ConnLimit& l = c.limits[i];
        std::string_view key = l.zone->key.eval(r);
        if (key.empty()) continue;  // not limited
        if (key.size() > kMaxKey) {
            log_for_request(r, log::Level::Error, 0,
                            "the value of the \"" + l.zone->key.text() + "\" key is more than 255 bytes: \"" +
                                std::string(key) + "\"");
            continue;
        }
        r.limit_conn_status = kPassed;
        LimitTable::Node* n = nullptr;
        const Take t = take(*l.zone, l.conn, key, &n);
        if (t == Take::Taken) {
            holds[i] = r.arena().make<Hold>(l.zone->table, n, l.zone->sync.synced());
            continue;
        }
        if (t == Take::Full)
            log_for_request(r, *c.log_level, 0,
                            std::string("limiting connections") + (*c.dry_run ? ", dry run," : "") + " by zone \"" +
                                l.zone->name + "\"");
        else if (t == Take::Unsynced)
            log_for_request(r, *c.log_level, 0,
                            std::string("limiting connections") + (*c.dry_run ? ", dry run," : "") +
                                " redis unreachable (fail=closed) by zone \"" + l.zone->name + "\"");
        else
            log_for_request(r, log::Level::Alert, 0, "could not allocate node in limit_conn zone \"" + l.zone->name + "\"");
        // What this request took from the other limits goes back now.
        for (size_t j = 0; j < i; ++j)
            if (holds[j]) holds[j]->give_back();
        if (*c.dry_run) {
            r.limit_conn_status = kRejectedDryRun;
            return Next::Decline;
        }
        r.limit_conn_status = kRejected;
        return respond_status(r, *c.status);
    }
    return Next::Decline;
}

void v_limit_conn_status(Request& r, VarValue& v, uintptr_t) {
    static constexpr std::string_view kNames[] = {"", "PASSED", "REJECTED", "REJECTED_DRY_RUN"};
    if (r.limit_conn_status == 0 || r.limit_conn_status > kRejectedDryRun) {
        v.not_found = true;
        return;
    }
    v.s = kNames[r.limit_conn_status];
}

// ---- directives ---------------------------------------------------------------

using conf::Ctx;
using Conf = conf::Node;

Status set_zone(Ctx& cx, const Conf& n, LimitConnMain& m) {
    auto key = ComplexValue::compile(cx, n, n.args[0].text);
    if (!key) return key.error();
    const std::string& a = n.args[1].text;
    if (a.substr(0, 5) != "zone=") return cx.error(n, "invalid parameter \"" + a + "\"");
    auto zone = limit_conf::parse_zone(a);
    if (!zone) return cx.error(n, zone.error().message);
    for (const ConnZone* z : m.zones)
        if (z->name == zone->name)
            return cx.error(n, "limit_conn_zone \"" + zone->name + "\" is already bound to key \"" + z->key.text() + "\"");
    SyncConf sync;
    for (size_t i = 2; i < n.args.size(); ++i) {
        auto sy = parse_sync_arg(n.args[i].text, sync);
        if (!sy) return cx.error(n, sy.error().message);
        if (!*sy) return cx.error(n, "invalid parameter \"" + n.args[i].text + "\"");
    }
    auto table = limit_conf::open_zone(cx, n, *zone, &limit_conn_module, "limit_conn_zone", key->text());
    if (!table) return table.error();
    ConnZone* z = cx.arena().make<ConnZone>();
    z->name = zone->name;
    z->key = std::move(*key);
    z->table = std::move(*table);
    z->sync = std::move(sync);
    z->where = n.where();
    m.zones.push_back(z);
    return {};
}

Status set_limit(Ctx& cx, const Conf& n, LimitConnConf& c) {
    const LimitConnMain* m = cx.conf<LimitConnMain>(limit_conn_module, conf::Level::Main);
    const std::string& name = n.args[0].text;
    ConnLimit l;
    if (m)
        for (ConnZone* z : m->zones)
            if (z->name == name) l.zone = z;
    if (!l.zone) return cx.error(n, "unknown limit_conn_zone \"" + name + "\"");
    auto num = conf::parse_number(n.args[1].text);
    if (!num || *num == 0) return cx.error(n, "invalid number of connections \"" + n.args[1].text + "\"");
    if (*num > 65535) return cx.error(n, "connection limit must be less 65536");
    l.conn = static_cast<uint32_t>(*num);
    for (const ConnLimit& o : c.limits)
        if (o.zone == l.zone) return cx.duplicate(n);
    c.limits.push_back(l);
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"limit_conn_zone", conf::kHttp, conf::Arity{2, 4, false}, conf::custom<set_zone>()},
    {"limit_conn", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_limit>()},
    {"limit_conn_status", conf::kHttpSrvLoc, conf::Take1,
     conf::custom<limit_conf::set_status<LimitConnConf, &LimitConnConf::status>>()},
    {"limit_conn_log_level", conf::kHttpSrvLoc, conf::Take1,
     conf::custom<limit_conf::set_log_level<LimitConnConf, &LimitConnConf::log_level>>()},
    {"limit_conn_dry_run", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LimitConnConf::dry_run>()},
};

// sync=NAME names a "redis" block anywhere at the http level.
Status postconfiguration(Ctx& cx) {
    auto* m = cx.conf<LimitConnMain>(limit_conn_module, conf::Level::Main);
    if (!m) return {};
    for (ConnZone* z : m->zones)
        if (auto s = resolve_sync(cx, z->sync, z->where); !s) return s;
    return {};
}

Status init_worker(const conf::Roots& g, int slot) {
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    auto* m = main ? static_cast<LimitConnMain*>(main[limit_conn_module.index]) : nullptr;
    if (!m) return {};
    for (ConnZone* z : m->zones)
        if (z->sync.synced()) start_sync(z->table, z->sync, z->name, 0, slot);
    return {};
}

bool limit_conn_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return !static_cast<const LimitConnConf*>(loc[limit_conn_module.index])->limits.empty();
}

constexpr PhaseHandler kPhases[] = {{Phase::Preaccess, run_limit_conn, limit_conn_wanted}};

constexpr VariableDef kVariables[] = {
    {"limit_conn_status", v_limit_conn_status, 0, kVarNoCache},
};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

}  // namespace

extern const conf::Module limit_conn_module{
    .name = "limit_conn",
    .directives = kDirectives,
    .main = conf::level<LimitConnMain>(),
    .loc = conf::level<LimitConnConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .init_worker = init_worker,
    .quit_worker = pause_all_syncs,
    .exit_worker = stop_all_syncs,
};

}  // namespace gatehouse::http
