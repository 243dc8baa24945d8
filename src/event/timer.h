// Timers: intrusive objects embedded in their owner, kept in a binary
// min-heap ordered by (deadline, arm order).
//
// A Timer costs no allocation to arm: the heap holds pointers and each
// Timer knows its own heap index, so arm, re-arm and cancel are O(log n)
// and cancel needs no search [nginx uses a red-black tree; a heap with
// back-indices gives the same bounds with better locality].
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

    bool armed() const { return queue_ != nullptr; }
    // Meaningful while armed.
    Msec deadline() const { return deadline_; }

private:
    friend class TimerQueue;
    static constexpr uint32_t kNoIndex = UINT32_MAX;

    TimerQueue* queue_ = nullptr;  // non-null exactly while armed
    uint32_t index_ = kNoIndex;    // position in queue_->heap_
    Msec deadline_ = 0;
    uint64_t seq_ = 0;             // arm order: ties run first-armed first
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

    // The earliest deadline, or nullopt when nothing is armed.
    std::optional<Msec> next_deadline() const;
    size_t size() const { return heap_.size(); }
    bool empty() const { return heap_.empty(); }

    // Runs, in deadline order, every timer due at `now` that was armed
    // before this call. A timer armed (or re-armed) by one of these
    // callbacks waits for the next call even if already due, so a callback
    // re-arming itself with no delay cannot starve the loop. Returns the
    // number of callbacks run.
    size_t run_expired(Msec now);

private:
    static bool before(const Timer* a, const Timer* b) {
        return a->deadline_ < b->deadline_ ||
               (a->deadline_ == b->deadline_ && a->seq_ < b->seq_);
    }
    void place(Timer* t, size_t i);
    bool sift_up(size_t i);
    void sift_down(size_t i);
    void remove_at(size_t i);

    std::vector<Timer*> heap_;
    uint64_t seq_ = 0;
};

}  // namespace gatehouse::event
