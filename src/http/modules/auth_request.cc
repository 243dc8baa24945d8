// auth_request_module: access decided by a subrequest's status [nginx
// ngx_http_auth_request_module].
//
//     location /private/ {
//         auth_request /auth;
//         auth_request_set $user $upstream_http_x_user;
//     }
//     location = /auth { internal; proxy_pass http://auth; }
//
// Access phase: the first call starts a subrequest for the URI
// (subrequest.h) and suspends; the subrequest wakes the request when its
// response is over, and the second call gives the verdict through
// access_granted()/access_denied() (phases.h), so that "satisfy" weighs
// it with the other access checks:
//   2xx        granted
//   401        denied, 401, with the subrequest's WWW-Authenticate fields
//   403        denied, 403
//   otherwise  500, and the error log says
//              "auth request unexpected status: N"
// "auth_request_set" values are evaluated in the subrequest (its
// $upstream_* variables) when it is over, whatever its status, and stored
// in the request's variables, which keep them across internal redirects.
// The subrequest is released once the verdict is given: an origin
// connection it used goes back to its pool or is closed then.
#include <optional>
#include <string>
#include <vector>

#include "core/str.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/subrequest.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module auth_request_module;

namespace {

// "auth_request_set $var value".
struct AuthSet {
    int var = -1;        // its index in the generation's variables
    bool args = false;   // $args: r.args changes too, as with "set"
    ComplexValue value;  // evaluated in the subrequest
};

struct AuthRequestConf {
    std::optional<std::string> uri;  // "auth_request"; "" is "off"
    // "auth_request_set"; a level with none inherits the enclosing list.
    // Owner: the generation arena.
    std::vector<AuthSet>* sets = nullptr;
};

void merge(const AuthRequestConf& up, AuthRequestConf& c) {
    conf::inherit(c.uri, up.uri, std::string());
    if (!c.sets) c.sets = up.sets;
}

// One request's subrequest; in the request arena. Cleared with the other
// module contexts by an internal redirect: a location reached after one
// asks again, as nginx does.
struct AuthState {
    Subrequest* sub = nullptr;  // owner: the request arena
};

void set_variables(Request& r, const AuthRequestConf& c, Subrequest& s) {
    if (!c.sets) return;
    for (const AuthSet& a : *c.sets) {
        // The subrequest's context, copied into the request's arena: the
        // subrequest is released right after.
        std::string_view v = r.arena().dup(a.value.eval(s.child()));
        r.vars[a.var] = VarValue{v, true, false};
        if (a.args) r.args = v;
    }
}

Next verdict(Request& r, int status) {
    if (status >= 200 && status < 300) return access_granted(r);
    if (status == 401 || status == 403) return access_denied(r, status);
    log_for_request(r, log::Level::Error, 0, "auth request unexpected status: " + std::to_string(status));
    return respond_status(r, 500);
}

Next run_auth_request(Request& r) {
    const auto& c = r.loc_conf<AuthRequestConf>(auth_request_module);
    if (!c.uri || c.uri->empty()) return Next::Decline;
    auto* st = r.ctx<AuthState>(auth_request_module);
    if (!st) {
        st = r.arena().make<AuthState>();
        r.set_ctx(auth_request_module, st);
        st->sub = Subrequest::start(r, *c.uri);
        if (!st->sub) return respond_status(r, 500);
        // Woken (post_resume) when the subrequest's response is over.
        return Next::Suspend;
    }
    Subrequest& s = *st->sub;
    if (!s.done()) return Next::Suspend;
    const int status = s.status();
    if (s.has_child()) {
        set_variables(r, c, s);
        if (status == 401) {
            // Every challenge the subrequest sent (ticket #485 of nginx:
            // several WWW-Authenticate fields), copied: the subrequest goes.
            for (const Header& h : s.head().headers)
                if (iequals(h.name, "WWW-Authenticate"))
                    r.out.headers.push_back({"WWW-Authenticate", r.arena().dup(h.value)});
        }
        s.release();
    }
    return verdict(r, status);
}

using conf::Ctx;
using conf::Node;

Status set_auth_request(Ctx& cx, const Node& n, AuthRequestConf& c) {
    if (c.uri) return conf::set_duplicate(cx, n);
    const std::string& v = n.args[0].text;
    c.uri = v == "off" ? std::string() : v;
    return {};
}

Status set_auth_request_set(Ctx& cx, const Node& n, AuthRequestConf& c) {
    std::string_view name = n.args[0].text;
    if (name.size() < 2 || name[0] != '$')
        return cx.error(n, "invalid variable name \"" + std::string(name) + "\"");
    name.remove_prefix(1);
    HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    GH_CHECK(m != nullptr);  // a directive of the http block's levels
    AuthSet a;
    // Like "set": a variable of its own, or one nginx lets change ($args).
    a.var = m->vars.assignable(name);
    if (a.var < 0) return cx.error(n, "the duplicate \"" + std::string(name) + "\" variable");
    a.args = name == "args";
    auto cv = ComplexValue::compile(cx, n, n.args[1].text);
    if (!cv) return cv.error();
    a.value = std::move(*cv);
    if (!c.sets) c.sets = cx.arena().make<std::vector<AuthSet>>();
    c.sets->push_back(std::move(a));
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"auth_request", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_auth_request>()},
    {"auth_request_set", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_auth_request_set>()},
};

bool auth_request_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    const auto& c = *static_cast<const AuthRequestConf*>(loc[auth_request_module.index]);
    return c.uri && !c.uri->empty();
}

constexpr PhaseHandler kPhases[] = {{Phase::Access, run_auth_request, auth_request_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module auth_request_module{
    .name = "auth_request",
    .directives = kDirectives,
    .loc = conf::level<AuthRequestConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
