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
// The connection is hiredis' async API (hiredis 0.14) driven by this
// worker's Loop through a small adapter: one Watcher registered
// edge-triggered for read and write for the life of the socket; hiredis'
// addWrite posts an Event that flushes its output buffer (an
// edge-triggered socket that is already writable gives no new event);
// cleanup removes the Watcher before hiredis closes the fd. Like the DNS
// client (event/resolver.h) it is made on first use per worker and per
// block, lives until the worker exits, and never blocks: the address is a
// literal resolved at configuration time.
//
// Failures: a connect, AUTH or reply that does not come within its time
// (connect_timeout, timeout) or an error closes the connection; every
// command still waiting gets a null reply, and the client reconnects
// after a backoff (kBackoffMin, doubling to kBackoffMax, reset by a
// successful AUTH or connect). Each loss is logged once at warn, each
// recovery at notice.
//
// Limits (documented in gatehouse.conf(5)): one endpoint per block; a
// Redis Cluster is not followed (MOVED and ASK replies are errors to the
// caller), so point the block at a standalone Redis or its replica set's
// primary. No TLS: hiredis 0.14 has none; use a private network or a
// local TLS tunnel (stunnel, spiped).
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
#include "event/timer.h"

struct redisAsyncContext;
struct redisReply;

namespace gatehouse::upstream {

// One "redis" block. Owner: the generation arena; immutable once read.
struct RedisSpec {
    std::string name;
    std::string where;  // file:line of the block
    // "server": a numeric address as hiredis takes it ("127.0.0.1",
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
    // Connected and authenticated: command() will send.
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
    enum class State : uint8_t { Idle, Connecting, Ready, Backoff, Closing };
    struct Pending {
        ReplyFn fn;
        void* data;
        event::Msec deadline;
    };

    void connect();
    void drop(const char* why);  // closes the connection, schedules a retry
    void arm_deadline();
    void on_read();
    void on_write();
    void on_flush();
    void on_timer();
    void on_retry();
    bool send(std::span<const std::string_view> argv, ReplyFn fn, void* data);
    static void on_reply(redisAsyncContext* ac, void* r, void* priv);
    static void on_connect(const redisAsyncContext* ac, int status);
    static void on_disconnect(const redisAsyncContext* ac, int status);
    static void on_auth(void* data, redisReply* reply);
    // hiredis' event hooks (ac->ev).
    static void ev_add_write(void* p);
    static void ev_del_write(void* p);
    static void ev_cleanup(void* p);
    static void ev_noop(void*) {}

    event::Loop& loop_;
    const RedisSpec& spec_;
    redisAsyncContext* ac_ = nullptr;  // owned (hiredis frees it); null when closed
    State state_ = State::Idle;
    bool connected_ = false;  // TCP connected (hiredis' first write event)
    bool lost_logged_ = false;
    event::Msec backoff_ = kRedisBackoffMin;
    event::Msec connect_deadline_ = 0;
    std::deque<Pending> pending_;  // in sending order: replies come in order
    event::Watcher watcher_;
    event::Event flush_;
    event::Timer deadline_;  // connect_timeout, then the oldest reply's timeout
    event::Timer retry_;
};

// The worker's client for `spec`, made and started at first use;
// destroyed at worker exit (redis_module's exit_worker). Worker loop
// thread only, after event::worker_loop() is set.
RedisClient& worker_redis(const RedisSpec& spec);

}  // namespace gatehouse::upstream
