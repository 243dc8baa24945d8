// The Redis client on the worker's loop. See redis.h for the contract.
//
// hiredis owns the socket, the output buffer and the reply parser; we own
// readiness and time. Its order of teardown (hiredis 0.14, async.c:
// __redisAsyncFree) is what the hooks below rely on: every queued reply
// callback runs with a null reply, then ev.cleanup (we unregister the fd),
// then onDisconnect, then the fd is closed and the context freed.
#include "upstream/redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/ioctl.h>

#include <algorithm>

#include "core/log.h"

namespace gatehouse::upstream {

using event::Callback;
using event::Loop;
using event::Msec;

RedisClient::RedisClient(Loop& loop, const RedisSpec& spec) : loop_(loop), spec_(spec) {
    deadline_.cb = Callback::to<&RedisClient::on_timer>(this);
    retry_.cb = Callback::to<&RedisClient::on_retry>(this);
    flush_.cb = Callback::to<&RedisClient::on_flush>(this);
    watcher_.on_read = Callback::to<&RedisClient::on_read>(this);
    watcher_.on_write = Callback::to<&RedisClient::on_write>(this);
}

RedisClient::~RedisClient() {
    state_ = State::Closing;
    loop_.cancel(retry_);
    loop_.cancel(deadline_);
    if (ac_) redisAsyncFree(ac_);  // null replies to the waiting, then ev_cleanup
    loop_.unpost(flush_);
}

void RedisClient::start() {
    if (state_ == State::Idle) connect();
}

void RedisClient::connect() {
    ac_ = spec_.unix_socket ? redisAsyncConnectUnix(spec_.host.c_str())
                            : redisAsyncConnect(spec_.host.c_str(), spec_.port);
    GH_CHECK(ac_ != nullptr);  // hiredis returns null only out of memory
    if (ac_->err) {
        // socket() or connect() failed at once (no route, no such path).
        if (!lost_logged_)
            GH_LOG(Warn, "connect() to redis \"%s\" at %s failed (%s), retrying", spec_.name.c_str(),
                   spec_.text.c_str(), ac_->errstr);
        lost_logged_ = true;
        redisAsyncFree(ac_);  // no hooks set yet: nothing calls back
        ac_ = nullptr;
        state_ = State::Backoff;
        loop_.arm(retry_, std::chrono::milliseconds(backoff_));
        backoff_ = std::min(backoff_ * 2, kRedisBackoffMax);
        return;
    }
    ac_->data = this;
    ac_->ev.data = this;
    ac_->ev.addRead = ev_noop;  // the Watcher always reads
    ac_->ev.delRead = ev_noop;
    ac_->ev.addWrite = ev_add_write;
    ac_->ev.delWrite = ev_del_write;
    ac_->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac_, on_connect);
    redisAsyncSetDisconnectCallback(ac_, on_disconnect);
    watcher_.set_fd(ac_->c.fd);
    if (auto s = loop_.add(watcher_, event::Interest::ReadWrite); !s) {
        GH_LOG(Error, "redis \"%s\": %s", spec_.name.c_str(), s.message().c_str());
        drop("epoll_ctl() failed");
        return;
    }
    state_ = State::Connecting;
    connected_ = false;
    connect_deadline_ = loop_.now() + static_cast<Msec>(spec_.connect_timeout.count());
    if (!spec_.password.empty()) {
        // Queued now, written with the connection's first write: the
        // reply decides readiness (on_auth).
        const std::string_view with_user[] = {"AUTH", spec_.user, spec_.password};
        const std::string_view without[] = {"AUTH", spec_.password};
        if (spec_.user.empty()) send(without, on_auth, this);
        else send(with_user, on_auth, this);
    }
    arm_deadline();
}

bool RedisClient::send(std::span<const std::string_view> argv, ReplyFn fn, void* data) {
    std::vector<const char*> p(argv.size());
    std::vector<size_t> len(argv.size());
    for (size_t i = 0; i < argv.size(); ++i) {
        p[i] = argv[i].data();
        len[i] = argv[i].size();
    }
    if (redisAsyncCommandArgv(ac_, on_reply, this, static_cast<int>(argv.size()), p.data(), len.data()) != REDIS_OK)
        return false;
    const Msec base = connected_ ? loop_.now() : connect_deadline_;
    pending_.push_back({fn, data, base + static_cast<Msec>(spec_.timeout.count())});
    arm_deadline();
    return true;
}

bool RedisClient::command(std::span<const std::string_view> argv, ReplyFn fn, void* data) {
    if (state_ != State::Ready || !ac_) return false;
    return send(argv, fn, data);
}

void RedisClient::on_reply(redisAsyncContext* ac, void* r, void* priv) {
    (void)ac;
    auto* c = static_cast<RedisClient*>(priv);
    GH_CHECK(!c->pending_.empty());  // one Pending per command hiredis holds
    Pending p = c->pending_.front();
    c->pending_.pop_front();
    c->arm_deadline();
    p.fn(p.data, static_cast<redisReply*>(r));
}

