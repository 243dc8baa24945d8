// The HTTP/2 front-end (RFC 9113): a client connection whose frames,
// HPACK and flow control nghttp2 handles, and whose streams each carry one
// Request on the protocol-neutral path as its http::Stream.
//
// What is ours, around nghttp2's callback API: the socket (our own recv
// and send through the Connection's Transport, so TLS is the same as for
// HTTP/1), the event loop (nothing runs a request under nghttp2's frames:
// a stream starts, reads its body and finishes from posted events),
// back-pressure both ways (a stream's receive window opens only as far
// as its body's consumer took bytes; the response's bytes are pulled by
// nghttp2 only while the socket takes what it wrote), and the limits
// (http2_* directives, keepalive_*, send_timeout, floods).
//
// Ownership: an HTTP/1 connection hands itself over (take_over()) when
// ALPN chose "h2" or a plain connection began with the HTTP/2 preface; the
// Connection then owns the event::Connection slot (closing it), the TLS
// session, the nghttp2 session and its H2Streams, and frees itself through
// Loop::defer when it closes and no stream is left: a stream orphaned by
// the connection's close (an origin's response filling the cache, see
// stream.h) keeps the object, though not the slot, until it finishes.
// Each H2Stream owns its Request; it is freed through Loop::defer once its
// response is out (or it was reset), after its Log phase ran.
#pragma once

#include <nghttp2/nghttp2.h>
#include <sys/socket.h>

#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "core/buf.h"
#include "core/log.h"
#include "event/connection.h"
#include "event/duplex.h"
#include "http/core_module.h"
#include "http/proxy_protocol.h"
#include "http/request.h"
#include "http/stats.h"
#include "http/stream.h"
#include "http/v2/frame_scan.h"

namespace gatehouse::tls {
class Session;
}

namespace gatehouse::http::v2 {

class RequestHeadBuilder;

// RFC 9113 3.4: what a client with prior knowledge sends first.
inline constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
enum class Preface : uint8_t { No, Partial, Full };
// Whether `data`, the first bytes of a connection, is the preface (Full),
// could still become it (Partial: read more), or is something else.
Preface match_preface(std::string_view data);

// What an HTTP/1 connection hands over: the slot (registered with the
// loop, its readiness flags as they are), its TLS session and PROXY
// header, the bytes it read already (the preface, maybe more: copied).
struct Handover {
    event::Connection* c = nullptr;
    const ListenPort* port = nullptr;  // owner: the generation
    const AddrServers* addr = nullptr;
    std::unique_ptr<tls::Session> tls;
    std::unique_ptr<ProxyHeader> pp;
    std::string pp_tlvs;  // what pp's TLV views point into
    std::string_view preread;
    event::Msec started = 0;  // accepted ($connection_time)
    stats::ConnGauge* gauge = nullptr;  // the connection as stub_status counts it, adopted
};
void take_over(Handover h);

// Graceful shutdown (a reload, a stop): every connection says GOAWAY at
// once without a last stream (a shutdown notice, RFC 9113 6.8), then,
// after kRetireGrace, GOAWAY with the last stream it took; the streams in
// flight finish, then the connection closes.
void retire_connections();
// worker_shutdown_timeout: every connection closed, its streams logged
// (499 before a head).
void close_connections();

class Connection;

class H2Stream final : public http::Stream, public event::Duplex {
public:
    H2Stream(Connection& conn, int32_t id);
    H2Stream(const H2Stream&) = delete;
    H2Stream& operator=(const H2Stream&) = delete;
    ~H2Stream();

    // ---- Stream ----
    const sockaddr* peer_sockaddr() const override;
    std::string_view peer_text() const override;
    uint16_t peer_port() const override;
    std::string_view local_text() override;
    uint16_t local_port() override;
    tls::Session* tls() const override;
    bool plain_on_tls_port() const override { return false; }
    uint64_t connection_number() const override;
    uint32_t connection_requests() const override;
    event::Msec connection_start() const override;
    const AddrServers& servers() override;
    const ProxyHeader* proxy_protocol() const override;
    Flow send_interim(Request& r, int status, std::span<const Header> fields) override;
    Flow send_head(Request& r, const ResponseHead& h) override;
    Flow send_body(Request& r, Chain& in) override;
    void flush() override;
    size_t output_pending() const override { return orphan_ ? 0 : out_bytes_; }
    void close_after() override {}
    void abort() override;
    bool closed() const override { return closed_; }
    bool read_body(Request& r, BodySink sink) override;
    void resume_body() override;
    // Only a WebSocket stream (an extended CONNECT, RFC 8441) has a
    // tunnel: its 101 went out as ":status 200" and the stream is the pipe
    // (the Duplex below) until either side ends it. Any other stream has
    // no 101 (send_head refuses it), and the Duplex fails every call.
    event::Duplex& open_tunnel(event::Callback on_ready, std::string_view* leftover) override;

