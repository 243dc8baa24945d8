#include "core/murmur2.h"

#include <doctest/doctest.h>

using gatehouse::murmur2;

TEST_CASE("core/murmur2: every tail length and the empty string") {
    // MurmurHash2 of the empty string with seed 0 is 0 (h = len = 0, the
    // final mix keeps 0).
    CHECK(murmur2("") == 0u);
    // Tails of 1, 2 and 3 bytes differ from each other and from the
    // 4-byte block; the same input gives the same hash.
    CHECK(murmur2("a") != murmur2("ab"));
    CHECK(murmur2("ab") != murmur2("abc"));
    CHECK(murmur2("abc") != murmur2("abcd"));
    CHECK(murmur2("abcde") == murmur2(std::string_view("abcdef", 5)));
    // Bytes above 0x7f are taken unsigned.
    CHECK(murmur2("\xff") != murmur2("\x7f"));
}