void RedisClient::on_auth(void* data, redisReply* reply) {
    auto* c = static_cast<RedisClient*>(data);
    if (!reply) return;  // the connection is going: ev_cleanup retries
    if (reply->type == REDIS_REPLY_ERROR) {
        GH_LOG(Error, "redis \"%s\" at %s refused AUTH: %.*s", c->spec_.name.c_str(), c->spec_.text.c_str(),
               static_cast<int>(reply->len), reply->str);
        c->lost_logged_ = true;  // said once: the retries would repeat it
        c->drop("AUTH refused");
        return;
    }
    c->state_ = State::Ready;
    c->backoff_ = kRedisBackoffMin;
    if (c->lost_logged_)
        GH_LOG(Notice, "redis \"%s\" at %s is reachable again", c->spec_.name.c_str(), c->spec_.text.c_str());
    c->lost_logged_ = false;
}

void RedisClient::on_connect(const redisAsyncContext* ac, int status) {
    auto* c = static_cast<RedisClient*>(ac->data);
    if (status != REDIS_OK) return;  // hiredis frees the context: ev_cleanup logs, retries
    c->connected_ = true;
    if (c->spec_.password.empty()) {
        c->state_ = State::Ready;
        c->backoff_ = kRedisBackoffMin;
            if (c->lost_logged_)
            GH_LOG(Notice, "redis \"%s\" at %s is reachable again", c->spec_.name.c_str(), c->spec_.text.c_str());
        c->lost_logged_ = false;
    }
    c->arm_deadline();
    // What was queued before the connection (AUTH) goes out now.
    if (c->ac_ && (c->ac_->c.flags & REDIS_CONNECTED)) c->loop_.post(c->flush_);
}

void RedisClient::on_disconnect(const redisAsyncContext*, int) {
    // ev_cleanup, which ran just before, said what happened.
}

void RedisClient::drop(const char* why) {
    if (!ac_) return;
    if (!lost_logged_ && state_ != State::Closing)
        GH_LOG(Warn, "redis \"%s\" at %s: %s, falling back until it is reachable again", spec_.name.c_str(),
               spec_.text.c_str(), why);
    lost_logged_ = true;
    redisAsyncFree(ac_);  // from inside a reply callback hiredis frees after it
}

void RedisClient::ev_cleanup(void* p) {
    auto* c = static_cast<RedisClient*>(p);
    if (c->ac_ && c->ac_->err && !c->lost_logged_ && c->state_ != State::Closing)
        GH_LOG(Warn, "redis \"%s\" at %s: %s, falling back until it is reachable again", c->spec_.name.c_str(),
               c->spec_.text.c_str(), c->ac_->errstr);
    if (c->state_ != State::Closing) c->lost_logged_ = true;
    c->loop_.remove(c->watcher_);
    c->loop_.unpost(c->flush_);
    c->loop_.cancel(c->deadline_);
    c->ac_ = nullptr;
    c->connected_ = false;
    if (c->state_ == State::Closing) return;  // the destructor
    c->state_ = State::Backoff;
    c->loop_.arm(c->retry_, std::chrono::milliseconds(c->backoff_));
    c->backoff_ = std::min(c->backoff_ * 2, kRedisBackoffMax);
}

void RedisClient::ev_add_write(void* p) {
    auto* c = static_cast<RedisClient*>(p);
    // Edge-triggered: a socket that stayed writable gives no new event,
    // so the flush is posted. Before the connection is up its first
    // writable event does it (hiredis takes that as "connected").
    if (c->connected_) c->loop_.post(c->flush_);
}

void RedisClient::ev_del_write(void*) {}

void RedisClient::on_flush() {
    if (ac_ && connected_) redisAsyncHandleWrite(ac_);
}

void RedisClient::on_read() {
    // hiredis reads one buffer per call; with an edge-triggered fd the
    // rest would wait for the next edge, so read while bytes are queued.
    while (ac_) {
        redisAsyncContext* ac = ac_;
        redisAsyncHandleRead(ac);
        if (ac_ != ac) return;  // freed (EOF, error, a callback dropped it)
        int n = 0;
        if (ioctl(ac->c.fd, FIONREAD, &n) != 0 || n <= 0) return;
    }
}

void RedisClient::on_write() {
    if (ac_) redisAsyncHandleWrite(ac_);
}

void RedisClient::arm_deadline() {
    Msec next = Loop::kForever;
    if (ac_ && !connected_) next = connect_deadline_;
    if (!pending_.empty()) next = std::min(next, pending_.front().deadline);
    if (next == Loop::kForever) loop_.cancel(deadline_);
    else loop_.arm_at(deadline_, next);
}

void RedisClient::on_timer() {
    const Msec now = loop_.now();
    if (ac_ && !connected_ && now >= connect_deadline_) {
        drop("connect() timed out");
        return;
    }
    if (!pending_.empty() && now >= pending_.front().deadline) {
        drop("timed out waiting for a reply");
        return;
    }
    arm_deadline();
}

void RedisClient::on_retry() {
    if (state_ == State::Backoff) connect();
}

}  // namespace gatehouse::upstream
