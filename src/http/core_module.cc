#include "http/core_module.h"

namespace gatehouse::http {

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
    m->main_confs = main;
    m->srv_confs = srv;
    m->loc_confs = loc;
    static_cast<LocConf*>(loc[http_core_module.index])->loc_confs = loc;
    {
        Ctx::LevelScope s1(cx, Level::Srv, srv);
        Ctx::LevelScope s2(cx, Level::Loc, loc);
        if (auto s = cx.walk(n.children, conf::kHttp); !s) return s;
    }
    for (SrvConf* s : m->servers) {
        merge_level(Level::Srv, srv, s->srv_confs);
        merge_level(Level::Loc, loc, s->loc_confs);
        merge_locations(*static_cast<LocConf*>(s->loc_confs[http_core_module.index]));
    }
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
    static_cast<LocConf*>(loc[http_core_module.index])->loc_confs = loc;
    m->servers.push_back(sc);
    Ctx::LevelScope s1(cx, Level::Srv, srv);
    Ctx::LevelScope s2(cx, Level::Loc, loc);
    return cx.walk(n.children, conf::kServer);
}

Status open_location(Ctx& cx, const Node& n) {
    auto* parent = cx.conf<LocConf>(http_core_module, Level::Loc);
    ConfArray loc = cx.create_level(Level::Loc);
    auto* lc = static_cast<LocConf*>(loc[http_core_module.index]);
    lc->loc_confs = loc;
    lc->where = n.where();
    std::string_view mod, uri;
    if (n.args.size() == 2) {
        mod = n.args[0].text;
        uri = n.args[1].text;
        if (mod == "=") lc->match = LocMatch::Exact;
        else if (mod == "~") lc->match = LocMatch::Regex;
        else if (mod == "~*") lc->match = LocMatch::RegexCaseless;
        else if (mod == "^~") lc->match = LocMatch::PrefixNoRegex;
        else return cx.error(n, "invalid location modifier \"" + std::string(mod) + "\"");
    } else {
        uri = n.args[0].text;
        if (!uri.empty() && uri[0] == '@') lc->match = LocMatch::Named;
    }
    if (uri.empty()) return cx.error(n, "empty location name");
    lc->name = std::string(uri);
    if (parent->parent == nullptr && parent->match == LocMatch::Named)
        return cx.error(n, "location \"" + lc->name + "\" cannot be inside the named location \"" +
                               parent->name + "\"");
    if (lc->match == LocMatch::Named && parent->parent != nullptr)
        return cx.error(n, "named location \"" + lc->name + "\" can be on the server level only");
    if (parent->match == LocMatch::Exact && parent->parent != nullptr)
        return cx.error(n, "location \"" + lc->name + "\" cannot be inside the exact location \"" +
                               parent->name + "\"");
    // Only locations chosen by URI nest; the top ones have parent null.
    bool at_server = cx.context() == conf::kServer;
    lc->parent = at_server ? nullptr : parent;
    if (!at_server && lc->match != LocMatch::Regex && lc->match != LocMatch::RegexCaseless &&
        lc->name.compare(0, parent->name.size(), parent->name) != 0 &&
        parent->match != LocMatch::Regex && parent->match != LocMatch::RegexCaseless)
        return cx.error(n, "location \"" + lc->name + "\" is outside location \"" + parent->name + "\"");
    parent->locations.push_back(lc);
    Ctx::LevelScope s(cx, Level::Loc, loc);
    return cx.walk(n.children, conf::kLocation);
}

Status set_listen(Ctx& cx, const Node& n, SrvConf& sc) {
    ListenConf l;
    l.where = n.where();
    conf::AddressRules rules;
    rules.port_only = true;
    rules.wildcard = true;
    rules.names = false;
    auto a = conf::parse_address(n.args[0].text, rules);
    if (!a) return cx.invalid(n, a.error());
    l.addr = std::move(*a);
    for (size_t i = 1; i < n.args.size(); ++i) {
        std::string_view p = n.args[i].text;
        if (p == "default_server" || p == "default") l.default_server = true;
        else if (p == "reuseport") l.reuseport = true;
        else if (p == "deferred") l.deferred = true;
        else if (p == "ssl") l.ssl = true;
        else if (p.substr(0, 8) == "backlog=") {
            std::string_view v = p.substr(8);
            bool neg = v == "-1";
            auto b = conf::parse_number(v, 65535);
            if (!neg && !b) return cx.error(n, "invalid backlog \"" + std::string(v) + "\"");
            l.backlog = neg ? -1 : static_cast<int>(*b);
        } else if (p.substr(0, 9) == "ipv6only=") {
            auto f = conf::parse_flag(p.substr(9));
            if (!f) return cx.invalid(n, f.error());
            l.ipv6only = *f;
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

Status set_server_name(Ctx& cx, const Node& n, SrvConf& sc) {
    for (const auto& a : n.args) {
        if (a.text.empty() && n.args.size() > 1) continue;
        if (a.text.find('/') != std::string::npos && a.text[0] != '~')
            return cx.error(n, "server name \"" + a.text + "\" has suspicious symbols");
        sc.server_names.push_back(a.text);
    }
    return {};
}

void merge_loc(const LocConf& up, LocConf& c) { conf::inherit(c.root, up.root, "html"); }

constexpr conf::Directive kDirectives[] = {
    {"http", conf::kMain, conf::Block, conf::custom<open_http>()},
    {"server", conf::kHttp, conf::Block, conf::custom<open_server>()},
    {"location", conf::kServer | conf::kLocation, conf::Block12, conf::custom<open_location>()},
    {"listen", conf::kServer, conf::Take1More, conf::custom<set_listen>()},
    {"server_name", conf::kServer, conf::Take1More, conf::custom<set_server_name>()},
    {"root", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::string<&LocConf::root>()},
};

}  // namespace

extern const conf::Module http_core_module{
    .name = "http_core",
    .directives = kDirectives,
    .main = conf::level<HttpMainConf>(),
    .srv = conf::level<SrvConf>(),
    .loc = conf::level<LocConf, merge_loc>(),
};

}  // namespace gatehouse::http
