// The HTTP/1.1 front-end: a client connection that reads request heads
// into a bounded buffer, runs each request on the protocol-neutral path
// as its Stream, frames and writes the responses in order, keeps the
// connection alive or closes it (lingering when input was left unread).
// Everything HTTP/1-specific lives here and nowhere else: the status line
// and Connection field, chunked framing both ways, 100-continue,
// pipelining, keepalive, lingering close, the tunnel after 101.
//
// Ownership: made by on_accept() (http_core's listening sockets) for a
// slot of the worker's ConnectionTable and stored in
// event::Connection::data; it frees itself (through Loop::defer) when it
// closes the slot. It owns the Request it is serving, one at a time:
// pipelined requests wait in the read buffer, so responses go out in
// order.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "core/buf.h"
#include "event/chain_writer.h"
#include "event/connection.h"
#include "event/pipe.h"
#include "http/chunked.h"
#include "http/core_module.h"
#include "http/h1_parser.h"
#include "http/proxy_protocol.h"
#include "http/request.h"
#include "http/stats.h"
#include "http/stream.h"

namespace gatehouse::tls {
class Session;
}

namespace gatehouse::http::v1 {

// The accept callback of http_core's listening sockets; data is the
// ListenPort.
void on_accept(void* port, event::Connection& c);

// Graceful shutdown of the worker (QUIT: a reload, a binary upgrade, a
// shutdown), once the listeners are stopped: from now on every response
// says "Connection: close" and idle connections are closed without losing
// a request (see the design note above retire_connections() in
// connection.cc). The worker exits when no connection is left.
void retire_connections();
// worker_shutdown_timeout: every connection closed as if its client had
// gone, each request that runs logged (499 before a head).
void close_connections();
// How long a retiring worker keeps an idle connection open for one more
// request (at most its keepalive or header timeout).
inline constexpr std::chrono::milliseconds kRetireGrace{1000};

class Connection final : public Stream, public event::Duplex {
public:
    Connection(event::Connection& c, const ListenPort& port);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

    // ---- Stream ----
    const sockaddr* peer_sockaddr() const override { return reinterpret_cast<const sockaddr*>(&c_.peer); }
    // Valid while the connection is active (the Request's remote_addr
    // views it); asking makes it active.
    std::string_view peer_text() const override;
    uint16_t peer_port() const override;
    std::string_view local_text() override;
    uint16_t local_port() override;
    tls::Session* tls() const override { return tls_.get(); }
    bool plain_on_tls_port() const override { return plain_on_tls_; }
    uint64_t connection_number() const override { return c_.number; }
    uint32_t connection_requests() const override { return c_.requests; }
    event::Msec connection_start() const override { return started_; }
    const AddrServers& servers() override;
    const ProxyHeader* proxy_protocol() const override { return pp_ ? pp_->header.get() : nullptr; }
    Flow send_interim(Request& r, int status, std::span<const Header> fields) override;
    Flow send_head(Request& r, const ResponseHead& h) override;
    Flow send_body(Request& r, Chain& in) override;
    bool takes_pipes() const override { return !tls_ && state_ == State::Processing; }
    void flush() override;
    size_t output_pending() const override;
    void close_after() override {
        if (a_) a_->keepalive = false;
    }
    void abort() override;
    bool closed() const override { return closing_; }
    bool read_body(Request& r, BodySink sink) override;
    void resume_body() override;
    event::Duplex& open_tunnel(event::Callback on_ready, std::string_view* leftover) override;

    // ---- Duplex (after 101) ----
    event::IoResult recv(std::span<char> buf) override { return c_.recv(buf); }
    // Counts what it passes on to the client as sent body ($bytes_sent,
    // $body_bytes_sent), as nginx does.
    event::IoResult send(std::span<const char> buf) override;
    void shutdown_send() override;
    void close() override { abort(); }
    bool can_splice() const override { return !c_.transport; }
    event::IoResult splice_in(int wfd, size_t n) override { return c_.splice_in(wfd, n); }
    event::IoResult splice_out(int rfd, size_t n) override;

private:
    // Orphan: the client went away while the request goes on for others
    // (stream.h, "Orphans"); the socket is shut and the output dropped.
    // Discarding: the response is out and said keep-alive, the rest of a
    // body nobody read is still arriving; read and dropped, then Keepalive.
    enum class State : uint8_t { Head, Processing, Orphan, Discarding, Keepalive, Lingering, Tunnel, Closed };

