// metrics: the counters of every worker (http/stats.h) and the upstream
// groups' shared peer state, in the Prometheus text exposition format
// 0.0.4; and status_zone, which counts the requests of a server or a
// location under a name (NGINX Plus's directive).
//
// Accounting is done at the log phase, once per request (subrequests
// are not counted), with relaxed atomic adds to this worker's slot: no
// lock on the request path. The page sums the slots when asked, in
// whichever worker gets the request.
#include <charconv>
#include <cstdio>
#include <string>
#include <vector>

#include "conf/registry.h"
#include "core/log.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/accept_encoding.h"
#include "http/core_module.h"
#include "http/modules/metrics.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/stats.h"
#include "http/variables.h"
#include "upstream/upstream.h"

namespace gatehouse::http {

extern const conf::Module metrics_module;

namespace {

// A status zone as this generation declares it: the index of its
// counters in the shared area (given in postconfiguration, once the
// table's size, "status_zones_max", is known), with its name and level
// for the page.
using ZoneDecl = StatusZone;

struct MetricsMain {
    std::vector<ZoneDecl> zones;  // declared order, each (level, name) once
    // zones[i]'s first "status_zone" (owner: the generation's tree), for
    // an error in postconfiguration.
    std::vector<const conf::Node*> zone_nodes;
    // Variables read at the log phase for the outcome counters; -1 when
    // no "metrics" location exists (nothing would show them).
    int cache_status = -1;
    int limit_req_status = -1;
    int limit_conn_status = -1;
    const conf::Node* first_metrics = nullptr;  // owner: the generation's tree
};

struct MetricsSrvConf {
    std::optional<uint32_t> zone;  // "status_zone" in server: a ZoneDecl index
};

struct MetricsLocConf {
    std::optional<bool> metrics;   // "metrics"
    // "status_zone" in location (nested locations inherit it); counted
    // apart from the server's zone, which counts the request too.
    std::optional<uint32_t> zone;
};

void merge_loc(const MetricsLocConf& up, MetricsLocConf& c) {
    conf::inherit(c.metrics, up.metrics, false);
    conf::inherit(c.zone, up.zone);
}

MetricsMain& main_conf(conf::Ctx& cx) { return *cx.conf<MetricsMain>(metrics_module, conf::Level::Main); }

Result<uint32_t> declare_zone(conf::Ctx& cx, const conf::Node& n, ZoneLevel level) {
    const std::string& name = n.args[0].text;
    if (name.empty()) return cx.error(n, "invalid zone name \"\"");
    MetricsMain& m = main_conf(cx);
    for (uint32_t i = 0; i < m.zones.size(); ++i)
        if (m.zones[i].level == level && m.zones[i].name == name) return i;
    m.zones.push_back({name, level, 0});
    m.zone_nodes.push_back(&n);
    return static_cast<uint32_t>(m.zones.size() - 1);
}

// Each zone's counters in the shared area, by name: the same ones as
// the previous generation's for a name it had.
Status index_zones(conf::Ctx& cx, MetricsMain& m) {
    stats::Area* area = stats::declared(cx);
    stats::Area& a = area ? *area : stats::current();
    for (size_t i = 0; i < m.zones.size(); ++i) {
        ZoneDecl& z = m.zones[i];
        // Server and location zones of one name are counted apart.
        std::string key = (z.level == ZoneLevel::Server ? "s:" : "l:") + z.name;
        auto idx = stats::zone_index(a, key);
        if (!idx) return cx.error(*m.zone_nodes[i], idx.error().message);
        z.index = *idx;
    }
    return {};
}

Status set_srv_zone(conf::Ctx& cx, const conf::Node& n, MetricsSrvConf& c) {
    if (c.zone) return cx.duplicate(n);
    auto z = declare_zone(cx, n, ZoneLevel::Server);
    if (!z) return z.error();
    c.zone = *z;
    return {};
}

Status set_loc_zone(conf::Ctx& cx, const conf::Node& n, MetricsLocConf& c) {
    if (c.zone) return cx.duplicate(n);
    auto z = declare_zone(cx, n, ZoneLevel::Location);
    if (!z) return z.error();
    c.zone = *z;
    return {};
}

// "status_zone" is one directive in two contexts with a struct in each.
Status set_status_zone(conf::Ctx& cx, const conf::Node& n) {
    if (cx.context() == conf::kServer)
        return set_srv_zone(cx, n, *cx.conf<MetricsSrvConf>(metrics_module, conf::Level::Srv));
    return set_loc_zone(cx, n, *cx.conf<MetricsLocConf>(metrics_module, conf::Level::Loc));
}

Status set_metrics(conf::Ctx& cx, const conf::Node& n, MetricsLocConf& c) {
    if (c.metrics) return cx.duplicate(n);
    c.metrics = true;
    MetricsMain& m = main_conf(cx);
    if (!m.first_metrics) m.first_metrics = &n;
    return {};
}

// ---- accounting ------------------------------------------------------------

template <size_t N>
int find_name(const std::string_view (&names)[N], std::string_view s) {
    for (size_t i = 0; i < N; ++i)
        if (names[i] == s) return static_cast<int>(i);
    return -1;
}

template <typename E>
int outcome(Request& r, int var) {
    if (var < 0) return -1;
    const VarValue& v = get_var(r, var);
    if (v.not_found || v.s.empty()) return -1;
    for (int i = 0; i < static_cast<int>(E::Count); ++i)
        if (stats::name_of(static_cast<E>(i)) == v.s) return i;
    return -1;
}

void count_zone(uint32_t index, Request& r, uint64_t ms) {
    stats::ZoneCounters& z = stats::mine(index);
    auto add = [](stats::Counter& c, uint64_t v) { c.fetch_add(v, std::memory_order_relaxed); };
    add(z.requests, 1);
    const int status = r.out.status;
    if (status >= 100 && status < 600) add(z.responses[status / 100 - 1], 1);
    add(z.bytes_in, r.counters.request_length);
    add(z.bytes_out, r.counters.bytes_sent);
    add(z.duration_ms, ms);
    uint32_t b = 0;
    while (b + 1 < stats::kBuckets && ms > stats::kBucketsMs[b]) ++b;
    add(z.buckets[b], 1);
}

// Marks a request counted in its server zone's "processing" (the ctx's
// value is never read: set means counted).
constinit char kProcessing = 0;

// A request of a server with a zone is being processed from its first
// phase until its log phase (the API's "processing"). PostRead runs once
// per main request (internal redirects start later), and the mark (kept
// across redirects, see kHooks) keeps a request finished before its
// phases ran from being taken out.
Next start_metrics(Request& r) {
    if (r.parent || r.ctx<char>(metrics_module)) return Next::Decline;
    const MetricsSrvConf& s = r.srv_conf<MetricsSrvConf>(metrics_module);
    if (!s.zone) return Next::Decline;
    const MetricsMain& m = r.main_conf<MetricsMain>(metrics_module);
    stats::mine(m.zones[*s.zone].index).processing.fetch_add(1, std::memory_order_relaxed);
    r.set_ctx(metrics_module, &kProcessing);
    return Next::Decline;
}

Next log_metrics(Request& r) {
    if (r.parent) return Next::Decline;
    const MetricsMain& m = r.main_conf<MetricsMain>(metrics_module);
    const MetricsSrvConf& s = r.srv_conf<MetricsSrvConf>(metrics_module);
    const MetricsLocConf& l = r.loc_conf<MetricsLocConf>(metrics_module);
    if (r.ctx<char>(metrics_module) && s.zone) {
        stats::mine(m.zones[*s.zone].index).processing.fetch_sub(1, std::memory_order_relaxed);
        r.set_ctx(metrics_module, nullptr);
    }
    if (s.zone || l.zone) {
        const event::Msec now = event::worker_loop().now();
        const uint64_t ms = now > r.counters.start_msec ? now - r.counters.start_msec : 0;
        if (s.zone) count_zone(m.zones[*s.zone].index, r, ms);
        if (l.zone) count_zone(m.zones[*l.zone].index, r, ms);
    }
    stats::ConnCounters& c = stats::mine();
    if (int i = outcome<stats::Cache>(r, m.cache_status); i >= 0) {
        c.cache[i].fetch_add(1, std::memory_order_relaxed);
        c.cache_bytes[i].fetch_add(r.counters.bytes_sent, std::memory_order_relaxed);
    }
    if (int i = outcome<stats::LimitReq>(r, m.limit_req_status); i >= 0)
        c.limit_req[i].fetch_add(1, std::memory_order_relaxed);
    if (int i = outcome<stats::LimitConn>(r, m.limit_conn_status); i >= 0)
        c.limit_conn[i].fetch_add(1, std::memory_order_relaxed);
    return Next::Decline;
}

// ---- the page ------------------------------------------------------------------

class Page {
public:
    explicit Page(std::string& out) : out_(out) {}

