#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/log.h"
#include "event/connection.h"
#include "one_connection.h"

using namespace gatehouse;
using namespace gatehouse::event;
using namespace gatehouse::test;
using namespace std::chrono_literals;

namespace {

// Sends the error log to a file for the test's lifetime, to check lines.
struct CapturedLog {
    CapturedLog() {
        char tmpl[] = "/tmp/gh_event_test_XXXXXX";
        int fd = mkstemp(tmpl);
        REQUIRE(fd >= 0);
        ::close(fd);
        path = tmpl;
        log.add(path, log::Level::Info);
        REQUIRE(log.open().ok());
        log::set_error_log(&log);
    }
    ~CapturedLog() {
        log::set_error_log(nullptr);
        ::unlink(path.c_str());
    }
    std::string text() const {
        std::ifstream f(path);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    std::string path;
    log::ErrorLog log;
};

// A loopback TCP listener on an ephemeral port; the fd belongs to the test
// (as the process layer owns real listening sockets).
struct TcpListener {
    TcpListener() {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
        REQUIRE(listen(fd, 64) == 0);
        socklen_t len = sizeof sin;
        REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
        port = ntohs(sin.sin_port);
    }
    ~TcpListener() { ::close(fd); }
    // A blocking client; on loopback connect() returns with the connection
    // already in the accept queue.
    int connect_client() const {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(c >= 0);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons(port);
        REQUIRE(connect(c, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
        return c;
    }
    int fd;
    uint16_t port;
};

uint16_t port_of(const sockaddr* sa) {
    REQUIRE(sa->sa_family == AF_INET);
    return ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
}

// What the HTTP layer's accept handler will look like: register, keep.
struct Server {
    ConnectionTable* table = nullptr;
    Loop* loop = nullptr;
    std::vector<Connection*> accepted;

    static void on_accept(void* data, Connection& c) {
        auto* s = static_cast<Server*>(data);
        if (!s->loop->add(c.io, Interest::ReadWrite).ok()) {
            s->table->close(c);
            return;
        }
        s->accepted.push_back(&c);
    }
};

}  // namespace

TEST_CASE("event/connection: the table fills, refuses, and reuses slots after the iteration") {
    CapturedLog cap;
    FakeClock clock;
    auto loop = make_loop(clock);
    Fds fds;
    ConnectionTable t(*loop, 3);
    CHECK(t.size() == 3);
    CHECK(t.free_count() == 3);

    Connection* a = t.open(fds.take());
    Connection* b = t.open(fds.take());
    Connection* c = t.open(fds.take());
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    CHECK(a->number == 1);
    CHECK(b->number == 2);
    CHECK(c->number == 3);
    CHECK(a->is_open());
    CHECK(t.free_count() == 0);

    int extra = fds.take();
    CHECK(t.open(extra) == nullptr);  // full: the caller still owns extra
    ::close(extra);
    CHECK(cap.text().find("[alert]") != std::string::npos);
    CHECK(cap.text().find("3 worker_connections are not enough") != std::string::npos);

    b->requests = 7;
    b->data = &t;
    t.close(*b);
    t.close(*b);  // no-op
    // Still b for the rest of the iteration: closed, not reusable.
    CHECK_FALSE(b->is_open());
    CHECK(b->fd() == -1);
    CHECK(b->requests == 7);
    CHECK(t.free_count() == 0);
    CHECK(t.open(fds.take()) == nullptr);

    loop->run_once(0);
    CHECK(t.free_count() == 1);
    Connection* d = t.open(fds.take());
    CHECK(d == b);  // the freed slot, clean
    CHECK(d->number == 4);
    CHECK(d->requests == 0);
    CHECK(d->data == nullptr);
}

TEST_CASE("event/connection: numbers come from a shared counter when given one") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Fds fds;
    std::atomic<uint64_t> counter{100};
    ConnectionTable t1(*loop, 2, &counter), t2(*loop, 2, &counter);
    CHECK(t1.open(fds.take())->number == 100);
    CHECK(t2.open(fds.take())->number == 101);
    CHECK(t1.open(fds.take())->number == 102);
    CHECK(counter.load() == 103);
}

TEST_CASE("event/connection: close cancels the connection's timers") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Fds fds;
    ConnectionTable t(*loop, 1);
    Connection* c = t.open(fds.take());
    int fired = 0;
    c->read_timer.cb = {[](void* p) { ++*static_cast<int*>(p); }, &fired};
    c->write_timer.cb = c->read_timer.cb;
    loop->arm(c->read_timer, 10ms);
    loop->arm(c->write_timer, 10ms);
    t.close(*c);
    CHECK_FALSE(c->read_timer.armed());
    CHECK_FALSE(c->write_timer.armed());
    clock.advance(20);
    loop->run_once(0);
    CHECK(fired == 0);
}

TEST_CASE("event/connection: recv and send keep the readiness flags right") {
    OneConnection one;
    auto& [clock, loop, fds, t, c, peer] = one;
    CHECK(c->io.writable());
    CHECK_FALSE(c->io.readable());

    REQUIRE(::write(peer, "hello", 5) == 5);
    loop->run_once(1000);
    CHECK(c->io.readable());
    char buf[64];
    IoResult r = c->recv(buf);
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 5);
    CHECK(std::string(buf, 5) == "hello");
    CHECK_FALSE(c->io.readable());  // short read: drained

