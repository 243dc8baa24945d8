#include "process/master.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "core/log.h"
#include "process/helper.h"
#include "process/listening.h"
#include "process/proctitle.h"
#include "process/signals.h"
#include "process/worker.h"

namespace gatehouse::process {

namespace {

volatile sig_atomic_t g_terminate = 0;
volatile sig_atomic_t g_quit = 0;
volatile sig_atomic_t g_reconfigure = 0;
volatile sig_atomic_t g_reopen = 0;
volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_change_binary = 0;
volatile sig_atomic_t g_noaccept = 0;

void on_signal(int sig) {
    switch (sig) {
        case SIGTERM: case SIGINT: g_terminate = 1; break;
        case SIGQUIT: g_quit = 1; break;
        case SIGHUP: g_reconfigure = 1; break;
        case SIGUSR1: g_reopen = 1; break;
        case SIGUSR2: g_change_binary = 1; break;
        case SIGWINCH: g_noaccept = 1; break;
        case SIGCHLD: g_child = 1; break;
        default: break;
    }
}

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};

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

// Standard input and output become /dev/null. Standard error becomes the
// first error_log file, where what a library writes there is kept [nginx
// ngx_log_redirect_stderr], unless the log itself goes to stderr; a log
// without a file or stderr (syslog only) gets /dev/null there too. Either
// way the daemon holds nothing of the terminal or pipe it was started
// from, so "gatehouse | tail" ends when the starting process does.
Status daemonize(const log::ErrorLog& el) {
    pid_t p = ::fork();
    if (p < 0) return make_error(std::string("fork() failed (") + strerror(errno) + ")");
    if (p > 0) ::_exit(0);
    if (::setsid() < 0) return make_error(std::string("setsid() failed (") + strerror(errno) + ")");
    ::umask(022);
    int fd = ::open("/dev/null", O_RDWR);
    if (fd < 0) return make_error(std::string("open(\"/dev/null\") failed (") + strerror(errno) + ")");
    ::dup2(fd, 0);
    ::dup2(fd, 1);
    int err_to = fd;
    for (const log::Sink& s : el.sinks()) {
        if (s.fd == 2) {
            err_to = -1;
            break;
        }
        if (s.fd > 2 && err_to == fd) err_to = s.fd;
    }
    if (err_to >= 0) ::dup2(err_to, 2);
    if (fd > 2) ::close(fd);
    return {};
}

struct Worker {
    pid_t pid = -1;
    int slot = 0;
    bool exiting = false;  // told to quit: not respawned
    const Cycle* cycle = nullptr;
    int helper = -1;       // not a worker: cycle->processes[helper]
};

// "worker process", or the helper's title, for log lines.
std::string_view title_of(const Worker& w) {
    return w.helper >= 0 ? w.cycle->processes[static_cast<size_t>(w.helper)].title : "worker process";
}

// The master's view of what runs: the current generation, its sockets,
// and every worker alive (old generations' workers finishing too).
struct Master {
    std::unique_ptr<Cycle> cycle;
    std::vector<std::unique_ptr<Cycle>> old_cycles;  // kept until their workers exit
    std::vector<Listening> listening;
    std::vector<Worker> workers;
    sigset_t unblocked;
    std::string pid_path;      // "" with "pid off"
    // Binary upgrade (USR2), as nginx's: the new master is our child.
    pid_t new_binary = 0;
    // WINCH stopped our workers; HUP or the new binary's exit restarts them.
    bool noaccepting = false;
    bool stopping = false;  // QUIT or TERM received: waiting for the workers
    // Started by an old master (GATEHOUSE was set): its pid, our parent
    // until it exits; USR2 is refused while it runs.
    pid_t old_master = 0;
};

std::string oldbin_path(const Master& m) { return m.pid_path + ".oldbin"; }

int worker_count(const Cycle& c) {
    uint64_t n = *c.core().worker_processes;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? static_cast<uint64_t>(cpus) : 1;
    }
    return static_cast<int>(n);
}

