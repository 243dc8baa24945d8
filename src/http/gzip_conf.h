// What the compressing filter's module (src/http/modules/gzip_filter.cc)
// lends gzip_static and gunzip: its request checks and gzip_vary, one
// implementation for the three modules [nginx: ngx_http_gzip_ok and
// r->gzip_vary, shared by gzip, gzip_static and gunzip].
//
// Callers: http/gzip_request.cc (coding_allowed), the gzip filter's own
// header filter, gzip_static's content handler, gunzip's header filter.
// Both functions only read r's location configuration; a request without
// one (answered before a location was found) gets the defaults.
#pragma once

#include "http/accept_encoding.h"
#include "http/fwd.h"

namespace gatehouse::http {

// nginx's gzip_ok other than Accept-Encoding: r is not a subrequest, its
// HTTP version is at least "gzip_http_version", "gzip_disable" does not
// match its User-Agent, and, when it has Via, "gzip_proxied" allows it.
// gzip_proxied's expired, no-cache, no-store, private, no_last_modified
// and no_etag read `h`: the response head (a header filter's), or r.out
// before any response exists (a content handler's), as nginx reads
// r->headers_out in both places.
bool gzip_request_ok(const Request& r, const ResponseHead& h);

// "compression_order" in r's location: which coding wins a tie of
// Accept-Encoding's q-values (the compressing filter and gzip_static).
const CodingOrder& coding_order(const Request& r);

// "gzip_vary on" in r's location.
bool gzip_vary_on(const Request& r);

// With "gzip_vary on" in r's location, h gets "Vary: Accept-Encoding"
// unless a Vary already names it: one field whoever adds it first (an
// origin, gzip_static, gunzip, the gzip filter).
void add_gzip_vary(const Request& r, ResponseHead& h);

}  // namespace gatehouse::http
