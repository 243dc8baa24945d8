// Subrequests: a child Request run for a URI on behalf of a client's
// request (its parent), whose response the parent reads instead of the
// client [nginx subrequests]. First user: auth_request (the child's
// status decides access); later ones (mirror, SSI-like includes) reuse it.
//
// The child runs the phase engine as a request of its own: from the
// server rewrite phase, the location found for its URI (internal ones
// included), rewrite, content (return, static files, proxy_pass...); its
// Access phase is skipped, as nginx skips it for subrequests, and it is
// not access-logged (nginx's "log_subrequest off"). It sees the parent's
// server, request line, $request_uri, header fields, client address and
// the values of the user variables ("set") the parent had when it began;
// its method is GET (nginx's subrequests are GETs), while
// $request_method says the client's request's, as nginx's does. It has
// no request body: a handler that reads one gets an empty body, and the
// parent's body stays unread for the parent's own handler. The child's
// header fields are a view of the parent's (copied on the child's first
// change): the parent leaves its own fields alone while a child runs.
//
// Its Stream is the Subrequest below, a third implementation of
// http::Stream beside the HTTP/1 connection and the unit tests' stream:
// connection facts (addresses, TLS, the connection number, the servers
// of the address) are the parent's stream's; the response head stays in
// the child's ResponseHead for the parent to read (head()); body bytes
// are dropped as they come; there is nothing to flush and no tunnel.
//
// Lifetimes:
//  - The Subrequest is made in the parent's arena by start(); the child
//    Request and its arena (everything its handlers allocate: an
//    upstream exchange, an open file) are its own. The child dies either
//    when the parent calls release(), or with the parent's arena (a
//    client that closes its connection, any abort of the parent): the
//    teardown then touches nothing of the parent, and an upstream
//    connection the child holds is closed by the child's own state as it
//    is for any request destroyed midway.
//  - Completion: when the child's response has ended (its last body
//    buffer reached the stream) or failed (abort()), the parent is woken
//    with post_resume(): its phase handler runs again from the loop,
//    never under the child's frames, and finds done() true.
//  - The parent is destroyed at the end of the loop iteration in which it
//    was aborted (stream.h); a wake-up posted meanwhile is unposted with
//    it, and a parent whose stream is closed is never resumed.
//  - While a child runs, the parent is ended at once (499) when its
//    client closes the connection (Request::abort_on_client_close), as
//    for a request waiting on an origin; the previous setting comes back
//    once the child is done.
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

class Subrequest final : public Stream, private event::Duplex {
public:
    // Makes a child of `parent` for `uri` ("/auth", "/auth?x=1": what
    // follows "?" is $args) and starts it. Null, with a line in the error
    // log, when subrequests nest too deep. The result belongs to the
    // parent's arena; see the lifetimes above.
    static Subrequest* start(Request& parent, std::string_view uri);

    Subrequest(Request& parent, std::string_view uri);
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

    // The child's response is over: wake the parent (once).
    void finish();
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
    event::Event drain_ev_;
};

}  // namespace gatehouse::http
