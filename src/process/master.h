// Running the server: the master process and its workers.
#pragma once

#include <memory>

#include "process/cycle.h"
#include "process/options.h"

namespace gatehouse::process {

// Opens logs, daemonizes if asked, writes the pid file, binds the
// listening sockets, and runs the master (or, with "master_process off",
// a single worker) until it is told to stop. Returns the exit code.
int run(const Options& o, std::unique_ptr<Cycle> cycle);

}  // namespace gatehouse::process
