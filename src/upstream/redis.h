// The per-worker Redis client: "redis NAME { ... }" at the http level.
//
//     redis fleet {
//         server 10.0.0.7:6379 password=secret user=gatehouse;
//         timeout 50ms;
//     }
//
// What it is for: limit_req_zone and limit_conn_zone "sync=NAME" (see
// http/limit_sync.h) exchange their counts with the other nodes of a
// fleet through this Redis. Those callers never put Redis on a request's
// path: they send batches from a timer and use the answers when they
// come; a client that is not ready() makes them fall back to local
// limits.
//
// The connection is a socket of our own on this worker's Loop, plain or
// through the same TLS transport (tls::Session, a client context) that
// proxy_pass https:// uses; one code path for both, TLS only adding a
// handshake after connect() and before AUTH. hiredis is used as a library
// of two pure functions: redisFormatCommandArgv() makes the bytes of a
// command, a redisReader turns the bytes read into redisReply objects.
// Commands are appended to one output buffer and written by a posted
// Event, so the commands of one loop iteration leave in one write (and,
// with TLS, in as few records as their size allows); the bytes of a
// write that must be retried stay in place, as OpenSSL requires. Over
// TLS without a password, a PING stands in for AUTH: the client is
// ready once it is answered (TLS 1.3 refuses a client certificate only
// after the client's handshake). Like the DNS client (event/resolver.h)
// it is made on first use per worker and per block, lives until the
// worker exits, and never blocks: the address is a literal resolved at
// configuration time. The socket is not a slot of the worker's
// ConnectionTable: one per block and worker, made outside the accept
// path, it must not compete with clients for worker_connections.
//
// Failures: a connect (with the TLS handshake), AUTH or reply that does
// not come within its time (connect_timeout, timeout) or an error closes
// the connection; every command still waiting gets a null reply, and the
// client reconnects after a backoff (kBackoffMin, doubling to
// kBackoffMax, reset by a successful AUTH or connect). Each loss is
// logged once at warn, each recovery at notice; a refused AUTH, or TLS
// refused for one of OpenSSL's reasons (a CA, a name, an alert such as
// a client certificate refused) at error, since only the configuration
// or Redis' can fix it. An EOF or reset is a loss like any other, even
// in a handshake: a restarting Redis gives them too.
//
// TLS ("ssl on" and the ssl_* lines, see gatehouse.conf(5)): the client
// context is built when the configuration is read (errors are [emerg]);
// the session Redis gives is kept per worker and offered at the next
// connect (ssl_session_reuse), so a reconnect costs one round trip less.
//
// Limits (documented in gatehouse.conf(5)): one endpoint per block; a
// Redis Cluster is not followed (MOVED and ASK replies are errors to the
// caller), so point the block at a standalone Redis or its replica set's
// primary.
//
// Threading: the worker's loop thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/fwd.h"
#include "conf/module.h"
#include "conf/values.h"
#include "event/fwd.h"
#include "event/loop.h"
#include "event/connection.h"
#include "event/timer.h"

struct redisReader;
struct redisReply;
using SSL_SESSION = struct ssl_session_st;

namespace gatehouse::tls {
class Context;
class Session;
}  // namespace gatehouse::tls

namespace gatehouse::upstream {

// "ssl on" in a redis block: what each connection's session starts with.
// Owner: the generation arena, like its RedisSpec.
struct RedisTls {
    const tls::Context* ctx = nullptr;  // client side; owner: the generation arena
    // "ssl_name": the name sent as SNI (with ssl_server_name on) and the
    // one Redis' certificate must carry (with ssl_verify on). Default:
    // the host of "server" as written; empty for a unix socket (the
    // chain alone is verified).
    std::string name;
    bool server_name = false;   // "ssl_server_name"
    bool verify = false;        // "ssl_verify"
    bool session_reuse = true;  // "ssl_session_reuse"
};

// One "redis" block. Owner: the generation arena; immutable once read.
struct RedisSpec {
    std::string name;
    std::string where;  // file:line of the block
    // "server": a numeric address ("127.0.0.1",
    // "::1"; a name is looked up when the configuration is read) and a
    // port, or a unix socket path.
    std::string host;
    uint16_t port = 6379;
    bool unix_socket = false;
    std::string text;  // "127.0.0.1:6379", "unix:/run/redis.sock": logs
    std::string password;  // password=: AUTH when set
    std::string user;      // user=: AUTH user password (Redis 6 ACL)
    conf::Duration timeout{50};           // "timeout": a reply
    conf::Duration connect_timeout{1000}; // "connect_timeout"
    conf::Duration sync_interval{20};     // "sync_interval": see limit_sync.h
    uint32_t sync_batch = 1000;           // "sync_batch": keys per round trip, <= 10000
    const RedisTls* tls = nullptr;        // "ssl on"; null: plain TCP (or unix)
};

// The module's main-level struct: the blocks of the generation.
struct RedisMainConf {
    std::vector<const RedisSpec*> blocks;  // owner: the generation arena
};

extern const conf::Module redis_module;

// The block called `name` in the configuration being read (any block of
// the http level, read before or after the caller), or null.
const RedisSpec* find_redis(const conf::Ctx& cx, std::string_view name);

inline constexpr event::Msec kRedisBackoffMin = 100;
inline constexpr event::Msec kRedisBackoffMax = 2000;

class RedisClient {
public:
    // Runs once per command, from the loop (never from inside command()):
    // `reply` is hiredis' parsed reply, valid during the call only, or
    // null when the command failed (timeout, connection lost, client
    // destroyed). A Redis error reply is a reply (type REDIS_REPLY_ERROR).
    using ReplyFn = void (*)(void* data, redisReply* reply);

