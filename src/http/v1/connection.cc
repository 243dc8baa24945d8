#include "http/v1/connection.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory_resource>

#include "core/addr_text.h"
#include "core/log.h"
#include "core/str.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/conditional.h"
#include "http/log_escape.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/ssl_module.h"
#include "http/subrequest.h"
#include "http/v2/connection.h"
#include "tls/session.h"

namespace gatehouse::http::v1 {

namespace {

Connection* g_conns = nullptr;  // every live Connection of the worker
bool g_retiring = false;        // retire_connections() was called

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

// "HTTP/1.1 <status> <reason>\r\n": the space stays when there is no
// reason phrase (status-line = HTTP-version SP status-code SP
// [ reason-phrase ], RFC 9112 4).
void put_status_line(FixedWriter& o, int status, std::string_view reason) {
    o.lit("HTTP/1.1 ");
    o.num(static_cast<uint64_t>(status));
    o.lit(" ");
    o.put(reason);
    o.lit("\r\n");
}

// Each field as "name: value\r\n", then the empty line that ends a head;
// a field with no name (one a filter removed) is left out.
void put_fields_and_end(FixedWriter& o, std::span<const Header> fields) {
    for (const Header& x : fields) {
        if (x.name.empty()) continue;
        o.put(x.name);
        o.lit(": ");
        o.put(x.value);
        o.lit("\r\n");
    }
    o.lit("\r\n");
}

}  // namespace

void on_accept(void* port, event::Connection& c) {
    // Owned by the connection slot from now on: close_connection() frees it.
    std::make_unique<Connection>(c, *static_cast<const ListenPort*>(port)).release();
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
//    (a_->keepalive is read when the head is written); a response whose head
//    already said keep-alive completes, then the connection is idle;
//  - keeps an idle connection (keep-alive, or accepted with no byte read
//    yet) open for kRetireGrace, or less if its own keepalive or header
//    timeout comes first, or more if it is a keep-alive connection idle
//    for less than its keepalive_min_timeout (until that ends, as nginx):
//    a request arriving meanwhile is served as above.
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
    for (Connection* h = g_conns; h; h = h->next_) {
        using State = Connection::State;
        event::Timer& t = h->c_.read_timer;
        if (h->state_ == State::Keepalive && h->young_ && t.armed()) {
            // keepalive_min_timeout: kept until its timer, which ends it
            // (at the keepalive_timeout at the latest), or for the grace if
            // that is longer.
            const event::Msec end = std::min(h->idle_until_, std::max(grace_end, t.deadline()));
            if (t.deadline() != end) event::worker_loop().arm_at(t, end);
        } else if (h->state_ == State::Keepalive || (h->state_ == State::Head && h->rlen_ == h->rpos_)) {
            if (!t.armed() || t.deadline() > grace_end) event::worker_loop().arm_at(t, grace_end);
        } else if (h->state_ == State::Processing && h->req_ && !h->req_->header_sent) {
            h->a_->keepalive = false;
        }
    }
}

void close_connections() {
    Connection* next = nullptr;
    for (Connection* h = g_conns; h; h = next) {
        next = h->next_;
        h->abort();
    }
}

bool Connection::input_waiting() {
    char b;
    return ::recv(c_.fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

void Connection::retire_idle() {
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
    close_connection();
}

Connection::Connection(event::Connection& c, const ListenPort& port)
    : c_(c),
      port_(port) {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    started_ = event::worker_loop().now();
    gauge_.accepted();
    c_.data = this;
    next_ = g_conns;
    if (g_conns) g_conns->prev_ = this;
    g_conns = this;
    // The default server of the address sets the limits that apply before
    // the Host header is known [nginx].
    if (port_.addrs.size() == 1) addr_ = &port_.addrs[0];
    default_srv_ = servers().default_server;
    pp_wait_ = servers().proxy_protocol;
    h2c_maybe_ = !port_.bind.ssl && http2_enabled(servers(), *default_srv_);
    if (port_.bind.ssl) {
        // The handshake comes first, with the default server's certificate
        // until SNI names another server (ssl_module).
        const tls::Context* ctx = ssl_context(*default_srv_);
        GH_CHECK(ctx != nullptr);  // ssl_module refuses a TLS address without one
        char peer[INET6_ADDRSTRLEN];
        uint16_t port;
        addr_text(reinterpret_cast<const sockaddr*>(&c_.peer), peer, sizeof peer, &port);
        tls_ = std::make_unique<tls::Session>(*ctx, c_.fd(), peer);
        tls_->user = static_cast<Stream*>(this);  // for SNI (ssl_module)
        c_.transport = tls_.get();
    }
    c_.io.on_read = event::Callback::to<&Connection::on_read>(this);
    c_.io.on_write = event::Callback::to<&Connection::on_write>(this);
    c_.read_timer.cb = event::Callback::to<&Connection::on_read_timeout>(this);
    c_.write_timer.cb = event::Callback::to<&Connection::on_write_timeout>(this);
    if (auto s = event::worker_loop().add(c_.io, event::Interest::ReadWrite); !s) {
        GH_LOG(Alert, "%s", s.message().c_str());
        close_connection();
        return;
    }
    event::worker_loop().arm(c_.read_timer, *default_srv_->client_header_timeout);
    idle_until_ = c_.read_timer.deadline();
    // Until a request starts, a full worker may take the slot back.
    c_.reclaim = event::Callback::to<&Connection::close_connection>(this);
    event::worker_connections().set_reusable(c_, true);
}

// TCP_NODELAY when Nagle's algorithm could first hold something back,
// as nginx does ("tcp_nodelay"): before the second write of responses on
// the connection (a keep-alive connection's next response, a response
// written in pieces), on a TLS connection once its handshake is done, for
// a tunnel and for HTTP/2. The first write never waits for Nagle, with
// nothing unacknowledged before it, so a connection that answers once and
// closes (Connection: close) saves the setsockopt() call.
void Connection::nodelay(const LocConf& lc) {
    nodelay_done_ = true;
    if (!*lc.tcp_nodelay || c_.peer.ss_family == AF_UNIX) return;
    int one = 1;
    setsockopt(c_.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

const LocConf& Connection::server_loc_conf() const {
    return *static_cast<const LocConf*>(default_srv_->loc_confs[http_core_module.index]);
}

log::Context Connection::log_context() const {
    // A request's lines go to the error_log of where it is handled, as
    // its own context's do (phases.cc sets it with the location).
    return {c_.number, describe_for_log, this, req_ ? req_->log_ctx.error_log : nullptr};
}

Connection::Active& Connection::active() {
    if (a_) return *a_;
    const SrvConf& s = *default_srv_;
    const size_t large = *s.large_header_buffer_size;
    Limits lim;
    lim.max_start_line = large;
    lim.max_header_line = large;
    lim.max_head = large * *s.large_header_buffers_num;
    lim.max_headers = static_cast<size_t>(*s.max_headers);
    // nginx reads these from the default server too, until Host names
    // another.
    lim.ignore_invalid_names = *s.ignore_invalid_headers;
    lim.underscores = *s.underscores_in_headers;
    a_ = std::make_unique<Active>(lim);
    a_->drain_ev.cb = event::Callback::to<&Connection::on_drained>(this);
    a_->finish_ev.cb = event::Callback::to<&Connection::finish_request>(this);
    a_->flush_ev.cb = event::Callback::to<&Connection::flush>(this);
    return *a_;
}

std::string_view Connection::peer_text() const {
    // Asked by a request, which runs on an active connection, or by one
    // made for a handshake (certificates named by variables): that one
    // makes the connection active a little early.
    Active& a = const_cast<Connection*>(this)->active();
    if (!a.peer_known) {
        uint16_t port;
        addr_text(reinterpret_cast<const sockaddr*>(&c_.peer), a.peer_text, sizeof a.peer_text, &port);
        a.peer_known = true;
    }
    return a.peer_text;
}

uint16_t Connection::peer_port() const {
    if (c_.peer.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&c_.peer)->sin_port);
    if (c_.peer.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&c_.peer)->sin6_port);
    return 0;
}

// nginx's context of a line about the connection: its request's while it
// serves one, else the client and the listening address.
void Connection::describe_for_log(const void* self, FixedWriter& out) {
    auto* h = static_cast<const Connection*>(self);
    if (h->req_) {
        describe_request(*h->req_, out);
        return;
    }
    char peer[INET6_ADDRSTRLEN];
    uint16_t port;
    addr_text(reinterpret_cast<const sockaddr*>(&h->c_.peer), peer, sizeof peer, &port);
    out.put(", client: ");
    out.put(peer);
    out.put(", server: ");
    const conf::Address& a = h->port_.bind.addr;
    if (a.kind == conf::Address::Kind::Inet && a.host == "*") {
        out.put("0.0.0.0:");
        out.num(a.port);
    } else {
        out.put(a.text());
    }
}

Connection::~Connection() {
    // The request (its arena, its module state) goes before the rest of
    // the connection it may still point at.
    req_.reset();
    if (prev_) prev_->next_ = next_;
    else if (g_conns == this) g_conns = next_;
    if (next_) next_->prev_ = prev_;
}

const AddrServers& Connection::servers() {
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

std::string_view Connection::local_text() {
    active();  // asked by a request: made already
    if (!a_->local_known) {
        addr_text(c_.local_address(), a_->local_text, sizeof a_->local_text, &a_->local_port);
        a_->local_known = true;
    }
    return a_->local_text;
}

uint16_t Connection::local_port() {
    local_text();
    return a_->local_port;
}

bool Connection::orphan() {
    if (state_ != State::Processing || !req_ || !req_->outlive_client || req_->done) return false;
    // A body still on its way cannot be left unread on a live request.
    if (req_->has_body && !a_->body_done) return false;
    GH_LOG(Info, "client closed connection; the response goes on for the cache");
    state_ = State::Orphan;
    event::worker_loop().cancel(c_.read_timer);
    event::worker_loop().cancel(c_.write_timer);
    event::worker_loop().unpost(a_->flush_ev);
    // Nothing more goes to or comes from the client; the slot and the
    // buffers the request's views point into stay until it ends.
    ::shutdown(c_.fd(), SHUT_RDWR);
    if (a_->out) a_->out->clear();
    // A producer or a filter that waited for room goes on.
    event::worker_loop().post(a_->drain_ev);
    return true;
}

void Connection::close_connection() {
    if (state_ == State::Closed) return;
    if (orphan()) return;
    state_ = State::Closed;
    closing_ = true;
    gauge_.closed();
    if (a_) {
        event::worker_loop().unpost(a_->drain_ev);
        event::worker_loop().unpost(a_->finish_ev);
        event::worker_loop().unpost(a_->flush_ev);
    }
    // A request cut short still gets its log line.
    if (req_) run_log_phase(*req_);
    if (tls_) tls_->shutdown();  // close_notify, when the handshake was done
    event::worker_connections().close(c_);
    event::worker_loop().defer({[](void* p) { std::unique_ptr<Connection>(static_cast<Connection*>(p)); }, this});
}

void Connection::abort() {
    // The client went away (or the response cannot be finished) before a
    // head was sent: nginx logs 499.
    if (req_ && req_->loc_confs && !req_->header_sent && req_->out.status == 0) req_->out.status = 499;
    close_connection();
}

// Whether the client closed its side (EOF) or reset the connection,
// without taking what it may have sent after the request (pipelining).
bool Connection::client_closed() {
    char b;
    for (;;) {
        ssize_t n = ::recv(c_.fd(), &b, 1, MSG_PEEK);
        if (n == 0) return true;
        if (n > 0) return false;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c_.io.clear_readable();
            return false;
        }
        return true;
    }
}

// ---- reading the head --------------------------------------------------

void Connection::on_read() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    switch (state_) {
        case State::Head:
        case State::Keepalive:
            read_head();
            break;
        case State::Lingering:
            lingering_read();
            break;
        case State::Discarding:
            discard_read();
            break;
        case State::Processing:
            // A body being read goes on; otherwise input waits in the
            // kernel buffer (pipelining), and a client that went away
            // ends the request now if the handler waits for an origin,
            // or if a response of ours is still being written (a slow or
            // rate-limited one), as nginx's test_reading does; else it is
            // found when writing.
            if (a_->body_started && !a_->body_done && !a_->body_paused) pump_body();
            else if (req_ &&
                     (req_->abort_on_client_close || (!req_->upstream && req_->header_sent && http::output_pending(*req_) > 0)) &&
                     client_closed()) {
                GH_LOG(Info, "client prematurely closed connection");
                abort();
            }
            break;
        case State::Orphan:
        case State::Tunnel:
        case State::Closed:
            break;
    }
}

void Connection::read_head() {
    if (pp_wait_) {
        read_proxy_protocol();
        return;
    }
    if (tls_ && !tls_->established()) {
        tls_handshake();
        return;
    }
    // The request waits in the socket until the client certificate's
    // status is known (tls_checked() reads it then).
    if (tls_checking_) return;
    SrvConf& s = *default_srv_;
    const size_t small = *s.client_header_buffer_size;
    const size_t large = *s.large_header_buffer_size;
    const size_t max_head = large * *s.large_header_buffers_num;
    if (!rbuf_) {
        rbuf_ = SlabRef::adopt(Slab::make(small));
        rcap_ = small;
        rpos_ = rlen_ = 0;
    }
    RequestParser* parser = &active().parser;
    for (;;) {
        if (h2c_maybe_ && rlen_ > rpos_) {
            std::string_view first(rbuf_.get()->data() + rpos_, rlen_ - rpos_);
            v2::Preface p = v2::match_preface(first);
            if (p == v2::Preface::Full) {
                hand_over_h2(first);
                return;
            }
            // An HTTP/1 request on an HTTP/2 address is still served [nginx].
            if (p == v2::Preface::No) h2c_maybe_ = false;
        }
        // Parse what is buffered first: pipelined requests need no read.
        if (rlen_ > rpos_ && !h2c_maybe_) {
            // A head is arriving [nginx counts the request from its first byte].
            gauge_.to(stats::ConnGauge::State::Reading);
            std::string_view data(rbuf_.get()->data() + rpos_, rlen_ - rpos_);
            ParseResult pr = parser->parse(data);
            if (pr.state == ParseState::Done) {
                start_request(pr.consumed);
                return;
            }
            if (pr.state == ParseState::Error) {
                // The HTTP/2 preface where HTTP/2 is not looked for (a TLS
                // port, an address without it) is a bad request, as nginx
                // answers it, rather than a version to refuse: the client
                // must not take it for an HTTP/1 server's word on HTTP/2.
                if (pr.status == 505 && data.starts_with("PRI * HTTP/2.0\r\n")) {
                    reject(400, "client sent HTTP/2 preface where HTTP/2 is not enabled");
                    return;
                }
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
                parser->reset();
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
                // A head in progress is reusable, as on a new connection:
                // keepalive_min_timeout keeps idle clients only.
                if (young_) {
                    young_ = false;
                    event::worker_connections().set_reusable(c_, true);
                }
            }
            rlen_ += io.bytes;
            continue;
        }
        if (io.kind == event::IoResult::Again) {
            // Still idle: the readiness was left over from the last
            // request (TLS reports a socket readable until a read finds
            // no record). Hold nothing while waiting.
            if (state_ == State::Keepalive && rlen_ == 0) {
                rbuf_ = SlabRef();
                rcap_ = 0;
                a_.reset();
            }
            return;
        }
        if (io.kind == event::IoResult::Eof) {
            if (rlen_ > rpos_)
                GH_LOG(Info, "client %s closed connection while reading client request headers", peer_text().data());
            close_connection();
            return;
        }
        if (io.err != ECONNRESET) GH_LOG_ERRNO(Info, io.err, "recv() failed while reading client request headers");
        close_connection();
        return;
    }
}

void Connection::read_proxy_protocol() {
    if (!pp_) pp_ = std::make_unique<Proxy>();
    Proxy& pp = *pp_;
    if (!pp.parser) {
        const size_t cap = std::max<size_t>(kProxyV1MaxLine, *default_srv_->client_header_buffer_size);
        pp.parser = std::make_unique<ProxyParser>(cap);
        pp.peek.resize(cap);
    }
    // Peeked, not read: the header's end is known only once parsed, and
    // whatever follows it belongs to TLS (which reads the socket itself)
    // or to the request. The parser is given every byte so far each time;
    // new bytes raise a new edge, so waiting costs no spinning.
    ssize_t n;
    do {
        n = ::recv(c_.fd(), pp.peek.data(), pp.peek.size(), MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c_.io.clear_readable();
        return;
    }
    if (n < 0) {
        if (errno != ECONNRESET) GH_LOG_ERRNO(Info, errno, "recv() failed while reading PROXY protocol");
        close_connection();
        return;
    }
    if (n == 0) {
        GH_LOG(Info, "client closed connection while reading PROXY protocol");
        close_connection();
        return;
    }
    const std::string_view peeked(pp.peek.data(), static_cast<size_t>(n));
    ProxyParseResult pr = pp.parser->parse(peeked);
    if (pr.state == ProxyParseState::NeedMore) {
        c_.io.clear_readable();
        return;
    }
    if (pr.state == ProxyParseState::Error) {
        if (pr.show_bytes) {
            // As nginx prints them, but one line of printable ASCII.
            char esc[4 * kProxyV1MaxLine];
            const char* end = escape_to(LogEscape::Default, peeked.substr(0, kProxyV1MaxLine), esc);
            GH_LOG(Error, "%s: \"%.*s\" while reading PROXY protocol", pr.reason, static_cast<int>(end - esc), esc);
        } else if (pr.value >= 0) {
            GH_LOG(Error, "%s: %d while reading PROXY protocol", pr.reason, pr.value);
        } else {
            GH_LOG(Error, "%s while reading PROXY protocol", pr.reason);
        }
        drop_peeked();
        close_connection();
        return;
    }
    pp.header = std::make_unique<ProxyHeader>(pp.parser->header());
    pp.tlvs.assign(pp.header->tlvs);
    pp.header->tlvs = pp.tlvs;
    // Take the header's bytes, and only them, off the socket.
    size_t left = pr.consumed;
    while (left > 0) {
        ssize_t got = ::recv(c_.fd(), pp.peek.data(), left, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            close_connection();
            return;
        }
        left -= static_cast<size_t>(got);
    }
    pp_wait_ = false;
    pp.parser.reset();
    pp.peek = std::string();
    read_head();
}

void Connection::drop_peeked() {
    // What was only peeked at is still unread: closing over it would
    // reset the connection. Read it, as nginx has when it closes, so the
    // client sees an orderly close.
    if (!pp_ || pp_->peek.empty()) return;
    Proxy& pp = *pp_;
    ssize_t n;
    do {
        n = ::recv(c_.fd(), pp.peek.data(), pp.peek.size(), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
}

void Connection::tls_handshake() {
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
            close_connection();
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
            stats::tls_handshake(true, tls_->reused());
            if (!nodelay_done_) nodelay(server_loc_conf());
            // Before either protocol sees a request, so that one wait
            // covers HTTP/1 and HTTP/2 alike; the read timer
            // (client_header_timeout) bounds it as it bounds the handshake.
            if (!ssl_after_handshake(*tls_, event::Callback::to<&Connection::tls_checked>(this))) {
                tls_checking_ = true;
                return;
            }
            tls_ready();
            return;
        case tls::Session::Step::Again:
            return;
        case tls::Session::Step::Fail:
            stats::tls_handshake(false, false);
            GH_LOG(Info, "%s while SSL handshaking", tls_->error().c_str());
            close_connection();
            return;
    }
}

void Connection::tls_checked() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    tls_checking_ = false;
    tls_ready();
}

void Connection::tls_ready() {
    // ALPN offered "h2" only where the server speaks it (ssl_module).
    if (tls_->alpn() == "h2") {
        hand_over_h2({});
        return;
    }
    read_head();
}

void Connection::hand_over_h2(std::string_view preread) {
    if (!nodelay_done_) nodelay(server_loc_conf());
    event::worker_loop().cancel(c_.read_timer);
    event::worker_loop().cancel(c_.write_timer);
    v2::Handover h;
    h.c = &c_;
    h.port = &port_;
    h.addr = &servers();
    h.tls = std::move(tls_);
    if (pp_) {
        h.pp = std::move(pp_->header);
        h.pp_tlvs = std::move(pp_->tlvs);
    }
    h.preread = preread;  // copied by the new owner
    h.started = started_;
    h.gauge = &gauge_;
    v2::take_over(std::move(h));
    // The slot, its fd and its registration are the new owner's now.
    state_ = State::Closed;
    closing_ = true;
    a_.reset();  // unposts its events
    event::worker_loop().defer({[](void* p) { std::unique_ptr<Connection>(static_cast<Connection*>(p)); }, this});
}

void Connection::reject(int status, std::string_view reason, const char* where) {
    // The head could not be parsed: answer with the status page and close,
    // lingering so the client reads the answer rather than a reset.
    Request& r = new_request();
    r.counters.request_length = rlen_ - rpos_;
    // The request line, when it was read, is still useful in the log.
    std::string_view data(rbuf_ ? rbuf_.get()->data() + rpos_ : nullptr, rlen_ - rpos_);
    size_t eol = data.find('\n');
    if (eol != std::string_view::npos) {
        std::string_view line = data.substr(0, eol);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        r.request_line = line;
    }
    // Logged with the request made: the line names its server and request.
    if (where) GH_LOG(Info, "%.*s%s", static_cast<int>(reason.size()), reason.data(), where);
    a_->linger_next = true;
    reject_request(r, status, reason);
}

// ---- running a request ---------------------------------------------------

// A request on the default server of the address; the Host header may
// choose another server later.
Request& Connection::new_request() {
    event::worker_connections().set_reusable(c_, false);
    event::worker_loop().cancel(c_.read_timer);
    state_ = State::Processing;
    gauge_.to(stats::ConnGauge::State::Writing);
    active();
    a_->keepalive = false;
    a_->expect_continue = false;
    a_->chunked_out = false;
    a_->trailers = false;
    a_->head_only = false;
    a_->out = nullptr;
    a_->out_last = false;
    a_->body_left = 0;
    a_->body_chunked = false;
    req_ = std::make_unique<Request>(*this, port_.main_confs, servers().default_server);
    return *req_;
}

void Connection::start_request(size_t head_len) {
    const RequestHead& h = a_->parser.head();
    if (h.framing.chunked && rlen_ > rpos_ + head_len) {
        // A chunked body whose framing is already broken in what arrived
        // with the head is the request's error: 400 and close, whatever
        // the location would have done. nginx finds it the same way when
        // it discards the body before answering ("return", a file) or
        // reads it (proxy_pass); answering the location's response and
        // then closing would tell the client its body was taken.
        ChunkedDecoder check;
        std::string_view rest(rbuf_.get()->data() + rpos_ + head_len, rlen_ - rpos_ - head_len);
        ChunkResult cr;
        do {
            cr = check.decode(rest);
            rest.remove_prefix(cr.consumed);
        } while (cr.state == ChunkState::More && cr.consumed > 0 && !rest.empty());
        if (cr.state == ChunkState::Error && cr.status == 400) {
            reject(400, cr.reason, " while reading client request body");
            return;
        }
    }
    Request& r = new_request();
    r.in = h;
    r.headers.reset(h.headers);
    r.counters.request_length = head_len;
    r.pipelined = std::exchange(a_->pipelined, false);
    ++c_.requests;

    std::string_view head(rbuf_.get()->data() + rpos_, head_len);
    rpos_ += head_len;
    r.method = h.method_name;
    // HTTP/1.2..1.9 are served as 1.1 (RFC 9110 2.5).
    r.http_version = h.version_minor == 0 ? 10 : 11;
    r.head_only = h.method == Method::Head;
    a_->expect_continue = h.expect_100_continue;
    r.content_length = h.framing.content_length;
    r.has_body = h.framing.chunked || r.content_length.value_or(0) > 0;
    if (r.has_body) {
        a_->body_left = r.content_length.value_or(0);
        a_->body_chunked = h.framing.chunked;
    }
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
    // "GET http://host HTTP/1.1" and "http://host?q" ask for "/"
    // (RFC 9112 3.2.2, RFC 3986 6.2.3).
    if (h.form == TargetForm::Absolute && (h.path.empty() || h.path[0] == '?')) {
        std::string u = "/";
        u += h.path;
        r.unparsed_uri = r.arena().dup(u);
    }
    if (h.ignored_fields > 0)
        GH_LOG(Info, "client sent invalid header line: \"%.*s\"%s",
               static_cast<int>(std::min<size_t>(h.first_ignored.size(), 256)), h.first_ignored.data(),
               h.ignored_fields > 1 ? " and more" : "");

    // Keepalive as the client asked; a retiring worker closes after this
    // response. The location's limits apply when the head is written.
    a_->keepalive = h.keep_alive() && !g_retiring;
    // The request's own context: the callback's copy was taken before
    // there was a request, and the location's "error_log", which
    // start_request() finds, must take this first pass's lines too (the
    // request is freed from a posted event, never under this scope).
    log::Scope scope(&r.log_ctx);
    http::start_request(r);
}

// ---- output ----------------------------------------------------------------

// "HTTP/1.1 103 Early Hints" and the fields, queued ahead of the head and
// written now: the point of it is to arrive before the final answer.
Flow Connection::send_interim(Request& r, int status, std::span<const Header> fields) {
    if (state_ == State::Orphan) return Flow::Pass;
    if (state_ != State::Processing) return Flow::Fail;
    if (r.http_version < 11) return Flow::Pass;  // RFC 9110 15.2
    std::string_view reason = reason_phrase(status);
    size_t cap = 32 + reason.size();
    for (const Header& x : fields) cap += x.name.size() + x.value.size() + 4;
    char* b = static_cast<char*>(r.arena().alloc(cap, 1));
    FixedWriter o{b, b + cap};
    put_status_line(o, status, reason);
    put_fields_and_end(o, fields);
    if (!a_->out) a_->out = r.arena().make<event::ChainWriter>(r.mem());
    a_->out->push(Buf::memory({b, static_cast<size_t>(o.p - b)}));
    flush();
    return Flow::Pass;
}

Flow Connection::send_head(Request& r, const ResponseHead& h) {
    if (state_ == State::Orphan) return Flow::Pass;
    if (state_ != State::Processing) return Flow::Fail;
    auto& lc = r.loc_conf<LocConf>(http_core_module);
    const bool no_body = h.status == 304 || h.status == 204 || h.status < 200;
    a_->head_only = r.head_only;
    a_->chunked_out = false;
    // Trailers to come need chunked framing, even for a known length
    // [nginx]; HTTP/1.0 gets neither.
    bool length = h.content_length.has_value();
    if (h.expect_trailers && r.http_version >= 11 && !no_body && !r.head_only && *lc.chunked_transfer_encoding)
        length = false;
    a_->trailers = !length && h.expect_trailers && r.http_version >= 11;
    if (!length && !no_body && !r.head_only) {
        if (r.http_version >= 11 && *lc.chunked_transfer_encoding)
            a_->chunked_out = true;
        else
            a_->keepalive = false;  // the end of the body is the end of the connection
    }
    if (!h.content_length && !no_body && r.head_only && r.http_version < 11) a_->keepalive = false;
    // The limits of the location that answers [nginx
    // ngx_http_update_location_config]; a retiring worker closes.
    if (a_->keepalive && (c_.requests >= *lc.keepalive_requests || lc.keepalive_timeout->count() == 0 || g_retiring))
        a_->keepalive = false;
    if (a_->keepalive && event::worker_loop().now() - started_ > static_cast<event::Msec>(lc.keepalive_time->count()))
        a_->keepalive = false;
    if (a_->keepalive && keepalive_disabled(r, lc)) a_->keepalive = false;
    // "tcp_nopush": with sendfile, the head and the file's first bytes go
    // in full packets (TCP_CORK) until the response is out [nginx].
    if (*lc.tcp_nopush && r.use_sendfile && !tls_ && !a_->corked && c_.peer.ss_family != AF_UNIX) {
        int one = 1;
        if (::setsockopt(c_.fd(), IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0) a_->corked = true;
    }

    std::string_view reason = h.reason.empty() ? reason_phrase(h.status) : h.reason;
    std::string_view location = h.sent_location;
    size_t cap = 512 + reason.size() + h.content_type.size() + h.charset.size() + location.size() + h.etag.size();
    for (const Header& x : h.headers) cap += x.name.size() + x.value.size() + 4;
    char* b = static_cast<char*>(r.arena().alloc(cap, 1));
    FixedWriter o{b, b + cap};
    put_status_line(o, h.status, reason);
    // A proxied response may carry the origin's own ("proxy_pass_header
    // Server"): it replaces ours, as in nginx, and so does its absence.
    auto has = [&](std::string_view name) {
        for (const Header& x : h.headers)
            if (iequals(x.name, name)) return true;
        return false;
    };
    if (!h.origin_server && !has("Server")) {
        o.lit("Server: ");
        o.put(server_token(r));
        o.lit("\r\n");
    }
    if (!h.origin_date && !has("Date")) {
        o.lit("Date: ");
        o.put(http_date_now());
        o.lit("\r\n");
    }
    if (!h.content_type.empty()) {
        o.lit("Content-Type: ");
        o.put(h.content_type);
        if (!h.charset.empty()) {
            o.lit("; charset=");
            o.put(h.charset);
        }
        o.lit("\r\n");
    }
    if (h.content_length && length) {
        o.lit("Content-Length: ");
        o.num(*h.content_length);
        o.lit("\r\n");
    }
    if (h.last_modified >= 0) {
        char d[kHttpDateMax];
        o.lit("Last-Modified: ");
        o.put(format_http_date(h.last_modified, d));
        o.lit("\r\n");
    }
    if (a_->chunked_out) o.lit("Transfer-Encoding: chunked\r\n");
    if (!location.empty()) {
        o.lit("Location: ");
        o.put(location);
        o.lit("\r\n");
    }
    // 101: the connection becomes what the Upgrade field says (RFC 9110
    // 15.2.2); the proxy passes that field. It serves no other request.
    r.sent_framing.chunked = a_->chunked_out;
    if (h.status == 101) {
        a_->keepalive = false;
        o.lit("Connection: upgrade\r\n");
    } else {
        if (a_->keepalive) o.lit("Connection: keep-alive\r\n");
        else o.lit("Connection: close\r\n");
        r.sent_framing.keepalive = a_->keepalive;
        const auto header_timeout = std::chrono::duration_cast<std::chrono::seconds>(*lc.keepalive_header);
        if (a_->keepalive && header_timeout.count() > 0) {
            r.sent_framing.keepalive_timeout = static_cast<uint32_t>(header_timeout.count());
            o.lit("Keep-Alive: timeout=");
            o.num(static_cast<uint64_t>(header_timeout.count()));
            o.lit("\r\n");
        }
    }
    if (!h.etag.empty()) {
        o.lit("ETag: ");
        o.put(h.etag);
        o.lit("\r\n");
    }
    if (h.accept_ranges) o.lit("Accept-Ranges: bytes\r\n");
    put_fields_and_end(o, h.headers);
    if (!a_->out) a_->out = r.arena().make<event::ChainWriter>(r.mem());
    a_->out->push(Buf::memory({b, static_cast<size_t>(o.p - b)}));
    return Flow::Pass;
}

Flow Connection::send_body(Request& r, Chain& in) {
    if (state_ == State::Orphan) {
        if (in.last()) event::worker_loop().post(a_->finish_ev);
        in.clear();
        return Flow::Pass;
    }
    if (state_ != State::Processing) return Flow::Fail;
    if (!a_->out) a_->out = r.arena().make<event::ChainWriter>(r.mem());
    const bool last = in.last();
    const uint64_t bytes = in.bytes();
    if (a_->chunked_out && !a_->head_only) {
        if (bytes > 0) {
            // In a slab of its own, freed once sent: the request arena,
            // freed only with the request, must not grow with the length
            // of a stream.
            SlabRef slab = SlabRef::adopt(Slab::make(kMaxChunkHeader));
            char* hdr = slab.get()->data();
            size_t n = write_chunk_header(bytes, std::span<char, kMaxChunkHeader>(hdr, kMaxChunkHeader));
            Buf hb = Buf::memory({hdr, n});
            hb.slab = std::move(slab);
            a_->out->push(std::move(hb));
            a_->out->push(in);
            a_->out->push(Buf::memory(kChunkEnd));
        }
        if (last) {
            if (a_->trailers && !r.out.trailers.empty()) {
                // The last chunk with the trailer fields (RFC 9112 7.1.2).
                size_t cap = 8;
                for (const Header& t : r.out.trailers) cap += t.name.size() + t.value.size() + 4;
                char* b = static_cast<char*>(r.arena().alloc(cap, 1));
                FixedWriter w{b, b + cap};
                w.put("0\r\n");
                for (const Header& t : r.out.trailers) {
                    w.put(t.name);
                    w.put(": ");
                    w.put(t.value);
                    w.put("\r\n");
                }
                w.put("\r\n");
                a_->out->push(Buf::memory({b, static_cast<size_t>(w.p - b)}));
            } else {
                a_->out->push(Buf::memory(kLastChunk));
            }
        }
    } else {
        a_->out->push(in);
    }
    in.clear();
    if (last) a_->out_last = true;
    flush();
    return closing_ ? Flow::Fail : Flow::Pass;
}

void Connection::write_failed(const event::ChainWriter::Result& w) {
    if (w.err == 0) {
        // The file shrank under us: the promised length cannot be sent.
        GH_LOG(Error, "file was truncated while sending response");
    } else if (std::string_view(w.call) == "pread()") {
        GH_LOG_ERRNO(Crit, w.err, "pread() failed while sending response to client");
    } else if (w.err == EPIPE || w.err == ECONNRESET) {
        // The request's client: the address realip put there, as nginx's
        // connection address is while the request lasts.
        std::string_view who = req_ ? req_->remote_addr() : peer_text();
        GH_LOG(Info, "client %.*s closed connection while sending response", static_cast<int>(who.size()), who.data());
    } else {
        GH_LOG_ERRNO(Info, w.err, "%s failed while sending response to client", w.call);
    }
    abort();
}

void Connection::flush() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);  // also a_->flush_ev's callback
    if (state_ != State::Processing || !req_ || !a_->out) return;
    Request& r = *req_;
    const auto& lc = r.loc_conf<LocConf>(http_core_module);
    event::ChainWriter::Limits limits;
    limits.sendfile_max_chunk = *lc.sendfile_max_chunk;
    limits.file_piece = static_cast<size_t>(*lc.output_buffers_size);
    if (!nodelay_done_ && wrote_ && !a_->out->empty()) nodelay(lc);
    event::ChainWriter::Result w = a_->out->write(c_, r.use_sendfile, limits);
    if (w.bytes) wrote_ = true;
    r.counters.bytes_sent += w.bytes;
    if (w.kind == event::ChainWriter::Result::Error) {
        write_failed(w);
        return;
    }
    if (w.kind == event::ChainWriter::Result::Yield) {
        event::worker_loop().arm(c_.write_timer, *lc.send_timeout);
        event::worker_loop().post_after_batch(a_->flush_ev);
        return;
    }
    if (w.kind == event::ChainWriter::Result::Again) {
        event::worker_loop().arm(c_.write_timer, *lc.send_timeout);
        return;
    }
    event::worker_loop().cancel(c_.write_timer);
    if (a_->out_last) {
        uncork();
        event::worker_loop().post(a_->finish_ev);
        return;
    }
    // Everything written: whoever waits for room (a held filter, a
    // producer) goes on from the loop.
    if (r.output.drain_fn || r.output.held) event::worker_loop().post(a_->drain_ev);
}

// The response is out: what TCP_CORK held goes now.
void Connection::uncork() {
    if (!a_->corked) return;
    int zero = 0;
    ::setsockopt(c_.fd(), IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    a_->corked = false;
}

void Connection::on_write() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    if (tls_ && !tls_->established()) {
        if (state_ == State::Head) tls_handshake();
        return;
    }
    // OpenSSL had to write before it could read on (a TLS 1.3 key update).
    if (tls_ && tls_->read_wants_write()) on_read();
    if (state_ == State::Processing && a_->out && !a_->out->empty()) flush();
}

void Connection::on_drained() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    if ((state_ == State::Processing || state_ == State::Orphan) && req_ && output_pending() == 0)
        output_drained(*req_);
}

size_t Connection::output_pending() const {
    return a_ && a_->out && state_ != State::Orphan ? a_->out->pending() : 0;
}

event::Duplex& Connection::open_tunnel(event::Callback on_ready, std::string_view* leftover) {
    state_ = State::Tunnel;
    if (!nodelay_done_) nodelay(req_ ? req_->loc_conf<LocConf>(http_core_module) : server_loc_conf());
    event::worker_loop().cancel(c_.read_timer);
    event::worker_loop().cancel(c_.write_timer);
    a_->tunnel_ready = on_ready;
    c_.io.on_read = on_ready;
    c_.io.on_write = on_ready;
    if (leftover)
        *leftover = rbuf_ ? std::string_view(rbuf_.get()->data() + rpos_, rlen_ - rpos_) : std::string_view();
    rpos_ = rlen_;
    return *this;
}

event::IoResult Connection::send(std::span<const char> buf) { return count_sent(c_.send(buf)); }

event::IoResult Connection::splice_out(int rfd, size_t n) { return count_sent(c_.splice_out(rfd, n, false)); }

event::IoResult Connection::count_sent(event::IoResult io) {
    if (io.kind == event::IoResult::Ok && req_) {
        req_->counters.bytes_sent += io.bytes;
        req_->counters.body_bytes_sent += io.bytes;
    }
    return io;
}

void Connection::shutdown_send() { ::shutdown(c_.fd(), SHUT_WR); }

// ---- the request body for handlers ---------------------------------------------

bool Connection::read_body(Request& r, BodySink sink) {
    if (a_->body_started) return false;  // an earlier reader took it
    a_->sink = sink;
    a_->body_started = true;
    a_->body_done = false;
    a_->body_paused = false;
    if (a_->expect_continue && rlen_ == rpos_) {
        // The client waits for this before it sends the body (RFC 9110
        // 10.1.1); sent for "Content-Length: 0" too, as nginx does, for a
        // client that waits whatever the length.
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!a_->out) a_->out = r.arena().make<event::ChainWriter>(r.mem());
        a_->out->push(Buf::memory(kContinue));
        flush();
        if (closing_) return true;
    }
    if (!r.has_body) {
        a_->body_done = true;
        Chain c(r.mem());
        Buf end;
        end.last_buf = true;
        c.push(std::move(end));
        a_->sink(r, c);
        return true;
    }
    a_->body_left = r.content_length.value_or(0);
    a_->body_chunked = !r.content_length;
    pump_body();
    return true;
}

