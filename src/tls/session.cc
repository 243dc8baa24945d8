#include "tls/session.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "event/loop.h"
#include "event/worker.h"
#include "tls/context.h"

namespace gatehouse::tls {

namespace {

// Clears the error queue before a call whose failure SSL_get_error()
// judges, which looks only at ERR_peek_error(): an empty queue needs no
// clearing. OpenSSL 3.0's ERR_clear_error() walks all 16 slots and frees
// each one's data even then: 16 free() calls, 4 times per proxied TLS
// request, ~4,000 of its 42,400 instructions (callgrind). The peek is a
// thread-local lookup.
void clear_errors() {
    if (ERR_peek_error() != 0) ERR_clear_error();
}

// What one SSL_write carries when it gathers several buffers: one full
// TLS record (RFC 8446 5.1), as nginx's default ssl_buffer_size.
constexpr size_t kRecord = 16384;

std::string name_text(X509_NAME* n) {
    if (!n) return {};
    BIO* b = BIO_new(BIO_s_mem());
    GH_CHECK(b != nullptr);
    X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
    char* p = nullptr;
    long len = BIO_get_mem_data(b, &p);
    std::string s(p, len > 0 ? static_cast<size_t>(len) : 0);
    BIO_free(b);
    return s;
}

// The socket under a Session, as OpenSSL's own socket BIO with one
// thing more: it tells the Session when a read came back short, that
// is, when the socket is drained. With read-ahead on (Context), one
// read() takes every record that has arrived; a short one means the
// next bytes will bring a new epoll edge, so Session::recv can clear
// the readable flag as the plain path does (event::Connection::recv)
// instead of reading again only to hear EAGAIN: one read() per
// request instead of two on a keep-alive connection.
//
// read() rather than recv(): the same for a socket, and the worker's
// /proc/PID/io syscr then counts TLS reads (a test relies on it).
int bio_read(BIO* b, char* out, int len) {
    auto* s = static_cast<BioSocket*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    if (!out || len <= 0) return 0;
    ssize_t n;
    do n = ::read(s->fd, out, static_cast<size_t>(len));
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        s->drained = n < len;
        return static_cast<int>(n);
    }
    if (n == 0) {
        BIO_set_flags(b, BIO_FLAGS_IN_EOF);  // BIO_eof(): OpenSSL's unexpected-EOF check
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
    return -1;  // errno stays for Session::failed()
}

int bio_write(BIO* b, const char* in, int len) {
    auto* s = static_cast<BioSocket*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    ssize_t n;
    do n = ::send(s->fd, in, static_cast<size_t>(len), MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    return -1;
}

long bio_ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
        case BIO_CTRL_FLUSH:  // written straight to the socket: nothing held
        case BIO_CTRL_DUP:
            return 1;
        case BIO_CTRL_EOF:
            return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
        default:
            return 0;
    }
}

const BIO_METHOD* socket_bio_method() {
    // Made on first use, once per process, and never freed: each BIO
    // keeps a pointer to it.
    static BIO_METHOD* m = [] {
        BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gatehouse socket");
        GH_CHECK(bm != nullptr);
        BIO_meth_set_read(bm, bio_read);
        BIO_meth_set_write(bm, bio_write);
        BIO_meth_set_ctrl(bm, bio_ctrl);
        return bm;
    }();
    return m;
}

}  // namespace

// ---- record buffers ----------------------------------------------------------
//
// Under SSL_MODE_RELEASE_BUFFERS (the Context's mode) OpenSSL frees a
// session's read buffer once it has handed out every byte, and its write
// buffer once that is on the socket, so an idle connection holds neither
// (34 KiB). A keep-alive connection then allocates and frees both for
// every request: 990 of a TLS request's 35,500 instructions (callgrind,
// tls-keepalive). So the first kMax sessions that read or write after
// their handshake keep their buffers (the mode cleared on them), and a
// sweep every kPeriod gives back those of the ones that did no I/O since
// the sweep before. Idle sessions hold at most kMax x 34 KiB a worker,
// for at most two periods; past kMax sessions work as before.
//
// SSL_free_buffers() refuses while a record is half read or written; the
// session then waits for the next sweep. Before OpenSSL 3.0.14 it could
// free a buffer still in use (CVE-2024-4741): buffers are not kept there.
struct BufferKeeper {
    static constexpr size_t kMax = 256;
    static constexpr std::chrono::milliseconds kPeriod{250};

