// The proxy's side of a proxied request: the request head by nginx's
// rules, the client's body, and the Hooks through which the
// upstream::Client hands over the origin's answer (see proxy_exchange.h).
#include "http/modules/proxy_exchange.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "core/log.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/core_module.h"
#include "http/head_text.h"
#include "http/modules/proxy_cache.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/static_module.h"
#include "http/uri.h"
#include "http/userid.h"
#include "upstream/sticky.h"

namespace gatehouse::http::proxy {

namespace {

upstream::ClientConf client_conf(const ProxyConf& pc, const Pass& pass) {
    upstream::ClientConf c;
    c.connect_timeout = *pc.connect_timeout;
    c.send_timeout = *pc.send_timeout;
    c.read_timeout = *pc.read_timeout;
    c.buffer_size = static_cast<size_t>(*pc.buffer_size);
    c.buffers_num = *pc.buffers_num;
    c.buffers_size = *pc.buffers_size;
    c.buffering = *pc.buffering;
    c.max_temp_file_size = *pc.max_temp_file_size;
    c.temp_file_write_size = *pc.temp_file_write_size;
    c.socket_keepalive = *pc.socket_keepalive;
    c.next_upstream = *pc.next_upstream;
    c.next_upstream_tries = *pc.next_upstream_tries;
    c.next_upstream_timeout = *pc.next_upstream_timeout;
    c.tls = pass.tls ? &pass.tls->settings : nullptr;
    return c;
}

// The origin's trailer section ("name: value\r\n" lines the chunked
// decoder checked) as the response's trailers, copied into r's arena;
// fields about framing or the connection are not the client's.
void take_trailers(Request& r, std::string_view raw) {
    while (!raw.empty()) {
        size_t eol = raw.find("\r\n");
        std::string_view line = raw.substr(0, eol);
        raw.remove_prefix(eol == std::string_view::npos ? raw.size() : eol + 2);
        size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) continue;
        std::string_view name = line.substr(0, colon), value = trim_ows(line.substr(colon + 1));
        if (is_hop_by_hop_request(name)) continue;
        r.out.trailers.push_back({r.arena().dup(name), r.arena().dup(value)});
    }
}

// What a cached location keeps from the origin [nginx's cache headers].
bool is_conditional(std::string_view name) {
    return iequals(name, "If-Modified-Since") || iequals(name, "If-Unmodified-Since") ||
           iequals(name, "If-None-Match") || iequals(name, "If-Match") || iequals(name, "Range") ||
           iequals(name, "If-Range");
}

}  // namespace

// ---- the request head -----------------------------------------------------------------------

