// Tests of src/tls/ocsp.h: responder URLs, requests, and the checks of
// responses made here with OpenSSL (a CA, its certificates, responses
// signed by it or by a stranger).
#include "tls/ocsp.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <string>

#include "core/base64.h"
#include "tls/test_pki.h"

using namespace gatehouse::tls;
using gatehouse::test::Pki;

namespace {

template <typename R>
std::string error_of(const R& r) {
    REQUIRE_FALSE(r.ok());
    return r.message();
}

}  // namespace

TEST_CASE("tls/ocsp: parse_responder_url takes http URLs") {
    auto u = parse_responder_url("http://ocsp.example.com");
    REQUIRE(u);
    CHECK(u->host == "ocsp.example.com");
    CHECK(u->port == 80);
    CHECK_FALSE(u->port_given);
    CHECK(u->path == "/");
    CHECK(u->host_header() == "ocsp.example.com");

    u = parse_responder_url("HTTP://127.0.0.1:8081/ocsp/v1?x=1");
    REQUIRE(u);
    CHECK(u->host == "127.0.0.1");
    CHECK(u->port == 8081);
    CHECK(u->path == "/ocsp/v1?x=1");
    CHECK(u->host_header() == "127.0.0.1:8081");

    u = parse_responder_url("http://[::1]:8080/");
    REQUIRE(u);
    CHECK(u->host == "::1");
    CHECK(u->host_header() == "[::1]:8080");

    u = parse_responder_url("http://h?q");
    REQUIRE(u);
    CHECK(u->host == "h");
    CHECK(u->path == "/?q");
}

TEST_CASE("tls/ocsp: parse_responder_url errors") {
    CHECK(error_of(parse_responder_url("https://ocsp.example.com/")) == "invalid URL prefix");
    CHECK(error_of(parse_responder_url("ocsp.example.com")) == "invalid URL prefix");
    CHECK(error_of(parse_responder_url("http://")) == "invalid URL prefix");
    CHECK(error_of(parse_responder_url("http:///x")) == "empty host");
    CHECK(error_of(parse_responder_url("http://h:0/")).starts_with("invalid port"));
    CHECK(error_of(parse_responder_url("http://user@h/")) == "invalid host");
    CHECK(error_of(parse_responder_url("http://h/#frag")) == "invalid URL: a fragment");
    CHECK(error_of(parse_responder_url("http://h/a b")) == "invalid URL: a control character or space");
    CHECK_FALSE(parse_responder_url("http://h:99999/"));
    CHECK_FALSE(parse_responder_url("http://h:x/"));
}

TEST_CASE("tls/ocsp: the GET target is the path, a slash and the escaped base64") {
    // "\xfb\xff\xfe" is "+//+" in base64; 1 byte pads with "==".
    CHECK(ocsp_get_target("/", "\xfb\xff\xbf") == "/%2B%2F%2B%2F");
    CHECK(ocsp_get_target("/ocsp", "a") == "/ocsp/YQ%3D%3D");
    CHECK(ocsp_get_target("/ocsp/", "abc") == "/ocsp/YWJj");
}

TEST_CASE("tls/ocsp: the request names the certificate and nothing else") {
    Pki p;
    auto der = ocsp_request(p.leaf, p.ca);
    REQUIRE(der);
    const auto* q = reinterpret_cast<const unsigned char*>(der->data());
    OCSP_REQUEST* req = d2i_OCSP_REQUEST(nullptr, &q, static_cast<long>(der->size()));
    REQUIRE(req != nullptr);
    REQUIRE(OCSP_request_onereq_count(req) == 1);
    OCSP_CERTID* want = OCSP_cert_to_id(nullptr, p.leaf, p.ca);
    CHECK(OCSP_id_cmp(OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, 0)), want) == 0);
    CHECK(OCSP_REQUEST_get_ext_count(req) == 0);  // no nonce
    OCSP_CERTID_free(want);
    OCSP_REQUEST_free(req);
}

TEST_CASE("tls/ocsp: a good, current response is valid until its nextUpdate") {
    Pki p;
    const int64_t now = time(nullptr);
    auto v = p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 3600));
    REQUIRE(v);
    CHECK(*v >= now + 3600 - 5);
    CHECK(*v <= now + 3600 + 5);
    v = p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 3600), true);
    CHECK(v);
    v = p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 0));
    REQUIRE(v);
    CHECK(*v == INT64_MAX);
}

