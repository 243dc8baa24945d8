// Whether a request may get a content-coded response, and which codings
// its client accepts: what gzip_static and gunzip ask [nginx
// ngx_http_gzip_ok, with its directives at their defaults].
//
// nginx tests, before Accept-Encoding: the request is not a subrequest,
// its HTTP version is at least "gzip_http_version" (default 1.1), and it
// has no Via field unless "gzip_proxied" allows it (default off: a proxy
// in front might cache one variant for every client), and no
// "gzip_disable" match (default none). Those three directives belong to
// the compressing filter's module (branch gzip); until it is merged the
// defaults apply here.
// TODO(gzstatic): at the merge, read gzip_http_version, gzip_proxied and
// gzip_disable of r's location from the gzip filter module instead.
#pragma once

#include "http/accept_encoding.h"
#include "http/fwd.h"

namespace gatehouse::http {

// The request passes nginx's checks other than Accept-Encoding.
bool coding_allowed(const Request& r);

// Every Accept-Encoding field of r, in order, when coding_allowed(r);
// otherwise nothing is accepted (an empty AcceptEncoding).
AcceptEncoding request_codings(const Request& r);

}  // namespace gatehouse::http
