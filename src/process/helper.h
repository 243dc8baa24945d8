// A process a module asked for besides the workers (conf::ProcessSpec):
// the cache manager, the cache loader. It has no event loop: it runs the
// module's steps, resting between them, until the step says it is done
// or the master tells it to stop.
#pragma once

#include "conf/process_spec.h"
#include "process/cycle.h"

namespace gatehouse::process {

// Runs `p` in this (forked) process; returns the exit code: 0 when done
// or told to stop (QUIT, TERM, INT), 2 when it could not start.
int helper_main(const Cycle& cycle, const conf::ProcessSpec& p);

}  // namespace gatehouse::process
