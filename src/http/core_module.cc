#include "http/core_module.h"

#include <algorithm>
#include <charconv>

#include "conf/syslog.h"
#include "core/log.h"
#include "event/listen_spec.h"
#include "http/body.h"
#include "http/phases.h"
#include "http/v1/connection.h"
#include "http/v2/connection.h"

namespace gatehouse::http {

extern const VariableDef kCoreVariables[];  // variables.cc
extern const size_t kCoreVariablesCount;

namespace {

using conf::ConfArray;
using conf::Ctx;
using conf::Level;
using conf::Node;

// Merges every module's structs of `level` from the parent array into the
// child array.
void merge_level(Level level, ConfArray parent, ConfArray child) {
    for (const Module* m : modules) {
        const conf::LevelOps& ops = m->ops(level);
        if (ops.merge && parent[m->index] && child[m->index])
            ops.merge(parent[m->index], child[m->index]);
    }
}

void merge_locations(LocConf& parent) {
    for (LocConf* l : parent.locations) {
        merge_level(Level::Loc, parent.loc_confs, l->loc_confs);
        merge_locations(*l);
    }
}

Status open_http(Ctx& cx, const Node& n) {
    if (cx.level(Level::Main)) return cx.duplicate(n);
    ConfArray main = cx.create_level(Level::Main);
    ConfArray srv = cx.create_level(Level::Srv);
    ConfArray loc = cx.create_level(Level::Loc);
    cx.install_level(Level::Main, main);
    auto* m = cx.conf<HttpMainConf>(http_core_module, Level::Main);
    m->prefix = cx.prefix();
    m->main_confs = main;
    m->srv_confs = srv;
    m->loc_confs = loc;
    m->vars.load_modules();
    core_loc(loc).loc_confs = loc;
    {
        Ctx::LevelScope s1(cx, Level::Srv, srv);
        Ctx::LevelScope s2(cx, Level::Loc, loc);
        if (auto s = cx.walk(n.children, conf::kHttp); !s) return s;
    }
    for (SrvConf* s : m->servers) {
        merge_level(Level::Srv, srv, s->srv_confs);
        merge_level(Level::Loc, loc, s->loc_confs);
        merge_locations(core_loc(s->loc_confs));
        // Named locations are not in the tree the search walks, but they
        // inherit from their server all the same [nginx].
        for (LocConf* l : s->named) merge_level(Level::Loc, s->loc_confs, l->loc_confs);
    }
    // A limit_except block inherits from its location, merged by now.
    for (auto& [parent, block] : m->limit_excepts) merge_level(Level::Loc, parent, block);
    return {};
}

Status open_server(Ctx& cx, const Node& n) {
    auto* m = cx.conf<HttpMainConf>(http_core_module, Level::Main);
    ConfArray srv = cx.create_level(Level::Srv);
    ConfArray loc = cx.create_level(Level::Loc);
    auto* sc = static_cast<SrvConf*>(srv[http_core_module.index]);
    sc->srv_confs = srv;
    sc->loc_confs = loc;
    sc->where = n.where();
    core_loc(loc).loc_confs = loc;
    m->servers.push_back(sc);
    Ctx::LevelScope s1(cx, Level::Srv, srv);
    Ctx::LevelScope s2(cx, Level::Loc, loc);
    return cx.walk(n.children, conf::kServer);
}

Status open_location(Ctx& cx, const Node& n) {
    auto* parent = cx.conf<LocConf>(http_core_module, Level::Loc);
    auto* sc = cx.conf<SrvConf>(http_core_module, Level::Srv);
    ConfArray loc = cx.create_level(Level::Loc);
    auto* lc = static_cast<LocConf*>(loc[http_core_module.index]);
    lc->loc_confs = loc;
    lc->where = n.where();
    lc->is_location = true;
    std::string_view uri;
    if (n.args.size() == 2) {
        std::string_view mod = n.args[0].text;
        uri = n.args[1].text;
        if (mod == "=") lc->match = LocMatch::Exact;
        else if (mod == "~") lc->match = LocMatch::Regex;
        else if (mod == "~*") lc->match = LocMatch::RegexCaseless;
        else if (mod == "^~") lc->match = LocMatch::PrefixNoRegex;
        else return cx.error(n, "invalid location modifier \"" + std::string(mod) + "\"");
    } else {
        uri = n.args[0].text;
        // "location =/x" and "location ~^/x" written without a space.
        if (uri.size() > 1 && uri[0] == '=') { lc->match = LocMatch::Exact; uri.remove_prefix(1); }
        else if (uri.size() > 2 && uri.substr(0, 2) == "~*") { lc->match = LocMatch::RegexCaseless; uri.remove_prefix(2); }
        else if (uri.size() > 2 && uri.substr(0, 2) == "^~") { lc->match = LocMatch::PrefixNoRegex; uri.remove_prefix(2); }
        else if (uri.size() > 1 && uri[0] == '~') { lc->match = LocMatch::Regex; uri.remove_prefix(1); }
        else if (!uri.empty() && uri[0] == '@') lc->match = LocMatch::Named;
    }
    if (uri.empty()) return cx.error(n, "empty location name");
    lc->name = std::string(uri);
    bool nested = parent->is_location;
    if (nested) {
        if (parent->match == LocMatch::Exact)
            return cx.error(n, "location \"" + lc->name + "\" cannot be inside the exact location \"" + parent->name + "\"");
        if (parent->match == LocMatch::Named)
            return cx.error(n, "location \"" + lc->name + "\" cannot be inside the named location \"" + parent->name + "\"");
        if (lc->match == LocMatch::Named)
            return cx.error(n, "named location \"" + lc->name + "\" can be on the server level only");
        bool regexes = lc->match == LocMatch::Regex || lc->match == LocMatch::RegexCaseless ||
                       parent->match == LocMatch::Regex || parent->match == LocMatch::RegexCaseless;
        if (!regexes && lc->name.compare(0, parent->name.size(), parent->name) != 0)
            return cx.error(n, "location \"" + lc->name + "\" is outside location \"" + parent->name + "\"");
    }
    if (lc->match == LocMatch::Regex || lc->match == LocMatch::RegexCaseless) {
        auto re = CaptureRegex::compile(cx, n, lc->name, lc->match == LocMatch::RegexCaseless);
        if (!re) return re.error();
        lc->regex = std::make_unique<CaptureRegex>(std::move(*re));
    }
    for (const LocConf* o : parent->locations)
        if (o->match == lc->match && o->name == lc->name)
            return cx.error(n, "duplicate location \"" + lc->name + "\"");
    lc->parent = nested ? parent : nullptr;
    if (lc->match == LocMatch::Named) {
        for (const LocConf* o : sc->named)
            if (o->name == lc->name) return cx.error(n, "duplicate location \"" + lc->name + "\"");
        sc->named.push_back(lc);
    } else {
        parent->locations.push_back(lc);
    }
    Ctx::LevelScope s(cx, Level::Loc, loc);
    return cx.walk(n.children, conf::kLocation);
}

// "listen addr:from-to" (or "from-to"): a port range, one socket per
// port [nginx 1.27.3]. Returns false when `spec` has no range; a range
// that is not "from-to" with 0 < from <= to <= 65535 is an error.
Result<bool> listen_port_range(std::string_view spec, std::string_view& prefix, uint32_t& from, uint32_t& to) {
    if (spec.substr(0, 5) == "unix:") return false;
    const size_t colon = spec.rfind(':');
    const size_t start = colon == std::string_view::npos ? 0 : colon + 1;
    if (colon != std::string_view::npos && spec[0] != '[' && spec.find(':') != colon) return false;
    const std::string_view ports = spec.substr(start);
    const size_t dash = ports.find('-');
    if (dash == std::string_view::npos) return false;
    const std::string_view a = ports.substr(0, dash), b = ports.substr(dash + 1);
    auto num = [](std::string_view d, uint32_t& v) {
        auto [p, ec] = std::from_chars(d.data(), d.data() + d.size(), v);
        return !d.empty() && ec == std::errc() && p == d.data() + d.size();
    };
    if (!num(a, from) || !num(b, to) || from == 0 || from > to || to > 65535)
        return make_error("invalid port range in \"" + std::string(spec) + "\"");
    prefix = spec.substr(0, start);
    return true;
}

Status add_listen(Ctx& cx, const Node& n, SrvConf& sc, std::string_view spec) {
    ListenConf l;
    l.where = n.where();
    conf::AddressRules rules;
    rules.port_only = true;
    rules.wildcard = true;
    rules.names = false;
    rules.unix_path = true;
    auto a = conf::parse_address(spec, rules);
    if (!a) return cx.invalid(n, a.error());
    l.addr = std::move(*a);
    for (size_t i = 1; i < n.args.size(); ++i) {
        std::string_view p = n.args[i].text;
        if (p == "default_server" || p == "default") l.default_server = true;
        else if (p == "reuseport") l.reuseport = true;
        else if (p == "deferred") l.deferred = true;
        else if (p == "ssl") l.ssl = true;
        else if (p == "proxy_protocol") l.proxy_protocol = true;
        else if (p == "http2") {
            // nginx 1.25 still takes it, with this warning.
            GH_LOG(Warn, "the \"listen ... http2\" directive is deprecated, use the \"http2\" directive instead in %s",
                   n.where().c_str());
            l.http2 = true;
        } else if (p == "bind") continue;
        else if (p.substr(0, 8) == "backlog=") {
            std::string_view v = p.substr(8);
            if (v == "-1") {
                l.backlog = -1;
                continue;
            }
            auto b = conf::parse_number(v, 1u << 20);
            if (!b) return cx.error(n, "invalid backlog \"" + std::string(v) + "\"");
            l.backlog = static_cast<int>(*b);
        } else if (p.substr(0, 9) == "ipv6only=") {
            auto f = conf::parse_flag(p.substr(9));
            if (!f) return cx.invalid(n, f.error());
            l.ipv6only = *f;
        } else if (p.substr(0, 7) == "rcvbuf=" || p.substr(0, 7) == "sndbuf=") {
            auto v = conf::parse_size(p.substr(7));
            if (!v || *v == 0 || *v > (1u << 30)) {
                return cx.error(n, std::string("invalid ") + (p[0] == 'r' ? "rcvbuf" : "sndbuf") + " \"" +
                                       std::string(p.substr(7)) + "\"");
            }
            (p[0] == 'r' ? l.rcvbuf : l.sndbuf) = static_cast<int>(*v);
        } else if (p.substr(0, 13) == "so_keepalive=") {
            auto f = conf::parse_flag(p.substr(13));
            if (!f) return cx.invalid(n, f.error());
            l.so_keepalive = *f;
        } else {
            return cx.error(n, "invalid parameter \"" + std::string(p) + "\"");
        }
    }
    for (const auto& o : sc.listens)
        if (o.addr.text() == l.addr.text())
            return cx.error(n, "duplicate listen " + l.addr.text());
    sc.listens.push_back(std::move(l));
    return {};
}

Status set_listen(Ctx& cx, const Node& n, SrvConf& sc) {
    const std::string_view spec = n.args[0].text;
    std::string_view prefix;
    uint32_t from = 0, to = 0;
    auto range = listen_port_range(spec, prefix, from, to);
    if (!range) return cx.invalid(n, range.error());
    if (!*range) return add_listen(cx, n, sc, spec);
    for (uint32_t port = from; port <= to; ++port)
        if (Status st = add_listen(cx, n, sc, std::string(prefix) + std::to_string(port)); !st) return st;
    return {};
}

Status set_server_name(Ctx& cx, const Node& n, SrvConf& sc) {
    for (const auto& a : n.args) {
        ServerName s;
        s.name = a.text;
        if (!s.name.empty() && s.name[0] == '~') {
            auto re = CaptureRegex::compile(cx, n, std::string_view(s.name).substr(1), true);
            if (!re) return re.error();
            s.regex = std::make_unique<CaptureRegex>(std::move(*re));
        } else {
            if (s.name.find_first_of("/\\ ") != std::string::npos)
                return cx.error(n, "server name \"" + s.name + "\" has suspicious symbols");
            std::transform(s.name.begin(), s.name.end(), s.name.begin(),
                           [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
            size_t stars = std::count(s.name.begin(), s.name.end(), '*');
            bool head = s.name.size() > 2 && s.name.compare(0, 2, "*.") == 0;
            bool tail = s.name.size() > 2 && s.name.compare(s.name.size() - 2, 2, ".*") == 0;
            if (stars > 1 || (stars == 1 && !head && !tail))
                return cx.error(n, "invalid server name or wildcard \"" + s.name + "\"");
        }
        sc.server_names.push_back(std::move(s));
    }
    return {};
}

Status set_large_buffers(Ctx& cx, const Node& n, SrvConf& sc) {
    if (sc.large_header_buffers_num) return cx.duplicate(n);
    auto num = conf::parse_number(n.args[0].text, 1024);
    if (!num || *num == 0) return cx.invalid(n, make_error("invalid value \"" + n.args[0].text + "\""));
    auto size = conf::parse_size(n.args[1].text);
    if (!size) return cx.invalid(n, size.error());
    if (*size < 128 || *size > (1u << 20))
        return cx.error(n, "the \"large_client_header_buffers\" size must be from 128 to 1m");
    sc.large_header_buffers_num = *num;
    sc.large_header_buffer_size = *size;
    return {};
}

// An "error_log" of the http block, a server or a location: a log of its
// own, each directive a sink (the same file twice writes each line twice,
// as nginx). The files are opened now, by the master, and reopened on
// USR1 with every such log of the process (HttpErrorLog's list).
struct HttpErrorLog {
    log::ErrorLog log;
    HttpErrorLog* prev = nullptr;
    HttpErrorLog* next = nullptr;
    static inline HttpErrorLog* first = nullptr;
    HttpErrorLog() {
        next = first;
        if (first) first->prev = this;
        first = this;
    }
    HttpErrorLog(const HttpErrorLog&) = delete;
    HttpErrorLog& operator=(const HttpErrorLog&) = delete;
    ~HttpErrorLog() {
        if (prev) prev->next = next;
        else first = next;
        if (next) next->prev = prev;
    }
};

Status set_error_log(Ctx& cx, const Node& n, LocConf& lc) {
    const std::string& p = n.args[0].text;
    if (p.empty()) return cx.error(n, "empty path in \"error_log\" directive");
    if (p.compare(0, 7, "memory:") == 0) return cx.error(n, "the memory buffer error log is not supported");
    log::Level level = log::Level::Error;
    if (n.args.size() == 2) {
        auto l = log::parse_level(n.args[1].text);
        if (!l) return cx.invalid(n, l.error());
        level = *l;
    }
    // The level's own log: made by its first directive (merging has not
    // run yet, so a log here is this level's).
    if (!lc.error_log) lc.error_log = &cx.arena().make<HttpErrorLog>()->log;
    if (conf::is_syslog(p)) {
        auto t = conf::parse_syslog(p);
        if (!t) return cx.error(n, t.message());
        lc.error_log->add_syslog(std::move(*t), level);
    } else {
        lc.error_log->add(p == "stderr" ? p : cx.full_path(p), level);
    }
    if (auto s = lc.error_log->open(); !s) return cx.error(n, s.message());
    return {};
}

void reopen_error_logs(const std::optional<conf::WorkerUser>& workers) {
    std::optional<uid_t> owner;
    if (workers) owner = workers->uid;
    for (HttpErrorLog* l = HttpErrorLog::first; l; l = l->next) l->log.reopen(owner);
}

Status set_server_tokens(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.server_tokens) return cx.duplicate(n);
    std::string_view v = n.args[0].text;
    if (v == "off") lc.server_tokens = 0;
    else if (v == "on") lc.server_tokens = 1;
    else if (v == "build") lc.server_tokens = 2;
    else return cx.error(n, "invalid value \"" + std::string(v) + "\" in \"server_tokens\" directive, it must be \"on\", \"off\" or \"build\"");
    return {};
}

// disable_symlinks off | on | if_not_owner [from=part]
Status set_disable_symlinks(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.disable_symlinks) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "off") lc.disable_symlinks = Symlinks::Follow;
    else if (v == "on") lc.disable_symlinks = Symlinks::Refuse;
    else if (v == "if_not_owner") lc.disable_symlinks = Symlinks::RefuseIfNotOwner;
    else return cx.error(n, "invalid value \"" + v + "\"");
    if (n.args.size() == 1) return {};
    const std::string& p = n.args[1].text;
    if (p.substr(0, 5) != "from=") return cx.error(n, "invalid parameter \"" + p + "\"");
    if (lc.disable_symlinks == Symlinks::Follow)
        return cx.error(n, "\"from=\" cannot be used with \"off\" parameter");
    auto cv = ComplexValue::compile(cx, n, std::string_view(p).substr(5));
    if (!cv) return cv.error();
    lc.symlinks_from = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

Status set_satisfy(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.satisfy_any) return cx.duplicate(n);
    std::string_view v = n.args[0].text;
    if (v == "all") lc.satisfy_any = false;
    else if (v == "any") lc.satisfy_any = true;
    else return cx.error(n, "invalid value \"" + std::string(v) + "\" in \"satisfy\" directive, it must be \"all\" or \"any\"");
    return {};
}

Status set_keepalive_timeout(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.keepalive_timeout) return cx.duplicate(n);
    auto t = conf::parse_duration(n.args[0].text);
    if (!t) return cx.invalid(n, t.error());
    lc.keepalive_timeout = *t;
    // The second value is for "Keep-Alive: timeout=N" (whole seconds); it
    // inherits apart from the first, as nginx's does.
    if (n.args.size() == 2) {
        auto h = conf::parse_duration(n.args[1].text);
        if (!h) return cx.invalid(n, h.error());
        lc.keepalive_header = std::chrono::duration_cast<std::chrono::seconds>(*h);
    }
    return {};
}

