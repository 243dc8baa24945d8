#include "process/helper.h"

#include <signal.h>

#include <cerrno>
#include <ctime>

#include "core/log.h"
#include "process/worker.h"

namespace gatehouse::process {

int helper_main(const Cycle& cycle, const conf::ProcessSpec& p) {
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    // The signals that concern it stay blocked and are taken with
    // sigtimedwait() while it rests: a step never sees a handler run.
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGWINCH}) sigaddset(&set, s);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    // Its files (the cache) are the workers': it runs as they do.
    if (auto s = drop_privileges(cycle.core(), true); !s) {
        GH_LOG(Emerg, "%s", s.message().c_str());
        return 2;
    }
    for (;;) {
        const std::chrono::milliseconds rest = p.step(p.data);
        if (rest.count() < 0) return 0;
        timespec ts{static_cast<time_t>(rest.count() / 1000), static_cast<long>(rest.count() % 1000) * 1000000};
        for (;;) {
            siginfo_t info;
            int sig = ::sigtimedwait(&set, &info, &ts);
            if (sig < 0) {
                // EAGAIN: rested enough; EINTR: another signal, rest on
                // (the remaining time is not kept: a step a little early
                // is harmless).
                if (errno == EINTR) continue;
                break;
            }
            if (sig == SIGUSR1) {
                reopen_logs(const_cast<Cycle&>(cycle), false);
                continue;
            }
            if (sig == SIGWINCH) continue;  // the workers' business
            GH_LOG(Notice, "exiting");
            return 0;
        }
    }
}

}  // namespace gatehouse::process
