// Tests of src/conf/registry.h and module.h: the walk that applies a parsed
// tree with the real module list (core, events, http core), one row per
// error message with its file:line, the typed setters, and a walk of a
// whole configuration through process::load_cycle. Ends with random and
// truncated inputs, which must only ever produce errors.
#include "conf/registry.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "event/events_module.h"
#include "process/core_module.h"
#include "process/cycle.h"
#include "temp_dir.h"

using namespace std::chrono_literals;
using gatehouse::Arena;
using gatehouse::Status;
using gatehouse::conf::ConfArray;
using gatehouse::conf::Ctx;
using gatehouse::conf::Level;
using gatehouse::conf::Node;
using gatehouse::conf::ParseOptions;
using gatehouse::conf::Tree;
using gatehouse::process::CoreConf;
using gatehouse::test::TempDir;
namespace conf = gatehouse::conf;
namespace ghlog = gatehouse::log;

namespace {

// One walk of a text named "t.conf" in the main context, as load_cycle
// does it, with prefix /p/ and conf dir /p/conf/ (or `conf_dir`).
struct Walk {
    Arena arena;
    Tree tree;
    Ctx cx;
    std::string parse_error;

    explicit Walk(std::string conf_dir = "/p/conf/") : cx(arena, "/p/", std::move(conf_dir)) {
        gatehouse::init_modules();
    }

    Status run(std::string text) {
        ParseOptions po;
        po.conf_dir = cx.conf_dir();
        if (auto s = conf::parse_text("t.conf", std::move(text), po, tree); !s) {
            parse_error = s.message();
            return s;
        }
        cx.install_level(Level::Core, cx.create_level(Level::Core));
        return cx.walk(tree.nodes, conf::kMain);
    }

    CoreConf& core() const { return *cx.conf<CoreConf>(gatehouse::process::core_module, Level::Core); }
    gatehouse::event::EventsConf* events() const {
        return cx.conf<gatehouse::event::EventsConf>(gatehouse::event::events_module, Level::Events);
    }
};

// The error of walking `text`; fails the test if it is accepted. Parse
// errors count too, but the tests below mean walk errors, so a parse
// error is reported as such.
std::string error_of(std::string text) {
    Walk w;
    auto s = w.run(std::move(text));
    REQUIRE_FALSE(s.ok());
    CHECK(w.parse_error.empty());
    return s.message();
}

void accepts(std::string text) {
    Walk w;
    auto s = w.run(std::move(text));
    INFO(text);
    CHECK_MESSAGE(s.ok(), (s.ok() ? std::string() : s.message()));
}

}  // namespace

// ---- accepted configurations -------------------------------------------------

TEST_CASE("conf/registry: a walk fills the conf structs") {
    Walk w;
    REQUIRE(w.run("daemon off;\n"
                  "master_process on;\n"
                  "worker_processes 3;\n"
                  "pid run/g.pid;\n"
                  "error_log logs/a.log;\n"
                  "error_log stderr info;\n"
                  "error_log /var/log/b.log warn;\n"
                  "user root root;\n"
                  "worker_rlimit_nofile 4096;\n"
                  "worker_shutdown_timeout \"1m 30s\";\n"
                  "worker_priority -5;\n"
                  "events { worker_connections 64; multi_accept on; use epoll; }\n")
                .ok());
    const CoreConf& c = w.core();
    CHECK(c.daemon == false);
    CHECK(c.master_process == true);
    CHECK(c.worker_processes == 3u);
    CHECK(c.pid == "/p/run/g.pid");
    REQUIRE(c.error_logs.size() == 3);
    CHECK(c.error_logs[0].path == "/p/logs/a.log");
    CHECK(c.error_logs[0].level == ghlog::Level::Error);
    CHECK(c.error_logs[1].path == "stderr");
    CHECK(c.error_logs[1].level == ghlog::Level::Info);
    CHECK(c.error_logs[2].path == "/var/log/b.log");
    CHECK(c.error_logs[2].level == ghlog::Level::Warn);
    CHECK(c.user == "root");
    CHECK(c.group == "root");
    CHECK(c.worker_rlimit_nofile == 4096u);
    CHECK(c.worker_shutdown_timeout == conf::Duration(90s));
    CHECK(c.worker_priority == -5);
    REQUIRE(w.events() != nullptr);
    CHECK(w.events()->worker_connections == 64u);
    CHECK(w.events()->multi_accept == true);
    CHECK(w.events()->use == "epoll");
}

