// The access log (log_module, src/http/modules/log.cc): what a process
// calls on signals and at exit.
//
// Access log files are opened when a configuration generation is loaded
// (by the master, before workers fork) and belong to that generation: one
// descriptor per path, shared by every "access_log" naming it, closed when
// the generation is destroyed. Each process (master, every worker) holds
// its own copies of the descriptors and its own "buffer=" memory, so each
// calls these for itself. Loop thread only.
#pragma once

namespace gatehouse::http {

// USR1: writes what the buffers hold to the old files, then reopens every
// access log path of every live generation in this process in place: the
// descriptor number stays the same, so nothing holding it needs telling.
// A path that cannot be opened keeps writing to its old file; the error is
// logged at alert, naming the call, the path and errno.
void reopen_access_logs();

// Writes what every "buffer=" holds, for a worker that exits (nginx
// flushes on shutdown). Destroying a generation does it as well.
void flush_access_logs();

}  // namespace gatehouse::http
