// The event tests' fixtures: a loop, fds a table may own, and one
// connection registered with its peer end kept by the test.
#pragma once

#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "event/connection.h"

namespace gatehouse::test {

using namespace gatehouse::event;

inline std::unique_ptr<Loop> make_loop(const Clock& c) {
    auto l = Loop::create(c);
    REQUIRE(l.ok());
    return std::move(l).value();
}

// A fresh fd the table may own and close (one end of a socketpair); the
// other end is kept in `peers` for the test.
struct Fds {
    ~Fds() {
        for (int f : peers) ::close(f);
    }
    int take() {
        int sv[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        peers.push_back(sv[1]);
        return sv[0];
    }
    std::vector<int> peers;
};

// One connection of a one-slot table, registered for both directions
// and past its first wait; `peer` is the other end.
struct OneConnection {
    OneConnection() : loop(make_loop(clock)), t(*loop, 1) {
        c = t.open(fds.take());
        peer = fds.peers.back();
        REQUIRE(loop->add(c->io, Interest::ReadWrite).ok());
        loop->run_once(1000);
    }
    FakeClock clock;
    std::unique_ptr<Loop> loop;
    Fds fds;
    ConnectionTable t;
    Connection* c = nullptr;
    int peer = -1;
};

}  // namespace gatehouse::test
