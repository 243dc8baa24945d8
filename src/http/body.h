// The client's request body, read on demand, and the response writer's
// back-pressure, for handlers that stream (proxy).
//
// Bodies are read only when a handler asks: until then (and for handlers
// that never ask) the connection discards the body after the response.
// read_body() decodes Content-Length or chunked framing and hands the
// bytes over in pieces, as fast as the consumer takes them: at most one
// client_body_buffer_size of input is held in memory. client_max_body_size
// (413), client_body_timeout (408, the connection closes) and malformed
// chunks (400) end the request through respond_status; "Expect:
// 100-continue" is answered when reading starts.
#pragma once

#include "core/buf.h"
#include "http/fwd.h"

namespace gatehouse::http {

// Called with the next piece of the body: memory Bufs valid until the
// next call or the end of the request (they point into slabs the Bufs
// keep alive, so a consumer may hold them longer by keeping the Bufs).
// The last piece has last_buf set (a body of 0 bytes is one empty last
// Buf). Return true to keep reading, false to pause until resume_body().
using BodySink = bool (*)(Request& r, Chain& piece);

// Starts reading r's body. A request without a body gets one empty last
// piece at once. Errors answer the client (see above) and the sink is not
// called again.
void read_body(Request& r, BodySink sink);
void resume_body(Request& r);
// The request has a body that was not (fully) read by a handler.
bool body_pending(const Request& r);

// Bytes queued for the client and not yet written.
size_t output_pending(Request& r);
// Called (from the loop) each time the output queue empties after being
// non-empty, until reset with nullptr: the producer may send more.
void on_output_drained(Request& r, void (*fn)(Request& r));

}  // namespace gatehouse::http
