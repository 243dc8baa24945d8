// Tests of the pure helpers of src/http/static_module.h: how a URI maps to
// a file under "root" or "alias" (and never out of it), the ETag form, and
// the escaping of a redirect's path.
#include "http/static_module.h"

#include <doctest/doctest.h>

#include <string>

using gatehouse::http::append_escaped_path;
using gatehouse::http::format_etag;
using gatehouse::http::join_path;
using gatehouse::http::kEtagMax;
using gatehouse::http::path_tail;
using gatehouse::http::RootKind;

namespace {

// The file for `uri`, or "(refused)".
std::string map(RootKind kind, size_t alias_len, std::string_view base, std::string_view uri) {
    auto tail = path_tail(kind, alias_len, uri);
    if (!tail) return "(refused)";
    std::string buf(base.size() + tail->size() + 1, 'x');
    auto path = join_path(base, *tail, buf);
    if (!path) return "(refused)";
    CHECK(buf[path->size()] == '\0');
    return std::string(*path);
}

}  // namespace

TEST_CASE("http/static: root appends the whole URI") {
    CHECK(map(RootKind::Root, 0, "/data/w3", "/i/top.gif") == "/data/w3/i/top.gif");
    CHECK(map(RootKind::Root, 0, "/data/w3", "/") == "/data/w3/");
    CHECK(map(RootKind::Root, 0, "", "/etc/x") == "/etc/x");  // "root /"
}

TEST_CASE("http/static: alias replaces the location prefix") {
    // location /i/ { alias /data/w3/images/; }
    CHECK(map(RootKind::Alias, 3, "/data/w3/images/", "/i/top.gif") == "/data/w3/images/top.gif");
    CHECK(map(RootKind::Alias, 3, "/data/w3/images/", "/i/") == "/data/w3/images/");
    CHECK(map(RootKind::Alias, 3, "/data/w3/images/", "/i/a/b.png") == "/data/w3/images/a/b.png");
    // location /i { alias /data/w3/images; }
    CHECK(map(RootKind::Alias, 2, "/data/w3/images", "/i/top.gif") == "/data/w3/images/top.gif");
    // location = /favicon.ico { alias /data/fav.ico; }
    CHECK(map(RootKind::Alias, 12, "/data/fav.ico", "/favicon.ico") == "/data/fav.ico");
    // A URI shorter than the location cannot have matched it.
    CHECK(map(RootKind::Alias, 3, "/data/", "/i") == "(refused)");
}

TEST_CASE("http/static: alias in a regex location is the file name") {
    CHECK(map(RootKind::RegexAlias, 0, "/data/w3/images/top.gif", "/users/top.gif") ==
          "/data/w3/images/top.gif");
    CHECK(map(RootKind::RegexAlias, 0, "/data/w3/", "/users/") == "/data/w3/");
    // "location ~ ^/u/(.*)x$ { alias /data/$1; }" and "/u/..x".
    CHECK(map(RootKind::RegexAlias, 0, "/data/..", "/u/..x") == "(refused)");
    CHECK(map(RootKind::RegexAlias, 0, "/data/.", "/u/.x") == "(refused)");
}

TEST_CASE("http/static: a URI never climbs out of an alias") {
    // location /img { alias /data/images/; } and "/img../secret": the
    // classic off-by-slash traversal.
    CHECK(map(RootKind::Alias, 4, "/data/images/", "/img../secret") == "(refused)");
    CHECK(map(RootKind::Alias, 4, "/data/images/", "/img..") == "(refused)");
    CHECK(map(RootKind::Alias, 4, "/data/images/", "/img.") == "(refused)");
    // Without the slash the same URI names a sibling called "images..",
    // which is what the operator wrote.
    CHECK(map(RootKind::Alias, 4, "/data/images", "/img../x") == "/data/images../x");
    // Dot segments deeper in the tail are refused too (the connection
    // normalises them away; this is the second line of defence).
    CHECK(map(RootKind::Root, 0, "/data", "/a/../../etc/passwd") == "(refused)");
    CHECK(map(RootKind::Root, 0, "/data", "/a/./b") == "(refused)");
    // Dots inside names are fine.
    CHECK(map(RootKind::Root, 0, "/data", "/a..b/.c/..d") == "/data/a..b/.c/..d");
    // The operator's own ".." in the root stays allowed.
    CHECK(map(RootKind::Root, 0, "/srv/../data", "/x") == "/srv/../data/x");
    CHECK(map(RootKind::Root, 0, "/srv/..", "/x") == "/srv/../x");
    CHECK(map(RootKind::Alias, 3, "/srv/../", "/i/x") == "/srv/../x");
}

TEST_CASE("http/static: a NUL byte is refused") {
    using namespace std::string_literals;
    CHECK(map(RootKind::Root, 0, "/data", "/a\0.txt"s) == "(refused)");
}

TEST_CASE("http/static: nginx's ETag is hex mtime and hex size") {
    char buf[kEtagMax];
    CHECK(format_etag(0x5f3b2a1c, 0x1a4, buf) == "\"5f3b2a1c-1a4\"");
    CHECK(format_etag(1700000000, 0, buf) == "\"6553f100-0\"");
    CHECK(format_etag(0x7fffffffffffffff, 0x7fffffffffffffff, buf) == "\"7fffffffffffffff-7fffffffffffffff\"");
}

TEST_CASE("http/static: a redirect's path is escaped again") {
    auto esc = [](std::string_view p) {
        std::pmr::string out;
        append_escaped_path(p, out);
        return std::string(out);
    };
    CHECK(esc("/dir") == "/dir");
    CHECK(esc("/a b") == "/a%20b");
    CHECK(esc("/a?b#c%d") == "/a%3Fb%23c%25d");
    CHECK(esc("/x\r\nSet-Cookie: y") == "/x%0D%0ASet-Cookie:%20y");
    CHECK(esc("/\xc3\xa9t\xc3\xa9") == "/%C3%A9t%C3%A9");
    CHECK(esc("/~user/a-b_c.d!$&'()*+,;=:@") == "/~user/a-b_c.d!$&'()*+,;=:@");
}
