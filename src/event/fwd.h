// Declarations of the event layer, for headers that only pass pointers,
// plus the two vocabulary types every handler slot uses: Msec and Callback.
#pragma once

#include <cstdint>
#include <type_traits>

namespace gatehouse::event {

// A point on the loop's monotonic clock, in milliseconds since an
// arbitrary origin. Never goes back; never compare it with wall time.
using Msec = uint64_t;

class Clock;
class SystemClock;
class FakeClock;
class CachedTime;
class Timer;
class TimerQueue;
class Event;
class Watcher;
class Loop;
class Connection;
class Transport;
class ConnectionTable;
class Listener;
struct IoResult;

// A plain function pointer and its argument: what the loop calls back for
// I/O readiness, timers, posted events and deferred destruction. Two words,
// trivially copyable, never allocates (unlike std::function). `data` is not
// owned; whoever stores a Callback guarantees `data` outlives it.
struct Callback {
    void (*fn)(void*) = nullptr;
    void* data = nullptr;

    explicit operator bool() const { return fn != nullptr; }
    void operator()() const { fn(data); }

    // Callback::to<&HttpConn::on_read>(conn): calls conn->on_read().
    // Callback::to<&close_idle>(conn):        calls close_idle(conn), for a
    // free function taking T*.
    template <auto F, typename T>
    static Callback to(T* obj) {
        if constexpr (std::is_member_function_pointer_v<decltype(F)>) {
            return {[](void* p) { (static_cast<T*>(p)->*F)(); }, obj};
        } else {
            return {[](void* p) { F(static_cast<T*>(p)); }, obj};
        }
    }
};

}  // namespace gatehouse::event
