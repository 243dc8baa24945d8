// The request side of a proxied exchange: the client body, the peer and
// its connection, the request to the origin, failures and retries
// (proxy_next_upstream). The response side is proxy_response.cc.
#include "http/modules/proxy_exchange.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "core/log.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/output.h"
#include "http/core_module.h"
#include "http/phases.h"

namespace gatehouse::http::proxy {

// ---- lifetime and steps ---------------------------------------------------------------

Exchange::Exchange(Request& r, const ProxyConf& pc, const Pass& pass, upstream::UpstreamConf& u, UpstreamLog& log,
                   const Url& url)
    : r_(r),
      pc_(pc),
      pass_(pass),
      u_(u),
      log_(log),
      host_header_(url.host_header),
      port_(url.port),
      pass_uri_(url.uri),
      has_uri_(url.has_uri),
      kick_(event::Callback::to<&Exchange::on_kick>(this)),
      drain_ev_(event::Callback::to<&Exchange::on_drain_event>(this)),
      sendq_(r.mem()),
      pool_(r.mem()),
      out_(r.mem()) {
    tls_ = pass.tls;
}

Exchange::~Exchange() {
    // The request is going away (its arena with it): nothing may call back
    // into this object. Closing the connection cancels its timers and
    // drops its events.
    close_upstream();
    if (try_open_ && picker_) picker_->done(peer_, false, event::worker_loop().now());
    if (tmp_fd_ >= 0) ::close(tmp_fd_);
}

void Exchange::schedule(void (Exchange::*step)()) {
    step_ = step;
    event::worker_loop().post(kick_);
}

void Exchange::on_kick() {
    auto step = std::exchange(step_, nullptr);
    if (!step || client_gone()) return;
    // May end the request, and this object with it: nothing after.
    (this->*step)();
}

bool Exchange::client_gone() {
    if (!r_.stream().closed()) return false;
    close_upstream();
    stage_ = Stage::Done;
    return true;
}

int64_t Exchange::elapsed() const {
    event::Msec now = event::worker_loop().now();
    const TryRecord& t = log_.tries.back();
    return now > t.start ? static_cast<int64_t>(now - t.start) : 0;
}

Next Exchange::start() {
    first_start_ = event::worker_loop().now();
    method_ = pc_.method ? pc_.method->eval(r_) : r_.method;
    head_method_ = method_ == "HEAD";
    const bool chunked = r_.has_body && !r_.content_length;
    bool has_body = *pc_.pass_request_body && r_.has_body;
    if (has_body) {
        // HTTP/1.0 has no chunked framing: a body of unknown length is read
        // whole first, to send its length [nginx].
        if (*pc_.request_buffering || (chunked && *pc_.http_version == 10)) {
            body_mode_ = BodyMode::Buffered;
        } else {
            body_mode_ = BodyMode::Streamed;
            chunked_up_ = !r_.content_length;
        }
    }
    picker_.emplace(u_, first_start_);
    // ip_hash hashes the client address; "hash key" the key's value.
    picker_->set_client(r_.remote_sockaddr);
    if (u_.hash_value) picker_->set_key(static_cast<const ComplexValue*>(u_.hash_value)->eval(r_));
    // The work starts from the loop: whatever happens, the phase engine that
    // called us has returned by then.
    schedule(&Exchange::begin);
    return Next::Suspend;
}

void Exchange::begin() {
    if (body_mode_ == BodyMode::Buffered) {
        stage_ = Stage::ReadingBody;
        if (!read_whole_body(r_, body_read)) body_gone();
        return;
    }
    connect();
}

// ---- the client body ----------------------------------------------------------------------

// Buffered: the body is read whole first (memory, then
// client_body_temp_path), and kept for the request: an error_page that
// proxies elsewhere sends it again.
void Exchange::body_read(Request& r) {
    auto* ex = r.ctx<Exchange>(proxy_module);
    if (!ex || ex->stage_ != Stage::ReadingBody) return;
    ex->body_done_ = true;
    ex->body_size_ = r.body_kept->size;
    ex->schedule(&Exchange::connect);
}

bool Exchange::streamed_sink(Request& r, Chain& piece) {
    auto* ex = r.ctx<Exchange>(proxy_module);
    if (!ex) return false;
    return ex->stream_piece(piece);
}

// Streamed: each piece goes to the origin as it comes, re-chunked when the
// length is unknown; the client waits while the origin's socket is full.
// One piece at a time is in flight (the reader pauses on false), so one
// chunk-size buffer serves them all.
bool Exchange::stream_piece(Chain& piece) {
    if (!up_ || (stage_ != Stage::Active && stage_ != Stage::Body)) return false;
    uint64_t n = piece.bytes();
    if (n > 0) {
        if (chunked_up_) {
            size_t h = write_chunk_header(n, std::span<char, kMaxChunkHeader>(chunk_hdr_, kMaxChunkHeader));
            sendq_.push(Buf::memory({chunk_hdr_, h}));
        }
        for (Buf& b : piece)
            if (!b.empty()) sendq_.push(std::move(b));
        if (chunked_up_) sendq_.push(Buf::memory(kChunkEnd));
    }
    if (piece.last()) {
        if (chunked_up_) sendq_.push(Buf::memory(kLastChunk));
        body_done_ = true;
    }
    if (!write_queue()) return false;
    if (sendq_pos_ < sendq_.size()) {
        body_paused_ = true;
        return false;
    }
    if (body_done_ && !request_done_) request_sent_fully();
    return !body_done_;
}

// ---- the request head ---------------------------------------------------------------------

std::string_view Exchange::build_head() {
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
    uri_ = origin_uri(r_.arena(), up);

    const int version = *pc_.http_version;
    const auto* set = pc_.set_headers;
    std::pmr::string h(r_.mem());
    size_t estimate = 256 + method_.size() + uri_.size() + host_header_.size();
    for (const HeaderField& f : r_.headers) estimate += f.name.size() + f.value.size() + 4;
    h.reserve(estimate);
    auto field = [&](std::string_view n, std::string_view v) {
        h += n;
        h += ": ";
        h += v;
        h += "\r\n";
    };
    h += method_;
    h += ' ';
    h += uri_;
    h += version == 11 ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n";

    // proxy_set_header first, then the defaults it did not replace: Host
    // $proxy_host, and "Connection: close" unless connections are pooled.
    bool host_set = false, conn_set = false;
    if (set)
        for (const SetHeader& s : *set) {
            bool is_conn = iequals(s.name, "Connection");
            host_set |= iequals(s.name, "Host");
            conn_set |= is_conn;
            std::string_view v = s.value.eval(r_);
            if (v.empty() || iequals(s.name, "Content-Length") || iequals(s.name, "Transfer-Encoding")) continue;
            if (iequals(s.name, "Upgrade")) upgrade_sent_ = true;
            if (is_conn && connection_lists(v, "close")) close_sent_ = true;
            field(s.name, v);
        }
    if (!host_set) field("Host", host_header_);
    if (!conn_set && !(version == 11 && u_.keepalive > 0)) {
        field("Connection", "close");
        close_sent_ = true;
    }
    // Pooling needs HTTP/1.1 both ways (RFC 9112 9.3).
    if (version == 10) close_sent_ = true;

    char num[24];
    switch (body_mode_) {
        case BodyMode::None:
            // A "Content-Length: 0" the client sent is kept: some origins
            // want a length on every POST.
            if (*pc_.pass_request_body && r_.content_length && !r_.has_body) field("Content-Length", "0");
            break;
        case BodyMode::Buffered:
            field("Content-Length", {num, static_cast<size_t>(snprintf(num, sizeof num, "%llu",
                                                                       static_cast<unsigned long long>(body_size_)))});
            break;
        case BodyMode::Streamed:
            if (chunked_up_)
                field("Transfer-Encoding", "chunked");
            else
                field("Content-Length",
                      {num, static_cast<size_t>(snprintf(num, sizeof num, "%llu",
                                                         static_cast<unsigned long long>(*r_.content_length)))});
            break;
    }

    if (*pc_.pass_request_headers) {
        // Fields the client's Connection names are hop-by-hop too (RFC 9110
        // 7.6.1).
        auto named_by_connection = [&](std::string_view name) {
            for (const HeaderField& f : r_.headers)
                if (iequals(f.name, "Connection") && connection_lists(f.value, name)) return true;
            return false;
        };
        for (const HeaderField& f : r_.headers) {
            if (is_hop_by_hop_request(f.name) || iequals(f.name, "Host")) continue;
            bool replaced = false;
            if (set)
                for (const SetHeader& s : *set)
                    if (iequals(s.name, f.name)) replaced = true;
            if (replaced || named_by_connection(f.name)) continue;
            field(f.name, f.value);
        }
    }
    h += "\r\n";
    return r_.arena().dup(h);
}

// ---- connecting -----------------------------------------------------------------------------

void Exchange::connect() {
    if (head_.empty()) head_ = build_head();
    peer_ = picker_->next(event::worker_loop().now());
    if (!peer_) {
        // Every server is down, failed or busy (max_conns). After failed
        // tries the last failure's status stands.
        error_log(log::Level::Error, 0, "no live upstreams", "connecting to upstream");
        if (picker_->tried() == 0) log_.tries.push_back(TryRecord{u_.name, 502, event::worker_loop().now()});
        if (err_status_ == 0) err_status_ = 502;
        stage_ = Stage::Done;
        schedule(&Exchange::respond_error);
        return;
    }
    try_open_ = true;
    cached_retried_ = false;
    connect_peer();
}

// A connection to peer_: a pooled one when there is one (and this is not
// the retry of a pooled one that failed), else a new one.
void Exchange::connect_peer() {
    log_.tries.push_back(TryRecord{peer_->text, 0, event::worker_loop().now()});
    head_read_ = false;
    reused_ = false;
    if (u_.keepalive > 0 && !cached_retried_) {
        up_ = upstream::take_idle(u_, *peer_, tls_);
        reused_ = up_ != nullptr;
        if (up_ && tls_) {
            // Kept with our tag, so with its TLS session as transport
            // (release_upstream): ours again.
            GH_CHECK(up_->transport != nullptr);
            up_tls_.reset(static_cast<tls::Session*>(up_->transport));
        }
    }
    if (!up_) {
        auto c = upstream::open_connection(*peer_);
        if (!c) {
            stage_ = Stage::Connecting;
            fail(Failure::Error, 502, 0, c.message());
            return;
        }
        up_ = *c;
    }
    up_->data = this;
    up_->io.on_read = event::Callback::to<&Exchange::on_up_read>(this);
    up_->io.on_write = event::Callback::to<&Exchange::on_up_write>(this);
    up_->read_timer.cb = event::Callback::to<&Exchange::on_up_read_timeout>(this);
    up_->write_timer.cb = event::Callback::to<&Exchange::on_up_write_timeout>(this);
    if (reused_) {
        cur_try().connect_ms = 0;
        on_connected();
        return;
    }
    stage_ = Stage::Connecting;
    event::worker_loop().arm(up_->write_timer, *pc_.connect_timeout);
}

// TCP is up: the TLS handshake, under the connect timeout still armed.
void Exchange::start_tls() {
    stage_ = Stage::Handshaking;
    up_tls_ = std::make_unique<tls::Session>(*tls_->ctx, up_->fd(), peer_->text);
    std::string name(tls_->name ? tls_->name->eval(r_) : ssl_host(host_header_));
    // No SNI for an IP literal (RFC 6066 3), as nginx.
    in6_addr ip;
    bool literal = inet_pton(AF_INET, name.c_str(), &ip) == 1 || inet_pton(AF_INET6, name.c_str(), &ip) == 1;
    if (tls_->server_name && !literal && !name.empty()) up_tls_->set_server_name(name);
    if (tls_->verify) up_tls_->set_verify_name(name);
    if (tls_->session_reuse) {
        SSL_SESSION*& slot = tls_->sessions[peer_];
        up_tls_->save_session = &slot;
        up_tls_->resume(slot);
    }
    up_->transport = up_tls_.get();
    handshake();
}

void Exchange::handshake() {
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

void Exchange::on_connected() {
    event::worker_loop().cancel(up_->write_timer);
    if (*pc_.socket_keepalive) {
        int one = 1;
        setsockopt(up_->fd(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
    stage_ = Stage::Active;
    request_sent_ = request_done_ = false;
    head_len_ = head_start_ = 0;
    parser_.reset();
    ++up_->requests;
    queue_request();
    if (!write_queue()) return;
    if (body_mode_ == BodyMode::Streamed && !body_started_) {
        // The reader may hand pieces (and the stream_piece may fail) at once.
        body_started_ = true;
        if (!http::read_body(r_, streamed_sink)) body_gone();
        return;
    }
    if (sendq_pos_ == sendq_.size() && (body_mode_ != BodyMode::Streamed || body_done_) && !request_done_)
        request_sent_fully();
}

void Exchange::queue_request() {
    sendq_.clear();
    sendq_pos_ = 0;
    sendq_.push(Buf::memory(head_));
    if (body_mode_ == BodyMode::Buffered)
        // Copies: the body stays kept for another try or another location.
        for (Buf& b : r_.body_kept->bufs) sendq_.push(b);
}

// ---- I/O with the origin -----------------------------------------------------------------------

bool Exchange::write_queue() {
    while (sendq_pos_ < sendq_.size()) {
        Buf& b = sendq_[sendq_pos_];
        if (b.empty()) {
            ++sendq_pos_;
            continue;
        }
        if (b.in_file() && up_tls_) {
            // TLS: the bytes must go through OpenSSL, so no sendfile().
            // A retried SSL_write needs the same bytes again: they are
            // read anew from the same file position, the same length.
            char piece[16384];
            size_t want = std::min<size_t>(b.size(), sizeof piece);
            ssize_t n = ::pread(b.fd, piece, want, b.file_pos);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                int err = n < 0 ? errno : 0;
                fail(Failure::Error, 502, err, n < 0 ? "pread() failed" : "client body file was truncated");
                return false;
            }
            iovec one{piece, static_cast<size_t>(n)};
            event::IoResult io = up_->writev({&one, 1});
            if (io.kind == event::IoResult::Again) {
                event::worker_loop().arm(up_->write_timer, *pc_.send_timeout);
                return true;
            }
            if (io.kind == event::IoResult::Error) {
                fail(Failure::Error, 502, io.err, "SSL_write() failed");
                return false;
            }
            request_sent_ = true;
            b.file_pos += static_cast<off_t>(io.bytes);
            continue;
        }
        if (b.in_file()) {
            off_t off = b.file_pos;
            ssize_t n = ::sendfile(up_->fd(), b.fd, &off, std::min<size_t>(b.size(), 1u << 30));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) {
                up_->io.clear_writable();
                event::worker_loop().arm(up_->write_timer, *pc_.send_timeout);
                return true;
            }
            if (n <= 0) {
                int err = n < 0 ? errno : 0;
                fail(Failure::Error, 502, err, n < 0 ? "sendfile() failed" : "client body file was truncated");
                return false;
            }
            request_sent_ = true;
            b.file_pos += n;
            continue;
        }
        iovec iov[16];
        size_t cnt = 0;
        for (size_t i = sendq_pos_; i < sendq_.size() && cnt < std::size(iov); ++i) {
            Buf& m = sendq_[i];
            if (m.in_file()) break;
            if (m.empty()) continue;
            iov[cnt].iov_base = const_cast<char*>(m.pos);
            iov[cnt].iov_len = m.size();
            ++cnt;
        }
        event::IoResult io = up_->writev({iov, cnt});
        if (io.kind == event::IoResult::Again) {
            event::worker_loop().arm(up_->write_timer, *pc_.send_timeout);
            return true;
        }
        if (io.kind == event::IoResult::Error) {
            fail(Failure::Error, 502, io.err, "writev() failed");
            return false;
        }
        request_sent_ = true;
        size_t sent = io.bytes;
        while (sent > 0 && sendq_pos_ < sendq_.size()) {
            Buf& m = sendq_[sendq_pos_];
            size_t take = std::min(sent, m.size());
            m.pos += take;
            sent -= take;
            if (m.pos == m.last) ++sendq_pos_;
        }
    }
    event::worker_loop().cancel(up_->write_timer);
    // Drop the Bufs (and the slabs they hold) of what went out.
    sendq_.clear();
    sendq_pos_ = 0;
    return true;
}

void Exchange::request_sent_fully() {
    request_done_ = true;
    // proxy_read_timeout runs from the end of the request, between reads.
    if (stage_ == Stage::Active) event::worker_loop().arm(up_->read_timer, *pc_.read_timeout);
}

void Exchange::on_up_write() {
    if (client_gone() || !up_) return;
    switch (stage_) {
        case Stage::Connecting: {
            if (int err = upstream::connect_result(*up_)) {
                fail(Failure::Error, 502, err, "connect() failed");
                return;
            }
            if (tls_) {
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
            if (sendq_pos_ == sendq_.size()) {
                // A TLS read stopped to write first (a key update): it can
                // go on now.
                if (up_tls_ && up_tls_->read_wants_write()) on_up_read();
                return;
            }
            if (!write_queue()) return;
            if (sendq_pos_ < sendq_.size()) return;
            if (body_paused_) {
                body_paused_ = false;
                // May call stream_piece() at once.
                http::resume_body(r_);
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

void Exchange::on_up_read() {
    if (client_gone() || !up_) return;
    switch (stage_) {
        case Stage::Handshaking: handshake(); return;
        case Stage::Active: read_head(); return;
        case Stage::Body:
            if (!paused_) read_response_body();
            return;
        case Stage::Tunnel: pump(); return;
        default:
            // Connecting: errors come to on_up_write as well. Upgrading: the
            // origin's first frames wait in the socket for the tunnel.
            return;
    }
}

void Exchange::on_up_write_timeout() {
    if (client_gone() || !up_) return;
    if (stage_ == Stage::Connecting || stage_ == Stage::Handshaking || stage_ == Stage::Active) {
        fail(Failure::Timeout, 504, ETIMEDOUT, "upstream timed out");
        return;
    }
    if (stage_ == Stage::Body) body_truncated(ETIMEDOUT, "upstream timed out");
}

void Exchange::on_up_read_timeout() {
    if (client_gone() || !up_) return;
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

std::string_view Exchange::action() const {
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

void Exchange::error_log(log::Level l, int err, std::string_view what, std::string_view act) {
    if (!log::current().enabled(l)) return;
    std::string m(what);
    if (err) m += " (" + std::to_string(err) + ": " + strerror(err) + ")";
    m += " while ";
    m += act;
    m += ", client: ";
    m += r_.remote_addr;
    m += ", server: ";
    if (r_.srv && !r_.srv->server_names.empty()) m += r_.srv->server_names[0].name;
    m += ", request: \"";
    m += r_.request_line;
    m += '"';
    if (peer_) {
        m += pass_.ssl ? ", upstream: \"https://" : ", upstream: \"http://";
        m += peer_->text;
        if (peer_->text.starts_with("unix:")) m += ':';
        m += uri_;
        m += '"';
    }
    if (!r_.in.host.empty()) {
        m += ", host: \"";
        m += r_.in.host;
        m += '"';
    }
    log::emit(l, 0, "%s", m.c_str());
}

void Exchange::end_try(bool failed) {
    if (!log_.tries.empty() && cur_try().response_ms < 0) cur_try().response_ms = elapsed();
    if (try_open_) {
        picker_->done(peer_, failed, event::worker_loop().now());
        try_open_ = false;
    }
}

void Exchange::close_upstream() {
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

void Exchange::release_upstream(bool reusable) {
    if (!up_) return;
    if (!reusable || u_.keepalive == 0 || !peer_) {
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
    upstream::keep_idle(u_, *peer_, *c, c->requests, tls_);
}

bool Exchange::may_retry(Failure f, int status) const {
    const uint16_t nu = *pc_.next_upstream;
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
    // Nothing of the response may have reached the client, and what the
    // origin got must be safe to send again (RFC 9110 9.2.2) unless the
    // operator said so; a streamed body cannot be sent again at all.
    if (r_.header_sent) return false;
    if (request_sent_ && !is_idempotent(method_) && !(nu & kNextNonIdempotent)) return false;
    if (body_mode_ == BodyMode::Streamed && body_started_) return false;
    if (*pc_.next_upstream_tries && picker_->tried() >= *pc_.next_upstream_tries) return false;
    if (pc_.next_upstream_timeout->count() > 0 &&
        event::worker_loop().now() - first_start_ >= static_cast<event::Msec>(pc_.next_upstream_timeout->count()))
        return false;
    return picker_->tried() < u_.peers.size();
}

// A try failed before the response head reached the client.
void Exchange::fail(Failure f, int status, int err, std::string_view what) {
    if (stage_ == Stage::Body || stage_ == Stage::Upgrading || stage_ == Stage::Tunnel) {
        body_truncated(err, what);
        return;
    }
    // A pooled connection the origin closed while it idled fails on first
    // use: once, silently, a fresh connection to the same peer, when the
    // request may be sent twice (RFC 9110 9.2.2; RFC 9112 9.3.1).
    bool stale = reused_ && f == Failure::Error && !head_read_ && !cached_retried_ && is_idempotent(method_) &&
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
    schedule(&Exchange::respond_error);
}

// A step: the error status (or its error_page) instead of a response.
void Exchange::respond_error() {
    close_upstream();
    end_try(false);
    stage_ = Stage::Done;
    Request& r = r_;
    Next n = respond_status(r, err_status_);
    // An error_page redirect cleared every module's context: keep ours, so
    // that $upstream_* still tell what happened.
    r.set_ctx(proxy_module, this);
    continue_request(r, n);
}

}  // namespace gatehouse::http::proxy

namespace gatehouse::http::proxy {

// A streamed body was handed to an earlier reader (a location before an
// internal redirect): it cannot be sent again.
void Exchange::body_gone() {
    GH_LOG(Error, "client request body was already read and cannot be sent again, client: %.*s",
           static_cast<int>(r_.remote_addr.size()), r_.remote_addr.data());
    err_status_ = 500;
    stage_ = Stage::Done;
    schedule(&Exchange::respond_error);
}

}  // namespace gatehouse::http::proxy
