// A configuration generation ("cycle" in nginx): everything one reading of
// the config produced. It owns the parsed tree, the arena holding every
// module's conf structs, and the error log sinks. A reload builds a whole
// new Cycle; if that fails, the running one is untouched.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "conf/parser.h"
#include "conf/registry.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/shm.h"
#include "event/listen_spec.h"
#include "process/core_module.h"

namespace gatehouse::process {

struct LoadOptions {
    std::string prefix;     // with a trailing slash
    std::string conf_file;  // absolute
    std::string globals;    // "-g" directives
    std::string error_log;  // "-e": the default error log ("stderr" or a path)
};

class Cycle {
public:
    Cycle() = default;
    Cycle(const Cycle&) = delete;
    Cycle& operator=(const Cycle&) = delete;

    std::string prefix;
    std::string conf_file;
    std::string conf_dir;
    conf::Tree tree;     // the files, main first
    conf::Tree globals;  // "-g"
    Arena arena{16384};
    // The root struct arrays of each level (Core, Events, http Main/Srv/Loc).
    conf::Roots roots{};
    // The listening sockets the modules asked for (conf::Module::listens).
    std::vector<event::ListenSpec> listens;
    // The processes besides the workers (conf::Module::processes).
    std::vector<conf::ProcessSpec> processes;
    log::ErrorLog error_log;
    // The shared memory zones this generation declared, mapped before the
    // workers fork; kept or unmapped with the generation (see core/shm.h).
    // Modules declare theirs through conf::Ctx::zones() (the upstream
    // "zone" directive).
    shm::ZoneSet zones{shm::registry()};

    CoreConf& core() const {
        return *static_cast<CoreConf*>(roots[0][core_module.index]);
    }
    template <typename T>
    T* conf(const conf::Module& m, conf::Level l) const {
        conf::ConfArray a = roots[static_cast<int>(l)];
        return a ? static_cast<T*>(a[m.index]) : nullptr;
    }
};

// Reads, parses and applies the configuration. Nothing is opened or bound:
// the caller opens the logs (open_logs) and the listening sockets.
Result<std::unique_ptr<Cycle>> load_cycle(const LoadOptions& o);

// Opens the "error_log" files of the cycle.
Status open_logs(Cycle& c);

// The modules' lifecycle hooks (conf::Module), run in module order:
// init_master for a generation about to serve (the first error stops),
// and, in a worker, init_worker, quit_worker, idle_worker and exit_worker.
Status init_master(const Cycle& c);
// USR1 in this process: the error logs of `c`, then the modules' logs.
// The master (`master`) gives the files it makes to the workers' user.
void reopen_logs(Cycle& c, bool master);
Status init_worker(const Cycle& c, int slot);
uint64_t worker_capabilities(const Cycle& c);
void stop_worker();
void quit_worker();
void idle_worker();
void exit_worker();

}  // namespace gatehouse::process
