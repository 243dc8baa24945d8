// An HTTP/1.1 client connection: reads request heads into a bounded
// buffer, runs each request, writes responses in order, keeps the
// connection alive or closes it (lingering when input was left unread).
//
// Ownership: made by on_accept() for a slot of the worker's
// ConnectionTable and stored in Connection::data; it frees itself (through
// Loop::defer) when it closes the slot. It holds the Request it is
// serving, one at a time: pipelined requests wait in the read buffer, so
// responses go out in order.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <chrono>
#include <memory>
#include <string_view>

#include "core/buf.h"
#include "event/connection.h"
#include "http/core_module.h"
#include "http/body.h"
#include "http/fwd.h"
#include "http/chunked.h"
#include "http/h1_parser.h"
#include "http/request.h"

namespace gatehouse::tls {
class Session;
}

namespace gatehouse::http {

// The Listener's accept callback; data is the ListenPort.
void on_accept(void* port, event::Connection& c);

// Graceful shutdown of the worker (QUIT: a reload, a binary upgrade, a
// shutdown), once the listeners are stopped: from now on every response
// says "Connection: close" and idle connections are closed without losing
// a request (see the design note above retire_connections() in
// connection.cc). The worker exits when no connection is left.
void retire_connections();
// How long a retiring worker keeps an idle connection open for one more
// request (at most its keepalive or header timeout).
inline constexpr std::chrono::milliseconds kRetireGrace{1000};

class HttpConnection {
public:
    HttpConnection(event::Connection& c, const ListenPort& port);
    HttpConnection(const HttpConnection&) = delete;
    HttpConnection& operator=(const HttpConnection&) = delete;
    ~HttpConnection();

    event::Connection& conn() { return c_; }
    const ListenPort& port() const { return port_; }
    // The servers of the local address this connection came to.
    const AddrServers& addr_servers();
    std::string_view peer_addr() const { return peer_text_; }
    uint16_t peer_port() const { return peer_port_; }
    std::string_view local_addr();
    uint16_t local_port();
    // The TLS session of a connection to a "listen ... ssl" port; null for
    // plain HTTP (and for a plain request sent to a TLS port). Reads and
    // writes go through it (event::Connection::transport).
    tls::Session* tls() const { return tls_.get(); }

    // ---- for the response path (phases.cc) ----
    // Queues bytes to send; they must stay valid until sent (arena, slab
    // or file). Returns false if the connection failed.
    void queue(Chain& c);
    // Tries to write what is queued; when all is written and the response
    // ended, finishes the request.
    void flush();
    // The request ended abnormally: close without a proper end.
    void abort();
    bool closing() const { return closing_; }
    // Called once the response is complete (all written).
    void finish_request();

    // ---- request body (body.h) ----
    void start_body(BodySink sink);
    void resume_body();
    bool body_incomplete() const { return body_started_ && !body_done_; }
    size_t output_pending() const;
    void set_drain_handler(void (*fn)(Request&)) { drain_fn_ = fn; }
    // Resume r's phases from a posted event (internal redirects and
    // handlers that finished without I/O).
    void post_resume();

    bool idle() const { return state_ == State::Keepalive || state_ == State::Head; }

    // After a 101 response (queued and flushed): the connection stops
    // speaking HTTP and its socket events go to the given callbacks (a
    // tunnel). `leftover` receives bytes the client sent after the request
    // head, already read into the buffer; they stay valid until close.
    // The tunnel ends with abort().
    void become_tunnel(event::Callback on_read, event::Callback on_write, std::string_view* leftover);

private:
    enum class State : uint8_t { Head, Processing, Keepalive, Lingering, Tunnel, Closed };

