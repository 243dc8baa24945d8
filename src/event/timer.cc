#include "event/timer.h"

#include "core/assert.h"

namespace gatehouse::event {

Timer::~Timer() {
    if (queue_) queue_->cancel(*this);
}

TimerQueue::~TimerQueue() {
    for (Timer* t : heap_) {
        t->queue_ = nullptr;
        t->index_ = Timer::kNoIndex;
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
}

void TimerQueue::arm_at(Timer& t, Msec deadline) {
    GH_CHECK(t.queue_ == nullptr || t.queue_ == this);
    GH_CHECK(t.cb);
    t.deadline_ = deadline;
    t.seq_ = seq_++;
    if (t.queue_ == this) {
        if (!sift_up(t.index_)) sift_down(t.index_);
        return;
    }
    GH_CHECK(heap_.size() < Timer::kNoIndex);
    t.queue_ = this;
    heap_.push_back(&t);
    sift_up(heap_.size() - 1);
}

void TimerQueue::cancel(Timer& t) {
    if (t.queue_ != this) return;
    GH_ASSERT(heap_[t.index_] == &t);
    remove_at(t.index_);
}

std::optional<Msec> TimerQueue::next_deadline() const {
    if (heap_.empty()) return std::nullopt;
    return heap_[0]->deadline_;
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
        if (t->deadline_ > now || t->seq_ >= limit) break;
        remove_at(0);
        ++ran;
        // Last use of t here: the callback may re-arm or destroy it.
        t->cb();
    }
    return ran;
}

}  // namespace gatehouse::event
