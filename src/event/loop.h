// The per-worker event loop: epoll, timers, posted events, deferred
// destruction.
//
// Each worker process runs exactly one Loop, on one thread, and never
// blocks anywhere but in epoll_wait(). Everything in this header is called
// from that thread only, except Loop::stop(), which is also safe in a
// signal handler. One iteration (run_once) is:
//
//   1. epoll_wait(), for at most the time to the nearest timer (no wait at
//      all when events are posted or destruction is deferred);
//   2. update the cached clock (now() is constant for the rest of it);
//   3. I/O: each ready Watcher gets its readiness flag set and its
//      on_read / on_write called, then the events those handlers posted
//      run before the next Watcher's turn;
//   4. expired timers, in deadline order;
//   5. posted events, in posting order, then the events posted to run
//      after the batch (post_after_batch), then what those posted;
//   6. deferred callbacks (destruction of what 3-5 closed).
//
// Lifetimes: the Loop owns nothing it is handed. A Watcher, Timer or Event
// is embedded in its owner (a Connection, a request, a Listener) and must
// not move while registered; the Loop must outlive all of them. An object
// closed by a callback must stay valid until the end of the iteration, and
// is freed by a deferred callback (defer()) [Envoy deferred delete]: a
// handler further down the same epoll batch, a timer or a posted event may
// still hold a pointer to it and must find it closed, not freed.
#pragma once

#include <signal.h>
#include <sys/epoll.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/result.h"
#include "event/clock.h"
#include "event/fwd.h"
#include "event/timer.h"

namespace gatehouse::event {

namespace detail {
struct Link {
    Link* prev = nullptr;
    Link* next = nullptr;
};
}  // namespace detail

// A deferred call, embedded in its owner: post() queues it to run once
// the handler that posts it has returned, to resume work without
// recursion (a request finishing a subrequest, data left in a TLS
// buffer). post_after_batch() queues it behind the whole batch of ready
// Watchers instead: for a writer that gathers what many handlers produce
// into one write, or a long job letting the other connections run
// between its chunks.
class Event : private detail::Link {
public:
    Event() = default;
    explicit Event(Callback cb) : cb(cb) {}
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    // A posted Event is unposted when destroyed.
    ~Event() { unlink(); }

    Callback cb;
    bool posted() const { return next != nullptr; }

private:
    friend class Loop;
    void unlink() {
        if (!next) return;
        prev->next = next;
        next->prev = prev;
        prev = next = nullptr;
    }
};

// How a Watcher is registered with epoll.
enum class Interest : uint8_t {
    // Edge-triggered read and write, registered once for the life of the
    // fd and never modified [nginx epoll]: the usual choice for
    // connections, client and upstream alike.
    ReadWrite,
    Read,   // edge-triggered read only (e.g. a pipe or eventfd)
    Write,  // edge-triggered write only
    // Level-triggered read with EPOLLEXCLUSIVE, for a listening socket
    // shared by every worker: the kernel wakes one waiting worker per
    // connection instead of all of them. Level-triggered because accepting
    // is bounded per wakeup: what is left in the backlog wakes us again.
    // Cannot be modified (an EPOLLEXCLUSIVE limit): remove() and add().
    Accept,
};

// An fd registered with the loop and the handlers its readiness calls.
// Embedded in its owner (Connection, Listener); not copyable or movable
// while registered, as epoll holds its address.
//
// Edge-triggered readiness: the loop sets readable/writable when epoll
// reports it and never clears them; the owner clears one when read/write
// returned EAGAIN (Connection::recv/send do it). While a flag is set, no
// new notification will come: the owner must read or write until EAGAIN,
// or re-post itself, or the data waits forever.
//
// EPOLLERR and EPOLLHUP set both flags and call both handlers, EPOLLRDHUP
// sets readable: the handler's next read or write (or SO_ERROR, for a
// connect() in progress) returns the actual error or EOF. The peer_closed()
// and error() hints only let a handler skip work.
class Watcher {
public:
    Watcher() = default;
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;
    // Removes itself from the loop if still registered; never closes fd.
    ~Watcher();

    // Called from the loop when epoll reports readiness. Either may be
    // empty: the flag is still set, for the owner to find later. data is
    // the owner (a protocol object), which must outlive the registration.
    Callback on_read;
    Callback on_write;

