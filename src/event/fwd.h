// Declarations of the event layer, for headers that only pass pointers,
// plus its vocabulary types: Msec, IoResult and Callback.
#pragma once

#include <cstddef>
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

// What a socket read or write did (event::Connection, Transport, Duplex).
struct IoResult {
    enum Kind : uint8_t {
        Ok,     // `bytes` > 0 moved
        Again,  // would block: the readiness flag is cleared, the handler
                // runs again when epoll says so
        Eof,    // recv only: the peer closed its side
        Error,  // `err` is errno; the connection is unusable
    };
    Kind kind = Ok;
    size_t bytes = 0;
    int err = 0;
};

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