TEST_CASE("conf/registry: core directives' special values") {
    Walk w;
    REQUIRE(w.run("worker_processes auto; pid off; user root;").ok());
    CHECK(w.core().worker_processes == 0u);
    CHECK(w.core().pid == "");
    CHECK(w.core().group == "root");
    CHECK(w.events() == nullptr);
}

TEST_CASE("conf/registry: an http tree is accepted") {
    accepts("events { }\n"
           "http {\n"
           "  root /srv;\n"
           "  server {\n"
           "    listen 127.0.0.1:8080 default_server;\n"
           "    listen [::1]:8080;\n"
           "    listen unix:/run/g.sock;\n"
           "    server_name example.com www.example.com;\n"
           "    location / { root html; }\n"
           "    location = /exact { }\n"
           "    location /a { location /a/b { root x; } }\n"
           "  }\n"
           "  server { listen 8081; }\n"
           "}\n");
}

TEST_CASE("conf/registry: the walk restores the context") {
    Walk w;
    CHECK(w.cx.context() == conf::kMain);
    REQUIRE(w.run("events { }").ok());
    CHECK(w.cx.context() == conf::kMain);
    Walk bad;
    REQUIRE_FALSE(bad.run("events { daemon on; }").ok());
    CHECK(bad.cx.context() == conf::kMain);
}

// ---- error messages ------------------------------------------------------------

TEST_CASE("conf/registry: no two modules take one directive in the same context") {
    // The walk gives a name to the first module that takes it there: a
    // second one would be dead code that looks alive ("server" is both
    // http's and upstream's, in different blocks).
    std::map<std::string_view, std::vector<std::pair<std::string_view, uint32_t>>> seen;
    for (const gatehouse::conf::Module* m : gatehouse::modules)
        for (const gatehouse::conf::Directive& d : m->directives) {
            for (const auto& [other, contexts] : seen[d.name]) {
                CAPTURE(d.name);
                CAPTURE(other);
                CHECK((contexts & d.contexts) == 0);
            }
            seen[d.name].emplace_back(m->name, d.contexts);
        }
    CHECK(seen.size() > 250);  // every module is in the list
}

TEST_CASE("conf/registry: error: unknown directive") {
    CHECK(error_of("daemon off;\nfrobnicate 1;") == "unknown directive \"frobnicate\" in t.conf:2");
    CHECK(error_of("events { x; }") == "unknown directive \"x\" in t.conf:1");
    CHECK(error_of("\n\n\"\";") == "unknown directive \"\" in t.conf:3");
}

TEST_CASE("conf/registry: error: unknown directive, did you mean") {
    CHECK(error_of("worker_proceses 2;") ==
          "unknown directive \"worker_proceses\" in t.conf:1 (did you mean \"worker_processes\"?)");
    CHECK(error_of("demon off;") ==
          "unknown directive \"demon\" in t.conf:1 (did you mean \"daemon\"?)");
    CHECK(error_of("evnets { }") ==
          "unknown directive \"evnets\" in t.conf:1 (did you mean \"events\"?)");
    CHECK(error_of("events {\n  worker_conections 10;\n}") ==
          "unknown directive \"worker_conections\" in t.conf:2 (did you mean "
          "\"worker_connections\"?)");
}

TEST_CASE("conf/registry: error: directive not allowed here") {
    CHECK(error_of("worker_connections 10;") ==
          "\"worker_connections\" directive is not allowed here in t.conf:1");
    CHECK(error_of("events {\n daemon on;\n}") ==
          "\"daemon\" directive is not allowed here in t.conf:2");
    CHECK(error_of("server { }") == "\"server\" directive is not allowed here in t.conf:1");
    CHECK(error_of("listen 80;") == "\"listen\" directive is not allowed here in t.conf:1");
    CHECK(error_of("events { }\nhttp {\n  listen 80;\n}") ==
          "\"listen\" directive is not allowed here in t.conf:3");
    CHECK(error_of("events { }\nhttp {\n  location / { }\n}") ==
          "\"location\" directive is not allowed here in t.conf:3");
    CHECK(error_of("events { events { } }") ==
          "\"events\" directive is not allowed here in t.conf:1");
}