OriginRequest build_request_head(Request& r, const ProxyConf& pc, const HeadInputs& in) {
    OriginRequest o;
    const int version = *pc.http_version;
    const auto* set = pc.set_headers;
    std::pmr::string h(r.mem());
    size_t estimate = 256 + in.method.size() + in.uri.size() + in.host.size();
    for (const HeaderField& f : r.headers) estimate += f.name.size() + f.value.size() + 4;
    h.reserve(estimate);
    // Values from variables may hold any byte: encoded (head_text.h).
    auto safe = [&](std::string_view what, std::string_view v, auto encode) {
        bool changed = false;
        std::string_view out = encode(v, r.arena(), &changed);
        if (changed)
            GH_LOG(Info, "%.*s for the upstream has CR, LF, NUL or other control bytes, sent percent-encoded",
                   static_cast<int>(what.size()), what.data());
        return out;
    };
    auto field = [&](std::string_view n, std::string_view v) {
        h += n;
        h += ": ";
        h += safe(n, v, encode_breaking<breaks_field>);
        h += "\r\n";
    };
    o.uri = safe("request URI", in.uri, encode_breaking<breaks_target>);
    h += in.method;
    h += ' ';
    h += o.uri;
    h += version == 11 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n";

    // proxy_set_header first, then the defaults it did not replace: Host
    // $proxy_host, and "Connection: close" unless connections are pooled.
    bool host_set = false, conn_set = false;
    if (set)
        for (const SetHeader& s : *set) {
            bool is_conn = iequals(s.name, "Connection");
            host_set |= iequals(s.name, "Host");
            conn_set |= is_conn;
            std::string_view v = s.value.eval(r);
            if (v.empty() || iequals(s.name, "Content-Length") || iequals(s.name, "Transfer-Encoding")) continue;
            if (iequals(s.name, "Upgrade")) o.upgrade = true;
            if (is_conn && connection_lists(v, "close")) o.close = true;
            field(s.name, v);
        }
    if (!host_set) field("Host", in.host);
    if (!conn_set && !(version == 11 && in.pooled)) {
        field("Connection", "close");
        o.close = true;
    }
    // Pooling needs HTTP/1.1 both ways (RFC 9112 9.3).
    if (version == 10) o.close = true;

    if (in.body_chunked) {
        field("Transfer-Encoding", "chunked");
    } else if (in.body_length) {
        char num[24];
        int n = snprintf(num, sizeof num, "%llu", static_cast<unsigned long long>(*in.body_length));
        field("Content-Length", {num, static_cast<size_t>(n)});
    }

    if (*pc.pass_request_headers) {
        // Fields the client's Connection names are hop-by-hop too (RFC 9110
        // 7.6.1); most requests have one Connection field or none.
        std::string_view conn_value;
        bool several = false;
        for (const HeaderField& f : r.headers)
            if (iequals(f.name, "Connection")) {
                several = !conn_value.empty();
                conn_value = f.value;
            }
        auto named_by_connection = [&](std::string_view name) {
            if (conn_value.empty()) return false;
            if (!several) return connection_lists(conn_value, name);
            for (const HeaderField& f : r.headers)
                if (iequals(f.name, "Connection") && connection_lists(f.value, name)) return true;
            return false;
        };
        for (const HeaderField& f : r.headers) {
            if (is_hop_by_hop_request(f.name) || iequals(f.name, "Host")) continue;
            bool replaced = false;
            if (set)
                for (const SetHeader& s : *set)
                    if (iequals(s.name, f.name)) replaced = true;
            if (replaced || named_by_connection(f.name)) continue;
            if (in.drop_conditionals && is_conditional(f.name)) continue;
            field(f.name, f.value);
        }
    }
    if (!in.if_none_match.empty()) field("If-None-Match", in.if_none_match);
    if (!in.if_modified_since.empty()) field("If-Modified-Since", in.if_modified_since);
    h += "\r\n";
    o.head = r.arena().dup(h);
    return o;
}

// ---- the exchange --------------------------------------------------------------------------------

Exchange::Exchange(Request& r, const ProxyConf& pc, const Pass& pass, upstream::UpstreamConf& u,
                   upstream::TryLog& log, const Url& url)
    : r_(r),
      pc_(pc),
      pass_(pass),
      u_(u),
      log_(log),
      host_header_(url.host_header),
      port_(url.port),
      pass_uri_(url.uri),
      has_uri_(url.has_uri),
      cc_(client_conf(pc, pass)),
      kick_(event::Callback::to<&Exchange::respond_error>(this)),
      served_(event::Callback::to<&Exchange::respond_cached>(this)),
      redirect_(event::Callback::to<&Exchange::accel_redirect>(this)) {}

