// OCSP for stapling responses fetched from a responder ("ssl_stapling"
// without "ssl_stapling_file") [nginx ngx_event_openssl_stapling]: the
// responder's URL, the request sent to it and the checks of what it
// answers. No I/O: the exchange itself is http/ocsp_stapler.h's.
//
// Everything here is pure (OpenSSL objects in, values or errors out) and
// may run in the master (URLs, at configuration time) or in a worker
// (requests and responses). Error messages are nginx's where it has one,
// so that operators find the same lines.
#pragma once

#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gatehouse::tls {

// "http://host[:port][/path]": where OCSP requests go. Only http:, as
// nginx (RFC 6960 A.1 defines OCSP over HTTP; a responder over https
// would need a certificate status of its own to be trusted).
struct ResponderUrl {
    std::string host;      // a name, or an address literal (IPv6 without brackets)
    uint16_t port = 80;
    bool port_given = false;
    std::string path = "/";  // never empty
    // The Host field: the host as written, with ":port" unless it is 80.
    std::string host_header() const;
};
// The scheme is case-insensitive; a query is part of the path, a
// fragment is refused. Errors: "invalid URL prefix", "empty host",
// "invalid port", "invalid host".
Result<ResponderUrl> parse_responder_url(std::string_view url);

// The first OCSP responder URL in the certificate's Authority Information
// Access extension; empty when there is none.
std::string aia_responder(X509* cert);

// The DER OCSPRequest for `cert` issued by `issuer`: one CertID (SHA-1,
// as RFC 5019 2.1.1 requires of lightweight responders), no nonce, so
// that caching responders and CDNs can answer from their cache (RFC 5019
// 2.1.1 again).
Result<std::string> ocsp_request(X509* cert, X509* issuer);

// The request-target of a GET for `der` (RFC 6960 A.1): `path`, a slash
// unless it ends with one, then the base64 of the request with every byte
// but unreserved ones (RFC 3986 2.3) percent-encoded.
std::string ocsp_get_target(std::string_view path, std::string_view der);

// What a responder answered, checked for stapling `cert`:
//   - a successful OCSPResponse with a basic response,
//   - signed, and with `verify` by a responder the store trusts
//     (OCSP_basic_verify; the certificate's `chain` counts as trusted,
//     OCSP_TRUSTOTHER), without it the signature alone is checked
//     (OCSP_NOVERIFY), as nginx,
//   - holding a status for this certificate, current (thisUpdate not in
//     the future, nextUpdate not past, 5 minutes of skew allowed),
//   - and that status "good": a revoked or unknown certificate's response
//     is not stapled [nginx; a file is stapled whatever it says].
// On success: until when it may be stapled, nextUpdate, or INT64_MAX
// without one (RFC 6960 2.4: newer information is always available).
Result<int64_t> check_ocsp_response(std::string_view der, X509* cert, X509* issuer, STACK_OF(X509) * chain,
                                    X509_STORE* store, bool verify);

// What a responder said about a client certificate ("ssl_ocsp"): the
// same checks as check_ocsp_response(), the signer always verified with
// the store and required to be the issuer or its delegate (RFC 6960
// 4.2.2.2; `chain` only helps build its chain), and any status is an
// answer. `next_update`: INT64_MAX without one.
struct OcspStatus {
    int status = V_OCSP_CERTSTATUS_UNKNOWN;  // V_OCSP_CERTSTATUS_*
    int64_t next_update = INT64_MAX;
};
Result<OcspStatus> ocsp_cert_status(std::string_view der, X509* cert, X509* issuer, STACK_OF(X509) * chain,
                                    X509_STORE* store);

// When to ask again after a response valid until `valid` was stapled at
// `now`: 5 minutes before it expires, but at most an hour on and at least
// 5 minutes on [nginx]. After a failure: 5 minutes on.
int64_t ocsp_refresh_after_success(int64_t now, int64_t valid);
inline constexpr int64_t kOcspRetryAfterError = 300;

}  // namespace gatehouse::tls
