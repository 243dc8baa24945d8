#include "event/worker.h"

#include "core/assert.h"

namespace gatehouse::event {

namespace {
Loop* g_loop = nullptr;
ConnectionTable* g_table = nullptr;
}  // namespace

Loop& worker_loop() {
    GH_ASSERT(g_loop != nullptr);
    return *g_loop;
}

bool has_worker_loop() { return g_loop != nullptr; }

ConnectionTable& worker_connections() {
    GH_ASSERT(g_table != nullptr);
    return *g_table;
}

void set_worker(Loop* loop, ConnectionTable* table) {
    g_loop = loop;
    g_table = table;
}

}  // namespace gatehouse::event