    void on_read();
    void on_write();
    // What went out to the client in the tunnel counts as sent body.
    event::IoResult count_sent(event::IoResult io);
    void on_read_timeout();
    void on_write_timeout();
    void read_head();
    void start_request(size_t head_len);
    Request& new_request();
    // `where`: what the info line adds to `reason`; null: no line.
    void reject(int status, std::string_view reason,
                const char* where = " while reading client request headers");
    void keepalive_or_close();
    void lingering_close();
    void lingering_read();
    // Lingering or discarding: the next wait for input, lingering_timeout
    // at most and never past linger_until (lingering_time), or the close.
    void wait_lingering();
    void close_connection();
    // The client went away from a request with outlive_client: Orphan.
    bool orphan();
    enum class Discard : uint8_t { Done, Again, Failed };
    // Drops the unread rest of a body from the buffer and the socket.
    Discard discard_body();
    void start_discarding();
    void discard_read();
    void pump_body();
    enum class Spliced : uint8_t { Piece, Memory, Wait, Failed };
    Spliced splice_body(Request& r, const LocConf& lc, const char** why);
    bool client_closed();
    void body_failed(int status, const char* why);
    void on_drained();
    void finish_request();
    void write_failed(const event::ChainWriter::Result& w);
    void uncork();
    // TLS ports: tells TLS from plain HTTP, then drives the handshake;
    // read_head() once it is done.
    void tls_handshake();
    // The handshake and the checks after it (ssl_after_handshake) are
    // done: the first request's head, or the HTTP/2 front-end ("h2").
    void tls_ready();
    // ssl_after_handshake()'s resume: the checks it waited for are over.
    void tls_checked();
    // "listen ... proxy_protocol": reads the PROXY header, before TLS and
    // before the request, peeking so that exactly the header's bytes are
    // taken from the socket; read_head() once it is done.
    void read_proxy_protocol();
    // Before closing on a bad or late PROXY header: reads what was peeked.
    void drop_peeked();
    // Retiring: close an idle connection unless its next request is
    // already in the socket (then read it).
    void retire_idle();
    // Bytes from the client wait in the socket (MSG_PEEK).
    bool input_waiting();
    // The connection speaks HTTP/2 (ALPN "h2", or the preface on a plain
    // address with HTTP/2): the slot, the TLS session, the PROXY header
    // and `preread` go to an http::v2::Connection, and this one is freed.
    void hand_over_h2(std::string_view preread);
    // The tail of this connection's error log lines (log::Context).
    static void describe_for_log(const void* self, FixedWriter& out);
    // The context of its error log lines, its error_log the current
    // request's: for a log::Scope at each entry from the loop (built on
    // the stack: an idle connection keeps no copy).
    log::Context log_context() const;
    void nodelay(const LocConf& lc);
    const LocConf& server_loc_conf() const;

    friend void retire_connections();
    friend void close_connections();

    // What the connection holds only while it works: from the first byte
    // of a request head until it is idle again (keep-alive), or until it
    // closes (a lingering close, a tunnel, an orphan). An idle connection
    // holds none of it, nor a read buffer nor a request: only the members
    // below this struct and its slot (issue 19: an idle keep-alive
    // connection costs what nginx's does, or less). Made by active() on
    // the first byte of a head (or an error page without one), freed by
    // keepalive_or_close() when nothing else is buffered.
    struct Active {
        explicit Active(const Limits& l) : parser(l, fields.span()) {}
        // After the request and its reader: nothing takes from the pipe now.
        ~Active() { event::pipes::give(body_pipe); }
        Active(const Active&) = delete;
        Active& operator=(const Active&) = delete;
        // The head being parsed and, while its request runs, what its
        // header views point into.
        FieldStore<32> fields;  // the usual head's; more move to the parser's table
        RequestParser parser;

        // ---- the current request and its response ----
        bool keepalive = false;       // the connection may serve another request
        bool expect_continue = false; // the client waits for "100 Continue"
        bool chunked_out = false;     // the response body is framed as chunked
        bool trailers = false;        // the last chunk carries trailer fields
        bool head_only = false;       // no body bytes go out (HEAD, 204, 304)
        bool out_last = false;        // the last buf of the body is queued
        bool corked = false;          // TCP_CORK is on ("tcp_nopush")
        bool linger_next = false;     // close the current request's connection lingering
        bool pipelined = false;       // the next head was in the buffer already ($pipe)
        // What goes to the client, written in order (in the request arena).
        event::ChainWriter* out = nullptr;

