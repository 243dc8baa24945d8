// Tests of src/tls/context.h and src/tls/session.h: a server Session and
// an OpenSSL client over a socket pair with small buffers, so that
// writes stop half done and must be retried with the same bytes.
#include "tls/session.h"

#include <doctest/doctest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "event/clock.h"
#include "event/loop.h"
#include "event/worker.h"
#include "temp_dir.h"
#include "tls/context.h"

using namespace gatehouse;
using tls::Context;
using tls::Session;

namespace {

// A self-signed P-256 certificate and its key, as PEM files.
void make_cert(const std::string& crt, const std::string& key, const char* cn) {
    EVP_PKEY* pk = EVP_EC_gen("P-256");
    REQUIRE(pk != nullptr);
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME* n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
    X509_set_issuer_name(x, n);
    REQUIRE(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE* f = fopen(crt.c_str(), "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key.c_str(), "w");
    PEM_write_PrivateKey(f, pk, nullptr, nullptr, 0, nullptr, nullptr);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

struct Pair {
    int server = -1, client = -1;
    Pair() {
        int fds[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
        server = fds[0];
        client = fds[1];
        int small = 4096;
        for (int fd : fds) {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        }
    }
    ~Pair() {
        close(server);
        close(client);
    }
};

struct Fixture {
    test::TempDir dir;
    Context ctx;
    Pair pair;
    std::unique_ptr<event::Loop> loop;  // outlives conn's registration
    event::Connection conn;
    SSL_CTX* cctx = nullptr;
    SSL* client = nullptr;

    Fixture() {
        make_cert(dir / "a.crt", dir / "a.key", "a.test");
        REQUIRE(ctx.add_certificate(dir / "a.crt", dir / "a.key", {}).ok());
        REQUIRE(ctx.finish().ok());
        conn.io.set_fd(pair.server);
        loop = std::move(event::Loop::create(event::system_clock()).value());
        REQUIRE(loop->add(conn.io, event::Interest::ReadWrite).ok());
        cctx = SSL_CTX_new(TLS_client_method());
        client = SSL_new(cctx);
        SSL_set_fd(client, pair.client);
        SSL_set_connect_state(client);
    }
    ~Fixture() {
        loop->remove(conn.io);
        SSL_free(client);
        SSL_CTX_free(cctx);
    }

    // Runs both handshakes to the end.
    void handshake(Session& s) {
        bool server_done = false, client_done = false;
        for (int i = 0; i < 100 && !(server_done && client_done); ++i) {
            if (!server_done) {
                auto st = s.handshake(conn);
                REQUIRE(st != Session::Step::Fail);
                server_done = st == Session::Step::Done;
            }
            if (!client_done) {
                int rc = SSL_do_handshake(client);
                if (rc == 1)
                    client_done = true;
                else
                    REQUIRE((SSL_get_error(client, rc) == SSL_ERROR_WANT_READ ||
                             SSL_get_error(client, rc) == SSL_ERROR_WANT_WRITE));
            }
        }
        REQUIRE(server_done);
        REQUIRE(client_done);
        REQUIRE(s.established());
    }

    // Reads what the client can now; appends to out.
    void client_read(std::string& out) {
        char buf[16384];
        for (;;) {
            int n = SSL_read(client, buf, sizeof buf);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        ERR_clear_error();
    }
};

}  // namespace

TEST_CASE("tls/session: gathered and large writes stop half done and resume with the same bytes") {
    Fixture f;
    Session s(f.ctx, f.pair.server, "test");
    f.handshake(s);
    CHECK(s.protocol() == "TLSv1.3");

    // Many small buffers (gathered into records), then a large one
    // (written in place), then small ones again.
    std::string expect;
    std::vector<std::string> pieces;
    for (int i = 0; i < 300; ++i) pieces.push_back(std::string(50 + i % 7, static_cast<char>('a' + i % 26)));
    pieces.push_back(std::string(200000, 'L'));
    for (int i = 0; i < 50; ++i) pieces.push_back(std::to_string(i) + "|");
    for (const auto& p : pieces) expect += p;

    std::vector<iovec> iov;
    for (auto& p : pieces) iov.push_back({p.data(), p.size()});
    size_t idx = 0;
    std::string got;
    int agains = 0;
    while (idx < iov.size()) {
        f.conn.io.clear_writable();
        auto r = s.writev(f.conn, std::span<const iovec>(iov.data() + idx, iov.size() - idx));
        REQUIRE(r.kind != event::IoResult::Error);
        if (r.kind == event::IoResult::Again || r.bytes == 0) ++agains;
        // Advance as HttpConnection does: by what was reported.
        size_t n = r.bytes;
        while (n > 0) {
            size_t take = std::min(n, iov[idx].iov_len);
            iov[idx].iov_base = static_cast<char*>(iov[idx].iov_base) + take;
            iov[idx].iov_len -= take;
            n -= take;
            if (iov[idx].iov_len == 0) ++idx;
        }
        f.client_read(got);
    }
    for (int i = 0; i < 10 && got.size() < expect.size(); ++i) f.client_read(got);
    CHECK(agains > 0);  // the small buffers did make writes wait
    REQUIRE(got.size() == expect.size());
    CHECK(got == expect);
}

TEST_CASE("tls/session: reads, readiness and close_notify") {
    Fixture f;
    Session s(f.ctx, f.pair.server, "test");
    f.handshake(s);

    char buf[8];
    f.conn.io.clear_readable();
    auto r = s.recv(f.conn, buf);
    CHECK(r.kind == event::IoResult::Again);

    REQUIRE(SSL_write(f.client, "hello, world", 12) == 12);
    f.loop->run_once(0);
    REQUIRE(f.conn.io.readable());
    // Short reads keep the flag: OpenSSL still holds the rest of the
    // record, which no epoll event would announce.
    std::string got;
    for (int i = 0; i < 10; ++i) {
        r = s.recv(f.conn, buf);
        if (r.kind != event::IoResult::Ok) break;
        got.append(buf, r.bytes);
        if (got.size() < 12) CHECK(f.conn.io.readable());
    }
    CHECK(got == "hello, world");
    CHECK(r.kind == event::IoResult::Again);
    CHECK_FALSE(f.conn.io.readable());

    s.shutdown();
    char cb[16];
    int n = SSL_read(f.client, cb, sizeof cb);
    CHECK(n == 0);
    CHECK(SSL_get_error(f.client, n) == SSL_ERROR_ZERO_RETURN);

    // The client's close_notify is an EOF for the server.
    SSL_shutdown(f.client);
    r = s.recv(f.conn, buf);
    CHECK(r.kind == event::IoResult::Eof);
}

TEST_CASE("tls/session: a busy session keeps its record buffers, an idle one gives them back") {
    if (OpenSSL_version_num() < 0x300000e0L) return;  // not kept before 3.0.14 (session.cc)
    Fixture f;
    // The keeper sweeps on the worker's loop, here one on a clock the test moves.
    event::FakeClock clock;
    auto wl = event::Loop::create(clock);
    REQUIRE(wl.ok());
    event::set_worker(wl.value().get(), nullptr);
    struct Unset {
        ~Unset() { event::set_worker(nullptr, nullptr); }
    } unset;
    auto sweep = [&] {
        clock.advance(250);
        wl.value()->run_once(0);
    };
    auto released = [](const Session& s) { return (SSL_get_mode(s.ssl()) & SSL_MODE_RELEASE_BUFFERS) != 0; };
    auto read_all = [&](Session& s, size_t want) {
        std::string got;
        char buf[512];
        for (int i = 0; i < 1000 && got.size() < want; ++i) {
            f.loop->run_once(0);
            auto r = s.recv(f.conn, buf);
            if (r.kind == event::IoResult::Ok) got.append(buf, r.bytes);
        }
        return got;
    };

    Session s(f.ctx, f.pair.server, "test");
    f.handshake(s);
    CHECK_FALSE(s.keeps_buffers());  // the handshake alone does not count
    REQUIRE(SSL_write(f.client, "one", 3) == 3);
    CHECK(read_all(s, 3) == "one");
    CHECK(s.keeps_buffers());
    CHECK_FALSE(released(s));

    // Busy within each period: kept.
    for (int i = 0; i < 3; ++i) {
        REQUIRE(SSL_write(f.client, "more", 4) == 4);
        CHECK(read_all(s, 4) == "more");
        sweep();
        CHECK(s.keeps_buffers());
    }
    // A whole period without I/O: given back, and released after each
    // use again.
    sweep();
    CHECK_FALSE(s.keeps_buffers());
    CHECK(released(s));

    // I/O goes on after that, and keeps them again.
    REQUIRE(SSL_write(f.client, "two", 3) == 3);
    CHECK(read_all(s, 3) == "two");
    CHECK(s.keeps_buffers());

    // A record read in part stays: its decrypted rest is in the buffer,
    // and the sweeps wait until it has been read.
    std::string big(3000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    REQUIRE(SSL_write(f.client, big.data(), static_cast<int>(big.size())) == static_cast<int>(big.size()));
    std::string first;
    for (int i = 0; i < 1000 && first.empty(); ++i) {
        f.loop->run_once(0);
        char part[100];
        auto r = s.recv(f.conn, part);
        if (r.kind == event::IoResult::Ok) first.assign(part, r.bytes);
    }
    REQUIRE(first.size() == 100);
    sweep();
    sweep();
    CHECK(s.keeps_buffers());
    CHECK(SSL_pending(s.ssl()) == 2900);
    std::string rest = read_all(s, big.size() - 100);
    CHECK(first + rest == big);

    // A record written in part stays too: OpenSSL must send the rest
    // from its buffer.
    std::string large(100000, 'L');
    for (size_t i = 0; i < large.size(); i += 7) large[i] = static_cast<char>('0' + i % 10);
    size_t sent = 0;
    bool stopped = false;
    std::string out;
    for (int i = 0; i < 10000 && sent < large.size(); ++i) {
        iovec v{large.data() + sent, large.size() - sent};
        auto r = s.writev(f.conn, std::span<const iovec>(&v, 1));
        REQUIRE(r.kind != event::IoResult::Error);
        sent += r.bytes;
        if (r.kind == event::IoResult::Again && !stopped) {
            // The socket is full with a record half out.
            stopped = true;
            sweep();
            sweep();
            CHECK(s.keeps_buffers());
        }
        f.client_read(out);
    }
    for (int i = 0; i < 10 && out.size() < large.size(); ++i) f.client_read(out);
    CHECK(stopped);
    CHECK(out == large);
}

TEST_CASE("tls/context: certificate and key errors") {
    test::TempDir dir;
    make_cert(dir / "a.crt", dir / "a.key", "a.test");
    make_cert(dir / "b.crt", dir / "b.key", "b.test");
    Context ctx;
    bool key_fault = false;

    auto missing = ctx.add_certificate(dir / "none.crt", dir / "a.key", {}, &key_fault);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.message().find("cannot load certificate \"" + (dir / "none.crt") + "\": BIO_new_file() failed (SSL: ") == 0);
    CHECK_FALSE(key_fault);

    auto mismatch = ctx.add_certificate(dir / "a.crt", dir / "b.key", {}, &key_fault);
    REQUIRE_FALSE(mismatch.ok());
    CHECK(mismatch.message().find("certificate \"" + (dir / "a.crt") + "\" and key \"" + (dir / "b.key") +
                                  "\" do not match") == 0);
    CHECK(mismatch.message().find("key values mismatch") != std::string::npos);
    CHECK(key_fault);

    auto not_pem = ctx.add_certificate(dir / "a.crt", dir.write("junk.key", "junk"), {}, &key_fault);
    REQUIRE_FALSE(not_pem.ok());
    CHECK(not_pem.message().find("PEM_read_bio_PrivateKey() failed") != std::string::npos);
    CHECK(key_fault);

    Context good;
    CHECK(good.add_certificate(dir / "a.crt", dir / "a.key", {}).ok());
    CHECK(good.certificates() == 1);
    auto twice = good.add_certificate(dir / "b.crt", dir / "b.key", {});
    REQUIRE_FALSE(twice.ok());
    CHECK(twice.message().find("has the key type of an earlier certificate") != std::string::npos);
}