void Connection::resume_body() {
    if (!a_ || !a_->body_started || a_->body_done || !a_->body_paused) return;
    a_->body_paused = false;
    pump_body();
}

void Connection::body_failed(int status, const char* why) {
    Request& r = *req_;
    a_->body_done = true;
    a_->keepalive = false;
    GH_LOG(Info, "%s", why);
    event::worker_loop().cancel(c_.read_timer);
    if (r.header_sent) {
        abort();
        return;
    }
    r.no_error_page = status == 400 || status == 408;
    continue_request(r, respond_status(r, status));
}

// Hands the body to the sink as it arrives, one piece per buffer of input.
// A chunked body is decoded in place: the data of every chunk in a buffer
// is moved to the front of what the buffer held (the framing between
// them is dropped), so a piece is one Buf however small the chunks are,
// and memory stays that of the buffers (a million one-byte chunks cost
// what one megabyte of body does).
void Connection::pump_body() {
    if (a_->in_pump || !req_) return;
    a_->in_pump = true;
    Request& r = *req_;
    auto& lc = r.loc_conf<LocConf>(http_core_module);
    const uint64_t max_body = *lc.client_max_body_size;
    const size_t cap = std::max<size_t>(*lc.client_body_buffer_size, 1024);
    for (;;) {
        if (state_ != State::Processing || a_->body_done) break;
        if (a_->body_paused) {
            // The reader is busy (its origin does not read): nothing is
            // asked of the client meanwhile, so client_body_timeout does
            // not run; it starts again with the next read.
            event::worker_loop().cancel(c_.read_timer);
            break;
        }
        // Input already here: the rest of the head buffer first, then the
        // current body slab.
        char* data = nullptr;
        size_t avail = 0;
        SlabRef* owner = nullptr;
        size_t* pos = nullptr;
        if (rlen_ > rpos_) {
            data = rbuf_.get()->data() + rpos_;
            avail = rlen_ - rpos_;
            owner = &rbuf_;
            pos = &rpos_;
        } else if (a_->body_slab && a_->body_len > a_->body_pos) {
            data = a_->body_slab.get()->data() + a_->body_pos;
            avail = a_->body_len - a_->body_pos;
            owner = &a_->body_slab;
            pos = &a_->body_pos;
        }
        if (avail > 0) {
            // The piece lives on this frame: the sink moves out the Bufs
            // it keeps, and the request arena does not grow per piece.
            alignas(std::max_align_t) char scratch[256];
            std::pmr::monotonic_buffer_resource mem(scratch, sizeof scratch);
            Chain piece(&mem);
            bool last = false;
            size_t body_bytes = 0;
            if (a_->body_chunked) {
                if (!a_->chunked) {
                    ChunkedLimits lim;
                    if (max_body) lim.max_body = max_body;
                    a_->chunked = std::make_unique<ChunkedDecoder>(lim);
                }
                size_t used = 0;
                for (;;) {
                    ChunkResult cr = a_->chunked->decode({data + used, avail - used});
                    if (!cr.data.empty()) {
                        // Never forward: the write offset trails the read
                        // offset by the framing dropped so far.
                        std::memmove(data + body_bytes, cr.data.data(), cr.data.size());
                        body_bytes += cr.data.size();
                    }
                    used += cr.consumed;
                    if (cr.state == ChunkState::Error) {
                        a_->in_pump = false;
                        body_failed(cr.status ? cr.status : 400, cr.status == 413
                                                                     ? "client intended to send too large chunked body"
                                                                     : "client sent invalid chunked body");
                        return;
                    }
                    if (cr.state == ChunkState::Done) {
                        last = true;
                        break;
                    }
                    if (cr.consumed == 0 || used == avail) break;
                }
                *pos += used;
                r.counters.request_length += used;
                if (last && owner == &a_->body_slab && a_->body_len > a_->body_pos) {
                    // Bytes after the body: the next pipelined request.
                    a_->stash.assign(a_->body_slab.get()->data() + a_->body_pos, a_->body_len - a_->body_pos);
                    a_->body_pos = a_->body_len;
                }
            } else {
                body_bytes = static_cast<size_t>(std::min<uint64_t>(a_->body_left, avail));
                *pos += body_bytes;
                a_->body_left -= body_bytes;
                r.counters.request_length += body_bytes;
                last = a_->body_left == 0;
            }
            if (body_bytes > 0) {
                Buf b = Buf::memory({data, body_bytes});
                b.slab = *owner;
                piece.push(std::move(b));
            }
            if (last) {
                a_->body_done = true;
                a_->chunked.reset();
                if (piece.empty()) piece.push(Buf());
                piece.back().last_buf = true;
                event::worker_loop().cancel(c_.read_timer);
            }
            if (!piece.empty()) {
                bool more = a_->sink(r, piece);
                if (!more && !a_->body_done) a_->body_paused = true;
            }
            continue;
        }
        // Nothing buffered: splice into the reader's pipe when it takes
        // pipe pieces, else read.
        const char* failed = nullptr;
        const Spliced sp = splice_body(r, lc, &failed);
        // A piece went, or the reader still holds the last one (paused:
        // the loop's top stops, as for memory pieces).
        if (sp == Spliced::Piece || a_->body_paused) continue;
        if (sp == Spliced::Wait) break;
        if (sp == Spliced::Failed) {
            a_->in_pump = false;
            body_failed(400, failed);
            return;
        }
        // A slab the consumer still holds is left to it; reading goes on
        // into a fresh one.
        if (!a_->body_slab || a_->body_slab.get()->refs() > 1 || a_->body_slab.get()->capacity() < cap) {
            a_->body_slab = SlabRef::adopt(Slab::make(cap));
        }
        size_t want = cap;
        // Never read past a Content-Length body: what follows is the next
        // request and stays in the socket for the head parser.
        if (!a_->body_chunked) want = static_cast<size_t>(std::min<uint64_t>(want, a_->body_left));
        a_->body_pos = a_->body_len = 0;
        event::IoResult io = c_.recv({a_->body_slab.get()->data(), want});
        if (io.kind == event::IoResult::Ok) {
            a_->body_len = io.bytes;
            event::worker_loop().arm(c_.read_timer, *lc.client_body_timeout);
            continue;
        }
        if (io.kind == event::IoResult::Again) {
            event::worker_loop().arm(c_.read_timer, *lc.client_body_timeout);
            break;
        }
        a_->in_pump = false;
        body_failed(400, io.kind == event::IoResult::Eof
                             ? "client prematurely closed connection while reading client request body"
                             : "recv() failed while reading client request body");
        return;
    }
    a_->in_pump = false;
}

