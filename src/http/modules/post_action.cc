// post_action_module: once a client's response is complete, one more
// request, for a URI or a named location, whose answer goes nowhere
// [nginx post_action, ngx_http_core_module]. Its use: telling an origin
// that a download went out.
//
//     location /files/ {
//         post_action @sent;
//     }
//     location @sent {
//         proxy_pass http://tracker/sent?uri=$uri&status=$status&bytes=$body_bytes_sent;
//     }
//
// nginx redirects the client's request itself there, after its response,
// with the output switched off. Here the same is a background subrequest
// (subrequest.h) started by the after_response hook (fwd.h): it has the
// client's method, header fields and body (when it was read whole and
// kept), and begins with the response's facts (SubrequestOptions::
// parent_response), so that $status, $body_bytes_sent, $bytes_sent,
// $request_completion and $request_time there describe what the client
// got, as in nginx. A URI gets its own $args (none without "?", as
// nginx's internal redirect leaves none); a named location keeps the
// request's $uri and $args.
//
// What that costs and when it ends are mirror's: the request's end (its
// access-log line, the connection's next request) waits for it, a
// connection that closes after the response is closed for the client at
// once, and its own line is written only where "log_subrequest on" says
// so (nginx writes the client's line only, after the post action).
//
// The child is a subrequest, whose end runs no after_response hook: a
// post_action in the location it reaches does not run again (nginx would
// go on redirecting until its limit of 10). A response cut short (the
// client gone before its end, an origin failing midway) gets no
// post_action, where nginx runs one too: the front-ends destroy such a
// request at once, and keeping it for a post action would mean keeping
// its producer going too. Nor does "return 444" (nginx neither) or a
// request refused from its head (a bad request line).
#include <optional>
#include <string>

#include "http/phases.h"
#include "http/request.h"
#include "http/subrequest.h"

namespace gatehouse::http {

extern const conf::Module post_action_module;

namespace {

// Whether any level has "post_action": without, the hook stays out of
// every response (ModuleHooks::filters_used).
struct PostActionMainConf {
    bool used = false;
};

struct PostActionConf {
    // "post_action": "/uri", "/uri?args" or "@name"; empty for "off";
    // unset at a level without one, which takes the enclosing level's.
    std::optional<std::string> target;
};

void merge(const PostActionConf& up, PostActionConf& c) {
    if (!c.target) c.target = up.target;
}

void run_post_action(Request& r) {
    // Refused from its head (a bad request line, a target this server
    // does not serve): it never reached its phases, and its head may be
    // too broken to send anywhere. start_request() sets the URI just
    // before the phases; a server-level "return" comes after it.
    if (r.uri.empty()) return;
    const auto& c = r.loc_conf<PostActionConf>(post_action_module);
    if (!c.target || c.target->empty()) return;
    SubrequestOptions o;
    o.background = true;
    o.parent_method = true;
    o.parent_response = true;
    // The body goes along when a handler kept it whole (proxy_pass with
    // buffering, mirror); one streamed away or left unread is gone.
    o.parent_body = r.body_kept && r.body_kept->complete;
    // A null start() was logged there; the request ends as it would.
    Subrequest::start(r, *c.target, o);
}

using conf::Ctx;
using conf::Node;

Status set_post_action(Ctx& cx, const Node& n, PostActionConf& c) {
    if (c.target) return conf::set_duplicate(cx, n);
    if (auto* m = cx.conf<PostActionMainConf>(post_action_module, conf::Level::Main)) m->used = true;
    const std::string& v = n.args[0].text;
    if (v == "off") {
        // Not in nginx, where there is no way back to none at an inner
        // level.
        c.target.emplace();
        return {};
    }
    // nginx sends whatever does not begin with "/" to a named location,
    // which fails at run time; here it is refused at once.
    if (!v.starts_with('/') && (!v.starts_with('@') || v.size() == 1))
        return cx.error(n, "invalid value \"" + v + "\"");
    c.target = v;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"post_action", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::custom<set_post_action>()},
};

bool used(conf::ConfArray main) {
    return main && static_cast<const PostActionMainConf*>(main[post_action_module.index])->used;
}

constexpr ModuleHooks kHooks{.filters_used = used, .after_response = run_post_action};

}  // namespace

extern const conf::Module post_action_module{
    .name = "post_action",
    .directives = kDirectives,
    .main = conf::level<PostActionMainConf>(),
    .loc = conf::level<PostActionConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
