// Listening sockets: bound by the master, inherited by the workers.
#pragma once

#include <string>
#include <vector>

#include "core/result.h"
#include "http/core_module.h"

namespace gatehouse::process {

struct Listening {
    int fd = -1;                       // owned: closed by close_listening()
    std::string text;                  // "127.0.0.1:8080", for messages
    const http::ListenPort* port = nullptr;  // owner: the generation
};

// Binds every ListenPort of the http block. Sockets whose address appears
// in `reuse` (a running generation's) are taken over rather than bound
// again, so a reload never refuses a connection; they are removed from
// `reuse`. The error names the call, the address and errno.
Result<std::vector<Listening>> open_listening(const http::HttpMainConf* m, std::vector<Listening>* reuse);
void close_listening(std::vector<Listening>& ls);

}  // namespace gatehouse::process
