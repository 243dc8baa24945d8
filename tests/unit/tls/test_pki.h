// A CA, certificates it issued, a stranger's, and OCSP responses about
// them, made with OpenSSL for the tests of OCSP stapling
// (tls/ocsp_test.cc, http/ocsp_stapler_test.cc).
#pragma once

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdint>
#include <string>

#include "tls/ocsp.h"

namespace gatehouse::test {

inline EVP_PKEY* ec_key() {
    EVP_PKEY* k = EVP_EC_gen("P-256");
    REQUIRE(k != nullptr);
    return k;
}

inline X509* make_cert(const char* cn, long serial, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key) {
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    REQUIRE(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

// A CA, two certificates it issued and a stranger's self-signed one.
struct Pki {
    EVP_PKEY* ca_key = ec_key();
    X509* ca = make_cert("ca", 1, ca_key, nullptr, nullptr);
    EVP_PKEY* leaf_key = ec_key();
    X509* leaf = make_cert("leaf", 2, leaf_key, ca, ca_key);
    X509* other = make_cert("other", 3, leaf_key, ca, ca_key);
    EVP_PKEY* stranger_key = ec_key();
    X509* stranger = make_cert("stranger", 4, stranger_key, nullptr, nullptr);
    X509_STORE* store = X509_STORE_new();
    STACK_OF(X509)* chain = sk_X509_new_null();

    Pki() { X509_STORE_add_cert(store, ca); }
    ~Pki() {
        sk_X509_free(chain);
        X509_STORE_free(store);
        for (X509* x : {ca, leaf, other, stranger}) X509_free(x);
        for (EVP_PKEY* k : {ca_key, leaf_key, stranger_key}) EVP_PKEY_free(k);
    }

    // A response about `about` (issued by the CA), signed by `signer`;
    // `next` seconds from now for nextUpdate, 0: none.
    std::string response(X509* about, int status, long next = 3600, X509* signer = nullptr,
                         EVP_PKEY* key = nullptr, long this_offset = -60, unsigned long flags = 0) {
        OCSP_BASICRESP* bs = OCSP_BASICRESP_new();
        OCSP_CERTID* id = OCSP_cert_to_id(nullptr, about, ca);
        ASN1_TIME* thisupd = X509_gmtime_adj(nullptr, this_offset);
        ASN1_TIME* nextupd = next ? X509_gmtime_adj(nullptr, next) : nullptr;
        ASN1_TIME* rev = X509_gmtime_adj(nullptr, -86400);
        OCSP_basic_add1_status(bs, id, status, status == V_OCSP_CERTSTATUS_REVOKED ? 0 : -1,
                               status == V_OCSP_CERTSTATUS_REVOKED ? rev : nullptr, thisupd, nextupd);
        REQUIRE(OCSP_basic_sign(bs, signer ? signer : ca, key ? key : ca_key, EVP_sha256(), nullptr, flags) == 1);
        OCSP_RESPONSE* r = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
        unsigned char* der = nullptr;
        int len = i2d_OCSP_RESPONSE(r, &der);
        std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
        OPENSSL_free(der);
        OCSP_RESPONSE_free(r);
        OCSP_BASICRESP_free(bs);
        OCSP_CERTID_free(id);
        ASN1_TIME_free(thisupd);
        ASN1_TIME_free(nextupd);
        ASN1_TIME_free(rev);
        return out;
    }

    Result<int64_t> check(const std::string& der, bool verify = false) {
        return tls::check_ocsp_response(der, leaf, ca, chain, store, verify);
    }
};


// PEM of a certificate or a private key.
inline std::string pem(X509* x) {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char* data = nullptr;
    long n = BIO_get_mem_data(b, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(b);
    return out;
}
inline std::string pem(EVP_PKEY* k) {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    long n = BIO_get_mem_data(b, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(b);
    return out;
}

}  // namespace gatehouse::test
