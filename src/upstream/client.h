// An HTTP/1.x client to the peers of an upstream group: the part of
// proxying that is no proxy policy [nginx ngx_http_upstream]. Used by the
// proxy module (what it sends and how it answers is its own) and by the
// active health checks.
//
// One Client makes one exchange, in tries:
//
//   peer       PeerPicker (the group's method), or one fixed peer
//   connect    a pooled connection first (keepalive), else a new one,
//              connect_timeout; TLS to the origin (SNI, verification,
//              session reuse) under the same timeout
//   request    Hooks::prepare() fills `out` (the head and what it implies)
//              before each try, and the body goes after the head: none, a
//              buffered Chain sent again on every try, or streamed by the
//              caller (send_body()) with chunked framing when its length
//              is unknown; send_timeout between writes
//   head       parsed strictly into buffer_size (interim 1xx skipped); the
//              fields are copied into the TryLog (for $upstream_http_*);
//              a status the next_upstream policy lists tries another peer;
//              else Hooks::on_head() gets the head as the origin sent it,
//              before anything per location, and says what follows
//   body       framing decoded (Content-Length, chunked, until close),
//              handed to Hooks::on_body() with bounded memory: a pool of
//              at most 1 + buffers_num slabs (the head buffer first); when
//              the consumer holds them all (a slow client), reads go to a
//              temp file (buffering on, up to max_temp_file_size) or stop
//              until the consumer drains (downstream_drained())
//   tunnel     after 101, bytes both ways between the origin connection
//              and the caller's event::Duplex, read_timeout when idle
//   failures   before a head was taken: another peer when the policy
//              allows (next_upstream, tries, timeout, idempotency), else
//              Hooks::on_error() with 502 or 504 (or the last status that
//              was retried); after: Hooks::on_truncated()
//   pooling    a response that allows it (HTTP/1.1 both ways, no "close",
//              framing not close-delimited, all of it read) gives the
//              connection back to the group's keepalive pool
//
// Error log lines are nginx's: "connect() failed (111: Connection refused)
// while connecting to upstream", followed by the context of the owner
// (Hooks::log_context(), in scope in every callback of the Client), which
// names the origin with describe_peer().
//
// Response body memory, in detail: a read goes into the tail of the
// current slab, or into a slab the consumer no longer holds (only our
// reference left), or into a new one while the pool is not full. Data
// written to the temp file is handed over as one file range at a time
// (at most kFilePiece) when the consumer has nothing pending, so the order
// of the stream never changes; once all of the file went out it is emptied
// and reused, so a long stream to a slow client needs max_temp_file_size
// of disk, not the whole response.
//
// Lifetime: the caller owns the Client (the proxy: in the request arena)
// and must keep the Hooks alive as long as it. Destroying it closes the
// origin connection (cancelling its timers and events) and the temp file,
// and counts an open try as ended. Every hook is called from the loop
// (I/O callbacks, timers, posted events), never from a call the caller
// made, except where a method says so; after on_error, on_truncated or
// on_tunnel_end, and after on_body with the last buffer, the Client calls
// no hook again.
#pragma once

#include <openssl/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <string>
#include <span>
#include <string_view>
#include <unordered_map>

#include "conf/values.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/result.h"
#include "event/chain_writer.h"
#include "event/connection.h"
#include "event/duplex.h"
#include "event/loop.h"
#include "event/pipe.h"
#include "http/chunked.h"
#include "http/h1_parser.h"
#include "upstream/upstream.h"

using SSL_SESSION = struct ssl_session_st;

namespace gatehouse::tls {
class Context;
class Session;
}  // namespace gatehouse::tls

namespace gatehouse::upstream {

// TLS to origins: the client context of one set of settings, shared by
// every user with equal ones. Owner: the configuration generation.
struct TlsSettings {
    TlsSettings() = default;
    TlsSettings(const TlsSettings&) = delete;
    TlsSettings& operator=(const TlsSettings&) = delete;
    ~TlsSettings();

