// What HTTP code reaches of the worker it runs in: the loop and the
// connection table. Set by the worker before it serves (src/process).
#pragma once

#include "event/fwd.h"

namespace gatehouse::http {

event::Loop& worker_loop();
event::ConnectionTable& worker_connections();
void set_worker(event::Loop* loop, event::ConnectionTable* table);

}  // namespace gatehouse::http