    r = c->recv(buf);
    CHECK(r.kind == IoResult::Again);

    // A full buffer is not short: readable stays, the next read finds more.
    REQUIRE(::write(peer, "0123456789", 10) == 10);
    loop->run_once(1000);
    r = c->recv(std::span<char>(buf, 4));
    CHECK(r.bytes == 4);
    CHECK(c->io.readable());

    r = c->send(std::string_view("pong"));
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 4);
    CHECK(::read(peer, buf, sizeof buf) == 4);

    const char part1[] = "ab", part2[] = "cd";
    iovec iov[2] = {{const_cast<char*>(part1), 2}, {const_cast<char*>(part2), 2}};
    r = c->writev(iov);
    CHECK(r.bytes == 4);
    CHECK(::read(peer, buf, sizeof buf) == 4);
    CHECK(std::string(buf, 4) == "abcd");

    // The peer going away: the rest of the data, then EOF.
    ::close(peer);
    fds.peers.pop_back();
    loop->run_once(1000);
    CHECK(c->io.peer_closed());
    r = c->recv(buf);
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 6);  // "456789", short, but after RDHUP: still readable
    CHECK(c->io.readable());
    CHECK(c->recv(buf).kind == IoResult::Eof);
    r = c->send(std::string_view("late"));
    CHECK(r.kind == IoResult::Error);
    CHECK(r.err == EPIPE);  // and no SIGPIPE
    t.close(*c);
}

TEST_CASE("event/connection: readv fills its buffers in order and keeps the readiness flags right") {
    OneConnection one;
    auto& [clock, loop, fds, t, c, peer] = one;
    REQUIRE(::write(peer, "0123456789", 10) == 10);
    loop->run_once(1000);
    char a[4], b[4], d[4];
    iovec iov[3] = {{a, 4}, {b, 4}, {d, 4}};
    IoResult r = c->readv(iov);
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 10);
    CHECK(std::string(a, 4) + std::string(b, 4) + std::string(d, 2) == "0123456789");
    CHECK_FALSE(c->io.readable());  // 10 of 12: short, drained
    CHECK(c->readv(iov).kind == IoResult::Again);

    // Every buffer filled is not short: readable stays.
    REQUIRE(::write(peer, "abcdefghijklmn", 14) == 14);
    loop->run_once(1000);
    r = c->readv(iov);
    CHECK(r.bytes == 12);
    CHECK(c->io.readable());
    // One buffer: recv() itself.
    r = c->readv(std::span<const iovec>(iov, 1));
    CHECK(r.bytes == 2);
    CHECK(std::string(a, 2) == "mn");

    ::close(peer);
    fds.peers.pop_back();
    loop->run_once(1000);
    CHECK(c->readv(iov).kind == IoResult::Eof);
    CHECK_FALSE(c->io.readable());
    t.close(*c);
}

TEST_CASE("event/connection: a write that does not fit clears writable") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Fds fds;
    ConnectionTable t(*loop, 1);
    Connection* c = t.open(fds.take());
    REQUIRE(loop->add(c->io, Interest::ReadWrite).ok());
    loop->run_once(1000);
    REQUIRE(c->io.writable());
    std::vector<char> big(1 << 16, 'x');
    for (int i = 0; i < 1000 && c->io.writable(); ++i) c->send(big);
    CHECK_FALSE(c->io.writable());
    CHECK(c->send(big).kind == IoResult::Again);

    // The peer reads: EPOLLOUT comes back, edge-triggered.
    char sink[1 << 16];
    while (::read(fds.peers.back(), sink, sizeof sink) > 0) {
    }
    loop->run_once(1000);
    CHECK(c->io.writable());
    t.close(*c);
}

