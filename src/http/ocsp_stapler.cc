#include "http/ocsp_stapler.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/arena.h"
#include "event/connection.h"
#include "event/worker.h"
#include "upstream/upstream.h"

namespace gatehouse::http {

namespace {

// The staplers of this worker with a fetch running, for quit_worker().
std::vector<OcspStapler*>& running() {
    static std::vector<OcspStapler*> v;
    return v;
}
bool g_quitting = false;

// Wall time, as OCSP's thisUpdate and nextUpdate: the loop's (a test's
// clock may be fake).
int64_t now_sec() { return static_cast<int64_t>(event::worker_loop().wall().sec); }

}  // namespace

// ---- the stapler -----------------------------------------------------------------

Result<OcspStapler*> OcspStapler::make(Arena& arena, const tls::Context& ctx, size_t i, X509* issuer,
                                       StaplerConf conf) {
    auto der = tls::ocsp_request(ctx.certificate(i), issuer);
    if (!der) {
        X509_free(issuer);
        return der.error();
    }
    const tls::ResponderUrl& u = conf.url;
    std::string target = tls::ocsp_get_target(u.path, *der);
    // Always a GET, as nginx: one CertID encodes to about 150 bytes, under
    // the 255 up to which RFC 5019 2.1.1 wants GET (cacheable) rather
    // than POST.
    std::string head = "GET " + target + " HTTP/1.0\r\nHost: " + u.host_header() + "\r\n\r\n";
    return arena.make<OcspStapler>(ctx, i, issuer, std::move(conf), std::move(head));
}

OcspStapler::OcspStapler(const tls::Context& ctx, size_t i, X509* issuer, StaplerConf conf, std::string head)
    : ctx_(ctx), index_(i), issuer_(issuer), conf_(std::move(conf)), head_(std::move(head)) {
    start_.cb = event::Callback::to<&OcspStapler::start>(this);
    query_.done = event::Callback::to<&OcspStapler::resolved>(this);
    timer_.cb = event::Callback::to<&OcspStapler::on_timeout>(this);
    log_.describe = describe;
    log_.self = this;
}

OcspStapler::~OcspStapler() {
    // A worker ends its fetches in quit_worker(), before its generation
    // goes, and the master starts none: only a test's stapler may go with
    // one under way (its loop and table still there).
    if (loading_) done(true);
    X509_free(issuer_);
}

void OcspStapler::describe(const void* self, FixedWriter& out) {
    const auto* s = static_cast<const OcspStapler*>(self);
    out.put(" while requesting certificate status, responder: ");
    out.put(s->conf_.url.host);
    if (!s->peer_.empty()) {
        out.put(", peer: ");
        out.put(s->peer_);
    }
    out.put(", certificate: \"");
    out.put(s->conf_.certificate);
    out.put("\"");
}

std::string_view OcspStapler::staple() {
    // No loop: not a worker (nothing fetched, nothing to staple).
    if (!event::has_worker_loop()) return {};
    const int64_t now = now_sec();
    std::string_view out;
    if (!der_.empty() && valid_ >= now) out = der_;
    // A fetch is due: start it once this handshake step is over, so that
    // the handshake does not wait on a socket or the resolver.
    if (!loading_ && refresh_ <= now && !g_quitting) {
        loading_ = true;
        running().push_back(this);
        event::worker_loop().post(start_);
    }
    return out;
}

void OcspStapler::start() {
    log::Scope scope(&log_);
    addrs_.clear();
    next_addr_ = 0;
    peer_.clear();
    const std::string& host = conf_.url.host;
    event::ResolvedAddr a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.sa);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.sa);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        a.len = sizeof(sockaddr_in);
        addrs_.push_back(a);
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        a.len = sizeof(sockaddr_in6);
        addrs_.push_back(a);
    }
    if (!addrs_.empty()) return connect_next();
    if (!conf_.resolver) {
        GH_LOG(Error, "no resolver defined to resolve %s", host.c_str());
        return done(false);
    }
    phase_ = Phase::Resolving;
    event::Resolver& r = event::worker_resolver(*conf_.resolver);
    if (r.resolve(query_, host, conf_.resolver_timeout) == event::Resolve::Done) resolved();
}

void OcspStapler::resolved() {
    log::Scope scope(&log_);
    if (query_.error != event::ResolveError::None) {
        std::string_view why = event::resolve_strerror(query_.error);
        GH_LOG(Error, "%s could not be resolved (%d: %.*s)", conf_.url.host.c_str(), static_cast<int>(query_.error),
               static_cast<int>(why.size()), why.data());
        return done(false);
    }
    addrs_ = query_.addrs;
    next_addr_ = 0;
    connect_next();
}

