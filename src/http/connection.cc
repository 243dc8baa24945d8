#include "http/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/phases.h"
#include "http/ssl_module.h"
#include "http/uri.h"
#include "tls/session.h"

namespace gatehouse::http {

namespace {

// With "sendfile off", files go out through memory in pieces this big.
constexpr size_t kReadChunk = 32768;

HttpConnection* g_conns = nullptr;  // every live HttpConnection of the worker
bool g_retiring = false;            // retire_connections() was called

void addr_text(const sockaddr* sa, char* out, size_t len, uint16_t* port) {
    out[0] = '\0';
    *port = 0;
    if (!sa) return;
    if (sa->sa_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        inet_ntop(AF_INET, &in->sin_addr, out, static_cast<socklen_t>(len));
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        inet_ntop(AF_INET6, &in6->sin6_addr, out, static_cast<socklen_t>(len));
        *port = ntohs(in6->sin6_port);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, len, "unix:");
    }
}

bool sockaddr_matches(const sockaddr* sa, const conf::Address& a) {
    if (!sa) return false;
    if (sa->sa_family == AF_INET && a.kind == conf::Address::Kind::Inet) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        auto* want = reinterpret_cast<const sockaddr_in*>(&a.sa);
        return in->sin_addr.s_addr == want->sin_addr.s_addr;
    }
    if (sa->sa_family == AF_INET6 && a.kind == conf::Address::Kind::Inet6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        auto* want = reinterpret_cast<const sockaddr_in6*>(&a.sa);
        return memcmp(&in6->sin6_addr, &want->sin6_addr, sizeof(in6_addr)) == 0;
    }
    return sa->sa_family == AF_UNIX && a.kind == conf::Address::Kind::Unix;
}

bool is_wild(const conf::Address& a) {
    return (a.kind == conf::Address::Kind::Inet && (a.host == "*" || a.host == "0.0.0.0")) ||
           (a.kind == conf::Address::Kind::Inet6 && a.host == "::");
}

}  // namespace


void on_accept(void* port, event::Connection& c) {
    // Owned by the connection slot from now on: close() frees it.
    std::make_unique<HttpConnection>(c, *static_cast<const ListenPort*>(port)).release();
}

// Retiring a worker without losing a request.
//
// nginx closes idle keep-alive connections the moment a worker is told to
// quit. A client that sent its next request on one just then (on the wire,
// or in our socket buffer unread) gets an EOF or a reset instead of an
// answer, and a client may only retry that silently when the request is
// idempotent (RFC 9112 9.3.1). Under steady keep-alive traffic every reload
// costs a few requests that way. A retiring worker here instead:
//
//  - answers every request that starts from now on with "Connection:
//    close" and closes after the response: the client reconnects and the
//    listening socket, which the retiring worker no longer polls, hands
//    the new connection to a new worker;
//  - gives a response whose head is not sent yet "Connection: close" too
//    (r.keepalive is read when the head is written); a response whose head
//    already said keep-alive completes, then the connection is idle;
//  - keeps an idle connection (keep-alive, or accepted with no byte read
//    yet) open for kRetireGrace, or less if its own keepalive or header
//    timeout comes first: a request arriving meanwhile is served as above.
//    At the end of the grace (retire_idle) a request already in the
//    socket is still read; a client still receiving the last response
//    (bytes unacknowledged in our send queue) gets the grace again, as it
//    cannot have sent its next request yet; otherwise the connection is
//    closed. Nothing is unread then, so the close is a FIN, not a reset;
//  - lets a connection in the middle of a head, a body, a response, a
//    lingering close or a tunnel run its course, bounded by its own
//    timeouts and by worker_shutdown_timeout.
//
// Why 1s: a client whose next request was coming was about to send it -
// request loops, pages fetching their resources and pooled API clients
// send within milliseconds - and is answered. A client idle for a second
// is typically idle far longer; its next request could come at any time,
// so waiting longer barely lowers the chance of crossing our close (the
// same small chance as at every keepalive_timeout, which HTTP clients
// already handle), while each old worker, its connections and its
// configuration generation would live that much longer after every
// reload.
void retire_connections() {
    if (g_retiring) return;
    g_retiring = true;
    const event::Msec now = event::worker_loop().now();
    const event::Msec grace_end = now + static_cast<event::Msec>(kRetireGrace.count());
    for (HttpConnection* h = g_conns; h; h = h->next_) {
        using State = HttpConnection::State;
        event::Timer& t = h->c_.read_timer;
        if (h->state_ == State::Keepalive || (h->state_ == State::Head && h->rlen_ == h->rpos_)) {
            if (!t.armed() || t.deadline() > grace_end) event::worker_loop().arm_at(t, grace_end);
        } else if (h->state_ == State::Processing && h->req_ && !h->req_->header_sent) {
            h->req_->keepalive = false;
        }
    }
}

