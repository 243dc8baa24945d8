// userid_filter_module: "userid", "userid_domain", "userid_expires",
// "userid_flags", "userid_mark", "userid_name", "userid_p3p",
// "userid_path", "userid_service"; $uid_got, $uid_set and $uid_reset
// [nginx userid module]: a cookie that identifies a client, for the
// access log.
//
// The identifier, its cookie and its text are http/userid.h's. Per
// client request (a subrequest uses its parent's):
//   - the cookie called userid_name is read once, when first needed; one
//     too short or not base64 of 16 bytes is logged (error) and ignored;
//   - $uid_got is the identifier received ("userid" log, v1 or on);
//   - with "userid v1" or "on", the header filter (and $uid_set) decide
//     what to send: nothing for a client that sent an identifier, unless
//     its cookie lacks the userid_mark (the same identifier is sent again
//     with the mark) or $uid_reset is neither empty nor "0" (a new one,
//     with a notice naming the old one when it is "log"); a new one for
//     the others. The cookie goes out with any status, with the P3P
//     field of userid_p3p.
// A new identifier is unique across the fleet's workers as nginx's: the
// service (userid_service, else the server's address for v2), the time
// of the tree's clock, the worker's start value (its pid and the
// fraction of the second it started in) and its sequence number.
#include <unistd.h>

#include <algorithm>
#include <string>

#include "conf/module.h"
#include "conf/registry.h"
#include "conf/values.h"
#include "core/log.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/request.h"
#include "http/userid.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module userid_filter_module;

namespace {

using conf::Ctx;
using conf::Node;
using userid::Uid;
using userid::Version;

enum class Mode : uint8_t { Off, Log, V1, On };  // ordered: Log and up read, V1 and up send

enum CookieFlag : uint8_t {
    kSecure = 1,
    kHttpOnly = 2,
    kSameSiteStrict = 4,
    kSameSiteLax = 8,
    kSameSiteNone = 16,
};

constexpr int64_t kExpiresMax = -1;

struct UseridConf {
    std::optional<Mode> mode;          // "userid"
    std::optional<std::string> name;   // "userid_name"
    std::optional<std::string> domain; // "userid_domain": "; domain=NAME", empty for none
    std::optional<std::string> path;   // "userid_path": "; path=PATH"
    std::optional<std::string> p3p;    // "userid_p3p": empty for none
    std::optional<int64_t> expires;    // "userid_expires": seconds, 0 off, kExpiresMax
    std::optional<uint8_t> flags;      // "userid_flags": CookieFlag bits
    std::optional<char> mark;          // "userid_mark": '\0' for off
    std::optional<uint32_t> service;   // "userid_service"; unset: the server's address (v2), 0 (v1)
};

void merge(const UseridConf& up, UseridConf& c) {
    conf::inherit(c.mode, up.mode, Mode::Off);
    conf::inherit(c.name, up.name, "uid");
    conf::inherit(c.domain, up.domain, "");
    conf::inherit(c.path, up.path, "; path=/");
    conf::inherit(c.p3p, up.p3p, "");
    conf::inherit(c.expires, up.expires, 0);
    conf::inherit(c.flags, up.flags, 0);
    conf::inherit(c.mark, up.mark, '\0');
    conf::inherit(c.service, up.service);
}

// The index of $uid_reset when the configuration gives it a value
// ("set", "map"); -1 when nothing does, and no identifier is ever reset.
struct UseridMain {
    int reset_index = -1;
    bool sends = false;  // some level says "userid on" or "v1": the filter is needed
};

// ---- directives ------------------------------------------------------------------

Status set_userid(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.mode) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "on") c.mode = Mode::On;
    else if (v == "v1") c.mode = Mode::V1;
    else if (v == "log") c.mode = Mode::Log;
    else if (v == "off") c.mode = Mode::Off;
    else return cx.error(n, "invalid value \"" + v + "\"");
    if (*c.mode >= Mode::V1)
        if (auto* m = cx.conf<UseridMain>(userid_filter_module, conf::Level::Main)) m->sends = true;
    return {};
}

// "userid_domain", "userid_path": the cookie's attribute as it is sent.
template <std::optional<std::string> UseridConf::*Member>
Status set_attribute(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.*Member) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (Member == &UseridConf::domain && v == "none") c.*Member = "";
    else c.*Member = (Member == &UseridConf::domain ? "; domain=" : "; path=") + v;
    return {};
}

Status set_p3p(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.p3p) return cx.duplicate(n);
    c.p3p = n.args[0].text == "none" ? "" : n.args[0].text;
    return {};
}

// A time in seconds (nginx's units but "ms"), "max" or "off".
Status set_expires(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.expires) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "max") c.expires = kExpiresMax;
    else if (v == "off") c.expires = 0;
    else {
        auto d = conf::parse_duration(v);
        if (!d || v.find("ms") != std::string::npos) return cx.invalid(n, make_error("invalid value \"" + v + "\""));
        c.expires = static_cast<int64_t>(d->count() / 1000);
    }
    return {};
}

