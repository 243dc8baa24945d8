#include "process/signals.h"

namespace gatehouse::process {

int signal_for(std::string_view name) {
    if (name == "stop") return SIGTERM;
    if (name == "quit") return SIGQUIT;
    if (name == "reopen") return SIGUSR1;
    if (name == "reload") return SIGHUP;
    return 0;
}

}  // namespace gatehouse::process
