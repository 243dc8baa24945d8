#include "event/pipe.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "core/buf.h"
#include "event/chain_writer.h"
#include "event/connection.h"
#include "one_connection.h"

using namespace gatehouse;
using namespace gatehouse::event;
using namespace gatehouse::test;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

// Everything the peer end has now (nonblocking).
std::string drain(int fd) {
    std::string got;
    char b[65536];
    for (;;) {
        ssize_t n = ::read(fd, b, sizeof b);
        if (n <= 0) break;
        got.append(b, static_cast<size_t>(n));
    }
    return got;
}

// Puts `s` into the pipe as its filler would.
void fill(Pipe& p, const std::string& s) {
    REQUIRE(::write(p.wfd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
    p.unsent += s.size();
}

}  // namespace

TEST_CASE("event/pipe: empty pipes are kept for the next taker, the others closed") {
    pipes::release_kept();
    Pipe* a = pipes::take();
    REQUIRE(a);
    CHECK(a->unsent == 0);
    CHECK(pipes::in_use() == 1);
    const int rfd = a->rfd, wfd = a->wfd;
    pipes::give(a);
    CHECK(pipes::in_use() == 0);
    CHECK(pipes::kept() == 1);
    // The same pipe again, still open.
    Pipe* b = pipes::take();
    REQUIRE(b);
    CHECK(b->rfd == rfd);
    CHECK(is_open(rfd));
    CHECK(pipes::kept() == 0);

    // Given back holding bytes (a response cut short): closed, so that
    // nobody reads them after.
    fill(*b, "left");
    pipes::give(b);
    CHECK(pipes::kept() == 0);
    CHECK_FALSE(is_open(rfd));
    CHECK_FALSE(is_open(wfd));

    // An idle worker closes what it kept.
    Pipe* c = pipes::take();
    REQUIRE(c);
    const int crfd = c->rfd;
    pipes::give(c);
    CHECK(pipes::kept() == 1);
    pipes::release_kept();
    CHECK(pipes::kept() == 0);
    CHECK_FALSE(is_open(crfd));
}

TEST_CASE("event/pipe: at most the limit's pipes are taken at once") {
    pipes::release_kept();
    pipes::set_limit(0);
    CHECK(pipes::take() == nullptr);
    pipes::set_limit(pipes::kDefaultLimit);
    std::vector<Pipe*> taken;
    for (size_t i = 0; i < pipes::kDefaultLimit; ++i) {
        Pipe* p = pipes::take();
        REQUIRE(p);
        taken.push_back(p);
    }
    CHECK(pipes::take() == nullptr);
    pipes::give(taken.back());
    taken.pop_back();
    Pipe* again = pipes::take();
    CHECK(again != nullptr);
    taken.push_back(again);
    for (Pipe* p : taken) pipes::give(p);
    CHECK(pipes::in_use() == 0);
    CHECK(pipes::kept() == pipes::kMaxKept);
    pipes::release_kept();
}

TEST_CASE("event/connection: splice_in takes socket bytes into a pipe, splice_out sends them on") {
    OneConnection one;
    auto& [clock, loop, fds, t, c, peer] = one;
    Pipe* p = pipes::take();
    REQUIRE(p);
    REQUIRE(::write(peer, "0123456789", 10) == 10);
    loop->run_once(1000);
    // At most what is asked, and a short splice leaves the flag set (the
    // pipe, not the socket, may have been what ran out).
    IoResult r = c->splice_in(p->wfd, 4);
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 4);
    r = c->splice_in(p->wfd, 100);
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 6);
    CHECK(c->io.readable());
    // Only EAGAIN clears it.
    CHECK(c->splice_in(p->wfd, 100).kind == IoResult::Again);
    CHECK_FALSE(c->io.readable());
    p->unsent = 10;

    // Out to the peer, whole.
    r = c->splice_out(p->rfd, 10, false);
    CHECK(r.kind == IoResult::Ok);
    CHECK(r.bytes == 10);
    p->unsent = 0;
    CHECK(drain(peer) == "0123456789");

    ::shutdown(peer, SHUT_WR);
    loop->run_once(1000);
    CHECK(c->splice_in(p->wfd, 100).kind == IoResult::Eof);
    pipes::give(p);
    t.close(*c);
}

TEST_CASE("event/chain_writer: pipe pieces go out in their place and are counted off their pipe") {
    OneConnection one;
    auto& [clock, loop, fds, t, c, peer] = one;
    Pipe* p = pipes::take();
    REQUIRE(p);
    std::pmr::monotonic_buffer_resource mem;
    ChainWriter w(&mem);
    fill(*p, "body-1;");
    w.push(Buf::memory("head;"));
    w.push(Buf::pipe_piece(p->rfd, 7));
    w.push(Buf::memory("tail;"));
    CHECK(w.pending() == 17);
    ChainWriter::Result res = w.write(*c, false);
    CHECK(res.kind == ChainWriter::Result::Done);
    CHECK(res.bytes == 17);
    CHECK(p->unsent == 0);
    CHECK(drain(peer) == "head;body-1;tail;");

    pipes::give(p);
    t.close(*c);
}

