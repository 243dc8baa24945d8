#include "tls/context.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "conf/parser.h"
#include "core/log.h"
#include "tls/session.h"
#include "tls/session_cache.h"

namespace gatehouse::tls {

std::string ssl_errors() {
    std::string out;
    const char* data = nullptr;
    int flags = 0;
    while (unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out += out.empty() ? " (SSL: " : " ";
        out += buf;
        if (data && (flags & ERR_TXT_STRING) && *data) {
            out += ':';
            out += data;
        }
    }
    if (!out.empty()) out += ')';
    return out;
}

namespace {

Error ssl_error(std::string what) { return make_error(what + ssl_errors()); }

// Key passwords come from "ssl_password_file"; without one, an encrypted
// key fails to load rather than prompting on a terminal nobody watches.
int password_cb(char* buf, int size, int, void* u) {
    if (!u) return 0;
    const auto* pw = static_cast<const std::string*>(u);
    if (pw->size() > static_cast<size_t>(size)) return 0;
    memcpy(buf, pw->data(), pw->size());
    return static_cast<int>(pw->size());
}

// Client certificates are judged after the request head is read (400
// with nginx's pages, or $ssl_client_verify for "optional"): the
// handshake goes on whatever the verdict.
int accept_any_cert(int, X509_STORE_CTX*) { return 1; }

struct Bio {
    BIO* b = nullptr;
    explicit Bio(const std::string& path) : b(BIO_new_file(path.c_str(), "r")) {}
    ~Bio() { BIO_free(b); }
};

}  // namespace

// OpenSSL's callbacks, with access to the Context.
struct ContextCallbacks {
    // Once the client's hello (SNI included) is known, before a cipher is
    // chosen. After an SNI switch, `arg` is the new context's.
    static int certificate(SSL* ssl, void* arg) {
        const auto* ctx = static_cast<const Context*>(arg);
        return ctx->certificate_fn_ && ctx->certificate_fn_(ssl, ctx->certificate_arg_) ? 1 : 0;
    }

