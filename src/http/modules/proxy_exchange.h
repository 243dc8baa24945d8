// One proxied request: the proxy's policy around an upstream::Client
// (src/upstream/client.h), which does the HTTP/1.x exchange with the
// origin. The Exchange decides what the origin gets (the request head by
// nginx's rules, the client's body whole or streamed), what the client
// gets of the answer (header filtering, proxy_redirect,
// proxy_intercept_errors, X-Accel-Buffering) and how failures are answered
// (the status or its error_page). See proxy.h for the directives.
//
// Lifetime: made in the request arena by the content handler and reached
// through r.ctx(proxy_module); destroyed with the request, its Client
// closing the origin connection and the temp file. Every callback it
// registers (its posted event, on_output_drained, the body reader) dies
// with it or is reset before. The Request outlives every call into it
// within a loop iteration: the stream finishes or destroys a request only
// from a posted event or at the end of the iteration (stream.h).
#pragma once

#include <optional>
#include <string_view>

#include "event/loop.h"
#include "http/modules/proxy.h"
#include "http/request.h"
#include "upstream/client.h"

namespace gatehouse::http::proxy_cache {
class Front;
}

namespace gatehouse::http::proxy {

class Exchange final : public upstream::Hooks {
public:
    Exchange(Request& r, const ProxyConf& pc, const Pass& pass, upstream::UpstreamConf& u, upstream::TryLog& log,
             const Url& url);
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;
    ~Exchange() = default;

    // Called by the content handler: reads the body first when it is
    // buffered, then connects; returns Next::Suspend.
    Next start();

    // The request is over (its log line is next): a try still open (the
    // client went away) ends now, its origin connection closed, so that
    // $upstream_response_time tells how long it ran.
    void finish() {
        if (client_) client_->cancel();
    }

    upstream::TryLog& log() { return log_; }
    std::string_view proxy_host() const { return host_header_; }
    std::string_view proxy_port() const { return port_; }

    // ---- upstream::Hooks ----
    void prepare(upstream::Client& c) override;
    bool start_body(upstream::Client& c) override;
    void resume_body(upstream::Client& c) override;
    Head on_head(upstream::Client& c, const StatusHead& h) override;
    void add_sticky_cookie(const upstream::Client& c);
    void on_interim(upstream::Client& c, const StatusHead& h) override;
    bool on_body(upstream::Client& c, Chain& data) override;
    size_t downstream_pending() override;
    bool body_to_pipe(upstream::Client& c) override;
    bool gone() override;
    void on_error(upstream::Client& c, int status) override;
    void on_truncated(upstream::Client& c) override;
    event::Duplex& open_tunnel(upstream::Client& c, event::Callback on_ready, std::string_view* leftover) override;
    bool tunnel_to_pipes(upstream::Client& c) override;
    void on_tunnel_end(upstream::Client& c) override;
    const log::Context* log_context() override { return &r_.log_ctx; }
    Result<int> temp_file() override;

private:
    static void body_read(Request& r);
    static bool streamed_sink(Request& r, Chain& piece);
    static void drained_cb(Request& r);
    static void cache_resume(Request& r, Next n);
    Next go_origin();      // the body (when buffered), then the Client
    void build_request();  // request_, once
    void start_refresh();  // the cache's background fill, with request_
    std::string_view tls_name();
    void respond_error();  // from kick_: err_status_ or its error_page
    void respond_cached(); // from served_: the cache's answer
    void accel_redirect(); // from redirect_: the origin's X-Accel-Redirect

    Request& r_;
    const ProxyConf& pc_;
    const Pass& pass_;
    upstream::UpstreamConf& u_;
    upstream::TryLog& log_;
    std::string_view host_header_;
    std::string_view port_;
    std::string_view pass_uri_;
    bool has_uri_ = false;

    upstream::ClientConf cc_;
    // Made when the origin is asked (go_origin): a cache hit needs none,
    // and building one (its peer picker, queues) cost ~10 % of a hit.
    std::optional<upstream::Client> client_;
    event::Event kick_;
    event::Event served_;
    event::Event redirect_;
    std::string_view accel_to_;  // X-Accel-Redirect's value (the try's log)
    // "sticky cookie": the client's cookie's value (the request's
    // headers), empty when it sent none.
    std::string_view sticky_in_;
    int err_status_ = 0;
    // proxy_cache: the cache's part, when the location caches this
    // request (owner: the request arena).
    proxy_cache::Front* cache_ = nullptr;

    std::string_view method_;
    upstream::BodyMode body_mode_ = upstream::BodyMode::None;
    bool chunked_up_ = false;  // Streamed with unknown length
    const Chain* own_body_ = nullptr;  // proxy_set_body's (request arena)
    OriginRequest request_;    // built on the first try, sent on every one
};

}  // namespace gatehouse::http::proxy
