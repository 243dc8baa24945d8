// The "events" block: connection processing settings of every worker.
#pragma once

#include <optional>

#include "conf/module.h"

namespace gatehouse::event {

struct EventsConf {
    std::optional<uint64_t> worker_connections;  // "worker_connections"
    std::optional<bool> multi_accept;            // "multi_accept"
    std::optional<bool> accept_mutex;            // "accept_mutex" (no effect: EPOLLEXCLUSIVE)
    std::optional<std::string> use;              // "use": only "epoll"
    std::optional<uint64_t> worker_pipes;        // "worker_pipes": for splice() (event/pipe.h)
};

inline constexpr uint64_t kDefaultWorkerConnections = 512;
inline constexpr uint64_t kDefaultWorkerPipes = 256;

extern const conf::Module events_module;

}  // namespace gatehouse::event