    // Connects at the first start(). `spec` and `loop` outlive it.
    RedisClient(event::Loop& loop, const RedisSpec& spec);
    // Closes the connection; waiting commands get their null reply now.
    ~RedisClient();
    RedisClient(const RedisClient&) = delete;
    RedisClient& operator=(const RedisClient&) = delete;

    // Starts connecting if idle (not while a backoff runs). Idempotent.
    void start();
    // Connected, and AUTH (or, over TLS, the first PING) answered:
    // command() will send.
    bool ready() const { return state_ == State::Ready; }
    // A connection failed or was lost and none is ready since; false
    // while the first one is being made (callers tell "not yet" from
    // "lost" by it).
    bool down() const { return lost_logged_; }

    // Queues one command behind those in flight (pipelined), each
    // argument binary-safe. False when not ready: nothing was sent and
    // `fn` will not run. `data` must stay valid until `fn` ran.
    bool command(std::span<const std::string_view> argv, ReplyFn fn, void* data);

    const RedisSpec& spec() const { return spec_; }
    size_t in_flight() const { return pending_.size(); }

private:
    enum class State : uint8_t {
        Idle,
        Connecting,   // connect() in progress
        Handshaking,  // TLS
        Auth,         // AUTH (or, over TLS, a PING) sent, its reply awaited
        Ready,
        Backoff,      // closed; retry_ armed
        Closing,      // the destructor
    };
    struct Pending {
        ReplyFn fn;
        void* data;
        event::Msec deadline;
    };

    void connect();
    void connected();    // TCP is up: the handshake, or what follows it
    void established();  // TLS done (or none): AUTH, or ready
    void handshake_failed();
    void become_ready();
    // Closes the connection, gives every waiting command its null reply
    // and, unless closing, schedules a retry. The loss is logged once
    // until a recovery: at warn, or at error for a `config_fault` (a
    // refused AUTH or TLS handshake).
    void drop(const std::string& why, bool config_fault = false);
    // The connection failed or ended while reading or writing: drop()
    // with what is known of why; `ssl_error`: an SSL error (an alert),
    // which is logged as a configuration fault.
    void lost(const std::string& why, bool ssl_error);
    std::string io_error(const char* tls_call, const char* call, int err) const;
    void close_socket();
    void append(std::span<const std::string_view> argv);
    void arm_deadline();
    void on_read();
    void on_write();
    void on_flush();
    void on_timer();
    void on_retry();
    void flush();
    bool send(std::span<const std::string_view> argv, ReplyFn fn, void* data);
    static void on_auth(void* data, redisReply* reply);

    event::Loop& loop_;
    const RedisSpec& spec_;
    State state_ = State::Idle;
    bool lost_logged_ = false;
    event::Msec backoff_ = kRedisBackoffMin;
    event::Msec connect_deadline_ = 0;
    // Bumped at each close: a reply callback that dropped the connection
    // (a refused AUTH) stops the loop that was handing out replies.
    uint64_t generation_ = 0;
    std::deque<Pending> pending_;  // in sending order: replies come in order
    std::string out_;              // commands not written yet, from out_sent_
    size_t out_sent_ = 0;
    // Not a slot of the ConnectionTable (see above); its io is the socket
    // (fd -1 when closed). One object for the client's life: the loop may
    // still be inside its io's callback when the socket is closed.
    event::Connection conn_;
    std::unique_ptr<tls::Session> tls_;  // with spec_.tls, from connect to close
    redisReader* reader_ = nullptr;      // owned; one per connection
    SSL_SESSION* session_ = nullptr;     // owned; the last one Redis gave (session reuse)
    event::Event flush_;
    event::Timer deadline_;  // connect_timeout, then the oldest reply's timeout
    event::Timer retry_;
};

// The worker's client for `spec`, made and started at first use;
// destroyed at worker exit (redis_module's exit_worker). Worker loop
// thread only, after event::worker_loop() is set.
RedisClient& worker_redis(const RedisSpec& spec);

}  // namespace gatehouse::upstream