Next Exchange::start() {
    cc_.local = pc_.bind_addr;
    if (pc_.bind) {
        // An empty value binds nothing; an invalid one is logged and binds
        // nothing either [nginx].
        std::string_view v = pc_.bind->eval(r_);
        auto* la = r_.arena().make<upstream::LocalAddr>();
        if (v.empty()) {
        } else if (parse_local_addr(v, *la)) {
            la->text = v;
            la->transparent = pc_.bind_transparent;
            cc_.local = la;
        } else {
            GH_LOG(Error, "invalid local address \"%.*s\"", static_cast<int>(std::min<size_t>(v.size(), 64)),
                   v.data());
        }
    }
    method_ = pc_.method ? pc_.method->eval(r_) : r_.method;
    if (!is_token(method_)) {
        // "proxy_method $arg_m" must not write a request line of the
        // client's choosing (head_text.h).
        GH_LOG(Error, "proxy_method value \"%.*s\" is not a method",
               static_cast<int>(std::min<size_t>(method_.size(), 64)), method_.data());
        return respond_status(r_, 500);
    }
    if (Next n = proxy_cache::Front::begin(r_, pc_, pass_, host_header_, cache_resume, &cache_);
        n != Next::Decline && n != Next::Proceed) {
        if (n == Next::Respond && cache_ && cache_->wants_refresh() && !r_.has_body) {
            // The stale entry answers; the origin is asked for a fresh one
            // apart from this request (proxy_cache_background_update).
            method_ = cache_->method(method_);
            start_refresh();
        }
        return n;
    }
    if (cache_) method_ = cache_->method(method_);
    if (cache_ && cache_->wants_refresh() && !r_.has_body) {
        // A range the cache does not have: the entry is filled apart,
        // this request goes on with its own head (built again below).
        start_refresh();
        request_ = {};
    }
    return go_origin();
}

void Exchange::start_refresh() {
    build_request();
    proxy_cache::RefreshRequest rr;
    rr.head = request_.head;
    rr.uri = request_.uri;
    rr.may_keep = !request_.close;
    rr.tls_name = tls_name();
    rr.hash_key = u_.hash_value ? static_cast<const ComplexValue*>(u_.hash_value)->eval(r_) : std::string_view();
    cache_->start_refresh(u_, cc_, rr);
}

// proxy_cache_lock: the request that waited for another's fill goes on.
void Exchange::cache_resume(Request& r, Next n) {
    auto* ex = r.ctx<Exchange>(proxy_module);
    if (!ex) return;
    if (n == Next::Proceed) {
        if (ex->cache_) ex->method_ = ex->cache_->method(ex->method_);
        n = ex->go_origin();
    }
    continue_request(r, n);
}

// The cache answered instead of the origin (stale, revalidated): from
// served_, out of the Client's step.
void Exchange::respond_cached() {
    log::Scope scope(&r_.log_ctx);
    on_output_drained(r_, nullptr);
    continue_request(r_, Next::Respond);
}

Next Exchange::go_origin() {
    if (!client_) client_.emplace(u_, cc_, *this, log_, r_.mem());
    // Lines about the request name the origin from now on, as nginx's.
    r_.upstream = &*client_;
    // A client that leaves while the origin works ends the exchange at
    // once (499), not when the response is written to it, unless told
    // to let the origin finish.
    r_.abort_on_client_close = !*pc_.ignore_client_abort;
    const bool chunked = r_.has_body && !r_.content_length;
    if (*pc_.pass_request_body && r_.has_body) {
        // HTTP/1.0 has no chunked framing: a body of unknown length is read
        // whole first, to send its length [nginx]. A body an earlier
        // handler streamed (an error_page after "proxy_request_buffering
        // off") can only be had whole, from its copy; one an earlier
        // handler read whole (mirror, a subrequest's copy of its parent's)
        // is sent from where it is kept, as nginx does then.
        const bool taken = r_.body_kept != nullptr;
        if (*pc_.request_buffering || (chunked && *pc_.http_version == 10) || taken) {
            body_mode_ = upstream::BodyMode::Buffered;
        } else {
            body_mode_ = upstream::BodyMode::Streamed;
            chunked_up_ = chunked;
        }
    }
    // proxy_set_body: its value is the body, evaluated once the client's
    // body is read (it may name $request_body) [nginx].
    if (pc_.set_body) body_mode_ = upstream::BodyMode::Buffered;
    // ip_hash hashes the client address; "hash key" the key's value.
    client_->picker().set_client(r_.remote_sockaddr);
    if (u_.hash_value) client_->picker().set_key(static_cast<const ComplexValue*>(u_.hash_value)->eval(r_));
    // "sticky cookie": the server the client's cookie names goes first.
    // Only groups with it look at the Cookie fields (HTTP/2 may split
    // them: every one is read).
    if (u_.sticky) {
        for (const HeaderField& f : r_.headers)
            if (iequals(f.name, "cookie"))
                if (auto v = userid::find_cookie(f.value, u_.sticky->name)) {
                    sticky_in_ = *v;
                    break;
                }
        client_->picker().set_sticky(sticky_in_);
    }
    if (body_mode_ == upstream::BodyMode::Buffered) {
        // Kept for the request: a retry or an error_page that proxies
        // elsewhere sends it again.
        if (!read_whole_body(r_, body_read)) {
            GH_LOG(Error, "client request body was already read and cannot be sent again");
            err_status_ = 500;
            event::worker_loop().post(kick_);
        }
        return Next::Suspend;
    }
    if (*pc_.pass_request_body && !r_.has_body) {
        // Nothing to read, but asking lets the stream answer "Expect:
        // 100-continue" first, as nginx does before an empty body too.
        read_body(r_, [](Request&, Chain&) { return true; });
        if (r_.stream().closed()) return Next::Suspend;
    }
    client_->set_body(body_mode_, nullptr, chunked_up_);
    client_->start();
    return Next::Suspend;
}

