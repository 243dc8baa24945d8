// The main-context directives that run the process: workers, daemon, pid
// file, error logs, privileges and limits.
#pragma once

#include <sched.h>

#include <optional>
#include <string>
#include <vector>

#include "objs/gh_config.h"

#include "conf/module.h"
#include "core/log.h"

namespace gatehouse::process {

struct ErrorLogSpec {
    std::string path;  // "stderr" or absolute; "syslog:..." as written
    log::Level level = log::Level::Error;
    std::optional<log::SyslogTarget> syslog;  // "error_log syslog:..."
};

// "worker_cpu_affinity": which CPUs each worker may run on.
struct CpuAffinity {
    // "auto": worker i runs on the i-th CPU of masks[0] (every CPU the
    // master may use when no mask is given), round robin.
    bool automatic = false;
    // Otherwise masks[i] binds worker i; workers beyond the last mask get
    // the last mask, as in nginx.
    std::vector<cpu_set_t> masks;
};

// The CPUs of worker `slot` under `a`; `allowed` is the set the process may
// run on (sched_getaffinity), which "auto" draws from. nullopt: the worker
// is not bound (an "auto" mask with no allowed CPU).
std::optional<cpu_set_t> cpu_set_for(const CpuAffinity& a, int slot, const cpu_set_t& allowed);

struct CoreConf {
    std::optional<bool> daemon;                   // "daemon"
    std::optional<bool> master_process;           // "master_process"
    std::optional<uint64_t> worker_processes;     // "worker_processes"; 0: auto
    std::optional<std::string> pid;               // "pid", absolute after merge
    std::vector<ErrorLogSpec> error_logs;         // "error_log", several allowed
    std::optional<std::string> user, group;       // "user"
    // For a master running as root, the workers' user and group ("user",
    // else ./configure's --user and --group), looked up when the
    // configuration is read; unset otherwise: the workers then run as the
    // master's user, and "user" has no effect.
    std::optional<conf::WorkerUser> worker_user;
    std::string worker_user_name;                 // for initgroups()
    std::optional<uint64_t> worker_rlimit_nofile; // "worker_rlimit_nofile"
    std::optional<conf::Duration> worker_shutdown_timeout;  // "worker_shutdown_timeout"
    std::optional<int> worker_priority;           // "worker_priority"
    std::optional<CpuAffinity> worker_cpu_affinity;  // "worker_cpu_affinity"
    // "env NAME=value": set in each worker's environment. "env NAME" alone
    // changes nothing: the environment is not cleared otherwise (nginx
    // keeps only TZ and the names listed).
    std::vector<std::pair<std::string, std::string>> env;
    std::optional<bool> pcre_jit;                 // "pcre_jit": accepted, always JIT
};

extern const conf::Module core_module;

// What a configuration that does not say gets: the paths and the user
// given to ./configure (objs/gh_config.h). A relative path is under the
// prefix.
struct CoreDefaults {
    std::string_view pid = GH_PID_PATH;              // --pid-path
    std::string_view error_log = GH_ERROR_LOG_PATH;  // --error-log-path
    std::string_view user = GH_USER;                 // --user
    std::string_view group = GH_GROUP;               // --group
};

// After the walk: defaults applied, paths made absolute. Without any
// "error_log", the log goes to default_error_log (-e) or d.error_log.
// With `privileged` (the master runs as root), the workers' user and
// group, those of "user" or else d.user and d.group, are looked up into
// worker_user: the error names the one that does not exist [nginx].
Status finish_core_conf(CoreConf& c, const std::string& prefix, const std::string& default_error_log,
                        bool privileged, const CoreDefaults& d = {});

}  // namespace gatehouse::process
