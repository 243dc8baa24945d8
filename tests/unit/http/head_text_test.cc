#include "http/head_text.h"

#include <doctest/doctest.h>

#include <string>

using namespace gatehouse;
using namespace gatehouse::http;

TEST_CASE("http/head_text: clean values are returned as they are, without a copy") {
    Arena a;
    bool changed = true;
    const std::string v = "text/html; charset=utf-8 \xc3\xa9 ~!";
    std::string_view out = encode_breaking<breaks_field>(v, a, &changed);
    CHECK(out.data() == v.data());
    CHECK_FALSE(changed);
    CHECK(encode_breaking<breaks_field>("", a).empty());
    // A tab is fine in a value; a space too, but not in a target.
    CHECK(encode_breaking<breaks_field>("a\tb c", a) == "a\tb c");
    CHECK(encode_breaking<breaks_target>("/a b", a, &changed) == "/a%20b");
    CHECK(changed);
}

TEST_CASE("http/head_text: CR, LF and NUL are percent-encoded wherever they are") {
    Arena a;
    // Every position of values of every length up to three words, so
    // that the word-at-a-time scan sees the byte in every lane, in the
    // overlapping last word and in the two halves of a short value.
    for (char bad : {'\r', '\n', '\0'}) {
        for (size_t len = 1; len <= 24; ++len) {
            for (size_t at = 0; at < len; ++at) {
                std::string v(len, 'v');
                v[at] = bad;
                bool changed = false;
                std::string_view out = encode_breaking<breaks_field>(v, a, &changed);
                CAPTURE(len);
                CAPTURE(at);
                CHECK(changed);
                std::string want = v.substr(0, at) + (bad == '\r' ? "%0D" : bad == '\n' ? "%0A" : "%00") +
                                   v.substr(at + 1);
                CHECK(out == want);
            }
        }
    }
    for (size_t len = 1; len <= 24; ++len) {
        const std::string v(len, '~');
        CAPTURE(len);
        CHECK(encode_breaking<breaks_field>(v, a).data() == v.data());
    }
    // Other controls stay in a value (a field value may not hold them, but
    // they do not break the line; the parsers refuse them on input).
    CHECK(encode_breaking<breaks_field>(std::string_view("a\x01\x7f", 3), a) == std::string_view("a\x01\x7f", 3));
    CHECK(encode_breaking<breaks_target>(std::string_view("/\x01\x7f", 3), a) == "/%01%7F");
    CHECK(encode_breaking<breaks_field>("/a\r\nSet-Cookie: x=1", a) == "/a%0D%0ASet-Cookie: x=1");
}

TEST_CASE("http/head_text: is_token") {
    CHECK(is_token("GET"));
    CHECK(is_token("M-SEARCH"));
    CHECK(is_token("x!#$%&'*+-.^_`|~9"));
    CHECK_FALSE(is_token(""));
    CHECK_FALSE(is_token("GET /"));
    CHECK_FALSE(is_token("A\r\n"));
    CHECK_FALSE(is_token("a:b"));
}