TEST_CASE("conf/registry: error: invalid number of arguments") {
    CHECK(error_of("daemon;") == "invalid number of arguments in \"daemon\" directive in t.conf:1");
    CHECK(error_of("\ndaemon on off;") ==
          "invalid number of arguments in \"daemon\" directive in t.conf:2");
    CHECK(error_of("error_log;") ==
          "invalid number of arguments in \"error_log\" directive in t.conf:1");
    CHECK(error_of("error_log a info x;") ==
          "invalid number of arguments in \"error_log\" directive in t.conf:1");
    CHECK(error_of("events x { }") ==
          "invalid number of arguments in \"events\" directive in t.conf:1");
    CHECK(error_of("events { }\nhttp { server { location { } } }") ==
          "invalid number of arguments in \"location\" directive in t.conf:2");
    CHECK(error_of("events { }\nhttp { server { location = / x { } } }") ==
          "invalid number of arguments in \"location\" directive in t.conf:2");
}

TEST_CASE("conf/registry: error: duplicate directive") {
    CHECK(error_of("daemon on;\ndaemon off;") == "\"daemon\" directive is duplicate in t.conf:2");
    CHECK(error_of("pid a;\npid b;") == "\"pid\" directive is duplicate in t.conf:2");
    CHECK(error_of("worker_processes 1;\nworker_processes 2;") ==
          "\"worker_processes\" directive is duplicate in t.conf:2");
    CHECK(error_of("user root;\nuser root;") == "\"user\" directive is duplicate in t.conf:2");
    CHECK(error_of("worker_priority 1;\nworker_priority 1;") ==
          "\"worker_priority\" directive is duplicate in t.conf:2");
    CHECK(error_of("worker_shutdown_timeout 1s;\nworker_shutdown_timeout 1s;") ==
          "\"worker_shutdown_timeout\" directive is duplicate in t.conf:2");
    CHECK(error_of("events { }\nevents { }") == "\"events\" directive is duplicate in t.conf:2");
    CHECK(error_of("events {\n worker_connections 1024;\n worker_connections 1024;\n}") ==
          "\"worker_connections\" directive is duplicate in t.conf:3");
    CHECK(error_of("events { use epoll; use epoll; }") ==
          "\"use\" directive is duplicate in t.conf:1");
    CHECK(error_of("events { }\nhttp { }\nhttp { }") == "\"http\" directive is duplicate in t.conf:3");
    CHECK(error_of("events { }\nhttp { server { location / {\n root a;\n root b;\n} } }") ==
          "\"root\" directive is duplicate in t.conf:4");
}

TEST_CASE("conf/registry: several error_log directives are not duplicates") {
    Walk w;
    REQUIRE(w.run("error_log a; error_log a; error_log stderr;").ok());
    CHECK(w.core().error_logs.size() == 3);
}

TEST_CASE("conf/registry: error: block directive without a block, and the reverse") {
    CHECK(error_of("events;") == "directive \"events\" has no opening \"{\" in t.conf:1");
    CHECK(error_of("events { }\nhttp;") == "directive \"http\" has no opening \"{\" in t.conf:2");
    CHECK(error_of("daemon on { }") == "directive \"daemon\" is not terminated by \";\" in t.conf:1");
    CHECK(error_of("events {\n worker_connections 1 { }\n}") ==
          "directive \"worker_connections\" is not terminated by \";\" in t.conf:2");
}

TEST_CASE("conf/registry: error: invalid flag") {
    CHECK(error_of("daemon yes;") ==
          "invalid value \"yes\", it must be \"on\" or \"off\" in \"daemon\" directive in t.conf:1");
    CHECK(error_of("events {\n multi_accept 1;\n}") ==
          "invalid value \"1\", it must be \"on\" or \"off\" in \"multi_accept\" directive in "
          "t.conf:2");
}

TEST_CASE("conf/registry: error: invalid time") {
    CHECK(error_of("worker_shutdown_timeout 5parsecs;") ==
          "invalid time \"5parsecs\" in \"worker_shutdown_timeout\" directive in t.conf:1");
    CHECK(error_of("worker_shutdown_timeout \"1s 1m\";") ==
          "invalid time \"1s 1m\" in \"worker_shutdown_timeout\" directive in t.conf:1");
}

