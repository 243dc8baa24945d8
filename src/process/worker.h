// A worker process: one event loop serving the listening sockets it
// inherited, until told to stop.
#pragma once

#include <vector>

#include "process/cycle.h"
#include "process/listening.h"

namespace gatehouse::process {

// Runs the worker loop; returns the exit code. `slot` numbers the worker
// (0..worker_processes-1). `forked`: a child of the master, whose copies
// of the listening sockets it may close when it retires; false in
// single-process mode, where the master itself calls it.
int worker_main(const Cycle& cycle, const std::vector<Listening>& ls, int slot, bool forked);

// A forked process of a master running as root becomes the workers' user
// and group (CoreConf::worker_user); `forked` false (single-process mode)
// keeps the master's unless "user" was given. The error names the call.
Status drop_privileges(const CoreConf& cc, bool forked, uint64_t keep_caps = 0);

}  // namespace gatehouse::process
