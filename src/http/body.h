// The client's request body, for handlers (proxy, and later auth and
// mirror subrequests), on any protocol.
//
// Bodies are read only when a handler asks; until then (and for handlers
// that never ask) the stream discards the body after the response.
// Two ways to read one:
//   - streamed: read_body() hands the bytes over in pieces, as fast as the
//     consumer takes them (see BodySink in stream.h): at most one
//     client_body_buffer_size of input is held in memory, whatever the
//     framing (a million one-byte chunks included). A copy is kept while
//     the body fits client_body_buffer_size, and once it all passed it is
//     r.body_kept as if read whole ($request_body, an error_page's
//     handler); a larger body is gone once handed over.
//   - whole: read_whole_body() keeps it, in memory up to
//     client_body_buffer_size, else in a temp file under
//     client_body_temp_path, as r.body_kept; a handler after an internal
//     redirect (error_page, try_files) finds it there and sends it again.
// client_max_body_size (413), client_body_timeout (408, the connection
// closes) and malformed chunks (400) end the request through the
// response path; "Expect: 100-continue" is answered when reading starts.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "conf/fwd.h"
#include "core/buf.h"
#include "core/result.h"
#include "http/fwd.h"
#include "http/stream.h"

namespace gatehouse::http {

// Starts streaming r's body to `sink` (see Stream::read_body). False when
// an earlier reader took the body in pieces already: it cannot be read
// again.
//
// With `takes_pipes`, the sink may be handed pipe pieces (core/buf.h,
// event/pipe.h): bytes spliced from the client's socket into a kernel
// pipe, never copied into user space. The stream decides: HTTP/1 on a
// plain socket, a Content-Length body larger than client_body_buffer_size
// (of which no copy is kept anyway), a pipe to be had. The sink must put
// them in a ChainWriter, which empties the pipe, and the stream fills the
// pipe again only once it is empty. A body spliced is gone once handed
// over, as any body past client_body_buffer_size.
bool read_body(Request& r, BodySink sink, bool takes_pipes = false);
void resume_body(Request& r);

// Reads r's body whole (or finds it already read) and calls done(r) once
// it is in r.body_kept: at once when it already is, else from the loop.
// On a read error the stream answers the client and done is not called;
// a temp file that cannot be written answers 500. False when an earlier
// reader streamed the body away.
bool read_whole_body(Request& r, void (*done)(Request& r));

// Where temp files go without a "*_temp_path" directive, under the prefix.
inline constexpr std::string_view kClientBodyTempDir = "client_body_temp";
inline constexpr std::string_view kProxyTempDir = "proxy_temp";

// Makes the temp directory `dir` (mode 0700) unless it exists; with
// `owner` (the master runs as root), gives it to that user, so that the
// workers can create their temp files in it [nginx ngx_create_paths].
// The master does this for every temp directory of a configuration before
// its workers start (http_core_module's init_master). The error names the
// call, the path and errno.
Status make_temp_dir(const std::string& dir, const std::optional<conf::WorkerUser>& owner);

// A temp file in `dir`, unlinked from the start (O_TMPFILE, or a name
// removed at once where the file system lacks it): nothing is left behind
// when the worker dies. With `name`, a named file instead, its path
// written there, that stays until the caller removes it
// ("client_body_in_file_only", $request_body_file, as in nginx).
// The directory is made on first use. The error names the call, the path
// and errno.
Result<int> open_temp_file(const std::string& dir, std::string* name = nullptr);
// The directory for a kind of temp file: `path` when configured (a
// "*_temp_path" directive), else `def` under the prefix.
std::string temp_dir(Request& r, const std::optional<std::string>& path, std::string_view def);

}  // namespace gatehouse::http