    static int server_name(SSL* ssl, int* alert, void* arg) {
        const auto* ctx = static_cast<const Context*>(arg);
        if (!ctx->server_name_) return SSL_TLSEXT_ERR_NOACK;
        // Called without a name too: the default server may refuse
        // handshakes that name no server of its own.
        const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        Context::NameChoice to = ctx->server_name_(ssl, name ? name : "");
        if (to.reject) {
            *alert = SSL_AD_UNRECOGNIZED_NAME;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        if (!name) return SSL_TLSEXT_ERR_NOACK;
        if (to.ctx && to.ctx->get() != SSL_get_SSL_CTX(ssl)) to.ctx->adopt(ssl);
        return SSL_TLSEXT_ERR_OK;
    }

    static int alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                    unsigned inlen, void* arg) {
        const auto* ctx = static_cast<const Context*>(arg);
        unsigned char* sel = nullptr;
        int rc = SSL_select_next_proto(&sel, outlen, reinterpret_cast<const unsigned char*>(ctx->alpn_.data()),
                                       static_cast<unsigned>(ctx->alpn_.size()), in, inlen);
        if (rc != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }

    // The keys are those of the context a session started with (the
    // address's default server): OpenSSL takes this callback from there.
    // A ring's are copied to `buf`, after rotating them if due.
    static std::span<const TicketKey> keys_of(SSL* ssl, std::span<TicketKey, TicketRing::kKeys> buf) {
        Session* s = session_of(ssl);
        if (!s) return {};
        const Context& c = s->initial_context();
        if (c.ticket_ring_) return buf.first(c.ticket_ring_->keys(time(nullptr), c.ticket_period_, buf));
        return c.ticket_keys_;
    }

    static int ticket(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx,
                      int enc) {
        TicketKey buf[TicketRing::kKeys];
        std::span<const TicketKey> keys = keys_of(ssl, buf);
        if (keys.empty()) return enc ? -1 : 0;
        auto mac = [&](const TicketKey& k) {
            char digest[] = "SHA256";
            OSSL_PARAM p[] = {
                OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<uint8_t*>(k.hmac_key),
                                                  k.hmac_len()),
                OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                OSSL_PARAM_construct_end(),
            };
            return EVP_MAC_CTX_set_params(hctx, p) == 1;
        };
        auto cipher = [](const TicketKey& k) { return k.size == 48 ? EVP_aes_128_cbc() : EVP_aes_256_cbc(); };
        if (enc) {
            const TicketKey& k = keys[0];
            const EVP_CIPHER* c = cipher(k);
            if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(c)) != 1) return -1;
            if (EVP_EncryptInit_ex(cctx, c, nullptr, k.aes_key, iv) != 1 || !mac(k)) return -1;
            memcpy(name, k.name, 16);
            return 1;
        }
        for (size_t i = 0; i < keys.size(); ++i) {
            const TicketKey& k = keys[i];
            if (memcmp(name, k.name, 16) != 0) continue;
            if (!mac(k) || EVP_DecryptInit_ex(cctx, cipher(k), nullptr, k.aes_key, iv) != 1) return -1;
            // Made with an older key: accept it and issue a fresh ticket.
            // TLS 1.3 clients get a fresh one after every resumption, as
            // from nginx: they are to use a ticket once (RFC 8446 C.4),
            // and without a new one the next connection starts afresh.
            return i == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
        }
        return 0;  // unknown key: a full handshake
    }

    static int status(SSL* ssl, void* arg) {
        const auto* ctx = static_cast<const Context*>(arg);
        X509* cert = SSL_get_certificate(ssl);
        std::string_view der;
        for (const auto& [x, d] : ctx->staples_)
            if (x == cert) der = d;
        for (const auto& [x, src] : ctx->sources_)
            if (x == cert) der = src->staple();
        if (der.empty()) return SSL_TLSEXT_ERR_NOACK;
        // OpenSSL frees what it is given.
        auto* p = static_cast<unsigned char*>(OPENSSL_malloc(der.size()));
        if (!p) return SSL_TLSEXT_ERR_NOACK;
        memcpy(p, der.data(), der.size());
        SSL_set_tlsext_status_ocsp_resp(ssl, p, static_cast<long>(der.size()));
        return SSL_TLSEXT_ERR_OK;
    }

    // A TLS 1.3 session handed out as a stateless ticket: the ticket
    // carries the whole session, sealed with the ticket key, and a client
    // resumes by sending it back; its id is never looked up. OpenSSL still
    // reports such sessions to the new-session callback. Storing them would
    // cost a DER encoding and the zone's lock per handshake and ~0.5 KB of
    // zone each, and would evict the TLS 1.2 and stateful sessions that are
    // looked up. nginx does not store them either. The ticket is stateful
    // (its id is looked up) with tickets off, and with early data accepted
    // under OpenSSL's anti-replay check.
    static bool stateless_ticket(SSL* ssl) {
        if (SSL_version(ssl) != TLS1_3_VERSION) return false;
        uint64_t o = SSL_get_options(ssl);
        if (o & SSL_OP_NO_TICKET) return false;
        return SSL_get_max_early_data(ssl) == 0 || (o & SSL_OP_NO_ANTI_REPLAY) != 0;
    }

    // The shared cache of the context the session started with.
    static SharedSessionCache* cache_of(SSL* ssl) {
        Session* s = session_of(ssl);
        return s ? s->initial_context().shared_ : nullptr;
    }

    static int new_session(SSL* ssl, SSL_SESSION* sess) {
        SharedSessionCache* cache = cache_of(ssl);
        if (!cache || stateless_ticket(ssl)) return 0;
        int len = i2d_SSL_SESSION(sess, nullptr);
        if (len <= 0 || static_cast<size_t>(len) > SharedSessionCache::kMaxSession) return 0;
        uint8_t buf[SharedSessionCache::kMaxSession];
        uint8_t* p = buf;
        i2d_SSL_SESSION(sess, &p);
        unsigned id_len = 0;
        const unsigned char* id = SSL_SESSION_get_id(sess, &id_len);
        time_t expires = static_cast<time_t>(SSL_SESSION_get_time(sess) + SSL_SESSION_get_timeout(sess));
        cache->store({id, id_len}, {buf, static_cast<size_t>(len)}, expires, time(nullptr));
        return 0;  // no reference kept
    }

    static SSL_SESSION* get_session(SSL* ssl, const unsigned char* id, int len, int* copy) {
        *copy = 0;
        SharedSessionCache* cache = cache_of(ssl);
        if (!cache || len <= 0) return nullptr;
        uint8_t buf[SharedSessionCache::kMaxSession];
        size_t n = cache->find({id, static_cast<size_t>(len)}, buf, time(nullptr));
        if (n == 0) return nullptr;
        const unsigned char* p = buf;
        return d2i_SSL_SESSION(nullptr, &p, static_cast<long>(n));
    }

    // A client context: the origin issued a session (a TLS 1.2 one at the
    // end of the handshake, TLS 1.3 tickets after it, during reads). It
    // replaces the peer's previous one; the reference is kept.
    static int client_session(SSL* ssl, SSL_SESSION* sess) {
        Session* s = session_of(ssl);
        if (!s || !s->save_session) return 0;
        if (*s->save_session) SSL_SESSION_free(*s->save_session);
        *s->save_session = sess;
        return 1;
    }

    static void key_log(const SSL* ssl, const char* line) {
        const auto* ctx = static_cast<const Context*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
        if (!ctx || ctx->key_log_fd_ < 0) return;
        char nl = '\n';
        iovec iov[2] = {{const_cast<char*>(line), std::strlen(line)}, {&nl, 1}};
        // O_APPEND: the line and its newline land together, after
        // whatever another worker wrote. A failed write loses a line of a
        // debugging aid, nothing else.
        (void)::writev(ctx->key_log_fd_, iov, 2);
    }

    static void remove_session(SSL_CTX* c, SSL_SESSION* sess) {
        const auto* ctx = static_cast<const Context*>(SSL_CTX_get_app_data(c));
        if (!ctx || !ctx->shared_) return;
        unsigned id_len = 0;
        const unsigned char* id = SSL_SESSION_get_id(sess, &id_len);
        ctx->shared_->remove({id, id_len});
    }
};

