#include "tls/ocsp.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "conf/values.h"
#include "core/base64.h"
#include "core/str.h"
#include "tls/context.h"

namespace gatehouse::tls {

namespace {

// ASN1 times as seconds since the epoch; nullopt when out of range.
std::optional<int64_t> epoch_of(const ASN1_GENERALIZEDTIME* t) {
    struct tm tm {};
    if (ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
    return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

std::string ResponderUrl::host_header() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    if (port != 80) h += ":" + std::to_string(port);
    return h;
}

Result<ResponderUrl> parse_responder_url(std::string_view url) {
    constexpr std::string_view kScheme = "http://";
    if (!istarts_with(url, kScheme) || url.size() == kScheme.size()) return make_error("invalid URL prefix");
    std::string_view rest = url.substr(kScheme.size());
    if (rest.find('#') != std::string_view::npos) return make_error("invalid URL: a fragment");
    ResponderUrl u;
    size_t slash = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, slash);
    if (slash != std::string_view::npos) {
        u.path = std::string(rest.substr(slash));
        if (u.path[0] == '?') u.path.insert(0, "/");
    }
    if (authority.empty()) return make_error("empty host");
    if (authority.find('@') != std::string_view::npos) return make_error("invalid host");
    for (char c : u.path)
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
            return make_error("invalid URL: a control character or space");
    conf::AddressRules rules;
    rules.default_port = 80;
    rules.unix_path = false;
    auto a = conf::parse_address(authority, rules);
    if (!a) return a.error();
    if (a->port == 0) return make_error("invalid port");
    if (a->host.empty()) return make_error("empty host");
    u.host = a->host;
    u.port = a->port;
    u.port_given = a->port_given;
    return u;
}

std::string aia_responder(X509* cert) {
    STACK_OF(OPENSSL_STRING)* aia = X509_get1_ocsp(cert);
    std::string out;
    if (aia && sk_OPENSSL_STRING_num(aia) > 0)
        if (const char* s = sk_OPENSSL_STRING_value(aia, 0)) out = s;
    X509_email_free(aia);
    return out;
}

Result<std::string> ocsp_request(X509* cert, X509* issuer) {
    ERR_clear_error();
    OCSP_CERTID* id = OCSP_cert_to_id(nullptr, cert, issuer);
    if (!id) return make_error("OCSP_cert_to_id() failed" + ssl_errors());
    OCSP_REQUEST* req = OCSP_REQUEST_new();
    GH_CHECK(req != nullptr);
    if (!OCSP_request_add0_id(req, id)) {
        OCSP_CERTID_free(id);
        OCSP_REQUEST_free(req);
        return make_error("OCSP_request_add0_id() failed" + ssl_errors());
    }
    unsigned char* der = nullptr;
    int len = i2d_OCSP_REQUEST(req, &der);
    OCSP_REQUEST_free(req);
    if (len <= 0) return make_error("i2d_OCSP_REQUEST() failed" + ssl_errors());
    std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    return out;
}

std::string ocsp_get_target(std::string_view path, std::string_view der) {
    std::string b64(base64_encoded_size(der.size()), '\0');
    b64.resize(encode_base64(der, b64.data()));
    std::string out(path);
    if (out.empty() || out.back() != '/') out += '/';
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (char ch : b64) {
        auto c = static_cast<unsigned char>(ch);
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                     c == '.' || c == '_' || c == '~';
        if (plain) {
            out += ch;
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

namespace {

// `flags`: OCSP_basic_verify()'s.
Result<OcspStatus> response_status(std::string_view der, X509* cert, X509* issuer, STACK_OF(X509) * chain,
                                   X509_STORE* store, unsigned long flags) {
    ERR_clear_error();
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    OCSP_RESPONSE* resp = d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size()));
    if (!resp) return make_error("d2i_OCSP_RESPONSE() failed" + ssl_errors());
    struct Guard {
        OCSP_RESPONSE* r;
        OCSP_BASICRESP* b = nullptr;
        OCSP_CERTID* id = nullptr;
        ~Guard() {
            OCSP_CERTID_free(id);
            OCSP_BASICRESP_free(b);
            OCSP_RESPONSE_free(r);
            ERR_clear_error();
        }
    } g{resp};
    int st = OCSP_response_status(resp);
    if (st != OCSP_RESPONSE_STATUS_SUCCESSFUL)
        return make_error("OCSP response not successful (" + std::to_string(st) + ": " +
                          OCSP_response_status_str(st) + ")");
    g.b = OCSP_response_get1_basic(resp);
    if (!g.b) return make_error("OCSP_response_get1_basic() failed" + ssl_errors());
    if (OCSP_basic_verify(g.b, chain, store, flags) != 1)
        return make_error("OCSP_basic_verify() failed" + ssl_errors());
    g.id = OCSP_cert_to_id(nullptr, cert, issuer);
    if (!g.id) return make_error("OCSP_cert_to_id() failed" + ssl_errors());
    int status = -1;
    ASN1_GENERALIZEDTIME *this_upd = nullptr, *next_upd = nullptr;
    if (OCSP_resp_find_status(g.b, g.id, &status, nullptr, nullptr, &this_upd, &next_upd) != 1)
        return make_error("certificate status not found in the OCSP response");
    // Five minutes of clock skew, as OpenSSL's ocsp command allows.
    if (OCSP_check_validity(this_upd, next_upd, 300, -1) != 1)
        return make_error("OCSP_check_validity() failed" + ssl_errors());
    OcspStatus out;
    out.status = status;
    if (!next_upd) return out;
    auto valid = epoch_of(next_upd);
    if (!valid) return make_error("invalid nextUpdate time in certificate status");
    out.next_update = *valid;
    return out;
}

}  // namespace

Result<int64_t> check_ocsp_response(std::string_view der, X509* cert, X509* issuer, STACK_OF(X509) * chain,
                                    X509_STORE* store, bool verify) {
    // With verify, a signer found among the certificate's chain is
    // trusted as is (OCSP_TRUSTOTHER); without, only the signature is
    // checked, by the certificate the response names [nginx].
    auto st = response_status(der, cert, issuer, chain, store, verify ? OCSP_TRUSTOTHER : OCSP_NOVERIFY);
    if (!st) return st.error();
    if (st->status != V_OCSP_CERTSTATUS_GOOD)
        return make_error(std::string("certificate status \"") + OCSP_cert_status_str(st->status) +
                          "\" in the OCSP response");
    return st->next_update;
}

Result<OcspStatus> ocsp_cert_status(std::string_view der, X509* cert, X509* issuer, STACK_OF(X509) * chain,
                                    X509_STORE* store) {
    // No flags: the signer's chain is verified with the store and the
    // signer must be the issuer or its delegate (RFC 6960 4.2.2.2), even
    // when found in the client's chain: with OCSP_TRUSTOTHER the root of
    // an intermediate's chain could answer for the intermediate's
    // certificates [nginx verifies fully too].
    return response_status(der, cert, issuer, chain, store, 0);
}



int64_t ocsp_refresh_after_success(int64_t now, int64_t valid) {
    int64_t before_expiry = valid > INT64_MIN + 300 ? valid - 300 : valid;
    return std::max(std::min(before_expiry, now + 3600), now + 300);
}

}  // namespace gatehouse::tls
