// Subrequests: the child's setup, its stream, and waking the parent (see
// subrequest.h for the contract and the lifetimes).
#include "http/subrequest.h"

#include <cerrno>

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

Subrequest* Subrequest::start(Request& parent, std::string_view uri) {
    if (depth(parent) >= kMaxSubrequestDepth) {
        GH_LOG(Error, "subrequests cycle while processing \"%.*s\"", static_cast<int>(uri.size()), uri.data());
        return nullptr;
    }
    auto* s = parent.arena().make<Subrequest>(parent, uri);
    // A client that leaves while the child works ends the parent (and the
    // child with it) at once, as for a request waiting on an origin.
    s->parent_abort_on_close_ = parent.abort_on_client_close;
    parent.abort_on_client_close = true;
    Request& c = *s->child_;
    // nginx starts a subrequest at the server rewrite phase: its server is
    // the parent's, so there is no Host to look up and no PostRead.
    c.phase_index = http_main(c.main_confs)->server_rewrite_step;
    {
        log::Scope scope(&c.log_ctx);
        run_phases(c);
    }
    return s;
}

Subrequest::Subrequest(Request& parent, std::string_view uri)
    : parent_(parent),
      parent_stream_(parent.stream()),
      drain_ev_(event::Callback::to<&Subrequest::on_drain>(this)) {
    child_ = std::make_unique<Request>(*this, parent.main_confs, parent.srv);
    Request& c = *child_;
    c.parent = &parent;
    // The parent's head, as a GET without a body [nginx ngx_http_subrequest].
    // Views into the parent's buffers and arena: the parent outlives us.
    c.in = parent.in;
    c.in.method = Method::Get;
    c.in.method_name = "GET";
    c.in.framing = {};
    c.in.expect_100_continue = false;
    c.headers.reset(parent.headers.all());
    c.method = "GET";
    c.request_line = parent.request_line;
    c.unparsed_uri = parent.unparsed_uri;
    c.http_version = parent.http_version;
    c.host = parent.host;
    c.internal = true;  // "internal" locations answer subrequests
    c.set_remote_addr(parent.remote_addr());
    c.remote_port = parent.remote_port;
    c.remote_sockaddr = parent.remote_sockaddr;
    size_t q = uri.find('?');
    c.uri = c.arena().dup(uri.substr(0, q));
    if (q != std::string_view::npos) c.args = c.arena().dup(uri.substr(q + 1));
    c.set_exten();
    // nginx's subrequests share the parent's variables; here the child
    // gets the values of the user variables the parent has set so far
    // (views into the parent's arena, which outlives the child). Computed
    // variables are the child's own: $uri is its URI.
    if (HttpMainConf* m = http_main(c.main_confs))
        for (size_t i = 0; i < m->vars.size(); ++i)
            if (m->vars.var(static_cast<int>(i)).user && parent.vars[i].valid) c.vars[i] = parent.vars[i];
}

Subrequest::~Subrequest() {
    // The parent may be half destroyed (its arena is what destroys us):
    // nothing below may reach it. done_ makes finish() a no-op for any
    // abort() the child's teardown calls.
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
    if (!done_) {
        // Given up before its end: the child is cut short; the parent
        // keeps its own setting again.
        parent_.abort_on_client_close = parent_abort_on_close_;
        status_ = status();
        done_ = true;
    }
    closed_ = true;
    event::worker_loop().unpost(drain_ev_);
    child_.reset();
}

void Subrequest::finish() {
    if (done_) return;
    done_ = true;
    status_ = status();
    child_->done = true;  // its phases never run again
    parent_.abort_on_client_close = parent_abort_on_close_;
    // From the loop: the child's handler that ended the response is on the
    // stack now, and the parent may release the child when it resumes.
    if (!parent_.stream().closed()) post_resume(parent_);
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
