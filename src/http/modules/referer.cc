// referer_module: "valid_referers" and $invalid_referer [nginx referer
// module], for "if ($invalid_referer) { return 403; }".
//
// $invalid_referer is empty when the request's Referer is valid here,
// "1" otherwise; empty too where no valid_referers applies. Valid:
//   - no Referer, with "none";
//   - a Referer that does not start with "http://" or "https://" (a proxy
//     or firewall blanked it), or is shorter than "http://i.ru", with
//     "blocked";
//   - otherwise its host (up to "/" or ":", compared without case, 256
//     bytes at most) matches a name: exact, "*.example.com" (a subdomain),
//     ".example.com" (the domain and its subdomains) or "www.example.*";
//     a name written with a path ("example.com/galleries/") also needs
//     the Referer's path, after any port, to start with it (with case);
//   - or, with "server_names", the server's names, its regexes included;
//   - or a "~regex" (without case, nginx's (?-i) aside) matches the
//     Referer after its scheme.
#include <memory>
#include <string>
#include <vector>

#include "core/regex.h"
#include "core/str.h"
#include "http/core_module.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module referer_module;

namespace {

struct RefererName {
    enum class Kind : uint8_t { Exact, Subdomain, DomainAndSub, Tail };
    std::string host;  // lower case: "x.org"; Subdomain, DomainAndSub: ".x.org"; Tail: "www.x."
    Kind kind = Kind::Exact;
    std::string uri;   // "/path" or empty: any
};

struct RefererConf {
    bool set = false;  // a valid_referers at this level
    bool none = false;
    bool blocked = false;
    bool server_names = false;
    std::vector<RefererName> names;
    std::vector<std::shared_ptr<const Regex>> regexes;
    std::optional<uint64_t> hash_max_size;     // "referer_hash_max_size": accepted, checked
    std::optional<uint64_t> hash_bucket_size;  // "referer_hash_bucket_size": accepted, checked
};

bool host_matches(const RefererName& n, std::string_view host) {
    switch (n.kind) {
        case RefererName::Kind::Exact: return host == n.host;
        case RefererName::Kind::Subdomain: return host.size() > n.host.size() && host.ends_with(n.host);
        case RefererName::Kind::DomainAndSub:
            return host.ends_with(n.host) || host == std::string_view(n.host).substr(1);
        case RefererName::Kind::Tail: return host.size() > n.host.size() && host.starts_with(n.host);
    }
    return false;
}

// A server_name, as the server's lookup reads it.
bool server_name_matches(const ServerName& sn, std::string_view host) {
    if (sn.regex) return sn.regex->re.match(host);
    const std::string& s = sn.name;
    if (s.starts_with("*.")) return host.size() > s.size() - 1 && host.ends_with(std::string_view(s).substr(1));
    if (s.starts_with(".")) return host.ends_with(s) || host == std::string_view(s).substr(1);
    if (s.ends_with(".*")) return host.size() > s.size() - 1 && host.starts_with(std::string_view(s).substr(0, s.size() - 1));
    return host == s;
}

bool valid(Request& r, const RefererConf& c) {
    const HeaderField* f = r.headers.find("Referer");
    if (!f) return c.none;
    std::string_view ref = f->value;
    constexpr std::string_view kShortest = "http://i.ru";
    size_t skip = 0;
    if (ref.size() >= kShortest.size()) {
        if (istarts_with(ref, "http://")) skip = 7;
        else if (istarts_with(ref, "https://")) skip = 8;
    }
    if (skip == 0) return c.blocked;
    ref.remove_prefix(skip);

    char host_buf[256];
    size_t n = 0;
    size_t i = 0;
    for (; i < ref.size() && ref[i] != '/' && ref[i] != ':'; ++i) {
        if (n == sizeof host_buf) return false;
        host_buf[n++] = static_cast<char>(ascii_lower(static_cast<unsigned char>(ref[i])));
    }
    const std::string_view host(host_buf, n);
    // The path: after the host and any port.
    size_t slash = ref.find('/', i);
    const std::string_view path = slash == std::string_view::npos ? std::string_view() : ref.substr(slash);
    for (const RefererName& nm : c.names)
        if (host_matches(nm, host)) return nm.uri.empty() || path.starts_with(nm.uri);
    if (c.server_names && r.srv)
        for (const ServerName& sn : r.srv->server_names)
            if (server_name_matches(sn, host)) return true;
    for (const auto& re : c.regexes)
        if (re->match(ref)) return true;
    return false;
}

const RefererConf* conf_of(Request& r) {
    conf::ConfArray locs = r.loc_confs;
    if (!locs && r.srv) locs = r.srv->loc_confs;
    return locs ? static_cast<const RefererConf*>(locs[referer_module.index]) : nullptr;
}

void v_invalid_referer(Request& r, VarValue& v, uintptr_t) {
    const RefererConf* c = conf_of(r);
    v.s = c && c->set && !valid(r, *c) ? std::string_view("1") : std::string_view();
}

using conf::Ctx;
using conf::Node;

// valid_referers none | blocked | server_names | name[/path] | ~regex ...
Status set_valid_referers(Ctx& cx, const Node& n, RefererConf& c) {
    c.set = true;
    for (const conf::Arg& a : n.args) {
        const std::string& v = a.text;
        if (v.empty()) return cx.error(n, "invalid referer \"\"");
        if (v == "none") {
            c.none = true;
        } else if (v == "blocked") {
            c.blocked = true;
        } else if (v == "server_names") {
            c.server_names = true;
        } else if (v[0] == '~') {
            auto re = Regex::compile(std::string_view(v).substr(1), true);
            if (!re) return cx.error(n, re.error().message);
            c.regexes.push_back(std::make_shared<const Regex>(std::move(*re)));
        } else {
            RefererName nm;
            const size_t slash = v.find('/');
            std::string host = v.substr(0, slash);
            if (slash != std::string::npos) nm.uri = v.substr(slash);
            for (char& ch : host) ch = static_cast<char>(ascii_lower(static_cast<unsigned char>(ch)));
            if (host.starts_with("*.") && host.size() > 2) {
                nm.kind = RefererName::Kind::Subdomain;
                host.erase(0, 1);
            } else if (host.starts_with(".") && host.size() > 1) {
                nm.kind = RefererName::Kind::DomainAndSub;
            } else if (host.ends_with(".*") && host.size() > 2) {
                nm.kind = RefererName::Kind::Tail;
                host.pop_back();
            }
            // One wildcard, at one end [nginx's hash refuses the rest].
            if (host.find('*') != std::string::npos || host.empty() || host == ".")
                return cx.error(n, "invalid referer \"" + v + "\"");
            nm.host = std::move(host);
            c.names.push_back(std::move(nm));
        }
    }
    return {};
}

void merge(const RefererConf& up, RefererConf& c) {
    if (!c.set) {
        c.set = up.set;
        c.none = up.none;
        c.blocked = up.blocked;
        c.server_names = up.server_names;
        c.names = up.names;
        c.regexes = up.regexes;
    }
    conf::inherit(c.hash_max_size, up.hash_max_size, 2048);
    conf::inherit(c.hash_bucket_size, up.hash_bucket_size, 64);
}

constexpr conf::Directive kDirectives[] = {
    {"valid_referers", conf::kServer | conf::kLocation, conf::Take1More, conf::custom<set_valid_referers>()},
    {"referer_hash_max_size", conf::kServer | conf::kLocation, conf::Take1,
     conf::size<&RefererConf::hash_max_size>()},
    {"referer_hash_bucket_size", conf::kServer | conf::kLocation, conf::Take1,
     conf::size<&RefererConf::hash_bucket_size>()},
};

constexpr VariableDef kVariables[] = {
    {"invalid_referer", v_invalid_referer, 0, kVarNoCache},
};

constexpr ModuleHooks kHooks{.variables = kVariables};

}  // namespace

extern const conf::Module referer_module{
    .name = "referer",
    .directives = kDirectives,
    .loc = conf::level<RefererConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
