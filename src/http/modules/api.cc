// api_module: "api [write=on|off]" in a location serves the upstream part
// of the NGINX Plus REST API, in its shape, so that the tools written for
// it work here:
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
// Differences: a body that is not JSON gets 400 (NGINX Plus: 415) with
// the parser's reason; "fields" is ignored; a server is an address (no
// host names: the worker would have to resolve them).
#include <cstring>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/str.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"
#include "upstream/upstream.h"

namespace gatehouse::http {

extern const conf::Module api_module;

namespace {

using conf::Ctx;
using conf::Node;

constexpr std::string_view kHref = "https://nginx.org/en/docs/http/ngx_http_api_module.html";
constexpr int kLatestVersion = 9;

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

void write_peer(json::Writer& w, const upstream::ServerInfo& s) {
    w.begin_object();
    w.key("id").number(s.id).key("server").string(s.server).key("name").string(s.name);
    w.key("backup").boolean(s.backup).key("weight").number(s.weight).key("state").string(s.state);
    w.key("active").number(s.active);
    if (s.max_conns) w.key("max_conns").number(s.max_conns);
    w.key("requests").unsigned_number(s.requests).key("fails").number(s.fails);
    w.end_object();
}

void write_group(json::Writer& w, upstream::UpstreamConf& u, event::Msec now) {
    w.begin_object().key("peers").begin_array();
    for (const auto& s : upstream::list_servers(u, now)) write_peer(w, s);
    w.end_array();
    w.key("keepalive").number(0).key("zombies").unsigned_number(upstream::zombies(u));
    w.key("zone").string(u.zone_name).end_object();
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
    int version = 0;
    if (seg[0].size() != 1 || seg[0][0] < '1' || seg[0][0] > '0' + kLatestVersion)
        return fail(r, 404, "UnknownVersion", "unknown version");
    version = seg[0][0] - '0';
    (void)version;  // every version answers the same for upstreams
    if (seg.size() == 1 || (seg.size() == 2 && seg[1] == "http")) {
        if (!read) return method();
        w.begin_array().string(seg.size() == 1 ? "http" : "upstreams").end_array();
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
                write_group(w, *u, now);
            }
        w.end_object();
        return send(r, 200, w.out());
    }
    upstream::UpstreamConf* u = find_group(r, seg[3]);
    if (!u) return fail(r, 404, "UpstreamNotFound", "upstream not found");
    if (!u->zone_group) return fail(r, 400, "UpstreamStatic", "upstream is static");
    if (seg.size() == 4) {
        if (!read) return method();
        write_group(w, *u, now);
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

constexpr conf::Directive kDirectives[] = {
    {"api", conf::kLocation, conf::Arity{0, 1, false}, conf::custom<set_api>()},
};

}  // namespace

extern const conf::Module api_module{
    .name = "api",
    .directives = kDirectives,
    .loc = conf::level<ApiConf>(),
};

}  // namespace gatehouse::http
