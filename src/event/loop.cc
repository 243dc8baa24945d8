#include "event/loop.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "core/log.h"

namespace gatehouse::event {

namespace {

Error sys_error(const char* call, int err) {
    return make_error(std::string(call) + " failed (" + std::to_string(err) + ": " +
                      strerror(err) + ")");
}

uint32_t epoll_mask(Interest i) {
    switch (i) {
        case Interest::ReadWrite: return EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        case Interest::Read: return EPOLLIN | EPOLLRDHUP | EPOLLET;
        case Interest::Write: return EPOLLOUT | EPOLLET;
        case Interest::Accept: return EPOLLIN | EPOLLEXCLUSIVE;
    }
    return 0;
}

}  // namespace

Watcher::~Watcher() {
    if (loop_) loop_->remove(*this);
}

void Watcher::set_fd(int fd) {
    GH_CHECK(!registered());
    fd_ = fd;
}

Result<std::unique_ptr<Loop>> Loop::create(const Clock& clock, LoopOptions opts) {
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) return sys_error("epoll_create1()", errno);
    if (opts.max_events == 0) opts.max_events = 1;
    return std::make_unique<Loop>(Private{}, clock, epfd, opts);
}

Loop::Loop(Private, const Clock& clock, int epfd, LoopOptions opts)
    : time_(clock), epfd_(epfd), events_(opts.max_events), gens_(opts.max_events) {
    posted_.prev = posted_.next = &posted_;
    batched_.prev = batched_.next = &batched_;
    sigemptyset(&wait_mask_);
}

Loop::~Loop() {
    // Owners destroyed by deferred callbacks may still cancel timers and
    // unpost events: run them while the queues exist.
    run_deferred();
    while (has_posted()) static_cast<Event*>(posted_.next)->unlink();
    while (has_batched()) static_cast<Event*>(batched_.next)->unlink();
    GH_ASSERT(registered_ == 0);
    ::close(epfd_);
}

// --- I/O ------------------------------------------------------------------

Status Loop::add(Watcher& w, Interest interest) {
    GH_CHECK(!w.registered() && w.fd_ >= 0);
    epoll_event ev{};
    ev.events = epoll_mask(interest);
    ev.data.ptr = &w;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, w.fd_, &ev) < 0)
        return sys_error("epoll_ctl(EPOLL_CTL_ADD)", errno);
    w.loop_ = this;
    w.events_ = ev.events;
    w.reset_flags();
    ++registered_;
    return {};
}

Status Loop::modify(Watcher& w, Interest interest) {
    GH_CHECK(w.loop_ == this);
    GH_CHECK(interest != Interest::Accept && !(w.events_ & EPOLLEXCLUSIVE));
    epoll_event ev{};
    ev.events = epoll_mask(interest);
    ev.data.ptr = &w;
    if (epoll_ctl(epfd_, EPOLL_CTL_MOD, w.fd_, &ev) < 0)
        return sys_error("epoll_ctl(EPOLL_CTL_MOD)", errno);
    w.events_ = ev.events;
    return {};
}

void Loop::remove(Watcher& w) {
    if (!w.loop_) return;
    GH_CHECK(w.loop_ == this);
    // Only a bug gets here (EBADF: the owner closed the fd behind our
    // back); the registration is gone either way.
    if (epoll_ctl(epfd_, EPOLL_CTL_DEL, w.fd_, nullptr) < 0)
        GH_LOG_ERRNO(Alert, errno, "epoll_ctl(EPOLL_CTL_DEL, %d) failed", w.fd_);
    w.loop_ = nullptr;
    w.events_ = 0;
    ++w.gen_;
    --registered_;
}

void Loop::close(Watcher& w) {
    if (w.loop_) {
        GH_CHECK(w.loop_ == this);
        w.loop_ = nullptr;
        w.events_ = 0;
        ++w.gen_;
        --registered_;
    }
    if (w.fd_ >= 0 && ::close(w.fd_) < 0) {
        // Linux releases the fd even on EINTR: never retry, it may already
        // be someone else's.
        GH_LOG_ERRNO(Alert, errno, "close() socket %d failed", w.fd_);
    }
    w.fd_ = -1;
    w.reset_flags();
}

// --- timers, posted ---------------------------------------------------------

void Loop::arm(Timer& t, std::chrono::milliseconds delay) {
    Msec d = delay.count() > 0 ? static_cast<Msec>(delay.count()) : 0;
    timers_.arm_at(t, now() + d);
}

void Loop::append(detail::Link& queue, Event& e) {
    if (e.posted()) return;
    e.prev = queue.prev;
    e.next = &queue;
    queue.prev->next = &e;
    queue.prev = &e;
}

void Loop::post(Event& e) { append(posted_, e); }

void Loop::post_after_batch(Event& e) { append(batched_, e); }

namespace {
constexpr int kPostedRounds = 4;
}  // namespace

