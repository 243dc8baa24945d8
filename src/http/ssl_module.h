// ssl_module: TLS termination on "listen ... ssl" ports [nginx http ssl
// module]. Its directives live in http and server blocks; after the http
// block it builds one tls::Context per server reachable on a TLS port
// (src/http/modules/ssl.cc). HttpConnection reaches it through this
// header: the context to start a handshake with, and the checks a
// request on a TLS port passes once its head is read.
#pragma once

#include "conf/module.h"
#include "http/fwd.h"

namespace gatehouse::tls {
class Context;
}

namespace gatehouse::http {

extern const conf::Module ssl_module;

// The TLS context of `srv`; null when it has no certificate. Owner: the
// generation.
const tls::Context* ssl_context(const SrvConf& srv);

// Checks a request whose head came over a TLS port, once its server is
// chosen: 0 to go on, or the status to answer, with the reason logged
// at info:
//   497  `plain`: an HTTP request sent to the TLS port unencrypted
//   421  SNI chose another server and this one verifies clients
//   495  the client certificate failed verification
//   496  "ssl_verify_client on" and no client certificate
// 495-497 go out as 400 with nginx's pages; "error_page 497" and the
// others may redirect them.
int ssl_check_request(Request& r, bool plain);

}  // namespace gatehouse::http
