// The phase engine: the neutral start of a request, server and location
// choice, the handler steps, redirects and the Log phase.
#include "http/phases.h"

#include <bit>
#include <cstring>
#include <span>

#include "core/log.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/uri.h"

namespace gatehouse::http {

namespace {

bool is_regex(const LocConf* l) { return l->match == LocMatch::Regex || l->match == LocMatch::RegexCaseless; }

enum class Found { None, Prefix, Final, AutoRedirect };

// nginx's location choice: the longest matching prefix among a level's
// prefix locations (an exact match ends the search at once; "^~" ends it
// before regexes), searched again among that location's nested ones; then
// the regexes, innermost level first, in config order; else the prefix.
// AutoRedirect: the URI is the name, less its final '/', of a prefix
// location with auto_redirect ("location /app/ { proxy_pass ...; }" and
// "/app"), and no location is named exactly the URI: as in nginx, that
// is decided before the regexes, *best being that location.
Found find_in(Request& r, const LocConf& level, LocConf** best) {
    LocConf* longest = nullptr;
    LocConf* redirect = nullptr;
    for (LocConf* l : level.locations) {
        if (is_regex(l)) continue;
        if (l->match == LocMatch::Exact) {
            if (r.uri == l->name) {
                *best = l;
                return Found::Final;
            }
            continue;
        }
        if (l->auto_redirect && l->name.size() == r.uri.size() + 1 && l->name.back() == '/' &&
            l->name.compare(0, r.uri.size(), r.uri) == 0)
            redirect = l;
        if (r.uri.size() >= l->name.size() && r.uri.compare(0, l->name.size(), l->name) == 0 &&
            (!longest || l->name.size() > longest->name.size()))
            longest = l;
    }
    if (redirect && (!longest || longest->name.size() < r.uri.size())) {
        *best = redirect;
        return Found::AutoRedirect;
    }
    Found f = Found::None;
    if (longest) {
        *best = longest;
        f = Found::Prefix;
        LocConf* inner = nullptr;
        Found g = find_in(r, *longest, &inner);
        if (g == Found::Final || g == Found::AutoRedirect) {
            *best = inner;
            return g;
        }
        if (g == Found::Prefix) *best = inner;
        if (longest->match == LocMatch::PrefixNoRegex && g == Found::None) return Found::Final;
    }
    for (LocConf* l : level.locations) {
        if (!is_regex(l)) continue;
        if (l->regex->exec(r, r.uri)) {
            *best = l;
            LocConf* inner = nullptr;
            Found g = find_in(r, *l, &inner);
            if (g != Found::None) *best = inner;
            return g == Found::AutoRedirect ? g : Found::Final;
        }
    }
    return f;
}

void set_location(Request& r, LocConf* l) {
    r.loc = l;
    r.loc_confs = l->loc_confs;
    r.content_handler = l->content_handler;
    // Its "error_log", when the location (or a level above) has one.
    r.log_ctx.error_log = l->error_log;
}

void clear_module_contexts(Request& r) {
    for (size_t i = 0; i < modules.size(); ++i)
        if (!modules[i]->http || !modules[i]->http->ctx_survives_redirects) r.set_ctx(*modules[i], nullptr);
}

Next find_config(Request& r) {
    // A server-level rewrite already changed the URI the search uses.
    r.uri_changed = false;
    LocConf& server_level = core_loc(r.srv->loc_confs);
    LocConf* best = nullptr;
    if (find_in(r, server_level, &best) == Found::AutoRedirect) {
        // To the location's name, escaped, with the arguments [nginx].
        std::pmr::string to(r.mem());
        append_escaped_path(best->name, to);
        if (!r.args.empty()) {
            to.push_back('?');
            to.append(r.args);
        }
        r.out.location = r.arena().dup(to);
        return respond_status(r, 301);
    }
    set_location(r, best ? best : &server_level);
    LocConf& lc = *r.loc;
    if (*lc.internal && !r.internal) return respond_status(r, 404);
    // A method "limit_except" does not let through gets the block's
    // settings (its access rules, its logs) [nginx].
    if (lc.limit_except_confs && !(method_bit(r.method) & lc.limit_except)) {
        r.loc_confs = lc.limit_except_confs;
        if (PhaseFn h = r.loc_conf<LocConf>(http_core_module).content_handler) r.content_handler = h;
    }
    if (r.content_length && *r.content_length > *lc.client_max_body_size && *lc.client_max_body_size != 0) {
        GH_LOG(Error, "client intended to send too large body: %llu bytes",
               static_cast<unsigned long long>(*r.content_length));
        // The body stays unread: the connection cannot serve another request.
        r.stream().close_after();
        return respond_status(r, 413);
    }
    return Next::Decline;
}

Next post_rewrite(Request& r) {
    if (!r.uri_changed) return Next::Decline;
    r.uri_changed = false;
    if (--r.uri_changes == 0) {
        GH_LOG(Error, "rewrite or internal redirection cycle while processing \"%.*s\"",
               static_cast<int>(r.uri.size()), r.uri.data());
        return respond_status(r, 500);
    }
    r.set_exten();
    r.phase_index = http_main(r.main_confs)->find_config_step;
    return Next::Redirect;
}

Next no_content(Request& r);

// "auth_delay": a 401 of the access checks waits this long on a timer,
// the worker serving others meanwhile, so that the time a refusal takes
// tells a client guessing passwords nothing [nginx 1.17.10]. The state
// lives in the request arena: a client that goes away takes the timer
// with it.
struct AuthDelay {
    Request* r = nullptr;
    event::Timer timer;
};

void end_auth_delay(AuthDelay* d) {
    Request& r = *d->r;
    log::Scope scope(&r.log_ctx);
    if (r.stream().closed() || r.done) return;
    continue_request(r, respond_status(r, 401));
}

// The access phase's last word: `status` now, or a 401 after auth_delay.
Next refuse_access(Request& r, int status) {
    conf::Duration delay = *r.loc_conf<LocConf>(http_core_module).auth_delay;
    if (status != 401 || delay.count() <= 0) return respond_status(r, status);
    auto* d = r.arena().make<AuthDelay>();
    d->r = &r;
    d->timer.cb = event::Callback::to<&end_auth_delay>(d);
    event::worker_loop().arm(d->timer, delay);
    return Next::Suspend;
}

// Before the Access phase: a subrequest was let in with its parent, and
// its checks (allow/deny, auth) are not run again [nginx
// ngx_http_core_access_phase].
Next enter_access(Request& r) {
    if (!r.parent) return Next::Decline;
    r.phase_index = http_main(r.main_confs)->post_access_step;
    return Next::Redirect;
}

// After the Access phase: under "satisfy any", every check that ran
// denied (none granted, or the phase would have been left by Proceed
// with access_code cleared).
Next post_access(Request& r) {
    if (r.access_code == 0) return Next::Decline;
    int status = r.access_code;
    r.access_code = 0;
    return refuse_access(r, status);
}

// A location with a handler of its own ("proxy_pass" and the like) is
// answered by it alone, as nginx's per-location content handler.
Next location_content(Request& r) {
    PhaseFn h = r.loc ? r.content_handler : nullptr;
    if (!h) return Next::Decline;
    Next n = h(r);
    if (n == Next::Decline || n == Next::Proceed) return no_content(r);
    return n;
}

Next no_content(Request& r) {
    // Nothing answered: nginx's static module would have said 404 (or 405
    // for methods it cannot serve).
    if (r.in.method != Method::Get && r.in.method != Method::Head && r.in.method != Method::Post)
        return respond_status(r, 405);
    return respond_status(r, 404);
}

Next apply_error_page(Request& r, const ErrorPage& ep) {
    std::string_view target = ep.uri.eval(r);
    r.error_page_status = ep.overwrite < 0 ? r.out.status : ep.overwrite;
    if (!target.empty() && target[0] == '@') {
        r.out.status = 0;
        return named_redirect(r, target);
    }
    if (!target.empty() && target[0] == '/') {
        std::string_view args;
        size_t q = target.find('?');
        if (q != std::string_view::npos) {
            args = target.substr(q + 1);
            target = target.substr(0, q);
        }
        r.out.status = 0;
        // As nginx: the error page is fetched with GET (HEAD stays HEAD).
        if (r.in.method != Method::Head) r.method = "GET";
        return internal_redirect(r, target, args);
    }
    // A URL: redirect the client there.
    int code = ep.overwrite;
    if (code != 301 && code != 302 && code != 303 && code != 307 && code != 308) code = 302;
    r.error_page_status = 0;
    r.out.status = code;
    r.out.location = target;
    r.body.clear();
    return Next::Respond;
}

}  // namespace

void build_phase_engine(HttpMainConf& m) {
    m.handlers.clear();
    std::vector<const PhaseHandler*> declared;  // parallel to m.handlers
    for (int p = 0; p < kPhases; ++p) {
        m.phase_start[p] = static_cast<uint16_t>(m.handlers.size());
        for (const Module* mod : modules)
            if (mod->http)
                for (const PhaseHandler& h : mod->http->phases)
                    if (static_cast<int>(h.phase) == p) {
                        m.handlers.push_back(h.fn);
                        declared.push_back(&h);
                    }
    }
    m.phase_start[kPhases] = static_cast<uint16_t>(m.handlers.size());

    // Steps: each phase's handlers, then where Proceed goes. The engine's
    // own steps sit between phases, and always run.
    m.steps.clear();
    std::vector<decltype(PhaseHandler::wanted)> wanted;  // parallel to m.steps
    auto add_phase = [&](Phase p) {
        size_t from = m.steps.size();
        for (uint16_t i = m.phase_start[static_cast<int>(p)]; i < m.phase_start[static_cast<int>(p) + 1]; ++i) {
            m.steps.push_back({m.handlers[i], 0});
            wanted.push_back(declared[i]->wanted);
        }
        for (size_t i = from; i < m.steps.size(); ++i) m.steps[i].next = static_cast<uint16_t>(m.steps.size());
    };
    auto add_step = [&](PhaseFn fn) {
        m.steps.push_back({fn, static_cast<uint16_t>(m.steps.size() + 1)});
        wanted.push_back(nullptr);
    };
    add_phase(Phase::PostRead);
    m.server_rewrite_step = static_cast<uint16_t>(m.steps.size());
    add_phase(Phase::ServerRewrite);
    m.find_config_step = static_cast<uint16_t>(m.steps.size());
    add_step(find_config);
    m.rewrite_step = static_cast<uint16_t>(m.steps.size());
    add_phase(Phase::Rewrite);
    add_step(post_rewrite);
    add_phase(Phase::Preaccess);
    add_step(enter_access);
    add_phase(Phase::Access);
    m.post_access_step = static_cast<uint16_t>(m.steps.size());
    add_step(post_access);
    add_phase(Phase::Precontent);
    add_step(location_content);
    add_phase(Phase::Content);
    add_step(no_content);

    // Which steps each location passes over. A proxied request used to
    // make 19 calls, 14 of them only to hear "not configured here"; with
    // nothing configured it now makes the engine's own 5.
    auto skips_of = [&](const SrvConf& s, conf::ConfArray loc) {
        uint64_t skip = 0;
        for (size_t i = 0; i < wanted.size() && i < 64; ++i)
            if (wanted[i] && !wanted[i](m.main_confs, s.srv_confs, loc)) skip |= uint64_t{1} << i;
        return skip;
    };
    // And the filters each location passes over (the chains are built).
    auto filter_skips = [&](const auto& filters, const SrvConf& s, conf::ConfArray loc) {
        uint64_t skip = 0;
        for (size_t i = 0; i < filters.size(); ++i)
            if (filters[i].wanted && !filters[i].wanted(m.main_confs, s.srv_confs, loc)) skip |= uint64_t{1} << i;
        return skip;
    };
    auto set_skips = [&](const SrvConf& s, conf::ConfArray loc) {
        LocConf& l = core_loc(loc);
        l.skip_steps = skips_of(s, loc);
        l.skip_header_filters = filter_skips(m.header_filters, s, loc);
        l.skip_body_filters = filter_skips(m.body_filters, s, loc);
    };
    auto visit = [&](auto& self, const SrvConf& s, LocConf& l) -> void {
        set_skips(s, l.loc_confs);
        if (l.limit_except_confs) set_skips(s, l.limit_except_confs);
        for (LocConf* inner : l.locations) self(self, s, *inner);
    };
    for (SrvConf* s : m.servers) {
        visit(visit, *s, core_loc(s->loc_confs));
        for (LocConf* named : s->named) visit(visit, *s, *named);
    }
}

// ---- starting a request ---------------------------------------------------------

void start_request(Request& r) {
    const RequestHead& h = r.in;
    // Host: lower case, no port, no trailing dot.
    if (!h.host.empty()) {
        char* buf = static_cast<char*>(r.arena().alloc(h.host.size() + 1, 1));
        r.host = normalize_host(h.host, std::span<char>(buf, h.host.size() + 1));
    }
    SrvConf* found = find_server(r.stream().servers(), r.host, &r);
    r.srv = found;
    r.srv_confs = found->srv_confs;
    r.loc_confs = found->loc_confs;
    r.log_ctx.error_log = core_loc(found->loc_confs).error_log;

    if (h.form == TargetForm::Asterisk || h.form == TargetForm::Authority) {
        // OPTIONS * and CONNECT are not served by this server.
        r.no_error_page = true;
        continue_request(r, respond_status(r, h.form == TargetForm::Authority ? 405 : 400,
                                           "client sent a request-target this server does not serve"));
        return;
    }
    if (h.method == Method::Trace) {
        // TRACE would echo the request, cookies and credentials included,
        // to whatever script asks (cross-site tracing); nginx refuses it
        // wherever it is sent, and closes the connection after, as for
        // other requests refused from their head.
        r.no_error_page = true;
        r.stream().close_after();
        continue_request(r, respond_status(r, 405, "client sent TRACE method"));
        return;
    }
    PathQuery pq = split_path_query(r.unparsed_uri);
    r.args = pq.query;
    char* out = static_cast<char*>(r.arena().alloc(pq.path.size() + 1, 1));
    auto clean = clean_path(pq.path, std::span<char>(out, pq.path.size() + 1), *r.srv->merge_slashes);
    if (!clean) {
        GH_LOG(Info, "client sent invalid request URI \"%.*s\" (%s)", static_cast<int>(r.unparsed_uri.size()),
               r.unparsed_uri.data(), clean.message().c_str());
        r.no_error_page = true;
        r.stream().close_after();
        continue_request(r, respond_status(r, 400, "client sent invalid request URI"));
        return;
    }
    r.uri = *clean;
    r.set_exten();
    r.phase_index = 0;
    run_phases(r);
}

void reject_request(Request& r, int status, std::string_view reason) {
    // The head is unusable: the standard page, no error_page redirect, and
    // the connection goes after it.
    r.err_reason = reason;
    r.no_error_page = true;
    r.stream().close_after();
    continue_request(r, respond_status(r, status, reason));
}

// ---- running the steps -------------------------------------------------------------

void run_phases(Request& r) {
    HttpMainConf& m = *http_main(r.main_confs);
    while (!r.stream().closed()) {
        // Steps with nothing to do in this location are passed over as if
        // they had declined. The structs are read again each time round:
        // a step may have chosen others (find_config, an "if" block).
        if (r.phase_index < 64 && r.loc_confs)
            r.phase_index += static_cast<uint16_t>(std::countr_one(core_loc(r.loc_confs).skip_steps >> r.phase_index));
        if (r.phase_index >= m.steps.size()) {
            // no_content always responds; reaching here is a bug.
            respond_status(r, 500);
            finalize_response(r);
            return;
        }
        const auto& step = m.steps[r.phase_index];
        switch (step.fn(r)) {
            case Next::Decline: ++r.phase_index; break;
            case Next::Proceed: r.phase_index = step.next; break;
            case Next::Redirect: break;  // phase_index says where
            case Next::Suspend: return;
            case Next::Respond: finalize_response(r); return;
        }
    }
}

Next access_granted(Request& r) {
    if (!*r.loc_conf<LocConf>(http_core_module).satisfy_any) return Next::Decline;
    // An earlier check's 401 left its challenge: the response is no 401.
    if (r.access_code) r.out.remove("WWW-Authenticate");
    r.access_code = 0;
    return Next::Proceed;
}

Next access_denied(Request& r, int status) {
    if (!*r.loc_conf<LocConf>(http_core_module).satisfy_any || (status != 401 && status != 403)) {
        // Decided now: nothing is remembered for the Access phase of the
        // location an error_page may send the request to.
        r.access_code = 0;
        return refuse_access(r, status);
    }
    if (r.access_code != 401) r.access_code = static_cast<uint16_t>(status);
    return Next::Decline;
}

void post_resume(Request& r) { event::worker_loop().post(r.resume_ev); }

void continue_request(Request& r, Next n) {
    switch (n) {
        case Next::Respond: finalize_response(r); return;
        case Next::Redirect: post_resume(r); return;
        case Next::Suspend: return;
        case Next::Decline:
        case Next::Proceed:
            // Not an outcome for code outside the engine's loop.
            GH_ASSERT(false);
            return;
    }
}

Next respond_status(Request& r, int status, std::string_view reason) {
    r.out.status = status;
    if (!reason.empty()) r.err_reason = reason;
    r.body.clear();
    if (status == 444 || status == 499) return Next::Respond;
    if (!r.no_error_page && r.loc_confs && r.uri_changes > 1) {
        auto& lc = r.loc_conf<LocConf>(http_core_module);
        bool allowed = r.error_page_status == 0 || *lc.recursive_error_pages;
        if (allowed)
            for (const ErrorPage& ep : lc.error_pages)
                if (ep.status == status) return apply_error_page(r, ep);
    }
    return Next::Respond;
}

Next internal_redirect(Request& r, std::string_view uri, std::string_view args) {
    if (--r.uri_changes == 0) {
        GH_LOG(Error, "rewrite or internal redirection cycle while internally redirecting to \"%.*s\"",
               static_cast<int>(uri.size()), uri.data());
        r.error_page_status = 0;
        r.no_error_page = true;
        return respond_status(r, 500);
    }
    r.uri = r.arena().dup(uri);
    r.args = r.arena().dup(args);
    r.set_exten();
    r.internal = true;
    r.loc_confs = r.srv->loc_confs;
    r.loc = nullptr;
    r.content_handler = nullptr;
    clear_module_contexts(r);
    r.phase_index = http_main(r.main_confs)->server_rewrite_step;
    return Next::Redirect;
}

Next named_redirect(Request& r, std::string_view name) {
    for (LocConf* l : r.srv->named)
        if (l->name == name) {
            if (--r.uri_changes == 0) {
                r.no_error_page = true;
                return respond_status(r, 500);
            }
            r.internal = true;
            set_location(r, l);
            clear_module_contexts(r);
            r.phase_index = http_main(r.main_confs)->rewrite_step;
            return Next::Redirect;
        }
    GH_LOG(Error, "could not find named location \"%.*s\"", static_cast<int>(name.size()), name.data());
    r.no_error_page = true;
    return respond_status(r, 500);
}

void run_log_phase(Request& r) {
    HttpMainConf* m = http_main(r.main_confs);
    if (!m || !r.loc_confs) return;
    for (uint16_t i = m->phase_start[static_cast<int>(Phase::Log)];
         i < m->phase_start[static_cast<int>(Phase::Log) + 1]; ++i)
        m->handlers[i](r);
}

// ---- server selection ------------------------------------------------------

SrvConf* find_server(const AddrServers& as, std::string_view host, Request* r) {
    if (as.one_server) return as.default_server;
    if (host.empty()) {
        auto it = as.exact.find(std::string_view());
        return it != as.exact.end() ? it->second : as.default_server;
    }
    auto it = as.exact.find(host);
    if (it != as.exact.end()) return it->second;
    for (const auto& [suffix, s] : as.wild_head)
        if (host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0)
            return s;
    for (const auto& [prefix, s] : as.wild_tail)
        if (host.size() > prefix.size() && host.compare(0, prefix.size(), prefix) == 0) return s;
    for (const auto& [re, s] : as.regex)
        if (r ? re->exec(*r, host) : re->re.match(host)) return s;
    return as.default_server;
}

}  // namespace gatehouse::http
