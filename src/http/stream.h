// The transport under a Request: what a protocol front-end does for the
// protocol-neutral request path (phases, filters, modules).
//
// One Stream carries one Request at a time. Implementations: the HTTP/1.1
// connection (src/http/v1/connection.h), which serves its requests one
// after the other, and the test stream of the unit tests
// (tests/unit/http/test_stream.h); an HTTP/2 stream will be a third. Code
// above this interface never learns which one it runs on: it reaches the
// client only through the Request and this Stream.
//
// Contract, for every implementation:
//  - Output. The response path calls send_head() once, then send_body()
//    for each chain that passed the body filters; the chain whose last
//    Buf has last_buf ends the response. The stream frames what it is
//    given (HTTP/1: the status line, Connection, chunked encoding), moves
//    the Bufs out of the chain, and writes when it can; bytes it holds
//    count in output_pending(). When its queue empties after being
//    non-empty it calls http::output_drained(r) from a posted event, never
//    under the frames of the caller that queued the bytes. Once the last
//    byte is out it finishes the request, again from a posted event: the
//    Log phase runs (http::run_log_phase) and the Request is destroyed.
//    Before that it asks http::hold_for_background() (subrequest.h),
//    saying whether the client got the response (not an orphan's), which
//    first starts what follows a delivered one (post_action): while
//    background subrequests of the request run, it waits for the event
//    it passed there, and takes no next request meanwhile. A response
//    cut short (abort()) never asks.
//  - Failure. abort() ends the response abnormally (HTTP/1: the connection
//    closes, so the client cannot take a cut body for a whole one). The
//    Request, and everything in its arena, is destroyed at the end of the
//    loop iteration, never under the caller's frame; until then closed()
//    is true and callers stop working on the request.
//  - Request body. Nothing is read until a handler asks (read_body); what
//    no handler read is discarded by the stream after the response, or
//    the connection is closed. Errors (413, 400, 408) are answered by the
//    stream through the response path; the sink is not called again.
//  - Orphans. When the client goes away (a failed write, a close seen
//    while an origin works) and the request has outlive_client set, with
//    its body all read, the stream does not end it: it stops talking to
//    the client, accepts and drops the output (output_pending() is 0,
//    a producer that waited for room is told it drained) and finishes the
//    request, Log phase included, when the last Buf arrives or abort() is
//    called. closed() stays false meanwhile.
//  - Tunnels. After a 101 response has left (output_pending() == 0),
//    open_tunnel() turns the stream into a byte pipe (an event::Duplex)
//    until the Duplex is closed, which ends the request.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <string_view>

#include "core/buf.h"
#include "event/duplex.h"
#include "event/fwd.h"
#include "http/fwd.h"

namespace gatehouse::tls {
class Session;
}

namespace gatehouse::http {

struct AddrServers;
struct ProxyHeader;

// Called with the next piece of the request body: memory Bufs that keep
// their slabs alive, so a consumer may hold them by keeping the Bufs. The
// last piece has last_buf set (an empty body is one empty last Buf).
// Return true to keep reading, false to pause until Stream::resume_body().
using BodySink = bool (*)(Request& r, Chain& piece);

class Stream {
public:
    // ---- the connection the stream belongs to ---------------------------------
    // The client's address as the socket has it (a Request copies it into
    // remote_addr, which a module may replace).
    virtual const sockaddr* peer_sockaddr() const = 0;
    virtual std::string_view peer_text() const = 0;  // "192.0.2.1", "::1", "unix:"
    virtual uint16_t peer_port() const = 0;
    virtual std::string_view local_text() = 0;  // the server's address ($server_addr)
    virtual uint16_t local_port() = 0;
    // The TLS session of the connection; null on plain HTTP.
    virtual tls::Session* tls() const = 0;
    // A plain HTTP request arrived on a TLS port (nginx's 497).
    virtual bool plain_on_tls_port() const = 0;
    // $connection, $connection_requests and $connection_time.
    virtual uint64_t connection_number() const = 0;
    virtual uint32_t connection_requests() const = 0;
    virtual event::Msec connection_start() const = 0;  // the loop's clock
    // The servers of the local address the connection came to.
    virtual const AddrServers& servers() = 0;
    // The PROXY protocol header the connection began with ("listen ...
    // proxy_protocol"), read before anything else; null when the address
    // does not take one. Owner: the connection, for its whole life.
    virtual const ProxyHeader* proxy_protocol() const = 0;

    // ---- the response ------------------------------------------------------------
    // An interim response (103 Early Hints) before the head, with these
    // fields as they are: written at once. Only an HTTP/1.1 or HTTP/2
    // client can take one (RFC 9110 15.2); a stream that cannot (a
    // subrequest's) drops it. Fail: the stream is gone.
    virtual Flow send_interim(Request&, int /*status*/, std::span<const Header> /*fields*/) { return Flow::Pass; }
    // The head after the header filters, once; Location is already
    // absolute when it must be. Fail: the stream is gone.
    virtual Flow send_head(Request& r, const ResponseHead& h) = 0;
    // Body bytes after the body filters, moved out of `in`; in.last() ends
    // the response. Fail: the stream is gone.
    virtual Flow send_body(Request& r, Chain& in) = 0;
    // Whether send_body() may be given pipe pieces (core/buf.h) for the
    // current response and send them without reading them into memory
    // (a plain socket). Others never get any.
    virtual bool takes_pipes() const { return false; }
    // Writes what is queued now rather than with the next body bytes (a
    // head whose body is still on its way).
    virtual void flush() = 0;
    // Bytes queued and not yet written.
    virtual size_t output_pending() const = 0;
    // The connection should not serve another request after this one
    // (HTTP/1: "Connection: close"; nothing for multiplexed protocols). A
    // response that left the request stream in an unknown state (a body
    // not read, a refused head) asks for it.
    virtual void close_after() = 0;
    // See the contract above.
    virtual void abort() = 0;
    virtual bool closed() const = 0;

    // ---- the request body ----------------------------------------------------------
    // Starts handing r's body to `sink`. False when the body was already
    // handed to an earlier reader (a streaming one: it is gone), in which
    // case nothing is called.
    virtual bool read_body(Request& r, BodySink sink) = 0;
    virtual void resume_body() = 0;

    // ---- tunnels ---------------------------------------------------------------------------
    // See the contract above. `leftover` receives the bytes the client
    // sent after the request, already read (valid until the tunnel ends).
    virtual event::Duplex& open_tunnel(event::Callback on_ready, std::string_view* leftover) = 0;

protected:
    ~Stream() = default;
};

}  // namespace gatehouse::http
