// Tests of src/core/log.h: levels, sinks, the two line forms, reopen and
// the macros.
#include "core/log.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "temp_dir.h"

using gatehouse::log::ErrorLog;
using gatehouse::log::Level;
using gatehouse::test::TempDir;
namespace ghlog = gatehouse::log;

namespace {

// Makes `l` the current log for the life of the guard.
struct CurrentLog {
    explicit CurrentLog(ErrorLog* l) { ghlog::set_error_log(l); }
    ~CurrentLog() { ghlog::set_error_log(nullptr); }
};

// Sends fd 2 to a file for the life of the object.
class StderrCapture {
public:
    StderrCapture() : path_(dir_ / "stderr") {
        fflush(stderr);
        saved_ = ::dup(2);
        int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        REQUIRE(fd >= 0);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~StderrCapture() { restore(); }
    // Restores stderr and returns what was written to it.
    std::string text() {
        restore();
        return dir_.read(path_);
    }

private:
    void restore() {
        if (saved_ < 0) return;
        fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        saved_ = -1;
    }
    TempDir dir_;
    std::string path_;
    int saved_ = -1;
};

// Whether `text` is exactly one line "2026/12/01 10:00:00 [level] PID#0:
// msg\n" with this process's pid. (No std::regex: GCC 12 warns inside it
// under -O1 and sanitizers, and tests build with -Werror.)
bool is_full_line(std::string_view text, std::string_view level, std::string_view msg) {
    constexpr std::string_view kShape = "dddd/dd/dd dd:dd:dd";
    if (text.size() < kShape.size()) return false;
    for (size_t i = 0; i < kShape.size(); ++i) {
        bool digit = text[i] >= '0' && text[i] <= '9';
        if (kShape[i] == 'd' ? !digit : text[i] != kShape[i]) return false;
    }
    std::string rest = " [" + std::string(level) + "] " + std::to_string(::getpid()) + "#0: " +
                       std::string(msg) + "\n";
    return text.substr(kShape.size()) == rest;
}

// Whether one of the lines of `text` is such a line.
bool has_full_line(std::string_view text, std::string_view level, std::string_view msg) {
    while (!text.empty()) {
        size_t nl = text.find('\n');
        size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
        if (is_full_line(text.substr(0, end), level, msg)) return true;
        text.remove_prefix(end);
    }
    return false;
}

size_t lines(std::string_view text) {
    size_t n = 0;
    for (char c : text) n += c == '\n';
    return n;
}

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

}  // namespace

TEST_CASE("core/log: level names") {
    CHECK(ghlog::level_name(Level::Emerg) == "emerg");
    CHECK(ghlog::level_name(Level::Alert) == "alert");
    CHECK(ghlog::level_name(Level::Crit) == "crit");
    CHECK(ghlog::level_name(Level::Error) == "error");
    CHECK(ghlog::level_name(Level::Warn) == "warn");
    CHECK(ghlog::level_name(Level::Notice) == "notice");
    CHECK(ghlog::level_name(Level::Info) == "info");
    CHECK(ghlog::level_name(Level::Debug) == "debug");
}

TEST_CASE("core/log: parse_level") {
    CHECK(ghlog::parse_level("emerg").value() == Level::Emerg);
    CHECK(ghlog::parse_level("alert").value() == Level::Alert);
    CHECK(ghlog::parse_level("crit").value() == Level::Crit);
    CHECK(ghlog::parse_level("error").value() == Level::Error);
    CHECK(ghlog::parse_level("warn").value() == Level::Warn);
    CHECK(ghlog::parse_level("notice").value() == Level::Notice);
    CHECK(ghlog::parse_level("info").value() == Level::Info);
    CHECK(ghlog::parse_level("debug").value() == Level::Debug);
    CHECK(ghlog::parse_level("loud").message() == "invalid log level \"loud\"");
    CHECK(ghlog::parse_level("").message() == "invalid log level \"\"");
    CHECK(ghlog::parse_level("ERROR").message() == "invalid log level \"ERROR\"");
    CHECK(ghlog::parse_level("warning").message() == "invalid log level \"warning\"");
}

TEST_CASE("core/log: the maximum level is the most verbose sink's") {
    ErrorLog l;
    CHECK(l.max_level() == Level::Emerg);
    l.add("stderr", Level::Warn);
    CHECK(l.max_level() == Level::Warn);
    l.add("stderr", Level::Crit);
    CHECK(l.max_level() == Level::Warn);
    l.add("stderr", Level::Info);
    CHECK(l.max_level() == Level::Info);
    CHECK(l.enabled(Level::Emerg));
    CHECK(l.enabled(Level::Info));
    CHECK_FALSE(l.enabled(Level::Debug));
    REQUIRE(l.sinks().size() == 3);
    CHECK(l.sinks()[0].fd == 2);
}

TEST_CASE("core/log: each sink gets what its level admits, in nginx's form") {
    TempDir d;
    ErrorLog l;
    l.add(d / "error.log", Level::Error);
    l.add(d / "info.log", Level::Info);
    REQUIRE(l.open().ok());
    l.write(Level::Error, "disk full");
    l.write(Level::Notice, "started");
    l.write(Level::Debug, "noise");
    std::string err = d.read("error.log"), info = d.read("info.log");
    CHECK(is_full_line(err, "error", "disk full"));
    CHECK(lines(info) == 2);
    CHECK(has_full_line(info, "error", "disk full"));
    CHECK(has_full_line(info, "notice", "started"));
    CHECK(info.find("noise") == std::string::npos);
}

TEST_CASE("core/log: files are appended to, never truncated") {
    TempDir d;
    std::string p = d.write("a.log", "old line\n");
    {
        ErrorLog l;
        l.add(p, Level::Error);
        REQUIRE(l.open().ok());
        l.write(Level::Error, "new");
    }
    std::string text = d.read(p);
    CHECK(text.rfind("old line\n", 0) == 0);
    CHECK(text.find("[error]") != std::string::npos);
    CHECK(text.find("new\n") != std::string::npos);
}

TEST_CASE("core/log: the startup form on stderr, the full form in files") {
    TempDir d;
    ErrorLog l;
    l.add("stderr", Level::Notice);
    l.add(d / "e.log", Level::Notice);
    l.set_startup_form(true);
    REQUIRE(l.open().ok());
    StderrCapture cap;
    l.write(Level::Emerg, "unknown directive \"x\" in /g.conf:3");
    CHECK(cap.text() == "gatehouse: [emerg] unknown directive \"x\" in /g.conf:3\n");
    CHECK(is_full_line(d.read("e.log"), "emerg", "unknown directive \"x\" in /g.conf:3"));
}

TEST_CASE("core/log: error_log stderr gets the full form once configured") {
    ErrorLog l;
    l.add("stderr", Level::Info);
    StderrCapture cap;
    l.write(Level::Info, "hello");
    CHECK(is_full_line(cap.text(), "info", "hello"));
}

TEST_CASE("core/log: error: open names the path and errno") {
    ErrorLog l;
    l.add("/nonexistent/dir/e.log", Level::Error);
    auto s = l.open();
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "open() \"/nonexistent/dir/e.log\" failed (2: No such file or directory)");
    TempDir d;
    ErrorLog dir;
    dir.add(d.path(), Level::Error);
    CHECK(dir.open().message() == "open() \"" + d.path() + "\" failed (21: Is a directory)");
}

