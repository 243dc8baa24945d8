// secure_link_module: "secure_link", "secure_link_md5",
// "secure_link_secret", $secure_link and $secure_link_expires [nginx
// secure_link module], for "if ($secure_link = "") { return 403; }".
//
// Two modes, as nginx's (what a link carries: http/secure_link.h):
//   - "secure_link" + "secure_link_md5": the MD5 the link carries must be
//     that of the secure_link_md5 expression. $secure_link is empty for a
//     missing, malformed or wrong hash and for a malformed expiry time,
//     "0" for a good link whose time has passed, "1" for a good one.
//     $secure_link_expires is the expiry time the link carries (valid or
//     not found), for the secure_link_md5 expression.
//   - "secure_link_secret": the MD5 in the target must be that of the
//     link after it and the secret; $secure_link is that link, else empty.
// A location with its own secure_link_secret is in secret mode; one with
// secure_link or secure_link_md5 of its own or inherited in the other;
// else it inherits its parent's secret. MD5 is core/md5.h's; the
// comparison takes the same time wherever the hashes differ.
#include <openssl/crypto.h>

#include <string>

#include "core/log.h"
#include "core/md5.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/request.h"
#include "http/secure_link.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module secure_link_module;

namespace {

struct SecureLinkConf {
    const ComplexValue* variable = nullptr;  // "secure_link"; owner: the generation arena
    const ComplexValue* md5 = nullptr;       // "secure_link_md5"; owner: the generation arena
    std::optional<std::string> secret;       // "secure_link_secret"
};

void merge(const SecureLinkConf& up, SecureLinkConf& c) {
    if (c.secret) return;  // secret mode here, whatever the parent does
    if (!c.variable) c.variable = up.variable;
    if (!c.md5) c.md5 = up.md5;
    if (!c.variable && !c.md5) c.secret = up.secret;
}

const SecureLinkConf* conf_of(Request& r) {
    conf::ConfArray locs = r.loc_confs;
    if (!locs && r.srv) locs = r.srv->loc_confs;
    return locs ? static_cast<const SecureLinkConf*>(locs[secure_link_module.index]) : nullptr;
}

// MD5 of the concatenation of `parts`.
LinkMd5 md5_of(Request& r, std::initializer_list<std::string_view> parts) {
    std::pmr::string all(r.mem());
    for (std::string_view p : parts) all.append(p);
    return md5(all);
}

bool same(const LinkMd5& a, const LinkMd5& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

void not_found(VarValue& v) {
    v.s = {};
    v.not_found = true;
}

// Secret mode: the link, or not found.
void secret_link(Request& r, VarValue& v, const std::string& secret) {
    auto link = split_secret_link(r.unparsed_uri);
    if (!link || !same(link->md5, md5_of(r, {link->link, secret}))) return not_found(v);
    v.s = link->link;
}

void v_secure_link(Request& r, VarValue& v, uintptr_t) {
    const SecureLinkConf* c = conf_of(r);
    if (!c) return not_found(v);
    if (c->secret) return secret_link(r, v, *c->secret);
    if (!c->variable || !c->md5) return not_found(v);

    const LinkParts parts = split_link(c->variable->eval(r));
    int64_t expires = 0;
    if (parts.expires) {
        auto e = parse_link_expires(*parts.expires);
        if (!e) return not_found(v);
        expires = *e;
    }
    auto given = decode_link_md5(parts.hash);
    if (!given) return not_found(v);
    if (!same(*given, md5(c->md5->eval(r)))) return not_found(v);
    const bool expired = expires != 0 && expires < event::worker_loop().wall().sec;
    v.s = expired ? std::string_view("0") : std::string_view("1");
}

// Read from the link itself, so that it does not depend on $secure_link
// having been computed first (the secure_link_md5 expression uses it
// while $secure_link is being computed).
void v_secure_link_expires(Request& r, VarValue& v, uintptr_t) {
    const SecureLinkConf* c = conf_of(r);
    if (!c || c->secret || !c->variable) return not_found(v);
    const LinkParts parts = split_link(c->variable->eval(r));
    if (!parts.expires || !parse_link_expires(*parts.expires)) return not_found(v);
    v.s = *parts.expires;
}

using conf::Ctx;
using conf::Node;

// Whether `text` refers to one of `names` ($name or ${name}).
bool mentions(std::string_view text, std::initializer_list<std::string_view> names) {
    for (size_t i = text.find('$'); i != std::string_view::npos; i = text.find('$', i + 1)) {
        std::string_view name;
        if (parse_var_ref(text.substr(i), &name) == 0) continue;
        for (std::string_view n : names)
            if (name == n) return true;
    }
    return false;
}

Status set_expression(Ctx& cx, const Node& n, const ComplexValue*& out,
                      std::initializer_list<std::string_view> forbidden) {
    if (out) return cx.duplicate(n);
    const std::string& text = n.args[0].text;
    // Each would compute itself again while being computed.
    if (mentions(text, forbidden))
        return cx.error(n, "the $secure_link variables cannot be used in the \"" + n.name + "\" directive");
    auto cv = ComplexValue::compile(cx, n, text);
    if (!cv) return cv.error();
    out = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

Status set_secure_link(Ctx& cx, const Node& n, SecureLinkConf& c) {
    return set_expression(cx, n, c.variable, {"secure_link", "secure_link_expires"});
}

Status set_secure_link_md5(Ctx& cx, const Node& n, SecureLinkConf& c) {
    return set_expression(cx, n, c.md5, {"secure_link"});
}

Status set_secret(Ctx& cx, const Node& n, SecureLinkConf& c) {
    if (c.secret) return cx.duplicate(n);
    c.secret = n.args[0].text;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"secure_link", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_secure_link>()},
    {"secure_link_md5", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_secure_link_md5>()},
    {"secure_link_secret", conf::kLocation, conf::Take1, conf::custom<set_secret>()},
};

constexpr VariableDef kVariables[] = {
    {"secure_link", v_secure_link, 0, 0},
    {"secure_link_expires", v_secure_link_expires, 0, 0},
};

constexpr ModuleHooks kHooks{.variables = kVariables};

}  // namespace

extern const conf::Module secure_link_module{
    .name = "secure_link",
    .directives = kDirectives,
    .loc = conf::level<SecureLinkConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
