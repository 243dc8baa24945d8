// Connections: the worker's fixed table of worker_connections slots, the
// socket I/O that keeps edge-triggered readiness right, and the Listener
// that fills slots from a shared listening socket.
//
// Protocol-agnostic: a Connection is an fd with addresses, readiness,
// timers and one opaque pointer for whatever speaks over it (HTTP/1, TLS,
// an upstream, a health check). Everything here runs on the worker's loop
// thread.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/result.h"
#include "event/fwd.h"
#include "event/loop.h"
#include "event/timer.h"

namespace gatehouse::event {

// A layer between a Connection and its socket, such as TLS: while one is
// set (Connection::transport), recv(), send() and writev() go through it
// and it keeps the readiness flags right itself, with the same contract
// (IoResult, flags cleared only when nothing more can be had until epoll
// says so). Owner: the protocol layer that sets it, which also frees it;
// the table forgets it when the slot is released.
class Transport {
public:
    virtual IoResult recv(Connection& c, std::span<char> buf) = 0;
    virtual IoResult writev(Connection& c, std::span<const iovec> iov) = 0;
    // For a transport whose owner handed it over with the connection (the
    // keepalive pool holds upstream TLS connections): ends the protocol
    // (TLS close_notify) and frees the transport. The holder calls it
    // once, just before closing c, after resetting c.transport. The
    // default frees nothing: a transport never handed over stays with
    // its owner.
    virtual void dispose(Connection& c) { (void)c; }

protected:
    ~Transport() = default;
};

// A slot of the ConnectionTable. Owned by the table; lent to its user
// between ConnectionTable::open() and close(), and still readable (closed,
// fd -1) until the end of the iteration that closed it.
class Connection {
public:
    Connection() = default;
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // fd, readiness and handlers; register it with loop.add(c.io,
    // Interest::ReadWrite). The table closes the fd.
    Watcher io;
    // Timeouts of the two directions, cancelled by close(). Their
    // callbacks, like io's, are set by the protocol layer.
    Timer read_timer;
    Timer write_timer;
    // The protocol layer's state. Owner: that layer, which must free it
    // (with Loop::defer) when it closes the connection; never touched here.
    void* data = nullptr;
    // Null: the socket is read and written directly.
    Transport* transport = nullptr;

    sockaddr_storage peer{};  // from accept4(), or set by the connector
    socklen_t peer_len = 0;
    // The serial number nginx logs as $connection: unique in the worker,
    // across workers too when the table was given a shared counter.
    uint64_t number = 0;
    // Requests served, for keepalive_requests and $connection_requests.
    uint32_t requests = 0;
    // Closes the connection when the table needs its slot back; called
    // only while the protocol layer has it marked reusable
    // (ConnectionTable::set_reusable).
    Callback reclaim;

    int fd() const { return io.fd(); }
    bool is_open() const { return open_; }

    // The local address, asked of the kernel once (getsockname()) and
    // cached: with a wildcard listener only the kernel knows it, and most
    // requests never need it. Null if getsockname() failed (logged).
    const sockaddr* local_address();
    socklen_t local_len() const { return local_len_; }

    // Socket I/O keeping io's readiness right: a short read or write
    // (fewer bytes than asked) or EAGAIN clears the flag, since with edge
    // triggering nothing more is to be had until epoll says so; a short
    // read after EPOLLRDHUP does not, so the EOF is still read. EINTR is
    // retried. Writes use MSG_NOSIGNAL: a closed peer is an Error (EPIPE),
    // not a SIGPIPE. buf must not be empty. With a transport, its own.
    IoResult recv(std::span<char> buf);
    // recv() into several buffers in order (readv()), each non-empty;
    // with a transport, into the first only.
    IoResult readv(std::span<const iovec> iov);
    IoResult send(std::span<const char> buf);
    // `more`: more bytes follow at once (MSG_MORE), so a short piece
    // waits for them rather than leaving in a segment of its own.
    IoResult writev(std::span<const iovec> iov, bool more = false);
    // splice() between the socket and a pipe (event/pipe.h), never
    // through a transport (the caller checks there is none).
    //  - splice_in: at most `n` bytes from the socket into the pipe `wfd`,
    //    which the caller knows to be empty. Only EAGAIN clears the
    //    readable flag: a short splice may mean the pipe's slots ran out,
    //    not that the socket is drained.
    //  - splice_out: at most `n` bytes from the pipe `rfd`, which holds at
    //    least that many, to the socket; `more` as for writev().
    IoResult splice_in(int wfd, size_t n);
    IoResult splice_out(int rfd, size_t n, bool more = false);

private:
    friend class ConnectionTable;

    sockaddr_storage local_{};
    socklen_t local_len_ = 0;  // 0 until local_address() succeeds
    bool open_ = false;
    bool releasing_ = false;   // closed; back on the free list after the iteration
    bool reusable_ = false;    // on the table's reusable list
    Connection* next_free_ = nullptr;
    Connection* reuse_prev_ = nullptr;  // the reusable list, oldest first
    Connection* reuse_next_ = nullptr;
    ConnectionTable* table_ = nullptr;
};

// The fixed table of one worker: all slots are allocated up front, so the
// number of connections (client and upstream together, as nginx counts)
// is bounded by worker_connections and the worker never allocates per
// connection for them. Owned by the worker; outlives its connections and
// is outlived by the Loop.
class ConnectionTable {
public:
    // `counter` numbers connections; the process layer may pass one in
    // shared memory so numbers are unique across workers (nginx's
    // ngx_connection_counter). Null: a counter of this table. It must
    // outlive the table.
    ConnectionTable(Loop& loop, uint32_t size, std::atomic<uint64_t>* counter = nullptr);
    ConnectionTable(const ConnectionTable&) = delete;
    ConnectionTable& operator=(const ConnectionTable&) = delete;
    // Closes what is still open, then runs the loop's deferred callbacks
    // (Loop::run_deferred) so none is left pointing into the slots: destroy
    // it outside the loop's callbacks, at worker exit.
    ~ConnectionTable();

