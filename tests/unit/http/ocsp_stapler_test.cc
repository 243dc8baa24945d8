// Tests of src/http/ocsp_stapler.h on a worker's loop with a fake clock:
// the test plays the responder on a loopback socket, sees the request and
// answers; the clock says when the stapler asks again.
#include "http/ocsp_stapler.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <string>

#include "core/arena.h"
#include "core/base64.h"
#include "temp_dir.h"
#include "tls/context.h"
#include "tls/test_pki.h"
#include "upstream/worker_fixture.h"

using namespace gatehouse;
using namespace gatehouse::http;

namespace {

// A listening socket on 127.0.0.1 whose connections the test accepts and
// answers by hand.
struct Responder {
    int fd = -1;
    uint16_t port = 0;
    Responder() {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
        REQUIRE(::listen(fd, 8) == 0);
        socklen_t len = sizeof sa;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
        port = ntohs(sa.sin_port);
    }
    ~Responder() { ::close(fd); }
    int accept() { return ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC); }  // -1: none waiting
};

struct Setup {
    test::Pki pki;
    test::TempDir dir;
    test::Worker worker;
    Arena arena;
    tls::Context ctx;
    Responder responder;
    OcspStapler* stapler = nullptr;

    Setup() {
        // Wall time as OpenSSL sees it: the responses' times are real.
        worker.clock.set_wall({static_cast<int64_t>(time(nullptr)), 0});
        worker.loop->update_time();
        std::string cert = dir.write("leaf.crt", test::pem(pki.leaf));
        std::string key = dir.write("leaf.key", test::pem(pki.leaf_key));
        std::string ca = dir.write("ca.crt", test::pem(pki.ca));
        REQUIRE(ctx.add_certificate(cert, key, {}).ok());
        REQUIRE(ctx.add_trusted(ca).ok());
        X509* issuer = ctx.get1_issuer(0);
        REQUIRE(issuer != nullptr);
        StaplerConf sc;
        sc.url = tls::parse_responder_url("http://127.0.0.1:" + std::to_string(responder.port) + "/ocsp").value();
        sc.certificate = cert;
        auto st = OcspStapler::make(arena, ctx, 0, issuer, std::move(sc));
        REQUIRE(st.ok());
        stapler = *st;
    }

    // Turns the loop until the responder has a connection; returns it
    // with the request head read.
    int next_request(std::string& head) {
        for (int i = 0; i < 200; ++i) {
            worker.turn();
            int c = responder.accept();
            if (c < 0) {
                usleep(1000);
                continue;
            }
            char buf[4096];
            while (head.find("\r\n\r\n") == std::string::npos) {
                worker.turn();
                ssize_t n = ::recv(c, buf, sizeof buf, MSG_DONTWAIT);
                if (n > 0) head.append(buf, static_cast<size_t>(n));
                if (n == 0) break;
                if (n < 0) usleep(1000);
            }
            return c;
        }
        return -1;
    }
    // The loop reads its clock once an iteration.
    void advance(uint64_t ms) {
        worker.clock.advance(ms);
        worker.loop->update_time();
    }
    bool no_request() {
        for (int i = 0; i < 20; ++i) worker.turn();
        int c = responder.accept();
        if (c >= 0) ::close(c);
        return c < 0;
    }
    // Turns the loop until the stapler has a response (or gives up).
    std::string_view wait_staple() {
        for (int i = 0; i < 500; ++i) {
            worker.turn();
            // staple() may start a fetch: only once none is due.
            std::string_view s = stapler->staple();
            if (!s.empty()) return s;
            usleep(1000);
        }
        return {};
    }
};

void answer(int c, std::string_view body, std::string_view type = "application/ocsp-response") {
    std::string r = "HTTP/1.0 200 OK\r\nContent-Type: " + std::string(type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
    REQUIRE(::send(c, r.data(), r.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(r.size()));
    ::close(c);
}

}  // namespace

TEST_CASE("http/ocsp_stapler: the first handshake asks, a later one staples, an hour on it asks again") {
    Setup s;
    CHECK(s.stapler->staple().empty());  // the first goes without
    std::string head;
    int c = s.next_request(head);
    REQUIRE(c >= 0);
    // GET {path}/{url-encoded base64 of the DER request} (RFC 6960 A.1).
    CHECK(head.starts_with("GET /ocsp/"));
    CHECK(head.find(" HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(s.responder.port) + "\r\n\r\n") !=
          std::string::npos);
    std::string der = s.pki.response(s.pki.leaf, V_OCSP_CERTSTATUS_GOOD, 7 * 86400);
    answer(c, der);
    CHECK(s.wait_staple() == der);

    // Valid for a week: asked again after an hour, not before.
    s.advance(59 * 60 * 1000);
    CHECK(s.stapler->staple() == der);
    CHECK(s.no_request());
    s.advance(2 * 60 * 1000);
    CHECK(s.stapler->staple() == der);  // the old one meanwhile
    head.clear();
    c = s.next_request(head);
    REQUIRE(c >= 0);
    // A failed refresh keeps the response stapled while it is valid, and
    // the next try is 5 minutes on.
    answer(c, "", "text/html");
    for (int i = 0; i < 20; ++i) s.worker.turn();
    CHECK(s.stapler->staple() == der);
    s.advance(4 * 60 * 1000);
    CHECK(s.stapler->staple() == der);
    CHECK(s.no_request());
    s.advance(2 * 60 * 1000);
    CHECK(s.stapler->staple() == der);
    head.clear();
    c = s.next_request(head);
    REQUIRE(c >= 0);
    ::close(c);  // the stapler goes with this fetch under way
}

TEST_CASE("http/ocsp_stapler: a revoked status is not stapled; the next try is 5 minutes on") {
    Setup s;
    CHECK(s.stapler->staple().empty());
    std::string head;
    int c = s.next_request(head);
    REQUIRE(c >= 0);
    answer(c, s.pki.response(s.pki.leaf, V_OCSP_CERTSTATUS_REVOKED));
    for (int i = 0; i < 50; ++i) s.worker.turn();
    CHECK(s.stapler->staple().empty());
    CHECK(s.no_request());
    s.advance(301 * 1000);
    CHECK(s.stapler->staple().empty());
    head.clear();
    c = s.next_request(head);
    CHECK(c >= 0);
    if (c >= 0) ::close(c);
}