// One splice() of a Content-Length body from the socket into the pipe,
// handed to the reader as a pipe piece (body.h), when the reader takes
// them and the pipe is empty (event/pipe.h: a filler adds only to an
// empty pipe). Memory: the caller reads into memory instead (no pipe to
// be had, a socket that cannot splice, a reader that left). Wait: for
// the socket, or (the body paused) for the reader to take the last
// piece; it resumes the body then. Failed: `why` says how.
Connection::Spliced Connection::splice_body(Request& r, const LocConf& lc, const char** why) {
    const bool wanted = r.body_kept && r.body_kept->sink_takes_pipes && !a_->body_chunked && a_->body_left > 0 &&
                        !tls_ && !c_.transport && !a_->body_pipe_refused;
    // A reader that left (an internal redirect) gets the rest from
    // memory, dropped. Its pipe stays taken until the request ends: the
    // writer that took its pieces may still name it.
    if (!wanted) return Spliced::Memory;
    if (!a_->body_pipe && !(a_->body_pipe = event::pipes::take())) return Spliced::Memory;
    if (a_->body_pipe->unsent > 0) {
        a_->body_paused = true;
        return Spliced::Wait;
    }
    const size_t want = static_cast<size_t>(std::min<uint64_t>(a_->body_left, event::pipes::kPiece));
    event::IoResult io = c_.splice_in(a_->body_pipe->wfd, want);
    if (event::pipes::refused(io)) {
        a_->body_pipe_refused = true;
        event::pipes::give(std::exchange(a_->body_pipe, nullptr));
        return Spliced::Memory;
    }
    if (io.kind == event::IoResult::Again) {
        event::worker_loop().arm(c_.read_timer, *lc.client_body_timeout);
        return Spliced::Wait;
    }
    if (io.kind != event::IoResult::Ok) {
        *why = io.kind == event::IoResult::Eof ? "client prematurely closed connection while reading client request body"
                                                : "splice() failed while reading client request body";
        return Spliced::Failed;
    }
    a_->body_pipe->unsent += io.bytes;
    a_->body_left -= io.bytes;
    r.counters.request_length += io.bytes;
    alignas(std::max_align_t) char scratch[128];
    std::pmr::monotonic_buffer_resource mem(scratch, sizeof scratch);
    Chain piece(&mem);
    piece.push(Buf::pipe_piece(a_->body_pipe->rfd, io.bytes));
    if (a_->body_left == 0) {
        a_->body_done = true;
        piece.back().last_buf = true;
        event::worker_loop().cancel(c_.read_timer);
    } else {
        event::worker_loop().arm(c_.read_timer, *lc.client_body_timeout);
    }
    if (!a_->sink(r, piece) && !a_->body_done) a_->body_paused = true;
    return Spliced::Piece;
}