bool HttpConnection::input_waiting() {
    char b;
    return ::recv(c_.fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

void HttpConnection::retire_idle() {
    // The request may be in the socket already, its readiness not yet
    // reported by epoll: read it rather than closing over it.
    if (input_waiting()) {
        if (state_ == State::Keepalive) {
            state_ = State::Head;
            event::worker_loop().arm(c_.read_timer, *default_srv_->client_header_timeout);
        }
        read_head();
        return;
    }
    // The client has not received all of the last response yet (a slow
    // reader of a large file: the kernel still holds, unacknowledged, what
    // we wrote): it has not been idle at all. The grace starts again, up to
    // the connection's own timeout.
    int unacked = 0;
    const event::Msec now = event::worker_loop().now();
    if (::ioctl(c_.fd(), SIOCOUTQ, &unacked) == 0 && unacked > 0 && now < idle_until_) {
        event::Msec grace = std::min<event::Msec>(static_cast<event::Msec>(kRetireGrace.count()), idle_until_ - now);
        event::worker_loop().arm(c_.read_timer, std::chrono::milliseconds(grace));
        return;
    }
    close();
}

HttpConnection::HttpConnection(event::Connection& c, const ListenPort& port)
    : c_(c),
      port_(port),
      drain_ev_(event::Callback::to<&HttpConnection::on_drained>(this)),
      finish_ev_(event::Callback::to<&HttpConnection::finish_request>(this)),
      resume_ev_(event::Callback::to<&HttpConnection::resume>(this)) {
    c_.data = this;
    next_ = g_conns;
    if (g_conns) g_conns->prev_ = this;
    g_conns = this;
    addr_text(reinterpret_cast<const sockaddr*>(&c_.peer), peer_text_, sizeof peer_text_, &peer_port_);
    // The default server of the address sets the limits that apply before
    // the Host header is known [nginx].
    if (port_.addrs.size() == 1) addr_ = &port_.addrs[0];
    default_srv_ = addr_servers().default_server;
    if (port_.bind.ssl) {
        // The handshake comes first, with the default server's certificate
        // until SNI names another server (ssl_module).
        const tls::Context* ctx = ssl_context(*default_srv_);
        GH_CHECK(ctx != nullptr);  // ssl_module refuses a TLS address without one
        tls_ = std::make_unique<tls::Session>(*ctx, c_.fd(), peer_text_);
        tls_->user = this;
        c_.transport = tls_.get();
    }
    c_.io.on_read = event::Callback::to<&HttpConnection::on_read>(this);
    c_.io.on_write = event::Callback::to<&HttpConnection::on_write>(this);
    c_.read_timer.cb = event::Callback::to<&HttpConnection::on_read_timeout>(this);
    c_.write_timer.cb = event::Callback::to<&HttpConnection::on_write_timeout>(this);
    if (c_.peer.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(c_.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (auto s = event::worker_loop().add(c_.io, event::Interest::ReadWrite); !s) {
        GH_LOG(Alert, "%s", s.message().c_str());
        close();
        return;
    }
    event::worker_loop().arm(c_.read_timer, *default_srv_->client_header_timeout);
    idle_until_ = c_.read_timer.deadline();
}

HttpConnection::~HttpConnection() {
    if (prev_) prev_->next_ = next_;
    else if (g_conns == this) g_conns = next_;
    if (next_) next_->prev_ = prev_;
}

const AddrServers& HttpConnection::addr_servers() {
    if (addr_) return *addr_;
    const sockaddr* local = c_.local_address();
    for (const auto& a : port_.addrs)
        if (is_wild(a.addr) || sockaddr_matches(local, a.addr)) {
            addr_ = &a;
            return a;
        }
    addr_ = &port_.addrs.back();
    return *addr_;
}

std::string_view HttpConnection::local_addr() {
    if (!local_known_) {
        addr_text(c_.local_address(), local_text_, sizeof local_text_, &local_port_);
        local_known_ = true;
    }
    return local_text_;
}

uint16_t HttpConnection::local_port() {
    local_addr();
    return local_port_;
}

void HttpConnection::close() {
    if (state_ == State::Closed) return;
    state_ = State::Closed;
    closing_ = true;
    event::worker_loop().unpost(resume_ev_);
    event::worker_loop().unpost(drain_ev_);
    event::worker_loop().unpost(finish_ev_);
    if (req_) {
        // A request cut short still gets its log line.
        Request& r = *req_;
        auto* m = http_main(r.main_confs);
        if (m && r.loc_confs)
            for (uint16_t i = m->phase_start[static_cast<int>(Phase::Log)];
                 i < m->phase_start[static_cast<int>(Phase::Log) + 1]; ++i)
                m->handlers[i](r);
    }
    if (tls_) tls_->shutdown();  // close_notify, when the handshake was done
    event::worker_connections().close(c_);
    event::worker_loop().defer({[](void* p) { std::unique_ptr<HttpConnection>(static_cast<HttpConnection*>(p)); }, this});
}

void HttpConnection::abort() {
    if (req_ && req_->loc_confs && !req_->header_sent) req_->status = req_->status ? req_->status : 499;
    close();
}

// ---- reading the head --------------------------------------------------

void HttpConnection::on_read() {
    switch (state_) {
        case State::Head:
        case State::Keepalive:
            read_head();
            break;
        case State::Lingering:
            lingering_read();
            break;
        case State::Processing:
            // A body being read goes on; otherwise input waits in the
            // kernel buffer (pipelining) and a closed peer is found when
            // writing.
            if (body_started_ && !body_done_ && !body_paused_) pump_body();
            break;
        case State::Tunnel:
        case State::Closed:
            break;
    }
}

void HttpConnection::read_head() {
    if (tls_ && !tls_->established()) {
        tls_handshake();
        return;
    }
    SrvConf& s = *default_srv_;
    const size_t small = *s.client_header_buffer_size;
    const size_t large = *s.large_header_buffer_size;
    const size_t max_head = large * *s.large_header_buffers_num;
    if (!rbuf_) {
        rbuf_ = SlabRef::adopt(Slab::make(small));
        rcap_ = small;
        rpos_ = rlen_ = 0;
    }
    if (!head_) {
        Limits lim;
        lim.max_start_line = large;
        lim.max_header_line = large;
        lim.max_head = max_head;
        lim.max_headers = kMaxHeaders;
        head_ = std::make_unique<HeadState>(lim);
    }
    RequestParser* parser_ = &head_->parser;
    for (;;) {
        // Parse what is buffered first: pipelined requests need no read.
        if (rlen_ > rpos_) {
            std::string_view data(rbuf_.get()->data() + rpos_, rlen_ - rpos_);
            ParseResult pr = parser_->parse(data);
            if (pr.state == ParseState::Done) {
                start_request(pr.consumed);
                return;
            }
            if (pr.state == ParseState::Error) {
                reject(pr.status, pr.reason);
                return;
            }
        }
        if (rlen_ == rcap_) {
            size_t pending = rlen_ - rpos_;
            if (rpos_ > 0) {
                // Move a pipelined request's bytes to the front.
                memmove(rbuf_.get()->data(), rbuf_.get()->data() + rpos_, pending);
                rpos_ = 0;
                rlen_ = pending;
                parser_->reset();
                continue;
            }
            if (rcap_ >= max_head) {
                reject(431, "client sent too large request header");
                return;
            }
            // Grow to the large size (then the whole large allowance): the
            // limits, not the buffer, decide 414 and 431.
            size_t cap = rcap_ < large ? large : max_head;
            SlabRef nb = SlabRef::adopt(Slab::make(cap));
            memcpy(nb.get()->data(), rbuf_.get()->data(), rlen_);
            rbuf_ = std::move(nb);
            rcap_ = cap;
        }
        event::IoResult io = c_.recv({rbuf_.get()->data() + rlen_, rcap_ - rlen_});
        if (io.kind == event::IoResult::Ok) {
            if (state_ == State::Keepalive) {
                // The first byte of the next request: header timeout from now.
                state_ = State::Head;
                event::worker_loop().arm(c_.read_timer, *default_srv_->client_header_timeout);
            }
            rlen_ += io.bytes;
            continue;
        }
        if (io.kind == event::IoResult::Again) return;
        if (io.kind == event::IoResult::Eof) {
            if (rlen_ > rpos_)
                GH_LOG(Info, "client %s closed connection while reading client request headers",
                       peer_text_);
            close();
            return;
        }
        if (io.err != ECONNRESET)
            GH_LOG_ERRNO(Info, io.err, "recv() failed while reading client request headers, client: %s",
                         peer_text_);
        close();
        return;
    }
}

void HttpConnection::tls_handshake() {
    if (!tls_sniffed_) {
        // A TLS connection starts with a handshake record (0x16), or an
        // SSLv2-framed hello (high bit set); anything else is taken for
        // plain HTTP, answered with nginx's 497 page once its head is in.
        char b = 0;
        ssize_t n;
        do {
            n = ::recv(c_.fd(), &b, 1, MSG_PEEK);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EAGAIN) {
            c_.io.clear_readable();
            return;
        }
        if (n <= 0) {
            close();
            return;
        }
        if (b != 0x16 && !(b & 0x80)) {
            c_.transport = nullptr;
            tls_.reset();
            plain_on_tls_ = true;
            read_head();
            return;
        }
        tls_sniffed_ = true;
    }
    switch (tls_->handshake(c_)) {
        case tls::Session::Step::Done:
            read_head();
            return;
        case tls::Session::Step::Again:
            return;
        case tls::Session::Step::Fail:
            GH_LOG(Info, "%s while SSL handshaking, client: %s", tls_->error().c_str(), peer_text_);
            close();
            return;
    }
}

void HttpConnection::reject(int status, std::string_view reason, bool log_info) {
    // The head could not be parsed: answer with the status page and close,
    // lingering so the client reads the answer rather than a reset.
    if (log_info)
        GH_LOG(Info, "%.*s while reading client request headers, client: %s",
               static_cast<int>(reason.size()), reason.data(), peer_text_);
    Request& r = new_request();
    r.keepalive = false;
    r.discard_body = false;
    r.err_reason = reason;
    r.counters.request_length = rlen_ - rpos_;
    // The request line, when it was read, is still useful in the log.
    std::string_view data(rbuf_ ? rbuf_.get()->data() + rpos_ : nullptr, rlen_ - rpos_);
    size_t eol = data.find('\n');
    if (eol != std::string_view::npos) {
        std::string_view line = data.substr(0, eol);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        r.request_line = line;
    }
    // The head is unusable: the standard page, no error_page redirect.
    r.no_error_page = true;
    linger_next_ = true;
    respond_status(r, status, reason);
    finalize_response(r);
}

// ---- running a request ---------------------------------------------------

// A request on the default server of the address, its clock started;
// the Host header may choose another server later.
Request& HttpConnection::new_request() {
    event::worker_loop().cancel(c_.read_timer);
    state_ = State::Processing;
    SrvConf* srv = addr_servers().default_server;
    req_ = std::make_unique<Request>(*this, port_.main_confs, srv->srv_confs);
    Request& r = *req_;
    r.srv = srv;
    r.loc_confs = srv->loc_confs;
    r.counters.start_msec = event::worker_loop().now();
    auto w = event::worker_loop().wall();
    r.counters.start_sec = w.sec;
    r.counters.start_ms = w.msec;
    return r;
}

void HttpConnection::start_request(size_t head_len) {
    const RequestHead& h = head_->parser.head();
    Request& r = new_request();
    r.in = h;
    r.counters.request_length = head_len;
    ++c_.requests;

    std::string_view head(rbuf_.get()->data() + rpos_, head_len);
    rpos_ += head_len;
    r.method = h.method_name;
    // HTTP/1.2..1.9 are served as 1.1 (RFC 9110 2.5).
    r.http_version = h.version_minor == 0 ? 10 : 11;
    r.head_only = h.method == Method::Head;
    r.expect_continue = h.expect_100_continue;
    r.content_length = h.framing.content_length;
    r.chunked = h.framing.chunked;
    // The request line as sent, for $request and the log.
    size_t eol = head.find('\n');
    std::string_view line = head.substr(0, eol);
    // Leading empty lines are allowed before a request (RFC 9112 2.2).
    while (line.empty() || line == "\r") {
        head.remove_prefix(eol + 1);
        eol = head.find('\n');
        line = head.substr(0, eol);
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    r.request_line = line;
    r.unparsed_uri = h.form == TargetForm::Absolute ? h.path : h.target;
    if (h.form == TargetForm::Asterisk) r.unparsed_uri = "*";

    // Keepalive as the client asked and the limits allow; a retiring
    // worker closes after this response.
    r.keepalive = h.keep_alive() && !g_retiring;

    // Host: lower case, no port, no trailing dot.
    if (!h.host.empty()) {
        char* buf = static_cast<char*>(r.arena().alloc(h.host.size() + 1, 1));
        r.host = normalize_host(h.host, std::span<char>(buf, h.host.size() + 1));
    }
    select_server(r);

    if (h.form == TargetForm::Asterisk || h.form == TargetForm::Authority) {
        // OPTIONS * and CONNECT are not served by this server.
        r.no_error_page = true;
        respond_status(r, h.form == TargetForm::Authority ? 405 : 400,
                       "client sent a request-target this server does not serve");
        finalize_response(r);
        return;
    }
    PathQuery pq = split_path_query(r.unparsed_uri);
    r.args = pq.query;
    char* out = static_cast<char*>(r.arena().alloc(pq.path.size() + 1, 1));
    auto clean = clean_path(pq.path, std::span<char>(out, pq.path.size() + 1));
    if (!clean) {
        r.keepalive = false;
        GH_LOG(Info, "client sent invalid request URI \"%.*s\" (%s), client: %s",
               static_cast<int>(r.unparsed_uri.size()), r.unparsed_uri.data(), clean.message().c_str(),
               peer_text_);
        r.no_error_page = true;
        respond_status(r, 400, "client sent invalid request URI");
        finalize_response(r);
        return;
    }
    r.uri = *clean;
    r.set_exten();

    // The body: this layer discards it; modules that read bodies (proxy)
    // take over discarding by clearing r.discard_body.
    if (r.content_length.value_or(0) > 0 || r.chunked) {
        r.discard_body = true;
        body_left_ = r.content_length.value_or(0);
        body_chunked_ = r.chunked;
    }
    {
        auto& lc = r.loc_conf<LocConf>(http_core_module);
        if (r.keepalive && (c_.requests >= *lc.keepalive_requests || lc.keepalive_timeout->count() == 0))
            r.keepalive = false;
    }
    if (port_.bind.ssl) {
        // A plain request to the TLS port, a bad or missing client
        // certificate: answered now that the server is known, so that its
        // error_page applies (and $request_uri is set), as nginx does.
        if (int st = ssl_check_request(r, plain_on_tls_)) {
            respond_status(r, st);
            finalize_response(r);
            return;
        }
    }
    r.phase_index = 0;
    run_phases(r);
}

void HttpConnection::post_resume() { event::worker_loop().post(resume_ev_); }

void HttpConnection::resume() {
    if (req_ && state_ == State::Processing) run_phases(*req_);
}

// ---- output ----------------------------------------------------------------

void HttpConnection::queue(Chain& c) {
    if (!req_) return;
    if (!out_) {
        out_ = req_->arena().make<std::pmr::vector<Buf>>(req_->mem());
        out_->reserve(8);
        out_head_ = 0;
    }
    for (Buf& b : c) {
        if (b.last_buf) out_last_ = true;
        if (!b.empty()) out_->push_back(std::move(b));
    }
    c.clear();
}

void HttpConnection::flush() {
    if (state_ == State::Closed || !req_) return;
    Request& r = *req_;
    auto& lc = r.loc_conf<LocConf>(http_core_module);
    while (out_ && out_head_ < out_->size()) {
        Buf& b = (*out_)[out_head_];
        // sendfile() cannot encrypt: over TLS, files go through memory.
        if (b.in_file() && (!r.use_sendfile || tls_)) {
            // "sendfile off": read a piece into memory and send that. The
            // piece goes in front of the rest of the file range.
            size_t want = std::min<size_t>(b.size(), kReadChunk);
            SlabRef slab = SlabRef::adopt(Slab::make(want));
            ssize_t n = ::pread(b.fd, slab.get()->data(), want, b.file_pos);
            if (n <= 0) {
                if (n < 0 && errno == EINTR) continue;
                if (n < 0)
                    GH_LOG_ERRNO(Crit, errno, "pread() failed while sending response to client, client: %s",
                                 peer_text_);
                else
                    GH_LOG(Error, "file was truncated while sending response, client: %s", peer_text_);
                abort();
                return;
            }
            Buf m;
            m.pos = slab.get()->data();
            m.last = m.pos + n;
            m.slab = std::move(slab);
            b.file_pos += n;
            if (b.file_pos == b.file_last)
                (*out_)[out_head_] = std::move(m);
            else
                out_->insert(out_->begin() + static_cast<ptrdiff_t>(out_head_), std::move(m));
            continue;
        }
        if (b.in_file()) {
            off_t off = b.file_pos;
            size_t want = std::min<size_t>(b.size(), 1u << 30);
            ssize_t n = ::sendfile(c_.fd(), b.fd, &off, want);
            if (n < 0) {
                if (errno == EAGAIN) {
                    c_.io.clear_writable();
                    break;
                }
                if (errno == EINTR) continue;
                GH_LOG_ERRNO(Info, errno, "sendfile() failed while sending response to client, client: %s",
                             peer_text_);
                abort();
                return;
            }
            if (n == 0) {
                // The file shrank under us: the promised length cannot be sent.
                GH_LOG(Error, "file was truncated while sending response, client: %s", peer_text_);
                abort();
                return;
            }
            r.counters.bytes_sent += static_cast<uint64_t>(n);
            b.file_pos += n;
            if (b.file_pos == b.file_last) ++out_head_;
            continue;
        }
        iovec iov[64];
        size_t n = 0;
        for (size_t i = out_head_; i < out_->size() && n < std::size(iov); ++i) {
            Buf& m = (*out_)[i];
            if (m.in_file()) break;
            iov[n].iov_base = const_cast<char*>(m.pos);
            iov[n].iov_len = m.size();
            ++n;
        }
        event::IoResult io = c_.writev({iov, n});
        if (io.kind == event::IoResult::Again) break;
        if (io.kind == event::IoResult::Error) {
            if (io.err != EPIPE && io.err != ECONNRESET)
                GH_LOG_ERRNO(Info, io.err, "writev() failed while sending response to client, client: %s",
                             peer_text_);
            else
                GH_LOG(Info, "client %s closed connection while sending response", peer_text_);
            abort();
            return;
        }
        size_t sent = io.bytes;
        r.counters.bytes_sent += sent;
        while (sent > 0) {
            Buf& m = (*out_)[out_head_];
            size_t take = std::min(sent, m.size());
            m.pos += take;
            sent -= take;
            if (m.pos == m.last) ++out_head_;
        }
    }
    bool pending = out_ && out_head_ < out_->size();
    if (pending) {
        event::worker_loop().arm(c_.write_timer, *lc.send_timeout);
        return;
    }
    event::worker_loop().cancel(c_.write_timer);
    if (out_) {
        // Everything written: drop the sent Bufs so a long stream does
        // not grow the queue.
        out_->clear();
        out_head_ = 0;
    }
    if (out_last_) {
        event::worker_loop().post(finish_ev_);
        return;
    }
    if (drain_fn_) event::worker_loop().post(drain_ev_);
}

void HttpConnection::on_write() {
    if (tls_ && !tls_->established()) {
        if (state_ == State::Head) tls_handshake();
        return;
    }
    // OpenSSL had to write before it could read on (a TLS 1.3 key update).
    if (tls_ && tls_->read_wants_write()) on_read();
    if (state_ == State::Processing && out_ && out_head_ < out_->size()) flush();
}

void HttpConnection::on_drained() {
    if (state_ == State::Processing && req_ && drain_fn_ && output_pending() == 0) drain_fn_(*req_);
}

size_t HttpConnection::output_pending() const {
    if (!out_) return 0;
    size_t n = 0;
    for (size_t i = out_head_; i < out_->size(); ++i) n += (*out_)[i].size();
    return n;
}

void HttpConnection::become_tunnel(event::Callback on_read, event::Callback on_write, std::string_view* leftover) {
    state_ = State::Tunnel;
    event::worker_loop().cancel(c_.read_timer);
    event::worker_loop().cancel(c_.write_timer);
    c_.io.on_read = on_read;
    c_.io.on_write = on_write;
    if (leftover) *leftover = rbuf_ ? std::string_view(rbuf_.get()->data() + rpos_, rlen_ - rpos_) : std::string_view();
    rpos_ = rlen_;
}

// ---- the request body for handlers ---------------------------------------------

void HttpConnection::start_body(BodySink sink) {
    Request& r = *req_;
    sink_ = sink;
    r.discard_body = false;
    body_started_ = true;
    body_done_ = false;
    body_paused_ = false;
    body_received_ = 0;
    if (!r.chunked && r.content_length.value_or(0) == 0) {
        body_done_ = true;
        Chain c(r.mem());
        Buf end;
        end.last_buf = true;
        c.push(std::move(end));
        sink_(r, c);
        return;
    }
    body_left_ = r.content_length.value_or(0);
    body_chunked_ = r.chunked;
    if (r.expect_continue && rlen_ == rpos_) {
        // The client waits for this before it sends the body (RFC 9110 10.1.1).
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        Chain c(r.mem());
        c.push(Buf::memory(kContinue));
        queue(c);
        flush();
    }
    pump_body();
}

void HttpConnection::resume_body() {
    if (!body_started_ || body_done_ || !body_paused_) return;
    body_paused_ = false;
    pump_body();
}

void HttpConnection::body_failed(int status, const char* why) {
    Request& r = *req_;
    body_done_ = true;
    r.keepalive = false;
    GH_LOG(Info, "%s, client: %s", why, peer_text_);
    event::worker_loop().cancel(c_.read_timer);
    if (r.header_sent) {
        abort();
        return;
    }
    r.no_error_page = status == 400 || status == 408;
    respond_status(r, status);
    finalize_response(r);
}

void HttpConnection::pump_body() {
    if (in_pump_ || !req_) return;
    in_pump_ = true;
    Request& r = *req_;
    auto& lc = r.loc_conf<LocConf>(http_core_module);
    const uint64_t max_body = *lc.client_max_body_size;
    const size_t cap = std::max<size_t>(*lc.client_body_buffer_size, 1024);
    for (;;) {
        if (state_ != State::Processing || body_done_ || body_paused_) break;
        // Input already here: the rest of the head buffer first, then the
        // current body slab.
        std::string_view avail;
        SlabRef* owner = nullptr;
        size_t* pos = nullptr;
        if (rlen_ > rpos_) {
            avail = {rbuf_.get()->data() + rpos_, rlen_ - rpos_};
            owner = &rbuf_;
            pos = &rpos_;
        } else if (body_slab_ && body_len_ > body_pos_) {
            avail = {body_slab_.get()->data() + body_pos_, body_len_ - body_pos_};
            owner = &body_slab_;
            pos = &body_pos_;
        }
        if (!avail.empty()) {
            Chain piece(r.mem());
            bool last = false;
            auto add = [&](std::string_view d) {
                Buf b = Buf::memory(d);
                b.slab = *owner;
                piece.push(std::move(b));
            };
            if (body_chunked_) {
                if (!chunked_) {
                    ChunkedLimits lim;
                    if (max_body) lim.max_body = max_body;
                    chunked_ = std::make_unique<ChunkedDecoder>(lim);
                }
                size_t used = 0;
                for (;;) {
                    ChunkResult cr = chunked_->decode(avail.substr(used));
                    if (!cr.data.empty()) add(cr.data);
                    used += cr.consumed;
                    if (cr.state == ChunkState::Error) {
                        in_pump_ = false;
                        body_failed(cr.status ? cr.status : 400, cr.status == 413
                                        ? "client intended to send too large chunked body"
                                        : "client sent invalid chunked body");
                        return;
                    }
                    if (cr.state == ChunkState::Done) {
                        last = true;
                        break;
                    }
                    if (cr.consumed == 0 || used == avail.size()) break;
                }
                *pos += used;
                body_received_ += used;
                r.counters.request_length += used;
                if (last && owner == &body_slab_ && body_len_ > body_pos_) {
                    // Bytes after the body: the next pipelined request.
                    stash_.assign(body_slab_.get()->data() + body_pos_, body_len_ - body_pos_);
                    body_pos_ = body_len_;
                }
            } else {
                size_t take = std::min<uint64_t>(body_left_, avail.size());
                add(avail.substr(0, take));
                *pos += take;
                body_left_ -= take;
                body_received_ += take;
                r.counters.request_length += take;
                last = body_left_ == 0;
            }
            if (last) {
                body_done_ = true;
                chunked_.reset();
                if (piece.empty()) piece.push(Buf());
                piece.back().last_buf = true;
                event::worker_loop().cancel(c_.read_timer);
            }
            if (!piece.empty()) {
                bool more = sink_(r, piece);
                if (!more && !body_done_) body_paused_ = true;
            }
            continue;
        }
        // Nothing buffered: read. A slab the consumer still holds is left
        // to it; reading goes on into a fresh one.
        if (!body_slab_ || body_slab_.get()->refs() > 1 || body_slab_.get()->capacity() < cap) {
            body_slab_ = SlabRef::adopt(Slab::make(cap));
        }
        size_t want = cap;
        // Never read past a Content-Length body: what follows is the next
        // request and stays in the socket for the head parser.
        if (!body_chunked_) want = std::min<uint64_t>(want, body_left_);
        body_pos_ = body_len_ = 0;
        event::IoResult io = c_.recv({body_slab_.get()->data(), want});
        if (io.kind == event::IoResult::Ok) {
            body_len_ = io.bytes;
            event::worker_loop().arm(c_.read_timer, *lc.client_body_timeout);
            continue;
        }
        if (io.kind == event::IoResult::Again) {
            event::worker_loop().arm(c_.read_timer, *lc.client_body_timeout);
            break;
        }
        in_pump_ = false;
        body_failed(400, io.kind == event::IoResult::Eof ? "client prematurely closed connection while reading client request body"
                                                          : "recv() failed while reading client request body");
        return;
    }
    in_pump_ = false;
}

void HttpConnection::on_write_timeout() {
    GH_LOG(Info, "client timed out (110: Connection timed out) while sending response to client, client: %s",
           peer_text_);
    if (req_) {
        req_->status = req_->status ? req_->status : 408;
        if (*req_->loc_conf<LocConf>(http_core_module).reset_timedout_connection) {
            // Drop what the kernel still holds for this client at once
            // (a reset), instead of letting it trickle out after close.
            linger l{1, 0};
            setsockopt(c_.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
    }
    close();
}

void HttpConnection::on_read_timeout() {
    if (g_retiring && (state_ == State::Keepalive || (state_ == State::Head && rlen_ == rpos_))) {
        retire_idle();
        return;
    }
    if (state_ == State::Keepalive) {
        close();
        return;
    }
    if (state_ == State::Lingering) {
        close();
        return;
    }
    if (state_ == State::Head && tls_ && !tls_->established()) {
        GH_LOG(Info, "client timed out (110: Connection timed out) while SSL handshaking, client: %s", peer_text_);
        close();
        return;
    }
    if (state_ == State::Head) {
        GH_LOG(Info, "client timed out (110: Connection timed out) while reading client request headers, client: %s",
               peer_text_);
        if (rlen_ > rpos_) {
            // nginx logs a 408 and sends nothing; we send the 408 page,
            // which tells a slow but honest client what happened.
            reject(408, "client timed out", false);
            return;
        }
        close();
        return;
    }
    if (state_ == State::Processing && req_ && body_started_ && !body_done_) {
        body_failed(408, "client timed out (110: Connection timed out) while reading client request body");
        return;
    }
}

// Reads and drops the rest of a request body that nobody consumed, from
// the buffer and then the socket. True when it is all gone; false when
// more must be read (the caller waits) or the connection failed.
bool HttpConnection::discard_body() {
    Request& r = *req_;
    auto drop_buffered = [&]() -> int {
        std::string_view data(rbuf_.get()->data() + rpos_, rlen_ - rpos_);
        if (body_chunked_) {
            if (!chunked_) chunked_ = std::make_unique<ChunkedDecoder>();
            ChunkResult cr = chunked_->decode(data);
            while (cr.state == ChunkState::More && cr.consumed > 0 && cr.consumed < data.size()) {
                rpos_ += cr.consumed;
                r.counters.request_length += cr.consumed;
                data.remove_prefix(cr.consumed);
                cr = chunked_->decode(data);
            }
            rpos_ += cr.consumed;
            r.counters.request_length += cr.consumed;
            if (cr.state == ChunkState::Error) return -1;
            return cr.state == ChunkState::Done ? 1 : 0;
        }
        size_t take = std::min<uint64_t>(body_left_, data.size());
        rpos_ += take;
        body_left_ -= take;
        r.counters.request_length += take;
        return body_left_ == 0 ? 1 : 0;
    };
    for (;;) {
        int st = drop_buffered();
        if (st < 0) return false;
        if (st > 0) {
            r.discard_body = false;
            chunked_.reset();
            return true;
        }
        rpos_ = rlen_ = 0;
        event::IoResult io = c_.recv({rbuf_.get()->data(), rcap_});
        if (io.kind == event::IoResult::Ok) {
            rlen_ = io.bytes;
            continue;
        }
        return false;
    }
}

void HttpConnection::finish_request() {
    if (!req_ || state_ != State::Processing) return;
    Request& r = *req_;
    r.done = true;
    // Log phase.
    if (auto* m = http_main(r.main_confs); m && r.loc_confs)
        for (uint16_t i = m->phase_start[static_cast<int>(Phase::Log)];
             i < m->phase_start[static_cast<int>(Phase::Log) + 1]; ++i)
            m->handlers[i](r);
    bool keep = r.keepalive && !closing_;
    bool linger = false;
    if (body_started_ && !body_done_) {
        // A handler answered before the body was all read (an origin's
        // early error): the rest is not worth reading.
        keep = false;
        linger = true;
    } else if (r.discard_body && r.expect_continue && rlen_ == rpos_) {
        // The client still waits for "100 Continue": it has sent no body,
        // and closing spares it sending one (RFC 9110 10.1.1).
        keep = false;
    } else if (r.discard_body) {
        // Drop what is already here; a large unread rest means closing.
        if (!discard_body()) {
            keep = false;
            linger = true;
        }
    }
    if (r.status == 444) {
        keep = false;
        linger = false;
    } else if (!keep && linger_next_) {
        // A rejected request may be followed by input we never read:
        // closing now could reset the connection before the client reads
        // the error page.
        linger = true;
    } else if (!keep && g_retiring && (rlen_ > rpos_ || !stash_.empty() || input_waiting())) {
        // Retiring: the client pipelined its next request before reading
        // our "Connection: close"; closing over it would reset the
        // connection and could destroy this response. Linger instead.
        linger = true;
    }
    linger_next_ = false;
    // The timeouts of the location that served the request apply to what
    // follows it, as in nginx.
    const LocConf& done_lc = r.loc_conf<LocConf>(http_core_module);
    keepalive_timeout_ = *done_lc.keepalive_timeout;
    lingering_ = {*done_lc.lingering_close, *done_lc.lingering_time, *done_lc.lingering_timeout};
    out_ = nullptr;
    out_head_ = 0;
    out_last_ = false;
    drain_fn_ = nullptr;
    event::worker_loop().unpost(drain_ev_);
    sink_ = nullptr;
    body_started_ = body_done_ = body_paused_ = false;
    body_slab_ = SlabRef();
    body_pos_ = body_len_ = 0;
    req_.reset();
    if (!keep) {
        if (linger) {
            lingering_close();
        } else {
            close();
        }
        return;
    }
    keepalive_or_close();
}

void HttpConnection::keepalive_or_close() {
    head_->parser.reset();
    if (!stash_.empty()) {
        // The next request arrived behind a chunked body: it becomes the
        // start of the head buffer.
        rpos_ = rlen_ = 0;
        size_t need = std::max<size_t>(stash_.size(), *default_srv_->client_header_buffer_size);
        if (!rbuf_ || rcap_ < need) {
            rbuf_ = SlabRef::adopt(Slab::make(need));
            rcap_ = need;
        }
        memcpy(rbuf_.get()->data(), stash_.data(), stash_.size());
        rlen_ = stash_.size();
        stash_.clear();
    }
    if (rlen_ > rpos_) {
        // A pipelined request is already here.
        state_ = State::Head;
        event::worker_loop().arm(c_.read_timer, *default_srv_->client_header_timeout);
        read_head();
        return;
    }
    rpos_ = rlen_ = 0;
    // Idle: give the buffers back, as nginx does; an idle connection costs
    // its slot and this object only.
    rbuf_ = SlabRef();
    rcap_ = 0;
    head_.reset();
    state_ = State::Keepalive;
    // A retiring worker waits for one more request for kRetireGrace only.
    idle_until_ = event::worker_loop().now() + static_cast<event::Msec>(keepalive_timeout_.count());
    event::worker_loop().arm(c_.read_timer, g_retiring ? std::min(keepalive_timeout_, kRetireGrace)
                                                : keepalive_timeout_);
    if (c_.io.readable()) read_head();
}

void HttpConnection::lingering_close() {
    // Stop sending, keep reading for a while: closing with unread input
    // would send a reset that can destroy the response in flight.
    if (lingering_.mode == 0) {
        close();
        return;
    }
    if (tls_) tls_->shutdown();  // close_notify before the FIN
    if (::shutdown(c_.fd(), SHUT_WR) != 0) {
        close();
        return;
    }
    state_ = State::Lingering;
    linger_until_ = event::worker_loop().now() + static_cast<event::Msec>(lingering_.time.count());
    event::worker_loop().arm(c_.read_timer, lingering_.timeout);
    lingering_read();
}

void HttpConnection::lingering_read() {
    char sink[4096];
    for (;;) {
        event::IoResult io = c_.recv({sink, sizeof sink});
        if (io.kind == event::IoResult::Ok) continue;
        if (io.kind == event::IoResult::Again) break;
        close();
        return;
    }
    event::Msec now = event::worker_loop().now();
    if (now >= linger_until_) {
        close();
        return;
    }
    event::Msec left = linger_until_ - now;
    event::Msec t = std::min<event::Msec>(left, static_cast<event::Msec>(lingering_.timeout.count()));
    event::worker_loop().arm(c_.read_timer, std::chrono::milliseconds(t));
}

}  // namespace gatehouse::http

namespace gatehouse::http {

void read_body(Request& r, BodySink sink) { r.conn().start_body(sink); }
void resume_body(Request& r) { r.conn().resume_body(); }
bool body_pending(const Request& r) {
    return const_cast<Request&>(r).conn().body_incomplete() || r.discard_body;
}
size_t output_pending(Request& r) { return r.conn().output_pending(); }
void on_output_drained(Request& r, void (*fn)(Request& r)) { r.conn().set_drain_handler(fn); }

}  // namespace gatehouse::http