void Exchange::body_read(Request& r) {
    auto* ex = r.ctx<Exchange>(proxy_module);
    if (!ex) return;
    if (ex->pc_.set_body) {
        auto* own = r.arena().make<Chain>(r.mem());
        std::string_view v = ex->pc_.set_body->eval(r);
        if (!v.empty()) own->push(Buf::memory(v));
        ex->own_body_ = own;
    }
    ex->client_->set_body(upstream::BodyMode::Buffered, ex->own_body_ ? ex->own_body_ : &r.body_kept->bufs);
    ex->client_->start();
}

bool Exchange::streamed_sink(Request& r, Chain& piece) {
    auto* ex = r.ctx<Exchange>(proxy_module);
    return ex && ex->client_ && ex->client_->send_body(piece);
}

void Exchange::drained_cb(Request& r) {
    // From the stream's posted event: the client may go on at once.
    if (auto* ex = r.ctx<Exchange>(proxy_module); ex && ex->client_) ex->client_->downstream_drained();
}

// From kick_, or at once from on_error (a Client step): the status, or
// its error_page.
void Exchange::respond_error() {
    log::Scope scope(&r_.log_ctx);
    on_output_drained(r_, nullptr);
    Next n = respond_status(r_, err_status_);
    // An error_page redirect cleared every module's context: keep ours, so
    // that $upstream_* still tell what happened.
    r_.set_ctx(proxy_module, this);
    continue_request(r_, n);
}

namespace {

// A URI the origin redirects to may not climb out of where it points:
// after decoding, no "." or ".." segment [nginx ngx_http_parse_unsafe_uri].
bool safe_accel_uri(std::string_view decoded) {
    size_t i = 0;
    while (i <= decoded.size()) {
        size_t j = decoded.find('/', i);
        if (j == std::string_view::npos) j = decoded.size();
        std::string_view seg = decoded.substr(i, j - i);
        if (seg == "." || seg == "..") return false;
        i = j + 1;
    }
    return true;
}

}  // namespace

void Exchange::accel_redirect() {
    log::Scope scope(&r_.log_ctx);
    on_output_drained(r_, nullptr);
    // The redirected request is a GET (a HEAD stays one) [nginx].
    if (r_.in.method != Method::Head) {
        r_.in.method = Method::Get;
        r_.method = "GET";
    }
    Next n;
    if (accel_to_[0] == '@') {
        n = named_redirect(r_, accel_to_);
    } else {
        PathQuery pq = split_path_query(accel_to_);
        std::span<char> buf(static_cast<char*>(r_.arena().alloc(pq.path.size() + 1, 1)), pq.path.size() + 1);
        auto decoded = percent_decode(pq.path, buf);
        if (!decoded || !safe_accel_uri(*decoded)) {
            GH_LOG(Error, "unsafe URI \"%.*s\" was detected", static_cast<int>(accel_to_.size()), accel_to_.data());
            n = respond_status(r_, 404);
        } else {
            n = internal_redirect(r_, *decoded, pq.query);
        }
    }
    r_.set_ctx(proxy_module, this);
    continue_request(r_, n);
}