void Connection::on_write_timeout() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    GH_LOG(Info, "client timed out (110: Connection timed out) while sending response to client");
    if (req_) {
        if (req_->out.status == 0) req_->out.status = 408;
        if (req_->loc_confs && *req_->loc_conf<LocConf>(http_core_module).reset_timedout_connection) {
            // Drop what the kernel still holds for this client at once
            // (a reset), instead of letting it trickle out after close.
            linger l{1, 0};
            setsockopt(c_.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
    }
    close_connection();
}

void Connection::on_read_timeout() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    if (state_ == State::Keepalive && young_) {
        // keepalive_min_timeout is over: an ordinary idle connection for
        // the rest of its keepalive_timeout, if any. A retiring worker
        // closes it now (retire_idle), its grace being over too.
        young_ = false;
        if (!g_retiring && event::worker_loop().now() < idle_until_) {
            event::worker_connections().set_reusable(c_, true);
            event::worker_loop().arm_at(c_.read_timer, idle_until_);
            return;
        }
    }
    if (g_retiring && (state_ == State::Keepalive || (state_ == State::Head && rlen_ == rpos_))) {
        retire_idle();
        return;
    }
    if (state_ == State::Keepalive || state_ == State::Lingering || state_ == State::Discarding) {
        close_connection();
        return;
    }
    if (state_ == State::Head && pp_wait_) {
        GH_LOG(Info, "client timed out (110: Connection timed out) while reading PROXY protocol");
        drop_peeked();
        close_connection();
        return;
    }
    if (state_ == State::Head && tls_ && !tls_->established()) {
        GH_LOG(Info, "client timed out (110: Connection timed out) while SSL handshaking");
        close_connection();
        return;
    }
    if (state_ == State::Head) {
        GH_LOG(Info, "client timed out (110: Connection timed out) while reading client request headers");
        if (rlen_ > rpos_) {
            // nginx logs a 408 and sends nothing; we send the 408 page,
            // which tells a slow but honest client what happened.
            reject(408, "client timed out", nullptr);
            return;
        }
        close_connection();
        return;
    }
    if (state_ == State::Processing && req_ && a_->body_started && !a_->body_done) {
        body_failed(408, "client timed out (110: Connection timed out) while reading client request body");
        return;
    }
}