Context::Context(Side side) : side_(side) {
    ctx_ = SSL_CTX_new(side == Side::Client ? TLS_client_method() : TLS_server_method());
    GH_CHECK(ctx_ != nullptr);  // out of memory
    SSL_CTX_set_app_data(ctx_, this);
    // Renegotiation is a DoS lever and HTTP/1.1 over TLS 1.2 never needs
    // it; an EOF without close_notify is common and HTTP framing already
    // tells a cut message (nginx sets the same).
    SSL_CTX_set_options(ctx_, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    // Partial writes and a moving buffer let Session::writev gather small
    // buffers anew on each retry; released buffers save 34 KiB per idle
    // connection.
    SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                               SSL_MODE_RELEASE_BUFFERS);
    // Read-ahead: one read() takes every record that has arrived rather
    // than a 5-byte header and then its body, one syscall per record
    // saved (nginx sets it too). Session::recv keeps edge-triggered
    // readiness right: it clears readable only when OpenSSL holds nothing.
    SSL_CTX_set_read_ahead(ctx_, 1);
}

Status Context::set_key_log(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        return make_error("open() \"" + path + "\" failed (" + std::to_string(e) + ": " + std::strerror(e) + ")");
    }
    if (key_log_fd_ >= 0) ::close(key_log_fd_);
    key_log_fd_ = fd;
    SSL_CTX_set_keylog_callback(ctx_, ContextCallbacks::key_log);
    return {};
}

Context::~Context() {
    if (key_log_fd_ >= 0) ::close(key_log_fd_);
    // The shared cache's zone may go before the generation's arena: no
    // callback may reach it while OpenSSL empties the internal cache.
    SSL_CTX_sess_set_remove_cb(ctx_, nullptr);
    SSL_CTX_free(ctx_);
    for (X509* x : certs_) X509_free(x);
    for (auto* ch : chains_) sk_X509_pop_free(ch, X509_free);
}

