#include "http/ocsp_fetch.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "event/connection.h"
#include "event/worker.h"
#include "upstream/upstream.h"

namespace gatehouse::http {

std::string ocsp_get_head(const tls::ResponderUrl& url, std::string_view der) {
    return "GET " + tls::ocsp_get_target(url.path, der) + " HTTP/1.0\r\nHost: " + url.host_header() + "\r\n\r\n";
}

OcspFetch::OcspFetch() {
    query_.done = event::Callback::to<&OcspFetch::resolved>(this);
    timer_.cb = event::Callback::to<&OcspFetch::on_timeout>(this);
    report_.cb = event::Callback::to<&OcspFetch::report>(this);
    log_.describe = describe;
    log_.self = this;
}

void OcspFetch::describe(const void* self, FixedWriter& out) {
    const auto* f = static_cast<const OcspFetch*>(self);
    out.put(" while requesting certificate status, responder: ");
    if (f->target_) out.put(f->target_->url.host);
    if (!f->peer_.empty()) {
        out.put(", peer: ");
        out.put(f->peer_);
    }
    out.put(f->what_);
}

void OcspFetch::start(const OcspTarget& t, std::string head, std::string what, event::Callback done) {
    GH_CHECK(phase_ == Phase::Idle);
    target_ = &t;
    head_ = std::move(head);
    what_ = std::move(what);
    done_ = done;
    ok_ = false;
    body_.clear();
    addrs_.clear();
    next_addr_ = 0;
    peer_.clear();
    log::Scope scope(&log_);
    const std::string& host = t.url.host;
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
    phase_ = Phase::Resolving;
    if (!addrs_.empty()) return connect_next();
    if (!t.resolver) {
        GH_LOG(Error, "no resolver defined to resolve %s", host.c_str());
        return finish(false);
    }
    event::Resolver& r = event::worker_resolver(*t.resolver);
    if (r.resolve(query_, host, t.resolver_timeout) == event::Resolve::Done) resolved();
}

void OcspFetch::resolved() {
    log::Scope scope(&log_);
    if (query_.error != event::ResolveError::None) {
        std::string_view why = event::resolve_strerror(query_.error);
        GH_LOG(Error, "%s could not be resolved (%d: %.*s)", target_->url.host.c_str(),
               static_cast<int>(query_.error), static_cast<int>(why.size()), why.data());
        return finish(false);
    }
    addrs_ = query_.addrs;
    next_addr_ = 0;
    connect_next();
}

void OcspFetch::connect_next() {
    log::Scope scope(&log_);
    while (next_addr_ < addrs_.size()) {
        upstream::Peer p;
        const event::ResolvedAddr& a = addrs_[next_addr_++];
        std::memcpy(&p.sa, &a.sa, a.len);
        p.sa_len = a.len;
        const uint16_t port = htons(target_->url.port);
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
        conn_->io.on_read = event::Callback::to<&OcspFetch::on_read>(this);
        conn_->io.on_write = event::Callback::to<&OcspFetch::on_write>(this);
        phase_ = Phase::Connecting;
        sent_ = 0;
        in_.clear();
        reply_.emplace(kMaxReply);
        event::worker_loop().arm(timer_, kTimeout);
        return;
    }
    finish(false);
}

void OcspFetch::close_connection() {
    if (timer_.armed()) event::worker_loop().cancel(timer_);
    if (conn_) {
        if (conn_->is_open()) event::worker_connections().close(*conn_);
        conn_ = nullptr;
    }
    reply_.reset();
}

void OcspFetch::try_failed() {
    close_connection();
    connect_next();
}

void OcspFetch::on_timeout() {
    log::Scope scope(&log_);
    GH_LOG_ERRNO(Error, ETIMEDOUT, "OCSP responder timed out");
    try_failed();
}

void OcspFetch::on_write() {
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

void OcspFetch::on_read() {
    if (!conn_ || phase_ != Phase::Reading) return;
    log::Scope scope(&log_);
    for (;;) {
        bool eof = false;
        if (in_.size() >= kMaxReply) {
            GH_LOG(Error, "OCSP responder sent too big response");
            return finish(false);
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
                return finish(false);
            case ResponderReply::State::Done:
                body_ = std::string(reply_->body());
                return finish(true);
        }
    }
}

// The owner hears of the end from the loop: a failure found inside
// start() must not call back into an owner still in its own call.
void OcspFetch::finish(bool ok) {
    close_connection();
    query_.cancel();
    ok_ = ok;
    phase_ = Phase::Finishing;
    event::worker_loop().post(report_);
}

void OcspFetch::report() {
    phase_ = Phase::Idle;
    in_.clear();
    if (done_) done_();
}

void OcspFetch::cancel() {
    if (phase_ == Phase::Idle) return;
    close_connection();
    query_.cancel();
    if (event::has_worker_loop()) event::worker_loop().unpost(report_);
    phase_ = Phase::Idle;
}

}  // namespace gatehouse::http
