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
    std::string host;  // lower case, written as a server_name is: "x.org", "*.x.org", ".x.org", "www.x.*"
    std::string uri;   // "/path" or empty: any
};

// What valid_referers says at one level; a level without one takes its
// parent's whole.
struct Rules {
    bool none = false;
    bool blocked = false;
    bool server_names = false;
    std::vector<RefererName> names;
    std::vector<std::shared_ptr<const Regex>> regexes;
};

struct RefererConf {
    bool set = false;  // a valid_referers at this level
    Rules rules;
    std::optional<uint64_t> hash_max_size;     // "referer_hash_max_size": accepted, checked
    std::optional<uint64_t> hash_bucket_size;  // "referer_hash_bucket_size": accepted, checked
};

// `name` (lower case) as server_name and valid_referers write one: exact,
// "*.x" (a subdomain), ".x" (the domain and its subdomains), "x.*" (any
// ending).
bool name_matches(std::string_view name, std::string_view host) {
    if (name.starts_with("*.")) return host.size() > name.size() - 1 && host.ends_with(name.substr(1));
    if (name.starts_with(".")) return host.ends_with(name) || host == name.substr(1);
    if (name.ends_with(".*")) return host.size() > name.size() - 1 && host.starts_with(name.substr(0, name.size() - 1));
    return host == name;
}

bool valid(Request& r, const Rules& c) {
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
        if (name_matches(nm.host, host)) return nm.uri.empty() || path.starts_with(nm.uri);
    if (c.server_names && r.srv)
        for (const ServerName& sn : r.srv->server_names)
            if (sn.regex ? sn.regex->re.match(host) : name_matches(sn.name, host)) return true;
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
    v.s = c && c->set && !valid(r, c->rules) ? std::string_view("1") : std::string_view();
}

using conf::Ctx;
using conf::Node;

// valid_referers none | blocked | server_names | name[/path] | ~regex ...
Status set_valid_referers(Ctx& cx, const Node& n, RefererConf& rc) {
    rc.set = true;
    Rules& c = rc.rules;
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
            for (char& ch : host) ch = ascii_lower(ch);
            // One wildcard, at one end, and something beside it [nginx's
            // hash refuses the rest].
            std::string_view bare = host;
            if (bare.starts_with("*.")) bare.remove_prefix(2);
            else if (bare.starts_with(".")) bare.remove_prefix(1);
            else if (bare.ends_with(".*")) bare.remove_suffix(2);
            if (bare.empty() || bare.find('*') != std::string_view::npos)
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
        c.rules = up.rules;
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
