// The Redis client on the worker's loop. See redis.h for the contract.
//
// hiredis is a formatter and a parser here; the socket, its bytes, TLS
// and time are ours. Order of teardown (drop): the socket and TLS session
// go first, then the waiting commands get their null replies, so a reply
// callback that sends again finds the client not ready instead of a half
// closed connection.
#include "upstream/redis.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "core/log.h"
#include "tls/session.h"

namespace gatehouse::upstream {

using event::Callback;
using event::IoResult;
using event::Loop;
using event::Msec;

namespace {

std::string errno_text(const char* call, int err) {
    return std::string(call) + " failed (" + std::to_string(err) + ": " + std::strerror(err) + ")";
}

// One read's worth; replies bigger than this are fed in pieces.
constexpr size_t kReadChunk = 16384;

}  // namespace

RedisClient::RedisClient(Loop& loop, const RedisSpec& spec) : loop_(loop), spec_(spec) {
    deadline_.cb = Callback::to<&RedisClient::on_timer>(this);
    retry_.cb = Callback::to<&RedisClient::on_retry>(this);
    flush_.cb = Callback::to<&RedisClient::on_flush>(this);
    conn_.io.on_read = Callback::to<&RedisClient::on_read>(this);
    conn_.io.on_write = Callback::to<&RedisClient::on_write>(this);
}

RedisClient::~RedisClient() {
    state_ = State::Closing;
    loop_.cancel(retry_);
    drop("");  // null replies to the waiting; logs nothing while closing
    loop_.cancel(deadline_);
    loop_.unpost(flush_);
    if (session_) SSL_SESSION_free(session_);
}

void RedisClient::start() {
    if (state_ == State::Idle) connect();
}

void RedisClient::connect() {
    sockaddr_storage sa{};
    socklen_t sa_len = 0;
    if (spec_.unix_socket) {
        auto* sun = reinterpret_cast<sockaddr_un*>(&sa);
        sun->sun_family = AF_UNIX;
        if (spec_.host.size() >= sizeof sun->sun_path) {
            drop("unix socket path too long");
            return;
        }
        std::memcpy(sun->sun_path, spec_.host.data(), spec_.host.size());
        sa_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + spec_.host.size() + 1);
    } else {
        auto* sin = reinterpret_cast<sockaddr_in*>(&sa);
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(&sa);
        if (inet_pton(AF_INET, spec_.host.c_str(), &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons(spec_.port);
            sa_len = sizeof(sockaddr_in);
        } else if (inet_pton(AF_INET6, spec_.host.c_str(), &sin6->sin6_addr) == 1) {
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(spec_.port);
            sa_len = sizeof(sockaddr_in6);
        } else {
            // The configuration resolved it; only a hand-made spec gets here.
            drop("invalid address \"" + spec_.host + "\"");
            return;
        }
    }
    int fd = ::socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        drop(errno_text("socket()", errno));
        return;
    }
    if (sa.ss_family != AF_UNIX) {
        // Batches are small and wait for nothing else (as nginx's upstream
        // connections, no Nagle).
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    conn_.io.set_fd(fd);
    state_ = State::Connecting;
    connect_deadline_ = loop_.now() + static_cast<Msec>(spec_.connect_timeout.count());
    // EINTR, like EINPROGRESS, leaves the connect going on: writability
    // tells when it is done. A unix socket may connect at once; the first
    // writable event finds it connected all the same.
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sa_len) < 0 && errno != EINPROGRESS &&
        errno != EINTR) {
        drop(errno_text("connect()", errno));
        return;
    }
    if (auto s = loop_.add(conn_.io, event::Interest::ReadWrite); !s) {
        drop(s.message());
        return;
    }
    reader_ = redisReaderCreate();
    GH_CHECK(reader_ != nullptr);  // null only out of memory
    if (!spec_.password.empty()) {
        // Queued now, written once the connection (and TLS) is up: its
        // reply decides readiness (on_auth).
        const std::string_view with_user[] = {"AUTH", spec_.user, spec_.password};
        const std::string_view without[] = {"AUTH", spec_.password};
        if (spec_.user.empty()) send(without, on_auth, this);
        else send(with_user, on_auth, this);
    }
    arm_deadline();
}

