// Whether a request may get a content-coded response, and which codings
// its client accepts: what gzip_static and gunzip ask [nginx
// ngx_http_gzip_ok].
//
// nginx tests, before Accept-Encoding: the request is not a subrequest,
// its HTTP version is at least "gzip_http_version" (default 1.1), it has
// no Via field unless "gzip_proxied" allows it (default off: a proxy in
// front might cache one variant for every client), and "gzip_disable"
// does not match. Those directives belong to the compressing filter's
// module; the checks are its gzip_request_ok (http/gzip_conf.h), the one
// implementation the gzip filter uses too.
#pragma once

#include "http/accept_encoding.h"
#include "http/fwd.h"

namespace gatehouse::http {

// The request passes nginx's checks other than Accept-Encoding, for r's
// location; `h` is the response head gzip_proxied reads (r.out in a
// content handler, as nginx reads r->headers_out).
bool coding_allowed(const Request& r, const ResponseHead& h);

// Every Accept-Encoding field of r, in order, when coding_allowed(r, h);
// otherwise nothing is accepted (an empty AcceptEncoding).
AcceptEncoding request_codings(const Request& r, const ResponseHead& h);

}  // namespace gatehouse::http
