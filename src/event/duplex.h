// A byte pipe with the event layer's I/O contract (IoResult; Again clears
// readiness and the owner is called back when it may have changed): the
// client side of a tunnel after "101 Switching Protocols", as an HTTP
// front-end offers it (http::Stream::open_tunnel), for the upstream client
// to pump bytes to and from an origin connection.
#pragma once

#include <cerrno>
#include <span>

#include "event/fwd.h"

namespace gatehouse::event {

class Duplex {
public:
    virtual IoResult recv(std::span<char> buf) = 0;
    virtual IoResult send(std::span<const char> buf) = 0;
    // No more bytes this way (passes on the other side's EOF).
    virtual void shutdown_send() = 0;
    // Ends the tunnel, and whatever the owner ends with it (a request).
    virtual void close() = 0;
    // splice() (event/pipe.h) to and from this side, when it is a plain
    // socket: can_splice() says whether it is; splice_in() and
    // splice_out() then behave as event::Connection's, and are called only
    // then.
    virtual bool can_splice() const { return false; }
    virtual IoResult splice_in(int wfd, size_t n) {
        (void)wfd;
        (void)n;
        return {IoResult::Error, 0, EOPNOTSUPP};
    }
    virtual IoResult splice_out(int rfd, size_t n) {
        (void)rfd;
        (void)n;
        return {IoResult::Error, 0, EOPNOTSUPP};
    }

protected:
    ~Duplex() = default;
};

}  // namespace gatehouse::event
