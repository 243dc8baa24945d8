#include "process/worker.h"

#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <string>

#include "core/heap.h"
#include "core/log.h"
#include "event/connection.h"
#include "event/events_module.h"
#include "event/loop.h"
#include "event/pipe.h"
#include "event/worker.h"
#include "process/proctitle.h"

namespace gatehouse::process {

namespace {

volatile sig_atomic_t w_terminate = 0;
volatile sig_atomic_t w_quit = 0;
volatile sig_atomic_t w_reopen = 0;

void on_worker_signal(int sig) {
    switch (sig) {
        case SIGTERM: case SIGINT: w_terminate = 1; break;
        case SIGQUIT: w_quit = 1; break;
        case SIGUSR1: w_reopen = 1; break;
        default: break;
    }
}

struct WorkerState {
    event::Loop* loop = nullptr;
    event::ConnectionTable* table = nullptr;
    std::vector<std::unique_ptr<event::Listener>>* listeners = nullptr;
    const std::vector<Listening>* listening = nullptr;
    bool close_listening = false;  // forked: the sockets are our copies
    const Cycle* cycle = nullptr;
    bool exiting = false;
    event::Timer shutdown_timer;
};

bool live_connections(event::ConnectionTable& t) { return t.free_count() != t.size(); }

void after_iteration(WorkerState* st) {
    if (w_terminate) {
        st->loop->stop();
        return;
    }
    if (w_reopen) {
        w_reopen = 0;
        reopen_logs(*const_cast<Cycle*>(st->cycle), false);
    }
    if (w_quit && !st->exiting) {
        // Graceful: stop accepting (the listening sockets stay open in the
        // master and the new workers, which take the queued connections),
        // let the modules retire their connections without losing a
        // request (http: see retire_connections in http/v1/connection.cc),
        // exit when none is left or at worker_shutdown_timeout.
        st->exiting = true;
        GH_LOG(Notice, "gracefully shutting down");
        // A forked worker (with "master_process off" the one process keeps
        // its command line, as nginx's).
        if (st->close_listening) set_proctitle("worker process is shutting down");
        for (auto& l : *st->listeners) l->stop();
        // Our copies of the listening sockets go too: an address a reload
        // removed is then really closed (and can be bound again by a later
        // reload) once the master's copy is, without waiting for our exit.
        // In single-process mode they are the master's own: kept.
        if (st->close_listening)
            for (const Listening& l : *st->listening) ::close(l.fd);
        quit_worker();
        const auto& cc = st->cycle->core();
        if (cc.worker_shutdown_timeout)
            st->loop->arm(st->shutdown_timer, *cc.worker_shutdown_timeout);
    }
    if (st->exiting && !live_connections(*st->table)) st->loop->stop();
}

// "worker_cpu_affinity": binds this worker to its CPUs, drawn from those
// the master may run on. A failure is logged and the worker runs unbound.
void set_cpu_affinity(const CoreConf& cc, int slot) {
    if (!cc.worker_cpu_affinity) return;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        GH_LOG_ERRNO(Alert, errno, "sched_getaffinity() failed");
        return;
    }
    auto set = cpu_set_for(*cc.worker_cpu_affinity, slot, allowed);
    if (!set) {
        GH_LOG(Alert, "\"worker_cpu_affinity\" leaves worker %d no CPU it may use, not bound", slot);
        return;
    }
    std::string cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &*set)) cpus += (cpus.empty() ? "" : ",") + std::to_string(cpu);
    if (sched_setaffinity(0, sizeof *set, &*set) != 0) {
        GH_LOG_ERRNO(Alert, errno, "sched_setaffinity(%s) failed", cpus.c_str());
        return;
    }
    GH_LOG(Notice, "sched_setaffinity(): using cpu #%s", cpus.c_str());
}

}  // namespace

// A worker of a master running as root becomes the workers' user
// (CoreConf::worker_user). The single process of "master_process off" is
// the master itself: as nginx's, it keeps its user unless "user" says
// otherwise.
Status drop_privileges(const CoreConf& cc, bool forked, uint64_t keep_caps) {
    if (!cc.worker_user || (!forked && !cc.user)) return {};
    const conf::WorkerUser& u = *cc.worker_user;
    auto failed = [](std::string call) {
        int e = errno;
        return make_error(call + " failed (" + std::to_string(e) + ": " + strerror(e) + ")");
    };
    if (::setgid(u.gid) != 0) return failed("setgid(" + std::to_string(u.gid) + ")");
    if (::initgroups(cc.worker_user_name.c_str(), u.gid) != 0)
        return failed("initgroups(" + cc.worker_user_name + ", " + std::to_string(u.gid) + ")");
    // Capabilities the modules want survive the change of user: kept
    // across setuid(), then made the only ones, effective.
    if (keep_caps && u.uid != 0 && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return failed("prctl(PR_SET_KEEPCAPS)");
    if (::setuid(u.uid) != 0) return failed("setuid(" + std::to_string(u.uid) + ")");
    if (keep_caps && u.uid != 0) {
        __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2] = {};
        for (int i = 0; i < 2; ++i) {
            data[i].effective = data[i].permitted = static_cast<uint32_t>(keep_caps >> (32 * i));
        }
        if (::syscall(SYS_capset, &hdr, data) != 0) return failed("capset()");
    }
    return {};
}

