// Tests of src/core/syslog.h: the header nginx writes, and a peer sending
// to real datagram sockets (a unix one in a temp dir, UDP on loopback),
// dropping and counting what it cannot send.
#include "core/syslog.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>

#include "temp_dir.h"

using gatehouse::log::kSyslogHeaderMax;
using gatehouse::log::syslog_header;
using gatehouse::log::syslog_hostname;
using gatehouse::log::SyslogPeer;
using gatehouse::log::SyslogTarget;
using gatehouse::test::TempDir;

namespace {

std::string header(const SyslogTarget& t, int severity, int mon, int mday, int h, int m, int s,
                   std::string_view host = "web1") {
    struct tm tm {};
    tm.tm_mon = mon;
    tm.tm_mday = mday;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    char out[kSyslogHeaderMax];
    return std::string(out, syslog_header(t, severity, tm, host, out));
}

// A unix datagram socket bound in a temp dir: what a local syslog daemon
// reads from.
struct UnixServer {
    TempDir dir;
    std::string path = dir / "log.sock";
    int fd = -1;
    UnixServer() { bind(); }
    ~UnixServer() {
        if (fd >= 0) ::close(fd);
    }
    void bind() {
        fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_un un{};
        un.sun_family = AF_UNIX;
        std::memcpy(un.sun_path, path.data(), path.size());
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
    }
    void close_and_unlink() {
        ::close(fd);
        fd = -1;
        ::unlink(path.c_str());
    }
    SyslogTarget target() const {
        SyslogTarget t;
        auto* un = reinterpret_cast<sockaddr_un*>(&t.addr);
        un->sun_family = AF_UNIX;
        std::memcpy(un->sun_path, path.data(), path.size());
        t.addr_len = sizeof(sockaddr_un);
        t.server = "unix:" + path;
        return t;
    }
    // The next datagram, "" when none waits.
    std::string recv() const {
        char b[70000];
        ssize_t n = ::recv(fd, b, sizeof b, 0);
        return n < 0 ? std::string() : std::string(b, static_cast<size_t>(n));
    }
};

// "<PRI>Mmm dd hh:mm:ss " then the rest, checked for shape; returns the
// rest.
std::string after_date(const std::string& msg, std::string_view pri) {
    REQUIRE(msg.substr(0, pri.size()) == pri);
    std::string date = msg.substr(pri.size(), 16);
    CHECK(std::isupper(static_cast<unsigned char>(date[0])));
    CHECK(date[3] == ' ');
    CHECK((date[4] == ' ' || std::isdigit(static_cast<unsigned char>(date[4]))));
    CHECK(std::isdigit(static_cast<unsigned char>(date[5])));
    CHECK(date.substr(6, 1) == " ");
    CHECK(date[9] == ':');
    CHECK(date[12] == ':');
    CHECK(date[15] == ' ');
    return msg.substr(pri.size() + 16);
}

}  // namespace

TEST_CASE("core/syslog: the header, as nginx writes it") {
    SyslogTarget t;  // local7, tag nginx
    CHECK(header(t, 3, 0, 2, 3, 4, 5) == "<187>Jan  2 03:04:05 web1 nginx: ");
    CHECK(header(t, 6, 11, 31, 23, 59, 59) == "<190>Dec 31 23:59:59 web1 nginx: ");
    CHECK(header(t, 0, 4, 10, 0, 0, 0) == "<184>May 10 00:00:00 web1 nginx: ");
    t.facility = 0;
    CHECK(header(t, 0, 1, 9, 1, 2, 3) == "<0>Feb  9 01:02:03 web1 nginx: ");
    t.facility = 1;
    t.tag = "SEETHIS";
    CHECK(header(t, 3, 6, 14, 12, 0, 1) == "<11>Jul 14 12:00:01 web1 SEETHIS: ");
    t.nohostname = true;
    CHECK(header(t, 6, 8, 1, 9, 9, 9) == "<14>Sep  1 09:09:09 SEETHIS: ");
    t = SyslogTarget();
    t.tag = "";
    t.nohostname = true;
    CHECK(header(t, 7, 2, 3, 4, 5, 6) == "<191>Mar  3 04:05:06 : ");
}