TEST_CASE("conf/registry: error: invalid number") {
    CHECK(error_of("worker_rlimit_nofile many;") ==
          "invalid number \"many\" in \"worker_rlimit_nofile\" directive in t.conf:1");
    CHECK(error_of("worker_processes 0;") ==
          "invalid value \"0\", it must be a number from 1 to 1024 or \"auto\" in "
          "\"worker_processes\" directive in t.conf:1");
    CHECK(error_of("worker_processes 1025;") ==
          "invalid value \"1025\", it must be a number from 1 to 1024 or \"auto\" in "
          "\"worker_processes\" directive in t.conf:1");
    CHECK(error_of("worker_priority 20;") ==
          "invalid priority \"20\", it must be from -20 to 19 in \"worker_priority\" directive "
          "in t.conf:1");
    CHECK(error_of("worker_priority x;") ==
          "invalid priority \"x\", it must be from -20 to 19 in \"worker_priority\" directive "
          "in t.conf:1");
    CHECK(error_of("events { worker_connections 1; }") ==
          "invalid value \"1\", it must be a number from 2 to 1048576 in \"worker_connections\" "
          "directive in t.conf:1");
}

TEST_CASE("conf/registry: error: invalid address") {
    std::string http = "events { }\nhttp {\n server {\n";
    CHECK(error_of(http + "  listen 127.0.0.1:http;\n}}") ==
          "invalid port in \"127.0.0.1:http\" in \"listen\" directive in t.conf:4");
    CHECK(error_of(http + "  listen [::1;\n}}") ==
          "missing \"]\" in address \"[::1\" in \"listen\" directive in t.conf:4");
    CHECK(error_of(http + "  listen ::1;\n}}") ==
          "IPv6 addresses must be in brackets in address \"::1\" in \"listen\" directive in "
          "t.conf:4");
    CHECK(error_of(http + "  listen unix:relative;\n}}") ==
          "unix socket path must be absolute in address \"unix:relative\" in \"listen\" "
          "directive in t.conf:4");
    CHECK(error_of(http + "  listen 127.0.0.1:0;\n}}") ==
          "invalid port in \"127.0.0.1:0\" in \"listen\" directive in t.conf:4");
}

TEST_CASE("conf/registry: error: other core directive values") {
    CHECK(error_of("error_log a loud;") ==
          "invalid log level \"loud\" in \"error_log\" directive in t.conf:1");
    CHECK(error_of("error_log \"\";") == "empty path in \"error_log\" directive in t.conf:1");
    CHECK(error_of("events { use select; }") ==
          "invalid event type \"select\", only \"epoll\" is supported in t.conf:1");
}

TEST_CASE("conf/registry: error_log debug is accepted in every build") {
    // nginx accepts it without --with-debug (there are just no debug
    // messages); configurations written for nginx rely on it.
    Walk w;
    REQUIRE(w.run("error_log a debug;"));
    REQUIRE(w.core().error_logs.size() == 1);
    CHECK(w.core().error_logs[0].level == gatehouse::log::Level::Debug);
}

TEST_CASE("conf/registry: the first error stops the walk") {
    Walk w;
    auto s = w.run("daemon off;\nfoo;\ndaemon on;\n");
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "unknown directive \"foo\" in t.conf:2");
    CHECK(w.core().daemon == false);
}

TEST_CASE("conf/registry: errors in included files name them") {
    TempDir d;
    d.write("conf/events.conf", "worker_connections 10;\nworker_connections 10;\n");
    Walk w(d / "conf/");
    auto s = w.run("events {\n  include events.conf;\n}");
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() ==
          "\"worker_connections\" directive is duplicate in " + d / "conf/events.conf:2");
}

// ---- Ctx and the directive table ----------------------------------------------

TEST_CASE("conf/registry: full_path") {
    Walk w;
    CHECK(w.cx.full_path("logs/a") == "/p/logs/a");
    CHECK(w.cx.full_path("/abs") == "/abs");
    CHECK(w.cx.full_path("") == "/p/");
    CHECK(w.cx.prefix() == "/p/");
    CHECK(w.cx.conf_dir() == "/p/conf/");
}

TEST_CASE("conf/registry: find_directive honours contexts") {
    gatehouse::init_modules();
    const gatehouse::Module* owner = nullptr;
    const conf::Directive* d = conf::find_directive("daemon", conf::kMain, &owner);
    REQUIRE(d != nullptr);
    CHECK(d->name == "daemon");
    REQUIRE(owner != nullptr);
    CHECK(owner->name == "core");
    CHECK(conf::find_directive("daemon", conf::kEvents) == nullptr);
    CHECK(conf::find_directive("worker_connections", conf::kEvents) != nullptr);
    CHECK(conf::find_directive("root", conf::kLocation) != nullptr);
    CHECK(conf::find_directive("root", conf::kMain) == nullptr);
    CHECK(conf::find_directive("nope", conf::kMain | conf::kHttp) == nullptr);
}

