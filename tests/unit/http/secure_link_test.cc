#include "http/secure_link.h"

#include <doctest/doctest.h>

#include <string>

using gatehouse::http::decode_link_md5;
using gatehouse::http::LinkMd5;
using gatehouse::http::parse_link_expires;
using gatehouse::http::split_link;
using gatehouse::http::split_secret_link;

namespace {

// MD5("secret/test.html"), as nginx's documentation computes one:
// echo -n 'secret/test.html' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =
constexpr LinkMd5 kMd5 = {0xab, 0xee, 0x6f, 0xa6, 0x48, 0xc1, 0x91, 0x15,
                          0xd7, 0xb6, 0x45, 0x0c, 0x5e, 0x22, 0x55, 0x1c};

}  // namespace

TEST_CASE("http/secure_link: the hash and the expiry time split at the first comma") {
    auto p = split_link("q-5vpkjBkRXXtkUMXiJVHA,2147483647");
    CHECK(p.hash == "q-5vpkjBkRXXtkUMXiJVHA");
    CHECK(p.expires == std::optional<std::string_view>("2147483647"));
    p = split_link("q-5vpkjBkRXXtkUMXiJVHA");
    CHECK(p.hash == "q-5vpkjBkRXXtkUMXiJVHA");
    CHECK_FALSE(p.expires);
    p = split_link("a,b,c");
    CHECK(p.hash == "a");
    CHECK(p.expires == std::optional<std::string_view>("b,c"));
    p = split_link(",");
    CHECK(p.hash.empty());
    CHECK(p.expires == std::optional<std::string_view>(""));
}

TEST_CASE("http/secure_link: an expiry time is a positive decimal number") {
    CHECK(parse_link_expires("2147483647") == 2147483647);
    CHECK(parse_link_expires("1") == 1);
    CHECK(parse_link_expires("0001") == 1);
    CHECK(parse_link_expires("4102444800") == 4102444800);  // past 2038
    const char* bad[] = {"", "0", "000", "-5", "+5", " 5", "5 ", "12x", "1e9", "99999999999999999999"};
    for (const char* s : bad) {
        CAPTURE(s);
        CHECK_FALSE(parse_link_expires(s));
    }
}

TEST_CASE("http/secure_link: the hash is 16 bytes of base64url") {
    CHECK(decode_link_md5("q-5vpkjBkRXXtkUMXiJVHA") == kMd5);
    CHECK(decode_link_md5("q-5vpkjBkRXXtkUMXiJVHA==") == kMd5);
    // Read up to the first '=', as nginx reads it.
    CHECK(decode_link_md5("q-5vpkjBkRXXtkUMXiJVHA=") == kMd5);
    CHECK(decode_link_md5("q-5vpkjBkRXXtkUMXiJVHA=x") == kMd5);
    const char* bad[] = {
        "",
        "q-5vpkjBkRXXtkUMXiJVHAQQ",       // 18 bytes
        "q-5vpkjBkRXXtkUMXiJVHA-TOOLONG",  // longer than 24 characters
        "BADHASHLENGTH",                   // 13 characters: no whole byte count
        "q+5vpkjBkRXXtkUMXiJVHA",          // base64's '+', not base64url's
        "q-5vpkjBkRXXtkUMXiJV",            // 15 bytes
        "q-5vpkjBkRXXtkUMXiJVHA=xyz",      // longer than 24 characters
        "=q-5vpkjBkRXXtkUMXiJVHA",         // nothing before the '='
    };
    for (const char* s : bad) {
        CAPTURE(s);
        CHECK_FALSE(decode_link_md5(s));
    }
}

TEST_CASE("http/secure_link: a secret link is /prefix/<32 hex digits>/link") {
    auto l = split_secret_link("/p/ABEE6FA648C19115d7b6450c5e22551c/test.html?a=1");
    REQUIRE(l);
    CHECK(l->md5 == kMd5);
    CHECK(l->link == "test.html?a=1");  // the arguments are part of it
    l = split_secret_link("/p/abee6fa648c19115d7b6450c5e22551c/a/b/c");
    REQUIRE(l);
    CHECK(l->link == "a/b/c");

    const char* bad[] = {
        "",
        "/p%2f",                                          // one segment
        "/p/test.html",                                   // no hash segment
        "/p/foo/test.html",                               // short hash
        "/p/abee6fa648c19115d7b6450c5e22551c0/test.html", // 33 digits
        "/p/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/test.html",  // not hex
        "/p/abee6fa648c19115d7b6450c5e22551c/",           // no link
        "/p/abee6fa648c19115d7b6450c5e22551c",
    };
    for (const char* s : bad) {
        CAPTURE(s);
        CHECK_FALSE(split_secret_link(s));
    }
}