    int fd() const { return fd_; }
    // The fd to register. Only while not registered; not owned until
    // Loop::close() is used on this Watcher.
    void set_fd(int fd);
    bool registered() const { return loop_ != nullptr; }

    bool readable() const { return readable_; }
    bool writable() const { return writable_; }
    void clear_readable() { readable_ = false; }
    void clear_writable() { writable_ = false; }
    // The peer shut down its sending side (EPOLLRDHUP/EPOLLHUP): reading
    // drains what is buffered, then returns EOF.
    bool peer_closed() const { return peer_closed_; }
    // EPOLLERR was reported: the socket has a pending error.
    bool error() const { return error_; }

private:
    friend class Loop;
    void reset_flags() { readable_ = writable_ = peer_closed_ = error_ = false; }

    Loop* loop_ = nullptr;  // non-null exactly while registered
    int fd_ = -1;
    // Bumped on every remove/close, so that events still queued in the
    // current epoll batch for the old registration are dropped.
    uint32_t gen_ = 0;
    uint32_t events_ = 0;   // the epoll mask registered
    bool readable_ = false;
    bool writable_ = false;
    bool peer_closed_ = false;
    bool error_ = false;
};

struct LoopOptions {
    // epoll_wait() batch size; more ready fds wait for the next iteration.
    uint32_t max_events = 512;
};

// What ended epoll_wait(). The iteration ran fully (timers, posted events,
// deferred) either way.
enum class Wake : uint8_t {
    Events,  // readiness, a timer or posted work, or the wait timed out
    Signal,  // a signal handler ran (EINTR): the worker checks its flags
};

class Loop {
    struct Private {
        explicit Private() = default;
    };

public:
    // Waits without limit when nothing else bounds the wait.
    static constexpr Msec kForever = UINT64_MAX;

    // The error names epoll_create1() and errno. `clock` must outlive the
    // Loop.
    static Result<std::unique_ptr<Loop>> create(const Clock& clock, LoopOptions opts = {});
    Loop(Private, const Clock& clock, int epfd, LoopOptions opts);
    Loop(const Loop&) = delete;
    Loop& operator=(const Loop&) = delete;
    // Runs what is still deferred, disarms timers, drops posted events and
    // closes the epoll fd. Every Watcher must be removed by then.
    ~Loop();

    // The cached clock of the current iteration (see clock.h).
    Msec now() const { return time_.now(); }
    WallTime wall() const { return time_.wall(); }
    const CachedTime& time() const { return time_; }
    // Re-reads the clock; for code that waited on something outside the
    // loop (startup) and must not arm timers from a stale now().
    void update_time() { time_.update(); }

    // --- I/O -------------------------------------------------------------
    // Registers w (its fd set, not registered). Readiness flags start
    // cleared: epoll reports the current state on the next wait. The error
    // names epoll_ctl() and errno (ENOMEM, ENOSPC: max_user_watches).
    Status add(Watcher& w, Interest interest);
    // Changes the interest of a registered non-Accept Watcher.
    Status modify(Watcher& w, Interest interest);
    // EPOLL_CTL_DEL; the fd stays open and owned by the caller. No-op when
    // w is not registered. Required for an fd another process also holds
    // (a listening socket): closing ours would not end the registration.
    void remove(Watcher& w);
    // Closes w's fd and forgets the registration without EPOLL_CTL_DEL,
    // which closing does for free [nginx NGX_CLOSE_EVENT]. Only for an fd
    // this process alone holds: accepted and connected sockets, which are
    // CLOEXEC and outlive no fork. Readiness flags are cleared; fd() == -1.
    void close(Watcher& w);

    // --- timers ----------------------------------------------------------
    // Arms t to fire `delay` after now(); re-arming moves it. Negative
    // delays count as zero.
    void arm(Timer& t, std::chrono::milliseconds delay);
    void arm_at(Timer& t, Msec deadline) { timers_.arm_at(t, deadline); }
    void cancel(Timer& t) { timers_.cancel(t); }