    tls::Context* ctx = nullptr;  // owner: the generation arena
    bool server_name = false;     // send SNI (not for an IP literal, RFC 6066 3)
    bool verify = false;          // check the certificate against the name
    bool session_reuse = true;
    // The last session each peer (Peer*) gave, to resume the next
    // connection with. Filled at run time, in each worker for itself
    // (after fork()); peer addresses are stable, so a tls::Session keeps
    // a pointer to its slot.
    mutable std::unordered_map<const void*, SSL_SESSION*> sessions;
};

// One try on one peer, for $upstream_* variables.
struct TryRecord {
    std::string_view addr;      // Peer::text
    int status = 0;             // the response's, 502 or 504 for failures; 0: none yet
    event::Msec start = 0;
    int64_t connect_ms = -1;    // -1: not connected
    int64_t header_ms = -1;     // -1: no response head
    int64_t response_ms = -1;   // until the try ended
    uint64_t bytes = 0;         // read from the origin
    uint64_t sent = 0;          // written to the origin
    uint64_t body = 0;          // of the response body, framing removed
};

// The tries of an exchange, and the last response head's fields (copies),
// in the caller's memory. The caller may keep one log across several
// Clients (the proxy does, across internal redirects).
struct TryLog {
    explicit TryLog(std::pmr::memory_resource* m) : tries(m), headers(m), mem(m) {}
    std::pmr::vector<TryRecord> tries;
    struct Field {
        std::string_view name;
        std::string_view value;
    };
    std::pmr::vector<Field> headers;
    std::pmr::memory_resource* mem;
};

// "proxy_next_upstream" conditions.
enum NextUpstream : uint16_t {
    kNextError = 1 << 0,
    kNextTimeout = 1 << 1,
    kNextInvalidHeader = 1 << 2,
    kNextHttp500 = 1 << 3,
    kNextHttp502 = 1 << 4,
    kNextHttp503 = 1 << 5,
    kNextHttp504 = 1 << 6,
    kNextHttp403 = 1 << 7,
    kNextHttp404 = 1 << 8,
    kNextHttp429 = 1 << 9,
    kNextNonIdempotent = 1 << 10,
    kNextOff = 1 << 11,
};

// How a Client behaves: the proxy fills it from its location's settings,
// a health check from its own. Plain values; the caller keeps `tls` alive.
struct ClientConf {
    std::chrono::milliseconds connect_timeout{60000};
    std::chrono::milliseconds send_timeout{60000};
    std::chrono::milliseconds read_timeout{60000};
    size_t buffer_size = 4096;     // the response head, and the first body buffer
    uint64_t buffers_num = 8;      // more body buffers...
    uint64_t buffers_size = 4096;  // ...of this size
    bool buffering = true;         // default; Hooks::on_head may change it
    uint64_t max_temp_file_size = 1024 * 1024 * 1024;  // 0: never to a file
    uint64_t temp_file_write_size = 8192;
    // Body bytes read from the origin per second, while buffering; 0: no
    // limit ("proxy_limit_rate").
    uint64_t limit_rate = 0;
    bool socket_keepalive = false;  // SO_KEEPALIVE on new connections
    uint16_t next_upstream = kNextError | kNextTimeout;
    uint64_t next_upstream_tries = 0;  // 0: as many as there are peers
    std::chrono::milliseconds next_upstream_timeout{0};  // 0: no limit
    const TlsSettings* tls = nullptr;  // https; null: plain
    const LocalAddr* local = nullptr;  // "proxy_bind"; null: the kernel's choice
};

// What one try sends, set by Hooks::prepare().
struct OutRequest {
    std::string_view head;       // the bytes of the request head; must live as long as the Client
    std::string_view uri;        // the request-target, for log lines
    bool head_method = false;    // HEAD: no response body whatever the framing says
    bool idempotent = true;      // may be sent twice (RFC 9110 9.2.2)
    bool may_keep = false;       // HTTP/1.1 without "Connection: close": poolable
    bool upgrade = false;        // an Upgrade field went: a 101 is acceptable
    std::string_view tls_name;   // https: the name for SNI and verification
    // https: a client certificate and key (absolute paths) chosen for this
    // request ("proxy_ssl_certificate $var"), loaded into the connection's
    // TLS session; empty: the context's, if any.
    std::string_view tls_certificate, tls_certificate_key;
    std::span<const std::string> tls_passwords;
};

enum class BodyMode : uint8_t { None, Buffered, Streamed };

class Client;

// What the owner of a Client decides (see the top for when each is
// called). The proxy implements it in proxy_exchange.cc.
class Hooks {
public:
    // Before every try: fill c.out.
    virtual void prepare(Client& c) = 0;
    // Streamed body: the head is queued on a connection; start handing
    // pieces to c.send_body(). False: the body cannot be had any more (the
    // client sent it to an earlier reader); the exchange fails with 500.
    virtual bool start_body(Client& c) = 0;
    // Streamed body: what was queued went out; more pieces may come.
    virtual void resume_body(Client& c) = 0;