namespace {

// A certificate, its chain and its key, read and checked; freed with the
// struct unless taken.
struct Pair {
    X509* x = nullptr;
    STACK_OF(X509)* chain = nullptr;
    EVP_PKEY* pkey = nullptr;
    Pair() = default;
    Pair(const Pair&) = delete;
    Pair& operator=(const Pair&) = delete;
    ~Pair() {
        X509_free(x);
        if (chain) sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(pkey);
    }
};

Status load_pair(const std::string& cert, const std::string& key, std::span<const std::string> passwords,
                 bool* key_fault, Pair& p) {
    ERR_clear_error();
    *key_fault = false;
    Bio cb(cert);
    if (!cb.b) return ssl_error("cannot load certificate \"" + cert + "\": BIO_new_file() failed");
    p.x = PEM_read_bio_X509_AUX(cb.b, nullptr, nullptr, nullptr);
    if (!p.x) return ssl_error("cannot load certificate \"" + cert + "\": PEM_read_bio_X509_AUX() failed");
    p.chain = sk_X509_new_null();
    GH_CHECK(p.chain != nullptr);
    for (;;) {
        X509* c = PEM_read_bio_X509(cb.b, nullptr, nullptr, nullptr);
        if (!c) break;
        sk_X509_push(p.chain, c);
    }
    unsigned long last = ERR_peek_last_error();
    if (ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // the end of the file
    } else if (last) {
        return ssl_error("cannot load certificate chain \"" + cert + "\": PEM_read_bio_X509() failed");
    }

    *key_fault = true;
    size_t tries = passwords.empty() ? 1 : passwords.size();
    for (size_t i = 0; i < tries && !p.pkey; ++i) {
        Bio kb(key);
        if (!kb.b) return ssl_error("cannot load certificate key \"" + key + "\": BIO_new_file() failed");
        const std::string* pw = passwords.empty() ? nullptr : &passwords[i];
        p.pkey = PEM_read_bio_PrivateKey(kb.b, nullptr, password_cb, const_cast<std::string*>(pw));
        if (!p.pkey && i + 1 < tries) ERR_clear_error();
    }
    if (!p.pkey) return ssl_error("cannot load certificate key \"" + key + "\": PEM_read_bio_PrivateKey() failed");
    if (X509_check_private_key(p.x, p.pkey) != 1)
        return ssl_error("certificate \"" + cert + "\" and key \"" + key + "\" do not match");
    *key_fault = false;
    return {};
}

}  // namespace

Status Context::add_certificate(const std::string& cert, const std::string& key,
                                std::span<const std::string> passwords, bool* key_fault) {
    bool ignored;
    if (!key_fault) key_fault = &ignored;
    Pair p;
    if (auto s = load_pair(cert, key, passwords, key_fault, p); !s) return s;
    // OpenSSL keeps one certificate per key type; a second would quietly
    // replace the first. The same certificate again changes nothing (nginx
    // accepts it): it is loaded once.
    int type = EVP_PKEY_get_base_id(p.pkey);
    for (X509* had : certs_) {
        if (EVP_PKEY_get_base_id(X509_get0_pubkey(had)) != type) continue;
        if (X509_cmp(had, p.x) == 0) return {};
        *key_fault = true;
        return make_error("certificate \"" + cert + "\" has the key type of an earlier certificate; "
                          "only one per type (RSA, ECDSA...) is used");
    }
    if (SSL_CTX_use_certificate(ctx_, p.x) != 1)
        return ssl_error("SSL_CTX_use_certificate(\"" + cert + "\") failed");
    if (SSL_CTX_set1_chain(ctx_, p.chain) != 1) return ssl_error("SSL_CTX_set1_chain(\"" + cert + "\") failed");
    if (SSL_CTX_use_PrivateKey(ctx_, p.pkey) != 1)
        return ssl_error("SSL_CTX_use_PrivateKey(\"" + key + "\") failed");
    // Kept for OCSP stapling and the checks above.
    certs_.push_back(std::exchange(p.x, nullptr));
    chains_.push_back(std::exchange(p.chain, nullptr));
    return {};
}

