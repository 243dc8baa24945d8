// A byte pipe with the event layer's I/O contract (IoResult; Again clears
// readiness and the owner is called back when it may have changed): the
// client side of a tunnel after "101 Switching Protocols", as an HTTP
// front-end offers it (http::Stream::open_tunnel), for the upstream client
// to pump bytes to and from an origin connection.
#pragma once

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

protected:
    ~Duplex() = default;
};

}  // namespace gatehouse::event
