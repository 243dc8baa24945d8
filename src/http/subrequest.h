// Subrequests: a child Request run for a URI on behalf of a client's
// request (its parent), whose response the parent reads instead of the
// client [nginx subrequests]. Users: auth_request (the child's status
// decides access), which waits for its child, and mirror, whose children
// run in the background.
//
// The child runs the phase engine as a request of its own: from the
// server rewrite phase, the location found for its URI (internal ones
// included), rewrite, content (return, static files, proxy_pass...); its
// Access phase is skipped, as nginx skips it for subrequests, and it is
// access-logged only where "log_subrequest on" says so (nginx's default
// is off), once its response is over. It sees the parent's server,
// request line, $request_uri, header fields, client address and the
// values of the user variables ("set") the parent had when it began; its
// method is GET (nginx's subrequests are GETs) unless the options ask for
// the parent's, while $request_method says the client's request's either
// way, as nginx's does. Without SubrequestOptions::parent_body it has no
// request body: a handler that reads one gets an empty body, and the
// parent's body stays unread for the parent's own handler. With it, the
// child has a copy of the parent's body, read whole beforehand: the same
// bytes (memory shared by reference, a temp file through a descriptor of
// its own), which a proxy_pass sends with their Content-Length.
//
// Its Stream is the Subrequest below, a third implementation of
// http::Stream beside the HTTP/1 connection and the unit tests' stream:
// connection facts (addresses, TLS, the connection number, the servers
// of the address) are the parent's stream's; the response head stays in
// the child's ResponseHead for the parent to read (head()); body bytes
// are dropped as they come; there is nothing to flush and no tunnel. A
// child never writes to the client, and nothing it does (a failure, a
// timeout) reaches the parent's response.
//
// Two modes:
//  - Waited (auth_request): the parent suspends; when the child's
//    response has ended or failed, the parent is woken with
//    post_resume(), from the loop, and its handler runs again and finds
//    done() true. While it runs, the parent is ended at once (499) when
//    its client closes the connection (Request::abort_on_client_close),
//    as for a request waiting on an origin; the previous setting comes
//    back once the child is done. The parent releases the child.
//  - Background (mirror): the parent goes on at once and is never woken;
//    the child releases itself, from the loop, once its response is over.
//    The parent's end waits for it, as nginx holds the main request
//    until its background subrequests are done: when the parent's
//    response is complete its stream asks hold_for_background() before
//    the Log phase, and finishes the parent (Log phase, destruction, the
//    connection's next request) only when the last background child is
//    over. Meanwhile the client may leave: the parent is made to outlive
//    it (Request::outlive_client, stream.h "Orphans"), so the children
//    still go on. This keeps one owner for every child (the parent's
//    arena) and one rule for its life (it never outlives its parent),
//    and it bounds the work: a child holds its client's connection slot
//    (worker_connections) or HTTP/2 stream (http2_max_concurrent_streams)
//    as long as it runs, at most kMaxBackground per request, each bounded
//    in time by its own handler's timeouts (proxy_connect_timeout,
//    proxy_read_timeout...). The cost, as in nginx: a keepalive
//    connection takes its next request only when the children are over,
//    and the parent's access-log line ($request_time) comes then.
//
// Lifetimes:
//  - The Subrequest is made in the parent's arena by start(); the child
//    Request and its arena (everything its handlers allocate: an
//    upstream exchange, an open file) are its own. The child dies when
//    the parent calls release() (waited), when it releases itself
//    (background), or with the parent's arena: a parent aborted (its
//    client gone before the response was complete, an HTTP/2 stream
//    reset, a front-end closing every stream) cuts its children short.
//    That teardown touches nothing of the parent, and an upstream
//    connection the child holds is closed by the child's own state as it
//    is for any request destroyed midway.
//  - The child's views into the parent (its head and fields, its buffers,
//    its variables' values, its body's memory) stay valid because the
//    parent outlives the child; a background child, which runs beside a
//    parent that goes on changing, has its own copy of the list of header
//    fields.
//  - The parent is destroyed at the end of the loop iteration in which it
//    was aborted (stream.h); a wake-up posted meanwhile is unposted with
//    it, and a parent whose stream is closed is never resumed.
//  - release() destroys the child at once: call it from the parent's
//    resumed handler (the loop's frames), never from the child's hooks.
#pragma once

#include <memory>
#include <string_view>

#include "event/duplex.h"
#include "http/request.h"
#include "http/stream.h"

