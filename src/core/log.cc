#include "core/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <ctime>
#include <iterator>

namespace gatehouse {

void check_failed(const char* expr, const char* file, int line) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "gatehouse: check failed: %s at %s:%d\n", expr, file, line);
    if (n > 0) {
        ssize_t w = ::write(2, buf, static_cast<size_t>(n) < sizeof buf ? n : sizeof buf - 1);
        (void)w;
    }
    abort();
}

namespace log {

namespace {
constexpr std::string_view kNames[] = {"",     "emerg",  "alert", "crit", "error",
                                       "warn", "notice", "info",  "debug"};

ErrorLog& startup_log() {
    static ErrorLog* l = [] {
        static ErrorLog s;
        s.add("stderr", Level::Notice);
        s.set_startup_form(true);
        return &s;
    }();
    return *l;
}

ErrorLog* g_current = nullptr;
// Writing the line that reports a syslog failure: a failure meanwhile is
// only counted (the report may go to the same server).
bool g_reporting = false;

void write_all(int fd, std::string_view s) {
    while (!s.empty()) {
        ssize_t n = ::write(fd, s.data(), s.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // a log that cannot be written loses the message
        }
        s.remove_prefix(static_cast<size_t>(n));
    }
}
}  // namespace

std::string_view level_name(Level l) { return kNames[static_cast<int>(l)]; }

Result<Level> parse_level(std::string_view s) {
    for (int i = 1; i <= 8; ++i)
        if (kNames[i] == s) return static_cast<Level>(i);
    return make_error("invalid log level \"" + std::string(s) + "\"");
}

ErrorLog::~ErrorLog() {
    for (auto& s : sinks_)
        if (s.fd > 2) ::close(s.fd);
}

void ErrorLog::add_syslog(SyslogTarget target, Level level) {
    Sink s;
    s.path = "syslog:" + target.server;
    s.level = level;
    s.syslog = std::make_unique<SyslogPeer>(std::move(target));
    if (level > max_) max_ = level;
    sinks_.push_back(std::move(s));
}

void ErrorLog::add(std::string path, Level level) {
    Sink s;
    s.path = std::move(path);
    s.level = level;
    if (s.path == "stderr") s.fd = 2;
    if (level > max_) max_ = level;
    sinks_.push_back(std::move(s));
}

int open_log_file(const std::string& path, std::optional<uid_t> owner) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || !owner) return fd;
    struct stat st;
    if (::fstat(fd, &st) != 0) return fd;
    if (st.st_uid != *owner && ::fchown(fd, *owner, static_cast<gid_t>(-1)) != 0)
        emit(Level::Alert, errno, "fchown() \"%s\" to uid %u failed", path.c_str(), static_cast<unsigned>(*owner));
    if ((st.st_mode & (S_IRUSR | S_IWUSR)) != (S_IRUSR | S_IWUSR) && ::fchmod(fd, st.st_mode | S_IRUSR | S_IWUSR) != 0)
        emit(Level::Alert, errno, "fchmod() \"%s\" failed", path.c_str());
    return fd;
}

Status ErrorLog::open() {
    for (auto& s : sinks_) {
        // A syslog socket is opened by the process that sends first.
        if (s.fd >= 0 || s.syslog) continue;
        int fd = open_log_file(s.path);
        if (fd < 0) {
            int e = errno;
            return make_error("open() \"" + s.path + "\" failed (" + std::to_string(e) + ": " +
                              strerror(e) + ")");
        }
        s.fd = fd;
    }
    return {};
}

void ErrorLog::reopen(std::optional<uid_t> owner) {
    for (auto& s : sinks_) {
        if (s.fd <= 2) continue;
        int fd = open_log_file(s.path, owner);
        if (fd < 0) {
            int e = errno;
            emit(Level::Alert, e, "reopen() \"%s\" failed", s.path.c_str());
            continue;
        }
        // dup3, not dup2: the descriptor must stay close-on-exec, or a
        // binary upgrade after a reopen hands it to the new master.
        ::dup3(fd, s.fd, O_CLOEXEC);
        ::close(fd);
    }
}

void ErrorLog::write(Level l, std::string_view msg, uint64_t connection) const {
    // The startup form is for a terminal; files always get the timestamped
    // form, as nginx writes its -e log, so that they read as one log.
    std::string brief, full;
    // Syslog servers that did not take the line, reported after it (more
    // than a few at once are counted all the same).
    SyslogPeer* failed[4];
    size_t nfailed = 0;
    for (const auto& s : sinks_) {
        if (l > s.level || (s.fd < 0 && !s.syslog)) continue;
        bool short_form = startup_form_ && s.fd == 2;
        std::string& line = short_form ? brief : full;
        if (line.empty()) {
            char head[96];
            int hn;
            if (short_form) {
                hn = snprintf(head, sizeof head, "gatehouse: [%s] ", level_name(l).data());
            } else {
                time_t now = ::time(nullptr);
                struct tm tm;
                localtime_r(&now, &tm);
                hn = snprintf(head, sizeof head, "%04d/%02d/%02d %02d:%02d:%02d [%s] %d#0: ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, level_name(l).data(), static_cast<int>(::getpid()));
                if (hn > 0 && connection != 0 && static_cast<size_t>(hn) < sizeof head) {
                    int cn = snprintf(head + hn, sizeof head - static_cast<size_t>(hn), "*%llu ",
                                      static_cast<unsigned long long>(connection));
                    if (cn > 0) hn += cn;
                }
            }
            if (hn < 0) return;
            line.reserve(static_cast<size_t>(hn) + msg.size() + 1);
            line.append(head, static_cast<size_t>(hn));
            line.append(msg);
            line.push_back('\n');
        }
        if (!s.syslog) {
            write_all(s.fd, line);
            continue;
        }
        // The whole line but its newline, at the line's own severity
        // (emerg is 0) [nginx].
        std::string_view body(line.data(), line.size() - 1);
        if (!s.syslog->send(static_cast<int>(l) - 1, body) && !g_reporting && nfailed < std::size(failed))
            failed[nfailed++] = s.syslog.get();
    }
    for (size_t i = 0; i < nfailed; ++i) {
        if (!failed[i]->report_due(::time(nullptr))) continue;
        g_reporting = true;
        write(Level::Alert, failed[i]->failure());
        g_reporting = false;
    }
}

ErrorLog& current() { return g_current ? *g_current : startup_log(); }

void set_error_log(ErrorLog* l) { g_current = l; }

void emit(Level l, int err, const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t len = static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf - 1;
    if (err != 0 && len < sizeof buf - 1) {
        int m = snprintf(buf + len, sizeof buf - len, " (%d: %s)", err, strerror(err));
        if (m > 0) len = std::min(sizeof buf - 1, len + static_cast<size_t>(m));
    }
    const Context* cx = context();
    if (cx && cx->describe && l != Level::Debug) {
        FixedWriter w{buf + len, buf + sizeof buf};
        cx->describe(cx->self, w);
        len = static_cast<size_t>(w.p - buf);
    }
    effective().write(l, std::string_view(buf, len), cx ? cx->connection : 0);
}

}  // namespace log
}  // namespace gatehouse