bool spawn(Master& m, int slot);
bool spawn_helper(Master& m, int index);

// A whole set of workers for the current generation, then the processes
// its modules asked for.
void start_workers(Master& m) {
    const int n = worker_count(*m.cycle);
    const auto& aff = m.cycle->core().worker_cpu_affinity;
    if (aff && !aff->automatic && aff->masks.size() != static_cast<size_t>(n))
        GH_LOG(Warn, "the number of \"worker_processes\" is not equal to the number of \"worker_cpu_affinity\" "
                     "masks, using last mask for remaining worker processes");
    for (int i = 0; i < n; ++i) spawn(m, i);
    for (size_t i = 0; i < m.cycle->processes.size(); ++i) spawn_helper(m, static_cast<int>(i));
}

bool spawn_helper(Master& m, int index) {
    const conf::ProcessSpec& p = m.cycle->processes[static_cast<size_t>(index)];
    pid_t pid = ::fork();
    if (pid < 0) {
        GH_LOG_ERRNO(Alert, errno, "fork() failed while spawning \"%.*s\"", static_cast<int>(p.title.size()),
                     p.title.data());
        return false;
    }
    if (pid == 0) {
        m.old_cycles.clear();
        set_proctitle(std::string(p.title));
        ::_exit(helper_main(*m.cycle, p));
    }
    GH_LOG(Notice, "start %.*s %d", static_cast<int>(p.title.size()), p.title.data(), static_cast<int>(pid));
    m.workers.push_back({pid, -1, false, m.cycle.get(), index});
    return true;
}

