#include "process/core_module.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <charconv>

#include "conf/registry.h"
#include "conf/syslog.h"

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
    if (p.compare(0, 7, "memory:") == 0) {
        // nginx's cyclic buffer, read with a debugger: not a file named so.
        return cx.error(n, "the memory buffer error log is not supported");
    }
    if (conf::is_syslog(p)) {
        auto t = conf::parse_syslog(p);
        if (!t) return cx.error(n, t.message());
        s.syslog = std::move(*t);
        s.path = p;
    } else {
        s.path = p == "stderr" ? p : cx.full_path(p);
    }
    if (n.args.size() == 2) {
        auto l = log::parse_level(n.args[1].text);
        if (!l) return cx.invalid(n, l.error());
        // Without --with-debug there are no debug messages: "debug" then
        // logs what "info" logs. nginx accepts it the same way, and
        // configurations written for nginx (its own test suite among them)
        // say it.
        s.level = *l;
    }
    c.error_logs.push_back(std::move(s));
    return {};
}

// env NAME[=value]
Status set_env(Ctx& cx, const Node& n, CoreConf& c) {
    const std::string& a = n.args[0].text;
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    if (name.empty()) return cx.error(n, "invalid value \"" + a + "\" in \"env\" directive");
    if (eq != std::string::npos) c.env.emplace_back(name, a.substr(eq + 1));
    return {};
}

// thread_pool name threads=number [max_queue=number]: nginx's pools for
// aio; gatehouse has none to make. Checked as nginx does, then dropped.
Status set_thread_pool(Ctx& cx, const Node& n) {
    bool threads = false;
    for (size_t i = 1; i < n.args.size(); ++i) {
        const std::string& a = n.args[i].text;
        const bool t = a.starts_with("threads="), q = a.starts_with("max_queue=");
        if (!t && !q) return cx.error(n, "invalid parameter \"" + a + "\"");
        auto v = conf::parse_number(std::string_view(a).substr(a.find('=') + 1));
        if (!v || (t && *v == 0)) return cx.error(n, "invalid " + a.substr(0, a.find('=')) + " value \"" + a + "\"");
        threads = threads || t;
    }
    if (!threads) return cx.error(n, "\"" + n.args[0].text + "\" must have \"threads\" parameter");
    return {};
}

// "load_module modules/ngx_http_NAME_module.so": gatehouse has no
// loadable modules. The error says whether NAME is built in (the line can
// go) or missing, rather than calling the directive unknown.
Status set_load_module(Ctx& cx, const Node& n) {
    std::string_view path = n.args[0].text;
    std::string_view base = path.substr(path.rfind('/') == std::string_view::npos ? 0 : path.rfind('/') + 1);
    std::string_view name = base;
    if (name.ends_with(".so")) name.remove_suffix(3);
    if (name.starts_with("ngx_")) name.remove_prefix(4);
    if (name.ends_with("_module")) name.remove_suffix(7);
    if (name == "stream" || name == "mail")
        return cx.error(n, "\"load_module\": the " + std::string(name) +
                               " modules of nginx are not available in gatehouse (\"" + std::string(path) + "\")");
    for (std::string_view kind : {"http_", "stream_", "mail_"})
        if (name.starts_with(kind)) {
            if (kind != "http_")
                return cx.error(n, "\"load_module\": the " + std::string(kind.substr(0, kind.size() - 1)) +
                                       " modules of nginx are not available in gatehouse (\"" + std::string(path) +
                                       "\")");
            name.remove_prefix(kind.size());
        }
    for (const conf::Module* m : modules)
        if (m->name == name)
            return cx.error(n, "\"load_module\": the \"" + std::string(name) +
                                   "\" module is built into gatehouse: remove the directive");
    return cx.error(n, "\"load_module\": the \"" + std::string(name) +
                           "\" module is not available in gatehouse (gatehouse loads no modules, \"" +
                           std::string(path) + "\")");
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

// A mask is written as nginx's: binary, CPU 0 rightmost ("0101" is CPUs 0
// and 2), at most CPU_SETSIZE digits.
Status set_cpu_affinity(Ctx& cx, const Node& n, CoreConf& c) {
    if (c.worker_cpu_affinity) return cx.duplicate(n);
    CpuAffinity a;
    size_t first = 0;
    if (n.args[0].text == "auto") {
        a.automatic = true;
        first = 1;
        if (n.args.size() > 2)
            return cx.error(n, "invalid number of arguments in \"worker_cpu_affinity\" directive");
    }
    for (size_t i = first; i < n.args.size(); ++i) {
        const std::string& m = n.args[i].text;
        if (m.size() > CPU_SETSIZE)
            return cx.error(n, "\"worker_cpu_affinity\" supports up to " + std::to_string(CPU_SETSIZE) +
                                   " CPUs only");
        cpu_set_t set;
        CPU_ZERO(&set);
        for (size_t k = 0; k < m.size(); ++k) {
            char ch = m[m.size() - 1 - k];
            if (ch == '1')
                CPU_SET(k, &set);
            else if (ch != '0')
                return cx.error(n, std::string("invalid character \"") + ch + "\" in \"worker_cpu_affinity\"");
        }
        // sched_setaffinity() refuses an empty set: a worker would run unbound.
        if (CPU_COUNT(&set) == 0)
            return cx.error(n, "mask \"" + m + "\" of \"worker_cpu_affinity\" selects no CPU");
        a.masks.push_back(set);
    }
    c.worker_cpu_affinity = std::move(a);
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"daemon", conf::kMain, conf::Take1, conf::flag<&CoreConf::daemon>()},
    {"load_module", conf::kMain, conf::Take1, conf::custom<set_load_module>()},
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
    {"worker_cpu_affinity", conf::kMain, conf::Take1More, conf::custom<set_cpu_affinity>()},
    {"env", conf::kMain, conf::Take1, conf::custom<set_env>()},
    {"pcre_jit", conf::kMain, conf::Take1, conf::flag<&CoreConf::pcre_jit>()},
    {"thread_pool", conf::kMain, conf::Take23, conf::custom<set_thread_pool>()},
};

}  // namespace