TEST_CASE("event/connection: the listener accepts loopback connections") {
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable table(*loop, 16);
    TcpListener lst;
    Server srv{&table, loop.get(), {}};
    Listener l(*loop, table, lst.fd, &Server::on_accept, &srv, {.accept_batch = kMultiAccept});
    REQUIRE(l.start().ok());
    CHECK(l.accepting());

    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(lst.connect_client());
    loop->run_once(1000);
    REQUIRE(srv.accepted.size() == 3);

    for (size_t i = 0; i < clients.size(); ++i) {
        Connection* c = srv.accepted[i];
        sockaddr_in me{};
        socklen_t len = sizeof me;
        REQUIRE(getsockname(clients[i], reinterpret_cast<sockaddr*>(&me), &len) == 0);
        CHECK(c->peer_len == sizeof(sockaddr_in));
        CHECK(port_of(reinterpret_cast<const sockaddr*>(&c->peer)) == ntohs(me.sin_port));
        const sockaddr* local = c->local_address();
        REQUIRE(local);
        CHECK(port_of(local) == lst.port);
        CHECK(c->number == i + 1);
    }
    // The accepted sockets work: a client's bytes reach its connection.
    REQUIRE(::write(clients[1], "GET", 3) == 3);
    loop->run_once(1000);
    CHECK(srv.accepted[1]->io.readable());
    CHECK_FALSE(srv.accepted[0]->io.readable());

    for (Connection* c : srv.accepted) table.close(*c);
    for (int c : clients) ::close(c);
}

TEST_CASE("event/connection: accepting is bounded per wakeup") {
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable table(*loop, 16);
    TcpListener lst;
    Server srv{&table, loop.get(), {}};
    Listener l(*loop, table, lst.fd, &Server::on_accept, &srv, {.accept_batch = 2});
    REQUIRE(l.start().ok());
    std::vector<int> clients;
    for (int i = 0; i < 5; ++i) clients.push_back(lst.connect_client());
    loop->run_once(1000);
    CHECK(srv.accepted.size() == 2);
    // Level-triggered: the rest of the backlog wakes us again at once.
    loop->run_once(1000);
    CHECK(srv.accepted.size() == 4);
    loop->run_once(1000);
    CHECK(srv.accepted.size() == 5);
    for (Connection* c : srv.accepted) table.close(*c);
    for (int c : clients) ::close(c);
}

