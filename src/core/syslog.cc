#include "core/syslog.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "core/str.h"

namespace gatehouse::log {

namespace {

constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Two digits, or a space and a digit ("Jan  2", RFC 3164 4.1.2).
void two(FixedWriter& w, int v, char pad) {
    char b[2] = {v < 10 ? pad : static_cast<char>('0' + v / 10 % 10), static_cast<char>('0' + v % 10)};
    w.put({b, 2});
}

}  // namespace

size_t syslog_header(const SyslogTarget& t, int severity, const struct tm& tm, std::string_view host,
                     std::span<char, kSyslogHeaderMax> out) {
    FixedWriter w{out.data(), out.data() + out.size()};
    w.put("<");
    w.num(static_cast<uint64_t>(t.facility * 8 + severity));
    w.put(">");
    w.put(kMonths[std::clamp(tm.tm_mon, 0, 11)]);
    w.put(" ");
    two(w, tm.tm_mday, ' ');
    w.put(" ");
    two(w, tm.tm_hour, '0');
    w.put(":");
    two(w, tm.tm_min, '0');
    w.put(":");
    two(w, tm.tm_sec, '0');
    w.put(" ");
    if (!t.nohostname) {
        w.put(host.substr(0, 255));
        w.put(" ");
    }
    w.put(std::string_view(t.tag).substr(0, 32));
    w.put(": ");
    return static_cast<size_t>(w.p - out.data());
}

std::string syslog_hostname() {
    char name[HOST_NAME_MAX + 1] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
    std::string h(name);
    for (char& c : h) c = ascii_lower(c);
    return h;
}

SyslogPeer::SyslogPeer(SyslogTarget t) : t_(std::move(t)), host_(syslog_hostname()) {}

SyslogPeer::~SyslogPeer() {
    if (fd_ >= 0) ::close(fd_);
}

bool SyslogPeer::open() {
    int fd = ::socket(t_.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket()", errno);
        return false;
    }
    // Connected: a datagram socket then reports the server's absence
    // (ICMP port unreachable, a unix path nobody reads) on a later send,
    // which reopens it; and send() needs no address.
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&t_.addr), t_.addr_len) != 0) {
        int err = errno;
        ::close(fd);
        fail("connect()", err);
        return false;
    }
    fd_ = fd;
    return true;
}

void SyslogPeer::fail(const char* call, int err) {
    call_ = call;
    err_ = err;
    ++dropped_;
    unreported_ = true;
}

bool SyslogPeer::send(int severity, std::string_view msg) {
    if (fd_ < 0 && !open()) return false;
    time_t now = ::time(nullptr);
    if (now != tm_sec_) {
        localtime_r(&now, &tm_);
        tm_sec_ = now;
    }
    char head[kSyslogHeaderMax];
    size_t hn = syslog_header(t_, severity, tm_, host_, head);
    iovec iov[2] = {{head, hn}, {const_cast<char*>(msg.data()), msg.size()}};
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = msg.empty() ? 1 : 2;
    for (;;) {
        ssize_t n = ::sendmsg(fd_, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) return true;
        if (errno == EINTR) continue;
        break;
    }
    int err = errno;
    fail("send()", err);
    // A full socket buffer (a slow reader) and a message too large for a
    // datagram leave the socket usable; anything else may mean the server
    // went away: the next message opens a new socket.
    if (err != EAGAIN && err != EWOULDBLOCK && err != EMSGSIZE && err != ENOBUFS) {
        ::close(fd_);
        fd_ = -1;
    }
    return false;
}

bool SyslogPeer::report_due(time_t now) {
    if (!unreported_ || now - reported_ < 60) return false;
    reported_ = now;
    unreported_ = false;
    return true;
}

std::string SyslogPeer::failure() const {
    return std::string(call_) + " to syslog server \"" + t_.server + "\" failed (" + std::to_string(err_) + ": " +
           strerror(err_) + "), lines dropped so far: " + std::to_string(dropped_);
}

}  // namespace gatehouse::log
