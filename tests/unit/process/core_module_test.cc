// Tests of src/process/core_module.h: "worker_cpu_affinity" (masks, auto,
// one row per error message) and cpu_set_for(), which picks each worker's
// CPUs.
#include "process/core_module.h"

#include <doctest/doctest.h>

#include <string>

#include "conf/parser.h"
#include "conf/registry.h"

using gatehouse::Arena;
using gatehouse::Status;
using gatehouse::process::CoreConf;
using gatehouse::process::CpuAffinity;
using gatehouse::process::cpu_set_for;
namespace conf = gatehouse::conf;

namespace {

struct Walk {
    Arena arena;
    conf::Tree tree;
    conf::Ctx cx{arena, "/p/", "/p/conf/"};

    Walk() { gatehouse::init_modules(); }

    Status run(std::string text) {
        conf::ParseOptions po;
        po.conf_dir = cx.conf_dir();
        if (auto s = conf::parse_text("t.conf", std::move(text), po, tree); !s) return s;
        cx.install_level(conf::Level::Core, cx.create_level(conf::Level::Core));
        return cx.walk(tree.nodes, conf::kMain);
    }
    const CoreConf& core() const { return *cx.conf<CoreConf>(gatehouse::process::core_module, conf::Level::Core); }
};

std::string error_of(std::string text) {
    Walk w;
    auto s = w.run(std::move(text));
    REQUIRE_FALSE(s.ok());
    return s.message();
}

cpu_set_t cpus(std::initializer_list<int> list) {
    cpu_set_t s;
    CPU_ZERO(&s);
    for (int c : list) CPU_SET(c, &s);
    return s;
}

std::string text(const std::optional<cpu_set_t>& s) {
    if (!s) return "none";
    std::string out;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &*s)) out += (out.empty() ? "" : ",") + std::to_string(c);
    return out;
}

}  // namespace

TEST_CASE("process/core_module: worker_cpu_affinity masks, CPU 0 rightmost") {
    Walk w;
    REQUIRE(w.run("worker_cpu_affinity 0001 0010 0101 1000000000000000000000000000000000000000000000000000000000000000000000;").ok());
    const auto& a = w.core().worker_cpu_affinity;
    REQUIRE(a.has_value());
    CHECK_FALSE(a->automatic);
    REQUIRE(a->masks.size() == 4);
    CHECK(text(a->masks[0]) == "0");
    CHECK(text(a->masks[1]) == "1");
    CHECK(text(a->masks[2]) == "0,2");
    CHECK(text(a->masks[3]) == "69");
}

TEST_CASE("process/core_module: worker_cpu_affinity auto, with and without a mask") {
    Walk w;
    REQUIRE(w.run("worker_cpu_affinity auto;").ok());
    CHECK(w.core().worker_cpu_affinity->automatic);
    CHECK(w.core().worker_cpu_affinity->masks.empty());
    Walk m;
    REQUIRE(m.run("worker_cpu_affinity auto 1010;").ok());
    CHECK(m.core().worker_cpu_affinity->automatic);
    REQUIRE(m.core().worker_cpu_affinity->masks.size() == 1);
    CHECK(text(m.core().worker_cpu_affinity->masks[0]) == "1,3");
    Walk none;
    REQUIRE(none.run("worker_processes 2;").ok());
    CHECK_FALSE(none.core().worker_cpu_affinity.has_value());
}

TEST_CASE("process/core_module: worker_cpu_affinity errors") {
    CHECK(error_of("worker_cpu_affinity 01x1;") == "invalid character \"x\" in \"worker_cpu_affinity\" in t.conf:1");
    CHECK(error_of("worker_cpu_affinity 0000;") ==
          "mask \"0000\" of \"worker_cpu_affinity\" selects no CPU in t.conf:1");
    CHECK(error_of("worker_cpu_affinity auto 01 10;") ==
          "invalid number of arguments in \"worker_cpu_affinity\" directive in t.conf:1");
    CHECK(error_of("worker_cpu_affinity auto auto;") ==
          "invalid character \"o\" in \"worker_cpu_affinity\" in t.conf:1");
    CHECK(error_of("worker_cpu_affinity " + std::string(CPU_SETSIZE + 1, '1') + ";") ==
          "\"worker_cpu_affinity\" supports up to " + std::to_string(CPU_SETSIZE) + " CPUs only in t.conf:1");
    CHECK(error_of("worker_cpu_affinity 1;\nworker_cpu_affinity 1;") ==
          "\"worker_cpu_affinity\" directive is duplicate in t.conf:2");
    CHECK(error_of("worker_cpu_affinity;") ==
          "invalid number of arguments in \"worker_cpu_affinity\" directive in t.conf:1");
    CHECK(error_of("events { worker_cpu_affinity 1; }") ==
          "\"worker_cpu_affinity\" directive is not allowed here in t.conf:1");
}