    // --- posted events ---------------------------------------------------
    // Queues e to run as soon as the current handler returns: after the
    // I/O handlers of the Watcher being dispatched (step 3), else in step 5
    // of this iteration (or the next one, when called outside run_once).
    // An event posted by a posted event runs in the next round, up to 4
    // rounds deep; deeper, at the next chance. Posting a posted event does
    // nothing: it runs once, in its first place.
    //
    // Why not at the end of the batch: a request answered from an I/O
    // handler finishes from a posted event, and finishing frees its memory
    // and the connection's read buffer. Run after each Watcher, the next
    // request reuses that memory while it is still in the CPU's cache;
    // held until the end of a batch of hundreds of ready connections, every
    // request of the batch is alive at once, and the allocator hands the
    // pages back to the kernel and faults them in again batch after batch
    // (local return at 512 connections: 0.7 page faults and 5-7 us of CPU
    // per request more).
    void post(Event& e);
    // Queues e to run in step 5, behind the events posted then: for a
    // writer that gathers what the handlers of a whole batch produced into
    // one write (an HTTP/2 connection's frames, a pipeline of Redis
    // commands), and for a long job that lets the other connections run
    // between its chunks. Re-posted from step 5, it runs in the next
    // round, up to 4 rounds deep, as post() does. Posting an event that is
    // posted either way does nothing.
    void post_after_batch(Event& e);
    // No-op when e is not posted.
    void unpost(Event& e) { e.unlink(); }
    bool has_posted() const { return posted_.next != &posted_; }
    bool has_batched() const { return batched_.next != &batched_; }

    // --- deferred destruction --------------------------------------------
    // Calls cb in step 6, in the order deferred; what a deferred callback
    // defers runs in the same step. cb.data must stay valid until then.
    void defer(Callback cb) { deferred_.push_back(cb); }
    // Runs step 6 now: for an owner torn down outside an iteration (the
    // worker exiting) that must see its deferred callbacks done before it
    // frees their memory. Not from a deferred callback.
    void run_deferred();

    // --- idle work -------------------------------------------------------
    // `cb` runs when the loop has waited `delay` with nothing to do (no
    // readiness, no timer, no posted work) after some activity since it
    // last ran: the worker gives its freed memory back after a burst
    // (core/heap.h). Under steady load it never runs, and it never runs
    // twice without activity in between, so an idle worker does not wake
    // for it. An empty cb turns it off.
    void set_idle(Callback cb, std::chrono::milliseconds delay) {
        idle_cb_ = cb;
        idle_delay_ = static_cast<int>(delay.count());
    }

    // --- running ---------------------------------------------------------
    // One iteration (see the top of this file). max_wait caps the wait in
    // milliseconds of real time (tests pass 0 to poll).
    Wake run_once(Msec max_wait = kForever);
    // Iterates until stop(); after_each runs after every iteration, for
    // the worker to act on flags its signal handlers set.
    void run(Callback after_each = {});
    // Async-signal-safe. run() returns after the current iteration; the
    // next wait does not block.
    void stop() { stop_ = 1; }
    bool stopped() const { return stop_ != 0; }

    // With a mask, the wait is epoll_pwait(mask): a worker blocks its
    // signals everywhere else, so a signal arriving between two waits
    // stays pending until the next wait and interrupts it, instead of
    // being handled while the loop runs and then sleeping until the next
    // timer. Null restores plain epoll_wait(). The mask is copied.
    void set_wait_sigmask(const sigset_t* mask);

    // The epoll_wait() timeout the next iteration will use: -1 (forever),
    // 0 (work is pending) or the ms to the nearest timer, capped by
    // max_wait.
    int wait_timeout(Msec max_wait = kForever);

private:
    void dispatch(int n);
    void run_posted(bool with_batched);
    static void append(detail::Link& queue, Event& e);
    static void take(detail::Link& to, detail::Link& from);

    CachedTime time_;
    int epfd_;
    volatile std::sig_atomic_t stop_ = 0;
    Callback idle_cb_;
    int idle_delay_ = 0;
    bool idle_due_ = true;  // activity since idle_cb_ last ran
    bool has_wait_mask_ = false;
    sigset_t wait_mask_;
    uint32_t registered_ = 0;  // Watchers currently registered
    std::vector<epoll_event> events_;
    std::vector<uint32_t> gens_;  // Watcher::gen_ of events_[i] at wake-up
    TimerQueue timers_;
    detail::Link posted_;   // sentinel of a circular list of Events
    detail::Link batched_;  // the same, for post_after_batch()
    std::vector<Callback> deferred_;
    std::vector<Callback> deferred_running_;
    bool in_deferred_ = false;
};

}  // namespace gatehouse::event