    void on_read();
    void on_write();
    void on_read_timeout();
    void on_write_timeout();
    void read_head();
    void start_request(size_t head_len);
    Request& new_request();
    void reject(int status, std::string_view reason, bool log_info = true);
    void keepalive_or_close();
    void lingering_close();
    void lingering_read();
    void close();
    bool discard_body();
    void resume();
    void pump_body();
    void body_failed(int status, const char* why);
    void on_drained();
    // Chooses r.srv by the Host header among the address's servers.
    void select_server(Request& r);
    // TLS ports: tells TLS from plain HTTP, then drives the handshake;
    // read_head() once it is done.
    void tls_handshake();

    event::Connection& c_;
    const ListenPort& port_;
    std::unique_ptr<tls::Session> tls_;  // TLS ports only
    bool tls_sniffed_ = false;           // the first byte said TLS
    bool plain_on_tls_ = false;          // the first byte said plain HTTP: answer 497
    const AddrServers* addr_ = nullptr;
    SrvConf* default_srv_ = nullptr;
    State state_ = State::Head;
    bool closing_ = false;

    // Read buffer: [0, rlen_) holds bytes read; [rpos_, rlen_) is not yet
    // consumed (the next pipelined request).
    SlabRef rbuf_;
    size_t rpos_ = 0;
    size_t rlen_ = 0;
    size_t rcap_ = 0;
    // Parser state and header views, from the first byte of a request to
    // the end of its response; freed while the connection idles.
    static constexpr size_t kMaxHeaders = 100;
    struct HeadState {
        explicit HeadState(const Limits& l) : parser(l, std::span<HeaderField>(fields)) {}
        HeaderField fields[kMaxHeaders];
        RequestParser parser;
    };
    std::unique_ptr<HeadState> head_;

    std::unique_ptr<Request> req_;
    // Output: bufs queued by the response path, written in order.
    std::pmr::vector<Buf>* out_ = nullptr;  // in the request arena
    size_t out_head_ = 0;                   // first unsent buf
    bool out_last_ = false;                 // the last buf of the body is queued
    uint64_t body_left_ = 0;                // request body bytes to discard
    bool body_chunked_ = false;
    std::unique_ptr<ChunkedDecoder> chunked_;
    // Reading the body for a handler: pieces go to sink_; bytes read into
    // body slabs of client_body_buffer_size.
    BodySink sink_ = nullptr;
    bool body_started_ = false;
    bool body_done_ = false;
    bool body_paused_ = false;
    bool in_pump_ = false;
    uint64_t body_received_ = 0;
    SlabRef body_slab_;
    size_t body_pos_ = 0, body_len_ = 0;  // unconsumed [pos, len) of body_slab_
    std::string stash_;                   // bytes after a chunked body: the next request
    void (*drain_fn_)(Request&) = nullptr;
    event::Event drain_ev_;
    // The response is out: finish the request from a posted event, never
    // under the frames of the filters and handlers that sent it.
    event::Event finish_ev_;
    event::Msec linger_until_ = 0;
    bool linger_next_ = false;  // close the current request's connection lingering
    // From the location of the last request: what applies after it.
    conf::Duration keepalive_timeout_{std::chrono::seconds(75)};
    // While idle (keepalive, or accepted with no byte yet): when its
    // keepalive or header timeout would close it. Bounds the retirement
    // grace, which retire_idle() extends while the client still reads.
    event::Msec idle_until_ = 0;
    struct Lingering {
        uint8_t mode = 1;
        conf::Duration time{std::chrono::seconds(30)};
        conf::Duration timeout{std::chrono::seconds(5)};
    } lingering_;
    event::Event resume_ev_;

    char peer_text_[64] = {};
    uint16_t peer_port_ = 0;
    char local_text_[64] = {};
    uint16_t local_port_ = 0;
    bool local_known_ = false;

    friend void retire_connections();
    // Retiring: close an idle connection unless its next request is
    // already in the socket (then read it).
    void retire_idle();
    // Bytes from the client wait in the socket (MSG_PEEK).
    bool input_waiting();
    HttpConnection* prev_ = nullptr;  // the worker's list of connections
    HttpConnection* next_ = nullptr;
};

}  // namespace gatehouse::http
