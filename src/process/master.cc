#include "process/master.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "core/log.h"
#include "process/signals.h"

namespace gatehouse::process {

namespace {

volatile sig_atomic_t g_terminate = 0;
volatile sig_atomic_t g_quit = 0;
volatile sig_atomic_t g_reconfigure = 0;
volatile sig_atomic_t g_reopen = 0;
volatile sig_atomic_t g_child = 0;

void on_signal(int sig) {
    switch (sig) {
        case SIGTERM: case SIGINT: g_terminate = 1; break;
        case SIGQUIT: g_quit = 1; break;
        case SIGHUP: g_reconfigure = 1; break;
        case SIGUSR1: g_reopen = 1; break;
        case SIGCHLD: g_child = 1; break;
        default: break;
    }
}

Status install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD}) {
        if (sigaction(s, &sa, nullptr) != 0)
            return make_error("sigaction(" + std::to_string(s) + ") failed (" +
                              std::to_string(errno) + ": " + strerror(errno) + ")");
    }
    signal(SIGPIPE, SIG_IGN);
    return {};
}

Status write_pid(const std::string& path) {
    if (path.empty()) return {};
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return make_error("open() \"" + path + "\" failed (" + std::to_string(errno) + ": " +
                          strerror(errno) + ")");
    std::string s = std::to_string(::getpid()) + "\n";
    ssize_t n = ::write(fd, s.data(), s.size());
    int e = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(s.size()))
        return make_error("write() \"" + path + "\" failed (" + std::to_string(e) + ": " +
                          strerror(e) + ")");
    return {};
}

Status daemonize() {
    pid_t p = ::fork();
    if (p < 0) return make_error(std::string("fork() failed (") + strerror(errno) + ")");
    if (p > 0) ::_exit(0);
    if (::setsid() < 0) return make_error(std::string("setsid() failed (") + strerror(errno) + ")");
    ::umask(022);
    int fd = ::open("/dev/null", O_RDWR);
    if (fd < 0) return make_error(std::string("open(\"/dev/null\") failed (") + strerror(errno) + ")");
    ::dup2(fd, 0);
    ::dup2(fd, 1);
    if (fd > 1) ::close(fd);
    return {};
}

}  // namespace

int run(const Options& o, std::unique_ptr<Cycle> cycle) {
    (void)o;
    if (auto s = open_logs(*cycle); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    CoreConf& cc = cycle->core();
    if (*cc.daemon) {
        if (auto s = daemonize(); !s) {
            GH_LOG(Emerg, "%s", s.message().c_str());
            return 1;
        }
    }
    log::set_error_log(&cycle->error_log);
    if (auto s = install_signals(); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    if (auto s = write_pid(*cc.pid); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    GH_LOG(Notice, "gatehouse/" GH_VERSION " started");

    sigset_t block, empty;
    sigemptyset(&block);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD}) sigaddset(&block, s);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &block, nullptr);
    for (;;) {
        sigsuspend(&empty);
        if (g_terminate || g_quit) break;
        if (g_reopen) {
            g_reopen = 0;
            GH_LOG(Notice, "reopening logs");
            cycle->error_log.reopen();
        }
        if (g_reconfigure) {
            g_reconfigure = 0;
            GH_LOG(Notice, "reconfiguring");
        }
        g_child = 0;
    }
    GH_LOG(Notice, "exiting");
    if (!cc.pid->empty()) ::unlink(cc.pid->c_str());
    return 0;
}

}  // namespace gatehouse::process