TEST_CASE("process/core_module: cpu_set_for, masks: one per worker, the last for the rest") {
    CpuAffinity a;
    a.masks = {cpus({0}), cpus({1, 3})};
    const cpu_set_t all = cpus({0, 1, 2, 3});
    CHECK(text(cpu_set_for(a, 0, all)) == "0");
    CHECK(text(cpu_set_for(a, 1, all)) == "1,3");
    CHECK(text(cpu_set_for(a, 2, all)) == "1,3");
    CHECK(text(cpu_set_for(a, 7, all)) == "1,3");
    // Masks are applied as written: the kernel refuses CPUs not allowed.
    CHECK(text(cpu_set_for(a, 0, cpus({2}))) == "0");
}

TEST_CASE("process/core_module: cpu_set_for, auto: one allowed CPU each, round robin") {
    CpuAffinity a;
    a.automatic = true;
    const cpu_set_t allowed = cpus({1, 2, 5});  // e.g. a container's cpuset
    CHECK(text(cpu_set_for(a, 0, allowed)) == "1");
    CHECK(text(cpu_set_for(a, 1, allowed)) == "2");
    CHECK(text(cpu_set_for(a, 2, allowed)) == "5");
    CHECK(text(cpu_set_for(a, 3, allowed)) == "1");
    // With a mask: its CPUs that are allowed.
    a.masks = {cpus({0, 2, 4, 5})};
    CHECK(text(cpu_set_for(a, 0, allowed)) == "2");
    CHECK(text(cpu_set_for(a, 1, allowed)) == "5");
    CHECK(text(cpu_set_for(a, 2, allowed)) == "2");
    // None allowed: the worker stays unbound.
    CHECK(text(cpu_set_for(a, 0, cpus({1, 3}))) == "none");
    CpuAffinity empty;
    CHECK(text(cpu_set_for(empty, 0, allowed)) == "none");
}

TEST_CASE("process/core_module: error_log to files, stderr and syslog") {
    Walk w;
    REQUIRE(w.run("error_log logs/e.log; error_log stderr warn;\n"
                  "error_log syslog:server=127.0.0.1:5514,facility=user,tag=gh info;")
                .ok());
    const auto& logs = w.core().error_logs;
    REQUIRE(logs.size() == 3);
    CHECK(logs[0].path == "/p/logs/e.log");
    CHECK(logs[0].level == gatehouse::log::Level::Error);
    CHECK_FALSE(logs[0].syslog);
    CHECK(logs[1].path == "stderr");
    CHECK(logs[1].level == gatehouse::log::Level::Warn);
    REQUIRE(logs[2].syslog);
    CHECK(logs[2].path == "syslog:server=127.0.0.1:5514,facility=user,tag=gh");
    CHECK(logs[2].level == gatehouse::log::Level::Info);
    CHECK(logs[2].syslog->server == "127.0.0.1:5514");
    CHECK(logs[2].syslog->facility == 1);
    CHECK(logs[2].syslog->tag == "gh");
}

TEST_CASE("process/core_module: error: error_log") {
    CHECK(error_of("error_log \"\";") == "empty path in \"error_log\" directive in t.conf:1");
    CHECK(error_of("error_log logs/e.log loud;") ==
          "invalid log level \"loud\" in \"error_log\" directive in t.conf:1");
    CHECK(error_of("error_log memory:32m debug;") == "the memory buffer error log is not supported in t.conf:1");
    CHECK(error_of("error_log syslog:server=127.0.0.1,facility=x;") ==
          "unknown syslog facility \"x\" in t.conf:1");
    CHECK(error_of("\nerror_log syslog:tag=x;") == "no syslog server specified in t.conf:2");
    CHECK(error_of("error_log syslog:server=127.0.0.1:99999;") ==
          "invalid port in syslog server \"127.0.0.1:99999\" in t.conf:1");
}

