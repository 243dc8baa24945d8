#include "event/connection.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "core/log.h"

namespace gatehouse::event {

// --- Connection -------------------------------------------------------------

const sockaddr* Connection::local_address() {
    if (local_len_ == 0) {
        socklen_t len = sizeof local_;
        if (getsockname(fd(), reinterpret_cast<sockaddr*>(&local_), &len) < 0) {
            GH_LOG_ERRNO(Alert, errno, "getsockname() failed");
            return nullptr;
        }
        local_len_ = len;
    }
    return reinterpret_cast<const sockaddr*>(&local_);
}

IoResult Connection::recv(std::span<char> buf) {
    GH_ASSERT(!buf.empty());
    if (transport) return transport->recv(*this, buf);
    for (;;) {
        ssize_t n = ::recv(fd(), buf.data(), buf.size(), 0);
        if (n > 0) {
            // A short read drained the socket: new data brings a new edge.
            // After EPOLLRDHUP no edge will come, so keep reading to EOF.
            if (static_cast<size_t>(n) < buf.size() && !io.peer_closed()) io.clear_readable();
            return {IoResult::Ok, static_cast<size_t>(n), 0};
        }
        if (n == 0) {
            io.clear_readable();
            return {IoResult::Eof, 0, 0};
        }
        int err = errno;
        if (err == EINTR) continue;
        io.clear_readable();
        if (err == EAGAIN) return {IoResult::Again, 0, 0};
        return {IoResult::Error, 0, err};
    }
}

namespace {

// The common tail of send() and writev(): `want` is what was offered.
IoResult sent(Watcher& io, ssize_t n, size_t want, int err) {
    if (n >= 0) {
        // Short: the socket buffer is full; EPOLLOUT comes when it drains.
        if (static_cast<size_t>(n) < want) io.clear_writable();
        if (n == 0) return {IoResult::Again, 0, 0};
        return {IoResult::Ok, static_cast<size_t>(n), 0};
    }
    io.clear_writable();
    if (err == EAGAIN) return {IoResult::Again, 0, 0};
    return {IoResult::Error, 0, err};
}

}  // namespace

IoResult Connection::send(std::span<const char> buf) {
    GH_ASSERT(!buf.empty());
    if (transport) {
        iovec one{const_cast<char*>(buf.data()), buf.size()};
        return transport->writev(*this, {&one, 1});
    }
    ssize_t n;
    do {
        n = ::send(fd(), buf.data(), buf.size(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return sent(io, n, buf.size(), n < 0 ? errno : 0);
}

IoResult Connection::writev(std::span<const iovec> iov) {
    GH_ASSERT(!iov.empty());
    if (transport) return transport->writev(*this, iov);
    // The kernel takes at most IOV_MAX; the rest is the caller's next call,
    // and "short" is judged against what was offered.
    size_t count = iov.size() < IOV_MAX ? iov.size() : IOV_MAX;
    size_t want = 0;
    for (size_t i = 0; i < count; ++i) want += iov[i].iov_len;
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov.data());
    msg.msg_iovlen = count;
    ssize_t n;
    do {
        n = ::sendmsg(fd(), &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return sent(io, n, want, n < 0 ? errno : 0);
}

// --- ConnectionTable --------------------------------------------------------

ConnectionTable::ConnectionTable(Loop& loop, uint32_t size, std::atomic<uint64_t>* counter)
    : loop_(loop),
      size_(size),
      free_n_(size),
      slots_(std::make_unique<Connection[]>(size)),
      counter_(counter ? counter : &own_counter_) {
    GH_CHECK(size > 0);
    // nginx numbers connections from 1.
    own_counter_.store(1, std::memory_order_relaxed);
    // Slot 0 first; freed slots are reused last-in first-out, while their
    // memory is still in cache.
    for (uint32_t i = size; i-- > 0;) {
        slots_[i].table_ = this;
        slots_[i].next_free_ = free_;
        free_ = &slots_[i];
    }
}

ConnectionTable::~ConnectionTable() {
    for (Connection& c : slots()) close(c);
    // The releases (and whatever else still points into the slots) run
    // before the slots are freed.
    loop_.run_deferred();
}

Connection* ConnectionTable::open(int fd) {
    if (!free_) {
        GH_LOG(Alert, "%u worker_connections are not enough", size_);
        return nullptr;
    }
    Connection* c = free_;
    free_ = c->next_free_;
    --free_n_;
    c->next_free_ = nullptr;
    c->open_ = true;
    c->io.set_fd(fd);
    c->number = counter_->fetch_add(1, std::memory_order_relaxed);
    return c;
}

void ConnectionTable::close(Connection& c) {
    if (!c.open_) return;
    GH_CHECK(c.table_ == this);
    loop_.cancel(c.read_timer);
    loop_.cancel(c.write_timer);
    loop_.close(c.io);
    c.open_ = false;
    c.releasing_ = true;
    loop_.defer({&ConnectionTable::release, &c});
}

void ConnectionTable::release(void* p) {
    auto* c = static_cast<Connection*>(p);
    ConnectionTable* t = c->table_;
    GH_ASSERT(c->releasing_ && !c->open_);
    c->io.on_read = {};
    c->io.on_write = {};
    c->read_timer.cb = {};
    c->write_timer.cb = {};
    c->data = nullptr;
    c->transport = nullptr;
    c->peer_len = 0;
    c->local_len_ = 0;
    c->number = 0;
    c->requests = 0;
    c->releasing_ = false;
    c->next_free_ = t->free_;
    t->free_ = c;
    ++t->free_n_;
}

// --- Listener ---------------------------------------------------------------

Listener::Listener(Loop& loop, ConnectionTable& table, int fd, AcceptFn fn, void* data,
                   ListenerOptions opts)
    : loop_(loop), table_(table), fn_(fn), data_(data), opts_(opts) {
    if (opts_.accept_batch == 0) opts_.accept_batch = 1;
    io_.set_fd(fd);
    io_.on_read = Callback::to<&Listener::on_readable>(this);
    retry_.cb = Callback::to<&Listener::on_retry>(this);
}

Status Listener::start() {
    if (started_) return {};
    Status st = loop_.add(io_, Interest::Accept);
    if (st) started_ = true;
    return st;
}

void Listener::stop() {
    started_ = false;
    loop_.remove(io_);
    loop_.cancel(retry_);
}

void Listener::pause() {
    // Level-triggered: staying registered would wake us for the same
    // backlog at once, and EPOLLEXCLUSIVE would keep sending this worker
    // connections others could take.
    loop_.remove(io_);
    loop_.arm(retry_, opts_.retry_delay);
}

void Listener::on_retry() {
    if (!started_) return;
    if (table_.free_count() == 0) {
        // Still full: refuse what waits in the backlog rather than let
        // those clients hang until a slot frees. Bounded, so a storm costs
        // a few accept/close pairs per retry_delay.
        int refused = 0;
        for (int i = 0; i < 64; ++i) {
            int fd = ::accept4(io_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) break;
            ::close(fd);
            ++refused;
        }
        if (refused)
            GH_LOG(Alert, "%u worker_connections are not enough, %d connections refused", table_.size(), refused);
        loop_.arm(retry_, opts_.retry_delay);
        return;
    }
    Status st = loop_.add(io_, Interest::Accept);
    if (!st) {
        GH_LOG(Alert, "%s", st.message().c_str());
        loop_.arm(retry_, opts_.retry_delay);
    }
}

void Listener::on_readable() {
    for (uint32_t i = 0; i < opts_.accept_batch; ++i) {
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = ::accept4(io_.fd(), reinterpret_cast<sockaddr*>(&ss), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            switch (err) {
                case EAGAIN:
                    io_.clear_readable();
                    return;
                case EINTR:
                    continue;
                // The client gave up before we accepted it, or (accept(2),
                // "Error handling") a network error already pending on the
                // new connection: that one is lost, the next may be fine.
                case ECONNABORTED:
                case EPROTO:
                case ENETDOWN:
                case ENOPROTOOPT:
                case EHOSTDOWN:
                case ENONET:
                case EHOSTUNREACH:
                case EOPNOTSUPP:
                case ENETUNREACH:
                    GH_LOG_ERRNO(Error, err, "accept4() failed");
                    continue;
                case EMFILE:
                case ENFILE:
                    GH_LOG_ERRNO(Crit, err, "accept4() failed");
                    pause();
                    return;
                default:
                    // ENOBUFS, ENOMEM, EPERM (a firewall): retrying at once
                    // would fail the same way, on every iteration.
                    GH_LOG_ERRNO(Alert, err, "accept4() failed");
                    pause();
                    return;
            }
        }
        Connection* c = table_.open(fd);
        if (!c) {
            ::close(fd);
            pause();
            return;
        }
        std::memcpy(&c->peer, &ss, len);
        c->peer_len = len;
        fn_(data_, *c);
        // The callback may have stopped us (shutdown, or its own error).
        if (!io_.registered()) return;
    }
}

}  // namespace gatehouse::event