    Session* head = nullptr;
    size_t count = 0;
    event::Timer sweep_timer{event::Callback::to<&BufferKeeper::sweep>(this)};

    static bool usable() {
        static const bool ok = OpenSSL_version_num() >= 0x300000e0L;  // 3.0.14
        return ok;
    }

    void add(Session& s) {
        s.kept_next_ = head;
        if (head) head->kept_prev_ = &s;
        head = &s;
        ++count;
        if (!sweep_timer.armed()) event::worker_loop().arm(sweep_timer, kPeriod);
    }

    void remove(Session& s) {
        if (s.kept_prev_)
            s.kept_prev_->kept_next_ = s.kept_next_;
        else
            head = s.kept_next_;
        if (s.kept_next_) s.kept_next_->kept_prev_ = s.kept_prev_;
        s.kept_prev_ = s.kept_next_ = nullptr;
        --count;
    }

    void sweep() {
        for (Session* s = head; s;) {
            Session* next = s->kept_next_;
            if (s->active_)
                s->active_ = false;
            else
                s->give_back_buffers();
            s = next;
        }
        if (head) event::worker_loop().arm(sweep_timer, kPeriod);
    }
};

namespace {
BufferKeeper g_keeper;
}  // namespace

void Session::keep_buffers() {
    // Not during the handshake (a failed one frees its session), nor
    // outside a worker's loop (no sweep would come).
    if (!established_ || g_keeper.count >= BufferKeeper::kMax || !event::has_worker_loop() ||
        !BufferKeeper::usable())
        return;
    SSL_clear_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
    kept_ = active_ = true;
    g_keeper.add(*this);
}

void Session::give_back_buffers() {
    if (SSL_free_buffers(ssl_) != 1) return;  // a record half read or written
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
    kept_ = false;
    g_keeper.remove(*this);
}

Session* session_of(const SSL* ssl) { return static_cast<Session*>(SSL_get_app_data(ssl)); }

Session::Session(const Context& ctx, int fd, std::string_view peer) : initial_(ctx), peer_(peer), socket_{fd} {
    ssl_ = SSL_new(ctx.get());
    // Out of memory aborts (STYLE.md 4); nothing else fails here.
    GH_CHECK(ssl_ != nullptr);
    BIO* bio = BIO_new(socket_bio_method());
    GH_CHECK(bio != nullptr);
    BIO_set_data(bio, &socket_);  // the Session outlives its SSL and so the BIO
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_, bio, bio);  // one reference for both directions
    client_ = ctx.client();
    if (client_)
        SSL_set_connect_state(ssl_);
    else
        SSL_set_accept_state(ssl_);
    SSL_set_app_data(ssl_, this);
}

Session::~Session() {
    hold.reset();  // a check under way ends before the SSL it looks at
    if (kept_) g_keeper.remove(*this);
    SSL_free(ssl_);
}

void Session::set_server_name(const std::string& name) {
    // Fails only for a name longer than 255 bytes: then none is sent.
    if (SSL_set_tlsext_host_name(ssl_, name.c_str()) != 1) ERR_clear_error();
}

void Session::set_verify_name(const std::string& name) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    // An IP literal is matched against the iPAddress names, not the DNS
    // ones (RFC 6125 6.2.1); X509_VERIFY_PARAM_set1_ip_asc refuses names.
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1) return;
    ERR_clear_error();
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl_, name.c_str()) != 1) ERR_clear_error();
}