Status Context::use_certificate(SSL* ssl, const std::string& cert, const std::string& key,
                                std::span<const std::string> passwords) {
    bool key_fault = false;
    Pair p;
    if (auto s = load_pair(cert, key, passwords, &key_fault, p); !s) return s;
    if (SSL_use_certificate(ssl, p.x) != 1) return ssl_error("SSL_use_certificate(\"" + cert + "\") failed");
    if (SSL_set1_chain(ssl, p.chain) != 1) return ssl_error("SSL_set1_chain(\"" + cert + "\") failed");
    if (SSL_use_PrivateKey(ssl, p.pkey) != 1) return ssl_error("SSL_use_PrivateKey(\"" + key + "\") failed");
    return {};
}

void Context::on_certificate(CertificateFn fn, void* arg) {
    certificate_fn_ = fn;
    certificate_arg_ = arg;
    SSL_CTX_set_cert_cb(ctx_, ContextCallbacks::certificate, this);
}

Status Context::set_protocols(uint8_t p) {
    uint64_t off = SSL_OP_NO_SSLv3;
    if (!(p & kTLSv1)) off |= SSL_OP_NO_TLSv1;
    if (!(p & kTLSv1_1)) off |= SSL_OP_NO_TLSv1_1;
    if (!(p & kTLSv1_2)) off |= SSL_OP_NO_TLSv1_2;
    if (!(p & kTLSv1_3)) off |= SSL_OP_NO_TLSv1_3;
    SSL_CTX_clear_options(ctx_, SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_TLSv1_2 | SSL_OP_NO_TLSv1_3);
    SSL_CTX_set_options(ctx_, off);
    return {};
}

Status Context::set_ciphers(const std::string& list, bool prefer_server) {
    ERR_clear_error();
    if (SSL_CTX_set_cipher_list(ctx_, list.c_str()) != 1)
        return ssl_error("SSL_CTX_set_cipher_list(\"" + list + "\") failed");
    if (prefer_server)
        SSL_CTX_set_options(ctx_, SSL_OP_CIPHER_SERVER_PREFERENCE);
    else
        SSL_CTX_clear_options(ctx_, SSL_OP_CIPHER_SERVER_PREFERENCE);
    return {};
}

void Context::set_record_size(uint64_t size) {
    record_size_ = static_cast<long>(std::clamp<uint64_t>(size, 512, SSL3_RT_MAX_PLAIN_LENGTH));
    GH_CHECK(SSL_CTX_set_max_send_fragment(ctx_, record_size_) == 1);
}

Status Context::set_ecdh_curve(const std::string& curves) {
    if (curves == "auto") return {};
    ERR_clear_error();
    if (SSL_CTX_set1_groups_list(ctx_, curves.c_str()) != 1)
        return ssl_error("SSL_CTX_set1_groups_list(\"" + curves + "\") failed");
    return {};
}

Status Context::set_dhparam(const std::string& path) {
    ERR_clear_error();
    Bio b(path);
    if (!b.b) return ssl_error("BIO_new_file(\"" + path + "\") failed");
    EVP_PKEY* dh = PEM_read_bio_Parameters(b.b, nullptr);
    if (!dh) return ssl_error("PEM_read_bio_Parameters(\"" + path + "\") failed");
    // X9.42 parameters ("openssl dhparam -dsaparam") are DH ones with q
    // [nginx takes them too].
    if (EVP_PKEY_get_base_id(dh) != EVP_PKEY_DH && EVP_PKEY_get_base_id(dh) != EVP_PKEY_DHX) {
        EVP_PKEY_free(dh);
        return make_error("\"" + path + "\" holds no DH parameters");
    }
    if (SSL_CTX_set0_tmp_dh_pkey(ctx_, dh) != 1) {
        EVP_PKEY_free(dh);
        return ssl_error("SSL_CTX_set0_tmp_dh_pkey(\"" + path + "\") failed");
    }
    return {};
}