TEST_CASE("conf/registry: context names") {
    CHECK(conf::context_name(conf::kMain) == "main");
    CHECK(conf::context_name(conf::kEvents) == "events");
    CHECK(conf::context_name(conf::kHttp) == "http");
    CHECK(conf::context_name(conf::kServer) == "server");
    CHECK(conf::context_name(conf::kLocation) == "location");
    CHECK(conf::context_name(conf::kUpstream) == "upstream");
    CHECK(conf::context_name(conf::kIf) == "if");
    CHECK(conf::context_name(conf::kServerIf) == "if");
    CHECK(conf::context_name(conf::kLimitExcept) == "limit_except");
    CHECK(conf::context_name(conf::kTypes) == "types");
    CHECK(conf::context_name(conf::kMap) == "map");
    CHECK(conf::context_name(conf::kMain | conf::kHttp) == "?");
}

TEST_CASE("conf/registry: edit_distance") {
    CHECK(conf::edit_distance("", "") == 0);
    CHECK(conf::edit_distance("abc", "abc") == 0);
    CHECK(conf::edit_distance("", "abc") == 3);
    CHECK(conf::edit_distance("abc", "") == 3);
    CHECK(conf::edit_distance("abc", "abd") == 1);   // substitute
    CHECK(conf::edit_distance("abc", "abcd") == 1);  // insert
    CHECK(conf::edit_distance("abcd", "acd") == 1);  // delete
    CHECK(conf::edit_distance("abcd", "acbd") == 1); // swap of neighbours
    CHECK(conf::edit_distance("kitten", "sitting") == 3);
    CHECK(conf::edit_distance("proxy_pas", "proxy_pass") == 1);
}

TEST_CASE("conf/registry: suggest_directive suggests only plausible typos") {
    gatehouse::init_modules();
    CHECK(conf::suggest_directive("deamon") == "daemon");
    CHECK(conf::suggest_directive("worker_procesess") == "worker_processes");
    CHECK(conf::suggest_directive("daemon").empty());  // exact: nothing to suggest
    CHECK(conf::suggest_directive("frobnicate").empty());
    CHECK(conf::suggest_directive("").empty());
    CHECK(conf::suggest_directive("pd").empty());  // "pid" is 1 edit, but a third of "pd" is less
}

// ---- typed setters (module.h) ---------------------------------------------------

namespace {

struct TestConf {
    std::optional<uint64_t> size;        // "test_size"
    std::optional<conf::Duration> time;  // "test_time"
    std::optional<bool> flag;            // "test_flag"
    std::optional<uint64_t> count;       // "test_count"
    std::optional<std::string> text;     // "test_text"
};

struct SetterRun {
    Arena arena;
    Ctx cx{arena, "/p/", "/p/conf/"};
    conf::SourceFile file{"t.conf", ""};
    TestConf c;

    Status set(conf::Setter s, std::string name, std::string arg, uint32_t line = 4) {
        Node n;
        n.name = std::move(name);
        n.args.push_back(conf::Arg{std::move(arg), false});
        n.file = &file;
        n.line = line;
        CHECK(s.tag == conf::tag_of<TestConf>());
        return s.fn(cx, n, &c);
    }
};

}  // namespace

TEST_CASE("conf/registry: typed setters store parsed values") {
    SetterRun r;
    CHECK(r.set(conf::size<&TestConf::size>(), "test_size", "10k").ok());
    CHECK(r.c.size == 10240u);
    CHECK(r.set(conf::duration<&TestConf::time>(), "test_time", "500ms").ok());
    CHECK(r.c.time == conf::Duration(500ms));
    CHECK(r.set(conf::flag<&TestConf::flag>(), "test_flag", "off").ok());
    CHECK(r.c.flag == false);
    CHECK(r.set(conf::number<&TestConf::count>(), "test_count", "12").ok());
    CHECK(r.c.count == 12u);
    CHECK(r.set(conf::string<&TestConf::text>(), "test_text", "a b").ok());
    CHECK(r.c.text == "a b");
}