int worker_main(const Cycle& cycle, const std::vector<Listening>& ls, int slot, bool forked) {
    struct sigaction sa {};
    sa.sa_handler = on_worker_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) sigaction(s, &sa, nullptr);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);

    const CoreConf& cc = cycle.core();
    for (const auto& [name, value] : cc.env) ::setenv(name.c_str(), value.c_str(), 1);
    // The master read TZ already; localtime_r() would not look again.
    if (!cc.env.empty()) ::tzset();
    if (cc.worker_rlimit_nofile) {
        rlimit rl{static_cast<rlim_t>(*cc.worker_rlimit_nofile), static_cast<rlim_t>(*cc.worker_rlimit_nofile)};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            GH_LOG_ERRNO(Alert, errno, "setrlimit(RLIMIT_NOFILE, %llu) failed",
                         static_cast<unsigned long long>(*cc.worker_rlimit_nofile));
    }
    if (cc.worker_priority && setpriority(PRIO_PROCESS, 0, *cc.worker_priority) != 0)
        GH_LOG_ERRNO(Alert, errno, "setpriority(%d) failed", *cc.worker_priority);
    set_cpu_affinity(cc, slot);
    if (auto s = drop_privileges(cc, forked, worker_capabilities(cycle)); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 2;
    }

    auto loop = event::Loop::create(event::system_clock());
    if (!loop) {
        GH_LOG(Emerg, "%s", loop.message().c_str());
        return 2;
    }
    auto* ev = cycle.conf<event::EventsConf>(event::events_module, conf::Level::Events);
    event::ConnectionTable table(**loop, static_cast<uint32_t>(*ev->worker_connections));
    event::pipes::set_limit(static_cast<size_t>(*ev->worker_pipes));
    event::set_worker(loop->get(), &table);
    if (auto s = init_worker(cycle, slot); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        exit_worker();
        return 2;
    }

    event::ListenerOptions lo;
    lo.accept_batch = ev->multi_accept.value_or(false) ? event::kMultiAccept : 1;
    std::vector<std::unique_ptr<event::Listener>> listeners;
    for (const Listening& l : ls) {
        auto li = std::make_unique<event::Listener>(**loop, table, l.fd, l.spec->accept, l.spec->data, lo);
        if (auto s = li->start(); !s) {
            GH_LOG(Emerg, "%s", s.message().c_str());
            exit_worker();
            return 2;
        }
        listeners.push_back(std::move(li));
    }

    // Signals are blocked except while waiting, so a flag set by a
    // handler is always seen by after_iteration before the next wait.
    sigset_t block, wait_mask;
    sigemptyset(&block);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) sigaddset(&block, s);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) sigdelset(&wait_mask, s);
    (*loop)->set_wait_sigmask(&wait_mask);

    WorkerState st;
    st.loop = loop->get();
    st.table = &table;
    st.listeners = &listeners;
    st.listening = &ls;
    st.close_listening = forked;
    st.cycle = &cycle;
    st.shutdown_timer.cb = {[](void* p) {
                                GH_LOG(Notice, "shutdown timeout");
                                stop_worker();
                                static_cast<WorkerState*>(p)->loop->stop();
                            },
                            &st};
    // After a burst, the modules let go of what only the next one would
    // reuse (the event layer its kept pipes), then the worker gives back
    // what was freed (core/heap.h).
    (*loop)->set_idle({[](void*) {
                           idle_worker();
                           event::pipes::release_kept();
                           release_free_heap();
                       },
                       nullptr},
                      kHeapReleaseIdle);
    (*loop)->run(event::Callback::to<&after_iteration>(&st));

    listeners.clear();
    // Whatever is still open is closed now (after worker_shutdown_timeout
    // the modules ended their requests first, see stop_worker); one more
    // iteration runs the deferred steps. Then the modules let go of what
    // is theirs (pooled connections, probes) and flush their buffers
    // (access_log buffer=), before the table goes.
    for (event::Connection& c : table.slots())
        if (c.is_open() && c.data) table.close(c);
    (*loop)->run_once(0);
    exit_worker();
    (*loop)->run_once(0);
    return 0;
}

}  // namespace gatehouse::process