TEST_CASE("tls/ocsp: responses that are not stapled, and why") {
    Pki p;
    CHECK(error_of(p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_REVOKED))) ==
          "certificate status \"revoked\" in the OCSP response");
    CHECK(error_of(p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_UNKNOWN))) ==
          "certificate status \"unknown\" in the OCSP response");
    CHECK(error_of(p.check(p.response(p.other, V_OCSP_CERTSTATUS_GOOD))) ==
          "certificate status not found in the OCSP response");
    // Expired (nextUpdate an hour ago), and not yet valid (thisUpdate in
    // an hour, beyond the 5 minutes of skew).
    CHECK(error_of(p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, -3600, nullptr, nullptr, -7200)))
              .starts_with("OCSP_check_validity() failed"));
    CHECK(error_of(p.check(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 7200, nullptr, nullptr, 3600)))
              .starts_with("OCSP_check_validity() failed"));
    CHECK(error_of(p.check("not DER")).starts_with("d2i_OCSP_RESPONSE() failed"));

    OCSP_RESPONSE* r = OCSP_response_create(OCSP_RESPONSE_STATUS_TRYLATER, nullptr);
    unsigned char* der = nullptr;
    int len = i2d_OCSP_RESPONSE(r, &der);
    std::string trylater(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    OCSP_RESPONSE_free(r);
    CHECK(error_of(p.check(trylater)) == "OCSP response not successful (3: trylater)");
}

TEST_CASE("tls/ocsp: a stranger's signature passes only without verify") {
    Pki p;
    std::string der = p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 3600, p.stranger, p.stranger_key);
    CHECK(p.check(der, false));
    CHECK(error_of(p.check(der, true)).starts_with("OCSP_basic_verify() failed"));
    // The signature is checked either way. Without the signer's
    // certificate in the response (found in the chain instead), the DER
    // ends with the signature: a byte of it changed is refused.
    std::string forged = p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 3600, nullptr, nullptr, -60, OCSP_NOCERTS);
    sk_X509_push(p.chain, p.ca);
    CHECK(p.check(forged, false));
    forged.back() ^= 1;
    auto v = p.check(forged, false);
    CHECK_FALSE(v);
}

TEST_CASE("tls/ocsp: when to ask again") {
    const int64_t now = 1'000'000;
    CHECK(ocsp_refresh_after_success(now, now + 7 * 86400) == now + 3600);  // at most an hour on
    CHECK(ocsp_refresh_after_success(now, now + 1800) == now + 1500);       // 5 minutes before expiry
    CHECK(ocsp_refresh_after_success(now, now + 400) == now + 300);         // at least 5 minutes on
    CHECK(ocsp_refresh_after_success(now, INT64_MAX) == now + 3600);
    CHECK(kOcspRetryAfterError == 300);
}

TEST_CASE("tls/ocsp: ocsp_cert_status answers any status of a trusted responder") {
    Pki p;
    const int64_t now = time(nullptr);
    auto st = ocsp_cert_status(p.response(p.leaf, V_OCSP_CERTSTATUS_REVOKED), p.leaf, p.ca, p.chain, p.store);
    REQUIRE(st);
    CHECK(st->status == V_OCSP_CERTSTATUS_REVOKED);
    CHECK(st->next_update >= now + 3600 - 5);
    st = ocsp_cert_status(p.response(p.leaf, V_OCSP_CERTSTATUS_UNKNOWN, 0), p.leaf, p.ca, p.chain, p.store);
    REQUIRE(st);
    CHECK(st->status == V_OCSP_CERTSTATUS_UNKNOWN);
    CHECK(st->next_update == INT64_MAX);
    st = ocsp_cert_status(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD), p.leaf, p.ca, p.chain, p.store);
    REQUIRE(st);
    CHECK(st->status == V_OCSP_CERTSTATUS_GOOD);
    // Always verified: a stranger's signature is no answer.
    CHECK(error_of(ocsp_cert_status(p.response(p.leaf, V_OCSP_CERTSTATUS_GOOD, 3600, p.stranger, p.stranger_key),
                                    p.leaf, p.ca, p.chain, p.store))
              .starts_with("OCSP_basic_verify() failed"));
    CHECK(error_of(ocsp_cert_status(p.response(p.other, V_OCSP_CERTSTATUS_GOOD), p.leaf, p.ca, p.chain, p.store)) ==
          "certificate status not found in the OCSP response");
}