// early_hints string ...: several directives at one level add up.
Status set_early_hints(Ctx& cx, const Node& n, LocConf& lc) {
    if (!lc.early_hints) lc.early_hints = cx.arena().make<std::vector<ComplexValue>>();
    for (const conf::Arg& a : n.args) {
        auto cv = ComplexValue::compile(cx, n, a.text);
        if (!cv) return cv.error();
        lc.early_hints->push_back(std::move(*cv));
    }
    return {};
}

Status set_keepalive_disable(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.keepalive_disable) return cx.duplicate(n);
    uint8_t bits = 0;
    for (const auto& a : n.args) {
        if (a.text == "none") {
            if (n.args.size() > 1) return cx.error(n, "invalid value \"none\" together with other browsers");
        } else if (a.text == "msie6") {
            bits |= kKeepaliveDisableMsie6;
        } else if (a.text == "safari") {
            bits |= kKeepaliveDisableSafari;
        } else {
            return cx.error(n, "invalid value \"" + a.text + "\"");
        }
    }
    lc.keepalive_disable = bits;
    return {};
}

Status set_lingering_close(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.lingering_close) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "off") lc.lingering_close = 0;
    else if (v == "on") lc.lingering_close = 1;
    else if (v == "always") lc.lingering_close = 2;
    else return cx.invalid(n, make_error("invalid value \"" + v + "\", it must be \"off\", \"on\" or \"always\""));
    return {};
}

