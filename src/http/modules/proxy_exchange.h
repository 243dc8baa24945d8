// One proxied request: the Exchange between a client request and the
// origin, shared by proxy_exchange.cc (client body, connecting, sending,
// retries) and proxy_response.cc (the response, streaming, the tunnel).
// See proxy.h for the stages.
//
// Lifetime: made in the request arena by the content handler and reached
// through r.ctx(proxy_module); destroyed with the request, its destructor
// closing the origin connection (ConnectionTable::close cancels its timers)
// and the temp files. Every callback it registers (the origin connection's
// handlers and timers, its posted events, on_output_drained) dies with it
// or is reset before.
//
// Re-entrancy: send_body() with the last buffer, finalize_response() and
// respond_status() may finish the request at once, destroying the Request
// and this Exchange with it. They are only ever called as the last act of
// a step run from a posted event (kick_), never from a body sink, a
// drained callback or the content handler, whose callers still hold the
// request.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "core/buf.h"
#include "core/log.h"
#include "event/connection.h"
#include "event/loop.h"
#include "http/chunked.h"
#include "http/h1_parser.h"
#include "http/modules/proxy.h"
#include "http/request.h"
#include "tls/session.h"
#include "upstream/upstream.h"

namespace gatehouse::http::proxy {

// One try on one peer, for $upstream_* variables.
struct TryRecord {
    std::string_view addr;      // Peer::text
    int status = 0;             // the response's, 502 or 504 for failures; 0: none yet
    event::Msec start = 0;
    int64_t connect_ms = -1;    // -1: not connected
    int64_t header_ms = -1;     // -1: no response head
    int64_t response_ms = -1;   // until the try ended
    uint64_t bytes = 0;         // read from the origin
};

// The tries of a request, kept across internal redirects (an error_page
// after proxy_intercept_errors still logs them), and the last response's
// header fields for $upstream_http_NAME. In the request arena.
struct UpstreamLog {
    explicit UpstreamLog(std::pmr::memory_resource* m) : tries(m), headers(m) {}
    std::pmr::vector<TryRecord> tries;
    std::pmr::vector<Header> headers;
};

// Why a try failed, for proxy_next_upstream and the status to answer.
enum class Failure : uint8_t { Error, Timeout, InvalidHeader, Status };

class Exchange {
public:
    Exchange(Request& r, const ProxyConf& pc, const Pass& pass, upstream::UpstreamConf& u, UpstreamLog& log,
             const Url& url);
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;
    ~Exchange();

    // Called by the content handler. Builds the request, then continues
    // from a posted event; returns Next::Suspend.
    Next start();

    UpstreamLog& log() { return log_; }
    std::string_view proxy_host() const { return host_header_; }
    std::string_view proxy_port() const { return port_; }

private:
    enum class Stage : uint8_t {
        Start,
        ReadingBody,  // buffered: the client body, before connecting
        Connecting,
        Handshaking,  // TLS to the origin (https), within proxy_connect_timeout
        Active,       // request going out, response head coming in
        Body,         // streaming the response body
        Upgrading,    // 101 sent, waiting for it to leave
        Tunnel,
        Done,
    };
    enum class BodyMode : uint8_t { None, Buffered, Streamed };
    enum class BodyFraming : uint8_t { None, Length, Chunked, Close };

    // ---- proxy_exchange.cc ----------------------------------------------------
    void schedule(void (Exchange::*step)());
    void on_kick();
    void on_drain_event();
    bool client_gone();

    std::string_view build_head();
    void begin();
    static void body_read(Request& r);
    void body_gone();
    static bool streamed_sink(Request& r, Chain& piece);
    bool stream_piece(Chain& piece);

    void connect();
    void connect_peer();
    void on_connected();
    void start_tls();
    void handshake();
    void queue_request();
    void on_up_read();
    void on_up_write();
    void on_up_read_timeout();
    void on_up_write_timeout();
    // Writes the send queue; false when the connection failed (already
    // handled).
    bool write_queue();
    void request_sent_fully();

    void fail(Failure f, int status, int err, std::string_view what);
    bool may_retry(Failure f, int status) const;
    void end_try(bool failed);
    void close_upstream();
    void release_upstream(bool reusable);

    void respond_error();  // a step: answers err_status_
    void error_log(gatehouse::log::Level l, int err, std::string_view what, std::string_view action);
    std::string_view action() const;
    TryRecord& cur_try() { return log_.tries.back(); }
    int64_t elapsed() const;

