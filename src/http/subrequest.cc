// Subrequests: the child's setup, its stream, and waking the parent (see
// subrequest.h for the contract and the lifetimes).
#include "http/subrequest.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "event/connection.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/variables.h"

namespace gatehouse::http {

namespace {

int depth(const Request& r) {
    int d = 0;
    for (const Request* p = r.parent; p; p = p->parent) ++d;
    return d;
}

}  // namespace

Subrequest* Subrequest::start(Request& parent, std::string_view uri, const SubrequestOptions& o) {
    if (depth(parent) >= kMaxSubrequestDepth) {
        GH_LOG(Error, "subrequests cycle while processing \"%.*s\"", static_cast<int>(uri.size()), uri.data());
        return nullptr;
    }
    if (o.background && parent.background >= kMaxBackground) {
        GH_LOG(Error, "%u background subrequests running, \"%.*s\" not started", unsigned{kMaxBackground},
               static_cast<int>(uri.size()), uri.data());
        return nullptr;
    }
    auto* s = parent.arena().make<Subrequest>(parent, uri, o);
    if (o.parent_body && parent.has_body) {
        // Read whole beforehand, by the caller's contract.
        GH_CHECK(parent.body_kept && parent.body_kept->complete);
        if (!s->copy_body(*parent.body_kept)) {
            s->release();
            return nullptr;
        }
    }
    if (o.background) {
        s->background_ = true;
        s->counted_ = true;
        ++parent.background;
    } else {
        // A client that leaves while the child works ends the parent (and
        // the child with it) at once, as for a request waiting on an
        // origin. A background child leaves the parent's setting alone:
        // the parent does not wait for it.
        parent.abort_on_client_close = true;
    }
    Request& c = *s->child_;
    log::Scope scope(&c.log_ctx);
    if (uri.starts_with('@')) {
        // Past the location search, at the named location's rewrite
        // phase; one that does not exist answers 500, logged there.
        if (named_redirect(c, uri) == Next::Respond) {
            finalize_response(c);
            return s;
        }
    } else {
        // nginx starts a subrequest at the server rewrite phase: its server
        // is the parent's, so there is no Host to look up and no PostRead.
        c.phase_index = http_main(c.main_confs)->server_rewrite_step;
    }
    run_phases(c);
    return s;
}

Subrequest::Subrequest(Request& parent, std::string_view uri, const SubrequestOptions& o)
    : parent_(parent),
      parent_stream_(parent.stream()),
      // What release() gives back, also for a child that start() gives up
      // before it set anything.
      parent_abort_on_close_(parent.abort_on_client_close),
      drain_ev_(event::Callback::to<&Subrequest::on_drain>(this)),
      done_ev_(event::Callback::to<&Subrequest::on_background_done>(this)) {
    child_ = std::make_unique<Request>(*this, parent.main_confs, parent.srv);
    Request& c = *child_;
    c.parent = &parent;
    // The parent's head, as a GET without a body [nginx ngx_http_subrequest]
    // unless the options say otherwise (copy_body() gives it a body).
    // Views into the parent's buffers and arena: the parent outlives us.
    c.in = parent.in;
    c.in.framing = {};
    c.in.expect_100_continue = false;
    if (o.parent_method) {
        c.method = parent.method;
    } else {
        c.in.method = Method::Get;
        c.in.method_name = "GET";
        c.method = "GET";
    }
    if (o.background) {
        // The parent goes on beside a background child and may change its
        // own list (which may move it): the child's list is a copy, of
        // views that stay valid as long as the parent.
        std::span<const HeaderField> f = parent.headers.all();
        auto* copy = static_cast<HeaderField*>(c.arena().alloc(sizeof(HeaderField) * f.size(), alignof(HeaderField)));
        std::uninitialized_copy(f.begin(), f.end(), copy);
        c.headers.reset({copy, f.size()});
    } else {
        c.headers.reset(parent.headers.all());
    }
    c.request_line = parent.request_line;
    c.unparsed_uri = parent.unparsed_uri;
    c.http_version = parent.http_version;
    c.host = parent.host;
    c.internal = true;  // "internal" locations answer subrequests
    c.set_remote_addr(parent.remote_addr());
    c.remote_port = parent.remote_port;
    c.remote_sockaddr = parent.remote_sockaddr;
    if (uri.starts_with('@')) {
        // start() enters the named location: the request's own URI goes
        // there with it.
        c.uri = parent.uri;
        c.args = parent.args;
    } else {
        size_t q = uri.find('?');
        c.uri = c.arena().dup(uri.substr(0, q));
        if (q != std::string_view::npos) c.args = c.arena().dup(uri.substr(q + 1));
        else if (o.parent_args) c.args = parent.args;
    }
    c.set_exten();
    if (o.parent_response) {
        c.out.status = parent.out.status;
        c.counters = parent.counters;
        c.response_complete = parent.response_complete;  // $request_completion
        // Nothing of the child's own response is counted (output.cc
        // counts body bytes unless head_only), and no filter works on a
        // body that goes nowhere.
        c.head_only = true;
    }
    // nginx's subrequests share the parent's variables; here the child
    // gets the values of the user variables the parent has set so far
    // (views into the parent's arena, which outlives the child). Computed
    // variables are the child's own: $uri is its URI.
    if (HttpMainConf* m = http_main(c.main_confs))
        for (size_t i = 0; i < m->vars.size(); ++i)
            if (m->vars.var(static_cast<int>(i)).user && parent.vars[i].valid) c.vars[i] = parent.vars[i];
}

bool Subrequest::copy_body(const RequestBody& from) {
    Request& c = *child_;
    auto* b = c.arena().make<RequestBody>(c.mem());
    b->size = from.size;
    b->complete = true;
    // The parent's file keeps its name (and removes it): the parent
    // outlives the child.
    b->path = from.path;
    for (const Buf& x : from.bufs) {
        // Memory: the same slab, by reference.
        Buf y = x;
        if (x.in_file()) {
            // A descriptor of the child's own, closed with it: nothing of
            // the child depends on when the parent closes its files.
            // Readers use offsets (pread, sendfile), never the shared
            // file position.
            int fd = ::fcntl(x.fd, F_DUPFD_CLOEXEC, 0);
            if (fd < 0) {
                int e = errno;
                GH_LOG(Crit, "dup() of a client body temporary file failed (%d: %s)", e, strerror(e));
                return false;
            }
            c.add_fd(fd);
            y.fd = fd;
            b->fd = fd;  // the body is in a file ($request_body: not found)
        }
        b->bufs.push(std::move(y));
    }
    c.body_kept = b;
    c.has_body = true;
    // The length of what was read, also for a body that came chunked.
    c.content_length = from.size;
    return true;
}

Subrequest::~Subrequest() {
    // The parent may be half destroyed (its arena is what destroys us):
    // nothing below may reach it, its background count included. done_
    // makes finish() a no-op for any abort() the child's teardown calls.
    done_ = true;
    closed_ = true;
    child_.reset();
}

int Subrequest::status() const {
    if (!child_ || head_seen_) return status_;
    return child_->out.status;
}

void Subrequest::release() {
    if (!child_) return;
    if (done_) {
        log_child();
    } else {
        // Given up before its end: the child is cut short; the parent
        // keeps its own setting again.
        if (!background_) parent_.abort_on_client_close = parent_abort_on_close_;
        status_ = status();
        done_ = true;
    }
    closed_ = true;
    event::worker_loop().unpost(drain_ev_);
    event::worker_loop().unpost(done_ev_);
    child_.reset();
    if (counted_) {
        counted_ = false;
        // The last background child of a parent whose response is over:
        // its stream finishes it now (hold_for_background).
        if (--parent_.background == 0 && parent_.background_waiter)
            event::worker_loop().post(*std::exchange(parent_.background_waiter, nullptr));
    }
}

void Subrequest::log_child() {
    if (logged_ || !child_ || !child_->loc_confs) return;
    logged_ = true;
    if (!*child_->loc_conf<LocConf>(http_core_module).log_subrequest) return;
    log::Scope scope(&child_->log_ctx);
    run_log_phase(*child_);
}

void Subrequest::finish() {
    if (done_) return;
    done_ = true;
    status_ = status();
    child_->done = true;  // its phases never run again
    if (background_) {
        // Nobody waits: it goes by itself, from the loop (the child's
        // handler that ended the response is on the stack now).
        event::worker_loop().post(done_ev_);
        return;
    }
    parent_.abort_on_client_close = parent_abort_on_close_;
    // From the loop: the child's handler that ended the response is on the
    // stack now, and the parent may release the child when it resumes.
    if (!parent_.stream().closed()) post_resume(parent_);
}

void Subrequest::on_background_done(Subrequest* s) {
    // Lines about the child's end (its origin connection closing) are
    // the parent's: the child's context goes with it.
    log::Scope scope(&s->parent_.log_ctx);
    s->release();
}

bool hold_for_background(Request& r, event::Event& finish, bool delivered) {
    if (delivered && !r.response_complete) {
        // The first call: the client has the whole response, so what
        // follows it starts now, and may add children to wait for. An
        // orphan's response went nowhere: nothing follows it (a
        // post_action would report a download nobody got).
        r.response_complete = true;
        if (HttpMainConf* m = http_main(r.main_confs); m && r.loc_confs && !m->after_response.empty()) {
            log::Scope scope(&r.log_ctx);
            for (auto* hook : m->after_response) hook(r);
        }
    }
    if (r.background == 0) return false;
    r.background_waiter = &finish;
    // A client that leaves now takes nothing from the children: the
    // stream keeps the request without it (stream.h, "Orphans").
    r.outlive_client = true;
    return true;
}

Flow Subrequest::send_head(Request&, const ResponseHead& h) {
    if (closed_) return Flow::Fail;
    head_seen_ = true;
    status_ = h.status;
    // A child cannot switch protocols: its response is for the parent.
    if (h.status == 101) return Flow::Fail;
    return Flow::Pass;
}

Flow Subrequest::send_body(Request& r, Chain& in) {
    if (closed_) return Flow::Fail;
    bool last = in.last();
    // The body is dropped: the parent reads the head only (nginx's auth
    // subrequest is header-only).
    in.clear();
    if (last) {
        finish();
        return Flow::Pass;
    }
    if (r.output.drain_fn || r.output.held) event::worker_loop().post(drain_ev_);
    return Flow::Pass;
}

void Subrequest::abort() {
    if (closed_) return;
    closed_ = true;
    failed_ = true;
    if (child_ && !head_seen_ && child_->out.status == 0) child_->out.status = 499;
    finish();
}

bool Subrequest::read_body(Request& r, BodySink sink) {
    if (body_taken_) return false;
    // A copy of the parent's body (copy_body) is in r.body_kept, complete:
    // read_whole_body() finds it there; it cannot be streamed again.
    if (r.has_body) return false;
    body_taken_ = true;
    // No body of its own: one empty last buffer.
    Chain c(r.mem());
    Buf end;
    end.last_buf = true;
    c.push(std::move(end));
    sink(r, c);
    return true;
}

event::Duplex& Subrequest::open_tunnel(event::Callback, std::string_view* leftover) {
    if (leftover) *leftover = {};
    return *this;
}

event::IoResult Subrequest::recv(std::span<char>) { return {event::IoResult::Eof, 0, 0}; }

event::IoResult Subrequest::send(std::span<const char>) { return {event::IoResult::Error, 0, EPIPE}; }

void Subrequest::on_drain(Subrequest* s) {
    if (!s->child_ || s->closed_) return;
    log::Scope scope(&s->child_->log_ctx);
    output_drained(*s->child_);
}

}  // namespace gatehouse::http
