// Logging to a syslog server as nginx does it ("error_log syslog:..." and
// "access_log syslog:..."): one datagram per message, framed as nginx
// frames it (RFC 3164, 4.1):
//
//     <PRI>Mmm dd hh:mm:ss hostname tag: message
//
// PRI is facility * 8 + severity; the date is local time with the day
// padded by a space ("Jan  2"); "nohostname" leaves the host name out. An
// error log line goes whole (its own date, level and pid included, no
// newline); an access log line as its format made it.
//
// Sending never blocks a worker: the socket (UDP, or a unix datagram
// socket) is non-blocking, opened on the first message (socket() and
// connect()) and again after a failure, and a message the socket does not
// take at once is dropped and counted. The owner of a peer reports the
// failures in its own log, at most once a minute (report_due()).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>

namespace gatehouse::log {

// Where and how to send: parsed from "syslog:..." (conf/syslog.h).
struct SyslogTarget {
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    std::string server;     // as written after "server=": for messages
    int facility = 23;      // local7
    int severity = 6;       // info; for access_log only: error_log lines carry their level
    std::string tag = "nginx";
    bool nohostname = false;
};

// "<191>" "Jan 01 00:00:00 " a host name of up to 255 bytes, " ", a tag of
// up to 32, ": ".
inline constexpr size_t kSyslogHeaderMax = 5 + 16 + 255 + 1 + 32 + 2;

// Writes the header of a message of `severity` (0 emerg .. 7 debug) sent
// at local time `tm` into `out`; returns its length. `host` is left out
// with nohostname, and cut to 255 bytes.
size_t syslog_header(const SyslogTarget& t, int severity, const struct tm& tm, std::string_view host,
                     std::span<char, kSyslogHeaderMax> out);

// The host name headers carry: gethostname(), in lower case [nginx].
std::string syslog_hostname();

// One destination, owned by whoever logs to it (an ErrorLog sink, an
// access log of a generation); used by the process that owns it, each
// process opening its own socket (a forked worker may inherit one open in
// the master: datagrams from either go out whole).
class SyslogPeer {
public:
    explicit SyslogPeer(SyslogTarget t);
    SyslogPeer(const SyslogPeer&) = delete;
    SyslogPeer& operator=(const SyslogPeer&) = delete;
    ~SyslogPeer();

    // Sends header and `msg` as one datagram. False: the message was
    // dropped (counted in dropped()); failure() says why. A socket that
    // failed is closed and opened again for the next message, so that a
    // restarted daemon (a new socket at the same path) gets it.
    bool send(int severity, std::string_view msg);

    const SyslogTarget& target() const { return t_; }
    uint64_t dropped() const { return dropped_; }
    // After failures: true once, then not again for a minute, so that a
    // server that is down costs the log one line a minute, not one per
    // message.
    bool report_due(time_t now);
    // The last failure, for that line: `send() to syslog server
    // "127.0.0.1:514" failed (111: Connection refused), lines dropped so
    // far: 3`.
    std::string failure() const;
    // The descriptor, -1 while closed (tests).
    int fd() const { return fd_; }

private:
    bool open();
    void fail(const char* call, int err);

    SyslogTarget t_;
    std::string host_;
    int fd_ = -1;
    uint64_t dropped_ = 0;
    const char* call_ = "";   // what failed last: "socket()", "connect()", "send()"
    int err_ = 0;
    bool unreported_ = false;  // failed since the last report
    time_t reported_ = 0;
    time_t tm_sec_ = -1;       // tm_ is the local time of this second
    struct tm tm_ {};
};

}  // namespace gatehouse::log