Status Context::conf_commands(std::span<const std::pair<std::string, std::string>> cmds) {
    if (cmds.empty()) return {};
    ERR_clear_error();
    SSL_CONF_CTX* cc = SSL_CONF_CTX_new();
    GH_CHECK(cc != nullptr);
    SSL_CONF_CTX_set_flags(cc, SSL_CONF_FLAG_FILE | (client() ? SSL_CONF_FLAG_CLIENT : SSL_CONF_FLAG_SERVER) |
                                   SSL_CONF_FLAG_CERTIFICATE | SSL_CONF_FLAG_SHOW_ERRORS);
    SSL_CONF_CTX_set_ssl_ctx(cc, ctx_);
    Status st;
    for (const auto& [name, value] : cmds)
        if (SSL_CONF_cmd(cc, name.c_str(), value.c_str()) <= 0) {
            st = ssl_error("SSL_CONF_cmd(\"" + name + "\", \"" + value + "\") failed");
            break;
        }
    if (st && SSL_CONF_CTX_finish(cc) != 1) st = ssl_error("SSL_CONF_CTX_finish() failed");
    SSL_CONF_CTX_free(cc);
    return st;
}

Status Context::set_session_cache(const SessionCache& c, std::chrono::seconds timeout, SharedSessionCache* shared) {
    SSL_CTX_set_timeout(ctx_, static_cast<long>(timeout.count()));
    switch (c.mode) {
        case SessionCache::Mode::Off:
            SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
            return {};
        case SessionCache::Mode::None:
            SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
            return {};
        case SessionCache::Mode::Store:
            break;
    }
    long mode = SSL_SESS_CACHE_SERVER;
    if (c.builtin)
        SSL_CTX_sess_set_cache_size(ctx_, static_cast<long>(c.builtin_sessions));
    else
        mode |= SSL_SESS_CACHE_NO_INTERNAL;
    SSL_CTX_set_session_cache_mode(ctx_, mode);
    if (c.shared && shared) {
        shared_ = shared;
        SSL_CTX_sess_set_new_cb(ctx_, ContextCallbacks::new_session);
        SSL_CTX_sess_set_get_cb(ctx_, ContextCallbacks::get_session);
        SSL_CTX_sess_set_remove_cb(ctx_, ContextCallbacks::remove_session);
    }
    return {};
}

void Context::set_tickets(bool on, std::vector<TicketKey> keys, TicketRing* ring) {
    if (!on) {
        SSL_CTX_set_options(ctx_, SSL_OP_NO_TICKET);
        return;
    }
    SSL_CTX_clear_options(ctx_, SSL_OP_NO_TICKET);
    ticket_keys_ = std::move(keys);
    if (ticket_keys_.empty() && ring) {
        ticket_ring_ = ring;
        ticket_period_ = static_cast<time_t>(SSL_CTX_get_timeout(ctx_));
    }
    if (ticket_keys_.empty() && !ticket_ring_) ticket_keys_.push_back(process_ticket_key());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx_, ContextCallbacks::ticket);
}

void Context::set_verify(VerifyClient mode, int depth) {
    verify_ = mode;
    if (mode == VerifyClient::Off) return;
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, accept_any_cert);
    SSL_CTX_set_verify_depth(ctx_, depth);
}

void Context::verify_peer(bool on, int depth) {
    SSL_CTX_set_verify(ctx_, on ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    if (on) SSL_CTX_set_verify_depth(ctx_, depth);
}

void Context::keep_client_sessions() {
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx_, ContextCallbacks::client_session);
}

Status Context::add_client_ca(const std::string& file) {
    if (auto s = add_trusted(file); !s) return s;
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(file.c_str());
    if (!names) return ssl_error("SSL_load_client_CA_file(\"" + file + "\") failed");
    SSL_CTX_set_client_CA_list(ctx_, names);
    return {};
}

Status Context::add_trusted(const std::string& file) {
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx_, file.c_str(), nullptr) != 1)
        return ssl_error("SSL_CTX_load_verify_locations(\"" + file + "\") failed");
    return {};
}

