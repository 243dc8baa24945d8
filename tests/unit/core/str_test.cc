// Tests of src/core/str.h.
#include "core/str.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

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

// iequals compares words of eight (or four) bytes: every pair of bytes,
// at every position of every length the word paths take, must give what
// the byte-at-a-time definition gives.
TEST_CASE("core/str: iequals by words agrees with the byte definition") {
    auto bytewise = [](std::string_view a, std::string_view b) {
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); ++i)
            if (gatehouse::ascii_lower(a[i]) != gatehouse::ascii_lower(b[i])) return false;
        return true;
    };
    const std::string base = "Content-Security-Pol";  // 20 bytes
    for (size_t n = 1; n <= base.size(); ++n) {
        for (size_t at = 0; at < n; ++at) {
            for (int c1 = 0; c1 < 256; ++c1) {
                std::string a = base.substr(0, n);
                std::string b = a;
                a[at] = static_cast<char>(c1);
                for (int c2 : {c1, c1 ^ 0x20, c1 ^ 0x80, c1 + 1, int{'a'}, int{'A'}, int{'@'}, int{'`'}, 0}) {
                    b[at] = static_cast<char>(c2);
                    CAPTURE(n);
                    CAPTURE(at);
                    CAPTURE(c1);
                    CAPTURE(c2);
                    REQUIRE(iequals(a, b) == bytewise(a, b));
                }
            }
        }
    }
}

TEST_CASE("core/str: istarts_with") {
    CHECK(istarts_with("Proxy-Connection", "proxy-"));
    CHECK(istarts_with("x", ""));
    CHECK_FALSE(istarts_with("Pro", "proxy-"));
    CHECK_FALSE(istarts_with("Xroxy-a", "proxy-"));
}
