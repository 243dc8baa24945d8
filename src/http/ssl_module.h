// ssl_module: TLS termination on "listen ... ssl" ports [nginx http ssl
// module]. Its directives live in http and server blocks; after the http
// block it builds one tls::Context per server reachable on a TLS port
// (src/http/modules/ssl.cc). The HTTP/1 front-end reaches it through
// this header for the context to start a handshake with; the checks a
// request on a TLS port passes once its server is chosen are a PostRead
// handler of the module.
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


}  // namespace gatehouse::http
