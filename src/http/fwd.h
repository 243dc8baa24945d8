// The HTTP layer's vocabulary: phases, handler results, filters, and the
// hooks an HTTP module declares (Module::http).
//
// Request path (see README in this directory): a protocol front-end (the
// HTTP/1.1 connection, src/http/v1) parses a request head into a Request
// on its Stream (stream.h) and starts it (start_request, phases.h): the
// server and location are chosen and the phase handlers run, flat and in
// module order within each phase. A handler answers:
//   Decline   not mine: the next handler of this phase runs
//   Proceed   this phase is done: the next phase runs
//   Suspend   waiting for I/O or a timer; whoever resumes calls
//             run_phases() (or post_resume())
//   Respond   r.out.status (and maybe r.body) is set: go to the response
//   Redirect  an internal redirect (internal_redirect, named_redirect, an
//             error_page) chose where the engine goes on: it continues
//             there, from the rewrite phases
//
// The response passes the header filters once and the body filters for
// each chain, in module order, then the Stream. A filter never calls its
// successor; the engine (output.cc) does. A filter returns a Flow:
//   Pass  it took everything from `in` and appended its output to `out`
//         (maybe nothing yet: a compressor that waits for more input)
//   Hold  it cannot go on now. What it left in `in` stays queued for it;
//         what it appended to `out` goes on. It is called again (with the
//         rest of `in`, after any new input) when the stream has written
//         what was pending (back-pressure), or when the filter itself
//         calls resume_output(r) because its own work is ready (a timer,
//         a cache write, a compressor's output). A header filter that
//         holds is called again with the same head the same ways; body
//         chains wait for it.
//   Fail  the response cannot continue: the stream is aborted
// Appending, never replacing: `out` may still hold what the next filter
// has not taken. A filter that produces much from little input (a
// decompressor, a file reader) checks output_busy(r) and holds rather
// than queueing more, and bounds its work per call, so that neither a
// slow client nor a large body makes one loop turn unbounded. Example:
// the throttling filter of tests/unit/http/filters_test.cc.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "conf/fwd.h"

namespace gatehouse {
class Chain;
}

namespace gatehouse::http {

class Request;
class Stream;
struct Header;
struct ResponseHead;
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

enum class Next : uint8_t { Decline, Proceed, Suspend, Respond, Redirect };
enum class Flow : uint8_t { Pass, Hold, Fail };

using PhaseFn = Next (*)(Request& r);
using HeaderFilter = Flow (*)(Request& r, ResponseHead& h);
using BodyFilter = Flow (*)(Request& r, Chain& in, Chain& out);

struct PhaseHandler {
    Phase phase;
    PhaseFn fn;
    // Whether fn can have anything to do for a request while `loc` holds
    // its location-level structs (of server `srv`, in the generation of
    // `main`). Where it says no, the engine passes the step over, which
    // must be exactly what fn would have done: Decline, with no effect.
    // Asked once per server, location and limit_except block when the
    // http block has been read and merged (build_phase_engine), so it may
    // read only what directives and merges set. Arrays it is not asked
    // about ("if" blocks) run every step. Null: always.
    bool (*wanted)(conf::ConfArray main, conf::ConfArray srv, conf::ConfArray loc) = nullptr;
};

struct VariableDef;

struct ModuleHooks {
    std::span<const PhaseHandler> phases;
    HeaderFilter header_filter = nullptr;
    BodyFilter body_filter = nullptr;
    // Whether body_filter has work in this response, asked once when the
    // head has gone out (every header filter has run): a filter that
    // would only pass its input on is left out of this response's chain,
    // which then costs nothing. Null: always has.
    bool (*body_filter_engaged)(const Request& r) = nullptr;
    // Whether any level of the generation configures the filters above,
    // or after_response below (their directives appear somewhere), asked
    // once when the chains are built: false leaves them out of every
    // response, where they would only pass. Null: always in.
    bool (*filters_used)(conf::ConfArray main) = nullptr;
    // Whether those filters can have work in a response served where the
    // location-level structs are `loc` (of server `srv`): false leaves
    // both out of that location's responses. Asked as PhaseHandler::wanted
    // is, once per location after the merge ("if" blocks run every
    // filter), so it may read only what directives and merges set; a
    // filter whose work can come from elsewhere (an origin's header, a
    // variable) must say yes. Null: always.
    bool (*filters_wanted)(conf::ConfArray main, conf::ConfArray srv, conf::ConfArray loc) = nullptr;
    std::span<const VariableDef> variables;
    // Called once for a client's request (never a subrequest) whose
    // response is complete, its last byte written, before its Log phase:
    // the place for work that follows the response (post_action).
    // Background subrequests started here hold the request's end like
    // any other (hold_for_background, subrequest.h). Not called for a
    // response cut short (an abort, "return 444") nor for one made whole
    // after its client left (stream.h "Orphans").
    void (*after_response)(Request& r) = nullptr;
    // The module's request context (Request::ctx) is kept across internal
    // and named redirects, which clear every other module's: for what is
    // decided once per request whatever location ends up serving it (a
    // trace's identities).
    bool ctx_survives_redirects = false;
};

}  // namespace gatehouse::http
