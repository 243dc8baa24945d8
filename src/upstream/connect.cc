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

// Binds fd to `local`. Without a port, the kernel picks one at connect()
// (IP_BIND_ADDRESS_NO_PORT), so that many connections from one address
// to different origins do not each hold a port of their own from bind()
// on [nginx does the same].
Status bind_local(int fd, const LocalAddr& local) {
    const bool v6 = local.sa.ss_family == AF_INET6;
    int on = 1;
    if (local.transparent &&
        setsockopt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, &on, sizeof on) < 0) {
        int err = errno;
        return make_error(std::string(v6 ? "setsockopt(IPV6_TRANSPARENT)" : "setsockopt(IP_TRANSPARENT)") +
                          " failed (" + std::to_string(err) + ": " + std::strerror(err) + ")");
    }
    const uint16_t port = v6 ? reinterpret_cast<const sockaddr_in6&>(local.sa).sin6_port
                             : reinterpret_cast<const sockaddr_in&>(local.sa).sin_port;
    if (port == 0) (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&local.sa), local.sa_len) < 0) {
        int err = errno;
        return make_error("bind(" + std::string(local.text) + ") failed (" + std::to_string(err) + ": " +
                          std::strerror(err) + ")");
    }
    return {};
}

}  // namespace

Result<event::Connection*> open_connection(const Peer& p, const LocalAddr* local, bool* local_failed) {
    const int family = p.sa.ss_family;
    int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return failed("socket()", "for", p, errno);
    if (family == AF_INET || family == AF_INET6) {
        // Requests and small bodies go out at once rather than wait for an
        // ACK (Nagle); nginx does the same for upstream connections.
        int on = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0)
            GH_LOG_ERRNO(Alert, errno, "setsockopt(TCP_NODELAY) for %s failed", p.text.c_str());
        if (local) {
            if (auto s = bind_local(fd, *local); !s) {
                ::close(fd);
                if (local_failed) *local_failed = true;
                return s.error();
            }
        }
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
