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
#include "http/log_module.h"
#include "process/listening.h"
#include "process/signals.h"
#include "process/worker.h"

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

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD};

Status install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : kSignals)
        if (sigaction(s, &sa, nullptr) != 0)
            return make_error("sigaction(" + std::to_string(s) + ") failed (" + std::to_string(errno) +
                              ": " + strerror(errno) + ")");
    signal(SIGPIPE, SIG_IGN);
    return {};
}

Status write_pid(const std::string& path) {
    if (path.empty()) return {};
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return make_error("open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")");
    std::string s = std::to_string(::getpid()) + "\n";
    ssize_t n = ::write(fd, s.data(), s.size());
    int e = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(s.size()))
        return make_error("write() \"" + path + "\" failed (" + std::to_string(e) + ": " + strerror(e) + ")");
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

struct Worker {
    pid_t pid = -1;
    int slot = 0;
    bool exiting = false;  // told to quit: not respawned
    const Cycle* cycle = nullptr;
};

// The master's view of what runs: the current generation, its sockets,
// and every worker alive (old generations' workers finishing too).
struct Master {
    std::unique_ptr<Cycle> cycle;
    std::vector<std::unique_ptr<Cycle>> old_cycles;  // kept until their workers exit
    std::vector<Listening> listening;
    std::vector<Worker> workers;
    sigset_t unblocked;
};

int worker_count(const Cycle& c) {
    uint64_t n = *c.core().worker_processes;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? static_cast<uint64_t>(cpus) : 1;
    }
    return static_cast<int>(n);
}

bool spawn(Master& m, int slot) {
    pid_t pid = ::fork();
    if (pid < 0) {
        GH_LOG_ERRNO(Alert, errno, "fork() failed while spawning \"worker process\"");
        return false;
    }
    if (pid == 0) {
        // Signals stay blocked: the worker installs its handlers and lets
        // them in only while waiting (epoll_pwait), so a QUIT arriving now
        // is seen at its first wait rather than lost.
        int rc = worker_main(*m.cycle, m.listening, slot);
        ::_exit(rc);
    }
    GH_LOG(Notice, "start worker process %d", static_cast<int>(pid));
    m.workers.push_back({pid, slot, false, m.cycle.get()});
    return true;
}

void signal_workers(Master& m, int sig, const Cycle* only = nullptr) {
    for (Worker& w : m.workers) {
        if (only && w.cycle != only) continue;
        if (sig == SIGQUIT || sig == SIGTERM) w.exiting = true;
        if (::kill(w.pid, sig) != 0 && errno != ESRCH)
            GH_LOG_ERRNO(Alert, errno, "kill(%d, %d) failed", static_cast<int>(w.pid), sig);
    }
}

void reap(Master& m) {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        for (size_t i = 0; i < m.workers.size(); ++i) {
            if (m.workers[i].pid != pid) continue;
            Worker w = m.workers[i];
            m.workers.erase(m.workers.begin() + static_cast<ptrdiff_t>(i));
            if (WIFSIGNALED(status))
                GH_LOG(Alert, "worker process %d exited on signal %d", static_cast<int>(pid), WTERMSIG(status));
            else if (WEXITSTATUS(status) != 0 || !w.exiting)
                GH_LOG(Alert, "worker process %d exited with code %d", static_cast<int>(pid), WEXITSTATUS(status));
            else
                GH_LOG(Notice, "worker process %d exited with code 0", static_cast<int>(pid));
            // A worker of the current generation that died unasked is
            // replaced at once; exit code 2 means it could not start at all.
            if (!w.exiting && w.cycle == m.cycle.get() && !g_terminate && !g_quit) {
                if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
                    GH_LOG(Alert, "worker process %d could not start, not respawning", static_cast<int>(pid));
                else
                    spawn(m, w.slot);
            }
            break;
        }
    }
    // Old generations whose workers are all gone are released.
    std::erase_if(m.old_cycles, [&](const std::unique_ptr<Cycle>& c) {
        for (const Worker& w : m.workers)
            if (w.cycle == c.get()) return false;
        return true;
    });
}

