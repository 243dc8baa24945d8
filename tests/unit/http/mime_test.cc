// Tests of src/http/mime.h, and of conf/mime.types as shipped.
#include "http/mime.h"

#include <doctest/doctest.h>

#include <set>
#include <string>

#include "conf/parser.h"

using gatehouse::http::builtin_mime_type;
using gatehouse::http::MimeTypes;

TEST_CASE("http/mime: extensions compare without case") {
    MimeTypes m;
    CHECK_FALSE(m.add("png", "image/png"));
    CHECK(m.find("png") == "image/png");
    CHECK(m.find("PNG") == "image/png");
    CHECK(m.find("Png") == "image/png");
    CHECK_FALSE(m.add("HTM", "text/html"));
    CHECK(m.find("htm") == "text/html");
    CHECK(m.find("gif").empty());
    CHECK(m.find("").empty());
    CHECK(m.size() == 2);
}

TEST_CASE("http/mime: a repeated extension takes the last type and reports the old one") {
    MimeTypes m;
    CHECK_FALSE(m.add("js", "application/javascript"));
    auto old = m.add("JS", "text/javascript");
    REQUIRE(old);
    CHECK(*old == "application/javascript");
    CHECK(m.find("js") == "text/javascript");
    CHECK(m.size() == 1);
}

TEST_CASE("http/mime: nginx's built-in types apply without a types block") {
    CHECK(builtin_mime_type("html") == "text/html");
    CHECK(builtin_mime_type("GIF") == "image/gif");
    CHECK(builtin_mime_type("jpg") == "image/jpeg");
    CHECK(builtin_mime_type("jpeg").empty());
    CHECK(builtin_mime_type("css").empty());
}

TEST_CASE("http/mime: conf/mime.types parses, each extension once") {
    gatehouse::conf::ParseOptions o;
    o.conf_dir = "conf/";
    auto tree = gatehouse::conf::parse_file("conf/mime.types", o);
    REQUIRE_MESSAGE(tree.ok(), "run the unit tests from the source root");
    REQUIRE(tree->nodes.size() == 1);
    const auto& types = tree->nodes[0];
    CHECK(types.name == "types");
    CHECK(types.block);
    MimeTypes m;
    std::set<std::string> dups;
    for (const auto& line : types.children) {
        CHECK_FALSE(line.block);
        CHECK(line.name.find('/') != std::string::npos);
        for (const auto& ext : line.args)
            if (m.add(ext.text, line.name)) dups.insert(ext.text);
    }
    CHECK(dups.empty());
    CHECK(m.size() > 200);
    CHECK(m.find("html") == "text/html");
    CHECK(m.find("css") == "text/css");
    CHECK(m.find("js") == "text/javascript");
    CHECK(m.find("json") == "application/json");
    CHECK(m.find("png") == "image/png");
    CHECK(m.find("svg") == "image/svg+xml");
    CHECK(m.find("woff2") == "font/woff2");
    CHECK(m.find("wasm") == "application/wasm");
    CHECK(m.find("mp4") == "video/mp4");
    CHECK(m.find("pdf") == "application/pdf");
    CHECK(m.find("txt") == "text/plain");
}

TEST_CASE("http/mime: a *_types list and the type of a Content-Type") {
    using gatehouse::http::mime_of;
    using gatehouse::http::MimeTypeList;
    CHECK(mime_of("text/html; charset=utf-8") == "text/html");
    CHECK(mime_of("text/plain \t;q") == "text/plain");
    CHECK(mime_of("image/png") == "image/png");

    constexpr std::string_view kDefaults[] = {"text/plain"};
    MimeTypeList unset;
    CHECK(unset.lists("TEXT/HTML"));  // always
    CHECK_FALSE(unset.lists("text/plain"));
    CHECK(unset.lists("text/plain", kDefaults));
    CHECK_FALSE(unset.lists(""));

    const std::vector<std::string> css{"text/css"};
    MimeTypeList set{&css, true};
    CHECK(set.lists("Text/CSS", kDefaults));
    CHECK_FALSE(set.lists("text/plain", kDefaults));  // the list replaces the defaults
    MimeTypeList child;
    child.inherit(set);
    CHECK(child.lists("text/css"));
    const std::vector<std::string> any{"*"};
    MimeTypeList star{&any, true};
    CHECK(star.lists("application/x-anything"));
    CHECK(star.any());
    CHECK_FALSE(set.any());
    CHECK_FALSE(unset.any());
}
