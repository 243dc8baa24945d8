// The request side of content-coding negotiation; see the header.
#include "http/gzip_request.h"

#include "core/str.h"
#include "http/gzip_conf.h"
#include "http/request.h"

namespace gatehouse::http {

bool coding_allowed(const Request& r, const ResponseHead& h) { return gzip_request_ok(r, h); }

AcceptEncoding request_codings(const Request& r, const ResponseHead& h) {
    AcceptEncoding ae;
    if (!coding_allowed(r, h)) return ae;
    for (const HeaderField& f : r.headers)
        if (iequals(f.name, "Accept-Encoding")) parse_accept_encoding(f.value, ae);
    return ae;
}

}  // namespace gatehouse::http