// limit_except METHOD ... { ... }: the block's directives apply to the
// requests with another method [nginx].
Status open_limit_except(Ctx& cx, const Node& n) {
    auto* lc = cx.conf<LocConf>(http_core_module, Level::Loc);
    auto* m = cx.conf<HttpMainConf>(http_core_module, Level::Main);
    GH_CHECK(lc && m);
    if (lc->limit_except_confs) return cx.duplicate(n);
    uint32_t allowed = 0;
    for (const conf::Arg& a : n.args) {
        uint32_t bit = method_bit(a.text);
        if (!bit) return cx.error(n, "invalid method \"" + a.text + "\"");
        allowed |= bit;
        if (a.text == "GET") allowed |= method_bit("HEAD");
    }
    ConfArray parent = cx.level(Level::Loc);
    ConfArray block = cx.create_level(Level::Loc);
    auto& bl = core_loc(block);
    bl.loc_confs = block;
    bl.match = lc->match;
    bl.name = lc->name;
    bl.is_location = lc->is_location;
    bl.where = n.where();
    lc->limit_except = allowed;
    lc->limit_except_confs = block;
    m->limit_excepts.emplace_back(parent, block);
    Ctx::LevelScope scope(cx, Level::Loc, block);
    return cx.walk(n.children, conf::kLimitExcept);
}