// Whether c has something to read (or EOF) within `ms`.
bool readable_within(int c, int ms) {
    pollfd p{c, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

TEST_CASE("event/connection: a table full of busy connections stops the listener, refusing nobody") {
    CapturedLog cap;
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable table(*loop, 1);
    TcpListener lst;
    Server srv{&table, loop.get(), {}};
    Listener l(*loop, table, lst.fd, &Server::on_accept, &srv, {.accept_batch = kMultiAccept});
    REQUIRE(l.start().ok());

    int c1 = lst.connect_client();
    int c2 = lst.connect_client();
    loop->run_once(1000);
    REQUIRE(srv.accepted.size() == 1);
    CHECK_FALSE(l.accepting());
    CHECK(l.started());
    CHECK(cap.text().find("1 worker_connections are not enough") != std::string::npos);
    // c2 waits in the backlog (another worker may take it): not closed.
    CHECK_FALSE(readable_within(c2, 0));

    // Nothing changes with time: no retry takes it.
    clock.advance(500);
    loop->run_once(0);
    CHECK_FALSE(l.accepting());
    CHECK(srv.accepted.size() == 1);
    CHECK_FALSE(readable_within(c2, 0));

    // A slot frees at the end of the iteration that closed it: the
    // listener is polled again and c2 is served.
    table.close(*srv.accepted[0]);
    CHECK_FALSE(l.accepting());
    loop->run_once(0);
    CHECK(l.accepting());
    loop->run_once(1000);
    REQUIRE(srv.accepted.size() == 2);
    table.close(*srv.accepted[1]);
    for (int c : {c1, c2}) ::close(c);
}

namespace {
// Accepted connections are reusable (idle) until a test says otherwise;
// reclaiming one closes it and records which.
struct IdleServer {
    ConnectionTable* table = nullptr;
    Loop* loop = nullptr;
    std::vector<Connection*> accepted;
    std::vector<uint64_t> reclaimed;

    static void on_accept(void* data, Connection& c) {
        auto* s = static_cast<IdleServer*>(data);
        REQUIRE(s->loop->add(c.io, Interest::ReadWrite).ok());
        s->accepted.push_back(&c);
        c.reclaim = Callback::to<&IdleServer::reclaim_one>(&c);
        s->table->set_reusable(c, true);
    }
    static void reclaim_one(Connection* c) {
        current->reclaimed.push_back(c->number);
        current->table->close(*c);
    }
    static inline IdleServer* current = nullptr;
};
}  // namespace

TEST_CASE("event/connection: a full table takes back its idle connections, oldest first") {
    CapturedLog cap;
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable table(*loop, 3);
    TcpListener lst;
    IdleServer srv{&table, loop.get(), {}, {}};
    IdleServer::current = &srv;
    Listener l(*loop, table, lst.fd, &IdleServer::on_accept, &srv, {.accept_batch = kMultiAccept});
    REQUIRE(l.start().ok());

    std::vector<int> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(lst.connect_client());
    loop->run_once(1000);
    REQUIRE(srv.accepted.size() == 3);
    CHECK(table.reusable_count() == 3);
    // The first one becomes busy, the second idle again (most recent).
    table.set_reusable(*srv.accepted[0], false);
    table.set_reusable(*srv.accepted[1], true);
    const uint64_t second = srv.accepted[1]->number, third = srv.accepted[2]->number;

    // A fourth client: the oldest idle one (the third) gives its slot,
    // which is free after the iteration; the fourth is accepted then.
    clients.push_back(lst.connect_client());
    loop->run_once(1000);
    CHECK(srv.reclaimed == std::vector<uint64_t>{third});
    CHECK(cap.text().find("3 worker_connections are not enough, reusing connections") != std::string::npos);
    CHECK(readable_within(clients[2], 1000));  // closed: EOF
    CHECK(l.accepting());
    loop->run_once(1000);
    REQUIRE(srv.accepted.size() == 4);
    CHECK_FALSE(readable_within(clients[3], 0));  // served, not closed

    // Next: the second.
    clients.push_back(lst.connect_client());
    loop->run_once(1000);
    loop->run_once(1000);
    CHECK(srv.reclaimed == std::vector<uint64_t>{third, second});
    REQUIRE(srv.accepted.size() == 5);

    // Unmarked and closed ones are never reclaimed; none left idle but
    // the two newest.
    CHECK(table.reusable_count() == 2);
    for (Connection& c : table.slots()) table.close(c);
    CHECK(table.reusable_count() == 0);
    for (int c : clients) ::close(c);
}

TEST_CASE("event/connection: EMFILE pauses accepting, then it resumes") {
    CapturedLog cap;
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable table(*loop, 4);
    TcpListener lst;
    Server srv{&table, loop.get(), {}};
    Listener l(*loop, table, lst.fd, &Server::on_accept, &srv, {.accept_batch = kMultiAccept});
    REQUIRE(l.start().ok());
    int client = lst.connect_client();

    // Make the next fd the process would get exceed its limit.
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
    int probe = dup(0);
    REQUIRE(probe >= 0);
    ::close(probe);
    rlimit low = old;
    low.rlim_cur = static_cast<rlim_t>(probe);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    loop->run_once(1000);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);

    CHECK(srv.accepted.empty());
    CHECK_FALSE(l.accepting());
    CHECK(cap.text().find("[crit]") != std::string::npos);
    CHECK(cap.text().find("accept4() failed (24: ") != std::string::npos);

    clock.advance(499);
    loop->run_once(0);
    CHECK_FALSE(l.accepting());
    clock.advance(1);
    loop->run_once(0);
    CHECK(l.accepting());
    loop->run_once(1000);
    CHECK(srv.accepted.size() == 1);
    table.close(*srv.accepted[0]);
    ::close(client);
}

TEST_CASE("event/connection: stop() ends accepting and the pending retry") {
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable table(*loop, 2);
    TcpListener lst;
    Server srv{&table, loop.get(), {}};
    Listener l(*loop, table, lst.fd, &Server::on_accept, &srv);
    REQUIRE(l.start().ok());
    l.stop();
    CHECK_FALSE(l.started());
    CHECK_FALSE(l.accepting());
    int c = lst.connect_client();
    loop->run_once(0);
    CHECK(srv.accepted.empty());
    ::close(c);
}