    enum class Head : uint8_t {
        Body,    // the body follows, to on_body()
        Tunnel,  // a 101 the caller passed on: the tunnel starts once downstream_pending() is 0
        Stop,    // the caller answers otherwise (an error page): the try ends here
    };
    // The response head as the origin sent it; its views are valid during
    // the call (c.log().headers has copies).
    virtual Head on_head(Client& c, const http::StatusHead& h) = 0;
    // An interim response other than 100 and 101 (103 Early Hints) came
    // before the final head; its views are valid during the call only.
    virtual void on_interim(Client&, const http::StatusHead&) {}
    // Body bytes, framing removed, in order; moved out of `data`. The
    // chain with last_buf set is the last call. False: nothing more is
    // wanted (the try ends, the connection is not reused).
    virtual bool on_body(Client& c, Chain& data) = 0;
    // Bytes the consumer holds and has not passed on yet.
    virtual size_t downstream_pending() = 0;
    // Asked once, after on_head() said Body and only when a body is still
    // to come that splice() could move (a length or the origin's close
    // frames it, a plain origin connection): whether the consumer takes
    // pipe pieces (core/buf.h), so that the body need not pass through
    // user space. The consumer must then hand them on unread.
    virtual bool body_to_pipe(Client& c) {
        (void)c;
        return false;
    }
    // The consumer went away: the Client stops at once.
    virtual bool gone() = 0;
    // No usable response: the status to answer (502, 504, or the status of
    // the last try when the policy retried on it and no peer was left).
    virtual void on_error(Client& c, int status) = 0;
    // The response was cut after on_head(Body); what arrived was handed
    // over. The consumer must not take it for complete.
    virtual void on_truncated(Client& c) = 0;
    // The tunnel: the other side, and its end.
    virtual event::Duplex& open_tunnel(Client& c, event::Callback on_ready, std::string_view* leftover) = 0;
    // Asked once, when the tunnel opens between two plain sockets: whether
    // its bytes may go through pipes with splice().
    virtual bool tunnel_to_pipes(Client& c) {
        (void)c;
        return false;
    }
    virtual void on_tunnel_end(Client& c) = 0;
    // What the Client's log lines are about (core/log.h): put in scope in
    // each of its callbacks, so that they, and whatever the hooks log from
    // them, carry it. Valid as long as the Client; its tail should name the
    // origin with Client::describe_peer().
    virtual const log::Context* log_context() = 0;
    // A temp file for the response body (proxy_temp_path).
    virtual Result<int> temp_file() = 0;

protected:
    ~Hooks() = default;
};

class Client {
public:
    // `u` and `conf` belong to the generation (or outlive the Client);
    // `log` and the Client's buffers use `mem` (the request arena).
    Client(UpstreamConf& u, const ClientConf& conf, Hooks& hooks, TryLog& log, std::pmr::memory_resource* mem);
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client();

    // ---- before start() --------------------------------------------------------
    // Peer choice: the hashing methods' inputs (see PeerPicker).
    PeerPicker& picker() { return *picker_; }
    // Only this peer, once (health checks): no balancing, no retry.
    void set_fixed_peer(const Peer& p) { fixed_ = &p; }
    // The body after the head: Buffered sends `*buffered` (copies of its
    // Bufs; the caller keeps them) on every try, and Streamed takes pieces
    // from send_body(), `chunked` when the length is unknown.
    void set_body(BodyMode m, const Chain* buffered = nullptr, bool chunked = false);
    // Starts the first try from a posted event.
    void start();

