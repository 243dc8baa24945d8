// The HTTP layer's vocabulary: phases, handler results, filters, and the
// hooks an HTTP module declares (Module::http).
//
// Request path (see README in this directory): the connection parses a
// request head, picks the server and location, then runs the phase
// handlers, flat and in module order within each phase. A handler answers:
//   Decline  not mine: the next handler of this phase runs
//   Proceed  this phase is done: the next phase runs
//   Suspend  waiting for I/O or a timer; whoever resumes calls run_phases()
//   Respond  r.status (and maybe a body) is set: go to the response
// The response passes header filters once and body filters for each chain,
// in module order, then the writer. A filter returns a Flow and never
// calls its successor:
//   Pass  go on with what it put in `out`
//   Hold  it keeps the data for now and will resume the request later
//   Fail  the response cannot continue: the connection is closed
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace gatehouse {
class Chain;
}

namespace gatehouse::http {

class Request;
struct ResponseHead;
class HttpConnection;
struct SrvConf;
struct LocConf;

enum class Phase : uint8_t {
    PostRead,       // right after the head is read (realip, limits)
    ServerRewrite,  // rewrite directives at server level
    Rewrite,        // rewrite directives in the chosen location
    Preaccess,      // limit_req, limit_conn
    Access,         // allow/deny, auth
    Precontent,     // try_files, mirror
    Content,        // return, static, proxy, ...
    Log,            // after the response: access_log
};
inline constexpr int kPhases = 8;

enum class Next : uint8_t { Decline, Proceed, Suspend, Respond };
enum class Flow : uint8_t { Pass, Hold, Fail };

using PhaseFn = Next (*)(Request& r);
using HeaderFilter = Flow (*)(Request& r, ResponseHead& h);
using BodyFilter = Flow (*)(Request& r, Chain& in, Chain& out);

struct PhaseHandler {
    Phase phase;
    PhaseFn fn;
};

struct VariableDef;

struct ModuleHooks {
    std::span<const PhaseHandler> phases;
    HeaderFilter header_filter = nullptr;
    BodyFilter body_filter = nullptr;
    std::span<const VariableDef> variables;
};

}  // namespace gatehouse::http