Status set_internal(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.internal) return cx.duplicate(n);
    lc.internal = true;
    return {};
}

Status set_error_page(Ctx& cx, const Node& n, LocConf& lc) {
    // error_page code ... [=[response]] uri;
    size_t last = n.args.size() - 1;
    int overwrite = -1;
    size_t codes_end = last;
    const std::string& maybe = n.args[last - 1].text;
    if (!maybe.empty() && maybe[0] == '=') {
        codes_end = last - 1;
        if (maybe.size() == 1) {
            overwrite = 0;
        } else {
            auto v = conf::parse_number(std::string_view(maybe).substr(1), 999);
            if (!v) return cx.error(n, "invalid value \"" + maybe + "\"");
            overwrite = static_cast<int>(*v);
        }
    }
    if (codes_end == 0) return cx.error(n, "invalid number of arguments in \"error_page\" directive");
    auto uri = ComplexValue::compile(cx, n, n.args[last].text);
    if (!uri) return uri.error();
    for (size_t i = 0; i < codes_end; ++i) {
        auto code = conf::parse_number(n.args[i].text, 999);
        if (!code) return cx.error(n, "invalid value \"" + n.args[i].text + "\"");
        if (*code < 300 || *code > 599) return cx.error(n, "value \"" + n.args[i].text + "\" must be between 300 and 599");
        ErrorPage ep;
        ep.status = static_cast<int>(*code);
        ep.overwrite = overwrite;
        ep.uri = *uri;
        lc.error_pages.push_back(std::move(ep));
    }
    lc.error_pages_set = true;
    return {};
}

void merge_srv(const SrvConf& up, SrvConf& c) {
    conf::inherit(c.client_header_buffer_size, up.client_header_buffer_size, 1024);
    conf::inherit(c.large_header_buffers_num, up.large_header_buffers_num, 4);
    conf::inherit(c.large_header_buffer_size, up.large_header_buffer_size, 8192);
    conf::inherit(c.client_header_timeout, up.client_header_timeout, std::chrono::seconds(60));
    conf::inherit(c.underscores_in_headers, up.underscores_in_headers, false);
    conf::inherit(c.ignore_invalid_headers, up.ignore_invalid_headers, true);
    conf::inherit(c.max_headers, up.max_headers, 1000);
    conf::inherit(c.merge_slashes, up.merge_slashes, true);
    conf::inherit(c.request_pool_size, up.request_pool_size, 4096);
    conf::inherit(c.connection_pool_size, up.connection_pool_size, 512);
    conf::inherit(c.http2, up.http2, false);
}