    // ---- proxy_response.cc ---------------------------------------------------
    void read_head();
    void process_head(size_t consumed);
    bool check_next_status(int status);
    void record_fields(const StatusHead& h);
    void copy_headers(const StatusHead& h);
    std::string_view rewrite_redirect(std::string_view value, size_t from);
    void start_body(size_t consumed);
    void read_response_body();  // also a step: after a turn of reads
    void take(const char* data, size_t n, SlabRef& slab);
    void emit(const char* data, size_t n, SlabRef& slab);
    bool next_region(char** p, size_t* n, SlabRef** slab, bool* spill);
    bool spill_allowed(size_t n) const;
    Status spill(const char* data, size_t n);
    void push_out();
    bool queue_file_piece();
    void body_complete();
    void send_last();  // a step
    void body_truncated(int err, std::string_view what);
    static void drained_cb(Request& r);
    void on_drained();

    void start_tunnel();
    void begin_tunnel();  // a step, or on_drained
    static void tunnel_client_ready(void* ex);
    void pump();  // also a step: after a turn of transfers
    void end_tunnel();

    // ---- state ------------------------------------------------------------------------
    Request& r_;
    const ProxyConf& pc_;
    const Pass& pass_;
    upstream::UpstreamConf& u_;
    UpstreamLog& log_;
    std::string_view host_header_;
    std::string_view port_;
    std::string_view pass_uri_;
    bool has_uri_ = false;

    Stage stage_ = Stage::Start;
    event::Event kick_;
    event::Event drain_ev_;
    void (Exchange::*step_)() = nullptr;
    int err_status_ = 0;  // respond_error: the status to answer

    // The request to the origin.
    std::string_view method_;
    std::string_view uri_;        // the request-target sent
    std::string_view head_;
    BodyMode body_mode_ = BodyMode::None;
    bool chunked_up_ = false;     // Streamed with chunked framing
    bool upgrade_sent_ = false;   // an Upgrade field went out: 101 is possible
    bool close_sent_ = false;     // "Connection: close" went out
    bool body_started_ = false;   // Streamed: the client body is being read
    bool body_done_ = false;      // every body byte is in the send queue (or file)
    bool body_paused_ = false;    // Streamed: the client waits for the origin
    bool request_sent_ = false;   // a byte of this try went out
    bool request_done_ = false;   // all of it went out
    uint64_t body_size_ = 0;      // Buffered: r.body_kept's
    Chain sendq_;                 // what goes to the origin, in order
    size_t sendq_pos_ = 0;
    char chunk_hdr_[kMaxChunkHeader] = {};

    // The origin connection and the peer choice.
    std::optional<upstream::PeerPicker> picker_;
    upstream::Peer* peer_ = nullptr;
    event::Connection* up_ = nullptr;
    bool reused_ = false;         // from the keepalive pool
    // https: the settings (owner: the generation) and the TLS session of
    // up_, which is up_->transport. The session goes to the keepalive
    // pool with the connection (release_upstream) and comes back with it.
    const UpstreamTls* tls_ = nullptr;
    std::unique_ptr<tls::Session> up_tls_;
    bool cached_retried_ = false;
    bool try_open_ = false;       // picker_->done() is owed for peer_
    event::Msec first_start_ = 0;

    // The response.
    static constexpr size_t kMaxFields = 100;
    HeaderField fields_[kMaxFields];
    std::optional<ResponseParser> parser_;
    SlabRef head_buf_;
    size_t head_len_ = 0;    // bytes in head_buf_
    size_t head_start_ = 0;  // where the current head starts (after a 1xx)
    bool head_read_ = false; // a response byte came in on this try
    int status_ = 0;
    bool head_method_ = false;     // HEAD went out: no body whatever the framing says
    BodyFraming framing_ = BodyFraming::None;
    uint64_t remaining_ = 0;
    std::optional<ChunkedDecoder> dec_;
    bool reusable_ = false;        // the response allows another request
    bool buffering_ = true;
    bool temp_ok_ = false;
    uint64_t max_temp_ = 0;
    struct PoolSlab {
        SlabRef s;
        size_t fill = 0;
    };
    std::pmr::vector<PoolSlab> pool_;
    size_t pool_max_ = 0;
    size_t pool_cur_ = 0;
    SlabRef spill_buf_;
    int tmp_fd_ = -1;
    uint64_t file_end_ = 0;
    uint64_t file_queued_ = 0;
    Chain out_;                 // pieces for the next send_body()
    bool paused_ = false;       // waiting for the client to take data
    bool spilling_ = false;     // the bytes being taken go to the temp file
    bool origin_done_ = false;  // the body is complete (or cut) at the origin side
    bool truncated_ = false;    // cut: the client connection closes after the data
    bool last_sent_ = false;

    static constexpr uint64_t kFilePiece = 1 << 20;

    // The tunnel after 101: a buffer each way.
    struct Pipe {
        SlabRef buf;
        size_t pos = 0;
        size_t len = 0;
        bool eof = false;   // the source said EOF
        bool shut = false;  // the destination got shutdown(SHUT_WR)
    };
    Pipe c2u_;
    Pipe u2c_;
    Duplex* client_ = nullptr;  // the client side of the tunnel (the stream's)
};

}  // namespace gatehouse::http::proxy
