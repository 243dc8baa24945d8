// Tests of src/core/md5.h: RFC 1321's test suite, and agreement with
// OpenSSL on every length around the block and padding edges (cache
// files are named by this hash: it must not change).
#include "core/md5.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <string>

namespace {

std::string hex(const std::array<uint8_t, 16>& h) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (uint8_t b : h) {
        s += kHex[b >> 4];
        s += kHex[b & 15];
    }
    return s;
}

}  // namespace

TEST_CASE("core/md5: RFC 1321's test suite") {
    using gatehouse::md5;
    CHECK(hex(md5("")) == "d41d8cd98f00b204e9800998ecf8427e");
    CHECK(hex(md5("a")) == "0cc175b9c0f1b6a831c399e269772661");
    CHECK(hex(md5("abc")) == "900150983cd24fb0d6963f7d28e17f72");
    CHECK(hex(md5("message digest")) == "f96b697d7cb7938d525a2f31aaf161d0");
    CHECK(hex(md5("abcdefghijklmnopqrstuvwxyz")) == "c3fcd3d76192e4007dfb496cca67e13b");
    CHECK(hex(md5("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")) ==
          "d174ab98d277d9f5a5611c2c9f419d9f");
    CHECK(hex(md5("12345678901234567890123456789012345678901234567890123456789012345678901234567890")) ==
          "57edf4a22be3c955ac49da2e2107b67a");
}

TEST_CASE("core/md5: agrees with OpenSSL on every length up to 300 bytes") {
    std::string s;
    uint32_t x = 2463534242u;
    for (size_t n = 0; n <= 300; ++n) {
        std::array<uint8_t, 16> want;
        unsigned int len = 0;
        REQUIRE(EVP_Digest(s.data(), s.size(), want.data(), &len, EVP_md5(), nullptr) == 1);
        CAPTURE(n);
        CHECK(gatehouse::md5(s) == want);
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        s += static_cast<char>(x);
    }
}
