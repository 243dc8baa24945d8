// The request side of content-coding negotiation; see the header.
#include "http/gzip_request.h"

#include "core/str.h"
#include "http/request.h"

namespace gatehouse::http {

bool coding_allowed(const Request& r) {
    if (r.parent) return false;           // a subrequest's output is part of another response
    if (r.http_version < 11) return false;  // gzip_http_version 1.1
    if (r.headers.find("Via")) return false;  // gzip_proxied off
    return true;
}

AcceptEncoding request_codings(const Request& r) {
    AcceptEncoding ae;
    if (!coding_allowed(r)) return ae;
    for (const HeaderField& f : r.headers)
        if (iequals(f.name, "Accept-Encoding")) parse_accept_encoding(f.value, ae);
    return ae;
}

}  // namespace gatehouse::http
