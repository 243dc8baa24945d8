#include "event/timer.h"

#include "core/assert.h"

namespace gatehouse::event {

Timer::~Timer() {
    // A cancelled timer may still have its entry in the heap.
    if (queue_) queue_->erase(*this);
}

TimerQueue::~TimerQueue() {
    for (Timer* t : heap_) {
        t->queue_ = nullptr;
        t->index_ = Timer::kNoIndex;
        t->armed_ = false;
    }
}

void TimerQueue::place(Timer* t, size_t i) {
    heap_[i] = t;
    t->index_ = static_cast<uint32_t>(i);
}

bool TimerQueue::sift_up(size_t i) {
    Timer* t = heap_[i];
    size_t start = i;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(t, heap_[parent])) break;
        place(heap_[parent], i);
        i = parent;
    }
    place(t, i);
    return i != start;
}

void TimerQueue::sift_down(size_t i) {
    Timer* t = heap_[i];
    size_t n = heap_.size();
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && before(heap_[child + 1], heap_[child])) ++child;
        if (!before(heap_[child], t)) break;
        place(heap_[child], i);
        i = child;
    }
    place(t, i);
}

void TimerQueue::remove_at(size_t i) {
    Timer* t = heap_[i];
    Timer* last = heap_.back();
    heap_.pop_back();
    if (last != t) {
        place(last, i);
        if (!sift_up(i)) sift_down(i);
    }
    t->queue_ = nullptr;
    t->index_ = Timer::kNoIndex;
    if (t->armed_) {
        t->armed_ = false;
        --armed_count_;
    }
}

void TimerQueue::erase(Timer& t) {
    GH_ASSERT(t.queue_ == this && heap_[t.index_] == &t);
    remove_at(t.index_);
}

void TimerQueue::arm_at(Timer& t, Msec deadline) {
    GH_CHECK(t.cb);
    if (t.queue_ != nullptr && t.queue_ != this) {
        // A cancelled timer's entry may linger in the queue it left.
        GH_CHECK(!t.armed_);
        t.queue_->erase(t);
    }
    t.deadline_ = deadline;
    t.seq_ = seq_++;
    if (!t.armed_) {
        t.armed_ = true;
        ++armed_count_;
    }
    if (t.queue_ == this) {
        // The new (deadline, seq) is after the entry's key: leave the
        // entry, settle_top() moves it if it ever reaches the top.
        if (deadline >= t.key_) return;
        t.key_ = deadline;
        t.key_seq_ = t.seq_;
        sift_up(t.index_);
        return;
    }
    GH_CHECK(heap_.size() < Timer::kNoIndex);
    t.queue_ = this;
    t.key_ = deadline;
    t.key_seq_ = t.seq_;
    heap_.push_back(&t);
    sift_up(heap_.size() - 1);
}

void TimerQueue::cancel(Timer& t) {
    if (t.queue_ != this || !t.armed_) return;
    // The entry stays; settle_top() or the Timer's destructor drops it.
    t.armed_ = false;
    --armed_count_;
}

bool TimerQueue::settle_top() {
    Timer* t = heap_[0];
    if (!t->armed_) {
        remove_at(0);
        return true;
    }
    if (t->key_ == t->deadline_ && t->key_seq_ == t->seq_) return false;
    t->key_ = t->deadline_;
    t->key_seq_ = t->seq_;
    sift_down(0);
    return true;
}

std::optional<Msec> TimerQueue::next_deadline() {
    while (!heap_.empty() && settle_top()) {
    }
    if (heap_.empty()) return std::nullopt;
    return heap_[0]->deadline_;
}

std::optional<Msec> TimerQueue::wake_by() {
    while (!heap_.empty() && !heap_[0]->armed_) remove_at(0);
    if (heap_.empty()) return std::nullopt;
    return heap_[0]->key_;
}

size_t TimerQueue::run_expired(Msec now) {
    // Timers armed from here on have seq_ >= limit; the pass stops when
    // one reaches the top. Ties sort by seq_, so with the usual "now +
    // delay" deadlines no older due timer is left behind; one armed in the
    // past on purpose may hold older ones back until the next call, which
    // the loop makes without blocking (the heap top is then due).
    const uint64_t limit = seq_;
    size_t ran = 0;
    while (!heap_.empty()) {
        Timer* t = heap_[0];
        // Entries are settled only when their key comes due, so a
        // connection re-armed on every request is moved about once per
        // timeout, not once per request.
        if (t->key_ > now) break;
        if (settle_top()) continue;
        if (t->deadline_ > now || t->seq_ >= limit) break;
        remove_at(0);
        ++ran;
        // Last use of t here: the callback may re-arm or destroy it.
        t->cb();
    }
    return ran;
}

}  // namespace gatehouse::event