TEST_CASE("conf/registry: typed setter errors name the directive, file and line") {
    SetterRun r;
    CHECK(r.set(conf::size<&TestConf::size>(), "test_size", "10q").message() ==
          "invalid size \"10q\" in \"test_size\" directive in t.conf:4");
    CHECK(r.set(conf::duration<&TestConf::time>(), "test_time", "1 fortnight").message() ==
          "invalid time \"1 fortnight\" in \"test_time\" directive in t.conf:4");
    CHECK(r.set(conf::flag<&TestConf::flag>(), "test_flag", "true").message() ==
          "invalid value \"true\", it must be \"on\" or \"off\" in \"test_flag\" directive in "
          "t.conf:4");
    CHECK(r.set(conf::number<&TestConf::count>(), "test_count", "1k").message() ==
          "invalid number \"1k\" in \"test_count\" directive in t.conf:4");
    // A failed setter leaves the field unset.
    CHECK_FALSE(r.c.size.has_value());
    CHECK_FALSE(r.c.time.has_value());
}

TEST_CASE("conf/registry: typed setters refuse a second value") {
    SetterRun r;
    REQUIRE(r.set(conf::size<&TestConf::size>(), "test_size", "1m").ok());
    CHECK(r.set(conf::size<&TestConf::size>(), "test_size", "2m", 7).message() ==
          "\"test_size\" directive is duplicate in t.conf:7");
    CHECK(r.c.size == 1u << 20);
    REQUIRE(r.set(conf::string<&TestConf::text>(), "test_text", "a").ok());
    CHECK(r.set(conf::string<&TestConf::text>(), "test_text", "b").message() ==
          "\"test_text\" directive is duplicate in t.conf:4");
}

namespace {
Status handler_with_conf(Ctx&, const Node& n, TestConf& c) {
    c.text = n.name;
    return {};
}
Status handler_without_conf(Ctx& cx, const Node& n) { return cx.error(n, "called"); }
}  // namespace

TEST_CASE("conf/registry: custom setters") {
    SetterRun r;
    conf::Setter with = conf::custom<handler_with_conf>();
    CHECK(with.tag == conf::tag_of<TestConf>());
    CHECK(r.set(with, "h", "x").ok());
    CHECK(r.c.text == "h");
    conf::Setter without = conf::custom<handler_without_conf>();
    CHECK(without.tag == nullptr);
    Node n;
    n.name = "b";
    n.file = &r.file;
    n.line = 9;
    CHECK(without.fn(r.cx, n, nullptr).message() == "called in t.conf:9");
}

TEST_CASE("conf/registry: inherit") {
    std::optional<int> c, parent = 5;
    conf::inherit(c, parent, 1);
    CHECK(c == 5);
    std::optional<int> unset, none;
    conf::inherit(unset, none, 1);
    CHECK(unset == 1);
    std::optional<int> set = 9;
    conf::inherit(set, parent, 1);
    CHECK(set == 9);
    std::optional<int> left;
    conf::inherit(left, none);
    CHECK_FALSE(left.has_value());
    conf::inherit(left, parent);
    CHECK(left == 5);
}

TEST_CASE("conf/registry: levels: create, install, scope") {
    Walk w;
    ConfArray core = w.cx.create_level(Level::Core);
    CHECK(core[gatehouse::process::core_module.index] != nullptr);
    CHECK(core[gatehouse::event::events_module.index] == nullptr);
    ConfArray ev = w.cx.create_level(Level::Events);
    CHECK(ev[gatehouse::event::events_module.index] != nullptr);
    CHECK(w.cx.level(Level::Events) == nullptr);
    {
        Ctx::LevelScope s(w.cx, Level::Events, ev);
        CHECK(w.cx.level(Level::Events) == ev);
    }
    CHECK(w.cx.level(Level::Events) == nullptr);
    w.cx.install_level(Level::Core, core);
    CHECK(w.cx.conf<CoreConf>(gatehouse::process::core_module, Level::Core) ==
          core[gatehouse::process::core_module.index]);
}

// ---- a whole configuration through process::load_cycle ----------------------------

namespace {

struct Site {
    TempDir d;
    gatehouse::process::LoadOptions lo;
    Site() {
        gatehouse::init_modules();
        d.mkdir("conf");
        d.mkdir("logs");  // http modules may open their logs while loading
        lo.prefix = d.path();
        lo.conf_file = d / "conf/g.conf";
    }
    auto load(std::string text, std::string globals = "") {
        d.write("conf/g.conf", text);
        lo.globals = std::move(globals);
        return gatehouse::process::load_cycle(lo);
    }
};

}  // namespace