bool spawn(Master& m, int slot) {
    pid_t pid = ::fork();
    if (pid < 0) {
        GH_LOG_ERRNO(Alert, errno, "fork() failed while spawning \"worker process\"");
        return false;
    }
    if (pid == 0) {
        // Older generations, kept by the master for their own workers, are
        // not this worker's to inherit: their log files are closed and
        // their zones unmapped here, not held for its whole life [nginx
        // closes them in the master at the reload].
        m.old_cycles.clear();
        set_proctitle("worker process");
        // Signals stay blocked: the worker installs its handlers and lets
        // them in only while waiting (epoll_pwait), so a QUIT arriving now
        // is seen at its first wait rather than lost.
        int rc = worker_main(*m.cycle, m.listening, slot, true);
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

// The new binary's master exited: an upgrade rolled back (or failed to
// start). The pid file becomes ours again and, if WINCH had stopped our
// workers, they start again [nginx ngx_reap_children].
void new_binary_exited(Master& m, pid_t pid, int status) {
    if (WIFSIGNALED(status))
        GH_LOG(Alert, "new binary process %d exited on signal %d", static_cast<int>(pid), WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        GH_LOG(Alert, "new binary process %d exited with code %d", static_cast<int>(pid), WEXITSTATUS(status));
    else
        GH_LOG(Notice, "new binary process %d exited with code 0", static_cast<int>(pid));
    m.new_binary = 0;
    if (!m.pid_path.empty() && ::rename(oldbin_path(m).c_str(), m.pid_path.c_str()) != 0)
        GH_LOG_ERRNO(Alert, errno, "rename() \"%s\" back to \"%s\" failed after the new binary process %d exited",
                     oldbin_path(m).c_str(), m.pid_path.c_str(), static_cast<int>(pid));
    if (m.noaccepting && !m.stopping) {
        m.noaccepting = false;
        start_workers(m);
    }
}

void reap(Master& m) {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        if (pid == m.new_binary) {
            new_binary_exited(m, pid, status);
            continue;
        }
        for (size_t i = 0; i < m.workers.size(); ++i) {
            if (m.workers[i].pid != pid) continue;
            Worker w = m.workers[i];
            m.workers.erase(m.workers.begin() + static_cast<ptrdiff_t>(i));
            // Code 0 is a clean exit, told or not: at shutdown a signal to
            // the whole process group (Ctrl-C, systemd's stop) reaches the
            // workers before the master marks them exiting. A signal is a
            // crash or a kill [nginx logs both so]; another code, a worker
            // that failed (nginx says notice; an operator wants to know).
            const std::string_view title = title_of(w);
            const int tl = static_cast<int>(title.size());
            if (WIFSIGNALED(status))
                GH_LOG(Alert, "%.*s %d exited on signal %d%s", tl, title.data(), static_cast<int>(pid),
                       WTERMSIG(status), WCOREDUMP(status) ? " (core dumped)" : "");
            else if (WEXITSTATUS(status) != 0)
                GH_LOG(Alert, "%.*s %d exited with code %d", tl, title.data(), static_cast<int>(pid),
                       WEXITSTATUS(status));
            else
                GH_LOG(Notice, "%.*s %d exited with code 0", tl, title.data(), static_cast<int>(pid));
            if (w.helper >= 0) {
                // A helper that is done (code 0) stays done; one that
                // died is replaced, as a worker is.
                const bool died = WIFSIGNALED(status) || WEXITSTATUS(status) != 0;
                const auto& spec = w.cycle->processes[static_cast<size_t>(w.helper)];
                if (died && spec.respawn && !w.exiting && w.cycle == m.cycle.get() && !g_terminate && !g_quit &&
                    !m.stopping) {
                    if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
                        GH_LOG(Alert, "%.*s %d could not start, not respawning", tl, title.data(),
                               static_cast<int>(pid));
                    else
                        spawn_helper(m, w.helper);
                }
                break;
            }
            // A worker of the current generation that died unasked is
            // replaced at once; exit code 2 means it could not start at all.
            if (!w.exiting && w.cycle == m.cycle.get() && !g_terminate && !g_quit && !m.noaccepting && !m.stopping) {
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

bool reconfigure(Master& m, const Options& o) {
    GH_LOG(Notice, "signal 1 (SIGHUP) received, reconfiguring");
    LoadOptions lo{o.prefix, o.conf_file, o.globals, o.error_log};
    auto next = load_cycle(lo);
    if (!next) {
        // The running generation keeps serving, untouched.
        GH_LOG(Emerg, "%s", next.message().c_str());
        return false;
    }
    if (auto s = open_logs(**next); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return false;
    }
    if (auto s = init_master(**next); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return false;
    }
    std::vector<Listening> old = m.listening;
    auto ls = open_listening((*next)->listens, &old);
    if (!ls) {
        GH_LOG(Emerg, "%s", ls.message().c_str());
        return false;
    }
    // Sockets the new config no longer has are closed once the old workers
    // (which hold their own copies) are told to go.
    remove_unix_socket_files(old);
    close_listening(old);
    Cycle* prev = m.cycle.get();
    m.old_cycles.push_back(std::move(m.cycle));
    m.cycle = std::move(*next);
    m.listening = std::move(*ls);
    log::set_error_log(&m.cycle->error_log);
    start_workers(m);
    signal_workers(m, SIGQUIT, prev);
    return true;
}

// Marks every descriptor above stderr close-on-exec, so that the new
// binary gets exactly the listening sockets (and stdio). In the forked
// child, before exec.
void cloexec_all() {
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
    // Kernels before 5.11: one by one.
    for (int fd = 3; fd < 65536; ++fd) {
        int fl = ::fcntl(fd, F_GETFD);
        if (fl >= 0) ::fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
}

// USR2: runs the program again as a new master that adopts our listening
// sockets, passed by descriptor in GATEHOUSE="fd;fd;" [nginx
// ngx_exec_new_binary]. Our pid file is renamed to <pid>.oldbin first, so
// the new master can write its own; both sets of workers then serve until
// the operator sends WINCH and QUIT to us (upgrade done) or HUP to us and
// QUIT to the new master (rollback, see new_binary_exited()).
void exec_new_binary(Master& m, const Options& o) {
    GH_LOG(Notice, "signal 12 (SIGUSR2) received, changing binary");
    if (o.argv.empty()) return;
    if (!m.pid_path.empty() && ::rename(m.pid_path.c_str(), oldbin_path(m).c_str()) != 0) {
        GH_LOG_ERRNO(Alert, errno, "rename() \"%s\" to \"%s\" failed, the binary is not changed",
                     m.pid_path.c_str(), oldbin_path(m).c_str());
        return;
    }
    // Everything the child needs is built before fork(), so that it only
    // makes system calls (and, the master having one thread, may log if
    // exec fails). A GATEHOUSE we inherited ourselves is replaced.
    const std::string name = std::string(kInheritEnv) + "=";
    std::vector<std::string> env_text;
    for (char** e = environ; *e; ++e)
        if (strncmp(*e, name.c_str(), name.size()) != 0) env_text.emplace_back(*e);
    env_text.push_back(name + listening_env(m.listening));
    std::vector<char*> envp, argv;
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = o.argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_t pid = ::fork();
    if (pid < 0) {
        GH_LOG_ERRNO(Alert, errno, "fork() failed while executing new binary process \"%s\"", argv[0]);
        if (!m.pid_path.empty() && ::rename(oldbin_path(m).c_str(), m.pid_path.c_str()) != 0)
            GH_LOG_ERRNO(Alert, errno, "rename() \"%s\" back to \"%s\" failed", oldbin_path(m).c_str(),
                         m.pid_path.c_str());
        return;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &m.unblocked, nullptr);
        cloexec_all();
        for (const Listening& l : m.listening) ::fcntl(l.fd, F_SETFD, 0);
        ::execvpe(argv[0], argv.data(), envp.data());
        GH_LOG_ERRNO(Alert, errno, "execve() failed while executing new binary process \"%s\"", argv[0]);
        ::_exit(1);
    }
    GH_LOG(Notice, "start new binary process %d", static_cast<int>(pid));
    m.new_binary = pid;
}

// A terminal sends WINCH to its foreground process group when resized:
// there the signal means nothing (nginx honours WINCH only as a daemon).
bool terminal_foreground() {
    int fd = ::open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return false;
    pid_t fg = ::tcgetpgrp(fd);
    ::close(fd);
    return fg == ::getpgrp();
}

}  // namespace

int run(const Options& o, std::unique_ptr<Cycle> cycle) {
    if (auto s = open_logs(*cycle); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    if (auto s = init_master(*cycle); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 1;
    }
    Master m;
    // A binary upgrade: the old master passed its listening sockets.
    std::vector<Listening> inherited;
    const char* env = ::getenv(kInheritEnv);
    const bool upgraded = env != nullptr;
    std::string env_text = upgraded ? env : "";
    if (upgraded) {
        inherited = inherit_listening(env);
        ::unsetenv(kInheritEnv);
        m.old_master = ::getppid();
    }
    auto ls = open_listening(cycle->listens, upgraded ? &inherited : nullptr);
    if (!ls) {
        GH_LOG(Emerg, "%s", ls.message().c_str());
        return 1;
    }
    // Inherited sockets the configuration no longer has: the old master
    // keeps its copies for its own workers.
    for (const Listening& l : inherited) GH_LOG(Notice, "closing inherited socket %s", l.text.c_str());
    close_listening(inherited);
    m.listening = std::move(*ls);
    CoreConf& cc = cycle->core();
    // The new binary of an upgrade stays the old master's child (nginx too):
    // the old master watches it to roll back.
    if (*cc.daemon && !upgraded) {
        if (auto s = daemonize(cycle->error_log); !s) {
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
    if (upgraded) GH_LOG(Notice, "using inherited sockets from \"%s\"", env_text.c_str());
    std::string pid_path = *cc.pid;
    m.pid_path = pid_path;
    m.cycle = std::move(cycle);

    if (!*cc.master_process) {
        // Single process, for debugging: the worker loop runs here.
        GH_LOG(Notice, "gatehouse/" GH_VERSION " started in single-process mode");
        int rc = worker_main(*m.cycle, m.listening, 0, false);
        remove_unix_socket_files(m.listening);
        if (!pid_path.empty()) ::unlink(pid_path.c_str());
        return rc;
    }

    sigset_t block;
    sigemptyset(&block);
    for (int s : kSignals) sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, &m.unblocked);
    GH_LOG(Notice, "gatehouse/" GH_VERSION " started");
    // "gatehouse: master process /usr/sbin/gatehouse -c ...": the command
    // line as given, as nginx shows it (ps, /proc/PID/cmdline).
    std::string title = "master process";
    for (const std::string& a : o.argv) title += " " + a;
    set_proctitle(title);
    start_workers(m);

    sigset_t empty;
    sigemptyset(&empty);
    bool& stopping = m.stopping;
    for (;;) {
        if (!(g_child || g_terminate || g_quit || g_reconfigure || g_reopen || g_change_binary || g_noaccept))
            sigsuspend(&empty);
        if (g_child) {
            g_child = 0;
            reap(m);
        }
        if ((g_terminate || g_quit) && !stopping) {
            stopping = true;
            GH_LOG(Notice, g_terminate ? "exiting (fast shutdown)" : "gracefully shutting down");
            signal_workers(m, g_terminate ? SIGTERM : SIGQUIT);
            // A new binary serves the sockets now: their files stay.
            if (m.new_binary <= 0) remove_unix_socket_files(m.listening);
            close_listening(m.listening);
        }
        if (g_terminate && stopping) {
            // A second TERM after QUIT: make it fast.
            signal_workers(m, SIGTERM);
        }
        if (stopping) {
            g_terminate = 0;
            g_quit = 0;
            g_change_binary = 0;
            g_noaccept = 0;
            if (m.workers.empty()) break;
            continue;
        }
        if (g_reopen) {
            g_reopen = 0;
            GH_LOG(Notice, "reopening logs");
            reopen_logs(*m.cycle, true);
            signal_workers(m, SIGUSR1);
        }
        if (g_reconfigure) {
            g_reconfigure = 0;
            if (m.new_binary > 0) {
                // The rollback of an upgrade: the old binary's workers start
                // again with the configuration it has, not re-read [nginx].
                if (m.noaccepting) {
                    GH_LOG(Notice, "signal 1 (SIGHUP) received, starting worker processes "
                                   "without reading the configuration");
                    m.noaccepting = false;
                    start_workers(m);
                } else {
                    GH_LOG(Notice, "signal 1 (SIGHUP) received while the new binary process %d runs, "
                                   "worker processes are running: nothing to do",
                           static_cast<int>(m.new_binary));
                }
            } else if (!reconfigure(m, o) && m.noaccepting) {
                // After WINCH with no new binary: an invalid configuration
                // still brings the workers back, with the running one.
                start_workers(m);
            }
            if (m.noaccepting && m.new_binary == 0) m.noaccepting = false;
        }
        if (g_change_binary) {
            g_change_binary = 0;
            if (m.new_binary > 0 || (m.old_master > 1 && ::getppid() == m.old_master)) {
                // One upgrade at a time: the old master of this one, or its
                // new binary, must exit first.
                GH_LOG(Notice, "signal 12 (SIGUSR2) received, ignoring: you should shutdown or terminate before "
                               "either old or new binary's process");
            } else {
                exec_new_binary(m, o);
            }
        }
        if (g_noaccept) {
            g_noaccept = 0;
            if (terminal_foreground()) {
                GH_LOG(Notice, "signal 28 (SIGWINCH) received, ignoring: the master runs in the foreground "
                               "of a terminal");
            } else if (!m.noaccepting) {
                GH_LOG(Notice, "signal 28 (SIGWINCH) received, gracefully shutting down worker processes");
                m.noaccepting = true;
                signal_workers(m, SIGQUIT);
            }
        }
    }
    GH_LOG(Notice, "exit");
    // With a new binary running, our pid file is the .oldbin one.
    if (!pid_path.empty()) ::unlink(m.new_binary > 0 ? oldbin_path(m).c_str() : pid_path.c_str());
    close_listening(m.listening);
    return 0;
}

}  // namespace gatehouse::process
