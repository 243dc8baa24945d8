// GH_CHECK: always on; GH_ASSERT: debug builds only. Both abort with
// file:line on the impossible. Never use them on what the network, the
// config or the environment sends: those get an error path.
#pragma once

#include "objs/gh_config.h"

namespace gatehouse {
// Cold, as log::emit() is: the failing branch leaves the caller's body.
[[noreturn, gnu::cold]] void check_failed(const char* expr, const char* file, int line);
}

#define GH_CHECK(e) \
    ((e) ? (void)0 : ::gatehouse::check_failed(#e, __FILE__, __LINE__))

#if GH_DEBUG
#define GH_ASSERT(e) GH_CHECK(e)
#else
#define GH_ASSERT(e) ((void)0)
#endif