void Session::resume(SSL_SESSION* s) {
    if (s && SSL_set_session(ssl_, s) != 1) ERR_clear_error();
}

void Session::dispose(event::Connection&) {
    shutdown();
    // Made by std::make_unique and released to the pool: the pool's
    // holder is the last owner.
    std::unique_ptr<Session> self(this);
}

Session::Step Session::handshake(event::Connection& c) {
    clear_errors();
    int rc = SSL_do_handshake(ssl_);
    if (rc == 1) {
        established_ = true;
        return Step::Done;
    }
    int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ) {
        c.io.clear_readable();
        return Step::Again;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        c.io.clear_writable();
        return Step::Again;
    }
    broken_ = true;
    int e = errno;
    if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && e == 0 && ERR_peek_error() == 0)) {
        error_ = "peer closed connection in SSL handshake";
    } else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        error_ = std::string("SSL_do_handshake() failed (") + std::to_string(e) + ": " + strerror(e) + ")";
    } else {
        error_ = "SSL_do_handshake() failed" + ssl_errors();
        // An origin's certificate refused: which check it failed
        // (expired, revoked, wrong CA...), as nginx logs it.
        long v = client_ ? SSL_get_verify_result(ssl_) : X509_V_OK;
        if (v != X509_V_OK)
            error_ += ", upstream SSL certificate verify error: (" + std::to_string(v) + ":" +
                      X509_verify_cert_error_string(v) + ")";
    }
    ERR_clear_error();
    return Step::Fail;
}

event::IoResult Session::failed(const char* call, int rc, int err) {
    int e = errno;
    broken_ = true;
    if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        ERR_clear_error();
        if (rc == 0 || e == 0) return {event::IoResult::Error, 0, ECONNRESET};
        return {event::IoResult::Error, 0, e};
    }
    error_ = std::string(call) + " failed" + ssl_errors();
    GH_LOG(Info, "%s, %s: %.*s", error_.c_str(), client_ ? "upstream" : "client", static_cast<int>(peer_.size()),
           peer_.data());
    return {event::IoResult::Error, 0, EPROTO};
}

event::IoResult Session::recv(event::Connection& c, std::span<char> buf) {
    busy();
    read_wants_write_ = false;
    clear_errors();
    socket_.drained = false;
    int n = SSL_read(ssl_, buf.data(), static_cast<int>(std::min<size_t>(buf.size(), INT_MAX)));
    if (n > 0) {
        // The socket came back short and OpenSSL holds nothing more (no
        // decrypted bytes, no read-ahead record): only new input, which
        // brings an edge, can give more. After EPOLLRDHUP no edge comes,
        // so the reader goes on to the EOF as on a plain socket.
        if (socket_.drained && !SSL_has_pending(ssl_) && !c.io.peer_closed()) c.io.clear_readable();
        return {event::IoResult::Ok, static_cast<size_t>(n), 0};
    }
    int err = SSL_get_error(ssl_, n);
    switch (err) {
        case SSL_ERROR_WANT_READ:
            c.io.clear_readable();
            return {event::IoResult::Again, 0, 0};
        case SSL_ERROR_WANT_WRITE:
            c.io.clear_writable();
            read_wants_write_ = true;
            return {event::IoResult::Again, 0, 0};
        case SSL_ERROR_ZERO_RETURN:
            // close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a plain EOF:
            // HTTP framing, not TLS, tells a truncated message.
            c.io.clear_readable();
            return {event::IoResult::Eof, 0, 0};
        default:
            c.io.clear_readable();
            return failed("SSL_read()", n, err);
    }
}