// Reads and drops the rest of a request body that nobody consumed, from
// the buffer and then the socket: Done when it is all gone (what follows
// it in the buffer is the next request), Again when more must come first,
// Failed on a broken chunked body, an error or EOF. It runs after the
// request's log line and metrics: nothing counts these bytes.
Connection::Discard Connection::discard_body() {
    auto drop_buffered = [&]() -> int {
        std::string_view data(rbuf_.get()->data() + rpos_, rlen_ - rpos_);
        if (a_->body_chunked) {
            if (!a_->chunked) a_->chunked = std::make_unique<ChunkedDecoder>();
            ChunkResult cr = a_->chunked->decode(data);
            while (cr.state == ChunkState::More && cr.consumed > 0 && cr.consumed < data.size()) {
                rpos_ += cr.consumed;
                data.remove_prefix(cr.consumed);
                cr = a_->chunked->decode(data);
            }
            rpos_ += cr.consumed;
            if (cr.state == ChunkState::Error) return -1;
            return cr.state == ChunkState::Done ? 1 : 0;
        }
        size_t take = static_cast<size_t>(std::min<uint64_t>(a_->body_left, data.size()));
        rpos_ += take;
        a_->body_left -= take;
        return a_->body_left == 0 ? 1 : 0;
    };
    for (;;) {
        int st = drop_buffered();
        if (st < 0) return Discard::Failed;
        if (st > 0) {
            a_->chunked.reset();
            return Discard::Done;
        }
        rpos_ = rlen_ = 0;
        event::IoResult io = c_.recv({rbuf_.get()->data(), rcap_});
        if (io.kind == event::IoResult::Ok) {
            rlen_ = io.bytes;
            continue;
        }
        return io.kind == event::IoResult::Again ? Discard::Again : Discard::Failed;
    }
}