TEST_CASE("core/log: a sink that failed to open is skipped") {
    TempDir d;
    ErrorLog l;
    l.add(d / "ok.log", Level::Error);
    l.add("/nonexistent/x.log", Level::Error);
    CHECK_FALSE(l.open().ok());
    l.write(Level::Error, "still written");
    CHECK(d.read("ok.log").find("still written") != std::string::npos);
}

TEST_CASE("core/log: reopen releases a rotated file") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    REQUIRE(l.open().ok());
    int fd = l.sinks()[0].fd;
    l.write(Level::Error, "before");
    REQUIRE(::rename((d / "e.log").c_str(), (d / "e.log.1").c_str()) == 0);
    l.write(Level::Error, "rotated");
    l.reopen();
    CHECK(l.sinks()[0].fd == fd);  // the same descriptor, now on the new file
    l.write(Level::Error, "after");
    std::string old = d.read("e.log.1"), now = d.read("e.log");
    CHECK(old.find("before") != std::string::npos);
    CHECK(old.find("rotated") != std::string::npos);
    CHECK(old.find("after") == std::string::npos);
    CHECK(is_full_line(now, "error", "after"));
}

TEST_CASE("core/log: the destructor closes files, not stderr") {
    TempDir d;
    int fd;
    {
        ErrorLog l;
        l.add("stderr", Level::Error);
        l.add(d / "e.log", Level::Error);
        REQUIRE(l.open().ok());
        fd = l.sinks()[1].fd;
        CHECK(fd > 2);
        CHECK(fd_open(fd));
    }
    CHECK_FALSE(fd_open(fd));
    CHECK(fd_open(2));
}

