// A process a module asks the master for, besides the workers (the cache
// manager and the cache loader): what it does, and whether it comes back
// when it dies. The master forks it with each generation, as the workers,
// and retires it with them on a reload or a stop; the process layer runs
// it (src/process/helper.cc), the module only gives its steps.
#pragma once

#include <chrono>
#include <string_view>

namespace gatehouse::conf {

struct ProcessSpec {
    // "cache manager process": its title in ps(1) after "gatehouse: ",
    // and its name in the master's log lines. Static text.
    std::string_view title;
    // One piece of its work; returns how long to rest before the next
    // one, or a negative duration when it is done for good (the process
    // exits with code 0). A step should take at most a fraction of a
    // second: signals (QUIT, TERM) are looked at between steps.
    std::chrono::milliseconds (*step)(void* data) = nullptr;
    void* data = nullptr;  // owner: the generation
    // Replaced when it dies before it is done (not when it is done).
    bool respawn = true;
};

}  // namespace gatehouse::conf
