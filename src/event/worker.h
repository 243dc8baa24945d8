// The worker this process runs, as the code above the event layer reaches
// it: the loop and the connection table. Protocol and module code uses
// them and never owns them.
//
// Set by the worker (src/process/worker.cc) before it serves, reset to
// null after its loop has stopped; unit tests install their own (see
// tests/unit/upstream/worker_fixture.h). Loop thread only.
#pragma once

#include "event/fwd.h"

namespace gatehouse::event {

Loop& worker_loop();
// Whether a worker's loop is set (not in the master, nor in a unit test
// that installed none).
bool has_worker_loop();
ConnectionTable& worker_connections();
void set_worker(Loop* loop, ConnectionTable* table);

}  // namespace gatehouse::event