TEST_CASE("conf/cycle: defaults after a minimal configuration") {
    Site s;
    auto c = s.load("events { }\n");
    REQUIRE(c.ok());
    const CoreConf& cc = (*c)->core();
    CHECK(cc.daemon == true);
    CHECK(cc.master_process == true);
    CHECK(cc.worker_processes == 1u);
    CHECK(cc.pid == s.d / "logs/gatehouse.pid");
    REQUIRE(cc.error_logs.size() == 1);
    CHECK(cc.error_logs[0].path == s.d / "logs/error.log");
    CHECK(cc.error_logs[0].level == ghlog::Level::Error);
    auto* ev = (*c)->conf<gatehouse::event::EventsConf>(gatehouse::event::events_module, Level::Events);
    REQUIRE(ev != nullptr);
    CHECK(ev->worker_connections == gatehouse::event::kDefaultWorkerConnections);
    CHECK((*c)->conf_dir == s.d / "conf/");
    REQUIRE((*c)->tree.files.size() == 1);
    CHECK((*c)->tree.files[0]->path == s.lo.conf_file);
}

TEST_CASE("conf/cycle: error: no events section") {
    Site s;
    auto c = s.load("daemon off;\n");
    REQUIRE_FALSE(c.ok());
    CHECK(c.message() == "no \"events\" section in configuration");
}

TEST_CASE("conf/cycle: error: missing configuration file") {
    Site s;
    s.lo.conf_file = s.d / "conf/none.conf";
    auto c = gatehouse::process::load_cycle(s.lo);
    REQUIRE_FALSE(c.ok());
    CHECK(c.message() == "open() \"" + s.d / "conf/none.conf" +
                             "\" failed (2: No such file or directory)");
}

TEST_CASE("conf/cycle: includes are relative to the main file's directory") {
    Site s;
    s.d.write("conf/events.conf", "events { worker_connections 77; }\n");
    s.d.write("conf/sites/a.conf", "server { listen 127.0.0.1:1; }\n");
    auto c = s.load("include events.conf;\nhttp { include sites/*.conf; }\n");
    REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.message()));
    CHECK((*c)->tree.files.size() == 3);
    auto* ev = (*c)->conf<gatehouse::event::EventsConf>(gatehouse::event::events_module, Level::Events);
    CHECK(ev->worker_connections == 77u);
}

TEST_CASE("conf/cycle: -g directives apply before the file") {
    Site s;
    auto c = s.load("events { }\n", "daemon off; worker_processes 2;");
    REQUIRE(c.ok());
    CHECK((*c)->core().daemon == false);
    CHECK((*c)->core().worker_processes == 2u);
    REQUIRE((*c)->globals.files.size() == 1);
    CHECK((*c)->globals.files[0]->path == "command line");
    // -T dumps the files read, not the command line.
    CHECK((*c)->tree.files.size() == 1);
}

TEST_CASE("conf/cycle: error: a -g directive repeated in the file") {
    Site s;
    auto c = s.load("events { }\ndaemon on;\n", "daemon off;");
    REQUIRE_FALSE(c.ok());
    CHECK(c.message() == "\"daemon\" directive is duplicate in " + s.lo.conf_file + ":2");
}

TEST_CASE("conf/cycle: error: -g errors name the command line") {
    Site s;
    auto bad_syntax = s.load("events { }\n", "daemon off");
    REQUIRE_FALSE(bad_syntax.ok());
    CHECK(bad_syntax.message() ==
          "unexpected end of file, expecting \";\" or \"}\" in command line:1");
    auto unknown = s.load("events { }\n", "deamon off;");
    REQUIRE_FALSE(unknown.ok());
    CHECK(unknown.message() ==
          "unknown directive \"deamon\" in command line:1 (did you mean \"daemon\"?)");
    auto not_here = s.load("events { }\n", "worker_connections 1;");
    REQUIRE_FALSE(not_here.ok());
    CHECK(not_here.message() ==
          "\"worker_connections\" directive is not allowed here in command line:1");
}

TEST_CASE("conf/cycle: error_log sinks, and open_logs") {
    Site s;
    auto c = s.load("error_log logs/a.log notice;\nerror_log logs/b.log;\nevents { }\n");
    REQUIRE(c.ok());
    const auto& sinks = (*c)->error_log.sinks();
    REQUIRE(sinks.size() == 2);
    CHECK(sinks[0].path == s.d / "logs/a.log");
    CHECK(sinks[0].level == ghlog::Level::Notice);
    CHECK(sinks[1].level == ghlog::Level::Error);
    CHECK((*c)->error_log.max_level() == ghlog::Level::Notice);
    REQUIRE(gatehouse::process::open_logs(**c).ok());
    (*c)->error_log.write(ghlog::Level::Notice, "hello");
    CHECK(s.d.read("logs/a.log").find("[notice]") != std::string::npos);
    CHECK(s.d.read("logs/b.log").empty());
}

