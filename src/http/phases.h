// The phase engine: from a request head to a response (see fwd.h for the
// handler contract, output.h for the response path).
//
// A protocol front-end fills a Request's head (r.in, r.headers, r.method,
// r.request_line, r.unparsed_uri, r.http_version, the body's length) and
// calls start_request(); everything after that is protocol-neutral.
#pragma once

#include <string_view>

#include "core/buf.h"
#include "http/fwd.h"
#include "http/output.h"

namespace gatehouse::http {

struct HttpMainConf;
// Builds the flat handler array of a generation (after the http block).
void build_phase_engine(HttpMainConf& m);

// The neutral half of a request's start: the Host (lower case, no port),
// the server it names, the request-target's form, the path (decoded and
// normalised: ".." never escapes the root), the extension; then the
// phases. A target this server does not serve (OPTIONS *, CONNECT) or a
// path that cannot be normalised is answered 405/400.
void start_request(Request& r);
// A request whose head could not be parsed: the standard page for
// `status` (no error_page, the connection closes after it); `reason` is
// logged at info by the caller.
void reject_request(Request& r, int status, std::string_view reason);

// Runs handlers from r.phase_index until one suspends or responds.
void run_phases(Request& r);
// The same from the loop (r.resume_ev), never under the caller's frame.
void post_resume(Request& r);

// Sends the status page (or error_page) for `status`: Respond, or Redirect
// when an error_page sends the request elsewhere; `reason` is logged at
// info for 4xx produced by validation.
Next respond_status(Request& r, int status, std::string_view reason = {});

// Restarts processing of r with a new URI (error_page, try_files, index):
// location lookup, then the rewrite phases again. args may be empty.
// Counts against the limit of 10 redirections (then 500). Returns
// Redirect (or Respond for the 500), for the handler to return.
Next internal_redirect(Request& r, std::string_view uri, std::string_view args);
// Continues in the named location "@name" of r's server.
Next named_redirect(Request& r, std::string_view name);

// For code outside the engine's loop (a handler resumed by I/O) that got a
// Next from respond_status() or a redirect: Respond finalizes the
// response, Redirect continues the phases from the loop, Suspend waits.
void continue_request(Request& r, Next n);

// Access-phase handlers (allow/deny, auth_basic, auth_request) give
// their verdict through these two, so that "satisfy" is decided in one
// place [nginx ngx_http_core_access_phase]. A handler with nothing to
// check (no rules here) returns Next::Decline itself.
//  - satisfy all: granted goes on to the next check (Decline); denied
//    answers `status` at once (401 or 403, or 500 for a failed check).
//  - satisfy any: granted ends the phase (Proceed); a denial (401/403) is
//    remembered and the next check runs; when none grants, the request
//    gets the remembered status (401 wins over 403, so that a client
//    that could authenticate is asked to). A 500 answers at once.
// A final 401 waits "auth_delay" first (the request is suspended on a
// timer; Suspend is returned then).
Next access_granted(Request& r);
Next access_denied(Request& r, int status);

// The Log phase: every module's handler, once the response is complete or
// the request was cut short. The stream calls it before it lets the
// request go.
void run_log_phase(Request& r);

}  // namespace gatehouse::http