    // "# HELP" and "# TYPE" once per family, before its samples.
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    // A sample: name{labels} value. `labels` are pairs, values escaped.
    void sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
                uint64_t v) {
        head(name, labels);
        number(static_cast<int64_t>(v));
        out_ += '\n';
    }
    void sample_signed(std::string_view name,
                       std::initializer_list<std::pair<std::string_view, std::string_view>> labels, int64_t v) {
        head(name, labels);
        number(v);
        out_ += '\n';
    }
    // Seconds from milliseconds, exactly ("1.234").
    void sample_ms(std::string_view name,
                   std::initializer_list<std::pair<std::string_view, std::string_view>> labels, uint64_t ms) {
        head(name, labels);
        number(static_cast<int64_t>(ms / 1000));
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03u", static_cast<unsigned>(ms % 1000));
        out_ += frac;
        out_ += '\n';
    }

private:
    void head(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels) {
        out_ += name;
        if (labels.size() > 0) {
            out_ += '{';
            bool first = true;
            for (const auto& [k, v] : labels) {
                if (!first) out_ += ',';
                first = false;
                out_ += k;
                out_ += "=\"";
                // The format's escapes: backslash, quote, newline.
                for (char ch : v) {
                    if (ch == '\\') out_ += "\\\\";
                    else if (ch == '"') out_ += "\\\"";
                    else if (ch == '\n') out_ += "\\n";
                    else out_ += ch;
                }
                out_ += '"';
            }
            out_ += '}';
        }
        out_ += ' ';
    }
    void number(int64_t v) {
        char b[24];
        auto [end, ec] = std::to_chars(b, b + sizeof b, v);
        (void)ec;
        out_.append(b, end);
    }

