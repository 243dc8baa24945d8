// The response path (output.cc): the header and body filters, then the
// Stream (see fwd.h for the filter contract, stream.h for the stream's).
//
// Content handlers produce a response in one of two ways:
//   * at once: set r.out (status, headers, content_length...) and r.body,
//     mark the last buffer last_buf, return Next::Respond; the engine
//     calls finalize_response();
//   * streaming (proxy): call send_header(r) once, then send_body(r, c)
//     for each piece, the last one ending with a last_buf; return
//     Next::Suspend meanwhile, and pace the pieces by output_pending()
//     and on_output_drained().
// A handler that returns Respond with status >= 300 and an empty body gets
// the standard page for that status, or the "error_page" configured for it.
#pragma once

#include <span>
#include <string_view>

#include "core/buf.h"
#include "http/fwd.h"

namespace gatehouse::http {

// Sends what r.out and r.body hold (after a Respond): the status page when
// there is no body, then the filters. A head already sent means a
// streaming handler failed midway: the stream is aborted instead.
void finalize_response(Request& r);

// Runs the header filters (once per response; a held filter is run again
// later by the engine) and hands the head to the stream. Pass: the head
// went out; Hold: a filter holds it, body chains wait; Fail: the stream is
// aborted by the caller.
Flow send_header(Request& r);
// An interim response (103 Early Hints) with `fields` as they are, before
// the head: for the client's request only (not a subrequest's), and not
// once the head went. No filter sees it.
Flow send_interim(Request& r, int status, std::span<const Header> fields);
// Queues c (moved out) for the body filters and runs them. Fail: the
// response cannot continue; the caller aborts the stream.
Flow send_body(Request& r, Chain& c);
// Writes what the stream holds now (a head whose body is still coming).
void flush_output(Request& r);
// Whether body chains may carry pipe pieces (core/buf.h, event/pipe.h)
// from here on: the head went out, no body filter has work in this
// response (so none would read the bytes), it has a body, and the stream
// sends such pieces as they are. A producer asks once, after
// send_header() passed.
bool output_takes_pipes(Request& r);

// Bytes of the response not yet written: waiting for a filter, or in the
// stream's queue.
size_t output_pending(const Request& r);
// The stream holds enough unwritten bytes for now (kOutputBusy): a filter
// that would produce more holds instead (back-pressure).
bool output_busy(const Request& r);
inline constexpr size_t kOutputBusy = 64 * 1024;
// Called (from the loop) each time everything was written after some
// bytes had to wait, until reset with nullptr: the producer may send more.
void on_output_drained(Request& r, void (*fn)(Request& r));
// A filter that held because of its own work (a timer, a cache write)
// calls this when it is ready: the filters run again from the loop.
void resume_output(Request& r);

// The stream's call (from a posted event) when its queue emptied: held
// filters go on, then the producer is told (on_output_drained).
void output_drained(Request& r);

// nginx's HTML page for a status, in r's arena.
std::string_view status_page(Request& r, int status);
// The standard reason phrase, "Not Found"; empty for an unknown code.
std::string_view reason_phrase(int status);
// nginx's 495-497 are sent as 400 with a page of their own.
inline bool is_tls_400(int status) { return status >= 495 && status <= 497; }
// The Server field's value: "gatehouse" or, with server_tokens on,
// "gatehouse/VERSION" (build: and " (NAME)" of configure --build=NAME).
std::string_view server_token(const Request& r);
// The Date field's value now, cached for the second.
std::string_view http_date_now();
// A filter that changes the body's bytes keeps the ETag only as a weak
// one (RFC 9110 8.8.3.3; nginx's ngx_http_weak_etag): "W/" goes before a
// strong tag, and a value that is not a quoted tag goes.
void weaken_etag(Request& r, ResponseHead& h);

}  // namespace gatehouse::http
