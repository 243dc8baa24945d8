#include "event/connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
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

namespace {

// The loop of recv(), readv() and splice_in(): `call` reads at most
// `want` bytes; `short_drains`: a short read means the socket is empty.
template <typename Call>
IoResult received(Watcher& io, size_t want, Call call, bool short_drains = true) {
    for (;;) {
        ssize_t n = call();
        if (n > 0) {
            // A short read drained the socket: new data brings a new edge.
            // After EPOLLRDHUP no edge will come, so keep reading to EOF.
            if (short_drains && static_cast<size_t>(n) < want && !io.peer_closed()) io.clear_readable();
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

}  // namespace

IoResult Connection::recv(std::span<char> buf) {
    GH_ASSERT(!buf.empty());
    if (transport) return transport->recv(*this, buf);
    return received(io, buf.size(), [&] { return ::recv(fd(), buf.data(), buf.size(), 0); });
}

IoResult Connection::readv(std::span<const iovec> iov) {
    GH_ASSERT(!iov.empty());
    if (transport || iov.size() == 1) return recv({static_cast<char*>(iov[0].iov_base), iov[0].iov_len});
    iov = iov.first(std::min<size_t>(iov.size(), IOV_MAX));
    size_t want = 0;
    for (const iovec& v : iov) want += v.iov_len;
    return received(io, want, [&] { return ::readv(fd(), iov.data(), static_cast<int>(iov.size())); });
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

IoResult Connection::writev(std::span<const iovec> iov, bool more) {
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
        n = ::sendmsg(fd(), &msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    } while (n < 0 && errno == EINTR);
    return sent(io, n, want, n < 0 ? errno : 0);
}

IoResult Connection::splice_in(int wfd, size_t n) {
    GH_ASSERT(n > 0 && !transport);
    return received(
        io, n, [&] { return ::splice(fd(), nullptr, wfd, nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK); }, false);
}

IoResult Connection::splice_out(int rfd, size_t n, bool more) {
    GH_ASSERT(n > 0 && !transport);
    ssize_t k;
    do {
        k = ::splice(rfd, nullptr, fd(), nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (more ? SPLICE_F_MORE : 0));
    } while (k < 0 && errno == EINTR);
    return sent(io, k, n, k < 0 ? errno : 0);
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
    check_saturation();
    return c;
}

void ConnectionTable::watch_saturation(Callback cb) { watchers_.push_back(cb); }

void ConnectionTable::unwatch_saturation(Callback cb) {
    std::erase_if(watchers_, [&](const Callback& w) { return w.fn == cb.fn && w.data == cb.data; });
}

void ConnectionTable::check_saturation() {
    if (saturated() == saturated_) return;
    saturated_ = saturated();
    if (saturated_)
        GH_LOG(Alert, "%u worker_connections are not enough, not accepting until one is free", size_);
    // A copy: a watcher may unwatch.
    for (Callback w : std::vector<Callback>(watchers_)) w();
}

void ConnectionTable::set_reusable(Connection& c, bool reusable) {
    GH_ASSERT(c.table_ == this);
    if (c.reusable_) {
        (c.reuse_prev_ ? c.reuse_prev_->reuse_next_ : reuse_head_) = c.reuse_next_;
        (c.reuse_next_ ? c.reuse_next_->reuse_prev_ : reuse_tail_) = c.reuse_prev_;
        c.reuse_prev_ = c.reuse_next_ = nullptr;
        c.reusable_ = false;
        --reusable_n_;
    }
    if (reusable && c.open_) {
        GH_ASSERT(c.reclaim);
        c.reuse_prev_ = reuse_tail_;
        (reuse_tail_ ? reuse_tail_->reuse_next_ : reuse_head_) = &c;
        reuse_tail_ = &c;
        c.reusable_ = true;
        ++reusable_n_;
    }
    check_saturation();
}

uint32_t ConnectionTable::reclaim(uint32_t max) {
    uint32_t n = 0;
    while (n < max && reuse_head_) {
        Connection* c = reuse_head_;
        Callback cb = c->reclaim;
        cb();
        // The callback must have closed it; if not, unmark it so that
        // this loop ends.
        if (c->reusable_) {
            GH_ASSERT(!"a reclaim callback left its connection open");
            set_reusable(*c, false);
        }
        ++n;
    }
    return n;
}

void ConnectionTable::close(Connection& c) {
    if (!c.open_) return;
    GH_CHECK(c.table_ == this);
    set_reusable(c, false);
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
    c->reclaim = {};
    c->releasing_ = false;
    c->next_free_ = t->free_;
    t->free_ = c;
    ++t->free_n_;
    t->check_saturation();
}

// --- Listener ---------------------------------------------------------------

Listener::Listener(Loop& loop, ConnectionTable& table, int fd, AcceptFn fn, void* data,
                   ListenerOptions opts)
    : loop_(loop), table_(table), fn_(fn), data_(data), opts_(opts) {
    if (opts_.accept_batch == 0) opts_.accept_batch = 1;
    io_.set_fd(fd);
    io_.on_read = Callback::to<&Listener::on_readable>(this);
    retry_.cb = Callback::to<&Listener::on_retry>(this);
    table_.watch_saturation(Callback::to<&Listener::update>(this));
}

Listener::~Listener() {
    stop();
    table_.unwatch_saturation(Callback::to<&Listener::update>(this));
}

Status Listener::start() {
    if (started_) return {};
    started_ = true;
    Status st = register_now();
    if (!st) started_ = false;
    return st;
}

void Listener::stop() {
    started_ = false;
    backing_off_ = false;
    loop_.cancel(retry_);
    update();
}

Status Listener::register_now() {
    const bool want = started_ && !backing_off_ && !table_.saturated();
    if (want == io_.registered()) return {};
    if (!want) {
        loop_.remove(io_);
        return {};
    }
    return loop_.add(io_, Interest::Accept);
}

void Listener::update() {
    if (Status st = register_now(); !st) {
        GH_LOG(Alert, "%s", st.message().c_str());
        pause();
    }
}

void Listener::pause() {
    // Level-triggered: staying registered would wake us for the same
    // backlog at once, and EPOLLEXCLUSIVE would keep sending this worker
    // connections others could take.
    backing_off_ = true;
    loop_.remove(io_);
    loop_.arm(retry_, opts_.retry_delay);
}

void Listener::on_retry() {
    backing_off_ = false;
    update();
}

bool Listener::make_room() {
    if (table_.free_count() > 0) return true;
    // Full, with idle connections (a full table with none is saturated,
    // and unregistered). Only for a client that is there: the batch may
    // have emptied the backlog, or another worker taken it (rare, and one
    // poll()).
    pollfd p{io_.fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) return false;
    // Idle connections give their slots back [nginx
    // ngx_drain_connections: an eighth of them, 1 to 32 at a time]; the
    // slots come free at the end of this iteration, and the backlog,
    // level-triggered, wakes us again then.
    const uint32_t idle = table_.reusable_count();
    if (idle > 0) {
        GH_LOG(Warn, "%u worker_connections are not enough, reusing connections", table_.size());
        table_.reclaim(std::clamp<uint32_t>(idle / 8, 1, 32));
    }
    return false;
}

void Listener::on_readable() {
    for (uint32_t i = 0; i < opts_.accept_batch; ++i) {
        if (!make_room()) return;
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
        GH_CHECK(c != nullptr);  // make_room() saw a free slot
        std::memcpy(&c->peer, &ss, len);
        c->peer_len = len;
        // Lines about the new connection carry its number ("*N") until the
        // protocol layer puts its own context in scope.
        log::Context cx{c->number};
        log::Scope scope(&cx);
        fn_(data_, *c);
        // The callback may have stopped us (shutdown, or its own error).
        if (!io_.registered()) return;
    }
}

}  // namespace gatehouse::event
