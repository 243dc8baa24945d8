// Signals the master and workers react to, as nginx's.
#pragma once

#include <signal.h>

#include <string_view>

namespace gatehouse::process {

// -s names to signals: stop TERM, quit QUIT, reopen USR1, reload HUP.
int signal_for(std::string_view name);

}  // namespace gatehouse::process