void merge_loc(const LocConf& up, LocConf& c) {
    using namespace std::chrono_literals;
    conf::inherit(c.internal, std::optional<bool>(false), false);
    conf::inherit(c.client_max_body_size, up.client_max_body_size, 1u << 20);
    conf::inherit(c.client_body_buffer_size, up.client_body_buffer_size, 16384);
    conf::inherit(c.client_body_timeout, up.client_body_timeout, 60s);
    conf::inherit(c.keepalive_timeout, up.keepalive_timeout, 75s);
    conf::inherit(c.keepalive_min_timeout, up.keepalive_min_timeout, conf::Duration(0));
    conf::inherit(c.keepalive_requests, up.keepalive_requests, 1000);
    conf::inherit(c.send_timeout, up.send_timeout, 60s);
    conf::inherit(c.lingering_close, up.lingering_close, 1);
    conf::inherit(c.lingering_time, up.lingering_time, 30s);
    conf::inherit(c.lingering_timeout, up.lingering_timeout, 5s);
    conf::inherit(c.server_tokens, up.server_tokens, 1);
    conf::inherit(c.satisfy_any, up.satisfy_any, false);
    if (!c.error_log) c.error_log = up.error_log;
    conf::inherit(c.auth_delay, up.auth_delay, conf::Duration(0));
    conf::inherit(c.tcp_nodelay, up.tcp_nodelay, true);
    conf::inherit(c.chunked_transfer_encoding, up.chunked_transfer_encoding, true);
    conf::inherit(c.absolute_redirect, up.absolute_redirect, true);
    conf::inherit(c.port_in_redirect, up.port_in_redirect, true);
    conf::inherit(c.server_name_in_redirect, up.server_name_in_redirect, false);
    conf::inherit(c.log_not_found, up.log_not_found, true);
    if (!c.early_hints) c.early_hints = up.early_hints;
    if (!c.disable_symlinks) {
        c.disable_symlinks = up.disable_symlinks.value_or(Symlinks::Follow);
        c.symlinks_from = up.symlinks_from;
    }
    conf::inherit(c.log_subrequest, up.log_subrequest, false);
    conf::inherit(c.reset_timedout_connection, up.reset_timedout_connection, false);
    conf::inherit(c.recursive_error_pages, up.recursive_error_pages, false);
    conf::inherit(c.client_body_temp_path, up.client_body_temp_path);
    conf::inherit(c.client_body_in_file_only, up.client_body_in_file_only, 0);
    conf::inherit(c.client_body_in_single_buffer, up.client_body_in_single_buffer, false);
    conf::inherit(c.keepalive_time, up.keepalive_time, std::chrono::hours(1));
    conf::inherit(c.keepalive_header, up.keepalive_header, std::chrono::seconds(0));
    conf::inherit(c.keepalive_disable, up.keepalive_disable, kKeepaliveDisableMsie6);
    conf::inherit(c.tcp_nopush, up.tcp_nopush, false);
    conf::inherit(c.sendfile_max_chunk, up.sendfile_max_chunk, 2u << 20);
    if (!c.output_buffers_num) {
        c.output_buffers_num = up.output_buffers_num ? *up.output_buffers_num : 2;
        c.output_buffers_size = up.output_buffers_size ? *up.output_buffers_size : 32768;
    }
    conf::inherit(c.postpone_output, up.postpone_output, 1460);
    conf::inherit(c.msie_padding, up.msie_padding, true);
    conf::inherit(c.msie_refresh, up.msie_refresh, false);
    if (!c.error_pages_set) c.error_pages = up.error_pages;
}

Status set_in_file_only(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.client_body_in_file_only) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "off") lc.client_body_in_file_only = 0;
    else if (v == "on") lc.client_body_in_file_only = 1;
    else if (v == "clean") lc.client_body_in_file_only = 2;
    else return cx.invalid(n, make_error("invalid value \"" + v + "\", it must be \"on\", \"clean\" or \"off\""));
    return {};
}

Status set_output_buffers(Ctx& cx, const Node& n, LocConf& lc) {
    if (lc.output_buffers_num) return cx.duplicate(n);
    auto num = conf::parse_number(n.args[0].text, 1024);
    if (!num || *num == 0) return cx.invalid(n, make_error("invalid value \"" + n.args[0].text + "\""));
    auto size = conf::parse_size(n.args[1].text);
    if (!size) return cx.invalid(n, size.error());
    if (*size == 0) return cx.invalid(n, make_error("invalid value \"" + n.args[1].text + "\""));
    lc.output_buffers_num = *num;
    lc.output_buffers_size = *size;
    return {};
}

// The *_hash_* sizes: a positive size, as nginx checks them; nothing
// else reads them.
template <auto Member>
Status set_hash_size(Ctx& cx, const Node& n, HttpMainConf& m) {
    if ((m.*Member).has_value()) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    if (*v == 0) return cx.invalid(n, make_error("invalid value \"" + n.args[0].text + "\""));
    m.*Member = *v;
    return {};
}

Status set_body_temp(Ctx& cx, const Node& n, LocConf& lc) { return set_temp_path(cx, n, lc.client_body_temp_path); }

// ---- after the http block: listening ports, name tables, phase arrays ----

bool same_sockaddr(const conf::Address& a, const conf::Address& b) { return a.text() == b.text(); }

bool is_wildcard(const conf::Address& a) {
    return (a.kind == conf::Address::Kind::Inet && (a.host == "*" || a.host == "0.0.0.0")) ||
           (a.kind == conf::Address::Kind::Inet6 && a.host == "::");
}