    std::string& out_;
};

constexpr std::string_view kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

// The "le" label of bucket b of `n` (the last is "+Inf"): seconds, as
// Prometheus clients print them ("0.005", "1", "2.5").
std::string_view bucket_label(const uint32_t* bounds_ms, uint32_t n, uint32_t b) {
    static thread_local char le[16];
    if (b + 1 >= n) return "+Inf";
    const uint32_t ms = bounds_ms[b];
    if (ms % 1000 == 0) std::snprintf(le, sizeof le, "%u", ms / 1000);
    else std::snprintf(le, sizeof le, "%g", ms / 1000.0);
    return le;
}

void render_connections(Page& p, const stats::ConnTotals& t) {
    p.family("gatehouse_connections_accepted_total", "counter", "Client connections accepted.");
    p.sample("gatehouse_connections_accepted_total", {}, t.accepted);
    p.family("gatehouse_connections_handled_total", "counter", "Client connections handled.");
    p.sample("gatehouse_connections_handled_total", {}, t.handled);
    p.family("gatehouse_connections_active", "gauge", "Client connections open now.");
    p.sample_signed("gatehouse_connections_active", {}, t.active);
    p.family("gatehouse_connections_reading", "gauge", "Client connections reading a request head.");
    p.sample_signed("gatehouse_connections_reading", {}, t.reading);
    p.family("gatehouse_connections_writing", "gauge", "Client connections serving a request.");
    p.sample_signed("gatehouse_connections_writing", {}, t.writing);
    p.family("gatehouse_connections_waiting", "gauge", "Idle client connections.");
    p.sample_signed("gatehouse_connections_waiting", {}, t.waiting());
    p.family("gatehouse_http_requests_total", "counter", "Client requests.");
    p.sample("gatehouse_http_requests_total", {}, t.requests);

    p.family("gatehouse_tls_handshakes_total", "counter", "Successful TLS handshakes with clients.");
    p.sample("gatehouse_tls_handshakes_total", {}, t.tls_handshakes);
    p.family("gatehouse_tls_handshakes_failed_total", "counter", "Failed TLS handshakes with clients.");
    p.sample("gatehouse_tls_handshakes_failed_total", {}, t.tls_failed);
    p.family("gatehouse_tls_session_reuses_total", "counter", "TLS handshakes that resumed a session.");
    p.sample("gatehouse_tls_session_reuses_total", {}, t.tls_reused);

    p.family("gatehouse_cache_responses_total", "counter", "Responses by proxy cache status.");
    for (int i = 0; i < static_cast<int>(stats::Cache::Count); ++i)
        p.sample("gatehouse_cache_responses_total", {{"status", stats::name_of(static_cast<stats::Cache>(i))}},
                 t.cache[i]);
    p.family("gatehouse_cache_sent_bytes_total", "counter", "Bytes sent to clients by proxy cache status.");
    for (int i = 0; i < static_cast<int>(stats::Cache::Count); ++i)
        p.sample("gatehouse_cache_sent_bytes_total", {{"status", stats::name_of(static_cast<stats::Cache>(i))}},
                 t.cache_bytes[i]);
    p.family("gatehouse_limit_req_total", "counter", "Requests by limit_req outcome.");
    for (int i = 0; i < static_cast<int>(stats::LimitReq::Count); ++i)
        p.sample("gatehouse_limit_req_total", {{"result", stats::name_of(static_cast<stats::LimitReq>(i))}},
                 t.limit_req[i]);
    static_assert(stats::kCodings == kCodingCount);
    auto coding = [](uint32_t i) { return coding_name(static_cast<Coding>(i)); };
    p.family("gatehouse_compression_in_bytes_total", "counter", "Response body bytes compressed, by coding.");
    for (uint32_t i = 0; i < stats::kCodings; ++i)
        p.sample("gatehouse_compression_in_bytes_total", {{"coding", coding(i)}}, t.compressed_in[i]);
    p.family("gatehouse_compression_out_bytes_total", "counter", "Compressed bytes the compressor made, by coding.");
    for (uint32_t i = 0; i < stats::kCodings; ++i)
        p.sample("gatehouse_compression_out_bytes_total", {{"coding", coding(i)}}, t.compressed_out[i]);
    p.family("gatehouse_limit_conn_total", "counter", "Requests by limit_conn outcome.");
    for (int i = 0; i < static_cast<int>(stats::LimitConn::Count); ++i)
        p.sample("gatehouse_limit_conn_total", {{"result", stats::name_of(static_cast<stats::LimitConn>(i))}},
                 t.limit_conn[i]);
}

void render_zones(Page& p, const MetricsMain& m, const stats::Area& a) {
    if (m.zones.empty()) return;
    std::vector<stats::ZoneTotals> t;
    t.reserve(m.zones.size());
    for (const ZoneDecl& z : m.zones) t.push_back(stats::zone_totals(a, z.index));
    auto level = [](const ZoneDecl& z) -> std::string_view {
        return z.level == ZoneLevel::Server ? "server" : "location";
    };
    p.family("gatehouse_zone_requests_total", "counter", "Requests by status zone.");
    for (size_t i = 0; i < t.size(); ++i)
        p.sample("gatehouse_zone_requests_total", {{"zone", m.zones[i].name}, {"level", level(m.zones[i])}},
                 t[i].requests);
    p.family("gatehouse_zone_responses_total", "counter", "Responses by status zone and status class.");
    for (size_t i = 0; i < t.size(); ++i)
        for (int c = 0; c < 5; ++c)
            p.sample("gatehouse_zone_responses_total",
                     {{"zone", m.zones[i].name}, {"level", level(m.zones[i])}, {"code", kClasses[c]}},
                     t[i].responses[c]);
    p.family("gatehouse_zone_received_bytes_total", "counter", "Bytes received from clients by status zone.");
    for (size_t i = 0; i < t.size(); ++i)
        p.sample("gatehouse_zone_received_bytes_total", {{"zone", m.zones[i].name}, {"level", level(m.zones[i])}},
                 t[i].bytes_in);
    p.family("gatehouse_zone_sent_bytes_total", "counter", "Bytes sent to clients by status zone.");
    for (size_t i = 0; i < t.size(); ++i)
        p.sample("gatehouse_zone_sent_bytes_total", {{"zone", m.zones[i].name}, {"level", level(m.zones[i])}},
                 t[i].bytes_out);
    p.family("gatehouse_zone_request_duration_seconds", "histogram",
             "Time from the first byte of a request to its log line, by status zone.");
    for (size_t i = 0; i < t.size(); ++i) {
        uint64_t cumulative = 0;
        for (uint32_t b = 0; b < stats::kBuckets; ++b) {
            cumulative += t[i].buckets[b];
            p.sample("gatehouse_zone_request_duration_seconds_bucket",
                     {{"zone", m.zones[i].name}, {"level", level(m.zones[i])},
                      {"le", bucket_label(stats::kBucketsMs, stats::kBuckets, b)}},
                     cumulative);
        }
        p.sample_ms("gatehouse_zone_request_duration_seconds_sum",
                    {{"zone", m.zones[i].name}, {"level", level(m.zones[i])}}, t[i].duration_ms);
        p.sample("gatehouse_zone_request_duration_seconds_count",
                 {{"zone", m.zones[i].name}, {"level", level(m.zones[i])}}, cumulative);
    }
}

// A peer's totals; zeros for one not counted (see count_peers).
const upstream::PeerCounters& totals(const upstream::Peer& p) {
    static const upstream::PeerCounters kNone;
    return p.totals ? *p.totals : kNone;
}

// Groups with a zone only: without one each worker has its own state,
// which no single worker can show whole.
void render_upstreams(Page& p, const upstream::UpstreamMainConf* um) {
    using upstream::PeerStatus;
    std::vector<const upstream::UpstreamConf*> groups;
    if (um)
        for (const upstream::UpstreamConf* u : um->upstreams)
            if (u->zone) groups.push_back(u);
    if (groups.empty()) return;
    const event::Msec now = event::worker_loop().now();
    struct Row {
        const upstream::UpstreamConf* u;
        const upstream::Peer* p;
        PeerStatus status;
    };
    std::vector<Row> rows;
    for (const upstream::UpstreamConf* u : groups)
        for (const upstream::Peer& peer : u->peers) {
            PeerStatus s = upstream::peer_status(*u, peer, now);
            if (s != PeerStatus::Vacant && !peer.text.empty()) rows.push_back({u, &peer, s});
        }
    auto labels = [](const Row& r) {
        return std::pair<std::string_view, std::string_view>{r.u->name, r.p->text};
    };
    constexpr std::pair<PeerStatus, std::string_view> kStates[] = {
        {PeerStatus::Up, "up"},           {PeerStatus::Down, "down"},
        {PeerStatus::Unhealthy, "unhealthy"}, {PeerStatus::Draining, "draining"},
        {PeerStatus::Checking, "checking"}, {PeerStatus::Unavailable, "unavailable"},
    };
    p.family("gatehouse_upstream_peer_state", "gauge", "1 for the state the upstream peer is in, else 0.");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        for (const auto& [st, name] : kStates)
            p.sample("gatehouse_upstream_peer_state", {{"upstream", u}, {"peer", a}, {"state", name}},
                     r.status == st ? 1 : 0);
    }
    p.family("gatehouse_upstream_peer_active_connections", "gauge", "Connections to the peer in use now.");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        p.sample("gatehouse_upstream_peer_active_connections", {{"upstream", u}, {"peer", a}},
                 r.p->st().conns.load(std::memory_order_relaxed));
    }
    p.family("gatehouse_upstream_peer_requests_total", "counter", "Tries sent to the peer.");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        p.sample("gatehouse_upstream_peer_requests_total", {{"upstream", u}, {"peer", a}},
                 r.p->st().picks.load(std::memory_order_relaxed));
    }
    p.family("gatehouse_upstream_peer_responses_total", "counter",
             "Tries by status class of the response (502 and 504 for failed tries).");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        for (int c = 0; c < 5; ++c)
            p.sample("gatehouse_upstream_peer_responses_total", {{"upstream", u}, {"peer", a}, {"code", kClasses[c]}},
                     totals(*r.p).responses[c].load(std::memory_order_relaxed));
    }
    p.family("gatehouse_upstream_peer_fails_total", "counter", "Tries counted against max_fails.");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        p.sample("gatehouse_upstream_peer_fails_total", {{"upstream", u}, {"peer", a}},
                 totals(*r.p).fails.load(std::memory_order_relaxed));
    }
    p.family("gatehouse_upstream_peer_unavailable_total", "counter",
             "Times max_fails made the peer unavailable for fail_timeout.");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        p.sample("gatehouse_upstream_peer_unavailable_total", {{"upstream", u}, {"peer", a}},
                 totals(*r.p).unavailable.load(std::memory_order_relaxed));
    }
    p.family("gatehouse_upstream_peer_health_checks_total", "counter", "Active health checks by result.");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        const uint64_t checks = totals(*r.p).checks.load(std::memory_order_relaxed);
        const uint64_t failed = totals(*r.p).check_fails.load(std::memory_order_relaxed);
        p.sample("gatehouse_upstream_peer_health_checks_total", {{"upstream", u}, {"peer", a}, {"result", "passed"}},
                 checks >= failed ? checks - failed : 0);
        p.sample("gatehouse_upstream_peer_health_checks_total", {{"upstream", u}, {"peer", a}, {"result", "failed"}},
                 failed);
    }
    p.family("gatehouse_upstream_peer_weight", "gauge", "The peer's weight (as configured or as the API set it).");
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        p.sample("gatehouse_upstream_peer_weight", {{"upstream", u}, {"peer", a}}, upstream::peer_weight(*r.p));
    }
    p.family("gatehouse_upstream_peer_response_time_seconds", "histogram",
             "Time from the start of a try to the response head (or the failure).");
    using Counters = upstream::PeerCounters;
    for (const Row& r : rows) {
        auto [u, a] = labels(r);
        const Counters& t = totals(*r.p);
        uint64_t cumulative = 0;
        for (uint32_t b = 0; b < Counters::kTimeBuckets; ++b) {
            cumulative += t.time_buckets[b].load(std::memory_order_relaxed);
            p.sample("gatehouse_upstream_peer_response_time_seconds_bucket",
                     {{"upstream", u}, {"peer", a}, {"le", bucket_label(Counters::kTimeBucketsMs, Counters::kTimeBuckets, b)}},
                     cumulative);
        }
        p.sample_ms("gatehouse_upstream_peer_response_time_seconds_sum", {{"upstream", u}, {"peer", a}},
                    t.time_ms.load(std::memory_order_relaxed));
        p.sample("gatehouse_upstream_peer_response_time_seconds_count", {{"upstream", u}, {"peer", a}}, cumulative);
    }
}