TEST_CASE("conf/cycle: error: open_logs names the file and errno") {
    Site s;
    auto c = s.load("error_log nodir/a.log;\nevents { }\n");
    REQUIRE(c.ok());
    auto st = gatehouse::process::open_logs(**c);
    REQUIRE_FALSE(st.ok());
    CHECK(st.message() ==
          "open() \"" + s.d / "nodir/a.log" + "\" failed (2: No such file or directory)");
}

// ---- robustness ---------------------------------------------------------------------

namespace {

const char kValid[] =
    "# gatehouse test configuration\n"
    "worker_processes auto;\n"
    "error_log logs/error.log info;\n"
    "error_log stderr;\n"
    "pid 'logs/g.pid';\n"
    "worker_shutdown_timeout \"1m 30s\";\n"
    "events {\n"
    "    worker_connections 1024;  # per worker\n"
    "    multi_accept on;\n"
    "}\n"
    "http {\n"
    "    root /srv/www;\n"
    "    server {\n"
    "        listen 127.0.0.1:8080 default_server backlog=128;\n"
    "        listen [::1]:8080 ipv6only=on;\n"
    "        server_name example.com \"*.example.org\";\n"
    "        location / {\n"
    "            root \"html\\tdir\";\n"
    "            location /a/${b} { root $x; }\n"
    "        }\n"
    "        location = /exact { }\n"
    "    }\n"
    "}\n";

// Parses and, when it parses, walks `text`; every error must name the
// file and line. Returns whether the whole thing was accepted.
bool survive(std::string_view text, const std::string& conf_dir) {
    Walk w(conf_dir);
    auto s = w.run(std::string(text));
    if (!s.ok()) {
        INFO("input: ", std::string(text));
        CHECK_MESSAGE(s.message().find(" in t.conf:") != std::string::npos, s.message());
    }
    return s.ok();
}

}  // namespace

TEST_CASE("conf/robustness: the reference configuration is accepted") {
    TempDir d;
    CHECK(survive(kValid, d.path()));
}

TEST_CASE("conf/robustness: every truncation of a valid configuration fails cleanly") {
    TempDir d;
    std::string_view v(kValid, sizeof kValid - 1);
    size_t accepted = 0;
    for (size_t n = 0; n < v.size(); ++n) accepted += survive(v.substr(0, n), d.path());
    // Prefixes that end between top-level directives (and the empty one)
    // are complete configurations.
    CHECK(accepted > 0);
    CHECK(accepted < v.size() / 4);
}

TEST_CASE("conf/robustness: every single-byte deletion of a valid configuration") {
    TempDir d;
    std::string v(kValid, sizeof kValid - 1);
    for (size_t i = 0; i < v.size(); ++i) {
        std::string m = v;
        m.erase(i, 1);
        survive(m, d.path());
    }
}

TEST_CASE("conf/robustness: random bytes and random mutations never crash") {
    TempDir d;
    std::mt19937 rng(20261201);  // fixed: a failure reproduces
    // Bytes that matter to the lexer come often; the rest at random.
    const std::string_view special = ";{}\"'\\$# \n\t\r";
    auto byte = [&]() -> char {
        uint32_t r = rng();
        if (r % 3 == 0) return special[(r >> 8) % special.size()];
        return static_cast<char>(r >> 8);
    };
    for (int i = 0; i < 3000; ++i) {
        std::string s(rng() % 200, '\0');
        for (char& c : s) c = byte();
        survive(s, d.path());
    }
    std::string v(kValid, sizeof kValid - 1);
    for (int i = 0; i < 3000; ++i) {
        std::string m = v;
        int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits; ++e) {
            size_t at = rng() % m.size();
            switch (rng() % 3) {
                case 0: m[at] = byte(); break;
                case 1: m.insert(m.begin() + static_cast<long>(at), byte()); break;
                default: m.erase(at, 1 + rng() % 8); break;
            }
            if (m.empty()) m = "x";
        }
        survive(m, d.path());
    }
}

TEST_CASE("conf/registry: the blocks that read their own includes") {
    gatehouse::init_modules();
    CHECK(conf::block_reads_includes("geo"));
    CHECK_FALSE(conf::block_reads_includes("http"));
    CHECK_FALSE(conf::block_reads_includes("map"));
    CHECK_FALSE(conf::block_reads_includes("include"));
}