// The response said keep-alive and is out, but the client is still
// sending a body nobody read: read and drop it as it comes, then keep the
// connection [nginx ngx_http_discarded_request_body_handler]. Bounded as
// a lingering close is: lingering_timeout for each wait, lingering_time
// in all; past either the connection closes.
void Connection::start_discarding() {
    state_ = State::Discarding;
    // Closing it loses nothing the client waits for: a full worker may.
    event::worker_connections().set_reusable(c_, true);
    a_->linger_until = event::worker_loop().now() + static_cast<event::Msec>(a_->lingering.time.count());
    discard_read();
}

void Connection::discard_read() {
    switch (discard_body()) {
        case Discard::Done:
            keepalive_or_close();
            return;
        case Discard::Failed:
            close_connection();
            return;
        case Discard::Again:
            break;
    }
    wait_lingering();
}

void Connection::finish_request() {
    const log::Context lctx = log_context();
    log::Scope scope(&lctx);
    // Background subrequests (mirror) of a complete response still run:
    // the request, and the connection's next one, wait for them; the last
    // one posts finish_ev again (subrequest.h).
    if (req_ && (state_ == State::Processing || state_ == State::Orphan) &&
        hold_for_background(*req_, a_->finish_ev, state_ == State::Processing)) {
        // A connection that closes after this response ends it for the
        // client now, rather than when the children are done (nginx holds
        // it): a client reading to the close (HTTP/1.0, "Connection:
        // close") is not kept waiting. Both calls are done again, as no-ops,
        // when the connection closes.
        if (state_ == State::Processing && (!a_->keepalive || closing_)) {
            if (tls_) tls_->shutdown();
            ::shutdown(c_.fd(), SHUT_WR);
        }
        // A body still coming (an origin that answered before it ended)
        // has no reader any more: it waits in the kernel, without
        // client_body_timeout, and is dealt with when the request ends.
        if (a_->body_started && !a_->body_done) {
            a_->body_paused = true;
            event::worker_loop().cancel(c_.read_timer);
        }
        return;
    }
    if (req_ && state_ == State::Orphan) {
        // The orphan's response is complete: its log line, then the end.
        req_->done = true;
        run_log_phase(*req_);
        req_.reset();
        state_ = State::Processing;
        close_connection();
        return;
    }
    if (!req_ || state_ != State::Processing) return;
    Request& r = *req_;
    r.done = true;
    run_log_phase(r);
    bool keep = a_->keepalive && !closing_;
    bool linger = false;
    bool discarding = false;
    if (a_->body_started && !a_->body_done) {
        // A handler answered before the body was all read (an origin's
        // early error): the rest is not worth reading.
        keep = false;
        linger = true;
    } else if (!a_->body_started && r.has_body && a_->expect_continue && rlen_ == rpos_) {
        // The client still waits for "100 Continue": it has sent no body,
        // and closing spares it sending one (RFC 9110 10.1.1).
        keep = false;
    } else if (!a_->body_started && r.has_body) {
        // Drop what is already here; a rest still to come is dropped as
        // it arrives, after the response (start_discarding).
        switch (discard_body()) {
            case Discard::Done:
                break;
            case Discard::Again:
                discarding = keep;
                linger = !keep;
                break;
            case Discard::Failed:
                keep = false;
                linger = true;
                break;
        }
    }
    if (!keep && a_->linger_next) {
        // A rejected request may be followed by input we never read:
        // closing now could reset the connection before the client reads
        // the error page.
        linger = true;
    } else if (!keep && g_retiring && (rlen_ > rpos_ || !a_->stash.empty() || input_waiting())) {
        // Retiring: the client pipelined its next request before reading
        // our "Connection: close"; closing over it would reset the
        // connection and could destroy this response. Linger instead.
        linger = true;
    }
    a_->linger_next = false;
    // The timeouts of the location that served the request apply to what
    // follows it, as in nginx.
    const LocConf& done_lc = r.loc_conf<LocConf>(http_core_module);
    a_->keepalive_timeout = *done_lc.keepalive_timeout;
    a_->keepalive_min_timeout = *done_lc.keepalive_min_timeout;
    a_->lingering = {*done_lc.lingering_close, *done_lc.lingering_time, *done_lc.lingering_timeout};
    a_->out = nullptr;
    a_->out_last = false;
    event::worker_loop().unpost(a_->drain_ev);
    a_->sink = nullptr;
    a_->body_started = a_->body_done = a_->body_paused = false;
    a_->body_slab = SlabRef();
    a_->body_pos = a_->body_len = 0;
    req_.reset();
    // The request's reader, which took from the pipe, is gone with it.
    event::pipes::give(std::exchange(a_->body_pipe, nullptr));
    a_->body_pipe_refused = false;
    gauge_.to(stats::ConnGauge::State::Waiting);
    if (!keep) {
        if (linger) {
            lingering_close();
        } else {
            close_connection();
        }
        return;
    }
    if (discarding) {
        start_discarding();
        return;
    }
    keepalive_or_close();
}