namespace gatehouse::http {

// nginx's limit of nested subrequests (NGX_HTTP_MAX_SUBREQUESTS is per
// main request; a chain of children is what can loop here).
inline constexpr int kMaxSubrequestDepth = 50;
// Background subrequests one request may have running at once (mirrors
// times internal redirects: the configuration decides; this bounds it);
// more are not started, with a line in the error log.
inline constexpr uint16_t kMaxBackground = 64;

struct SubrequestOptions {
    // Runs in the background (see the modes above).
    bool background = false;
    // The parent's method rather than GET.
    bool parent_method = false;
    // The parent's request body, which must be read whole already
    // (r.body_kept complete, read_whole_body() in body.h); else none.
    bool parent_body = false;
    // $args when the URI has no "?": the parent's (nginx's mirror passes
    // the client's arguments on).
    bool parent_args = false;
    // The child begins where the parent's response ended: its $status,
    // $body_bytes_sent, $bytes_sent, $request_length, $request_completion
    // and the start of its $request_time are the parent's, and nothing it
    // answers counts in them (its response is header-only, as nginx makes
    // its post_action request: that request is the client's, redirected
    // once its response is over, so its variables describe that
    // response). For a
    // child started after the parent's response is complete.
    bool parent_response = false;
};

// For a front-end, once r's response is complete and before its Log
// phase: true while background subrequests of r still run, and then
// `finish` (the front-end's event, which outlives r) is posted when the
// last of them is over; the front-end finishes r then. r is made to
// outlive its client meanwhile (Request::outlive_client). `delivered`:
// the client got the whole response; false for an orphan's (stream.h),
// made whole and dropped. The first call for a delivered response marks
// it complete (Request::response_complete) and runs the modules'
// after_response hooks (fwd.h), which may start more children before the
// count is read.
bool hold_for_background(Request& r, event::Event& finish, bool delivered);

class Subrequest final : public Stream, private event::Duplex {
public:
    // Makes a child of `parent` for `uri` ("/auth", "/auth?x=1": what
    // follows "?" is $args; "@name": that named location of the parent's
    // server, where the child keeps the parent's $uri and $args, as an
    // nginx request does in a named location) and starts it. Null, with a line in the error
    // log, when subrequests nest too deep or the parent has kMaxBackground
    // background ones running. The result belongs to the parent's arena;
    // see the lifetimes above. A background one may be over (and its
    // child gone) by the time start() returns: the parent does not look
    // at it again.
    static Subrequest* start(Request& parent, std::string_view uri, const SubrequestOptions& o = {});

    Subrequest(Request& parent, std::string_view uri, const SubrequestOptions& o);
    Subrequest(const Subrequest&) = delete;
    Subrequest& operator=(const Subrequest&) = delete;
    ~Subrequest();

    // The child's response is over (ended or failed): head() may be read.
    bool done() const { return done_; }
    // The child ended abnormally: no complete response (an origin that
    // failed after its head, a "return 444"); status() says what it had.
    bool failed() const { return failed_; }
    // The child's status: what went out in its head, else what it was
    // about to send (0: nothing).
    int status() const;
    // The child's response head after its header filters; views into the
    // child's arena, valid until release() or the parent's end.
    const ResponseHead& head() const { return child_->out; }
    // The child itself, to evaluate its variables ($upstream_http_*,
    // $upstream_status) in its own context; same validity as head().
    Request& child() { return *child_; }
    // The child is still there (not released).
    bool has_child() const { return child_ != nullptr; }
    // Destroys the child now (see the lifetimes above); the Subrequest
    // stays, done, with status() kept.
    void release();

    // ---- http::Stream: the parent's connection ------------------------------------
    const sockaddr* peer_sockaddr() const override { return parent_stream_.peer_sockaddr(); }
    std::string_view peer_text() const override { return parent_stream_.peer_text(); }
    uint16_t peer_port() const override { return parent_stream_.peer_port(); }
    std::string_view local_text() override { return parent_stream_.local_text(); }
    uint16_t local_port() override { return parent_stream_.local_port(); }
    tls::Session* tls() const override { return parent_stream_.tls(); }
    bool plain_on_tls_port() const override { return parent_stream_.plain_on_tls_port(); }
    uint64_t connection_number() const override { return parent_stream_.connection_number(); }
    uint32_t connection_requests() const override { return parent_stream_.connection_requests(); }
    event::Msec connection_start() const override { return parent_stream_.connection_start(); }
    const AddrServers& servers() override { return parent_stream_.servers(); }
    const ProxyHeader* proxy_protocol() const override { return parent_stream_.proxy_protocol(); }

    // ---- http::Stream: the child's response, kept or dropped --------------------
    Flow send_head(Request& r, const ResponseHead& h) override;
    Flow send_body(Request& r, Chain& in) override;
    void flush() override {}
    size_t output_pending() const override { return 0; }
    void close_after() override {}
    void abort() override;
    bool closed() const override { return closed_; }
    bool read_body(Request& r, BodySink sink) override;
    void resume_body() override {}
    // A child cannot become a tunnel: the pipe it gets is closed both ways
    // and closing it fails the child.
    event::Duplex& open_tunnel(event::Callback on_ready, std::string_view* leftover) override;

private:
    // ---- event::Duplex: the closed pipe of open_tunnel() ----
    event::IoResult recv(std::span<char> buf) override;
    event::IoResult send(std::span<const char> buf) override;
    void shutdown_send() override {}
    void close() override { abort(); }

    // The child's response is over: wake the parent, or for a background
    // child post its own release (once).
    void finish();
    // The child's copy of the parent's body (SubrequestOptions::parent_body).
    // False, with a line in the error log, when a temp file's descriptor
    // cannot be duplicated.
    bool copy_body(const RequestBody& from);
    // The child's access-log line, where "log_subrequest on": once, for a
    // child whose response is over, before it is destroyed.
    void log_child();
    // A background child is over: from the loop, it goes, and the parent's
    // stream hears when it was the last (hold_for_background).
    static void on_background_done(Subrequest* s);
    // Drain notices to a producer that paces itself (on_output_drained):
    // nothing is ever pending here, so it hears at once, from the loop.
    static void on_drain(Subrequest* s);

    Request& parent_;              // outlives this (its arena owns it)
    Stream& parent_stream_;        // the parent's, for connection facts
    std::unique_ptr<Request> child_;
    int status_ = 0;               // kept across release()
    bool parent_abort_on_close_ = false;  // the parent's setting before start()
    bool head_seen_ = false;
    bool done_ = false;
    bool failed_ = false;
    bool closed_ = false;
    bool body_taken_ = false;
    bool background_ = false;
    bool counted_ = false;  // in parent_.background until released
    bool logged_ = false;
    event::Event drain_ev_;
    event::Event done_ev_;  // background: on_background_done
};

}  // namespace gatehouse::http