void OcspStapler::connect_next() {
    log::Scope scope(&log_);
    while (next_addr_ < addrs_.size()) {
        upstream::Peer p;
        const event::ResolvedAddr& a = addrs_[next_addr_++];
        std::memcpy(&p.sa, &a.sa, a.len);
        p.sa_len = a.len;
        const uint16_t port = htons(conf_.url.port);
        if (p.sa.ss_family == AF_INET6)
            reinterpret_cast<sockaddr_in6*>(&p.sa)->sin6_port = port;
        else
            reinterpret_cast<sockaddr_in*>(&p.sa)->sin_port = port;
        p.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&p.sa));
        peer_ = p.text;
        auto c = upstream::open_connection(p);
        if (!c) {
            GH_LOG(Error, "%s", c.message().c_str());
            continue;
        }
        conn_ = *c;
        conn_->data = this;
        conn_->io.on_read = event::Callback::to<&OcspStapler::on_read>(this);
        conn_->io.on_write = event::Callback::to<&OcspStapler::on_write>(this);
        phase_ = Phase::Connecting;
        sent_ = 0;
        in_.clear();
        reply_.emplace(kMaxReply);
        event::worker_loop().arm(timer_, kTimeout);
        return;
    }
    done(false);
}

void OcspStapler::close_connection() {
    if (timer_.armed()) event::worker_loop().cancel(timer_);
    if (conn_) {
        if (conn_->is_open()) event::worker_connections().close(*conn_);
        conn_ = nullptr;
    }
    reply_.reset();
}

void OcspStapler::try_failed() {
    close_connection();
    connect_next();
}

void OcspStapler::on_timeout() {
    log::Scope scope(&log_);
    GH_LOG_ERRNO(Error, ETIMEDOUT, "OCSP responder timed out");
    try_failed();
}

void OcspStapler::on_write() {
    if (!conn_) return;
    log::Scope scope(&log_);
    if (phase_ == Phase::Connecting) {
        if (int err = upstream::connect_result(*conn_)) {
            GH_LOG_ERRNO(Error, err, "connect() to %s failed", peer_.c_str());
            return try_failed();
        }
        phase_ = Phase::Sending;
    }
    if (phase_ != Phase::Sending) return;
    while (sent_ < head_.size()) {
        event::IoResult r = conn_->send(std::span<const char>(head_).subspan(sent_));
        if (r.kind == event::IoResult::Again) return;
        if (r.kind != event::IoResult::Ok) {
            GH_LOG_ERRNO(Error, r.err, "send() to %s failed", peer_.c_str());
            return try_failed();
        }
        sent_ += r.bytes;
    }
    phase_ = Phase::Reading;
    // The reply may be waiting already.
    if (conn_->io.readable()) on_read();
}

void OcspStapler::on_read() {
    if (!conn_ || phase_ != Phase::Reading) return;
    log::Scope scope(&log_);
    for (;;) {
        bool eof = false;
        if (in_.size() >= kMaxReply) {
            GH_LOG(Error, "OCSP responder sent too big response");
            close_connection();
            return done(false);
        }
        char buf[4096];
        size_t room = std::min(sizeof buf, kMaxReply - in_.size());
        event::IoResult r = conn_->recv(std::span<char>(buf, room));
        if (r.kind == event::IoResult::Again) return;
        if (r.kind == event::IoResult::Error) {
            GH_LOG_ERRNO(Error, r.err, "recv() from %s failed", peer_.c_str());
            return try_failed();
        }
        if (r.kind == event::IoResult::Eof)
            eof = true;
        else
            in_.append(buf, r.bytes);
        switch (reply_->feed(in_, eof)) {
            case ResponderReply::State::NeedMore:
                if (eof) return;  // feed() says an ended reply is Done or Error
                continue;
            case ResponderReply::State::Error:
                GH_LOG(Error, "%s", reply_->error().c_str());
                close_connection();
                return done(false);
            case ResponderReply::State::Done: {
                std::string body(reply_->body());
                close_connection();
                process(body);
                return;
            }
        }
    }
}

void OcspStapler::process(std::string_view body) {
    auto valid = tls::check_ocsp_response(body, ctx_.certificate(index_), issuer_, ctx_.chain(index_), ctx_.store(),
                                          conf_.verify);
    if (!valid) {
        GH_LOG(Error, "%s", valid.message().c_str());
        return done(false);
    }
    der_ = std::string(body);
    valid_ = *valid;
    refresh_ = tls::ocsp_refresh_after_success(now_sec(), valid_);
    done(true);
}

void OcspStapler::done(bool ok) {
    close_connection();
    query_.cancel();
    if (event::has_worker_loop()) event::worker_loop().unpost(start_);
    // A failure: the response held (if any) stays stapled while valid.
    if (!ok && event::has_worker_loop()) refresh_ = now_sec() + tls::kOcspRetryAfterError;
    loading_ = false;
    phase_ = Phase::Idle;
    std::erase(running(), this);
}

void OcspStapler::quit_worker() {
    g_quitting = true;
    // done() takes each out of the list.
    while (!running().empty()) running().back()->done(false);
}

}  // namespace gatehouse::http
