// Tests of open_connection() and connect_result() (src/upstream/
// connect.cc) against real loopback and Unix sockets.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "fixture.h"
#include "temp_dir.h"
#include "upstream/upstream.h"
#include "worker_fixture.h"

using namespace gatehouse;
using gatehouse::test::CapturedLog;
using gatehouse::test::TempDir;
using gatehouse::test::Worker;
using upstream::Peer;

namespace {

Peer peer(const std::string& address) {
    auto r = upstream::resolve(address, 80);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.message()));
    return (*r)[0];
}

// A listening socket owned by the test.
struct Listening {
    explicit Listening(int family, const std::string& path = "") {
        fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        if (family == AF_UNIX) {
            sockaddr_un un{};
            un.sun_family = AF_UNIX;
            REQUIRE(path.size() < sizeof un.sun_path);
            path.copy(un.sun_path, path.size());
            REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
            address = "unix:" + path;
        } else {
            sockaddr_in sin{};
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
            socklen_t len = sizeof sin;
            REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
            address = "127.0.0.1:" + std::to_string(ntohs(sin.sin_port));
        }
        REQUIRE(::listen(fd, 8) == 0);
    }
    ~Listening() {
        if (fd >= 0) ::close(fd);
    }
    int fd = -1;
    std::string address;
};

// A loopback port nothing listens on (bound, then released).
std::string closed_port() {
    Listening l(AF_INET);
    std::string a = l.address;
    ::close(l.fd);
    l.fd = -1;
    return a;
}

size_t open_fds() {
    size_t n = 0;
    DIR* d = opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    while (readdir(d)) ++n;
    closedir(d);
    return n;
}

// Turns the loop until c is writable (connected or failed).
void wait_writable(Worker& w, event::Connection& c) {
    for (int i = 0; i < 1000 && !c.io.writable(); ++i) w.loop->run_once(10);
    REQUIRE(c.io.writable());
}

}  // namespace

TEST_CASE("upstream/connect: to a TCP listener") {
    Worker w;
    Listening l(AF_INET);
    Peer p = peer(l.address);
    auto c = upstream::open_connection(p);
    REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.message()));
    event::Connection& conn = **c;
    CHECK(conn.is_open());
    CHECK(conn.io.registered());
    CHECK(conn.peer_len == p.sa_len);
    CHECK(conn.requests == 0);
    CHECK(conn.data == nullptr);
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    REQUIRE(getsockopt(conn.fd(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) == 0);
    CHECK(nodelay != 0);
    CHECK((fcntl(conn.fd(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((fcntl(conn.fd(), F_GETFL) & O_NONBLOCK) != 0);
    wait_writable(w, conn);
    CHECK(upstream::connect_result(conn) == 0);
    int accepted = ::accept(l.fd, nullptr, nullptr);
    CHECK(accepted >= 0);
    if (accepted >= 0) ::close(accepted);
    CHECK(w.table->free_count() == w.table->size() - 1);
    w.table->close(conn);
}

TEST_CASE("upstream/connect: refused") {
    Worker w;
    Peer p = peer(closed_port());
    auto c = upstream::open_connection(p);
    if (!c.ok()) {
        // Loopback may refuse within connect() itself.
        CHECK(c.message() == "connect() to " + p.text + " failed (111: Connection refused)");
        return;
    }
    wait_writable(w, **c);
    CHECK(upstream::connect_result(**c) == ECONNREFUSED);
    w.table->close(**c);
}

TEST_CASE("upstream/connect: Unix sockets") {
    Worker w;
    TempDir d;
    SUBCASE("listening") {
        Listening l(AF_UNIX, d / "app.sock");
        Peer p = peer(l.address);
        auto c = upstream::open_connection(p);
        REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.message()));
        wait_writable(w, **c);
        CHECK(upstream::connect_result(**c) == 0);
        w.table->close(**c);
    }
    SUBCASE("no such socket: the error names the call, the peer and errno") {
        size_t before = open_fds();
        Peer p = peer("unix:" + d / "none.sock");
        auto c = upstream::open_connection(p);
        REQUIRE_FALSE(c.ok());
        CHECK(c.message() == "connect() to unix:" + d / "none.sock" + " failed (2: No such file or directory)");
        w.turn();  // the slot's release
        CHECK(w.table->free_count() == w.table->size());
        CHECK(open_fds() == before);
    }
}

TEST_CASE("upstream/connect: no slot left") {
    CapturedLog log;
    Worker w(1);
    int other;
    event::Connection& busy = w.connected(other);
    Listening l(AF_INET);
    size_t before = open_fds();
    auto c = upstream::open_connection(peer(l.address));
    REQUIRE_FALSE(c.ok());
    CHECK(c.message() == "worker_connections are not enough");
    CHECK(log.text().find("[alert]") != std::string::npos);
    CHECK(log.text().find("1 worker_connections are not enough") != std::string::npos);
    CHECK(open_fds() == before);  // the socket was closed
    w.table->close(busy);
}