namespace {

// A connected TCP pair on loopback, both ends nonblocking: a unix socket
// takes a whole pipe at once whatever its buffer says.
std::pair<int, int> tcp_pair() {
    int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(l >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(l, 1) == 0);
    REQUIRE(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    int x = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(::connect(x, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    int y = ::accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    REQUIRE(y >= 0);
    ::close(l);
    REQUIRE(::fcntl(x, F_SETFL, O_NONBLOCK) == 0);
    return {x, y};
}

}  // namespace

TEST_CASE("event/chain_writer: a pipe piece waits, partly sent, while the socket is full") {
    FakeClock clock;
    auto loop = make_loop(clock);
    ConnectionTable t(*loop, 1);
    auto [fd, peer] = tcp_pair();
    Connection* c = t.open(fd);
    REQUIRE(c);
    REQUIRE(loop->add(c->io, Interest::ReadWrite).ok());
    loop->run_once(1000);
    int small = 4096;
    REQUIRE(::setsockopt(c->fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    REQUIRE(::setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    Pipe* p = pipes::take();
    REQUIRE(p);
    std::pmr::monotonic_buffer_resource mem;
    ChainWriter w(&mem);
    std::string big(1 << 20, 'x');
    size_t put = 0;
    while (put < big.size()) {
        ssize_t n = ::write(p->wfd, big.data() + put, big.size() - put);
        if (n <= 0) break;
        put += static_cast<size_t>(n);
    }
    REQUIRE(put > 0);
    p->unsent = put;
    w.push(Buf::pipe_piece(p->rfd, put));
    ChainWriter::Result res = w.write(*c, false);
    uint64_t written = res.bytes;
    std::string got;
    int waits = 0;
    while (res.kind == ChainWriter::Result::Again) {
        ++waits;
        CHECK_FALSE(c->io.writable());
        CHECK(p->unsent == put - written);
        got += drain(peer);
        loop->run_once(1000);
        res = w.write(*c, false);
        written += res.bytes;
    }
    CHECK(waits > 0);
    CHECK(res.kind == ChainWriter::Result::Done);
    // What the socket took is still on its way.
    for (int i = 0; i < 1000 && got.size() < put; ++i) {
        pollfd pf{peer, POLLIN, 0};
        ::poll(&pf, 1, 100);
        got += drain(peer);
    }
    CHECK(got.size() == put);
    CHECK(got.find_first_not_of('x') == std::string::npos);
    CHECK(p->unsent == 0);
    CHECK(w.empty());
    pipes::give(p);
    t.close(*c);
    ::close(peer);
}

namespace {

// A transport that writes through memory only (as TLS does).
struct CopyingTransport final : Transport {
    IoResult recv(Connection& c, std::span<char> buf) override {
        ssize_t n = ::recv(c.fd(), buf.data(), buf.size(), 0);
        return n > 0 ? IoResult{IoResult::Ok, static_cast<size_t>(n), 0} : IoResult{IoResult::Again, 0, 0};
    }
    IoResult writev(Connection& c, std::span<const iovec> iov) override {
        ++calls;
        ssize_t n = ::writev(c.fd(), iov.data(), static_cast<int>(iov.size()));
        return n > 0 ? IoResult{IoResult::Ok, static_cast<size_t>(n), 0} : IoResult{IoResult::Again, 0, 0};
    }
    int calls = 0;
};

}  // namespace

TEST_CASE("event/chain_writer: through a transport, a pipe piece is read into memory first") {
    OneConnection one;
    auto& [clock, loop, fds, t, c, peer] = one;
    CopyingTransport tr;
    c->transport = &tr;
    Pipe* p = pipes::take();
    REQUIRE(p);
    std::pmr::monotonic_buffer_resource mem;
    ChainWriter w(&mem);
    std::string body(40000, 'b');
    fill(*p, body);
    w.push(Buf::pipe_piece(p->rfd, body.size()));
    ChainWriter::Limits lim;
    lim.file_piece = 16384;
    ChainWriter::Result res = w.write(*c, true, lim);
    CHECK(res.kind == ChainWriter::Result::Done);
    CHECK(res.bytes == body.size());
    CHECK(tr.calls >= 3);  // 16k pieces
    CHECK(p->unsent == 0);
    CHECK(drain(peer) == body);
    c->transport = nullptr;
    pipes::give(p);
    t.close(*c);
}