    // A slot for fd, which becomes the table's to close. Null when every
    // slot is taken: logged at alert ("N worker_connections are not
    // enough") and fd is still the caller's, which closes it.
    Connection* open(int fd);
    // Cancels the slot's timers, closes the fd (see Loop::close) and puts
    // the slot back on the free list at the end of the iteration, so that
    // pointers held elsewhere in this iteration see a closed connection,
    // not a new one. Closing a closed connection is a no-op. Deferred
    // callbacks run in order: a protocol layer whose destructor still
    // reads the Connection defers its destruction before calling this.
    void close(Connection& c);

    uint32_t size() const { return size_; }
    // Slots neither open nor waiting for the end of the iteration.
    uint32_t free_count() const { return free_n_; }

    // Idle connections a full table may take back [nginx
    // ngx_reusable_connection]: the protocol layer marks a connection
    // reusable while closing it loses nothing but a client's wait (HTTP/1:
    // keep-alive, a head not complete yet, a lingering close) and unmarks
    // it when work starts. Marking moves it to the end of the list, so the
    // one idle longest goes first. close() unmarks.
    void set_reusable(Connection& c, bool reusable);
    uint32_t reusable_count() const { return reusable_n_; }
    // Closes, through their `reclaim` callbacks, up to `max` reusable
    // connections, oldest first; returns how many. Their slots come free
    // at the end of the iteration, as any closed slot does.
    uint32_t reclaim(uint32_t max);

    // Every slot taken and none reusable: nothing to accept a client
    // into. Listeners watch this and stop polling their socket meanwhile,
    // so that with EPOLLEXCLUSIVE the kernel wakes a worker with room
    // instead, and the client never lands where it cannot be served.
    bool saturated() const { return free_n_ == 0 && reusable_n_ == 0; }
    // `cb` runs whenever saturated() changes. Listeners only; unwatch
    // before the callback's object goes.
    void watch_saturation(Callback cb);
    void unwatch_saturation(Callback cb);
    // Every slot, open or not (see Connection::is_open()): for shutdown,
    // which closes idle connections [nginx ngx_close_idle_connections].
    std::span<Connection> slots() { return {slots_.get(), size_}; }

private:
    static void release(void* c);

    Loop& loop_;
    uint32_t size_;
    uint32_t free_n_;
    std::unique_ptr<Connection[]> slots_;
    Connection* free_ = nullptr;
    Connection* reuse_head_ = nullptr;  // idle longest
    Connection* reuse_tail_ = nullptr;
    uint32_t reusable_n_ = 0;
    bool saturated_ = false;
    std::vector<Callback> watchers_;

    void check_saturation();
    std::atomic<uint64_t> own_counter_{0};
    std::atomic<uint64_t>* counter_;
};

struct ListenerOptions {
    // accept4() calls per wakeup: 1 is nginx's "multi_accept off"; "on"
    // maps to a larger bound (kMultiAccept) rather than "until EAGAIN", so
    // a connection storm cannot starve established connections.
    uint32_t accept_batch = 1;
    // How long to stop accepting after running out of fds (EMFILE,
    // ENFILE), memory (ENOBUFS, ENOMEM) or connection slots with none to
    // reclaim, as nginx's accept_mutex_delay. Other workers take the
    // connections meanwhile; with none, they wait in the backlog.
    std::chrono::milliseconds retry_delay{500};
};
inline constexpr uint32_t kMultiAccept = 64;

// Accepts from one listening socket into a ConnectionTable. The listening
// fd is owned by the process layer (opened by the master, inherited by
// every worker) and never closed here; the Listener is owned by the
// worker, with the table and loop outliving it.
class Listener {
public:
    // Called once per accepted connection with the slot already open (fd,
    // peer, number set; not registered with the loop). The callee
    // registers c.io and sets handlers, or closes it with table.close().
    // data: the callee's (e.g. the listen configuration), not owned.
    using AcceptFn = void (*)(void* data, Connection& c);

    Listener(Loop& loop, ConnectionTable& table, int fd, AcceptFn fn, void* data,
             ListenerOptions opts = {});
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    ~Listener();

    // Registers the socket (Interest::Accept). The error names epoll_ctl().
    Status start();
    // Stops accepting (graceful shutdown): deregisters, cancels the retry.
    void stop();
    // Registered, or paused by a retry that is pending.
    bool started() const { return started_; }
    // Registered now: false while paused after EMFILE and the like, or
    // while the table is saturated.
    bool accepting() const { return io_.registered(); }
    int fd() const { return io_.fd(); }

private:
    void on_readable();
    void on_retry();
    void pause();
    bool make_room();
    void update();  // registered iff started, not backing off, table not saturated
    Status register_now();

    Loop& loop_;
    ConnectionTable& table_;
    AcceptFn fn_;
    void* data_;
    ListenerOptions opts_;
    Watcher io_;
    Timer retry_;
    bool started_ = false;
    bool backing_off_ = false;  // after EMFILE and the like, until retry_
};

}  // namespace gatehouse::event
