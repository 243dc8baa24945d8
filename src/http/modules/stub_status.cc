// stub_status: nginx's page of connection counts, and the
// $connections_active/reading/writing/waiting variables, summed over every
// worker from the shared counters (http/stats.h).
//
// This module also owns the counters' zone: every generation with an http
// block declares it (postconfiguration, before metrics_module's, which
// finds it there), whether or not it shows the page, so that counting
// never stops across reloads; each worker picks its slot in init_worker.
// The zone's tables are sized by "status_zones_max" and
// "status_peers_max" (http level), read here for that reason.
#include <charconv>
#include <string>

#include "conf/registry.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/stats.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module stub_status_module;

namespace {

struct StubStatusMain {
    stats::Area* area = nullptr;  // owner: the registry, for the generation's life
    std::optional<uint32_t> zones_max;  // "status_zones_max"
    std::optional<uint32_t> peers_max;  // "status_peers_max"
};

// A table size, bounded: nginx's words for a number out of bounds.
Status set_limit(conf::Ctx& cx, const conf::Node& n, std::optional<uint32_t>& out, uint32_t most) {
    if (out) return cx.duplicate(n);
    auto v = conf::parse_number(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    if (*v < 1 || *v > most) return cx.error(n, "value must be between 1 and " + std::to_string(most));
    out = static_cast<uint32_t>(*v);
    return {};
}

Status set_zones_max(conf::Ctx& cx, const conf::Node& n, StubStatusMain& m) {
    return set_limit(cx, n, m.zones_max, stats::Limits::kMostZones);
}

Status set_peers_max(conf::Ctx& cx, const conf::Node& n, StubStatusMain& m) {
    return set_limit(cx, n, m.peers_max, stats::Limits::kMostPeers);
}

struct StubStatusConf {
    std::optional<bool> enabled;  // "stub_status"
};

void merge(const StubStatusConf& up, StubStatusConf& c) { conf::inherit(c.enabled, up.enabled, false); }

Status set_stub_status(conf::Ctx& cx, const conf::Node& n, StubStatusConf& c) {
    if (c.enabled) return cx.duplicate(n);
    // "stub_status on" is what nginx before 1.7.5 took; the argument is
    // ignored, as there.
    (void)n;
    c.enabled = true;
    return {};
}

void append_number(std::string& out, int64_t v) {
    char b[24];
    auto [end, ec] = std::to_chars(b, b + sizeof b, v);
    (void)ec;
    out.append(b, end);
}

Next run_stub_status(Request& r) {
    if (!*r.loc_conf<StubStatusConf>(stub_status_module).enabled) return Next::Decline;
    if (r.in.method != Method::Get && r.in.method != Method::Head) return respond_status(r, 405);
    const stats::ConnTotals t = stats::conn_totals(stats::current());
    // nginx's page, byte for byte: tools parse it with fixed patterns.
    std::string page;
    page.reserve(128);
    page += "Active connections: ";
    append_number(page, t.active);
    page += " \nserver accepts handled requests\n ";
    append_number(page, static_cast<int64_t>(t.accepted));
    page += ' ';
    append_number(page, static_cast<int64_t>(t.handled));
    page += ' ';
    append_number(page, static_cast<int64_t>(t.requests));
    page += " \nReading: ";
    append_number(page, t.reading);
    page += " Writing: ";
    append_number(page, t.writing);
    page += " Waiting: ";
    append_number(page, t.waiting());
    page += " \n";
    r.out.status = 200;
    r.out.content_type = "text/plain";
    r.out.content_length = page.size();
    Buf b = Buf::memory(r.arena().dup(page));
    b.last_buf = true;
    r.body.push(std::move(b));
    return Next::Respond;
}

enum class Which : uintptr_t { Active, Reading, Writing, Waiting };

void v_connections(Request& r, VarValue& v, uintptr_t arg) {
    const stats::ConnTotals t = stats::conn_totals(stats::current());
    int64_t n = 0;
    switch (static_cast<Which>(arg)) {
        case Which::Active: n = t.active; break;
        case Which::Reading: n = t.reading; break;
        case Which::Writing: n = t.writing; break;
        case Which::Waiting: n = t.waiting(); break;
    }
    char b[24];
    auto [end, ec] = std::to_chars(b, b + sizeof b, n);
    (void)ec;
    v.s = r.arena().dup(std::string_view(b, static_cast<size_t>(end - b)));
}

Status postconfiguration(conf::Ctx& cx) {
    auto* m = cx.conf<StubStatusMain>(stub_status_module, conf::Level::Main);
    if (!m) return {};  // no http block
    stats::Limits l;
    if (m->zones_max) l.zones = *m->zones_max;
    if (m->peers_max) l.peers = *m->peers_max;
    auto a = stats::declare(cx, l);
    if (!a) return make_error(a.error().message);
    m->area = *a;
    return {};
}

Status init_worker(const conf::Roots& g, int slot) {
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    auto* m = main ? static_cast<StubStatusMain*>(main[stub_status_module.index]) : nullptr;
    stats::use(m ? m->area : nullptr, slot);
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"stub_status", conf::kServer | conf::kLocation, conf::Arity{0, 1, false},
     conf::custom<set_stub_status>()},
    {"status_zones_max", conf::kHttp, conf::Take1, conf::custom<set_zones_max>()},
    {"status_peers_max", conf::kHttp, conf::Take1, conf::custom<set_peers_max>()},
};

constexpr PhaseHandler kPhases[] = {{Phase::Content, run_stub_status}};

constexpr VariableDef kVariables[] = {
    {"connections_active", v_connections, static_cast<uintptr_t>(Which::Active), kVarNoCache},
    {"connections_reading", v_connections, static_cast<uintptr_t>(Which::Reading), kVarNoCache},
    {"connections_writing", v_connections, static_cast<uintptr_t>(Which::Writing), kVarNoCache},
    {"connections_waiting", v_connections, static_cast<uintptr_t>(Which::Waiting), kVarNoCache},
};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

}  // namespace

extern const conf::Module stub_status_module{
    .name = "stub_status",
    .directives = kDirectives,
    .main = conf::level<StubStatusMain>(),
    .loc = conf::level<StubStatusConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .init_worker = init_worker,
};

}  // namespace gatehouse::http