TEST_CASE("core/log: current() is a stderr notice log until one is set") {
    ghlog::set_error_log(nullptr);
    ErrorLog& def = ghlog::current();
    REQUIRE(def.sinks().size() == 1);
    CHECK(def.sinks()[0].path == "stderr");
    CHECK(def.max_level() == Level::Notice);
    StderrCapture cap;
    GH_LOG(Warn, "a %s b", "x");
    GH_LOG(Info, "not shown");
    CHECK(cap.text() == "gatehouse: [warn] a x b\n");
}

TEST_CASE("core/log: GH_LOG formats, and checks the level first") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Warn);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    int evaluated = 0;
    GH_LOG(Info, "%d", ++evaluated);
    CHECK(evaluated == 0);
    GH_LOG(Warn, "upstream \"%s\" is down, %d tries", "b1", 3);
    CHECK(is_full_line(d.read("e.log"), "warn", R"(upstream "b1" is down, 3 tries)"));
}

TEST_CASE("core/log: GH_LOG_ERRNO appends errno as nginx does") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    GH_LOG_ERRNO(Error, ENOENT, "open() \"%s\" failed", "/x");
    GH_LOG_ERRNO(Crit, 0, "no errno");
    std::string text = d.read("e.log");
    CHECK(has_full_line(text, "error", R"(open() "/x" failed (2: No such file or directory))"));
    CHECK(has_full_line(text, "crit", "no errno"));
}

TEST_CASE("core/log: a long message is cut, not overflowed") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    std::string big(5000, 'x');
    GH_LOG(Error, "%s", big.c_str());
    GH_LOG_ERRNO(Error, EACCES, "%s", big.c_str());
    std::string text = d.read("e.log");
    size_t first = text.find('\n');
    REQUIRE(first != std::string::npos);
    std::string line = text.substr(0, first);
    CHECK(line.size() < 2200);
    CHECK(line.substr(line.size() - 100) == std::string(100, 'x'));
    CHECK(text.find('\n', first + 1) == text.size() - 1);  // exactly two lines
}

// ---- the context of a line (nginx's log->connection and log->handler) --------

namespace {

struct Described {
    std::string tail;
    mutable int calls = 0;
};

void describe_test(const void* self, gatehouse::FixedWriter& out) {
    auto* d = static_cast<const Described*>(self);
    ++d->calls;
    out.put(d->tail);
}

}  // namespace

TEST_CASE("core/log: a Context in scope gives \"*N\" and its tail") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Info);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    Described what{", client: 192.0.2.1, server: localhost"};
    ghlog::Context cx{7, describe_test, &what};
    {
        ghlog::Scope s(&cx);
        GH_LOG_ERRNO(Error, ENOENT, "open() \"%s\" failed", "/x");
    }
    GH_LOG(Error, "after the scope");
    std::string text = d.read("e.log");
    CHECK(has_full_line(text, "error",
                        "*7 open() \"/x\" failed (2: No such file or directory), client: 192.0.2.1, server: localhost"));
    CHECK(has_full_line(text, "error", "after the scope"));
    CHECK(what.calls == 1);
}

TEST_CASE("core/log: the tail is formatted only for lines that are written") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    Described what{", client: x"};
    ghlog::Context cx{3, describe_test, &what};
    ghlog::Scope s(&cx);
    GH_LOG(Info, "not written");
    CHECK(what.calls == 0);
    GH_LOG(Crit, "written");
    CHECK(what.calls == 1);
    CHECK(is_full_line(d.read("e.log"), "crit", "*3 written, client: x"));
}

TEST_CASE("core/log: debug lines get \"*N\" and no tail, as nginx's") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Debug);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    Described what{", client: x"};
    ghlog::Context cx{5, describe_test, &what};
    ghlog::Scope s(&cx);
    ghlog::emit(Level::Debug, 0, "event %d", 1);
    CHECK(what.calls == 0);
    CHECK(is_full_line(d.read("e.log"), "debug", "*5 event 1"));
}

TEST_CASE("core/log: scopes nest and restore; a null scope hides the outer one") {
    Described a{", a"}, b{", b"};
    ghlog::Context ca{1, describe_test, &a}, cb{2, describe_test, &b};
    CHECK(ghlog::context() == nullptr);
    {
        ghlog::Scope sa(&ca);
        CHECK(ghlog::context() == &ca);
        {
            ghlog::Scope sb(&cb);
            CHECK(ghlog::context() == &cb);
            {
                ghlog::Scope none(nullptr);
                CHECK(ghlog::context() == nullptr);
            }
            CHECK(ghlog::context() == &cb);
        }
        CHECK(ghlog::context() == &ca);
    }
    CHECK(ghlog::context() == nullptr);
}