Status Context::add_crl(const std::string& file) {
    ERR_clear_error();
    X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (!lookup) return ssl_error("X509_STORE_add_lookup() failed");
    if (X509_load_crl_file(lookup, file.c_str(), X509_FILETYPE_PEM) <= 0)
        return ssl_error("X509_load_crl_file(\"" + file + "\") failed");
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    return {};
}

Status Context::set_stapling(const std::string& file, bool verify) {
    auto der = conf::read_file(file, 1u << 20);
    if (!der) return der.error();
    ERR_clear_error();
    const auto* p = reinterpret_cast<const unsigned char*>(der->data());
    OCSP_RESPONSE* resp = d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der->size()));
    if (!resp) return ssl_error("d2i_OCSP_RESPONSE(\"" + file + "\") failed");
    struct Guard {
        OCSP_RESPONSE* r;
        OCSP_BASICRESP* b = nullptr;
        ~Guard() {
            OCSP_BASICRESP_free(b);
            OCSP_RESPONSE_free(r);
        }
    } g{resp};
    if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
        return make_error("OCSP response in \"" + file + "\" has status \"" +
                          OCSP_response_status_str(OCSP_response_status(resp)) + "\"");
    g.b = OCSP_response_get1_basic(resp);
    if (!g.b) return ssl_error("OCSP_response_get1_basic(\"" + file + "\") failed");

    X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
    staples_.clear();
    std::string why;
    for (size_t i = 0; i < certs_.size(); ++i) {
        X509* cert = certs_[i];
        X509* owned = get1_issuer(i);
        X509* issuer = owned;
        if (!issuer) {
            // Without its issuer nothing ties the response to this
            // certificate: staple it unchecked, as nginx does with a file.
            if (!verify) staples_.emplace_back(cert, *der);
            why = "no issuer certificate of \"ssl_certificate\" is known (add it to the chain or to "
                  "\"ssl_trusted_certificate\")";
            continue;
        }
        OCSP_CERTID* id = OCSP_cert_to_id(nullptr, cert, issuer);
        int status = -1, reason = 0;
        ASN1_GENERALIZEDTIME *rev = nullptr, *this_upd = nullptr, *next_upd = nullptr;
        bool found = id && OCSP_resp_find_status(g.b, id, &status, &reason, &rev, &this_upd, &next_upd) == 1;
        OCSP_CERTID_free(id);
        if (!found) {
            X509_free(owned);
            why = "the response is not about the certificate";
            continue;
        }
        if (verify) {
            STACK_OF(X509)* untrusted = chains_[i];
            if (OCSP_basic_verify(g.b, untrusted, store, 0) != 1) {
                X509_free(owned);
                why = "OCSP_basic_verify() failed" + ssl_errors();
                continue;
            }
            if (status != V_OCSP_CERTSTATUS_GOOD) {
                X509_free(owned);
                why = std::string("certificate status \"") + OCSP_cert_status_str(status) + "\"";
                continue;
            }
            // Five minutes of clock skew, as OpenSSL's ocsp command allows.
            if (OCSP_check_validity(this_upd, next_upd, 300, -1) != 1) {
                X509_free(owned);
                why = "the response is not current" + ssl_errors();
                continue;
            }
        }
        X509_free(owned);
        staples_.emplace_back(cert, *der);
    }
    ERR_clear_error();
    if (staples_.empty())
        return make_error("cannot staple the OCSP response in \"" + file + "\": " +
                          (why.empty() ? std::string("no certificate") : why));
    SSL_CTX_set_tlsext_status_cb(ctx_, ContextCallbacks::status);
    SSL_CTX_set_tlsext_status_arg(ctx_, this);
    return {};
}

X509* Context::get1_issuer(size_t i) const {
    X509* cert = certs_[i];
    for (int j = 0; j < sk_X509_num(chains_[i]); ++j) {
        X509* c = sk_X509_value(chains_[i], j);
        if (X509_check_issued(c, cert) == X509_V_OK) {
            X509_up_ref(c);
            return c;
        }
    }
    X509* owned = nullptr;
    X509_STORE_CTX* sc = X509_STORE_CTX_new();
    GH_CHECK(sc != nullptr);
    if (X509_STORE_CTX_init(sc, store(), cert, nullptr) != 1 || X509_STORE_CTX_get1_issuer(&owned, sc, cert) != 1)
        owned = nullptr;
    X509_STORE_CTX_free(sc);
    ERR_clear_error();
    return owned;
}

