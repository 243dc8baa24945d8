// access_module: "allow" and "deny" [nginx ngx_http_access_module].
//
// Access phase. The rules of a level are checked in the order written and
// the first whose address matches the client's decides: allow grants,
// deny answers 403 (logged "access forbidden by rule" under "satisfy
// all"). A level with no rule of its own inherits its parent's whole
// list; one with rules inherits nothing. The verdict goes through
// access_granted()/access_denied() (phases.h), so that "satisfy any"
// lets another check (auth_basic) grant what a deny refused.
//
// As nginx's, the rules are per family: an IPv4 client is checked against
// the IPv4 rules, an IPv6 client against the IPv6 rules, a Unix socket
// client against "unix:", and "all" belongs to every family. A client no
// rule of its family matches is neither granted nor denied (Decline).
// An IPv4-mapped client ("::ffff:a.b.c.d", an IPv4 client on a dual-stack
// socket) is checked as its IPv4 address when the level has IPv4 rules.
#include <sys/socket.h>

#include <string>
#include <vector>

#include "core/cidr.h"
#include "core/log.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"

namespace gatehouse::http {

extern const conf::Module access_module;

namespace {

struct Rule {
    enum class Family : uint8_t { Inet, Inet6, Unix, All };
    Family family = Family::All;
    bool deny = false;
    Cidr cidr;  // Inet and Inet6
};

struct AccessConf {
    // "allow" and "deny", in order: flat, compiled at config time, O(rules)
    // per request. After merging: the level's own rules, else its parent's.
    std::vector<Rule> rules;
    // Whether some rule applies to each family ("all" counts for each): a
    // mapped IPv4 client is checked as IPv4 only when there are IPv4 rules.
    bool inet = false;
    bool inet6 = false;
};

bool applies(Rule::Family rule, Rule::Family client) { return rule == Rule::Family::All || rule == client; }

Next verdict(Request& r, const Rule& rule) {
    if (!rule.deny) return access_granted(r);
    // Under "satisfy any" a deny is not the last word: nginx logs it only
    // when it is.
    if (!*r.loc_conf<LocConf>(http_core_module).satisfy_any) GH_LOG(Error, "access forbidden by rule");
    return access_denied(r, 403);
}

Next run_access(Request& r) {
    const AccessConf& c = r.loc_conf<AccessConf>(access_module);
    if (c.rules.empty()) return Next::Decline;
    Rule::Family family = Rule::Family::Unix;
    IpAddr ip;
    if (auto a = ip_of(r.remote_sockaddr)) {
        ip = *a;
        if (ip.v4_mapped() && c.inet) ip = ip.unmapped();
        family = ip.family == AF_INET ? Rule::Family::Inet : Rule::Family::Inet6;
    } else if (!r.remote_sockaddr || r.remote_sockaddr->sa_family != AF_UNIX) {
        return Next::Decline;
    }
    for (const Rule& rule : c.rules) {
        if (!applies(rule.family, family)) continue;
        if (rule.family == Rule::Family::All || family == Rule::Family::Unix || rule.cidr.contains(ip))
            return verdict(r, rule);
    }
    return Next::Decline;
}

using conf::Ctx;
using conf::Node;

Status set_rule(Ctx& cx, const Node& n, AccessConf& c) {
    const std::string& v = n.args[0].text;
    Rule rule;
    rule.deny = n.name == "deny";
    if (v == "all") {
        rule.family = Rule::Family::All;
        c.inet = c.inet6 = true;
    } else if (v == "unix:") {
        rule.family = Rule::Family::Unix;
    } else {
        auto p = parse_cidr(v);
        if (!p) return cx.error(n, p.message());
        if (p->host_bits) GH_LOG(Warn, "low address bits of %s are meaningless in %s", v.c_str(), n.where().c_str());
        rule.cidr = p->cidr;
        rule.family = p->cidr.addr.family == AF_INET ? Rule::Family::Inet : Rule::Family::Inet6;
        (rule.family == Rule::Family::Inet ? c.inet : c.inet6) = true;
    }
    c.rules.push_back(rule);
    return {};
}

void merge(const AccessConf& up, AccessConf& c) {
    if (!c.rules.empty()) return;
    c = up;
}

constexpr uint32_t kContexts = conf::kHttpSrvLoc | conf::kLimitExcept;

constexpr conf::Directive kDirectives[] = {
    {"allow", kContexts, conf::Take1, conf::custom<set_rule>()},
    {"deny", kContexts, conf::Take1, conf::custom<set_rule>()},
};

bool access_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return !static_cast<const AccessConf*>(loc[access_module.index])->rules.empty();
}

constexpr PhaseHandler kPhases[] = {{Phase::Access, run_access, access_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module access_module{
    .name = "access",
    .directives = kDirectives,
    .loc = conf::level<AccessConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