std::optional<cpu_set_t> cpu_set_for(const CpuAffinity& a, int slot, const cpu_set_t& allowed) {
    if (!a.automatic) {
        if (a.masks.empty()) return std::nullopt;
        size_t i = std::min(static_cast<size_t>(slot), a.masks.size() - 1);
        return a.masks[i];
    }
    // "auto": the CPUs of the mask the process may use, one per worker.
    cpu_set_t pool;
    if (a.masks.empty())
        pool = allowed;
    else
        CPU_AND(&pool, &a.masks[0], &allowed);
    int n = CPU_COUNT(&pool);
    if (n == 0) return std::nullopt;
    int want = slot % n;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (!CPU_ISSET(cpu, &pool)) continue;
        if (want-- == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            return one;
        }
    }
    return std::nullopt;
}

Status finish_core_conf(CoreConf& c, const std::string& prefix, const std::string& default_error_log,
                        bool privileged, const CoreDefaults& d) {
    auto under_prefix = [&](std::string_view p) {
        return !p.empty() && p[0] == '/' ? std::string(p) : prefix + std::string(p);
    };
    if (!c.daemon) c.daemon = true;
    if (!c.master_process) c.master_process = true;
    if (!c.worker_processes) c.worker_processes = 1;
    if (!c.pid) c.pid = under_prefix(d.pid);
    if (c.error_logs.empty())
        c.error_logs.push_back({default_error_log.empty() ? under_prefix(d.error_log) : default_error_log,
                                log::Level::Error});
    if (!privileged) return {};
    // As root, workers never keep root: without "user" they run as the
    // configured default, which must then exist here, as with nginx.
    const std::string user = c.user ? *c.user : std::string(d.user);
    const std::string grp = c.user ? *c.group : std::string(d.group);
    const char* why = c.user ? "" : " (the default of \"user\", from ./configure --user and --group)";
    const passwd* pw = ::getpwnam(user.c_str());
    if (!pw) return make_error("getpwnam(\"" + user + "\") failed" + why);
    uid_t uid = pw->pw_uid;
    const group* gr = ::getgrnam(grp.c_str());
    if (!gr) return make_error("getgrnam(\"" + grp + "\") failed" + why);
    c.worker_user = conf::WorkerUser{uid, gr->gr_gid};
    c.worker_user_name = user;
    return {};
}

extern const conf::Module core_module{
    .name = "core",
    .directives = kDirectives,
    .core = conf::level<CoreConf>(),
};

}  // namespace gatehouse::process
