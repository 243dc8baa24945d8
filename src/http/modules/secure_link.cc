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
// else it inherits its parent's secret. MD5 comes from OpenSSL (EVP); the
// comparison takes the same time wherever the hashes differ.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <string>

#include "core/log.h"
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

// MD5 of the concatenation of `parts`; false if OpenSSL has none to give
// (checked at startup: see md5_available).
bool md5_of(std::initializer_list<std::string_view> parts, LinkMd5& out) {
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, EVP_md5(), nullptr) == 1;
    for (std::string_view p : parts) ok = ok && EVP_DigestUpdate(c, p.data(), p.size()) == 1;
    ok = ok && EVP_DigestFinal_ex(c, out.data(), nullptr) == 1;
    EVP_MD_CTX_free(c);
    if (!ok) GH_LOG(Alert, "secure_link: MD5 failed in OpenSSL");
    return ok;
}

bool same(const LinkMd5& a, const LinkMd5& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

void not_found(VarValue& v) {
    v.s = {};
    v.not_found = true;
}

// Secret mode: the link, or not found.
void secret_link(Request& r, VarValue& v, const std::string& secret) {
    auto link = split_secret_link(r.unparsed_uri);
    LinkMd5 want;
    if (!link || !md5_of({link->link, secret}, want) || !same(link->md5, want)) return not_found(v);
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
    LinkMd5 want;
    if (!md5_of({c->md5->eval(r)}, want) || !same(*given, want)) return not_found(v);
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

// A FIPS-only OpenSSL has no MD5: said at startup, not on every request.
Status need_md5(Ctx& cx, const Node& n) {
    EVP_MD* md = EVP_MD_fetch(nullptr, "MD5", nullptr);
    if (!md) return cx.error(n, "\"" + n.name + "\" needs MD5, which this OpenSSL does not provide");
    EVP_MD_free(md);
    return {};
}

Status set_expression(Ctx& cx, const Node& n, const ComplexValue*& out,
                      std::initializer_list<std::string_view> forbidden) {
    if (out) return cx.duplicate(n);
    const std::string& text = n.args[0].text;
    // Each would compute itself again while being computed.
    if (mentions(text, forbidden))
        return cx.error(n, "the $secure_link variables cannot be used in the \"" + n.name + "\" directive");
    if (auto s = need_md5(cx, n); !s) return s;
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
    if (auto s = need_md5(cx, n); !s) return s;
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
