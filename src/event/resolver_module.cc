// "resolver" and "resolver_timeout" (see resolver.h), and the worker's
// registry of Resolvers.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstring>

#include "conf/registry.h"
#include "core/assert.h"
#include "event/resolver.h"
#include "event/worker.h"

namespace gatehouse::event {

namespace {

using conf::Ctx;
using conf::Level;
using conf::Node;

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// One name server argument: an address, or a name looked up now (config
// time, in the master: the one place a blocking lookup is allowed), each
// of its addresses a server [nginx].
Status add_server(Ctx& cx, const Node& n, std::string_view arg, ResolverSpec& spec) {
    conf::AddressRules rules;
    rules.default_port = 53;
    rules.unix_path = false;
    auto a = conf::parse_address(arg, rules);
    if (!a) return cx.error(n, a.message());
    if (a->kind != conf::Address::Kind::Name) {
        ResolverSpec::Server s;
        std::memcpy(&s.sa, &a->sa, a->sa_len);
        s.len = a->sa_len;
        s.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&s.sa));
        spec.servers.push_back(std::move(s));
        return {};
    }
    const auto found = conf::lookup_host(a->host, a->port, SOCK_DGRAM);
    if (found.empty()) return cx.error(n, "host not found in resolver " + quoted(arg));
    for (const conf::HostAddress& h : found) {
        ResolverSpec::Server s;
        std::memcpy(&s.sa, &h.sa, h.len);
        s.len = h.len;
        s.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&h.sa));
        spec.servers.push_back(std::move(s));
    }
    return {};
}

void note_http_level(Ctx& cx, ResolverConf& c) {
    if (cx.context() != conf::kHttp) return;
    if (auto* m = cx.conf<ResolverMainConf>(resolver_module, Level::Main)) m->http = &c;
}

Status set_resolver(Ctx& cx, const Node& n, ResolverConf& c) {
    if (c.resolver) return cx.duplicate(n);
    auto* spec = cx.arena().make<ResolverSpec>();
    spec->where = n.where();
    for (const auto& arg : n.args) {
        std::string_view v = arg.text;
        if (v.starts_with("valid=")) {
            auto d = conf::parse_duration(v.substr(6));
            if (!d) return cx.error(n, "invalid parameter " + quoted(v));
            spec->valid = *d;
        } else if (v.starts_with("ipv4=") || v.starts_with("ipv6=")) {
            auto f = conf::parse_flag(v.substr(5));
            if (!f) return cx.error(n, "invalid parameter " + quoted(v));
            (v[3] == '4' ? spec->ipv4 : spec->ipv6) = *f;
        } else if (v.starts_with("status_zone=")) {
            if (v.size() == 12) return cx.error(n, "invalid parameter " + quoted(v));
            spec->status_zone = std::string(v.substr(12));
        } else {
            if (auto st = add_server(cx, n, v, *spec); !st) return st;
        }
    }
    if (!spec->ipv4 && !spec->ipv6) return cx.error(n, "\"ipv4\" and \"ipv6\" cannot both be \"off\"");
    if (spec->servers.empty()) return cx.error(n, "no name servers defined");
    c.resolver = spec;
    if (auto* m = cx.conf<ResolverMainConf>(resolver_module, Level::Main)) m->specs.push_back(spec);
    note_http_level(cx, c);
    return {};
}

Status set_timeout(Ctx& cx, const Node& n, ResolverConf& c) {
    if (c.resolver_timeout) return cx.duplicate(n);
    auto d = conf::parse_duration(n.args[0].text);
    if (!d) return cx.invalid(n, d.error());
    c.resolver_timeout = *d;
    note_http_level(cx, c);
    return {};
}

void merge(const ResolverConf& up, ResolverConf& c) {
    if (!c.resolver) c.resolver = up.resolver;
    conf::inherit(c.resolver_timeout, up.resolver_timeout);
}

// The worker's Resolvers, one per distinct spec; see worker_resolver().
std::vector<std::unique_ptr<Resolver>>& registry() {
    static std::vector<std::unique_ptr<Resolver>> r;
    return r;
}

void exit_worker() { registry().clear(); }

constexpr conf::Directive kDirectives[] = {
    {"resolver", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_resolver>()},
    {"resolver_timeout", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_timeout>()},
};

}  // namespace

bool ResolverSpec::same_as(const ResolverSpec& o) const {
    if (valid != o.valid || ipv4 != o.ipv4 || ipv6 != o.ipv6 || status_zone != o.status_zone) return false;
    if (servers.size() != o.servers.size()) return false;
    for (size_t i = 0; i < servers.size(); ++i)
        if (servers[i].len != o.servers[i].len || std::memcmp(&servers[i].sa, &o.servers[i].sa, servers[i].len) != 0)
            return false;
    return true;
}

const ResolverConf* http_resolver_conf(const conf::Ctx& cx) {
    auto* m = cx.conf<ResolverMainConf>(resolver_module, Level::Main);
    return m ? m->http : nullptr;
}

Resolver& worker_resolver(const ResolverSpec& spec) {
    auto& reg = registry();
    for (auto& r : reg)
        if (&r->spec() == &spec || r->spec().same_as(spec)) return *r;
    reg.push_back(std::make_unique<Resolver>(worker_loop(), spec));
    return *reg.back();
}

extern const conf::Module resolver_module{
    .name = "resolver",
    .directives = kDirectives,
    .main = conf::level<ResolverMainConf>(),
    .loc = conf::level<ResolverConf, merge>(),
    .exit_worker = exit_worker,
};

}  // namespace gatehouse::event
