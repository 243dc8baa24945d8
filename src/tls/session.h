// One TLS connection on a non-blocking socket: the handshake, then
// reads and writes through OpenSSL, as an event::Transport.
//
// Readiness (edge-triggered): a read or write that OpenSSL could not
// finish for want of socket input clears the readable flag, for want of
// output room the writable one; the owner calls again on the next event.
// A short SSL_read clears readable only when the socket read came back
// short and OpenSSL holds no bytes (decrypted or read ahead) that no
// epoll edge would announce. A write that could
// not finish (SSL_ERROR_WANT_WRITE) is retried with the same bytes, as
// OpenSSL requires: the caller keeps offering its unsent data from the
// same first byte, which event::ChainWriter does by construction.
//
// Ownership: made by the protocol layer for one connection and freed by
// it (SSL_free never closes the socket). The Context it starts with must
// outlive it (the generation outlives its connections).
#pragma once

#include <openssl/types.h>

// <openssl/ssl.h>'s declaration, without the rest of that header.
using SSL_SESSION = struct ssl_session_st;

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "event/connection.h"

namespace gatehouse::tls {

class Context;

// The socket under a Session's BIO (session.cc): its fd, and whether
// the last read() on it came back short, the socket drained.
struct BioSocket {
    int fd;
    bool drained = false;
};

class Session final : public event::Transport {
public:
    // A session on `fd`, starting with `ctx`. A server context makes a
    // server-side session (the default server's context; SNI may switch
    // it); a client one (Context::Side::Client) a client-side session to
    // an origin. `peer` names the other end in log lines (copied: the
    // HTTP/1 front-end keeps its text only while a request runs).
    Session(const Context& ctx, int fd, std::string_view peer);
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session();

    enum class Step : uint8_t {
        Done,   // established
        Again,  // waiting for the socket (a readiness flag was cleared)
        Fail,   // error() says why; close without shutdown()
    };
    Step handshake(event::Connection& c);
    bool established() const { return established_; }
    // Why the handshake failed: "SSL_do_handshake() failed (SSL: ...)";
    // or, after it, why a read or write failed with an SSL error (one the
    // socket's errno does not tell, such as an alert): "SSL_read() failed
    // (SSL: ...)".
    const std::string& error() const { return error_; }

    // Client side, before the handshake: the name sent as SNI, the name
    // the origin's certificate must carry (a host name or an IP literal;
    // checked only when the context verifies), and a session to resume
    // (OpenSSL takes its own reference).
    void set_server_name(const std::string& name);
    void set_verify_name(const std::string& name);
    void resume(SSL_SESSION* s);

    event::IoResult recv(event::Connection& c, std::span<char> buf) override;
    // Handed over with a pooled connection (made with std::make_unique
    // and released by its first owner): close_notify, then frees itself.
    void dispose(event::Connection& c) override;
    event::IoResult writev(event::Connection& c, std::span<const iovec> iov) override;
    // A read stopped because OpenSSL had to write first (a TLS 1.3 key
    // update): retry the read when the socket becomes writable.
    bool read_wants_write() const { return read_wants_write_; }

    // Sends close_notify once, without waiting for the socket or the
    // peer's; nothing after a failure.
    void shutdown();

    // Whether OpenSSL's record buffers stay with this session between
    // reads and writes (see "Record buffers" in session.cc), for tests.
    bool keeps_buffers() const { return kept_; }

    // What the owner keeps with the session (the HTTP front-end: its
    // http::Stream): reached from OpenSSL callbacks through session_of().
    void* user = nullptr;
    // What the SNI callback chose, for the owner (a server); null: none.
    const void* sni_choice = nullptr;
    // Client side: where sessions the origin issues are kept, replacing
    // the slot's previous one (Context::keep_client_sessions); null: not
    // kept. Owner: the proxy's per-peer table, which lives as long as
    // the configuration generation, so longer than this session.
    SSL_SESSION** save_session = nullptr;

    SSL* ssl() const { return ssl_; }
    const Context& initial_context() const { return initial_; }

    std::string_view protocol() const;     // "TLSv1.3"
    std::string_view cipher() const;       // "TLS_AES_256_GCM_SHA384"
    std::string_view server_name() const;  // SNI as sent; empty without
    std::string_view alpn() const;         // "http/1.1"; empty without
    bool reused() const;

    // The client certificate's verification: "SUCCESS", "NONE" or
    // "FAILED:reason" ($ssl_client_verify).
    std::string client_verify() const;
    // Its subject and issuer, RFC 2253 ($ssl_client_s_dn): empty without.
    std::string client_subject() const;
    std::string client_issuer() const;
    bool has_client_cert() const;
    // X509_V_OK, or why the client certificate was refused.
    long verify_result() const;
    // A check after the handshake failed the certificate verification
    // accepted ("ssl_ocsp": "certificate revoked"): client_verify() says
    // "FAILED:" and `reason`, and verify_failure() is `reason`.
    void fail_verify(std::string reason) { verify_failure_ = std::move(reason); }
    const std::string& verify_failure() const { return verify_failure_; }

    // What the HTTP layer runs between the handshake and the first
    // request (http/ssl_module.h, ssl_after_handshake()): owned by the
    // session, so that a connection closed meanwhile ends it too.
    class Hold {
    public:
        virtual ~Hold() = default;
    };
    std::unique_ptr<Hold> hold;

private:
    friend struct BufferKeeper;
    event::IoResult failed(const char* call, int rc, int err);
    // A read or write is under way: the session keeps its buffers while
    // it is busy (when there is room for it); one more sweep otherwise.
    void busy() {
        if (kept_)
            active_ = true;
        else
            keep_buffers();
    }
    void keep_buffers();
    // The sweep found no I/O since the last one: the buffers go back, and
    // OpenSSL releases them again after each use until busy() keeps them.
    void give_back_buffers();

    SSL* ssl_ = nullptr;
    const Context& initial_;
    std::string peer_;
    std::string error_;
    std::string verify_failure_;  // fail_verify()
    bool established_ = false;
    bool client_ = false;           // connects to an origin
    bool broken_ = false;           // a fatal error: no shutdown
    bool read_wants_write_ = false;
    BioSocket socket_;              // what the BIO under ssl_ reads and writes
    size_t pending_write_ = 0;      // bytes of an SSL_write to retry as is
    bool kept_ = false;             // in the keeper's list, buffers kept
    bool active_ = false;           // kept_: read or wrote since the last sweep
    Session* kept_prev_ = nullptr;  // the keeper's list
    Session* kept_next_ = nullptr;
};

// The Session an SSL belongs to (its app data).
Session* session_of(const SSL* ssl);

}  // namespace gatehouse::tls
