#include "process/cycle.h"

#include <unistd.h>

#include "event/events_module.h"

namespace gatehouse::process {

Result<std::unique_ptr<Cycle>> load_cycle(const LoadOptions& o) {
    auto c = std::make_unique<Cycle>();
    c->prefix = o.prefix;
    c->conf_file = o.conf_file;
    size_t slash = o.conf_file.rfind('/');
    c->conf_dir = slash == std::string::npos ? o.prefix : o.conf_file.substr(0, slash + 1);

    conf::ParseOptions po;
    po.conf_dir = c->conf_dir;
    po.keeps_includes = conf::block_reads_includes;
    if (!o.globals.empty()) {
        if (auto s = conf::parse_text("command line", o.globals, po, c->globals); !s)
            return s.error();
    }
    auto tree = conf::parse_file(o.conf_file, po);
    if (!tree) return tree.error();
    c->tree = std::move(*tree);

    conf::Ctx cx(c->arena, c->prefix, c->conf_dir);
    cx.set_zones(&c->zones);
    conf::ConfArray core = cx.create_level(conf::Level::Core);
    cx.install_level(conf::Level::Core, core);
    // As nginx does, "-g" directives come first: the file may not repeat them.
    if (auto s = cx.walk(c->globals.nodes, conf::kMain); !s) return s.error();
    if (auto s = cx.walk(c->tree.nodes, conf::kMain); !s) return s.error();
    if (!cx.level(conf::Level::Events))
        return make_error("no \"events\" section in configuration");
    for (int l = 0; l < conf::kLevels; ++l) c->roots[l] = cx.level(static_cast<conf::Level>(l));
    for (const conf::Module* m : modules)
        if (m->postconfiguration)
            if (auto s = m->postconfiguration(cx); !s) return s.error();

    CoreConf& cc = c->core();
    if (auto s = finish_core_conf(cc, c->prefix, o.error_log, ::geteuid() == 0); !s) return s.error();
    auto* ev = c->conf<event::EventsConf>(event::events_module, conf::Level::Events);
    if (!ev->worker_connections) ev->worker_connections = event::kDefaultWorkerConnections;
    if (!ev->worker_pipes) ev->worker_pipes = event::kDefaultWorkerPipes;
    for (const auto& spec : cc.error_logs) {
        if (spec.syslog)
            c->error_log.add_syslog(*spec.syslog, spec.level);
        else
            c->error_log.add(spec.path, spec.level);
    }
    for (const conf::Module* m : modules) {
        if (m->listens) m->listens(c->roots, c->listens);
        if (m->processes) m->processes(c->roots, c->processes);
    }
    return c;
}

Status open_logs(Cycle& c) { return c.error_log.open(); }

Status init_master(const Cycle& c) {
    for (const conf::Module* m : modules)
        if (m->init_master)
            if (auto s = m->init_master(c.roots, c.core().worker_user); !s) return s;
    return {};
}

void reopen_logs(Cycle& c, bool master) {
    std::optional<conf::WorkerUser> workers;
    if (master) workers = c.core().worker_user;
    std::optional<uid_t> owner;
    if (workers) owner = workers->uid;
    c.error_log.reopen(owner);
    for (const conf::Module* m : modules)
        if (m->reopen_logs) m->reopen_logs(workers);
}

Status init_worker(const Cycle& c, int slot) {
    for (const conf::Module* m : modules)
        if (m->init_worker)
            if (auto s = m->init_worker(c.roots, slot); !s) return s;
    return {};
}

uint64_t worker_capabilities(const Cycle& c) {
    uint64_t caps = 0;
    for (const conf::Module* m : modules)
        if (m->worker_capabilities) caps |= m->worker_capabilities(c.roots);
    return caps;
}

void stop_worker() {
    for (const conf::Module* m : modules)
        if (m->stop_worker) m->stop_worker();
}

void quit_worker() {
    for (const conf::Module* m : modules)
        if (m->quit_worker) m->quit_worker();
}

void idle_worker() {
    for (const conf::Module* m : modules)
        if (m->idle_worker) m->idle_worker();
}

void exit_worker() {
    for (const conf::Module* m : modules)
        if (m->exit_worker) m->exit_worker();
}

}  // namespace gatehouse::process
