#include "http/uri.h"

#include <doctest/doctest.h>

#include <string>

using namespace gatehouse::http;

TEST_CASE("http/uri: split_path_query") {
    PathQuery a = split_path_query("/a/b?x=1&y=2");
    CHECK(a.path == "/a/b");
    CHECK(a.query == "x=1&y=2");
    CHECK(a.has_query);
    PathQuery b = split_path_query("/a?");
    CHECK(b.path == "/a");
    CHECK(b.query.empty());
    CHECK(b.has_query);
    PathQuery c = split_path_query("/a");
    CHECK(c.path == "/a");
    CHECK_FALSE(c.has_query);
    CHECK(split_path_query("/a?b?c").query == "b?c");
    CHECK(split_path_query("?x").path.empty());
}

TEST_CASE("http/uri: percent_decode") {
    std::string out(32, '\0');
    CHECK(percent_decode("/caf%C3%a9", out).value() == "/caf\xc3\xa9");
    CHECK(percent_decode("%41%2f%25", out).value() == "A/%");
    CHECK(percent_decode("", out).value().empty());
    CHECK(percent_decode("/%", out).message() == "invalid percent-encoding");
    CHECK(percent_decode("/%4", out).message() == "invalid percent-encoding");
    CHECK(percent_decode("/%4g", out).message() == "invalid percent-encoding");
    CHECK(percent_decode("/%g4", out).message() == "invalid percent-encoding");
    CHECK(percent_decode("/a%00b", out).message() == "percent-encoded NUL");
    // In place.
    std::string s = "/x%20y%2Fz";
    CHECK(percent_decode(s, s).value() == "/x y/z");
}

TEST_CASE("http/uri: normalize_path, decoded first by clean_path") {
    const std::pair<const char*, const char*> ok[] = {
        {"/", "/"},
        {"/a/b", "/a/b"},
        {"/a/b/", "/a/b/"},
        {"/a/./b", "/a/b"},
        {"/a/../b", "/b"},
        {"/a/b/..", "/a/"},
        {"/a/b/.", "/a/b/"},
        {"/a/./", "/a/"},
        {"/.", "/"},
        {"/a/..", "/"},
        {"/a/b/../../", "/"},
        {"//a///b//", "/a/b/"},
        {"//", "/"},
        {"/...", "/..."},
        {"/a/.../b", "/a/.../b"},
        {"/.a/b./..c", "/.a/b./..c"},
        {"/a/%2e%2e/b", "/b"},
        {"/a/.%2E/b", "/b"},
        {"/a%2Fb", "/a/b"},
        {"/a%2F%2Fb", "/a/b"},
        {"/caf%C3%A9/", "/caf\xc3\xa9/"},
        {"/%2e/x", "/x"},
        {"/a/b/c/../../d/./e/..", "/a/d/"},
    };
    for (const auto& row : ok) {
        const char* in = row.first;
        const char* want = row.second;
        CAPTURE(in);
        std::string out(std::string_view(in).size(), '\0');
        auto r = clean_path(in, out);
        REQUIRE(r);
        CHECK(*r == want);
    }
    const char* bad[] = {
        "",          "a/b",         "/..",           "/../",        "/./../",
        "/a/../../b", "/a/b/../../..", "/%2e%2e/",   "/%2E%2E",     "/a%2F..%2F..%2Fb",
        "/%00",      "/%0",         "/%zz",          "/%",          "%2F",
    };
    for (const char* in : bad) {
        CAPTURE(in);
        std::string out(std::string_view(in).size(), '\0');
        CHECK_FALSE(clean_path(in, out));
    }
    std::string out(16, '\0');
    CHECK(clean_path("/a/../../b", out).message() == "path goes above the root");
    CHECK(clean_path("a", out).message() == "path does not start with \"/\"");
}

TEST_CASE("http/uri: clean_path copies only when it must") {
    std::string out(16, '\0');
    const std::string_view raw = "/static/app.js";
    auto r = clean_path(raw, out);
    REQUIRE(r);
    CHECK(r->data() == raw.data());
    auto d = clean_path("/a//b", out);
    REQUIRE(d);
    CHECK(d->data() == out.data());
    CHECK(*d == "/a/b");
}

TEST_CASE("http/uri: normalize_path in place") {
    std::string s = "/a/./b/../c//d/..";
    auto r = normalize_path(s, s);
    REQUIRE(r);
    CHECK(*r == "/a/c/");
    std::string t = "/x/%2e%2e/y";
    auto u = clean_path(t, t);
    REQUIRE(u);
    CHECK(*u == "/y");
}

TEST_CASE("http/uri: without merge_slashes an empty segment stays one") {
    const std::pair<const char*, const char*> ok[] = {
        {"/foo//../bar", "/foo/bar"}, {"/foo///../bar", "/foo//bar"}, {"//a//b//", "//a//b//"},
        {"//", "//"},                 {"/a/./b", "/a/b"},             {"//..", "/"},
        {"/a%2F%2Fb", "/a//b"},       {"/a//b/..", "/a//"},
    };
    for (const auto& [in, want] : ok) {
        CAPTURE(in);
        std::string out(std::string_view(in).size(), '\0');
        auto r = clean_path(in, out, false);
        REQUIRE(r);
        CHECK(*r == want);
    }
    std::string out(8, '\0');
    CHECK(clean_path("/..//", out, false).message() == "path goes above the root");
}
