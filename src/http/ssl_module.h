// ssl_module: TLS termination on "listen ... ssl" ports [nginx http ssl
// module]. Its directives live in http and server blocks; after the http
// block it builds one tls::Context per server reachable on a TLS port
// (src/http/modules/ssl.cc). The HTTP/1 front-end reaches it through
// this header for the context to start a handshake with; the checks a
// request on a TLS port passes once its server is chosen are a PostRead
// handler of the module.
#pragma once

#include "conf/module.h"
#include "event/fwd.h"
#include "http/fwd.h"

namespace gatehouse::tls {
class Context;
class Session;
}

namespace gatehouse::http {

extern const conf::Module ssl_module;

// The TLS context of `srv`; null when it has no certificate. Owner: the
// generation.
const tls::Context* ssl_context(const SrvConf& srv);

// The one seam between a TLS handshake and the connection's first
// request, for both front-ends (the HTTP/1 one calls it before it reads
// a head or hands an "h2" connection to the HTTP/2 one): checks that
// need I/O after the handshake ("ssl_ocsp": the client certificate asked
// about at the OCSP responder). `s.user` is the connection's Stream.
// true: go on now (without "ssl_ocsp": at once, for the cost of a few
// tests). false: a check runs, held by `s` (destroying the session ends
// it); `resume` runs later from the loop, never under this call, and the
// front-end reads nothing meanwhile. Either way a failed check is in the
// session (Session::verify_failure) for the request to answer 400.
bool ssl_after_handshake(tls::Session& s, event::Callback resume);


}  // namespace gatehouse::http