Status set_flags(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.flags) return cx.duplicate(n);
    static constexpr std::pair<std::string_view, uint8_t> kFlags[] = {
        {"off", 0},
        {"secure", kSecure},
        {"httponly", kHttpOnly},
        {"samesite=strict", kSameSiteStrict},
        {"samesite=lax", kSameSiteLax},
        {"samesite=none", kSameSiteNone},
    };
    uint8_t flags = 0;
    for (const auto& a : n.args) {
        auto f = std::find_if(std::begin(kFlags), std::end(kFlags), [&](const auto& p) { return p.first == a.text; });
        if (f == std::end(kFlags)) return cx.error(n, "invalid value \"" + a.text + "\"");
        if (f->second & flags)
            GH_LOG(Warn, "duplicate value \"%s\" in %s", a.text.c_str(), n.where().c_str());
        flags |= f->second;
    }
    c.flags = flags;
    return {};
}

Status set_mark(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.mark) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "off") {
        c.mark = '\0';
        return {};
    }
    const bool ok = v.size() == 1 && ((v[0] >= '0' && v[0] <= '9') || (v[0] >= 'a' && v[0] <= 'z') ||
                                      (v[0] >= 'A' && v[0] <= 'Z') || v[0] == '=');
    if (!ok)
        return cx.error(n, "\"userid_mark\" directive value must be \"off\" or a single letter, digit or \"=\"");
    c.mark = v[0];
    return {};
}

Status set_service(Ctx& cx, const Node& n, UseridConf& c) {
    if (c.service) return cx.duplicate(n);
    auto v = conf::parse_number(n.args[0].text, UINT32_MAX);
    if (!v) return cx.invalid(n, make_error("invalid number \"" + n.args[0].text + "\""));
    c.service = static_cast<uint32_t>(*v);
    return {};
}

Status postconfiguration(Ctx& cx) {
    auto* m = cx.conf<UseridMain>(userid_filter_module, conf::Level::Main);
    if (!m) return {};
    m->reset_index = http_main(cx.level(conf::Level::Main))->vars.find("uid_reset");
    return {};
}

// ---- the worker's identifiers ----------------------------------------------------

struct WorkerIds {
    bool ready = false;
    uint32_t start = 0;
    userid::Sequence seq;
};
WorkerIds g_ids;  // the worker's own: init_worker, or the first use

void start_ids() {
    g_ids.start = userid::start_value(event::worker_loop().wall().msec, static_cast<uint32_t>(::getpid()));
    g_ids.seq = {};
    g_ids.ready = true;
}

Status init_worker(const conf::Roots&, int) {
    start_ids();
    return {};
}

// ---- the request ------------------------------------------------------------------

struct UseridCtx {
    std::string_view cookie;  // the value received (r's head or arena); empty: none
    std::optional<Uid> got;
    std::optional<Uid> set;   // what is sent, once decided
};

Request& main_of(Request& r) {
    Request* m = &r;
    while (m->parent) m = m->parent;
    return *m;
}

const UseridConf* conf_of(Request& r) {
    conf::ConfArray locs = r.loc_confs;
    if (!locs && r.srv) locs = r.srv->loc_confs;
    return locs ? static_cast<const UseridConf*>(locs[userid_filter_module.index]) : nullptr;
}

// The client's cookie, read once per request (m is a client request).
UseridCtx& ctx_of(Request& m, const UseridConf& c) {
    if (auto* x = m.ctx<UseridCtx>(userid_filter_module)) return *x;
    auto* x = m.arena().make<UseridCtx>();
    m.set_ctx(userid_filter_module, x);
    std::optional<std::string_view> value;
    for (const HeaderField& h : m.headers)
        if (iequals(h.name, "cookie") && (value = userid::find_cookie(h.value, *c.name))) break;
    if (!value) return *x;
    x->cookie = *value;
    Uid uid{};
    const auto status = userid::decode_cookie(*value, uid);
    if (status == userid::CookieStatus::Ok) {
        x->got = uid;
        return *x;
    }
    GH_LOG(Error, "client sent %s userid cookie \"%.*s\"",
           status == userid::CookieStatus::TooShort ? "too short" : "invalid",
           static_cast<int>(std::min<size_t>(value->size(), 256)), value->data());
    return *x;
}

Uid new_uid(Request& m, const UseridConf& c) {
    if (!g_ids.ready) start_ids();
    const Version v = *c.mode == Mode::V1 ? Version::V1 : Version::V2;
    uint32_t service = 0;
    if (c.service) service = *c.service;
    else if (v == Version::V2) service = userid::address_service(m.stream().local_text());
    const auto now = static_cast<uint32_t>(event::worker_loop().wall().sec);
    return userid::make_uid(v, service, now, g_ids.start, g_ids.seq.next(v));
}

std::string_view reset_value(Request& m) {
    const int i = m.main_conf<UseridMain>(userid_filter_module).reset_index;
    if (i < 0) return {};
    const VarValue& v = get_var(m, i);
    return v.not_found ? std::string_view() : v.s;
}

