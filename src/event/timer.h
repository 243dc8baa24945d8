// Timers: intrusive objects embedded in their owner, kept in a binary
// min-heap ordered by (deadline, arm order).
//
// A Timer costs no allocation to arm: the heap holds pointers and each
// Timer knows its own heap index, so no operation needs a search [nginx
// uses a red-black tree; a heap with back-indices gives the same bounds
// with better locality].
//
// Re-arming later and cancelling are O(1): they change the Timer and leave
// its heap entry where it is, keyed at or before the deadline it now has.
// A connection cancels its read timeout when a request arrives and arms it
// again, further on, when the response is out, so with eager moves every
// request paid two heap walks for a position the timer never reached
// [nginx's NGX_TIMER_LAZY_DELAY skips the move instead, and fires up to
// 300 ms off; here nothing fires early or late]. An entry that reaches the
// top is settled then: dropped if cancelled, moved down to its deadline if
// re-armed later, once per deadline it passes rather than once per
// request. Arming earlier moves the entry up at once, which keeps every
// entry's key at or before its timer's deadline.
//
// Threading: a TimerQueue and its timers belong to one loop, used from that
// loop's thread only. Normally reached through Loop::arm()/cancel().
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "event/fwd.h"

namespace gatehouse::event {

class Timer {
public:
    Timer() = default;
    explicit Timer(Callback cb) : cb(cb) {}
    // The heap points at the Timer: it cannot be copied or moved.
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;
    // Destroying an armed timer cancels it, so an owner dying with a
    // pending timeout (an arena released) cannot leave a dangling entry.
    ~Timer();

    // What runs when the deadline passes. The timer is already disarmed
    // when it runs, so the callback may re-arm it (periodic timers), arm or
    // cancel others, or have its owner destroyed (deferred, see Loop).
    // Set it while the timer is disarmed or from its own callback.
    Callback cb;

    bool armed() const { return armed_; }
    // Meaningful while armed.
    Msec deadline() const { return deadline_; }

private:
    friend class TimerQueue;
    static constexpr uint32_t kNoIndex = UINT32_MAX;

    TimerQueue* queue_ = nullptr;  // non-null while in queue_->heap_
    uint32_t index_ = kNoIndex;    // position in queue_->heap_
    bool armed_ = false;           // an armed timer is always in a heap
    Msec deadline_ = 0;            // what arm_at() asked for
    uint64_t seq_ = 0;             // arm order: ties run first-armed first
    // The heap orders entries by these; (key_, key_seq_) <= (deadline_,
    // seq_) while armed, equal once settled.
    Msec key_ = 0;
    uint64_t key_seq_ = 0;
};

class TimerQueue {
public:
    TimerQueue() = default;
    TimerQueue(const TimerQueue&) = delete;
    TimerQueue& operator=(const TimerQueue&) = delete;
    // Disarms whatever is still armed; the owners keep their Timers.
    ~TimerQueue();

    // Arms t to fire once `now >= deadline`. An armed timer is moved (its
    // old deadline is forgotten), and counts as armed last among timers
    // with the same deadline. A timer armed on another queue is a bug.
    void arm_at(Timer& t, Msec deadline);
    // No-op when t is not armed.
    void cancel(Timer& t);

    // The earliest deadline, or nullopt when nothing is armed. Settles
    // the entries above it, hence not const.
    std::optional<Msec> next_deadline();
    // When run_expired() next has work: at or before the earliest
    // deadline, nullopt when nothing is armed. For the loop's wait, which
    // must not pay a move per iteration: it drops cancelled entries from
    // the top, but an armed one re-armed later may wake the loop early,
    // once, to be moved.
    std::optional<Msec> wake_by();
    // Armed timers (the heap may hold cancelled ones too).
    size_t size() const { return armed_count_; }
    bool empty() const { return armed_count_ == 0; }

    // Runs, in deadline order, every timer due at `now` that was armed
    // before this call. A timer armed (or re-armed) by one of these
    // callbacks waits for the next call even if already due, so a callback
    // re-arming itself with no delay cannot starve the loop. Returns the
    // number of callbacks run.
    size_t run_expired(Msec now);

private:
    friend class Timer;
    static bool before(const Timer* a, const Timer* b) {
        return a->key_ < b->key_ || (a->key_ == b->key_ && a->key_seq_ < b->key_seq_);
    }
    void place(Timer* t, size_t i);
    bool sift_up(size_t i);
    void sift_down(size_t i);
    void remove_at(size_t i);
    // Takes t's entry out of the heap, armed or not.
    void erase(Timer& t);
    // Drops the top entry if cancelled, moves it down to its deadline if
    // re-armed later; false when it is settled already. The heap is not
    // empty.
    bool settle_top();

    std::vector<Timer*> heap_;
    uint64_t seq_ = 0;
    size_t armed_count_ = 0;
};

}  // namespace gatehouse::event
