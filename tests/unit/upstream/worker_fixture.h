// A worker's loop (on a fake clock) and connection table, installed as
// event::worker_loop() / event::worker_connections() for the test's lifetime, as
// the worker process does before it serves.
#pragma once

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <memory>
#include <vector>

#include "event/clock.h"
#include "event/connection.h"
#include "event/loop.h"
#include "event/worker.h"
#include "upstream/upstream.h"

namespace gatehouse::test {

class Worker {
public:
    explicit Worker(uint32_t connections = 16) {
        auto l = event::Loop::create(clock);
        REQUIRE(l.ok());
        loop = std::move(l).value();
        table = std::make_unique<event::ConnectionTable>(*loop, connections);
        event::set_worker(loop.get(), table.get());
    }
    ~Worker() {
        upstream::close_idle();
        table.reset();  // runs the loop's deferred releases
        event::set_worker(nullptr, nullptr);
        for (int f : others) ::close(f);
    }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // A group with "keepalive n" that outlives the pool, as the
    // generation's groups outlive a worker's pools.
    upstream::UpstreamConf& group(uint32_t keepalive) {
        groups.emplace_back();
        groups.back().keepalive = keepalive;
        return groups.back();
    }

    // One iteration without waiting.
    void turn() { loop->run_once(0); }

    // A connection in the table, registered with the loop, whose other
    // end (returned in `other`) the test plays the origin with.
    event::Connection& connected(int& other) {
        int sv[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        others.push_back(sv[1]);
        other = sv[1];
        event::Connection* c = table->open(sv[0]);
        REQUIRE(c != nullptr);
        REQUIRE(loop->add(c->io, event::Interest::ReadWrite).ok());
        turn();  // epoll reports the initial state: writable
        return *c;
    }

    event::FakeClock clock;
    std::unique_ptr<event::Loop> loop;
    std::unique_ptr<event::ConnectionTable> table;
    std::vector<int> others;  // fds the test holds
    std::deque<upstream::UpstreamConf> groups;  // dies after close_idle()
};

}  // namespace gatehouse::test