X509_STORE* Context::store() const { return SSL_CTX_get_cert_store(ctx_); }

void Context::set_staple_source(size_t i, StapleSource* src) {
    sources_.emplace_back(certs_[i], src);
    SSL_CTX_set_tlsext_status_cb(ctx_, ContextCallbacks::status);
    SSL_CTX_set_tlsext_status_arg(ctx_, this);
}

void Context::set_alpn(std::string wire) {
    alpn_ = std::move(wire);
    SSL_CTX_set_alpn_select_cb(ctx_, ContextCallbacks::alpn, this);
}

void Context::on_server_name(ServerNameFn fn) {
    server_name_ = fn;
    SSL_CTX_set_tlsext_servername_callback(ctx_, ContextCallbacks::server_name);
    SSL_CTX_set_tlsext_servername_arg(ctx_, this);
}

Status Context::finish(std::span<const std::string> dynamic_certificates) {
    // The session id context: a session resumes only under the same
    // client verification (a session made without a client certificate
    // must not pass where one is required) and the same certificates (a
    // session made with one server's identity must not resume where
    // another is presented) [nginx]. It is the hash of the verification
    // settings, of the CAs clients may be asked for and of the
    // certificates (their names as configured when chosen per handshake).
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    GH_CHECK(md != nullptr);
    EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
    int mode = SSL_CTX_get_verify_mode(ctx_), depth = SSL_CTX_get_verify_depth(ctx_);
    EVP_DigestUpdate(md, &mode, sizeof mode);
    EVP_DigestUpdate(md, &depth, sizeof depth);
    uint8_t v = static_cast<uint8_t>(verify_);
    EVP_DigestUpdate(md, &v, 1);
    if (STACK_OF(X509_NAME)* names = SSL_CTX_get_client_CA_list(ctx_))
        for (int i = 0; i < sk_X509_NAME_num(names); ++i) {
            unsigned char* der = nullptr;
            int len = i2d_X509_NAME(sk_X509_NAME_value(names, i), &der);
            if (len > 0) EVP_DigestUpdate(md, der, static_cast<size_t>(len));
            OPENSSL_free(der);
        }
    for (int more = SSL_CTX_set_current_cert(ctx_, SSL_CERT_SET_FIRST); more;
         more = SSL_CTX_set_current_cert(ctx_, SSL_CERT_SET_NEXT)) {
        X509* cert = SSL_CTX_get0_certificate(ctx_);
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned dlen = 0;
        if (cert && X509_digest(cert, EVP_sha256(), digest, &dlen) == 1) EVP_DigestUpdate(md, digest, dlen);
    }
    for (const std::string& name : dynamic_certificates) EVP_DigestUpdate(md, name.data(), name.size() + 1);
    unsigned char sid[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(md, sid, &len);
    EVP_MD_CTX_free(md);
    if (len > SSL_MAX_SID_CTX_LENGTH) len = SSL_MAX_SID_CTX_LENGTH;
    ERR_clear_error();
    if (SSL_CTX_set_session_id_context(ctx_, sid, len) != 1)
        return ssl_error("SSL_CTX_set_session_id_context() failed");
    return {};
}

void Context::adopt(SSL* ssl) const {
    SSL_set_SSL_CTX(ssl, ctx_);
    SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx_), SSL_CTX_get_verify_callback(ctx_));
    SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(ctx_));
    SSL_clear_options(ssl, SSL_get_options(ssl) & ~SSL_CTX_get_options(ctx_));
    SSL_set_options(ssl, SSL_CTX_get_options(ctx_));
    // The SSL took its record size from the first context [nginx takes
    // the chosen server's ssl_buffer_size too].
    SSL_set_max_send_fragment(ssl, record_size_);
}

}  // namespace gatehouse::tls
