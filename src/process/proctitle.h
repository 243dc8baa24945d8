// Process titles, as nginx sets them on Linux: what ps(1) and
// /proc/PID/cmdline show of each process,
//
//     gatehouse: master process /usr/sbin/gatehouse -c /etc/gh/gh.conf
//     gatehouse: worker process
//     gatehouse: worker process is shutting down
//
// Linux has no setproctitle(): the kernel shows the memory that held the
// argument strings at exec. A title is written there, and may run on into
// the environment strings that follow them, which init_proctitle() first
// moves to memory of their own (getenv(), setenv() and exec with environ
// keep working: only the strings move, not the array).
#pragma once

#include <string_view>

namespace gatehouse::process {

// Call once, early in main(), after the command line was copied (Options
// keeps its own strings) and before anything keeps pointers into argv or
// the environment strings.
void init_proctitle(int argc, char** argv);

// Shows "gatehouse: <title>", cut to the room there is. A no-op before
// init_proctitle().
void set_proctitle(std::string_view title);

}  // namespace gatehouse::process