void RedisClient::connected() {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(conn_.fd(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err != 0) {
        drop(errno_text("connect()", err));
        return;
    }
    if (!spec_.tls) {
        established();
        return;
    }
    const RedisTls& t = *spec_.tls;
    tls_ = std::make_unique<tls::Session>(*t.ctx, conn_.fd(), spec_.text);
    // No SNI for an IP literal (RFC 6066 3), as for origins.
    in6_addr ip;
    const bool literal =
        inet_pton(AF_INET, t.name.c_str(), &ip) == 1 || inet_pton(AF_INET6, t.name.c_str(), &ip) == 1;
    if (t.server_name && !literal && !t.name.empty()) tls_->set_server_name(t.name);
    if (t.verify && !t.name.empty()) tls_->set_verify_name(t.name);
    if (t.session_reuse) {
        tls_->save_session = &session_;
        tls_->resume(session_);
    }
    conn_.transport = tls_.get();
    state_ = State::Handshaking;
    switch (tls_->handshake(conn_)) {
        case tls::Session::Step::Done: established(); return;
        case tls::Session::Step::Again: return;
        case tls::Session::Step::Fail: break;
    }
    handshake_failed();
}

void RedisClient::handshake_failed() {
    // A session Redis no longer takes must not fail the next try too.
    if (session_) {
        SSL_SESSION_free(session_);
        session_ = nullptr;
    }
    // OpenSSL's reasons ("(SSL: ...)": a certificate not trusted, a wrong
    // name, an alert) are the configuration's to fix: error. An EOF or
    // a reset in the handshake is a network's or a restarting Redis':
    // warn, as any loss.
    const std::string& why = tls_->error();
    drop(why, why.find("(SSL: ") != std::string::npos);
}

void RedisClient::established() {
    // What a reconnection cost: a full handshake, or one round trip less.
    if (tls_)
        GH_LOG(Info, "redis \"%s\" at %s: %.*s, SSL session %s", spec_.name.c_str(), spec_.text.c_str(),
               static_cast<int>(tls_->protocol().size()), tls_->protocol().data(),
               tls_->reused() ? "reused" : "new");
    // The reply deadlines counted from connect_deadline_ stay: AUTH is
    // part of connecting.
    if (!spec_.password.empty()) {
        state_ = State::Auth;
    } else if (spec_.tls) {
        // TLS 1.3 ends the client's handshake before the server checked
        // its certificate: a refusal (--tls-auth-clients yes, none or a
        // wrong one sent) comes as an alert on the first read. A PING
        // answered proves the session before callers rely on it, as an
        // AUTH answered does.
        state_ = State::Auth;
        const std::string_view ping[] = {"PING"};
        send(ping, on_auth, this);
    } else {
        become_ready();
    }
    arm_deadline();
    flush();
}

void RedisClient::become_ready() {
    state_ = State::Ready;
    backoff_ = kRedisBackoffMin;
    if (lost_logged_)
        GH_LOG(Notice, "redis \"%s\" at %s is reachable again", spec_.name.c_str(), spec_.text.c_str());
    lost_logged_ = false;
}

void RedisClient::append(std::span<const std::string_view> argv) {
    std::vector<const char*> p(argv.size());
    std::vector<size_t> len(argv.size());
    for (size_t i = 0; i < argv.size(); ++i) {
        p[i] = argv[i].data();
        len[i] = argv[i].size();
    }
    char* cmd = nullptr;
    const int n = redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), p.data(), len.data());
    GH_CHECK(n >= 0 && cmd != nullptr);  // fails only out of memory
    out_.append(cmd, static_cast<size_t>(n));
    redisFreeCommand(cmd);
}

bool RedisClient::send(std::span<const std::string_view> argv, ReplyFn fn, void* data) {
    append(argv);
    const bool up = state_ == State::Ready || state_ == State::Auth;
    const Msec base = up ? loop_.now() : connect_deadline_;
    pending_.push_back({fn, data, base + static_cast<Msec>(spec_.timeout.count())});
    arm_deadline();
    // Written at the end of this iteration, with whatever else is sent by
    // then: one write (one TLS record) per batch of commands.
    if (up) loop_.post_after_batch(flush_);
    return true;
}

bool RedisClient::command(std::span<const std::string_view> argv, ReplyFn fn, void* data) {
    if (state_ != State::Ready) return false;
    return send(argv, fn, data);
}

void RedisClient::on_auth(void* data, redisReply* reply) {
    auto* c = static_cast<RedisClient*>(data);
    if (!reply) return;  // the connection is going: drop() retries
    if (reply->type == REDIS_REPLY_ERROR) {
        const char* what = c->spec_.password.empty() ? "PING" : "AUTH";
        GH_LOG(Error, "redis \"%s\" at %s refused %s: %.*s", c->spec_.name.c_str(), c->spec_.text.c_str(), what,
               static_cast<int>(reply->len), reply->str);
        c->lost_logged_ = true;  // said once: the retries would repeat it
        c->drop(std::string(what) + " refused");
        return;
    }
    c->become_ready();
}

void RedisClient::flush() {
    while (out_sent_ < out_.size()) {
        IoResult r = conn_.send({out_.data() + out_sent_, out_.size() - out_sent_});
        if (r.kind == IoResult::Again) return;  // on_write goes on
        if (r.kind != IoResult::Ok) {
            lost(io_error("SSL_write()", "send()", r.err), tls_ && r.err == EPROTO);
            return;
        }
        out_sent_ += r.bytes;
    }
    out_.clear();
    out_sent_ = 0;
}

void RedisClient::on_flush() {
    if (state_ == State::Ready || state_ == State::Auth) flush();
}

