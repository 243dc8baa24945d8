// Outgoing connections: a non-blocking connect() in a slot of the worker's
// ConnectionTable, registered with the worker's loop [nginx
// ngx_event_connect_peer].
#include "upstream/upstream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "event/connection.h"
#include "event/loop.h"
#include "event/worker.h"

namespace gatehouse::upstream {

namespace {

Error failed(const char* call, const char* prep, const Peer& p, int err) {
    return make_error(std::string(call) + " " + prep + " " + p.text + " failed (" +
                      std::to_string(err) + ": " + std::strerror(err) + ")");
}

}  // namespace

Result<event::Connection*> open_connection(const Peer& p) {
    const int family = p.sa.ss_family;
    int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return failed("socket()", "for", p, errno);
    if (family == AF_INET || family == AF_INET6) {
        // Requests and small bodies go out at once rather than wait for an
        // ACK (Nagle); nginx does the same for upstream connections.
        int on = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0)
            GH_LOG_ERRNO(Alert, errno, "setsockopt(TCP_NODELAY) for %s failed", p.text.c_str());
    }
    event::ConnectionTable& table = event::worker_connections();
    event::Connection* c = table.open(fd);
    if (!c) {
        // The table logged "N worker_connections are not enough"; the fd
        // is still ours.
        ::close(fd);
        return make_error("worker_connections are not enough");
    }
    std::memcpy(&c->peer, &p.sa, p.sa_len);
    c->peer_len = p.sa_len;
    c->data = nullptr;
    c->requests = 0;

    // EINTR, like EINPROGRESS, leaves the connect going on in the
    // background: writability tells when it is done.
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&p.sa), p.sa_len);
    if (rc < 0 && errno != EINPROGRESS && errno != EINTR) {
        // EAGAIN here is a Unix socket whose backlog is full: an error for
        // this try, as nginx counts it.
        int err = errno;
        table.close(*c);
        return failed("connect()", "to", p, err);
    }
    if (auto s = event::worker_loop().add(c->io, event::Interest::ReadWrite); !s) {
        table.close(*c);
        return s.error();
    }
    return c;
}

int connect_result(event::Connection& c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c.fd(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
}

}  // namespace gatehouse::upstream