    // ---- Duplex: the tunnel's client side, as DATA frames ----
    // recv: the client's DATA, as it came; its window opens by what was
    // taken (back-pressure: a slow origin slows the client). send: queued
    // for DATA frames up to http2_chunk_size, then Again until the client's
    // window let the queue go (a slow client slows the origin). on_ready
    // is called, from a posted event, when either may have changed.
    event::IoResult recv(std::span<char> buf) override;
    event::IoResult send(std::span<const char> buf) override;
    // END_STREAM once the queue is out.
    void shutdown_send() override;
    void close() override { abort(); }

private:
    friend class Connection;

    // ---- from the connection (under nghttp2's callbacks: no request
    // code runs here, only state changes and posted events) ----
    void on_header(std::string_view name, std::string_view value);
    void on_headers_done(bool end_stream);
    void on_data(const uint8_t* data, size_t len);
    void on_end_of_input();
    void on_end_stream_sent();
    void on_reset(uint32_t error_code);
    ssize_t read_data(uint8_t* buf, size_t length, uint32_t* flags);

    // ---- posted events ----
    void start();
    void pump_body();
    void on_drained();
    void finish();
    void on_send_timeout();
    void on_body_timeout();
    void on_tunnel_event();

    void body_failed(int status, const char* why);
    // Bytes of the body the consumer took: the windows open by as much.
    void consume(size_t n);
    // Ends the stream's life: its Log phase when the request ran, and its
    // destruction at the end of the loop iteration.
    void terminate();
    bool orphan();
    void maybe_finish();

    Connection& conn_;
    const int32_t id_;
    std::unique_ptr<Request> req_;
    RequestHeadBuilder* head_ = nullptr;  // in the request arena, until start()
    bool started_ = false;       // the request runs (start())
    bool closed_ = false;        // reset or aborted: callers stop
    bool terminated_ = false;
    bool logged_ = false;
    bool remote_closed_ = false; // nghttp2 closed the stream
    bool orphan_ = false;        // the client went, the request goes on (stream.h)
    bool timed_out_ = false;     // client_body_timeout: reset with PROTOCOL_ERROR [nginx]
    // RFC 8441: an extended CONNECT for a WebSocket. Its DATA frames are
    // the tunnel's, not a request body.
    bool ws_ = false;
    bool ws_open_ = false;       // its 101 went out as a 200: the stream stays open
    bool tunnel_ = false;        // open_tunnel() was called
    bool tunnel_over_ = false;   // ...and the tunnel ended (abort())

    // ---- the response ----
    bool head_sent_ = false;
    bool no_body_ = false;       // HEAD, 204, 304: HEADERS ends the stream
    bool trailers_ = false;      // trailer fields will follow the body
    bool deferred_ = false;      // nghttp2 waits for resume_data
    bool out_last_ = false;      // the last Buf of the body was queued
    bool end_sent_ = false;      // END_STREAM went out
    std::deque<Buf> out_q_;      // body bytes not yet framed
    size_t out_bytes_ = 0;

    // ---- the request body ----
    bool in_end_ = false;        // END_STREAM came from the client
    bool no_body_in_ = false;    // ...with the HEADERS: no body
    bool body_started_ = false;  // a reader took the body (read_body)
    bool body_paused_ = false;
    bool body_done_ = false;     // its last piece went to the reader (or it failed)
    bool in_pump_ = false;
    bool too_big_ = false;       // past client_max_body_size
    BodySink sink_ = nullptr;
    std::deque<Buf> in_q_;       // received, not yet handed to the reader
    SlabRef in_slab_;            // where DATA is copied, then the next one
    size_t in_used_ = 0;
    uint64_t in_total_ = 0;
    // Received and not yet taken by a reader: the client's window is that
    // much smaller until consume().
    uint64_t unconsumed_ = 0;

    event::Event start_ev_;
    event::Event body_ev_;
    event::Event drain_ev_;
    event::Event finish_ev_;
    event::Event tunnel_ev_;     // calls tunnel_ready_
    event::Callback tunnel_ready_;
    SlabRef out_slab_;           // where send() copies the tunnel's bytes, then the next one
    size_t out_used_ = 0;
    event::Timer send_timer_;    // send_timeout while the body waits for the client's window
    event::Timer body_timer_;    // client_body_timeout while the reader waits

    H2Stream* prev_ = nullptr;   // the connection's live streams
    H2Stream* next_ = nullptr;
};

class Connection {
public:
    explicit Connection(Handover& h);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection();

private:
    friend class H2Stream;
    friend void retire_connections();
    friend void close_connections();
    struct Callbacks;  // nghttp2's, in connection.cc