// What to send, as nginx decides it: once something is to be sent, it
// stays; until then each call looks again ($uid_set, then the filter).
void decide(Request& m, UseridCtx& x, const UseridConf& c) {
    if (x.set) return;
    if (x.got) {
        const std::string_view reset = reset_value(m);
        if (reset.empty() || reset == "0") {
            // A known client; its cookie is sent again only to mark it.
            if (*c.mark != '\0' && !userid::has_mark(x.cookie, *c.mark)) x.set = x.got;
            return;
        }
        if (reset == "log") {
            char hex[userid::kHexChars];
            GH_LOG(Notice, "userid cookie \"%s=%.*s\" was reset", c.name->c_str(), static_cast<int>(sizeof hex),
                   userid::format_hex(*x.got, hex).data());
        }
    }
    x.set = new_uid(m, c);
}

// "name=" and the hexadecimal words, in m's arena.
std::string_view shown(Request& m, const UseridConf& c, const Uid& uid) {
    char hex[userid::kHexChars];
    std::pmr::string s(m.mem());
    s.reserve(c.name->size() + 1 + sizeof hex);
    s.append(*c.name).append("=").append(userid::format_hex(uid, hex));
    return m.arena().dup(s);
}

Flow userid_filter(Request& r, ResponseHead& h) {
    if (r.parent) return Flow::Pass;  // the client's request sends it
    const UseridConf* c = conf_of(r);
    if (!c || *c->mode < Mode::V1) return Flow::Pass;
    UseridCtx& x = ctx_of(r, *c);
    decide(r, x, *c);
    if (!x.set) return Flow::Pass;

    char value[userid::kCookieChars];
    char when[userid::kCookieTimeMax];
    std::pmr::string s(r.mem());
    s.reserve(c->name->size() + 160 + c->domain->size() + c->path->size());
    s.append(*c->name).append("=").append(userid::encode_cookie(*x.set, *c->mark, value));
    if (*c->expires == kExpiresMax) {
        s.append("; expires=Thu, 31-Dec-37 23:55:55 GMT");
    } else if (*c->expires > 0) {
        const time_t at = static_cast<time_t>(event::worker_loop().wall().sec + *c->expires);
        s.append("; expires=").append(userid::cookie_time(at, when));
    }
    s.append(*c->domain).append(*c->path);
    if (*c->flags & kSecure) s.append("; secure");
    if (*c->flags & kHttpOnly) s.append("; httponly");
    if (*c->flags & kSameSiteStrict) s.append("; samesite=strict");
    if (*c->flags & kSameSiteLax) s.append("; samesite=lax");
    if (*c->flags & kSameSiteNone) s.append("; samesite=none");
    h.headers.push_back(Header{"Set-Cookie", r.arena().dup(s)});
    if (!c->p3p->empty()) h.headers.push_back(Header{"P3P", *c->p3p});
    return Flow::Pass;
}

// ---- variables ----------------------------------------------------------------------

void not_found(VarValue& v) {
    v.s = {};
    v.not_found = true;
}

void v_uid_got(Request& r, VarValue& v, uintptr_t) {
    Request& m = main_of(r);
    const UseridConf* c = conf_of(m);
    if (!c || *c->mode == Mode::Off) return not_found(v);
    const UseridCtx& x = ctx_of(m, *c);
    if (!x.got) return not_found(v);
    v.s = shown(m, *c, *x.got);
}

void v_uid_set(Request& r, VarValue& v, uintptr_t) {
    Request& m = main_of(r);
    const UseridConf* c = conf_of(m);
    if (!c || *c->mode < Mode::V1) return not_found(v);
    UseridCtx& x = ctx_of(m, *c);
    decide(m, x, *c);
    if (!x.set) return not_found(v);
    v.s = shown(m, *c, *x.set);
}

// Empty until "set" or "map" gives it a value.
void v_uid_reset(Request&, VarValue& v, uintptr_t) { v.s = ""; }

constexpr conf::Directive kDirectives[] = {
    {"userid", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_userid>()},
    {"userid_domain", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_attribute<&UseridConf::domain>>()},
    {"userid_expires", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_expires>()},
    {"userid_flags", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_flags>()},
    {"userid_mark", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_mark>()},
    {"userid_name", conf::kHttpSrvLoc, conf::Take1, conf::string<&UseridConf::name>()},
    {"userid_p3p", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_p3p>()},
    {"userid_path", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_attribute<&UseridConf::path>>()},
    {"userid_service", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_service>()},
};

constexpr VariableDef kVariables[] = {
    {"uid_got", v_uid_got},
    {"uid_set", v_uid_set},
    {"uid_reset", v_uid_reset, 0, kVarSettable},
};

bool filters_used(conf::ConfArray main) {
    return main && static_cast<const UseridMain*>(main[userid_filter_module.index])->sends;
}

// The client's cookie is read once, whatever location ends up serving
// the request (an index file, an error page).
constexpr ModuleHooks kHooks{.header_filter = userid_filter,
                             .filters_used = filters_used,
                             .variables = kVariables,
                             .ctx_survives_redirects = true};

}  // namespace

extern const conf::Module userid_filter_module{
    .name = "userid_filter",
    .directives = kDirectives,
    .main = conf::level<UseridMain>(),
    .loc = conf::level<UseridConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .init_worker = init_worker,
};

}  // namespace gatehouse::http