namespace {

gatehouse::process::CoreDefaults defaults(std::string_view pid, std::string_view error_log, std::string_view user,
                                          std::string_view group) {
    gatehouse::process::CoreDefaults d;
    d.pid = pid;
    d.error_log = error_log;
    d.user = user;
    d.group = group;
    return d;
}

}  // namespace

TEST_CASE("process/core_module: the paths of ./configure are the defaults, relative ones under the prefix") {
    using gatehouse::process::finish_core_conf;
    CoreConf c;
    REQUIRE(finish_core_conf(c, "/p/", "", false, defaults("/run/g.pid", "var/e.log", "nobody", "nogroup")).ok());
    CHECK(*c.pid == "/run/g.pid");
    REQUIRE(c.error_logs.size() == 1);
    CHECK(c.error_logs[0].path == "/p/var/e.log");
    CHECK(c.error_logs[0].level == gatehouse::log::Level::Error);

    CoreConf rel;
    REQUIRE(finish_core_conf(rel, "/p/", "", false, defaults("logs/g.pid", "/var/log/e.log", "x", "x")).ok());
    CHECK(*rel.pid == "/p/logs/g.pid");
    CHECK(rel.error_logs[0].path == "/var/log/e.log");

    // -e replaces the default error log; the configuration's win over both.
    CoreConf e;
    REQUIRE(finish_core_conf(e, "/p/", "/tmp/startup.log", false, defaults("a", "b", "x", "x")).ok());
    CHECK(e.error_logs[0].path == "/tmp/startup.log");
    Walk w;
    REQUIRE(w.run("pid /run/mine.pid; error_log logs/mine.log info;").ok());
    CoreConf& given = *w.cx.conf<CoreConf>(gatehouse::process::core_module, conf::Level::Core);
    REQUIRE(finish_core_conf(given, "/p/", "/tmp/startup.log", false, defaults("a", "b", "x", "x")).ok());
    CHECK(*given.pid == "/run/mine.pid");
    REQUIRE(given.error_logs.size() == 1);
    CHECK(given.error_logs[0].path == "/p/logs/mine.log");
}

TEST_CASE("process/core_module: the workers' user, looked up for a master running as root only") {
    using gatehouse::process::finish_core_conf;
    // Not root: "user" changes nothing, and the default is not looked up.
    CoreConf plain;
    REQUIRE(finish_core_conf(plain, "/p/", "", false, defaults("a", "b", "no-such-user-gh", "x")).ok());
    CHECK_FALSE(plain.worker_user.has_value());

    // Root without "user": ./configure's user and group.
    CoreConf dflt;
    REQUIRE(finish_core_conf(dflt, "/p/", "", true, defaults("a", "b", "root", "root")).ok());
    REQUIRE(dflt.worker_user.has_value());
    CHECK(dflt.worker_user->uid == 0);
    CHECK(dflt.worker_user->gid == 0);
    CHECK(dflt.worker_user_name == "root");
    CHECK_FALSE(dflt.user.has_value());

    // The default must exist where the binary runs, as with nginx.
    CoreConf nouser;
    auto s = finish_core_conf(nouser, "/p/", "", true, defaults("a", "b", "no-such-user-gh", "root"));
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() ==
          "getpwnam(\"no-such-user-gh\") failed (the default of \"user\", from ./configure --user and --group)");
    CoreConf nogroup;
    s = finish_core_conf(nogroup, "/p/", "", true, defaults("a", "b", "root", "no-such-group-gh"));
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() ==
          "getgrnam(\"no-such-group-gh\") failed (the default of \"user\", from ./configure --user and --group)");

    // "user" wins over the default; one name is also the group's.
    Walk w;
    REQUIRE(w.run("user root;").ok());
    CoreConf& given = *w.cx.conf<CoreConf>(gatehouse::process::core_module, conf::Level::Core);
    REQUIRE(finish_core_conf(given, "/p/", "", true, defaults("a", "b", "no-such-user-gh", "x")).ok());
    REQUIRE(given.worker_user.has_value());
    CHECK(given.worker_user->uid == 0);
    CHECK(given.worker_user_name == "root");
}