Next run_metrics(Request& r) {
    if (!*r.loc_conf<MetricsLocConf>(metrics_module).metrics) return Next::Decline;
    if (r.in.method != Method::Get && r.in.method != Method::Head) return respond_status(r, 405);
    const stats::Area& a = stats::current();
    std::string text;
    text.reserve(8192);
    Page p(text);
    render_connections(p, stats::conn_totals(a));
    render_zones(p, r.main_conf<MetricsMain>(metrics_module), a);
    render_upstreams(p, &r.main_conf<upstream::UpstreamMainConf>(upstream::upstream_module));
    r.out.status = 200;
    r.out.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.out.content_length = text.size();
    Buf b = Buf::memory(r.arena().dup(text));
    b.last_buf = true;
    r.body.push(std::move(b));
    return Next::Respond;
}

// Every peer of a group with a zone gets its counters in the metrics'
// zone, found again by group name and address after a reload (a run-time
// slot by its index), whether or not a page shows them yet.
Status count_peers(conf::Ctx& cx) {
    auto* um = cx.conf<upstream::UpstreamMainConf>(upstream::upstream_module, conf::Level::Main);
    if (!um) return {};
    stats::Area* area = stats::declared(cx);
    if (!area) return {};  // no shared memory (unit tests): nothing shows them
    bool warned = false;
    for (upstream::UpstreamConf* u : um->upstreams) {
        if (!u->zone) continue;
        for (size_t i = 0; i < u->peers.size(); ++i) {
            upstream::Peer& p = u->peers[i];
            std::string key = u->name + ' ' + (p.slot ? "#" + std::to_string(i) : p.text);
            p.totals = stats::peer_counters(*area, key);
            if (!p.totals && !warned) {
                GH_LOG(Warn, "more than %u upstream peers since the last restart (\"status_peers_max\"): "
                       "the metrics count no more of them", area->max_peers);
                warned = true;
            }
        }
    }
    return {};
}

