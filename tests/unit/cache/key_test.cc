#include "cache/key.h"

#include <doctest/doctest.h>

using namespace gatehouse::cache;

TEST_CASE("cache/key: MD5 of the key, its hex name and nginx's level directories") {
    // md5("http://example.com/") as any md5 tool gives it.
    Hash h = hash_key("http://example.com/");
    auto x = hex(h);
    CHECK(std::string(x.data(), x.size()) == "a6bf1757fff057f266b697df9cf176fd");
    auto l = parse_levels("1:2");
    REQUIRE(l);
    CHECK(level_dirs(*l, h) == "d/6f");
    CHECK(entry_path("/var/cache/gh", *l, h) == "/var/cache/gh/d/6f/a6bf1757fff057f266b697df9cf176fd");
    CHECK(entry_path("/c", Levels{}, h) == "/c/a6bf1757fff057f266b697df9cf176fd");
    auto l3 = parse_levels("2:2:1");
    REQUIRE(l3);
    CHECK(level_dirs(*l3, h) == "fd/76/1");
    Hash back;
    REQUIRE(parse_hex("a6bf1757fff057f266b697df9cf176fd", back));
    CHECK(back == h);
    CHECK_FALSE(parse_hex("a6bf1757fff057f266b697df9cf176f", back));
    CHECK_FALSE(parse_hex("A6bf1757fff057f266b697df9cf176fd", back));
    CHECK_FALSE(parse_hex("a6bf1757fff057f266b697df9cf176fd.tmp", back));
}

TEST_CASE("cache/key: levels= errors") {
    CHECK_FALSE(parse_levels(""));
    CHECK_FALSE(parse_levels("3"));
    CHECK_FALSE(parse_levels("1:2:2:1"));
    CHECK_FALSE(parse_levels("1:"));
    CHECK_FALSE(parse_levels("1-2"));
    CHECK(parse_levels("2")->n == 1);
}