// ---- upstream::Hooks ----------------------------------------------------------------------------

void Exchange::build_request() {
    if (request_.head.empty()) {
        UriParts up;
        up.pass_uri = pass_uri_;
        up.has_uri = has_uri_;
        up.vars = pass_.url_value.has_value();
        up.location = pass_.location;
        up.location_valid = r_.valid_location;
        up.unparsed_valid = !r_.internal;
        up.unparsed_uri = r_.unparsed_uri;
        up.uri = r_.uri;
        up.args = r_.args;
        HeadInputs in;
        in.method = method_;
        in.uri = origin_uri(r_.arena(), up);
        in.host = host_header_;
        in.pooled = u_.keepalive > 0;
        switch (body_mode_) {
            case upstream::BodyMode::None:
                // A "Content-Length: 0" the client sent is kept: some
                // origins want a length on every POST.
                if (*pc_.pass_request_body && r_.content_length && !r_.has_body) in.body_length = 0;
                break;
            case upstream::BodyMode::Buffered:
                in.body_length = own_body_ ? own_body_->bytes() : r_.body_kept->size;
                break;
            case upstream::BodyMode::Streamed:
                if (chunked_up_) in.body_chunked = true;
                else in.body_length = r_.content_length;
                break;
        }
        if (cache_ && !cache_->keeps_conditionals()) {
            in.drop_conditionals = true;
            in.if_none_match = cache_->if_none_match();
            in.if_modified_since = cache_->if_modified_since();
        }
        request_ = build_request_head(r_, pc_, in);
    }
}

std::string_view Exchange::tls_name() {
    // A port in "proxy_ssl_name" is not part of the name, as in nginx.
    return pass_.tls ? ssl_host(pass_.tls->name ? pass_.tls->name->eval(r_) : host_header_) : std::string_view();
}

void Exchange::prepare(upstream::Client& c) {
    build_request();
    c.out.head = request_.head;
    c.out.uri = request_.uri;
    c.out.head_method = method_ == "HEAD";
    c.out.idempotent = is_idempotent(method_);
    c.out.may_keep = !request_.close;
    c.out.upgrade = request_.upgrade;
    if (pass_.tls) c.out.tls_name = tls_name();
    if (pass_.tls && (pc_.ssl_certificate_var || pc_.ssl_certificate_key_var)) {
        // Chosen per request; an empty value sends none [nginx].
        auto path = [&](const ComplexValue* var, const std::optional<std::string>& fixed) -> std::string_view {
            std::string_view v = var ? var->eval(r_) : std::string_view(fixed ? *fixed : std::string());
            if (v.empty() || v[0] == '/') return v;
            std::pmr::string full(pc_.ssl_cert_dir, r_.mem());
            full += v;
            return r_.arena().dup(full);
        };
        c.out.tls_certificate = path(pc_.ssl_certificate_var, pc_.ssl_certificate);
        c.out.tls_certificate_key = path(pc_.ssl_certificate_key_var, pc_.ssl_certificate_key);
        if (c.out.tls_certificate_key.empty()) c.out.tls_certificate = {};
        if (pc_.ssl_passwords) c.out.tls_passwords = *pc_.ssl_passwords;
    }
}

// The body is handed over as pipe pieces when the stream can splice it
// (body.h: not a chunked one, which is re-chunked from its bytes); a
// pipe piece goes to the origin through the Client's ChainWriter like
// any other.
bool Exchange::start_body(upstream::Client&) { return http::read_body(r_, streamed_sink, *pc_.splice); }

void Exchange::resume_body(upstream::Client&) { http::resume_body(r_); }