Status postconfiguration(conf::Ctx& cx) {
    if (auto s = count_peers(cx); !s) return s;
    auto* m = cx.conf<MetricsMain>(metrics_module, conf::Level::Main);
    if (!m) return {};
    if (auto s = index_zones(cx, *m); !s) return s;
    if (!m->first_metrics) return {};
    // The outcome counters read these variables; the modules declaring
    // them are built in, so the names always resolve.
    VarTable& vars = http_main(cx.level(conf::Level::Main))->vars;
    m->cache_status = vars.index("upstream_cache_status", *m->first_metrics);
    m->limit_req_status = vars.index("limit_req_status", *m->first_metrics);
    m->limit_conn_status = vars.index("limit_conn_status", *m->first_metrics);
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"metrics", conf::kLocation, conf::Take0, conf::custom<set_metrics>()},
    {"status_zone", conf::kServer | conf::kLocation, conf::Take1, conf::custom<set_status_zone>()},
};

bool start_metrics_wanted(conf::ConfArray, conf::ConfArray srv, conf::ConfArray) {
    return static_cast<const MetricsSrvConf*>(srv[metrics_module.index])->zone.has_value();
}

constexpr PhaseHandler kPhases[] = {
    {Phase::PostRead, start_metrics, start_metrics_wanted}, {Phase::Content, run_metrics}, {Phase::Log, log_metrics}};

// The "processing" mark must outlive internal redirects (index files,
// error pages), which clear the other modules' contexts.
constexpr ModuleHooks kHooks{.phases = kPhases, .ctx_survives_redirects = true};

}  // namespace

std::span<const StatusZone> status_zones(const Request& r) {
    return r.main_conf<MetricsMain>(metrics_module).zones;
}

extern const conf::Module metrics_module{
    .name = "metrics",
    .directives = kDirectives,
    .main = conf::level<MetricsMain>(),
    .srv = conf::level<MetricsSrvConf>(),
    .loc = conf::level<MetricsLocConf, merge_loc>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
};

}  // namespace gatehouse::http
