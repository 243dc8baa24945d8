// The phase engine and the response path (see fwd.h for the contract).
//
// Content handlers produce a response in one of two ways:
//   * at once: set r.out (status, headers, content_length...) and r.body,
//     mark the last buffer last_buf, return Next::Respond;
//   * streaming (proxy): call send_header(r) once, then send_body(r, c)
//     for each piece, the last one ending with a last_buf; return
//     Next::Suspend meanwhile.
// A handler that returns Respond with status >= 300 and an empty body gets
// the standard page for that status, or the "error_page" configured for it.
#pragma once

#include <string_view>

#include "core/buf.h"
#include "http/fwd.h"

namespace gatehouse::http {

struct HttpMainConf;
// Builds the flat handler array of a generation (after the http block).
void build_phase_engine(HttpMainConf& m);

// Runs handlers from r.phase_index until one suspends or responds.
void run_phases(Request& r);

// Sends the status page (or error_page) for `status`; `reason` is logged
// at info for 4xx produced by validation.
Next respond_status(Request& r, int status, std::string_view reason = {});

// Restarts processing of r with a new URI (error_page, try_files, index):
// location lookup, then the rewrite phases again. args may be empty.
// Counts against the limit of 10 redirections (then 500).
Next internal_redirect(Request& r, std::string_view uri, std::string_view args);
// Continues in the named location "@name" of r's server.
Next named_redirect(Request& r, std::string_view name);

// Sends what r.out and r.body hold (after a Respond): the status page when
// there is no body, then the header and body filters.
void finalize_response(Request& r);

// Runs the header filters and queues the head. Once per response.
Flow send_header(Request& r);
// Runs the body filters over c and queues what comes out.
Flow send_body(Request& r, Chain& c);

// nginx's HTML page for a status, in r's arena.
std::string_view status_page(Request& r, int status);

// The standard reason phrase, "Not Found"; empty for an unknown code.
std::string_view reason_phrase(int status);

}  // namespace gatehouse::http