upstream::Hooks::Head Exchange::on_head(upstream::Client& c, const StatusHead& h) {
    const int status = h.status;
    if (cache_ && status != 101) {
        proxy_cache::OriginHead oh{status, h.reason, log_.headers};
        if (cache_->on_head(oh) != proxy_cache::Front::Verdict::Pass) {
            // r.out and r.body are the entry's.
            event::worker_loop().post(served_);
            return Head::Stop;
        }
    }
    if (status >= 300 && status != 101 && *pc_.intercept_errors) {
        const auto& lc = r_.loc_conf<LocConf>(http_core_module);
        for (const ErrorPage& ep : lc.error_pages)
            if (ep.status == status) {
                // The origin's answer is dropped for the error_page [nginx
                // proxy_intercept_errors]; $upstream_http_* still tell what
                // it was. A 401's challenges stay: without them the client
                // could not authenticate (every WWW-Authenticate field).
                if (cache_) cache_->on_intercept({status, h.reason, log_.headers});
                if (status == 401)
                    for (const upstream::TryLog::Field& f : log_.headers)
                        if (iequals(f.name, "WWW-Authenticate")) r_.out.headers.push_back({f.name, f.value});
                err_status_ = status;
                event::worker_loop().post(kick_);
                return Head::Stop;
            }
    }
    if (status != 101 && !(*pc_.ignore_headers & kIgnoreXAccelRedirect))
        for (const upstream::TryLog::Field& f : log_.headers)
            if (iequals(f.name, "X-Accel-Redirect") && !f.value.empty()) {
                // The origin names what the client gets: an internal
                // redirect, this answer dropped but for the fields nginx
                // keeps; $upstream_http_* still tell what it was.
                if (cache_) cache_->on_truncated();
                for (const upstream::TryLog::Field& k : log_.headers) {
                    if (iequals(k.name, "X-Accel-Limit-Rate")) {
                        apply_accel_limit_rate(r_, pc_, k.value);
                    } else if (iequals(k.name, "Content-Type")) {
                        r_.out.content_type = k.value;
                    } else if (iequals(k.name, "Set-Cookie") || iequals(k.name, "Content-Disposition") ||
                               iequals(k.name, "Cache-Control") || iequals(k.name, "Expires") ||
                               iequals(k.name, "Accept-Ranges")) {
                        r_.out.headers.push_back({k.name, k.value});
                    }
                }
                accel_to_ = f.value;
                event::worker_loop().post(redirect_);
                return Head::Stop;
            }
    std::optional<bool> accel;
    copy_response_head(r_, pc_, pass_, status, h.reason, log_.headers, h.framing, &accel);
    if (u_.sticky) add_sticky_cookie(c);
    // The client's If-* fields went to the origin, which answered them; a
    // response on its way into the cache is checked here as a hit would
    // be [nginx: not_modified runs only when the upstream is cacheable].
    r_.out.origin_preconditions = !(cache_ && cache_->filling());
    // "proxy_force_ranges": byte ranges of a response whose origin did
    // not offer them [nginx]; the head says Accept-Ranges once.
    if (*pc_.force_ranges && status == 200 && r_.out.content_length) {
        r_.out.remove("Accept-Ranges");
        r_.out.accept_ranges = true;
    }
    // "proxy_pass_trailers": a chunked answer may end with trailer fields,
    // which go to the client with its own framing (chunked, or HTTP/2
    // HEADERS) after the body, announced by the origin's Trailer field.
    if (*pc_.pass_trailers && h.framing.chunked && status >= 200 && status != 204 && status != 304) {
        r_.out.expect_trailers = true;
        for (const upstream::TryLog::Field& f : log_.headers)
            if (iequals(f.name, "Trailer")) r_.out.headers.push_back({f.name, f.value});
    }
    if (cache_) cache_->after_head();
    if (accel) c.set_buffering(*accel);
    // Read as the body starts, so that it may use the origin's fields
    // ("proxy_limit_rate $upstream_http_x_rate") [nginx].
    cc_.limit_rate = eval_size(r_, pc_.limit_rate);
    on_output_drained(r_, drained_cb);
    if (status == 101) r_.out.content_length.reset();
    if (send_header(r_) == Flow::Fail) {
        r_.stream().abort();
        return Head::Stop;
    }
    if (status == 101) {
        // The client must have the whole 101 before the first frame.
        flush_output(r_);
        return Head::Tunnel;
    }
    return Head::Body;
}

