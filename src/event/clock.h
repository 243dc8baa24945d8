// Time as the event loop sees it.
//
// A Clock is read once per loop iteration into a CachedTime (nginx's
// ngx_time_update()): every timer, timeout and log line of that iteration
// uses the same "now", and the hot path makes no clock_gettime() calls.
// Tests inject a FakeClock and advance it by hand, so timer tests neither
// sleep nor race.
#pragma once

#include <cstdint>
#include <ctime>
#include <string_view>

#include "event/fwd.h"

namespace gatehouse::event {

// Wall-clock time: for logs and HTTP dates only, never for timeouts (it
// jumps when the administrator or NTP sets the clock).
struct WallTime {
    int64_t sec = 0;    // seconds since the Unix epoch
    uint32_t msec = 0;  // 0..999
};

// Source of time. Implementations are read from the loop's thread only.
class Clock {
public:
    virtual ~Clock() = default;
    // Monotonic milliseconds (CLOCK_MONOTONIC for the system clock).
    virtual Msec monotonic() const = 0;
    virtual WallTime wall() const = 0;
};

// The real clocks. Stateless; one shared instance.
class SystemClock final : public Clock {
public:
    Msec monotonic() const override;
    WallTime wall() const override;
};
SystemClock& system_clock();

// A clock that moves only when told to. advance() moves monotonic and wall
// time together; set_wall() lets a test pin a calendar date.
class FakeClock final : public Clock {
public:
    explicit FakeClock(Msec start = 1000, WallTime wall = {1764547200, 0})
        : mono_(start), wall_ms_(wall.sec * 1000 + wall.msec) {}

    Msec monotonic() const override { return mono_; }
    WallTime wall() const override {
        return {wall_ms_ / 1000, static_cast<uint32_t>(wall_ms_ % 1000)};
    }

    void advance(Msec ms) {
        mono_ += ms;
        wall_ms_ += static_cast<int64_t>(ms);
    }
    void set_wall(WallTime w) { wall_ms_ = w.sec * 1000 + w.msec; }

private:
    Msec mono_;
    int64_t wall_ms_;
};

// The per-iteration snapshot of a Clock. Owned by the Loop (one per
// worker); the Clock must outlive it. update() is called by the loop right
// after epoll_wait() returns; everything else only reads.
class CachedTime {
public:
    explicit CachedTime(const Clock& clock) : clock_(clock) { update(); }
    CachedTime(const CachedTime&) = delete;
    CachedTime& operator=(const CachedTime&) = delete;

    void update();

    Msec now() const { return now_; }
    WallTime wall() const { return wall_; }
    // "2026/12/01 10:00:00" in local time, the error log's timestamp;
    // reformatted only when the second changes. Valid until the next
    // update().
    std::string_view log_time() const { return {log_time_, kLogTimeLen}; }

private:
    static constexpr size_t kLogTimeLen = 19;

    const Clock& clock_;
    Msec now_ = 0;
    WallTime wall_;
    int64_t log_sec_ = -1;  // the second log_time_ shows
    char log_time_[kLogTimeLen + 1] = {};
};

}  // namespace gatehouse::event