event::IoResult Session::writev(event::Connection& c, std::span<const iovec> iov) {
    busy();
    size_t total = 0;
    size_t idx = 0, skip = 0;  // the next unsent byte: iov[idx] + skip
    char gather[kRecord];
    while (idx < iov.size()) {
        if (skip == iov[idx].iov_len) {
            ++idx;
            skip = 0;
            continue;
        }
        const char* p = static_cast<const char*>(iov[idx].iov_base) + skip;
        size_t first = iov[idx].iov_len - skip;
        size_t len;
        if (pending_write_ ? first >= pending_write_ : (first >= kRecord || idx + 1 == iov.size())) {
            // One buffer holds the whole write: no copy.
            len = pending_write_ ? pending_write_ : std::min<size_t>(first, INT_MAX);
        } else {
            // Small buffers: gather one record's worth (or exactly the
            // pending write's bytes: the same ones, as OpenSSL requires).
            size_t want = pending_write_ ? pending_write_ : kRecord;
            len = 0;
            size_t i = idx, s = skip;
            while (len < want && i < iov.size()) {
                size_t take = std::min(want - len, iov[i].iov_len - s);
                memcpy(gather + len, static_cast<const char*>(iov[i].iov_base) + s, take);
                len += take;
                s += take;
                if (s == iov[i].iov_len) {
                    ++i;
                    s = 0;
                }
            }
            // The caller offered fewer bytes than the write to retry: it
            // broke its promise; failing beats sending other bytes.
            if (len < want && pending_write_) return {event::IoResult::Error, 0, EINVAL};
            p = gather;
        }
        clear_errors();
        int n = SSL_write(ssl_, p, static_cast<int>(len));
        if (n <= 0) {
            int err = SSL_get_error(ssl_, n);
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
                pending_write_ = len;
                if (err == SSL_ERROR_WANT_WRITE) c.io.clear_writable();
                break;
            }
            if (total > 0) return {event::IoResult::Ok, total, 0};
            return failed("SSL_write()", n, err);
        }
        pending_write_ = 0;
        total += static_cast<size_t>(n);
        // Advance over the n bytes written.
        size_t left = static_cast<size_t>(n);
        while (left > 0) {
            size_t take = std::min(left, iov[idx].iov_len - skip);
            skip += take;
            left -= take;
            if (skip == iov[idx].iov_len && left > 0) {
                ++idx;
                skip = 0;
            }
        }
    }
    if (total == 0) return {event::IoResult::Again, 0, 0};
    return {event::IoResult::Ok, total, 0};
}

void Session::shutdown() {
    if (broken_ || !established_) return;
    broken_ = true;  // once
    // Quiet about the peer's close_notify: we do not wait for it. A full
    // socket loses ours, which only costs the peer a warning.
    ERR_clear_error();
    SSL_set_quiet_shutdown(ssl_, 0);
    SSL_shutdown(ssl_);
    ERR_clear_error();
}

std::string_view Session::protocol() const { return SSL_get_version(ssl_); }

std::string_view Session::cipher() const {
    const char* n = SSL_get_cipher_name(ssl_);
    return n ? n : "";
}

std::string_view Session::server_name() const {
    const char* n = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
    return n ? n : "";
}

std::string_view Session::alpn() const {
    const unsigned char* p = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl_, &p, &len);
    return p ? std::string_view(reinterpret_cast<const char*>(p), len) : std::string_view();
}

bool Session::reused() const { return SSL_session_reused(ssl_) == 1; }

bool Session::has_client_cert() const { return SSL_get0_peer_certificate(ssl_) != nullptr; }

long Session::verify_result() const { return SSL_get_verify_result(ssl_); }

std::string Session::client_verify() const {
    if (!has_client_cert()) return "NONE";
    long rc = verify_result();
    if (rc != X509_V_OK) return std::string("FAILED:") + X509_verify_cert_error_string(rc);
    if (!verify_failure_.empty()) return "FAILED:" + verify_failure_;
    return "SUCCESS";
}

std::string Session::client_subject() const {
    X509* x = SSL_get0_peer_certificate(ssl_);
    return x ? name_text(X509_get_subject_name(x)) : std::string();
}

std::string Session::client_issuer() const {
    X509* x = SSL_get0_peer_certificate(ssl_);
    return x ? name_text(X509_get_issuer_name(x)) : std::string();
}

}  // namespace gatehouse::tls