Status add_names(AddrServers& as, SrvConf* s) {
    for (const ServerName& n : s->server_names) {
        if (n.regex) {
            as.regex.emplace_back(n.regex.get(), s);
        } else if (n.name.compare(0, 2, "*.") == 0) {
            as.wild_head.emplace_back(n.name.substr(1), s);
        } else if (n.name.size() > 2 && n.name.compare(n.name.size() - 2, 2, ".*") == 0) {
            as.wild_tail.emplace_back(n.name.substr(0, n.name.size() - 1), s);
        } else if (!n.name.empty() && n.name[0] == '.') {
            // ".example.com": the name itself and every subdomain.
            as.exact.emplace(n.name.substr(1), s);
            as.wild_head.emplace_back(n.name, s);
        } else {
            auto [it, fresh] = as.exact.emplace(n.name, s);
            if (!fresh && it->second != s)
                GH_LOG(Warn, "conflicting server name \"%s\" on %s, ignored", n.name.c_str(),
                       as.addr.text().c_str());
        }
    }
    return {};
}

Status build_ports(HttpMainConf& m) {
    // Each distinct address, with its servers in config order.
    for (SrvConf* s : m.servers) {
        if (s->listens.empty()) {
            ListenConf l;
            auto a = conf::parse_address(getuid() == 0 ? "*:80" : "*:8000",
                                         conf::AddressRules{.port_only = true, .wildcard = true});
            l.addr = std::move(*a);
            l.where = s->where;
            s->listens.push_back(std::move(l));
        }
        for (const ListenConf& l : s->listens) {
            ListenPort* port = nullptr;
            for (auto& p : m.ports)
                if (p.bind.addr.port == l.addr.port && p.bind.addr.kind == l.addr.kind &&
                    (l.addr.kind == conf::Address::Kind::Unix ? p.bind.addr.path == l.addr.path : true)) {
                    // Same port and family: shared if one side is a wildcard
                    // or both are the same address.
                    if (p.wildcard || is_wildcard(l.addr) || same_sockaddr(p.bind.addr, l.addr)) port = &p;
                }
            if (!port) {
                m.ports.emplace_back();
                port = &m.ports.back();
                port->bind = l;
                port->wildcard = is_wildcard(l.addr);
                port->main_confs = m.main_confs;
            } else if (is_wildcard(l.addr) && !port->wildcard) {
                // A wildcard covers what was bound to one address: bind it instead.
                bool ssl = port->bind.ssl;
                ListenConf keep = l;
                port->bind = keep;
                port->bind.ssl = ssl;
                port->wildcard = true;
            }
            // "ssl" is a property of the socket: one server saying it makes
            // the port speak TLS for all of them, as in nginx.
            if (l.ssl) port->bind.ssl = true;
            AddrServers* as = nullptr;
            for (auto& a : port->addrs)
                if (same_sockaddr(a.addr, l.addr)) as = &a;
            if (!as) {
                port->addrs.emplace_back();
                as = &port->addrs.back();
                as->addr = l.addr;
            }
            if (l.proxy_protocol) as->proxy_protocol = true;
            if (l.http2) as->http2 = true;
            if (l.default_server) {
                if (as->default_server && as->default_server != s)
                    return make_error("a duplicate default server for " + l.addr.text() + " in " + l.where);
                as->default_server = s;
            }
        }
    }
    for (auto& p : m.ports) {
        // Specific addresses first: a connection's local address is looked
        // up in order, the wildcard catching the rest.
        std::stable_sort(p.addrs.begin(), p.addrs.end(), [](const AddrServers& a, const AddrServers& b) {
            return !is_wildcard(a.addr) && is_wildcard(b.addr);
        });
        for (auto& as : p.addrs) {
            for (SrvConf* s : m.servers)
                for (const ListenConf& l : s->listens)
                    if (same_sockaddr(l.addr, as.addr) ||
                        (is_wildcard(l.addr) && l.addr.port == as.addr.port && is_wildcard(as.addr))) {
                        if (!as.default_server) as.default_server = s;
                        if (auto st = add_names(as, s); !st) return st;
                        break;
                    }
            // Longest suffix or prefix first: the most specific wildcard wins.
            auto longer = [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); };
            std::stable_sort(as.wild_head.begin(), as.wild_head.end(), longer);
            std::stable_sort(as.wild_tail.begin(), as.wild_tail.end(), longer);
            auto to_default = [&](const auto& name) { return name.second == as.default_server; };
            as.one_server = as.regex.empty() && std::all_of(as.exact.begin(), as.exact.end(), to_default) &&
                            std::all_of(as.wild_head.begin(), as.wild_head.end(), to_default) &&
                            std::all_of(as.wild_tail.begin(), as.wild_tail.end(), to_default);
        }
    }
    return {};
}

Status postconfiguration(Ctx& cx) {
    HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, Level::Main);
    if (!m) return {};
    if (auto s = m->vars.check(); !s) return s;
    if (auto s = build_ports(*m); !s) return s;
    add_temp_dir(cx, m->prefix + std::string(kClientBodyTempDir));
    for (const Module* mod : modules) {
        if (!mod->http) continue;
        const ModuleHooks& h = *mod->http;
        if (h.filters_used && !h.filters_used(cx.level(Level::Main))) continue;
        if (h.after_response) m->after_response.push_back(h.after_response);
        if (h.header_filter) m->header_filters.push_back({h.header_filter, h.filters_wanted});
        if (h.body_filter) m->body_filters.push_back({h.body_filter, h.body_filter_engaged, h.filters_wanted});
    }
    // OutputState::held has a bit per engaged filter, and the locations'
    // skip masks one per filter.
    GH_CHECK(m->body_filters.size() <= 64 && m->header_filters.size() <= 64);
    build_phase_engine(*m);
    return {};
}