    // ---- while it runs -----------------------------------------------------------
    OutRequest out;  // Hooks::prepare() fills it
    // Streamed body: queues `piece` (framed) for the origin and writes.
    // False: pause until Hooks::resume_body(); a last piece ends the body.
    // Called from the caller's body reader, within or outside a hook.
    bool send_body(Chain& piece);
    // The consumer emptied its queue (the proxy: on_output_drained): held
    // reads and temp file pieces go on. Not from within a hook.
    void downstream_drained();
    // During Hooks::on_head: read the body buffered (a temp file may take
    // what the consumer cannot) or pass it on as it comes.
    void set_buffering(bool on) { buffering_ = on; }
    // The consumer cannot go on (a response filter failed): the Client
    // stops quietly, the connection closed.
    void cancel();

    TryLog& log() { return log_; }
    const Peer* peer() const { return peer_; }
    int status() const { return status_; }
    // The response head's bytes as received (during Hooks::on_head).
    std::string_view raw_head() const { return raw_head_; }
    // The temp file that took part of the body, -1 when none.
    int temp_fd() const { return tmp_fd_; }
    // A chunked response's trailer section as received ("name: value\r\n"
    // lines, checked for syntax, at most 8 KiB), complete when the body's
    // last piece is handed over; empty when there was none.
    std::string_view trailers() const { return trailers_; }
    // Why the last try failed ("connect() failed (111: Connection
    // refused)"), for a caller's own messages; empty when none did.
    std::string_view last_error() const { return last_error_; }
    // Appends ", upstream: \"http://192.0.2.1:80/uri\"" for the peer of
    // the current (or last) try, as nginx's log lines show it; nothing
    // before a peer was chosen.
    void describe_peer(FixedWriter& out) const;

private:
    enum class Stage : uint8_t {
        Start,
        Connecting,
        Handshaking,  // TLS, within connect_timeout
        Active,       // request going out, response head coming in
        Body,         // reading the response body
        Upgrading,    // 101 passed on, waiting for it to leave
        Tunnel,
        Done,
    };
    enum class Framing : uint8_t { None, Length, Chunked, Close };
    // Why a try failed, for the policy and the status to answer.
    enum class Failure : uint8_t { Error, Timeout, InvalidHeader, Status };

    // ---- client.cc ---------------------------------------------------------------
    // The next step from the loop (event::Loop::post): once the caller
    // has returned.
    void schedule(void (Client::*step)());
    // The same after the other connections of this batch had their turn
    // (event::Loop::post_after_batch): for a job that goes on in chunks.
    void yield_to(void (Client::*step)());
    void on_kick();
    bool consumer_gone();
    int64_t elapsed() const;
    TryRecord& cur_try() { return log_.tries.back(); }

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
    bool write_queue();  // false when the connection failed (already handled)
    void request_sent_fully();
    void fail(Failure f, int status, int err, std::string_view what);
    bool may_retry(Failure f, int status) const;
    void end_try(bool failed);
    void close_upstream();
    void release_upstream(bool reusable);
    void report_error();  // a step: Hooks::on_error(err_status_)
    void error_log(log::Level l, int err, std::string_view what, std::string_view action);
    std::string_view action() const;

    // ---- client_response.cc ----------------------------------------------------
    void read_head();
    void process_head(size_t consumed);
    void record_fields(const http::StatusHead& h);
    bool retry_on_status(int status);
    void start_body(size_t consumed);
    void read_body();  // also a step: after a turn of reads
    size_t rate_allowance();  // proxy_limit_rate: bytes the next read may take; 0: wait (armed)
    void on_rate_timer();
    enum class Read : uint8_t { More, Memory, Stop };
    Read splice_body();
    void read_ended(const event::IoResult& io, const char* call);
    void ack_now();
    void take(const char* data, size_t n, SlabRef& slab);
    void emit(const char* data, size_t n, SlabRef& slab);
    bool next_region(char** p, size_t* n, SlabRef** slab, bool* spill);
    // Pool space a read may fill after next_region()'s (see read_body()).
    struct Region {
        char* p;
        size_t n;
        size_t slab;  // in pool_
    };
    static constexpr size_t kGather = 16;
    size_t more_regions(Region* out, size_t max, size_t have);
    bool spill_allowed(size_t n) const;
    Status spill(const char* data, size_t n);
    void push_out();
    bool queue_file_piece();
    void body_complete();
    void send_last();  // a step
    void body_truncated(int err, std::string_view what);
    void on_drained();

