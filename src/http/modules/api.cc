// api_module: "api [write=on|off]" in a location serves the NGINX Plus
// REST API (version 9), in its shape, so that the tools written for it
// work here. Its status part reads the counters the stub_status and
// metrics pages read (http/stats.h, the upstream zones), never a set of
// its own:
//
//   GET    /api/                                    the versions
//   GET    /api/9/                                  the endpoints below
//   GET    /api/9/nginx                             version, pids, reloads
//   GET    /api/9/connections                       accepted, dropped, active, idle
//   GET    /api/9/ssl                               client TLS handshakes
//   GET    /api/9/http/requests                     total, current
//   GET    /api/9/http/server_zones[/NAME]          per status_zone of a server
//   GET    /api/9/http/location_zones[/NAME]        per status_zone of a location
//
// and its upstream part changes the servers of groups with a zone:
//
//   GET    /api/9/http/upstreams                    every group with a zone
//   GET    /api/9/http/upstreams/NAME               one group: its peers
//   GET    /api/9/http/upstreams/NAME/servers       its servers' parameters
//   POST   /api/9/http/upstreams/NAME/servers       add a server (201)
//   GET    /api/9/http/upstreams/NAME/servers/ID
//   PATCH  /api/9/http/upstreams/NAME/servers/ID    change it (down, drain, weight...)
//   DELETE /api/9/http/upstreams/NAME/servers/ID    remove it: the servers left
//
// (/api being the location's prefix, 9 any version from 1 to 9). What a
// change does to the group is upstream/runtime_servers.cc's: checked
// whole, written to the state file, applied for every worker at once.
// This file speaks HTTP and JSON: the routes, the body (read whole, at
// most client_body_buffer_size, else 413), strict JSON (core/json.h),
// every field checked before anything changes, and errors as NGINX
// Plus's error object:
//   {"error":{"status":400,"text":"unknown parameter \"x\"","code":
//    "UpstreamConfFormatError"},"request_id":"...","href":"..."}
// "?fields=a,b" keeps those fields of the object asked for, or of each
// entry of a collection (each zone, each group).
// Differences: a body that is not JSON gets 400 (NGINX Plus: 415) with
// the parser's reason; a server is an address (no host names: the worker
// would have to resolve them); no per-code "codes" in "responses"; peers
// have no "downtime", "downstart" nor "selected" (not tracked); caches
// are counted by status for the whole server, not per cache zone, so
// /http/caches is not served.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/str.h"
#include "event/clock.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/core_module.h"
#include "http/modules/metrics.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/stats.h"
#include "http/stream.h"
#include "http/variables.h"
#include "objs/gh_config.h"
#include "upstream/upstream.h"