// The temp directories are made by the master, not on first use by a
// worker: a worker that is no longer root could not make them under a
// prefix that root owns.
Status init_master(const conf::Roots& g, const std::optional<conf::WorkerUser>& workers) {
    HttpMainConf* m = http_main(g[static_cast<int>(Level::Main)]);
    if (!m) return {};
    for (const std::string& dir : m->temp_dirs)
        if (auto s = make_temp_dir(dir, workers); !s) return s;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"http", conf::kMain, conf::Block, conf::custom<open_http>()},
    {"server", conf::kHttp, conf::Block, conf::custom<open_server>()},
    {"location", conf::kServer | conf::kLocation, conf::Block12, conf::custom<open_location>()},
    {"listen", conf::kServer, conf::Take1More, conf::custom<set_listen>()},
    {"server_name", conf::kServer, conf::Take1More, conf::custom<set_server_name>()},
    {"client_header_buffer_size", conf::kHttp | conf::kServer, conf::Take1,
     conf::size<&SrvConf::client_header_buffer_size>()},
    {"large_client_header_buffers", conf::kHttp | conf::kServer, conf::Take2,
     conf::custom<set_large_buffers>()},
    {"client_header_timeout", conf::kHttp | conf::kServer, conf::Take1,
     conf::duration<&SrvConf::client_header_timeout>()},
    {"underscores_in_headers", conf::kHttp | conf::kServer, conf::Take1,
     conf::flag<&SrvConf::underscores_in_headers>()},
    {"ignore_invalid_headers", conf::kHttp | conf::kServer, conf::Take1,
     conf::flag<&SrvConf::ignore_invalid_headers>()},
    {"max_headers", conf::kHttp | conf::kServer, conf::Take1, conf::number<&SrvConf::max_headers>()},
    {"merge_slashes", conf::kHttp | conf::kServer, conf::Take1, conf::flag<&SrvConf::merge_slashes>()},
    {"http2", conf::kHttp | conf::kServer, conf::Take1, conf::flag<&SrvConf::http2>()},
    {"internal", conf::kLocation, conf::Take0, conf::custom<set_internal>()},
    {"limit_except", conf::kLocation, conf::Arity{1, 255, true}, conf::custom<open_limit_except>()},
    {"client_max_body_size", conf::kHttpSrvLoc, conf::Take1, conf::size<&LocConf::client_max_body_size>()},
    {"client_body_buffer_size", conf::kHttpSrvLoc, conf::Take1,
     conf::size<&LocConf::client_body_buffer_size>()},
    {"client_body_timeout", conf::kHttpSrvLoc, conf::Take1,
     conf::duration<&LocConf::client_body_timeout>()},
    {"keepalive_timeout", conf::kHttpSrvLoc, conf::Take12, conf::custom<set_keepalive_timeout>()},
    {"keepalive_min_timeout", conf::kHttpSrvLoc, conf::Take1,
     conf::duration<&LocConf::keepalive_min_timeout>()},
    {"keepalive_requests", conf::kHttpSrvLoc, conf::Take1, conf::number<&LocConf::keepalive_requests>()},
    {"send_timeout", conf::kHttpSrvLoc, conf::Take1, conf::duration<&LocConf::send_timeout>()},
    {"lingering_close", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_lingering_close>()},
    {"lingering_time", conf::kHttpSrvLoc, conf::Take1, conf::duration<&LocConf::lingering_time>()},
    {"lingering_timeout", conf::kHttpSrvLoc, conf::Take1, conf::duration<&LocConf::lingering_timeout>()},
    {"server_tokens", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_server_tokens>()},
    {"satisfy", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_satisfy>()},
    {"error_log", conf::kHttpSrvLoc, conf::Take12, conf::custom<set_error_log>()},
    {"auth_delay", conf::kHttpSrvLoc, conf::Take1, conf::duration<&LocConf::auth_delay>()},
    {"tcp_nodelay", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::tcp_nodelay>()},
    {"chunked_transfer_encoding", conf::kHttpSrvLoc, conf::Take1,
     conf::flag<&LocConf::chunked_transfer_encoding>()},
    {"absolute_redirect", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::absolute_redirect>()},
    {"port_in_redirect", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::port_in_redirect>()},
    {"server_name_in_redirect", conf::kHttpSrvLoc, conf::Take1,
     conf::flag<&LocConf::server_name_in_redirect>()},
    {"log_not_found", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::log_not_found>()},
    {"disable_symlinks", conf::kHttpSrvLoc, conf::Take12, conf::custom<set_disable_symlinks>()},
    {"early_hints", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_early_hints>()},
    {"log_subrequest", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::log_subrequest>()},
    {"reset_timedout_connection", conf::kHttpSrvLoc, conf::Take1,
     conf::flag<&LocConf::reset_timedout_connection>()},
    {"recursive_error_pages", conf::kHttpSrvLoc, conf::Take1,
     conf::flag<&LocConf::recursive_error_pages>()},
    {"error_page", conf::kHttpSrvLoc | conf::kIf, conf::Take2More, conf::custom<set_error_page>()},
    {"client_body_temp_path", conf::kHttpSrvLoc, conf::Arity{1, 4, false}, conf::custom<set_body_temp>()},
    {"client_body_in_file_only", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_in_file_only>()},
    {"client_body_in_single_buffer", conf::kHttpSrvLoc, conf::Take1,
     conf::flag<&LocConf::client_body_in_single_buffer>()},
    {"keepalive_time", conf::kHttpSrvLoc, conf::Take1, conf::duration<&LocConf::keepalive_time>()},
    {"keepalive_disable", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_keepalive_disable>()},
    {"tcp_nopush", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::tcp_nopush>()},
    {"sendfile_max_chunk", conf::kHttpSrvLoc, conf::Take1, conf::size<&LocConf::sendfile_max_chunk>()},
    {"output_buffers", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_output_buffers>()},
    {"postpone_output", conf::kHttpSrvLoc, conf::Take1, conf::size<&LocConf::postpone_output>()},
    {"msie_padding", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::msie_padding>()},
    {"msie_refresh", conf::kHttpSrvLoc, conf::Take1, conf::flag<&LocConf::msie_refresh>()},
    {"request_pool_size", conf::kHttp | conf::kServer, conf::Take1, conf::size<&SrvConf::request_pool_size>()},
    {"connection_pool_size", conf::kHttp | conf::kServer, conf::Take1,
     conf::size<&SrvConf::connection_pool_size>()},
    {"server_names_hash_max_size", conf::kHttp, conf::Take1,
     conf::custom<set_hash_size<&HttpMainConf::server_names_hash_max_size>>()},
    {"server_names_hash_bucket_size", conf::kHttp, conf::Take1,
     conf::custom<set_hash_size<&HttpMainConf::server_names_hash_bucket_size>>()},
    {"variables_hash_max_size", conf::kHttp, conf::Take1,
     conf::custom<set_hash_size<&HttpMainConf::variables_hash_max_size>>()},
    {"variables_hash_bucket_size", conf::kHttp, conf::Take1,
     conf::custom<set_hash_size<&HttpMainConf::variables_hash_bucket_size>>()},
};