    void start_tunnel();
    void begin_tunnel();  // a step, or on_drained
    static void tunnel_ready(void* c);
    void pump();  // also a step: after a turn of transfers
    void end_tunnel();

    // ---- state ----------------------------------------------------------------------
    UpstreamConf& u_;
    const ClientConf& conf_;
    Hooks& hooks_;
    TryLog& log_;
    std::pmr::memory_resource* mem_;

    Stage stage_ = Stage::Start;
    event::Event kick_;
    void (Client::*step_)() = nullptr;
    int err_status_ = 0;  // report_error: the status to answer
    std::string last_error_;

    // The request.
    BodyMode body_mode_ = BodyMode::None;
    const Chain* buffered_ = nullptr;
    bool chunked_up_ = false;     // Streamed with chunked framing
    bool body_started_ = false;   // Streamed: pieces are coming
    bool body_done_ = false;      // every body byte is in the send queue
    bool body_paused_ = false;    // Streamed: the caller waits for the origin
    bool corking_ = false;        // Streamed: send_body() queues behind the head, no write
    bool request_sent_ = false;   // a byte of this try went out
    bool request_done_ = false;   // all of it went out
    event::ChainWriter sendq_;
    char chunk_hdr_[http::kMaxChunkHeader] = {};

    // The origin connection and the peer choice.
    std::optional<PeerPicker> picker_;
    const Peer* fixed_ = nullptr;
    Peer* peer_ = nullptr;
    event::Connection* up_ = nullptr;
    bool reused_ = false;         // from the keepalive pool
    event::Msec up_opened_ = 0;   // when up_ was made, for keepalive_time
    // https: the TLS session of up_, which is up_->transport. It goes to
    // the keepalive pool with the connection (release_upstream) and comes
    // back with it.
    std::unique_ptr<tls::Session> up_tls_;
    bool cached_retried_ = false;
    bool try_open_ = false;       // picker_->done() is owed for peer_
    event::Msec first_start_ = 0;

    // The response.
    // The usual head's fields; more move to the parser's own table.
    http::FieldStore<32> fields_;
    std::optional<http::ResponseParser> parser_;
    SlabRef head_buf_;
    size_t head_len_ = 0;    // bytes in head_buf_
    size_t head_start_ = 0;  // where the current head starts (after a 1xx)
    bool head_read_ = false; // a response byte came in on this try
    std::string_view raw_head_;
    int status_ = 0;
    Framing framing_ = Framing::None;
    uint64_t remaining_ = 0;
    std::optional<http::ChunkedDecoder> dec_;
    std::pmr::string trailers_;
    bool reusable_ = false;        // the response allows another request
    bool buffering_ = true;
    bool temp_ok_ = false;
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
    Chain out_;                 // pieces for the next on_body()
    bool paused_ = false;       // waiting for the consumer to take data
    bool spilling_ = false;     // the bytes being taken go to the temp file
    bool origin_done_ = false;  // the body is complete (or cut) at the origin side
    bool truncated_ = false;
    bool last_sent_ = false;
    bool stopped_ = false;      // on_body said no more
    // proxy_limit_rate: body bytes read since start_body(), against an
    // allowance of one second's worth plus the rate times the time since.
    uint64_t rate_read_ = 0;
    event::Msec rate_start_ = 0;
    bool rate_limited_ = false;
    event::Timer rate_timer_;
    // Splicing (Hooks::body_to_pipe): the pipe the body goes through while
    // it is empty; reads go to memory, as without it, while it is not.
    event::Pipe* pipe_ = nullptr;

    static constexpr uint64_t kFilePiece = 1 << 20;

    // The tunnel after 101: a buffer each way, and with splicing
    // (Hooks::tunnel_to_pipes) a kernel pipe each way, taken once the
    // buffer is empty: the bytes that came with the head go first.
    struct Pipe {
        SlabRef buf;
        size_t pos = 0;
        size_t len = 0;
        bool eof = false;   // the source said EOF
        bool shut = false;  // the destination got its half close
        bool splice = false;
        event::Pipe* kernel = nullptr;
    };
    Pipe c2u_;
    Pipe u2c_;
    event::Duplex* client_ = nullptr;
};

}  // namespace gatehouse::upstream
