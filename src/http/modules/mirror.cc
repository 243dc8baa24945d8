// mirror_module: a copy of each client request sent to other URIs in the
// background, their answers ignored [nginx ngx_http_mirror_module].
//
//     location / {
//         mirror /shadow;
//         proxy_pass http://backend;
//     }
//     location = /shadow {
//         internal;
//         proxy_pass http://test_backend$request_uri;
//     }
//
// Precontent phase, client requests only (never a subrequest): each URI
// of "mirror" gets a background subrequest (subrequest.h) with the
// client's method, header fields and $args, and with "mirror_request_body
// on" (the default) the client's whole body, which is read first, in
// memory or a temp file as for any handler that reads it whole (body.h):
// the request goes on only once the body is in, with it kept, so a
// proxy_pass after it sends it from there ("proxy_request_buffering off"
// cannot stream it then, as in nginx). With "off" the mirrors start at
// once and get no body (no Content-Length either).
//
// A mirror never changes the client's answer: its response is dropped,
// its failures (an origin down, a timeout) are its own, and one that
// cannot start (too many, a temp file's descriptor) is left out with a
// line in the error log. The client's response does not wait for the
// mirrors; the end of its request does (its access-log line, the
// connection's next request), as in nginx: see subrequest.h.
//
// An internal redirect (index, error_page, try_files' last URI) clears
// the module's context: the location reached mirrors again, as nginx's
// does.
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "http/body.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/subrequest.h"

namespace gatehouse::http {

extern const conf::Module mirror_module;

namespace {

struct MirrorConf {
    // "mirror": the URIs of this level, in order; empty for "off"; unset
    // at a level with none, which takes the enclosing level's.
    std::optional<std::vector<std::string>> uris;
    std::optional<bool> request_body;  // "mirror_request_body"
};

void merge(const MirrorConf& up, MirrorConf& c) {
    if (!c.uris) c.uris = up.uris;
    conf::inherit(c.request_body, up.request_body, true);
}

// One request's mirrors, in the request arena; cleared by an internal
// redirect.
struct MirrorState {
    bool started = false;  // the mirrors are on their way: the phase goes on
    bool reading = false;  // read_whole_body() is on the stack (it may answer at once)
};

void start_mirrors(Request& r, bool with_body) {
    const auto& c = r.loc_conf<MirrorConf>(mirror_module);
    SubrequestOptions o;
    o.background = true;
    o.parent_method = true;
    o.parent_body = with_body;
    o.parent_args = true;
    // A null start() was logged there; the client's request goes on.
    for (const std::string& uri : *c.uris) Subrequest::start(r, uri, o);
}

// The body is in (r.body_kept): the mirrors go, then the request.
void body_read(Request& r) {
    auto* st = r.ctx<MirrorState>(mirror_module);
    if (!st || st->started) return;
    start_mirrors(r, true);
    st->started = true;
    // Read at once: the handler that asked is still on the stack and goes
    // on by itself.
    if (!st->reading) post_resume(r);
}

Next run_mirror(Request& r) {
    if (r.parent) return Next::Decline;
    const auto& c = r.loc_conf<MirrorConf>(mirror_module);
    if (!c.uris || c.uris->empty()) return Next::Decline;
    auto* st = r.ctx<MirrorState>(mirror_module);
    if (st) return st->started ? Next::Decline : Next::Suspend;
    st = r.arena().make<MirrorState>();
    r.set_ctx(mirror_module, st);
    if (!*c.request_body || !r.has_body) {
        start_mirrors(r, false);
        st->started = true;
        return Next::Decline;
    }
    st->reading = true;
    const bool reading = read_whole_body(r, body_read);
    st->reading = false;
    if (!reading) {
        // An earlier handler streamed it away (an error_page after
        // "proxy_request_buffering off"): there is no body to copy.
        GH_LOG(Warn, "the request body was already passed on: mirrored without it");
        start_mirrors(r, false);
        st->started = true;
    }
    // Else body_read() starts the mirrors and resumes the request, or did
    // already; on a read error the client has its answer (413, 400...).
    return st->started ? Next::Decline : Next::Suspend;
}

using conf::Ctx;
using conf::Node;

Status set_mirror(Ctx& cx, const Node& n, MirrorConf& c) {
    const std::string& v = n.args[0].text;
    if (v == "off") {
        // "off" stands alone at its level [nginx].
        if (c.uris) return conf::set_duplicate(cx, n);
        c.uris.emplace();
        return {};
    }
    if (c.uris && c.uris->empty()) return conf::set_duplicate(cx, n);
    if (!c.uris) c.uris.emplace();
    c.uris->push_back(v);
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"mirror", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_mirror>()},
    {"mirror_request_body", conf::kHttpSrvLoc, conf::Take1, conf::flag<&MirrorConf::request_body>()},
};

bool mirror_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    const auto& c = *static_cast<const MirrorConf*>(loc[mirror_module.index]);
    return c.uris && !c.uris->empty();
}

constexpr PhaseHandler kPhases[] = {{Phase::Precontent, run_mirror, mirror_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module mirror_module{
    .name = "mirror",
    .directives = kDirectives,
    .loc = conf::level<MirrorConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
