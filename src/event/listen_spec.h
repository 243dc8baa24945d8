// A listening socket a module asks for (conf::Module::listens): the
// address with nginx's "listen" options, and what takes each accepted
// connection. The master binds it (src/process/listening.cc) before it
// forks the workers; each worker accepts on it with an event::Listener.
#pragma once

#include <optional>

#include "conf/values.h"
#include "event/connection.h"

namespace gatehouse::event {

struct ListenSpec {
    conf::Address addr;
    int backlog = 511;  // nginx's default on Linux
    bool reuseport = false;
    bool deferred = false;  // TCP_DEFER_ACCEPT
    std::optional<bool> ipv6only;
    std::optional<bool> so_keepalive;
    // SO_RCVBUF / SO_SNDBUF, set on the listening socket (accepted
    // sockets inherit them), again on a reload that keeps the socket.
    std::optional<int> rcvbuf, sndbuf;
    // Called in the worker for each accepted connection (see Listener);
    // data is the module's (owner: the generation, which outlives the
    // worker's listeners).
    Listener::AcceptFn accept = nullptr;
    void* data = nullptr;
};

}  // namespace gatehouse::event