TEST_CASE("core/log: a context without a describer gives \"*N\" alone") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    ghlog::Context cx{12};
    ghlog::Scope s(&cx);
    GH_LOG(Error, "accepted");
    CHECK(is_full_line(d.read("e.log"), "error", "*12 accepted"));
}

TEST_CASE("core/log: the startup form shows no \"*N\"") {
    ErrorLog l;
    l.add("stderr", Level::Notice);
    l.set_startup_form(true);
    StderrCapture cap;
    l.write(Level::Emerg, "x", 9);
    CHECK(cap.text() == "gatehouse: [emerg] x\n");
}

TEST_CASE("core/log: a long tail is cut with the line, never overflowed") {
    TempDir d;
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    Described what{", request: \"" + std::string(5000, 'r') + "\""};
    ghlog::Context cx{1, describe_test, &what};
    ghlog::Scope s(&cx);
    GH_LOG(Error, "%s", std::string(1000, 'm').c_str());
    std::string text = d.read("e.log");
    CHECK(text.size() < 2200);
    CHECK(text.find(std::string(1000, 'm') + ", request: \"rrr") != std::string::npos);
    CHECK(text.back() == '\n');
    CHECK(lines(text) == 1);
}

// ---- syslog sinks -----------------------------------------------------------

namespace {

// A unix datagram socket in `d`, and the target naming it.
struct SyslogServer {
    int fd = -1;
    gatehouse::log::SyslogTarget target;
    explicit SyslogServer(const TempDir& d) {
        std::string path = d / "syslog.sock";
        fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        auto* un = reinterpret_cast<sockaddr_un*>(&target.addr);
        un->sun_family = AF_UNIX;
        std::memcpy(un->sun_path, path.data(), path.size());
        target.addr_len = sizeof(sockaddr_un);
        target.server = "unix:" + path;
        target.nohostname = true;
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(un), sizeof(sockaddr_un)) == 0);
    }
    ~SyslogServer() { ::close(fd); }
    std::string recv() const {
        char b[8192];
        ssize_t n = ::recv(fd, b, sizeof b, 0);
        return n < 0 ? std::string() : std::string(b, static_cast<size_t>(n));
    }
};

}  // namespace

TEST_CASE("core/log: a syslog sink gets the whole line, at the line's severity") {
    TempDir d;
    SyslogServer srv(d);
    ErrorLog l;
    l.add_syslog(srv.target, Level::Warn);
    CHECK(l.max_level() == Level::Warn);
    CHECK(l.sinks()[0].path == "syslog:" + srv.target.server);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    Described what{", client: 192.0.2.1"};
    ghlog::Context cx{4, describe_test, &what};
    {
        ghlog::Scope s(&cx);
        GH_LOG(Error, "open() failed");
    }
    GH_LOG(Info, "not sent");
    GH_LOG(Emerg, "bad");
    std::string m = srv.recv();
    // "<187>Mmm dd hh:mm:ss nginx: " then the file form without its newline.
    REQUIRE(m.rfind("<187>", 0) == 0);
    REQUIRE(m.size() > 21);
    CHECK(m.substr(20, 7) == " nginx:");
    CHECK(is_full_line(m.substr(28) + "\n", "error", "*4 open() failed, client: 192.0.2.1"));
    m = srv.recv();
    REQUIRE(m.rfind("<184>", 0) == 0);
    CHECK(is_full_line(m.substr(28) + "\n", "emerg", "bad"));
    CHECK(srv.recv().empty());
}

TEST_CASE("core/log: a syslog server that is away costs one alert a minute in the other sinks") {
    TempDir d;
    gatehouse::log::SyslogTarget t;
    {
        SyslogServer srv(d);
        t = srv.target;
    }
    ::unlink((d / "syslog.sock").c_str());
    ErrorLog l;
    l.add(d / "e.log", Level::Error);
    l.add_syslog(t, Level::Error);
    REQUIRE(l.open().ok());
    CurrentLog cur(&l);
    GH_LOG(Error, "one");
    GH_LOG(Error, "two");
    std::string text = d.read("e.log");
    CHECK(lines(text) == 3);
    CHECK(has_full_line(text, "error", "one"));
    CHECK(has_full_line(text, "error", "two"));
    // The report itself failed too: counted, not reported again.
    CHECK(has_full_line(text, "alert", "connect() to syslog server \"" + t.server +
                                           "\" failed (2: No such file or directory), lines dropped so far: 1"));
    CHECK(l.sinks()[1].syslog->dropped() == 3);
}