void reconfigure(Master& m, const Options& o) {
    GH_LOG(Notice, "signal 1 (SIGHUP) received, reconfiguring");
    LoadOptions lo{o.prefix, o.conf_file, o.globals, o.error_log};
    auto next = load_cycle(lo);
    if (!next) {
        // The running generation keeps serving, untouched.
        GH_LOG(Emerg, "%s", next.message().c_str());
        return;
    }
    if (auto s = open_logs(**next); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return;
    }
    std::vector<Listening> old = m.listening;
    auto ls = open_listening(http::http_main((*next)->roots[static_cast<int>(conf::Level::Main)]), &old);
    if (!ls) {
        GH_LOG(Emerg, "%s", ls.message().c_str());
        return;
    }
    // Sockets the new config no longer has are closed once the old workers
    // (which hold their own copies) are told to go.
    close_listening(old);
    Cycle* prev = m.cycle.get();
    m.old_cycles.push_back(std::move(m.cycle));
    m.cycle = std::move(*next);
    m.listening = std::move(*ls);
    log::set_error_log(&m.cycle->error_log);
    for (int i = 0; i < worker_count(*m.cycle); ++i) spawn(m, i);
    signal_workers(m, SIGQUIT, prev);
}

}  // namespace

int run(const Options& o, std::unique_ptr<Cycle> cycle) {
    if (auto s = open_logs(*cycle); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    Master m;
    auto ls = open_listening(http::http_main(cycle->roots[static_cast<int>(conf::Level::Main)]), nullptr);
    if (!ls) {
        GH_LOG(Emerg, "%s", ls.message().c_str());
        return 1;
    }
    m.listening = std::move(*ls);
    CoreConf& cc = cycle->core();
    if (*cc.daemon) {
        if (auto s = daemonize(); !s) {
            GH_LOG(Emerg, "%s", s.message().c_str());
            return 1;
        }
    }
    if (auto s = install_signals(); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    if (auto s = write_pid(*cc.pid); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    log::set_error_log(&cycle->error_log);
    std::string pid_path = *cc.pid;
    m.cycle = std::move(cycle);

    if (!*cc.master_process) {
        // Single process, for debugging: the worker loop runs here.
        GH_LOG(Notice, "gatehouse/" GH_VERSION " started in single-process mode");
        int rc = worker_main(*m.cycle, m.listening, 0);
        if (!pid_path.empty()) ::unlink(pid_path.c_str());
        return rc;
    }

    sigset_t block;
    sigemptyset(&block);
    for (int s : kSignals) sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, &m.unblocked);
    GH_LOG(Notice, "gatehouse/" GH_VERSION " started");
    for (int i = 0; i < worker_count(*m.cycle); ++i) spawn(m, i);

    sigset_t empty;
    sigemptyset(&empty);
    bool stopping = false;
    for (;;) {
        if (!(g_child || g_terminate || g_quit || g_reconfigure || g_reopen)) sigsuspend(&empty);
        if (g_child) {
            g_child = 0;
            reap(m);
        }
        if ((g_terminate || g_quit) && !stopping) {
            stopping = true;
            GH_LOG(Notice, g_terminate ? "exiting (fast shutdown)" : "gracefully shutting down");
            signal_workers(m, g_terminate ? SIGTERM : SIGQUIT);
            close_listening(m.listening);
        }
        if (g_terminate && stopping) {
            // A second TERM after QUIT: make it fast.
            signal_workers(m, SIGTERM);
        }
        if (stopping) {
            g_terminate = 0;
            g_quit = 0;
            if (m.workers.empty()) break;
            continue;
        }
        if (g_reopen) {
            g_reopen = 0;
            GH_LOG(Notice, "reopening logs");
            m.cycle->error_log.reopen();
            http::reopen_access_logs();
            signal_workers(m, SIGUSR1);
        }
        if (g_reconfigure) {
            g_reconfigure = 0;
            reconfigure(m, o);
        }
    }
    GH_LOG(Notice, "exit");
    if (!pid_path.empty()) ::unlink(pid_path.c_str());
    close_listening(m.listening);
    return 0;
}

}  // namespace gatehouse::process
