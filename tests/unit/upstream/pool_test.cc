// Tests of the keepalive pool (src/upstream/pool.cc): what is kept and
// what closed, most recent first, least recently used evicted, and an
// idle connection closed when the origin closes it, sends anything, or
// keepalive_timeout passes.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <span>
#include <string>

#include "upstream/balancer.h"
#include "upstream/upstream.h"
#include "worker_fixture.h"

using namespace std::chrono_literals;
using namespace gatehouse;
using gatehouse::test::Worker;
using upstream::Peer;
using upstream::UpstreamConf;

namespace {

Peer peer(const char* address) {
    auto r = upstream::resolve(address, 80);
    REQUIRE(r.ok());
    return (*r)[0];
}

// Whether the origin's end sees the connection closed.
bool closed_by_us(int other) {
    char b;
    return ::recv(other, &b, 1, MSG_DONTWAIT) == 0;
}

}  // namespace

TEST_CASE("upstream/pool: a kept connection comes back for the same address") {
    Worker w;
    UpstreamConf& u = w.group(4);
    Peer a = peer("127.0.0.1:8001"), b = peer("127.0.0.1:8002");
    int other;
    event::Connection& c = w.connected(other);
    c.data = &u;  // the caller's state, which the pool must not keep
    upstream::keep_idle(u, a, c, 3);
    CHECK(c.is_open());
    CHECK(c.data == nullptr);
    CHECK(c.read_timer.armed());
    CHECK(upstream::take_idle(u, b) == nullptr);
    event::Connection* back = upstream::take_idle(u, a);
    REQUIRE(back == &c);
    CHECK(c.requests == 3);
    CHECK_FALSE(c.read_timer.armed());
    CHECK_FALSE(c.io.on_read);
    CHECK_FALSE(c.io.on_write);
    CHECK_FALSE(c.read_timer.cb);
    // Taken: no longer in the pool.
    CHECK(upstream::take_idle(u, a) == nullptr);
    w.table->close(c);
}

TEST_CASE("upstream/pool: the most recently kept first") {
    Worker w;
    UpstreamConf& u = w.group(4);
    Peer a = peer("127.0.0.1:8001");
    int o1, o2;
    event::Connection& c1 = w.connected(o1);
    event::Connection& c2 = w.connected(o2);
    upstream::keep_idle(u, a, c1, 1);
    upstream::keep_idle(u, a, c2, 1);
    CHECK(upstream::take_idle(u, a) == &c2);
    CHECK(upstream::take_idle(u, a) == &c1);
    w.table->close(c1);
    w.table->close(c2);
}

TEST_CASE("upstream/pool: full: the least recently used is closed") {
    Worker w;
    UpstreamConf& u = w.group(2);
    Peer a = peer("127.0.0.1:8001"), b = peer("127.0.0.1:8002");
    int o1, o2, o3;
    event::Connection& c1 = w.connected(o1);
    event::Connection& c2 = w.connected(o2);
    event::Connection& c3 = w.connected(o3);
    upstream::keep_idle(u, a, c1, 1);
    upstream::keep_idle(u, b, c2, 1);
    upstream::keep_idle(u, b, c3, 1);
    CHECK_FALSE(c1.is_open());
    CHECK(closed_by_us(o1));
    CHECK(upstream::take_idle(u, a) == nullptr);
    CHECK(upstream::take_idle(u, b) == &c3);
    CHECK(upstream::take_idle(u, b) == &c2);
    w.table->close(c2);
    w.table->close(c3);
}