TEST_CASE("core/syslog: the header's longest parts are cut, never overflowed") {
    SyslogTarget t;
    t.tag = std::string(40, 't');
    std::string h = header(t, 7, 0, 1, 0, 0, 0, std::string(300, 'h'));
    CHECK(h.size() == kSyslogHeaderMax);
    CHECK(h == "<191>Jan  1 00:00:00 " + std::string(255, 'h') + " " + std::string(32, 't') + ": ");
}

TEST_CASE("core/syslog: the host name is gethostname()'s, in lower case") {
    std::string h = syslog_hostname();
    CHECK_FALSE(h.empty());
    for (char c : h) CHECK_FALSE((c >= 'A' && c <= 'Z'));
}

TEST_CASE("core/syslog: a peer sends one datagram per message to a unix socket") {
    UnixServer srv;
    SyslogTarget t = srv.target();
    t.tag = "gh";
    SyslogPeer p(t);
    CHECK(p.fd() == -1);  // opened by the first message
    REQUIRE(p.send(6, "GET / 200"));
    CHECK(p.fd() >= 0);
    REQUIRE(p.send(3, ""));
    std::string host = syslog_hostname();
    CHECK(after_date(srv.recv(), "<190>") == host + " gh: GET / 200");
    CHECK(after_date(srv.recv(), "<187>") == host + " gh: ");
    CHECK(srv.recv().empty());
    CHECK(p.dropped() == 0);
    CHECK_FALSE(p.report_due(::time(nullptr)));
}

TEST_CASE("core/syslog: a peer sends over UDP") {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) == 0);
    socklen_t len = sizeof in;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&in), &len) == 0);
    SyslogTarget t;
    std::memcpy(&t.addr, &in, sizeof in);
    t.addr_len = sizeof in;
    t.nohostname = true;
    t.facility = 1;
    SyslogPeer p(t);
    REQUIRE(p.send(6, "line"));
    char b[512];
    ssize_t n = ::recv(fd, b, sizeof b, 0);
    REQUIRE(n > 0);
    CHECK(after_date(std::string(b, static_cast<size_t>(n)), "<14>") == "nginx: line");
    ::close(fd);
}

TEST_CASE("core/syslog: what cannot be sent is dropped, counted and reported once a minute") {
    UnixServer srv;
    SyslogPeer p(srv.target());
    srv.close_and_unlink();
    CHECK_FALSE(p.send(6, "a"));
    CHECK_FALSE(p.send(6, "b"));
    CHECK(p.dropped() == 2);
    CHECK(p.fd() == -1);
    CHECK(p.failure() == "connect() to syslog server \"unix:" + srv.path +
                             "\" failed (2: No such file or directory), lines dropped so far: 2");
    const time_t now = 1000000;
    CHECK(p.report_due(now));
    CHECK_FALSE(p.report_due(now));  // nothing new
    CHECK_FALSE(p.send(6, "c"));
    CHECK_FALSE(p.report_due(now + 59));
    CHECK(p.report_due(now + 60));
    // The daemon is back: the next message opens a new socket.
    srv.bind();
    REQUIRE(p.send(6, "d"));
    CHECK(srv.recv().ends_with(": d"));
    CHECK(p.dropped() == 3);
}

TEST_CASE("core/syslog: a daemon restarted on the same path gets the next message but one") {
    UnixServer srv;
    SyslogPeer p(srv.target());
    REQUIRE(p.send(6, "first"));
    CHECK(srv.recv().ends_with(": first"));
    srv.close_and_unlink();
    srv.bind();
    // The connected socket still names the old one: this send fails and
    // closes it, as nginx's does.
    CHECK_FALSE(p.send(6, "lost"));
    CHECK(p.failure().rfind("send() to syslog server", 0) == 0);
    REQUIRE(p.send(6, "again"));
    CHECK(srv.recv().ends_with(": again"));
}

TEST_CASE("core/syslog: a full socket drops the message, never blocks") {
    UnixServer srv;
    SyslogPeer p(srv.target());
    std::string big(4000, 'x');
    int sent = 0;
    bool dropped = false;
    for (int i = 0; i < 100000 && !dropped; ++i) {
        if (p.send(6, big))
            ++sent;
        else
            dropped = true;
    }
    REQUIRE(dropped);
    CHECK(sent > 0);
    CHECK(p.failure().find("(11: Resource temporarily unavailable)") != std::string::npos);
    CHECK(p.fd() >= 0);  // kept: the reader is only slow
    while (!srv.recv().empty()) {
    }
    CHECK(p.send(6, "after"));
}