void RedisClient::on_write() {
    switch (state_) {
        case State::Connecting: connected(); return;
        case State::Handshaking: on_read(); return;
        case State::Auth:
        case State::Ready:
            // A read that had to write first (a TLS 1.3 key update).
            if (tls_ && tls_->read_wants_write()) on_read();
            if (state_ == State::Auth || state_ == State::Ready) flush();
            return;
        default: return;
    }
}

void RedisClient::on_read() {
    if (state_ == State::Connecting) {
        // An error or a refusal may come as readability first.
        connected();
        return;
    }
    if (state_ == State::Handshaking) {
        switch (tls_->handshake(conn_)) {
            case tls::Session::Step::Done: established(); return;
            case tls::Session::Step::Again: return;
            case tls::Session::Step::Fail: break;
        }
        handshake_failed();
        return;
    }
    if (state_ != State::Auth && state_ != State::Ready) return;
    const uint64_t gen = generation_;
    char buf[kReadChunk];
    for (;;) {
        IoResult r = conn_.recv(buf);
        if (r.kind == IoResult::Again) return;
        if (r.kind == IoResult::Eof) {
            lost("connection closed by redis", false);
            return;
        }
        if (r.kind == IoResult::Error) {
            lost(io_error("SSL_read()", "recv()", r.err), tls_ && r.err == EPROTO);
            return;
        }
        if (redisReaderFeed(reader_, buf, r.bytes) != REDIS_OK) {
            drop(std::string("invalid reply (") + reader_->errstr + ")");
            return;
        }
        for (;;) {
            void* reply = nullptr;
            if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
                drop(std::string("invalid reply (") + reader_->errstr + ")");
                return;
            }
            if (!reply) break;
            if (pending_.empty()) {
                // Redis speaks only when asked: a reply nobody asked for
                // means the stream is out of step.
                freeReplyObject(reply);
                drop("unexpected reply");
                return;
            }
            Pending p = pending_.front();
            pending_.pop_front();
            p.fn(p.data, static_cast<redisReply*>(reply));
            freeReplyObject(reply);
            if (generation_ != gen) return;  // the callback dropped the connection
            arm_deadline();
        }
    }
}

std::string RedisClient::io_error(const char* tls_call, const char* call, int err) const {
    // An SSL error (an alert) says more than its EPROTO.
    if (tls_ && err == EPROTO && !tls_->error().empty()) return tls_->error();
    return errno_text(tls_ ? tls_call : call, err);
}

void RedisClient::lost(const std::string& why, bool ssl_error) {
    if (state_ == State::Auth && tls_) {
        // TLS 1.3: Redis checks the client certificate after our
        // handshake ended; refused, it sends an alert and closes, and
        // what we see first (the alert, a reset on our PING or AUTH, an
        // EOF) depends on timing, so each says what it may be. An alert
        // is about the configuration (error); a reset may also be a
        // Redis restarting (warn).
        drop(why + " after the SSL handshake, before the first reply (a client certificate refused?)", ssl_error);
        return;
    }
    drop(why, ssl_error);
}

void RedisClient::close_socket() {
    ++generation_;
    if (tls_) {
        tls_->shutdown();  // close_notify, unless the session failed
        conn_.transport = nullptr;
        tls_.reset();
    }
    if (conn_.fd() >= 0) loop_.close(conn_.io);
    if (reader_) {
        redisReaderFree(reader_);
        reader_ = nullptr;
    }
    out_.clear();
    out_sent_ = 0;
    loop_.unpost(flush_);
    loop_.cancel(deadline_);
}

void RedisClient::drop(const std::string& why, bool config_fault) {
    const bool closing = state_ == State::Closing;
    if (!closing && !lost_logged_) {
        if (config_fault)
            GH_LOG(Error, "redis \"%s\" at %s: %s, falling back until it is reachable again", spec_.name.c_str(),
                   spec_.text.c_str(), why.c_str());
        else
            GH_LOG(Warn, "redis \"%s\" at %s: %s, falling back until it is reachable again", spec_.name.c_str(),
                   spec_.text.c_str(), why.c_str());
    }
    close_socket();
    if (!closing) {
        lost_logged_ = true;
        state_ = State::Backoff;
        loop_.arm(retry_, std::chrono::milliseconds(backoff_));
        backoff_ = std::min(backoff_ * 2, kRedisBackoffMax);
    }
    std::deque<Pending> waiting;
    waiting.swap(pending_);
    for (const Pending& p : waiting) p.fn(p.data, nullptr);
}

void RedisClient::arm_deadline() {
    Msec next = Loop::kForever;
    if (state_ == State::Connecting || state_ == State::Handshaking) next = connect_deadline_;
    if (!pending_.empty()) next = std::min(next, pending_.front().deadline);
    if (next == Loop::kForever) loop_.cancel(deadline_);
    else loop_.arm_at(deadline_, next);
}

void RedisClient::on_timer() {
    const Msec now = loop_.now();
    if (state_ == State::Connecting && now >= connect_deadline_) {
        drop("connect() timed out");
        return;
    }
    if (state_ == State::Handshaking && now >= connect_deadline_) {
        drop("SSL handshake timed out");
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