// "sticky cookie": the response names the server that answered it (the
// last try's: a retry after the cookie's server failed moves the session
// to the one that answered). Sent only when the client's cookie does not
// name it already, so a bound client's responses carry no extra field
// [NGINX Plus sets it on a new or changed binding]; an expires= cookie
// thus counts from the binding, not from the last request.
void Exchange::add_sticky_cookie(const upstream::Client& c) {
    const upstream::Peer* p = c.peer();
    if (!p) return;
    const upstream::StickyCookie& sc = *u_.sticky;
    const upstream::StickyId id = upstream::sticky_id(*p);
    if (sticky_in_ == upstream::view(id)) return;
    std::string_view samesite = sc.samesite;
    if (sc.samesite_value) samesite = upstream::sticky_samesite(static_cast<const ComplexValue*>(sc.samesite_value)->eval(r_));
    const std::string v = upstream::sticky_set_cookie(sc, upstream::view(id), event::worker_loop().wall().sec, samesite);
    r_.out.headers.push_back({"Set-Cookie", r_.arena().dup(v)});
}

// An origin's 103 Early Hints, to the client where "early_hints" says so
// [nginx 1.29], its fields as they are but for connection ones.
void Exchange::on_interim(upstream::Client&, const StatusHead& h) {
    if (h.status != 103 || !early_hints_wanted(r_)) return;
    std::pmr::vector<Header> fields(r_.mem());
    fields.reserve(h.headers.size());
    for (const HeaderField& f : h.headers)
        if (!is_hop_by_hop_request(f.name)) fields.push_back({f.name, f.value});
    // The views are the Client's buffer's: each stream copies them now.
    if (send_interim(r_, 103, fields) == Flow::Fail) r_.stream().abort();
}

bool Exchange::on_body(upstream::Client& c, Chain& data) {
    if (r_.out.expect_trailers && *pc_.pass_trailers && data.last() && !c.trailers().empty())
        take_trailers(r_, c.trailers());
    if (cache_) cache_->on_body(data);
    if (send_body(r_, data) == Flow::Fail) {
        r_.stream().abort();
        return false;
    }
    return true;
}

size_t Exchange::downstream_pending() { return output_pending(r_); }

// "proxy_splice": the body may go from socket to socket through a pipe
// when nothing on the way reads it: no body filter has work in this
// response (gzip, ranges, a charset, limit_rate...), the cache does not
// store it, and the client's connection sends pipe pieces as they are.
bool Exchange::body_to_pipe(upstream::Client&) {
    return *pc_.splice && !(cache_ && cache_->filling()) && output_takes_pipes(r_);
}

// A tunnel's bytes are not the response's body: no filter or cache sees
// them, so proxy_splice alone decides.
bool Exchange::tunnel_to_pipes(upstream::Client&) { return *pc_.splice; }

bool Exchange::gone() { return r_.stream().closed(); }

void Exchange::on_error(upstream::Client&, int status) {
    if (cache_ && cache_->on_error(status, status == 504)) {
        respond_cached();
        return;
    }
    err_status_ = status;
    respond_error();
}

// What arrived went to the client; the connection closes without the
// body's proper end (no last chunk, fewer bytes than Content-Length), so
// the client cannot take it for complete.
void Exchange::on_truncated(upstream::Client&) {
    if (cache_) cache_->on_truncated();
    on_output_drained(r_, nullptr);
    r_.stream().abort();
}

event::Duplex& Exchange::open_tunnel(upstream::Client&, event::Callback on_ready, std::string_view* leftover) {
    on_output_drained(r_, nullptr);
    return r_.stream().open_tunnel(on_ready, leftover);
}

// Ends the request: the stream and this object go at the end of the
// loop iteration.
void Exchange::on_tunnel_end(upstream::Client&) { r_.stream().abort(); }

Result<int> Exchange::temp_file() {
    auto fd = open_temp_file(temp_dir(r_, pc_.temp_path, kProxyTempDir));
    if (fd) r_.use_sendfile = sendfile_enabled(r_);
    return fd;
}

}  // namespace gatehouse::http::proxy