namespace gatehouse::http {

extern const conf::Module api_module;

namespace {

using conf::Ctx;
using conf::Node;

constexpr std::string_view kHref = "https://nginx.org/en/docs/http/ngx_http_api_module.html";
constexpr int kLatestVersion = 9;

// The generation's place in the master's life: /nginx's "generation"
// (reloads since the start) and "load_timestamp" (init_master).
struct ApiMain {
    uint64_t generation = 0;
    event::WallTime loaded;
};

struct ApiConf {
    bool write = false;         // "write=on"
    std::string prefix;         // the location's name, taken off the URI
    ComplexValue* request_id = nullptr;  // "$request_id", for errors (owner: the generation arena)
};

// What a request asked, kept while its body is read.
struct ApiRequest {
    upstream::UpstreamConf* u = nullptr;  // owner: the generation
    bool post = false;                    // else PATCH of `id`
    uint32_t id = 0;
    // read_whole_body() may call back at once (the body was read before
    // an internal redirect): the answer is then returned by run_api.
    bool in_handler = false;
    bool answered = false;
    Next answer = Next::Respond;
};

Next send(Request& r, int status, const std::string& body) {
    auto* p = static_cast<char*>(r.arena().alloc(body.size() + 1, 1));
    std::memcpy(p, body.data(), body.size());
    r.out.status = status;
    r.out.content_type = "application/json";
    r.out.content_length = body.size();
    Buf b = Buf::memory(std::string_view(p, body.size()));
    b.last_buf = true;
    r.body.push(std::move(b));
    return Next::Respond;
}

Next fail(Request& r, int status, std::string_view code, std::string_view text) {
    const auto& c = r.loc_conf<ApiConf>(api_module);
    json::Writer w;
    w.begin_object().key("error").begin_object();
    w.key("status").number(status).key("text").string(text).key("code").string(code);
    w.end_object();
    if (c.request_id) w.key("request_id").string(c.request_id->eval(r));
    w.key("href").string(kHref).end_object();
    // The operator's side of a refused call [nginx logs a client's
    // errors at info].
    log_for_request(r, log::Level::Info, 0, "api: " + std::string(text));
    return send(r, status, w.out());
}

Next fail(Request& r, const upstream::ApiError& e) { return fail(r, e.status, e.code, e.text); }

// "?fields=a,b": the fields to keep; all when absent or empty.
class Fields {
public:
    explicit Fields(std::string_view args) {
        while (!args.empty()) {
            size_t amp = args.find('&');
            std::string_view a = args.substr(0, amp);
            if (a.starts_with("fields=")) list_ = a.substr(7);
            if (amp == std::string_view::npos) break;
            args.remove_prefix(amp + 1);
        }
    }
    bool want(std::string_view name) const {
        if (list_.empty()) return true;
        std::string_view l = list_;
        while (!l.empty()) {
            size_t comma = l.find(',');
            if (l.substr(0, comma) == name) return true;
            if (comma == std::string_view::npos) break;
            l.remove_prefix(comma + 1);
        }
        return false;
    }

private:
    std::string_view list_;  // owner: the request
};

// "2022-06-28T11:15:44.467Z": ISO 8601, UTC, milliseconds.
std::string iso8601(event::WallTime t) {
    const time_t sec = static_cast<time_t>(t.sec);
    struct tm tm{};
    gmtime_r(&sec, &tm);
    char b[96];  // what the compiler allows for any int; 24 used
    std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned>(t.msec));
    return b;
}

constexpr std::string_view kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

// {"1xx":..,"5xx":..,"total":..} of counts by class.
template <typename Load>
void write_responses(json::Writer& w, Load load) {
    w.begin_object();
    uint64_t total = 0;
    for (int c = 0; c < 5; ++c) {
        const uint64_t n = load(c);
        total += n;
        w.key(kClasses[c]).unsigned_number(n);
    }
    w.key("total").unsigned_number(total).end_object();
}

void write_nginx(json::Writer& w, Request& r, const Fields& f) {
    const auto& m = r.main_conf<ApiMain>(api_module);
    w.begin_object();
    if (f.want("version")) w.key("version").string(GH_VERSION);
    if (f.want("build")) w.key("build").string(GH_BUILD[0] ? GH_BUILD : "gatehouse");
    if (f.want("address")) w.key("address").string(r.stream().local_text());
    if (f.want("generation")) w.key("generation").unsigned_number(m.generation);
    if (f.want("load_timestamp")) w.key("load_timestamp").string(iso8601(m.loaded));
    if (f.want("timestamp")) w.key("timestamp").string(iso8601(event::worker_loop().wall()));
    if (f.want("pid")) w.key("pid").number(::getpid());
    if (f.want("ppid")) w.key("ppid").number(::getppid());
    w.end_object();
}

void write_connections(json::Writer& w, const stats::ConnTotals& t, const Fields& f) {
    w.begin_object();
    // Every connection accepted is handled here (none is dropped for
    // want of worker_connections: the accept waits), as stub_status says.
    if (f.want("accepted")) w.key("accepted").unsigned_number(t.accepted);
    if (f.want("dropped")) w.key("dropped").unsigned_number(t.accepted - t.handled);
    if (f.want("active")) w.key("active").number(t.reading + t.writing);
    if (f.want("idle")) w.key("idle").number(t.waiting());
    w.end_object();
}

void write_ssl(json::Writer& w, const stats::ConnTotals& t, const Fields& f) {
    w.begin_object();
    if (f.want("handshakes")) w.key("handshakes").unsigned_number(t.tls_handshakes);
    if (f.want("handshakes_failed")) w.key("handshakes_failed").unsigned_number(t.tls_failed);
    if (f.want("session_reuses")) w.key("session_reuses").unsigned_number(t.tls_reused);
    w.end_object();
}

// A server zone has "processing" (requests started and not yet logged);
// a location zone does not (NGINX Plus's shapes).
void write_zone(json::Writer& w, const stats::ZoneTotals& t, bool server, const Fields& f) {
    w.begin_object();
    if (server && f.want("processing")) w.key("processing").number(t.processing);
    if (f.want("requests")) w.key("requests").unsigned_number(t.requests);
    uint64_t answered = 0;
    for (uint64_t n : t.responses) answered += n;
    if (f.want("responses")) {
        w.key("responses");
        write_responses(w, [&](int c) { return t.responses[c]; });
    }
    // Requests logged without a status a client could see (a connection
    // closed before any response).
    if (f.want("discarded")) w.key("discarded").unsigned_number(t.requests - answered);
    if (f.want("received")) w.key("received").unsigned_number(t.bytes_in);
    if (f.want("sent")) w.key("sent").unsigned_number(t.bytes_out);
    w.end_object();
}

// The zones of one level, by name; `one`: only that one (false when
// it is not there).
bool write_zones(json::Writer& w, Request& r, ZoneLevel level, std::string_view one, const Fields& f) {
    const stats::Area& a = stats::current();
    if (one.empty()) w.begin_object();
    bool found = false;
    for (const StatusZone& z : status_zones(r)) {
        if (z.level != level || (!one.empty() && z.name != one)) continue;
        found = true;
        if (one.empty()) w.key(z.name);
        write_zone(w, stats::zone_totals(a, z.index), level == ZoneLevel::Server, f);
    }
    if (one.empty()) w.end_object();
    return found || one.empty();
}

void write_server(json::Writer& w, const upstream::ServerInfo& s) {
    w.begin_object();
    w.key("id").number(s.id).key("server").string(s.server);
    w.key("weight").number(s.weight).key("max_conns").number(s.max_conns).key("max_fails").number(s.max_fails);
    w.key("fail_timeout").string(upstream::duration_text(s.fail_timeout_ms));
    w.key("slow_start").string(upstream::duration_text(s.slow_start_ms));
    w.key("route").string("").key("backup").boolean(s.backup).key("down").boolean(s.down);
    if (s.drain) w.key("drain").boolean(true);
    w.end_object();
}

// A peer, from its shared state and its counters (PeerCounters: zeros
// when status_peers_max left it uncounted).
void write_peer(json::Writer& w, const upstream::UpstreamConf& u, const upstream::ServerInfo& s) {
    static const upstream::PeerCounters kNone;
    const upstream::PeerCounters& t = s.totals ? *s.totals : kNone;
    auto load = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
    w.begin_object();
    w.key("id").number(s.id).key("server").string(s.server).key("name").string(s.name);
    w.key("backup").boolean(s.backup).key("weight").number(s.weight).key("state").string(s.state);
    w.key("active").number(s.active);
    if (s.max_conns) w.key("max_conns").number(s.max_conns);
    w.key("requests").unsigned_number(s.requests);
    w.key("responses");
    write_responses(w, [&](int c) { return load(t.responses[c]); });
    w.key("sent").unsigned_number(load(t.sent)).key("received").unsigned_number(load(t.received));
    w.key("fails").unsigned_number(load(t.fails)).key("unavail").unsigned_number(load(t.unavailable));
    w.key("health_checks").begin_object();
    w.key("checks").unsigned_number(load(t.checks)).key("fails").unsigned_number(load(t.check_fails));
    w.key("unhealthy").unsigned_number(load(t.unhealthy));
    if (u.health && load(t.checks) > 0) w.key("last_passed").boolean(s.last_check_passed);
    w.end_object();
    // Averages over the tries counted, in milliseconds, once there are any.
    uint64_t tries = 0;
    for (const auto& b : t.time_buckets) tries += load(b);
    if (tries > 0) {
        w.key("header_time").unsigned_number(load(t.time_ms) / tries);
        w.key("response_time").unsigned_number(load(t.response_ms) / tries);
    }
    w.end_object();
}

void write_group(json::Writer& w, upstream::UpstreamConf& u, event::Msec now, const Fields& f) {
    w.begin_object();
    if (f.want("peers")) {
        w.key("peers").begin_array();
        for (const auto& s : upstream::list_servers(u, now)) write_peer(w, u, s);
        w.end_array();
    }
    if (f.want("keepalive")) w.key("keepalive").number(0);
    if (f.want("zombies")) w.key("zombies").unsigned_number(upstream::zombies(u));
    if (f.want("zone")) w.key("zone").string(u.zone_name);
    w.end_object();
}

upstream::UpstreamMainConf* upstreams(Request& r) {
    auto* m = static_cast<upstream::UpstreamMainConf*>(r.main_confs[upstream::upstream_module.index]);
    return m;
}

upstream::UpstreamConf* find_group(Request& r, std::string_view name) {
    auto* m = upstreams(r);
    if (!m) return nullptr;
    for (upstream::UpstreamConf* u : m->upstreams)
        if (!u->implicit && u->name == name) return u;
    return nullptr;
}

// The fields of a POST or PATCH body, every one checked. Empty: fine.
upstream::ApiError read_change(const json::Value& v, bool post, uint32_t id, upstream::ServerChange& c) {
    auto bad = [](std::string code, std::string text) { return upstream::ApiError{400, std::move(code), std::move(text)}; };
    if (v.type != json::Type::Object) return bad("UpstreamConfFormatError", "invalid JSON object");
    for (const auto& member : v.members) {
        // Named references, not a structured binding: the lambdas below
        // capture them (clang before 16 cannot capture bindings; make fuzz).
        const std::string& k = member.first;
        const json::Value& f = member.second;
        if (f.type == json::Type::Object || f.type == json::Type::Array)
            return bad("UpstreamConfFormatError", "nested object or list");
        auto uint_field = [&](uint64_t lo, uint64_t hi, std::optional<uint32_t>& out, const char* code) {
            if (f.type != json::Type::Number || !f.integer || f.i < static_cast<int64_t>(lo) ||
                f.i > static_cast<int64_t>(hi))
                return bad(code, "invalid \"" + k + "\"");
            out = static_cast<uint32_t>(f.i);
            return upstream::ApiError{};
        };
        auto duration_field = [&](std::optional<int64_t>& out, const char* code) {
            if (f.type != json::Type::String) return bad(code, "invalid \"" + k + "\"");
            auto d = conf::parse_duration(f.string);
            if (!d) return bad(code, "invalid \"" + k + "\"");
            out = d->count();
            return upstream::ApiError{};
        };
        auto bool_field = [&](std::optional<bool>& out) {
            if (f.type != json::Type::Bool) return bad("UpstreamConfFormatError", "invalid \"" + k + "\" value");
            out = f.boolean;
            return upstream::ApiError{};
        };
        upstream::ApiError e;
        if (k == "server") {
            if (f.type != json::Type::String || f.string.empty())
                return bad("UpstreamBadAddress", "invalid \"server\" argument");
            c.server = f.string;
        } else if (k == "weight") {
            e = uint_field(1, 1000000, c.weight, "UpstreamBadWeight");
        } else if (k == "max_conns") {
            e = uint_field(0, UINT32_MAX, c.max_conns, "UpstreamBadMaxConns");
        } else if (k == "max_fails") {
            e = uint_field(0, UINT32_MAX, c.max_fails, "UpstreamBadMaxFails");
        } else if (k == "fail_timeout") {
            e = duration_field(c.fail_timeout_ms, "UpstreamBadFailTimeout");
        } else if (k == "slow_start") {
            e = duration_field(c.slow_start_ms, "UpstreamBadSlowStart");
        } else if (k == "backup") {
            e = bool_field(c.backup);
        } else if (k == "down") {
            e = bool_field(c.down);
        } else if (k == "drain") {
            e = bool_field(c.drain);
        } else if (k == "route") {
            // Sticky routes are not supported: an empty one is no route.
            if (f.type != json::Type::String || !f.string.empty())
                return bad("UpstreamBadRoute", "invalid \"route\"");
        } else if (k == "id" && !post) {
            // The id cannot change: the URI's, or nothing.
            if (f.type != json::Type::Number || !f.integer || f.i != id)
                return bad("UpstreamBadServerId", "invalid server ID");
        } else {
            return bad("UpstreamConfFormatError", "unknown parameter \"" + k + "\"");
        }
        if (e) return e;
    }
    if (post && !c.server) return bad("UpstreamConfFormatError", "missing \"server\" argument");
    return {};
}

void body_read(Request& r) {
    auto* ar = r.ctx<ApiRequest>(api_module);
    if (!ar) return;
    const RequestBody* b = r.body_kept;
    Next n;
    if (!b || b->fd >= 0) {
        n = fail(r, 413, "BodyTooLarge", "request body larger than client_body_buffer_size");
    } else {
        std::string_view text = b->bufs.empty() ? std::string_view() : b->bufs.begin()->view();
        auto v = json::parse(text);
        upstream::ServerChange c;
        upstream::ApiError e;
        if (!v) {
            n = fail(r, 400, "JsonError", "invalid JSON: " + v.message());
        } else if ((e = read_change(*v, ar->post, ar->id, c))) {
            n = fail(r, e);
        } else {
            const event::Msec now = event::worker_loop().now();
            upstream::ServerInfo s;
            e = ar->post ? upstream::add_server(*ar->u, c, now, s) : upstream::change_server(*ar->u, ar->id, c, now, s);
            if (e) {
                n = fail(r, e);
            } else {
                json::Writer w;
                write_server(w, s);
                n = send(r, ar->post ? 201 : 200, w.out());
            }
        }
    }
    if (ar->in_handler) {
        ar->answered = true;
        ar->answer = n;
        return;
    }
    continue_request(r, n);
}

std::vector<std::string_view> segments(std::string_view path) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        if (j > i) out.push_back(path.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

Next run_api(Request& r) {
    const auto& c = r.loc_conf<ApiConf>(api_module);
    std::string_view path = r.uri;
    if (!c.prefix.empty() && path.substr(0, c.prefix.size()) == c.prefix) path.remove_prefix(c.prefix.size());
    const std::vector<std::string_view> seg = segments(path);
    const std::string_view m = r.method;
    const bool read = m == "GET" || m == "HEAD";
    const bool write = m == "POST" || m == "PATCH" || m == "DELETE";
    auto method = [&]() -> Next {
        if (write && !c.write) return fail(r, 405, "MethodDisabled", "method disabled");
        return fail(r, 405, "MethodNotSupported", "method not supported");
    };
    json::Writer w;
    if (seg.empty()) {
        if (!read) return method();
        w.begin_array();
        for (int v = 1; v <= kLatestVersion; ++v) w.number(v);
        w.end_array();
        return send(r, 200, w.out());
    }
    if (seg[0].size() != 1 || seg[0][0] < '1' || seg[0][0] > '0' + kLatestVersion)
        return fail(r, 404, "UnknownVersion", "unknown version");
    // Every version answers the same: what they differ in (the error
    // object's path and method, added endpoints) is not served here.
    const Fields f(r.args);
    auto list = [&](std::initializer_list<std::string_view> names) {
        if (!read) return method();
        w.begin_array();
        for (std::string_view n : names) w.string(n);
        w.end_array();
        return send(r, 200, w.out());
    };
    auto object = [&](auto&& fill) {
        if (!read) return method();
        fill();
        return send(r, 200, w.out());
    };
    if (seg.size() == 1) return list({"nginx", "connections", "http", "ssl"});
    if (seg.size() == 2 && seg[1] == "nginx") return object([&] { write_nginx(w, r, f); });
    if (seg.size() == 2 && seg[1] == "connections")
        return object([&] { write_connections(w, stats::conn_totals(stats::current()), f); });
    if (seg.size() == 2 && seg[1] == "ssl")
        return object([&] { write_ssl(w, stats::conn_totals(stats::current()), f); });
    if (seg.size() == 2 && seg[1] == "http")
        return list({"requests", "server_zones", "location_zones", "upstreams"});
    if (seg.size() == 3 && seg[1] == "http" && seg[2] == "requests")
        return object([&] {
            const stats::ConnTotals t = stats::conn_totals(stats::current());
            w.begin_object();
            if (f.want("total")) w.key("total").unsigned_number(t.requests);
            // Connections reading or serving a request: HTTP/1's one at
            // a time; an HTTP/2 connection counts once however many
            // streams it serves.
            if (f.want("current")) w.key("current").number(t.reading + t.writing);
            w.end_object();
        });
    if ((seg.size() == 3 || seg.size() == 4) && seg[1] == "http" &&
        (seg[2] == "server_zones" || seg[2] == "location_zones")) {
        if (!read) return method();
        const bool server = seg[2] == "server_zones";
        const std::string_view one = seg.size() == 4 ? seg[3] : std::string_view();
        if (!write_zones(w, r, server ? ZoneLevel::Server : ZoneLevel::Location, one, f))
            return server ? fail(r, 404, "ServerZoneNotFound", "server zone not found")
                          : fail(r, 404, "LocationZoneNotFound", "location zone not found");
        return send(r, 200, w.out());
    }
    if (seg.size() < 3 || seg[1] != "http" || seg[2] != "upstreams" || seg.size() > 6 || (seg.size() >= 5 && seg[4] != "servers"))
        return fail(r, 404, "PathNotFound", "path not found");
    const event::Msec now = event::worker_loop().now();
    if (seg.size() == 3) {
        if (!read) return method();
        w.begin_object();
        if (auto* mc = upstreams(r))
            for (upstream::UpstreamConf* u : mc->upstreams) {
                if (u->implicit || !u->zone_group) continue;
                // One entry per name: a block proxied to over http and
                // https has two groups; the first speaks for it.
                if (find_group(r, u->name) != u) continue;
                w.key(u->name);
                write_group(w, *u, now, f);
            }
        w.end_object();
        return send(r, 200, w.out());
    }
    upstream::UpstreamConf* u = find_group(r, seg[3]);
    if (!u) return fail(r, 404, "UpstreamNotFound", "upstream not found");
    if (!u->zone_group) return fail(r, 400, "UpstreamStatic", "upstream is static");
    if (seg.size() == 4) {
        if (!read) return method();
        write_group(w, *u, now, f);
        return send(r, 200, w.out());
    }
    if (seg.size() == 5) {
        if (read) {
            w.begin_array();
            for (const auto& s : upstream::list_servers(*u, now)) write_server(w, s);
            w.end_array();
            return send(r, 200, w.out());
        }
        if (m != "POST") return method();
    }
    uint32_t id = 0;
    if (seg.size() == 6) {
        auto v = conf::parse_number(seg[5], UINT32_MAX);
        if (!v) return fail(r, 400, "UpstreamBadServerId", "invalid server ID");
        id = static_cast<uint32_t>(*v);
        if (read) {
            for (const auto& s : upstream::list_servers(*u, now))
                if (s.id == id) {
                    write_server(w, s);
                    return send(r, 200, w.out());
                }
            return fail(r, 404, "UpstreamServerNotFound", "server not found");
        }
        if (m != "PATCH" && m != "DELETE") return method();
    }
    if (!c.write) return fail(r, 405, "MethodDisabled", "method disabled");
    if (m == "DELETE") {
        if (upstream::ApiError e = upstream::remove_server(*u, id)) return fail(r, e);
        w.begin_array();
        for (const auto& s : upstream::list_servers(*u, now)) write_server(w, s);
        w.end_array();
        return send(r, 200, w.out());
    }
    auto* ar = r.arena().make<ApiRequest>();
    ar->u = u;
    ar->post = m == "POST";
    ar->id = id;
    r.set_ctx(api_module, ar);
    ar->in_handler = true;
    const bool reading = read_whole_body(r, body_read);
    ar->in_handler = false;
    if (!reading) return fail(r, 500, "BodyReadError", "reading request body failed");
    return ar->answered ? ar->answer : Next::Suspend;
}

Status set_api(Ctx& cx, const Node& n, ApiConf& c) {
    auto* lc = cx.conf<LocConf>(http_core_module, conf::Level::Loc);
    GH_CHECK(lc != nullptr);
    if (lc->content_handler) return cx.error(n, "\"api\" conflicts with another content handler here");
    for (const auto& a : n.args) {
        if (a.text == "write=on") c.write = true;
        else if (a.text == "write=off") c.write = false;
        else return cx.error(n, "invalid parameter \"" + a.text + "\"");
    }
    auto id = ComplexValue::compile(cx, n, "$request_id");
    if (!id) return id.error();
    c.request_id = cx.arena().make<ComplexValue>(std::move(*id));
    // A regex location has no prefix: the whole URI is the API's path.
    if (lc->match == LocMatch::Prefix || lc->match == LocMatch::Exact) c.prefix = lc->name;
    lc->content_handler = run_api;
    return {};
}

// Once per generation about to serve, in the master: the forked
// workers see the numbers in their copy.
Status init_master(const conf::Roots& g, const std::optional<conf::WorkerUser>&) {
    static uint64_t loads = 0;  // the master's, for its life
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    if (!main) return {};
    auto* m = static_cast<ApiMain*>(main[api_module.index]);
    if (!m) return {};
    m->generation = loads++;
    m->loaded = event::system_clock().wall();
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"api", conf::kLocation, conf::Arity{0, 1, false}, conf::custom<set_api>()},
};

}  // namespace

extern const conf::Module api_module{
    .name = "api",
    .directives = kDirectives,
    .main = conf::level<ApiMain>(),
    .loc = conf::level<ApiConf>(),
    .init_master = init_master,
};

}  // namespace gatehouse::http