        // ---- the request body ----
        uint64_t body_left = 0;       // Content-Length bytes not yet read
        bool body_chunked = false;
        bool body_started = false;    // a reader took it (read_body)
        bool body_done = false;
        bool body_paused = false;
        bool in_pump = false;
        std::unique_ptr<ChunkedDecoder> chunked;
        // Reading the body for a handler: pieces go to sink; bytes read
        // into body slabs of client_body_buffer_size.
        BodySink sink = nullptr;
        SlabRef body_slab;
        size_t body_pos = 0, body_len = 0;  // unconsumed [pos, len) of body_slab
        std::string stash;                  // bytes after a chunked body: the next request
        // A body spliced to a reader that takes pipe pieces (body.h): the
        // pipe, given back when the request is over (its reader, which
        // empties it, gone), closed if it still holds bytes.
        event::Pipe* body_pipe = nullptr;
        bool body_pipe_refused = false;     // the socket cannot splice(): memory

        event::Event drain_ev;
        // The response is out: finish the request from a posted event,
        // never under the frames of the filters and handlers that sent it.
        event::Event finish_ev;
        // A write that stopped at sendfile_max_chunk goes on from the loop.
        event::Event flush_ev;
        event::Callback tunnel_ready;

        // From the location of the last request: what applies after it.
        conf::Duration keepalive_timeout{std::chrono::seconds(75)};
        conf::Duration keepalive_min_timeout{0};
        struct Lingering {
            uint8_t mode = 1;
            conf::Duration time{std::chrono::seconds(30)};
            conf::Duration timeout{std::chrono::seconds(5)};
        } lingering;
        event::Msec linger_until = 0;

        // The addresses as text, for the request's variables and logs:
        // made when first asked (a request that logs nothing and reads
        // no address variable never formats them).
        char peer_text[INET6_ADDRSTRLEN] = {};
        char local_text[INET6_ADDRSTRLEN] = {};
        uint16_t local_port = 0;
        bool peer_known = false;
        bool local_known = false;
    };
    // a_, made now if the connection was idle.
    Active& active();

    // The PROXY protocol header of "listen ... proxy_protocol": while it
    // is read, its parser and the bytes it peeks at (client_header_buffer_size,
    // at least the 107 bytes of a v1 line); once read, the header for the
    // life of the connection, its TLVs copied into `tlvs`.
    struct Proxy {
        std::unique_ptr<ProxyParser> parser;
        std::string peek;
        std::unique_ptr<ProxyHeader> header;
        std::string tlvs;
    };

    event::Connection& c_;
    const ListenPort& port_;
    std::unique_ptr<tls::Session> tls_;  // TLS ports only
    std::unique_ptr<Proxy> pp_;          // PROXY protocol ports only
    const AddrServers* addr_ = nullptr;
    SrvConf* default_srv_ = nullptr;
    // Read buffer: [0, rlen_) holds bytes read; [rpos_, rlen_) is not yet
    // consumed (the next pipelined request). None while idle.
    SlabRef rbuf_;
    size_t rpos_ = 0;
    size_t rlen_ = 0;
    size_t rcap_ = 0;
    State state_ = State::Head;
    bool closing_ : 1 = false;
    bool tls_sniffed_ : 1 = false;           // the first byte said TLS
    bool plain_on_tls_ : 1 = false;          // the first byte said plain HTTP: answer 497
    bool tls_checking_ : 1 = false;          // ssl_after_handshake() runs: read nothing yet
    // A plain address with HTTP/2 ("listen ... http2", "http2 on"), no
    // request read yet: the first bytes may be the HTTP/2 preface (h2c
    // with prior knowledge, RFC 9113 3.3).
    bool h2c_maybe_ : 1 = false;
    bool pp_wait_ : 1 = false;  // the PROXY header is still to be read
    bool wrote_ : 1 = false;         // a response write was made (see nodelay())
    bool nodelay_done_ : 1 = false;  // TCP_NODELAY was decided
    // Keepalive only: idle for less than keepalive_min_timeout, the read
    // timer set for its end. Until then the connection is neither given
    // to a full worker's new clients (not reusable) nor closed by a
    // retiring worker (see keepalive_or_close()).
    bool young_ : 1 = false;
    // What stub_status counts this connection as (waiting, reading a
    // head, writing a response): moved with state_, taken out on close.
    stats::ConnGauge gauge_;

    std::unique_ptr<Active> a_;
    std::unique_ptr<Request> req_;  // declared after a_: goes first

    event::Msec started_ = 0;  // accepted: "keepalive_time" counts from here
    // While idle (keepalive, or accepted with no byte yet): when its
    // keepalive or header timeout would close it. Bounds the retirement
    // grace, which retire_idle() extends while the client still reads.
    event::Msec idle_until_ = 0;

    Connection* prev_ = nullptr;  // the worker's list of connections
    Connection* next_ = nullptr;
};

}  // namespace gatehouse::http::v1
