// A server's TLS settings as an OpenSSL context (SSL_CTX): certificates
// and keys, protocols, ciphers, session resumption, client verification,
// OCSP stapling and ALPN.
//
// Ownership and threads: a Context is made in a configuration
// generation's arena while the master loads the configuration, so every
// worker inherits it through fork(); it is freed with its generation. The
// setters run in the master only; the callbacks OpenSSL makes during a
// handshake (SNI, ALPN, tickets, OCSP status) run in a worker and only
// read it (a StapleSource they ask is the worker's own, see below).
// Setters return errors that name the file and the failed call with
// OpenSSL's reasons; the caller adds the directive's file:line.
#pragma once

#include <openssl/types.h>
#include <openssl/x509.h>

#include <chrono>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "tls/params.h"
#include "tls/ticket_keys.h"

namespace gatehouse::tls {

class SharedSessionCache;

// A certificate's OCSP response obtained at run time ("ssl_stapling"
// without a file, http/ocsp_stapler.h). Owner: the generation, like the
// Context; its state is each worker's own (after fork()).
class StapleSource {
public:
    // The DER response to staple in this handshake, or empty for none.
    // Called from the status callback, inside a handshake on the worker's
    // loop: must not block; may start a refresh for later handshakes.
    virtual std::string_view staple() = 0;

protected:
    ~StapleSource() = default;
};

class Context {
public:
    enum class Side : uint8_t {
        Server,  // accepts: the ssl_* directives
        Client,  // connects to origins: the proxy_ssl_* directives
    };
    // An empty context: no certificate yet.
    explicit Context(Side side = Side::Server);
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    ~Context();

    SSL_CTX* get() const { return ctx_; }
    bool client() const { return side_ == Side::Client; }

    // Loads a certificate (PEM, followed by its chain) and its key (PEM,
    // maybe in the same file). An encrypted key is tried with each of
    // `passwords` in turn; without any it fails rather than prompting.
    // One certificate per key type: an RSA and an ECDSA one are both
    // served, each to the clients that can use it; the same certificate
    // given again is loaded once, another of the same type is an error.
    // `key_fault`, on error: the key file is to blame, not the certificate.
    Status add_certificate(const std::string& cert, const std::string& key,
                           std::span<const std::string> passwords, bool* key_fault = nullptr);
    size_t certificates() const { return certs_.size(); }

    // Certificates chosen per handshake ("ssl_certificate $name"): `fn`
    // runs in the handshake, once the client's hello and its SNI are
    // known, and loads them into `ssl` with use_certificate(); false
    // fails the handshake. `arg` must outlive the context.
    using CertificateFn = bool (*)(SSL* ssl, void* arg);
    void on_certificate(CertificateFn fn, void* arg);
    // Loads a certificate with its chain and its key, as add_certificate()
    // reads them, into one connection (blocking file reads, as nginx's).
    static Status use_certificate(SSL* ssl, const std::string& cert, const std::string& key,
                                  std::span<const std::string> passwords);

    Status set_protocols(uint8_t protocols);  // params.h bits
    Status set_ciphers(const std::string& list, bool prefer_server);
    Status set_ecdh_curve(const std::string& curves);  // "auto": OpenSSL's list
    // Records sent carry at most `size` bytes of data (512 to 16384, the
    // value clamped): smaller ones let a client decrypt the first bytes
    // sooner ("ssl_buffer_size") [nginx bounds its send buffer instead].
    void set_record_size(uint64_t size);
    Status set_dhparam(const std::string& path);
    // "ssl_key_log": every connection's secrets appended to `path` in the
    // SSLKEYLOGFILE format (Wireshark's), one write per line so that the
    // workers' lines never interleave. Opened now, by the master (root,
    // maybe), mode 0600; open for the context's life.
    Status set_key_log(const std::string& path);
    // "ssl_conf_command" pairs; applied last, so they override the rest.
    Status conf_commands(std::span<const std::pair<std::string, std::string>> cmds);

    // Session resumption. `shared`, when given, must outlive the context
    // (it lives in a shared memory zone of the same generation).
    Status set_session_cache(const SessionCache& c, std::chrono::seconds timeout,
                             SharedSessionCache* shared);
    // Tickets on with these keys (the first encrypts, all decrypt), or
    // off. No keys: `ring`'s, rotated every session timeout (call after
    // set_session_cache); without a ring either, process_ticket_key().
    // `ring` lives in a shared memory zone of the same generation, so it
    // outlives the context.
    void set_tickets(bool on, std::vector<TicketKey> keys, TicketRing* ring = nullptr);

