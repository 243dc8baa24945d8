// The main-context directives that run the process: workers, daemon, pid
// file, error logs, privileges and limits.
#pragma once

#include <sched.h>

#include <optional>
#include <string>
#include <vector>

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
    std::optional<uint64_t> worker_rlimit_nofile; // "worker_rlimit_nofile"
    std::optional<conf::Duration> worker_shutdown_timeout;  // "worker_shutdown_timeout"
    std::optional<int> worker_priority;           // "worker_priority"
    std::optional<CpuAffinity> worker_cpu_affinity;  // "worker_cpu_affinity"
};

extern const conf::Module core_module;

// After the walk: defaults applied, paths made absolute. Without any
// "error_log", the log goes to default_error_log (-e) or logs/error.log.
void finish_core_conf(CoreConf& c, const std::string& prefix, const std::string& default_error_log);

}  // namespace gatehouse::process