void Connection::keepalive_or_close() {
    a_->parser.reset();
    if (!a_->stash.empty()) {
        // The next request arrived behind a chunked body: it becomes the
        // start of the head buffer.
        rpos_ = rlen_ = 0;
        size_t need = std::max<size_t>(a_->stash.size(), *default_srv_->client_header_buffer_size);
        if (!rbuf_ || rcap_ < need) {
            rbuf_ = SlabRef::adopt(Slab::make(need));
            rcap_ = need;
        }
        memcpy(rbuf_.get()->data(), a_->stash.data(), a_->stash.size());
        rlen_ = a_->stash.size();
        a_->stash.clear();
    }
    if (rlen_ > rpos_) {
        // A pipelined request is already here.
        a_->pipelined = true;
        state_ = State::Head;
        event::worker_loop().arm(c_.read_timer, *default_srv_->client_header_timeout);
        read_head();
        return;
    }
    rpos_ = rlen_ = 0;
    const conf::Duration timeout = a_->keepalive_timeout;
    const conf::Duration min_timeout = a_->keepalive_min_timeout;
    // Idle: give the buffers and the active state back, as nginx does
    // (and more): an idle connection costs its slot and this object's
    // core only. We may be inside a_->finish_ev's callback: nothing of
    // a_ is touched after this.
    rbuf_ = SlabRef();
    rcap_ = 0;
    a_.reset();
    state_ = State::Keepalive;
    idle_until_ = event::worker_loop().now() + static_cast<event::Msec>(timeout.count());
    conf::Duration wait = timeout;
    young_ = min_timeout.count() > 0;
    if (young_) {
        // keepalive_min_timeout [nginx]: a client sending its next
        // request soon after this response is not closed under it, neither
        // by a full worker nor by a retiring one (a non-idempotent request
        // it could not retry, RFC 9112 9.3.1). Not reusable until the read
        // timer ends that (on_read_timeout); coming from a lingering
        // discard, it was.
        event::worker_connections().set_reusable(c_, false);
        wait = std::min(min_timeout, timeout);
    } else {
        // Idle longest, reclaimed first when the worker is full [nginx].
        event::worker_connections().set_reusable(c_, true);
    }
    // A retiring worker waits for one more request for kRetireGrace, or
    // to the end of keepalive_min_timeout if later, never past the
    // keepalive_timeout.
    if (g_retiring) wait = std::min(timeout, std::max(min_timeout, conf::Duration(kRetireGrace)));
    event::worker_loop().arm(c_.read_timer, wait);
    if (c_.io.readable()) read_head();
}