    bool init_session();
    void on_read();
    void on_write();
    void on_read_timeout();
    void on_write_timeout();
    void on_retire_timer();
    void on_header_timeout();
    // Feeds nghttp2 what arrived; false when the connection must end.
    bool feed(const uint8_t* data, size_t len);
    bool feed_session(const uint8_t* data, size_t len);
    // Writes what nghttp2 has to send, as long as the socket takes it.
    void send_output();
    void schedule_send();
    // Ends every stream (a log line each) and the connection at once;
    // with `linger`, once our last frame (a GOAWAY) is out, the socket is
    // shut for writing and read for lingering_timeout instead (linger_close).
    void close_connection(bool linger = false);
    // When nghttp2 is done (GOAWAY sent or the session over) and no
    // stream is left: linger_close().
    void check_done();
    void linger_close();
    void linger_read();
    // Closes the slot; the object goes at the end of the iteration, or
    // after its last orphaned stream.
    void release();
    void free_later();
    // A stream is done: unlinked, and the connection may go idle.
    void forget(H2Stream* s);
    void update_idle();
    // GOAWAY with the last stream taken: no new streams.
    void goaway(uint32_t error_code);
    // A client that costs work without asking for any: GOAWAY
    // ENHANCE_YOUR_CALM and close.
    void calm_down(const char* what);
    void count_control(const char* what);
    nghttp2_session* session() const { return session_; }
    const SrvConf& srv() const { return *srv_; }
    static void describe_for_log(const void* self, FixedWriter& out);

    event::Connection& c_;
    const ListenPort& port_;
    const AddrServers& addr_;
    SrvConf* srv_;  // the default server of the address: its limits apply
    std::unique_ptr<tls::Session> tls_;
    std::unique_ptr<ProxyHeader> pp_;
    std::string pp_tlvs_;
    std::string preread_;
    // Until the frame after the preface is known (feed()): what came.
    bool first_frame_ = true;
    // Every frame header the client sends, seen before nghttp2 (which
    // skips some unseen): the empty-DATA flood bound counts them here.
    FrameScan scan_{kPreface.size()};
    std::string head_;
    event::Msec started_;
    nghttp2_session* session_ = nullptr;
    bool closed_ = false;    // no more HTTP/2: closing, or lingering
    bool released_ = false;  // the slot is closed
    bool sending_ = false;
    bool input_held_ = false;  // reading stopped until the output goes
    bool retiring_ = false;
    bool goaway_sent_ = false;
    bool goaway_after_ = false;  // keepalive_requests reached: GOAWAY when the streams are done
    // What nghttp2 produced and the socket has not taken yet; nghttp2 is
    // asked for more only once it is all written (back-pressure).
    std::string out_;
    size_t out_pos_ = 0;
    H2Stream* streams_ = nullptr;
    stats::ConnGauge gauge_;  // stub_status: Writing while a stream is served, else Waiting
    uint32_t live_ = 0;          // streams with a request (ours, not nghttp2's count)
    uint32_t requests_ = 0;      // $connection_requests
    uint32_t max_streams_ = 128;
    uint64_t body_preread_ = 0;  // http2_body_preread_size: our initial stream window
    // The client acknowledged our SETTINGS: our initial window applies.
    bool settings_acked_ = false;
    // Flood accounting: frames that ask for no work of ours (PING,
    // SETTINGS, PRIORITY, WINDOW_UPDATE, RST_STREAM, empty DATA) since
    // the last request or response byte; past kControlBudget the client
    // is told to calm down.
    uint32_t control_ = 0;
    uint32_t refused_ = 0;       // streams refused (too many at once)
    uint32_t resets_ = 0;        // RST_STREAM frames from the client
    uint32_t completed_ = 0;     // responses sent whole

    event::Event read_ev_;       // a first read after the handover
    event::Event send_ev_;
    event::Timer retire_timer_;
    // client_header_timeout for a header block under way: from its HEADERS
    // frame to its end (END_HEADERS on it or a CONTINUATION). nghttp2
    // takes no other frame meanwhile (RFC 9113 6.10), so one per connection.
    event::Timer header_timer_;
    int32_t header_sid_ = 0;  // the stream of that block
    // Stream ids are used in order (RFC 9113 5.1.1): a HEADERS frame on a
    // stream below the highest is a connection error, unless it is the
    // client's trailers on a stream we ended while it was still sending
    // (the last kEndedEarly of those are kept; nghttp2 drops their frames).
    int32_t max_sid_ = 0;
    static constexpr size_t kEndedEarly = 32;
    int32_t ended_early_[kEndedEarly] = {};
    size_t ended_early_next_ = 0;
    void ended_early(int32_t id) {
        ended_early_[ended_early_next_] = id;
        ended_early_next_ = (ended_early_next_ + 1) % kEndedEarly;
    }
    bool was_ended_early(int32_t id) const {
        for (int32_t x : ended_early_)
            if (x == id) return true;
        return false;
    }
    // An empty SETTINGS frame stood for the client's missing one (feed()):
    // its ACK is not sent, the client having asked for none.
    bool drop_settings_ack_ = false;
    // What the streams read of the slot, kept here: an orphan outlives the
    // slot, which another connection may take meanwhile.
    sockaddr_storage peer_{};
    uint64_t number_ = 0;
    char peer_text_[64] = {};
    uint16_t peer_port_ = 0;
    char local_text_[64] = {};
    uint16_t local_port_ = 0;
    bool local_known_ = false;
    Connection* prev_ = nullptr;  // the worker's list of HTTP/2 connections
    Connection* next_ = nullptr;
    log::Context log_ctx_;
};

}  // namespace gatehouse::http::v2