    // Client certificates. The handshake never fails on a bad or missing
    // one: the verdict waits in the session for the HTTP layer (a 400
    // page, or $ssl_client_verify with "optional").
    void set_verify(VerifyClient mode, int depth);
    // CAs that are trusted and named to clients ("ssl_client_certificate"),
    // trusted only ("ssl_trusted_certificate"), revocation lists ("ssl_crl").
    Status add_client_ca(const std::string& file);
    Status add_trusted(const std::string& file);
    Status add_crl(const std::string& file);
    VerifyClient verify() const { return verify_; }

    // Client contexts: the origin's certificate chain is checked against
    // add_trusted()'s CAs, at most `depth` deep ("proxy_ssl_verify"); the
    // name is set per connection (Session::set_verify_name). Off: any
    // certificate is accepted.
    void verify_peer(bool on, int depth);
    // Client contexts: sessions the origins give are handed to
    // Session::save_session rather than kept in OpenSSL's cache.
    void keep_client_sessions();

    // OCSP stapling from a DER file made by "openssl ocsp -respout". With
    // `verify`, the response must be signed by a trusted responder (CAs
    // from set_verify's files and the certificate chains), be current and
    // say "good" for one of the certificates; otherwise an error.
    // Call after add_certificate and set_verify.
    Status set_stapling(const std::string& file, bool verify);
    // OCSP stapling from a responder: certificate `i` (in add_certificate
    // order) staples what `src` gives. Call after add_certificate; `src`
    // must outlive the context.
    void set_staple_source(size_t i, StapleSource* src);
    // Certificate `i`, its chain (maybe empty) and its issuer: in its
    // chain, else among the trusted CAs (a new reference, X509_free() it;
    // null when unknown). The store holds the trusted CAs.
    X509* certificate(size_t i) const { return certs_[i]; }
    STACK_OF(X509) * chain(size_t i) const { return chains_[i]; }
    X509* get1_issuer(size_t i) const;
    X509_STORE* store() const;

    // ALPN: the protocols this server speaks, in wire format (alpn_wire),
    // in order of preference. A client offering none of them is refused
    // with the no_application_protocol alert (RFC 7301 3.2).
    void set_alpn(std::string wire);

    // SNI: `fn` receives the name the client asked for (as sent; empty
    // when it sent none) and says which server's context to use: `ctx`,
    // or null to stay; or to refuse the handshake with the
    // unrecognized_name alert ("ssl_reject_handshake"). It runs in the
    // handshake, in a worker; `ssl`'s app data is the caller's.
    struct NameChoice {
        const Context* ctx = nullptr;
        bool reject = false;
    };
    using ServerNameFn = NameChoice (*)(SSL* ssl, std::string_view name);
    void on_server_name(ServerNameFn fn);

    // Derives the session id context from the verification settings and
    // the certificates; call once everything else is set. For
    // certificates chosen per handshake (on_certificate), pass their
    // configured names (with the variables, as written) instead: two
    // servers resume each other's sessions only with the same ones.
    Status finish(std::span<const std::string> dynamic_certificates = {});

    // Switches `ssl`, in the middle of its handshake, to this context:
    // certificates, client verification, options and record size. Protocol versions
    // and ciphers stay the first context's (they are chosen by then), as
    // in nginx.
    void adopt(SSL* ssl) const;

private:
    friend struct ContextCallbacks;

    SSL_CTX* ctx_ = nullptr;
    long record_size_ = 16384;  // set_record_size(): the data in one record at most
    Side side_ = Side::Server;
    VerifyClient verify_ = VerifyClient::Off;
    CertificateFn certificate_fn_ = nullptr;
    void* certificate_arg_ = nullptr;
    std::vector<X509*> certs_;            // owned references, leaf certificates
    std::vector<STACK_OF(X509)*> chains_; // owned, one per certificate (maybe empty)
    std::vector<std::pair<X509*, std::string>> staples_;  // certificate, DER response
    std::vector<std::pair<X509*, StapleSource*>> sources_;  // certificate, its fetcher
    std::vector<TicketKey> ticket_keys_;
    TicketRing* ticket_ring_ = nullptr;  // in a zone; replaces ticket_keys_
    time_t ticket_period_ = 0;           // seconds between rotations
    std::string alpn_;
    ServerNameFn server_name_ = nullptr;
    SharedSessionCache* shared_ = nullptr;
    int key_log_fd_ = -1;
};

// OpenSSL's error queue as " (SSL: error:...)", emptied; "" when empty.
std::string ssl_errors();

}  // namespace gatehouse::tls
