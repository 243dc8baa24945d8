// The leaky bucket of limit_req, as pure arithmetic on a state struct:
// time is passed in (the loop's monotonic milliseconds, the same clock in
// every process), so that the unit tests drive it and the shared table
// (http/limit_table.h) only stores the two numbers.
//
// Units are nginx's, so that "rate", "burst" and "delay" mean what they
// mean there and the logged excess reads the same:
//   - a rate is in thousandths of a request per second: "2r/s" is 2000,
//     "30r/m" is 500;
//   - an excess, a burst and a delay threshold are in thousandths of a
//     request: "burst=5" is 5000.
// Each request adds 1000 to the key's excess; the excess leaks at `rate`.
// A request whose excess would pass the burst is refused and changes
// nothing; one within it is accepted (committed) and waits for the part
// of its excess above the delay threshold to leak.
#pragma once

#include <cstdint>

namespace gatehouse::http::limiter {

// Bounds the arithmetic stays exact within (int64): the directives refuse
// larger values.
inline constexpr int64_t kMaxRate = 1'000'000'000;   // thousandths per second
inline constexpr int64_t kMaxBurst = 1'000'000'000;  // thousandths of a request

// One key's state. `last` is meaningful once a request was committed.
struct Bucket {
    int64_t excess = 0;  // thousandths of a request
    uint64_t last = 0;   // ms, when excess was last updated
};

// The ms since `last`, as nginx counts them: a clock seen a little behind
// (another process read it a moment earlier) counts as no time; more than
// a minute behind is a jump, counted as 1 ms so the state still moves.
inline int64_t elapsed(uint64_t now, uint64_t last) {
    int64_t ms = static_cast<int64_t>(now - last);
    if (ms < -60000) return 1;
    return ms < 0 ? 0 : ms;
}

// What leaks at `rate` in `ms`, in thousandths of a request. 128-bit: a
// key idle for months at a high rate must not wrap around.
inline int64_t leaked(int64_t rate, int64_t ms) {
    __int128 l = static_cast<__int128>(rate) * ms / 1000;
    return l > INT64_MAX ? INT64_MAX : static_cast<int64_t>(l);
}

// The excess this request would leave: what leaked since `last` goes, the
// request adds 1000, never below 0 (an idle key has full credit, no more).
// A key's first request leaves 0: callers start a key with Bucket{0, now}
// and commit 0 without asking.
inline int64_t excess_after(const Bucket& b, uint64_t now, int64_t rate) {
    int64_t l = leaked(rate, elapsed(now, b.last));
    return l >= b.excess + 1000 ? 0 : b.excess - l + 1000;
}

// Refused: the request would pass the burst.
inline bool over_burst(int64_t excess, int64_t burst) { return excess > burst; }

// Records an accepted request's excess. `last` moves only when time did,
// so that requests within one ms do not lose the fraction of a leak.
inline void commit(Bucket& b, int64_t excess, uint64_t now) {
    if (elapsed(now, b.last) != 0) b.last = now;
    b.excess = excess;
}

// How long an accepted request waits: the time its excess above the delay
// threshold takes to leak. `delay` is kNoDelay for "nodelay".
inline constexpr int64_t kNoDelay = INT64_MAX;
inline uint64_t delay_ms(int64_t excess, int64_t delay, int64_t rate) {
    if (excess <= delay) return 0;
    return static_cast<uint64_t>((excess - delay) * 1000 / rate);
}

// Whether a key's state may be dropped: unused for a minute and leaked to
// nothing, so forgetting it changes no future decision.
inline bool expired(const Bucket& b, uint64_t now, int64_t rate) {
    int64_t ms = static_cast<int64_t>(now - b.last);
    if (ms < 0) ms = -ms;
    if (ms < 60000) return false;
    return leaked(rate, ms) >= b.excess;
}

}  // namespace gatehouse::http::limiter
