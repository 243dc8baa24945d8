// Error log: levels as nginx (emerg .. debug), one or more sinks.
//
// Before a configuration is loaded, messages go to the startup sinks
// (stderr, and the file named by -e), on stderr in the form
//     gatehouse: [emerg] unknown directive "x" in /etc/g.conf:3
// Afterwards they go to every "error_log" sink of the running generation
// whose level admits them; files (and syslog servers, after the syslog
// header: core/syslog.h) always get nginx's form
//     2026/12/01 10:00:00 [error] 1234#0: *7 message, client: 192.0.2.1, ...
// where "*7" and what follows the message come from the Context in scope
// (see below). The current ErrorLog is per process; it is owned by the
// generation (or by main() before one exists) and set with
// set_error_log().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/str.h"
#include "core/syslog.h"

namespace gatehouse::log {

enum class Level : uint8_t {
    Emerg = 1,
    Alert,
    Crit,
    Error,
    Warn,
    Notice,
    Info,
    Debug,
};

std::string_view level_name(Level l);
Result<Level> parse_level(std::string_view s);

struct Sink {
    std::string path;      // "stderr", an absolute path, or "syslog:<server>"
    Level level = Level::Error;
    int fd = -1;           // owned unless it is 2 (stderr); -1 for syslog
    std::unique_ptr<SyslogPeer> syslog;  // "error_log syslog:..."
};

class ErrorLog {
public:
    ErrorLog() = default;
    ErrorLog(const ErrorLog&) = delete;
    ErrorLog& operator=(const ErrorLog&) = delete;
    ~ErrorLog();

    void add(std::string path, Level level);
    // A syslog server: each line goes as one datagram, its severity the
    // line's level (the target's severity is for access logs only).
    void add_syslog(SyslogTarget target, Level level);
    // Opens every file sink (O_APPEND|O_CREAT, 0644). The error names the
    // path and errno.
    Status open();
    // USR1: reopen files in place so that rotated logs are released.
    // `owner`: see open_log_file().
    void reopen(std::optional<uid_t> owner = std::nullopt);
    // The startup form ("gatehouse: [level] msg") rather than the
    // timestamped one on stderr: used before a configuration exists. File
    // sinks always get the timestamped form.
    void set_startup_form(bool on) { startup_form_ = on; }

    Level max_level() const { return max_; }
    bool enabled(Level l) const { return l <= max_; }
    // One line to every sink whose level admits `l`; `connection`, when
    // not 0, is shown as "*N" before the message (not in the startup form).
    // A syslog server that does not take it loses it: the failure is
    // logged to the other sinks, once a minute at most.
    void write(Level l, std::string_view msg, uint64_t connection = 0) const;
    const std::vector<Sink>& sinks() const { return sinks_; }

private:
    std::vector<Sink> sinks_;
    Level max_ = Level::Emerg;
    bool startup_form_ = false;
};

// What a message is about, as nginx's log->connection and log->handler:
// the number of the connection ("*N" after the pid, the number $connection
// shows) and a function appending the rest of the context to the message
// (", client: 192.0.2.1, server: example.com, request: \"GET / HTTP/1.1\"").
// The code working on a connection puts its Context in scope at each entry
// from the event loop (its I/O callbacks, timers, posted events), so that
// whatever is logged meanwhile carries it and no call site formats it.
// describe() runs only for a line some sink writes, and never for debug
// lines (nginx's choice: there are many, and the lines around them say
// what they are about).
struct Context {
    uint64_t connection = 0;  // 0: none
    // Appends to `out`, which cuts what does not fit. `self` is the
    // owner's, who keeps it valid while the Context is in scope.
    void (*describe)(const void* self, FixedWriter& out) = nullptr;
    const void* self = nullptr;
    // Where the lines go instead of current(): a request's "error_log" of
    // its http, server or location level (owner: the generation); null:
    // the process's.
    const ErrorLog* error_log = nullptr;
};

namespace detail {
inline const Context* g_context = nullptr;  // per process: one thread logs
}  // namespace detail

// The Context in scope; null when none.
inline const Context* context() { return detail::g_context; }

// Puts `c` (null: none) in scope until the end of the block, then restores
// the one before: scopes nest, as when an upstream callback runs inside a
// client connection's. Two pointer moves; `c` must outlive the Scope.
class Scope {
public:
    explicit Scope(const Context* c) : prev_(detail::g_context) { detail::g_context = c; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope() { detail::g_context = prev_; }

private:
    const Context* prev_;
};

// Opens `path` to append lines to (O_APPEND|O_CREAT, 0644, close-on-exec);
// -1 and errno on failure. With `owner` (a master running as root, on
// USR1), the file becomes that user's and writable by them: the workers,
// no longer root, reopen it after the master, which may just have created
// it [nginx ngx_reopen_files]. A failed fchown() is logged at alert.
int open_log_file(const std::string& path, std::optional<uid_t> owner = std::nullopt);

// The process-wide current log. Never null: a stderr log at level notice
// is current until set_error_log() is called.
ErrorLog& current();
void set_error_log(ErrorLog* l);
// The log lines go to now: the one of the Context in scope, if it has one,
// else current().
inline const ErrorLog& effective() {
    const Context* c = detail::g_context;
    return c && c->error_log ? *c->error_log : current();
}

// Used by the log macros; formats printf-style, appends the context in
// scope and writes. Cold: GCC then moves the code that calls it out of the
// hot functions' bodies (to .text.unlikely), so the path a request runs
// spans fewer instruction-cache lines.
[[gnu::cold]] void emit(Level l, int err, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

}  // namespace gatehouse::log

// GH_LOG(Warn, "upstream \"%s\" is down", name): checks the level before
// formatting. GH_LOG_ERRNO appends " (errno: strerror)" as nginx does.
#define GH_LOG(lvl, ...)                                                     \
    do {                                                                     \
        if (::gatehouse::log::effective().enabled(::gatehouse::log::Level::lvl)) \
            ::gatehouse::log::emit(::gatehouse::log::Level::lvl, 0, __VA_ARGS__); \
    } while (0)

#define GH_LOG_ERRNO(lvl, err, ...)                                          \
    do {                                                                     \
        if (::gatehouse::log::effective().enabled(::gatehouse::log::Level::lvl)) \
            ::gatehouse::log::emit(::gatehouse::log::Level::lvl, (err), __VA_ARGS__); \
    } while (0)

// Debug messages exist only in --with-debug builds.
#if GH_DEBUG
#define GH_DEBUG_LOG(...) GH_LOG(Debug, __VA_ARGS__)
#else
#define GH_DEBUG_LOG(...) ((void)0)
#endif