extern const ModuleHooks kCoreHooks{
    .variables = std::span<const VariableDef>(kCoreVariables, kCoreVariablesCount),
};

// Graceful shutdown: both front-ends retire their connections (see
// v1/connection.cc and v2/connection.cc).
void retire_connections() {
    v1::retire_connections();
    v2::retire_connections();
}

// worker_shutdown_timeout: both front-ends end what still runs.
void close_connections() {
    v1::close_connections();
    v2::close_connections();
}

// A socket per ListenPort; every connection accepted on it starts as
// HTTP/1 (TLS first on an "ssl" port).
void listens(const conf::Roots& g, std::vector<event::ListenSpec>& out) {
    HttpMainConf* m = http_main(g[static_cast<int>(Level::Main)]);
    if (!m) return;
    for (ListenPort& p : m->ports) {
        const ListenConf& l = p.bind;
        event::ListenSpec s;
        s.addr = l.addr;
        s.backlog = l.backlog;
        s.reuseport = l.reuseport;
        s.deferred = l.deferred;
        s.ipv6only = l.ipv6only;
        s.so_keepalive = l.so_keepalive;
        s.rcvbuf = l.rcvbuf;
        s.sndbuf = l.sndbuf;
        s.accept = v1::on_accept;
        s.data = &p;
        out.push_back(std::move(s));
    }
}

}  // namespace

std::string_view primary_server_name(const SrvConf& s) {
    if (s.server_names.empty()) return {};
    std::string_view n = s.server_names[0].name;
    if (n.size() > 1 && n[0] == '.') n.remove_prefix(1);
    return n;
}

bool early_hints_wanted(Request& r) {
    if (!r.loc_confs) return false;
    const auto* list = r.loc_conf<LocConf>(http_core_module).early_hints;
    if (!list) return false;
    for (const ComplexValue& cv : *list) {
        std::string_view v = cv.eval(r);
        if (!v.empty() && v != "0") return true;
    }
    return false;
}

bool keepalive_disabled(const Request& r, const LocConf& lc) {
    const uint8_t bits = *lc.keepalive_disable;
    if (bits == 0) return false;
    const HeaderField* h = r.headers.find("User-Agent");
    if (!h) return false;
    const std::string_view ua = h->value;
    auto has = [&](std::string_view s) { return ua.find(s) != std::string_view::npos; };
    // Opera said "MSIE" to get IE's pages.
    if (has("Opera")) return false;
    const size_t msie = ua.find("MSIE ");
    if (msie != std::string_view::npos) {
        // "MSIE 4." to "MSIE 6.", except 6 with SP2's fixes ("SV1").
        if (!(bits & kKeepaliveDisableMsie6) || r.in.method != Method::Post) return false;
        const std::string_view v = ua.substr(msie + 5);
        if (v.size() < 2 || v[1] != '.' || v[0] < '4' || v[0] > '6') return false;
        return v[0] != '6' || v.find("SV1") == std::string_view::npos;
    }
    // Safari on macOS, but not the Gecko and Chrome that name it too.
    return (bits & kKeepaliveDisableSafari) && !has("Gecko/") && !has("Chrome/") && has("Safari/") &&
           has("Mac OS X");
}

Status set_temp_path(Ctx& cx, const Node& n, std::optional<std::string>& field) {
    if (field) return cx.duplicate(n);
    for (size_t i = 1; i < n.args.size(); ++i) {
        const std::string& l = n.args[i].text;
        if (l != "1" && l != "2") return cx.error(n, "invalid value \"" + l + "\"");
    }
    field = cx.full_path(n.args[0].text);
    while (field->size() > 1 && field->back() == '/') field->pop_back();
    add_temp_dir(cx, *field);
    return {};
}

uint32_t method_bit(std::string_view m) {
    static constexpr std::string_view kNames[] = {"GET",  "HEAD",     "POST",      "PUT",  "DELETE",
                                                  "MKCOL", "COPY",    "MOVE",      "OPTIONS", "PROPFIND",
                                                  "PROPPATCH", "LOCK", "UNLOCK", "PATCH"};
    for (size_t i = 0; i < std::size(kNames); ++i)
        if (m == kNames[i]) return 1u << i;
    return 0;
}

void add_temp_dir(Ctx& cx, std::string dir) {
    HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, Level::Main);
    if (!m || std::find(m->temp_dirs.begin(), m->temp_dirs.end(), dir) != m->temp_dirs.end()) return;
    m->temp_dirs.push_back(std::move(dir));
}

HttpMainConf* http_main(const conf::ConfArray main_confs) {
    return main_confs ? static_cast<HttpMainConf*>(main_confs[http_core_module.index]) : nullptr;
}

extern const conf::Module http_core_module{
    .name = "http_core",
    .directives = kDirectives,
    .main = conf::level<HttpMainConf>(),
    .srv = conf::level<SrvConf, merge_srv>(),
    .loc = conf::level<LocConf, merge_loc>(),
    .postconfiguration = postconfiguration,
    .http = &kCoreHooks,
    .listens = listens,
    .init_master = init_master,
    .quit_worker = retire_connections,
    .stop_worker = close_connections,
    .reopen_logs = reopen_error_logs,
};

}  // namespace gatehouse::http