TEST_CASE("upstream/pool: what is closed instead of kept") {
    Worker w;
    Peer a = peer("127.0.0.1:8001");
    int other;
    SUBCASE("no keepalive in the group") {
        UpstreamConf& u = w.group(0);
        event::Connection& c = w.connected(other);
        upstream::keep_idle(u, a, c, 1);
        CHECK_FALSE(c.is_open());
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
    SUBCASE("keepalive_requests reached") {
        UpstreamConf& u = w.group(4);
        u.keepalive_requests = 5;
        event::Connection& c = w.connected(other);
        upstream::keep_idle(u, a, c, 4);
        CHECK(c.is_open());
        REQUIRE(upstream::take_idle(u, a) == &c);
        upstream::keep_idle(u, a, c, 5);
        CHECK_FALSE(c.is_open());
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
    SUBCASE("the origin already closed it") {
        UpstreamConf& u = w.group(4);
        event::Connection& c = w.connected(other);
        ::shutdown(other, SHUT_WR);
        w.turn();  // the loop sees it (EPOLLRDHUP)
        upstream::keep_idle(u, a, c, 1);
        CHECK_FALSE(c.is_open());
    }
    SUBCASE("keepalive_time reached: a connection lives that long at most") {
        UpstreamConf& u = w.group(4);
        u.keepalive_time = 2s;
        event::Connection& c = w.connected(other);
        w.clock.advance(1);
        w.turn();
        const event::Msec opened = w.loop->now();
        REQUIRE(opened != 0);
        w.clock.advance(1'999);
        w.turn();
        upstream::keep_idle(u, a, c, 1, nullptr, opened);
        CHECK(c.is_open());
        event::Msec told = 0;
        REQUIRE(upstream::take_idle(u, a, nullptr, &told) == &c);
        CHECK(told == opened);
        w.clock.advance(1);
        w.turn();
        upstream::keep_idle(u, a, c, 2, nullptr, opened);
        CHECK_FALSE(c.is_open());
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
    SUBCASE("a connection the caller closed is ignored") {
        UpstreamConf& u = w.group(4);
        event::Connection& c = w.connected(other);
        w.table->close(c);
        upstream::keep_idle(u, a, c, 1);
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
}

TEST_CASE("upstream/pool: an idle connection is watched") {
    Worker w;
    UpstreamConf& u = w.group(4);
    u.keepalive_timeout = 30s;
    Peer a = peer("127.0.0.1:8001");
    int other;
    event::Connection& c = w.connected(other);
    upstream::keep_idle(u, a, c, 1);
    REQUIRE(c.is_open());

    SUBCASE("the origin closes it") {
        ::close(other);
        w.others.pop_back();
        w.turn();
        CHECK_FALSE(c.is_open());
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
    SUBCASE("the origin sends something") {
        REQUIRE(::send(other, "HTTP/1.1 408", 12, 0) == 12);
        w.turn();
        CHECK_FALSE(c.is_open());
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
    SUBCASE("keepalive_timeout passes") {
        w.clock.advance(29'999);
        w.turn();
        CHECK(c.is_open());
        w.clock.advance(1);
        w.turn();
        CHECK_FALSE(c.is_open());
        CHECK(closed_by_us(other));
        CHECK(upstream::take_idle(u, a) == nullptr);
    }
    SUBCASE("quiet: stays, and its slot is usable again") {
        w.turn();
        w.turn();
        CHECK(upstream::take_idle(u, a) == &c);
        w.table->close(c);
    }
}

TEST_CASE("upstream/pool: a stale readable flag is checked, not trusted") {
    Worker w;
    UpstreamConf& u = w.group(4);
    Peer a = peer("127.0.0.1:8001");
    int other;
    event::Connection& c = w.connected(other);
    // The last response was read exactly, without the short read that
    // clears the flag: it stays set with nothing to read.
    REQUIRE(::send(other, "ok", 2, 0) == 2);
    w.turn();
    REQUIRE(c.io.readable());
    char buf[2];
    REQUIRE(::recv(c.fd(), buf, 2, 0) == 2);
    upstream::keep_idle(u, a, c, 1);
    CHECK(c.is_open());
    CHECK_FALSE(c.io.readable());
    // And data arriving later still closes it: the edge was re-armed.
    REQUIRE(::send(other, "x", 1, 0) == 1);
    w.turn();
    CHECK_FALSE(c.is_open());
}

TEST_CASE("upstream/pool: close_idle closes every pooled connection") {
    Worker w;
    UpstreamConf& u1 = w.group(2);
    UpstreamConf& u2 = w.group(2);
    Peer a = peer("127.0.0.1:8001");
    int o1, o2;
    event::Connection& c1 = w.connected(o1);
    event::Connection& c2 = w.connected(o2);
    upstream::keep_idle(u1, a, c1, 1);
    upstream::keep_idle(u2, a, c2, 1);
    REQUIRE(u1.idle != nullptr);
    upstream::close_idle();
    CHECK_FALSE(c1.is_open());
    CHECK_FALSE(c2.is_open());
    CHECK(u1.idle == nullptr);
    CHECK(u2.idle == nullptr);
    CHECK(upstream::take_idle(u1, a) == nullptr);
    // The pool comes back on demand.
    w.turn();
    int o3;
    event::Connection& c3 = w.connected(o3);
    upstream::keep_idle(u1, a, c3, 1);
    CHECK(upstream::take_idle(u1, a) == &c3);
    w.table->close(c3);
}

TEST_CASE("upstream/pool: a retiring worker keeps nothing") {
    Worker w;
    UpstreamConf& u = w.group(4);
    Peer a = peer("127.0.0.1:8001");
    int o1, o2;
    event::Connection& c1 = w.connected(o1);
    upstream::keep_idle(u, a, c1, 1);
    upstream::retire_idle();
    // What was kept is closed...
    CHECK_FALSE(c1.is_open());
    CHECK(closed_by_us(o1));
    // ...and what the requests still running give back is closed too.
    event::Connection& c2 = w.connected(o2);
    upstream::keep_idle(u, a, c2, 1);
    CHECK_FALSE(c2.is_open());
    CHECK(upstream::take_idle(u, a) == nullptr);
    // close_idle() (the end of a worker) allows keeping again.
    upstream::close_idle();
    int o3;
    event::Connection& c3 = w.connected(o3);
    upstream::keep_idle(u, a, c3, 1);
    CHECK(upstream::take_idle(u, a) == &c3);
    w.table->close(c3);
}

namespace {

// A transport the pool is handed with its connection, recording dispose().
struct FakeTransport final : event::Transport {
    int disposed = 0;
    event::IoResult recv(event::Connection&, std::span<char>) override { return {event::IoResult::Again}; }
    event::IoResult writev(event::Connection&, std::span<const iovec>) override {
        return {event::IoResult::Again};
    }
    void dispose(event::Connection& c) override {
        CHECK(c.transport == nullptr);  // reset before, as the contract says
        ++disposed;
    }
};

}  // namespace

TEST_CASE("upstream/pool: the tag must match, and the transport stays or is disposed of") {
    Worker w;
    UpstreamConf& u = w.group(4);
    Peer a = peer("127.0.0.1:8001");
    int tls_tag = 0;
    FakeTransport t;
    int other;
    event::Connection& c = w.connected(other);
    c.transport = &t;
    upstream::keep_idle(u, a, c, 1, &tls_tag);
    // Plain TCP requests do not get a TLS connection.
    CHECK(upstream::take_idle(u, a) == nullptr);
    REQUIRE(upstream::take_idle(u, a, &tls_tag) == &c);
    CHECK(c.transport == &t);
    CHECK(t.disposed == 0);

    // Closed by the pool (the origin closed it): the transport is disposed of.
    upstream::keep_idle(u, a, c, 1, &tls_tag);
    ::close(other);
    w.others.pop_back();
    w.turn();
    CHECK(t.disposed == 1);
    CHECK_FALSE(c.is_open());
}

TEST_CASE("upstream/pool: connections to an address a slot lost are not kept") {
    Worker w;
    UpstreamConf& u = w.group(4);
    Peer a = peer("127.0.0.1:8001"), b = peer("127.0.0.1:8002");
    int oa, ob, od;
    event::Connection& ca = w.connected(oa);
    event::Connection& cb = w.connected(ob);
    upstream::keep_idle(u, a, ca, 1);
    upstream::keep_idle(u, b, cb, 1);
    // The slot of a went (sync_peers saw it): its idle connection closes,
    // b's stays.
    upstream::close_idle_to(u, a);
    CHECK(closed_by_us(oa));
    CHECK_FALSE(closed_by_us(ob));
    CHECK(upstream::take_idle(u, a) == nullptr);
    CHECK(upstream::take_idle(u, b) == &cb);
    w.table->close(cb);
    // A draining slot's last request ends: its connection is closed, not kept.
    upstream::PeerSlot slot;
    slot.state = static_cast<uint32_t>(upstream::SlotState::Draining);
    Peer d = peer("127.0.0.1:8003");
    d.slot = &slot;
    event::Connection& cd = w.connected(od);
    upstream::keep_idle(u, d, cd, 1);
    CHECK(closed_by_us(od));
    slot.state = static_cast<uint32_t>(upstream::SlotState::Active);
    CHECK(upstream::take_idle(u, d) == nullptr);
    ::close(oa);
    ::close(ob);
    ::close(od);
}
