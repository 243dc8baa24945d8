#include "process/core_module.h"

#include <grp.h>
#include <pwd.h>

#include <charconv>

#include "conf/registry.h"

namespace gatehouse::process {

namespace {

using conf::Ctx;
using conf::Node;

Status set_worker_processes(Ctx& cx, const Node& n, CoreConf& c) {
    if (c.worker_processes) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "auto") {
        c.worker_processes = 0;
        return {};
    }
    auto num = conf::parse_number(v, 1024);
    if (!num || *num == 0)
        return cx.invalid(n, make_error("invalid value \"" + v + "\", it must be a number from 1 to 1024 or \"auto\""));
    c.worker_processes = *num;
    return {};
}

Status set_error_log(Ctx& cx, const Node& n, CoreConf& c) {
    ErrorLogSpec s;
    const std::string& p = n.args[0].text;
    if (p.empty()) return cx.error(n, "empty path in \"error_log\" directive");
    s.path = p == "stderr" ? p : cx.full_path(p);
    if (n.args.size() == 2) {
        auto l = log::parse_level(n.args[1].text);
        if (!l) return cx.invalid(n, l.error());
#if !GH_DEBUG
        if (*l == log::Level::Debug)
            return cx.error(n, "the debug log level needs a build with --with-debug");
#endif
        s.level = *l;
    }
    c.error_logs.push_back(std::move(s));
    return {};
}

Status set_pid(Ctx& cx, const Node& n, CoreConf& c) {
    if (c.pid) return cx.duplicate(n);
    c.pid = n.args[0].text == "off" ? std::string() : cx.full_path(n.args[0].text);
    return {};
}

Status set_user(Ctx& cx, const Node& n, CoreConf& c) {
    if (c.user) return cx.duplicate(n);
    c.user = n.args[0].text;
    c.group = n.args.size() == 2 ? n.args[1].text : n.args[0].text;
    // Checked now, in the master, so that a typo fails "-t" rather than
    // every worker at start.
    if (!::getpwnam(c.user->c_str())) return cx.error(n, "getpwnam(\"" + *c.user + "\") failed");
    if (!::getgrnam(c.group->c_str())) return cx.error(n, "getgrnam(\"" + *c.group + "\") failed");
    return {};
}

Status set_priority(Ctx& cx, const Node& n, CoreConf& c) {
    if (c.worker_priority) return cx.duplicate(n);
    std::string_view v = n.args[0].text;
    int p = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), p);
    if (ec != std::errc() || ptr != v.data() + v.size() || p < -20 || p > 19)
        return cx.invalid(n, make_error("invalid priority \"" + std::string(v) + "\", it must be from -20 to 19"));
    c.worker_priority = p;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"daemon", conf::kMain, conf::Take1, conf::flag<&CoreConf::daemon>()},
    {"master_process", conf::kMain, conf::Take1, conf::flag<&CoreConf::master_process>()},
    {"worker_processes", conf::kMain, conf::Take1, conf::custom<set_worker_processes>()},
    {"pid", conf::kMain, conf::Take1, conf::custom<set_pid>()},
    {"error_log", conf::kMain, conf::Take12, conf::custom<set_error_log>()},
    {"user", conf::kMain, conf::Take12, conf::custom<set_user>()},
    {"worker_rlimit_nofile", conf::kMain, conf::Take1,
     conf::number<&CoreConf::worker_rlimit_nofile>()},
    {"worker_shutdown_timeout", conf::kMain, conf::Take1,
     conf::duration<&CoreConf::worker_shutdown_timeout>()},
    {"worker_priority", conf::kMain, conf::Take1, conf::custom<set_priority>()},
};

}  // namespace

void finish_core_conf(CoreConf& c, const std::string& prefix, const std::string& default_error_log) {
    if (!c.daemon) c.daemon = true;
    if (!c.master_process) c.master_process = true;
    if (!c.worker_processes) c.worker_processes = 1;
    if (!c.pid) c.pid = prefix + GH_PID_PATH;
    if (c.error_logs.empty())
        c.error_logs.push_back({default_error_log.empty() ? prefix + GH_ERROR_LOG_PATH : default_error_log,
                                log::Level::Error});
}

extern const conf::Module core_module{
    .name = "core",
    .directives = kDirectives,
    .core = conf::level<CoreConf>(),
};

}  // namespace gatehouse::process
