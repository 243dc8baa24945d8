// Tests of src/core/str.h.
#include "core/str.h"

#include <doctest/doctest.h>

using gatehouse::iequals;
using gatehouse::istarts_with;

TEST_CASE("core/str: iequals folds ASCII letters only") {
    CHECK(iequals("Content-Length", "content-length"));
    CHECK(iequals("", ""));
    CHECK_FALSE(iequals("Host", "Hosts"));
    CHECK_FALSE(iequals("a", "b"));
    // '@' and '`' sit next to the letters: they are not letters.
    CHECK_FALSE(iequals("@", "`"));
    CHECK_FALSE(iequals("[", "{"));
    // Bytes above 0x7f compare as they are, whatever the locale says.
    CHECK(iequals("\xc3\xa9", "\xc3\xa9"));
    CHECK_FALSE(iequals("\xc3\x89", "\xc3\xa9"));
    static_assert(iequals("X-Accel-Buffering", "x-accel-BUFFERING"));
}

TEST_CASE("core/str: istarts_with") {
    CHECK(istarts_with("Proxy-Connection", "proxy-"));
    CHECK(istarts_with("x", ""));
    CHECK_FALSE(istarts_with("Pro", "proxy-"));
    CHECK_FALSE(istarts_with("Xroxy-a", "proxy-"));
}