void Connection::lingering_close() {
    // Stop sending, keep reading for a while: closing with unread input
    // would send a reset that can destroy the response in flight.
    if (a_->lingering.mode == 0) {
        close_connection();
        return;
    }
    if (tls_) tls_->shutdown();  // close_notify before the FIN
    if (::shutdown(c_.fd(), SHUT_WR) != 0) {
        close_connection();
        return;
    }
    state_ = State::Lingering;
    event::worker_connections().set_reusable(c_, true);
    a_->linger_until = event::worker_loop().now() + static_cast<event::Msec>(a_->lingering.time.count());
    event::worker_loop().arm(c_.read_timer, a_->lingering.timeout);
    lingering_read();
}

void Connection::lingering_read() {
    char sink[4096];
    for (;;) {
        event::IoResult io = c_.recv({sink, sizeof sink});
        if (io.kind == event::IoResult::Ok) continue;
        if (io.kind == event::IoResult::Again) break;
        close_connection();
        return;
    }
    wait_lingering();
}

void Connection::wait_lingering() {
    const event::Msec now = event::worker_loop().now();
    if (now >= a_->linger_until) {
        close_connection();
        return;
    }
    const event::Msec left = a_->linger_until - now;
    const event::Msec t = std::min<event::Msec>(left, static_cast<event::Msec>(a_->lingering.timeout.count()));
    event::worker_loop().arm(c_.read_timer, std::chrono::milliseconds(t));
}

}  // namespace gatehouse::http::v1