void Loop::run_posted(bool with_batched) {
    // A few rounds: what a posted event posts runs in the same iteration
    // up to kPostedRounds deep (a request finishing after a handler's
    // posted step, say), which saves an epoll_wait per proxied request;
    // deeper chains wait for the next chance, so an event that re-posts
    // itself cannot spin here. In step 5 a round takes the events posted
    // after the batch too, behind the others: a job that yields to the
    // other connections runs at most kPostedRounds times an iteration.
    for (int round = 0; round < kPostedRounds; ++round) {
        // Detach the queues onto a local sentinel; unlink() needs no head,
        // so unpost still works on the detached ones.
        detail::Link batch;
        batch.next = batch.prev = &batch;
        take(batch, posted_);
        if (with_batched) take(batch, batched_);
        if (batch.next == &batch) return;
        while (batch.next != &batch) {
            Event* e = static_cast<Event*>(batch.next);
            e->unlink();
            e->cb();
        }
    }
}

// Moves the events of `from` to the end of `to`; `from` is left empty.
void Loop::take(detail::Link& to, detail::Link& from) {
    if (from.next == &from) return;
    from.next->prev = to.prev;
    to.prev->next = from.next;
    from.prev->next = &to;
    to.prev = from.prev;
    from.next = from.prev = &from;
}

void Loop::run_deferred() {
    GH_CHECK(!in_deferred_);
    in_deferred_ = true;
    while (!deferred_.empty()) {
        // Swap, so callbacks may defer more while we iterate; both vectors
        // keep their capacity, so steady state allocates nothing.
        deferred_running_.swap(deferred_);
        for (const Callback& cb : deferred_running_) cb();
        deferred_running_.clear();
    }
    in_deferred_ = false;
}

// --- running ----------------------------------------------------------------

void Loop::set_wait_sigmask(const sigset_t* mask) {
    has_wait_mask_ = mask != nullptr;
    if (mask) wait_mask_ = *mask;
}

int Loop::wait_timeout(Msec max_wait) {
    if (stop_ || has_posted() || has_batched() || !deferred_.empty()) return 0;
    Msec wait = max_wait;
    if (auto next = timers_.wake_by()) {
        Msec t = *next > now() ? *next - now() : 0;
        if (t < wait) wait = t;
    }
    if (wait == kForever) return -1;
    return wait > static_cast<Msec>(INT_MAX) ? INT_MAX : static_cast<int>(wait);
}

Wake Loop::run_once(Msec max_wait) {
    int timeout = wait_timeout(max_wait);
    // Idle work pending: wait at most its delay; a wait that ends empty
    // then means the delay passed with nothing to do.
    const bool idle_wait = idle_cb_ && idle_due_ && (timeout < 0 || timeout > idle_delay_);
    if (idle_wait) timeout = idle_delay_;
    int cap = static_cast<int>(events_.size());
    int n = has_wait_mask_ ? epoll_pwait(epfd_, events_.data(), cap, timeout, &wait_mask_)
                           : epoll_wait(epfd_, events_.data(), cap, timeout);
    int err = errno;
    time_.update();
    if (n > 0) {
        idle_due_ = true;
    } else if (n == 0 && idle_wait) {
        idle_due_ = false;
        idle_cb_();
    }

    Wake wake = Wake::Events;
    if (n < 0) {
        // Only EINTR is possible with a valid epoll fd and buffer.
        if (err != EINTR) {
            GH_LOG_ERRNO(Alert, err, "epoll_wait() failed");
            GH_CHECK(err == EINTR);
        }
        wake = Wake::Signal;
        n = 0;
    }
    dispatch(n);
    if (timers_.run_expired(now()) > 0) idle_due_ = true;
    run_posted(true);
    run_deferred();
    return wake;
}

void Loop::run(Callback after_each) {
    while (!stop_) {
        run_once();
        if (after_each) after_each();
    }
}

void Loop::dispatch(int n) {
    // A handler may close or re-register another Watcher whose event is
    // still ahead in this batch (its memory stays valid: destruction is
    // deferred). Snapshot the generations first; a changed one means the
    // event belongs to a registration that is gone [nginx's "instance" bit,
    // exact].
    for (int i = 0; i < n; ++i) gens_[i] = static_cast<Watcher*>(events_[i].data.ptr)->gen_;

    for (int i = 0; i < n; ++i) {
        auto* w = static_cast<Watcher*>(events_[i].data.ptr);
        const uint32_t gen = gens_[i];
        if (w->gen_ != gen) continue;
        uint32_t ev = events_[i].events;

        if (ev & (EPOLLERR | EPOLLHUP)) {
            // Let whichever handler runs find the error through its own
            // read or write: both directions report it.
            if (ev & EPOLLERR) w->error_ = true;
            ev |= (EPOLLIN | EPOLLOUT) & w->events_;
        }
        if (ev & (EPOLLRDHUP | EPOLLHUP)) {
            w->peer_closed_ = true;
            ev |= EPOLLIN & w->events_;
        }
        if (ev & EPOLLIN) {
            w->readable_ = true;
            if (w->on_read) w->on_read();
            if (w->gen_ != gen) continue;
        }
        if (ev & EPOLLOUT) {
            w->writable_ = true;
            if (w->on_write) w->on_write();
        }
        if (has_posted()) run_posted(false);
    }
}

}  // namespace gatehouse::event
