// The request side of the upstream client: the peer and its connection,
// TLS, the request going out, failures and retries. The response side is
// client_response.cc.
#include "upstream/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "event/worker.h"
#include "tls/context.h"
#include "tls/session.h"

namespace gatehouse::upstream {

TlsSettings::~TlsSettings() {
    for (auto& [peer, s] : sessions)
        if (s) SSL_SESSION_free(s);
}

// ---- lifetime and steps ---------------------------------------------------------------

Client::Client(UpstreamConf& u, const ClientConf& conf, Hooks& hooks, TryLog& log, std::pmr::memory_resource* mem)
    : u_(u),
      conf_(conf),
      hooks_(hooks),
      log_(log),
      mem_(mem),
      kick_(event::Callback::to<&Client::on_kick>(this)),
      sendq_(mem),
      trailers_(mem),
      pool_(mem),
      out_(mem) {
    first_start_ = event::worker_loop().now();
    picker_.emplace(u_, first_start_);
}

Client::~Client() {
    // The owner is going away: nothing may call back into this object.
    // Closing the connection cancels its timers and drops its events.
    close_upstream();
    if (try_open_ && picker_) picker_->done(peer_, false, event::worker_loop().now());
    if (tmp_fd_ >= 0) ::close(tmp_fd_);
    // Here, not when the body ends: the consumer's writer may still be
    // taking from it.
    event::pipes::give(pipe_);
    event::pipes::give(u2c_.kernel);
    event::pipes::give(c2u_.kernel);
}

void Client::set_body(BodyMode m, const Chain* buffered, bool chunked) {
    body_mode_ = m;
    buffered_ = buffered;
    chunked_up_ = m == BodyMode::Streamed && chunked;
}

void Client::start() {
    // The work starts from the loop: whatever happens, the caller has
    // returned by then.
    schedule(&Client::connect);
}

void Client::schedule(void (Client::*step)()) {
    step_ = step;
    event::worker_loop().post(kick_);
}

void Client::yield_to(void (Client::*step)()) {
    step_ = step;
    event::worker_loop().post_after_batch(kick_);
}

void Client::on_kick() {
    log::Scope scope(hooks_.log_context());
    auto step = std::exchange(step_, nullptr);
    if (!step || consumer_gone()) return;
    (this->*step)();
}

bool Client::consumer_gone() {
    if (stopped_) return true;
    if (!hooks_.gone()) return false;
    close_upstream();
    stage_ = Stage::Done;
    return true;
}

void Client::cancel() {
    close_upstream();
    end_try(false);
    stage_ = Stage::Done;
    stopped_ = true;
    step_ = nullptr;
    event::worker_loop().unpost(kick_);
}

int64_t Client::elapsed() const {
    event::Msec now = event::worker_loop().now();
    const TryRecord& t = log_.tries.back();
    return now > t.start ? static_cast<int64_t>(now - t.start) : 0;
}

// ---- the request body -------------------------------------------------------------------

// Each piece goes to the origin as it comes, re-chunked when the length is
// unknown; the caller waits while the origin's socket is full. One piece
// at a time is in flight (the caller pauses on false), so one chunk-size
// buffer serves them all.
bool Client::send_body(Chain& piece) {
    if (!up_ || (stage_ != Stage::Active && stage_ != Stage::Body)) return false;
    const uint64_t n = piece.bytes();
    const bool last = piece.last();
    if (n > 0) {
        if (chunked_up_) {
            size_t h =
                http::write_chunk_header(n, std::span<char, http::kMaxChunkHeader>(chunk_hdr_, http::kMaxChunkHeader));
            sendq_.push(Buf::memory({chunk_hdr_, h}));
        }
        sendq_.push(piece);
        if (chunked_up_) sendq_.push(Buf::memory(http::kChunkEnd));
    }
    piece.clear();
    if (last) {
        if (chunked_up_) sendq_.push(Buf::memory(http::kLastChunk));
        body_done_ = true;
    }
    if (corking_) {
        // Behind the head, written by on_connected(): one piece only.
        if (!body_done_) body_paused_ = true;
        return false;
    }
    if (!write_queue()) return false;
    if (!sendq_.empty()) {
        body_paused_ = true;
        return false;
    }
    if (body_done_ && !request_done_) request_sent_fully();
    return !body_done_;
}

// ---- connecting -----------------------------------------------------------------------------

void Client::connect() {
    if (fixed_) {
        // One peer, one try, no retry (may_retry says no): a health check's probe.
        peer_ = const_cast<Peer*>(fixed_);
        connect_peer();
        return;
    }
    peer_ = picker_->next(event::worker_loop().now());
    if (!peer_) {
        // Every server is down, failed or busy (max_conns). After failed
        // tries the last failure's status stands. $upstream_addr names
        // the group for this attempt, after the tried peers [nginx].
        error_log(log::Level::Error, 0, "no live upstreams", "connecting to upstream");
        log_.tries.push_back(TryRecord{u_.name, 502, event::worker_loop().now()});
        if (err_status_ == 0) err_status_ = 502;
        stage_ = Stage::Done;
        schedule(&Client::report_error);
        return;
    }
    try_open_ = true;
    cached_retried_ = false;
    connect_peer();
}

// A connection to peer_: a pooled one when there is one (and this is not
// the retry of a pooled one that failed), else a new one.
void Client::connect_peer() {
    hooks_.prepare(*this);
    // $upstream_addr is read after the try, when a slot of a dynamic
    // server (its Peer's text) may hold another address: keep a copy.
    std::string_view addr = peer_->text;
    if (peer_->slot) {
        auto* mem = static_cast<char*>(log_.mem->allocate(addr.size(), 1));
        std::memcpy(mem, addr.data(), addr.size());
        addr = std::string_view(mem, addr.size());
    }
    log_.tries.push_back(TryRecord{addr, 0, event::worker_loop().now()});
    head_read_ = false;
    reused_ = false;
    if (u_.keepalive > 0 && !cached_retried_ && !fixed_) {
        up_ = take_idle(u_, *peer_, conf_.tls, &up_opened_);
        reused_ = up_ != nullptr;
        if (up_ && conf_.tls) {
            // Kept with our tag, so with its TLS session as transport
            // (release_upstream): ours again.
            GH_CHECK(up_->transport != nullptr);
            up_tls_.reset(static_cast<tls::Session*>(up_->transport));
        }
    }
    if (!up_) {
        bool local_failed = false;
        auto c = open_connection(*peer_, conf_.local, &local_failed);
        if (!c && local_failed) {
            // Our own address is wrong, not the peer: 500, and no other
            // peer is tried [nginx].
            error_log(log::Level::Crit, 0, c.message(), action());
            cur_try().status = 500;
            err_status_ = 500;
            stage_ = Stage::Done;
            schedule(&Client::report_error);
            return;
        }
        if (!c) {
            stage_ = Stage::Connecting;
            fail(Failure::Error, 502, 0, c.message());
            return;
        }
        up_ = *c;
        up_opened_ = event::worker_loop().now();
    }
    up_->data = this;
    up_->io.on_read = event::Callback::to<&Client::on_up_read>(this);
    up_->io.on_write = event::Callback::to<&Client::on_up_write>(this);
    up_->read_timer.cb = event::Callback::to<&Client::on_up_read_timeout>(this);
    up_->write_timer.cb = event::Callback::to<&Client::on_up_write_timeout>(this);
    if (reused_) {
        cur_try().connect_ms = 0;
        on_connected();
        return;
    }
    stage_ = Stage::Connecting;
    event::worker_loop().arm(up_->write_timer, conf_.connect_timeout);
}

// TCP is up: the TLS handshake, under the connect timeout still armed.
void Client::start_tls() {
    stage_ = Stage::Handshaking;
    const TlsSettings& t = *conf_.tls;
    up_tls_ = std::make_unique<tls::Session>(*t.ctx, up_->fd(), peer_->text);
    std::string name(out.tls_name);
    // No SNI for an IP literal (RFC 6066 3), as nginx.
    in6_addr ip;
    bool literal = inet_pton(AF_INET, name.c_str(), &ip) == 1 || inet_pton(AF_INET6, name.c_str(), &ip) == 1;
    if (t.server_name && !literal && !name.empty()) up_tls_->set_server_name(name);
    if (t.verify) up_tls_->set_verify_name(name);
    if (!out.tls_certificate.empty()) {
        // Read per connection, as nginx does: a file that cannot be used
        // is ours to fix, not the origin's (500, no other peer).
        auto st = tls::Context::use_certificate(up_tls_->ssl(), std::string(out.tls_certificate),
                                                std::string(out.tls_certificate_key), out.tls_passwords);
        if (!st) {
            error_log(log::Level::Error, 0, st.message(), action());
            cur_try().status = 500;
            err_status_ = 500;
            close_upstream();
            stage_ = Stage::Done;
            schedule(&Client::report_error);
            return;
        }
    }
    if (t.session_reuse) {
        SSL_SESSION*& slot = t.sessions[peer_];
        up_tls_->save_session = &slot;
        up_tls_->resume(slot);
    }
    up_->transport = up_tls_.get();
    handshake();
}

void Client::handshake() {
    switch (up_tls_->handshake(*up_)) {
        case tls::Session::Step::Done:
            // $upstream_connect_time includes the handshake, as nginx's.
            cur_try().connect_ms = elapsed();
            on_connected();
            return;
        case tls::Session::Step::Again: return;
        case tls::Session::Step::Fail:
            // A session the origin no longer takes must not fail the next
            // connection too: start the next one afresh.
            if (up_tls_->save_session && *up_tls_->save_session) {
                SSL_SESSION_free(*up_tls_->save_session);
                *up_tls_->save_session = nullptr;
            }
            fail(Failure::Error, 502, 0, up_tls_->error());
            return;
    }
}

void Client::on_connected() {
    event::worker_loop().cancel(up_->write_timer);
    if (conf_.socket_keepalive) {
        int one = 1;
        setsockopt(up_->fd(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
    stage_ = Stage::Active;
    request_sent_ = request_done_ = false;
    head_len_ = head_start_ = 0;
    parser_.reset();
    ++up_->requests;
    queue_request();
    if (body_mode_ == BodyMode::Streamed && !body_started_) {
        // What the client sent with its head (read already) goes in the
        // same write as ours: one piece is queued behind the head, then
        // the reader pauses until it is out [nginx sends the preread body
        // with the head].
        body_started_ = true;
        corking_ = true;
        const bool ok = hooks_.start_body(*this);
        corking_ = false;
        if (!ok) {
            error_log(log::Level::Error, 0, "client request body was already read and cannot be sent again",
                      action());
            close_upstream();
            end_try(false);
            err_status_ = 500;
            stage_ = Stage::Done;
            schedule(&Client::report_error);
            return;
        }
        if (!write_queue()) return;
        if (!sendq_.empty()) return;  // on_up_write goes on, resuming the reader
        if (body_paused_) {
            body_paused_ = false;
            hooks_.resume_body(*this);  // may call send_body() at once
            return;
        }
        if (body_done_ && !request_done_) request_sent_fully();
        return;
    }
    if (!write_queue()) return;
    if (sendq_.empty() && (body_mode_ != BodyMode::Streamed || body_done_) && !request_done_) request_sent_fully();
}

void Client::queue_request() {
    sendq_.clear();
    sendq_.push(Buf::memory(out.head));
    if (body_mode_ == BodyMode::Buffered && buffered_)
        // Copies: the body stays with the caller for another try.
        for (const Buf& b : *buffered_) sendq_.push(Buf(b));
}

// ---- I/O with the origin -----------------------------------------------------------------------

bool Client::write_queue() {
    event::ChainWriter::Result w = sendq_.write(*up_, true);
    if (w.bytes > 0) {
        request_sent_ = true;
        cur_try().sent += w.bytes;
    }
    switch (w.kind) {
        case event::ChainWriter::Result::Done:
            event::worker_loop().cancel(up_->write_timer);
            return true;
        case event::ChainWriter::Result::Again:
        case event::ChainWriter::Result::Yield:  // no sendfile_max_chunk here: never
            event::worker_loop().arm(up_->write_timer, conf_.send_timeout);
            return true;
        case event::ChainWriter::Result::Error:
            if (w.err == 0) {
                fail(Failure::Error, 502, 0, "client body file was truncated");
            } else {
                std::string what = std::string(w.call) + " failed";
                if (up_tls_ && std::string_view(w.call) == "writev()") what = "SSL_write() failed";
                fail(Failure::Error, 502, w.err, what);
            }
            return false;
    }
    return true;
}

void Client::request_sent_fully() {
    request_done_ = true;
    // read_timeout runs from the end of the request, between reads.
    if (stage_ == Stage::Active) event::worker_loop().arm(up_->read_timer, conf_.read_timeout);
}

void Client::on_up_write() {
    log::Scope scope(hooks_.log_context());
    if (consumer_gone() || !up_) return;
    switch (stage_) {
        case Stage::Connecting: {
            if (int err = connect_result(*up_)) {
                fail(Failure::Error, 502, err, "connect() failed");
                return;
            }
            if (conf_.tls) {
                start_tls();
                return;
            }
            cur_try().connect_ms = elapsed();
            on_connected();
            return;
        }
        case Stage::Handshaking:
            handshake();
            return;
        case Stage::Active:
        case Stage::Body: {
            if (sendq_.empty()) {
                // A TLS read stopped to write first (a key update): it can
                // go on now.
                if (up_tls_ && up_tls_->read_wants_write()) on_up_read();
                return;
            }
            if (!write_queue()) return;
            if (!sendq_.empty()) return;
            if (body_paused_) {
                body_paused_ = false;
                // May call send_body() at once.
                hooks_.resume_body(*this);
                return;
            }
            if ((body_mode_ != BodyMode::Streamed || body_done_) && !request_done_) request_sent_fully();
            return;
        }
        case Stage::Tunnel:
            pump();
            return;
        default:
            return;
    }
}

void Client::on_up_read() {
    log::Scope scope(hooks_.log_context());
    if (consumer_gone() || !up_) return;
    switch (stage_) {
        case Stage::Handshaking: handshake(); return;
        case Stage::Active: read_head(); return;
        case Stage::Body:
            if (!paused_) read_body();
            return;
        case Stage::Tunnel: pump(); return;
        default:
            // Connecting: errors come to on_up_write as well. Upgrading: the
            // origin's first frames wait in the socket for the tunnel.
            return;
    }
}

void Client::on_up_write_timeout() {
    log::Scope scope(hooks_.log_context());
    if (consumer_gone() || !up_) return;
    if (stage_ == Stage::Connecting || stage_ == Stage::Handshaking || stage_ == Stage::Active) {
        fail(Failure::Timeout, 504, ETIMEDOUT, "upstream timed out");
        return;
    }
    if (stage_ == Stage::Body) body_truncated(ETIMEDOUT, "upstream timed out");
}

void Client::on_up_read_timeout() {
    log::Scope scope(hooks_.log_context());
    if (consumer_gone() || !up_) return;
    switch (stage_) {
        case Stage::Active: fail(Failure::Timeout, 504, ETIMEDOUT, "upstream timed out"); return;
        case Stage::Body: body_truncated(ETIMEDOUT, "upstream timed out"); return;
        case Stage::Tunnel:
            error_log(log::Level::Error, ETIMEDOUT, "upstream timed out", action());
            end_tunnel();
            return;
        default: return;
    }
}

// ---- failures -----------------------------------------------------------------------------------

std::string_view Client::action() const {
    switch (stage_) {
        case Stage::Connecting: return "connecting to upstream";
        case Stage::Handshaking: return "SSL handshaking to upstream";
        case Stage::Active: return request_done_ ? "reading response header from upstream" : "sending request to upstream";
        case Stage::Body: return "reading upstream";
        case Stage::Upgrading:
        case Stage::Tunnel: return "proxying upgraded connection";
        default: return "connecting to upstream";
    }
}

// The context in scope (a callback's, or the caller's when it called in)
// adds the client, the request and the origin.
void Client::error_log(log::Level l, int err, std::string_view what, std::string_view act) {
    last_error_ = what;
    if (err) last_error_ += " (" + std::to_string(err) + ": " + strerror(err) + ")";
    if (!log::effective().enabled(l)) return;
    log::emit(l, 0, "%s while %.*s", last_error_.c_str(), static_cast<int>(act.size()), act.data());
}

void Client::describe_peer(FixedWriter& o) const {
    if (!peer_) return;
    o.put(conf_.tls ? ", upstream: \"https://" : ", upstream: \"http://");
    o.put(peer_->text);
    // "unix:/path" then the URI: nginx puts a ':' between them.
    if (peer_->text.starts_with("unix:")) o.put(":");
    o.put(out.uri);
    o.put("\"");
}

void Client::end_try(bool failed) {
    if (!log_.tries.empty() && cur_try().response_ms < 0) cur_try().response_ms = elapsed();
    if (try_open_ && peer_ && peer_->totals && !log_.tries.empty()) {
        const TryRecord& t = cur_try();
        peer_->totals->count_try(t.status, t.header_ms >= 0 ? t.header_ms : t.response_ms, t.response_ms, t.sent,
                                 t.bytes);
    }
    if (try_open_) {
        picker_->done(peer_, failed, event::worker_loop().now());
        try_open_ = false;
    }
}

void Client::close_upstream() {
    if (!up_) return;
    event::Connection* c = up_;
    up_ = nullptr;
    c->data = nullptr;
    if (up_tls_) {
        up_tls_->shutdown();  // close_notify, unless the session failed
        c->transport = nullptr;
        up_tls_.reset();
    }
    event::worker_connections().close(*c);
}

void Client::release_upstream(bool reusable) {
    if (!up_) return;
    if (!reusable || u_.keepalive == 0 || !peer_ || fixed_) {
        close_upstream();
        return;
    }
    event::Connection* c = up_;
    up_ = nullptr;
    event::worker_loop().cancel(c->read_timer);
    event::worker_loop().cancel(c->write_timer);
    c->io.on_read = {};
    c->io.on_write = {};
    c->read_timer.cb = {};
    c->write_timer.cb = {};
    c->data = nullptr;
    // The TLS session stays c's transport and goes with it: the pool
    // disposes of it if it closes c, take_idle() gives it back otherwise.
    if (up_tls_) static_cast<void>(up_tls_.release());
    keep_idle(u_, *peer_, *c, c->requests, conf_.tls, up_opened_);
}

bool Client::may_retry(Failure f, int status) const {
    if (fixed_) return false;
    const uint16_t nu = conf_.next_upstream;
    if (nu & kNextOff) return false;
    uint16_t bit = 0;
    switch (f) {
        case Failure::Error: bit = kNextError; break;
        case Failure::Timeout: bit = kNextTimeout; break;
        case Failure::InvalidHeader: bit = kNextInvalidHeader; break;
        case Failure::Status:
            switch (status) {
                case 500: bit = kNextHttp500; break;
                case 502: bit = kNextHttp502; break;
                case 503: bit = kNextHttp503; break;
                case 504: bit = kNextHttp504; break;
                case 403: bit = kNextHttp403; break;
                case 404: bit = kNextHttp404; break;
                case 429: bit = kNextHttp429; break;
                default: return false;
            }
            break;
    }
    if (!(nu & bit)) return false;
    // What the origin got must be safe to send again (RFC 9110 9.2.2)
    // unless the operator said so; a streamed body cannot be sent again
    // at all. (Nothing of the response reached the consumer yet: a head
    // is taken only after this was asked.)
    if (request_sent_ && !out.idempotent && !(nu & kNextNonIdempotent)) return false;
    if (body_mode_ == BodyMode::Streamed && body_started_) return false;
    if (conf_.next_upstream_tries && picker_->tried() >= conf_.next_upstream_tries) return false;
    if (conf_.next_upstream_timeout.count() > 0 &&
        event::worker_loop().now() - first_start_ >= static_cast<event::Msec>(conf_.next_upstream_timeout.count()))
        return false;
    return picker_->tried() < u_.peers.size();
}

// A try failed before a response head was taken.
void Client::fail(Failure f, int status, int err, std::string_view what) {
    if (stage_ == Stage::Body || stage_ == Stage::Upgrading || stage_ == Stage::Tunnel) {
        body_truncated(err, what);
        return;
    }
    // A pooled connection the origin closed while it idled fails on first
    // use: once, silently, a fresh connection to the same peer, when the
    // request may be sent twice (RFC 9110 9.2.2; RFC 9112 9.3.1).
    bool stale = reused_ && f == Failure::Error && !head_read_ && !cached_retried_ && out.idempotent &&
                 !(body_mode_ == BodyMode::Streamed && body_started_);
    error_log(stale ? log::Level::Info : log::Level::Error, err, what, action());
    if (!log_.tries.empty()) {
        cur_try().status = status;
        cur_try().response_ms = elapsed();
    }
    close_upstream();
    if (stale) {
        cached_retried_ = true;
        connect_peer();
        return;
    }
    end_try(f != Failure::Status);
    err_status_ = f == Failure::Timeout ? 504 : status;
    if (may_retry(f, status)) {
        connect();
        return;
    }
    stage_ = Stage::Done;
    schedule(&Client::report_error);
}

// A step: no usable response.
void Client::report_error() {
    close_upstream();
    end_try(false);
    stage_ = Stage::Done;
    hooks_.on_error(*this, err_status_);
}

}  // namespace gatehouse::upstream
