// Tests of src/conf/parser.h: the tree, include expansion and one row per
// error message, each with its file:line.
#include "conf/parser.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "temp_dir.h"

using gatehouse::conf::Node;
using gatehouse::conf::parse_file;
using gatehouse::conf::parse_text;
using gatehouse::conf::ParseOptions;
using gatehouse::conf::read_file;
using gatehouse::conf::Tree;
using gatehouse::test::TempDir;

namespace {

// Parses `text` named "t.conf", includes relative to `dir`.
gatehouse::Status parse(std::string text, Tree& t, const std::string& dir = "/nonexistent/") {
    ParseOptions o;
    o.conf_dir = dir;
    return parse_text("t.conf", std::move(text), o, t);
}

// The error message of parsing `text`; fails the test if it parses.
std::string error_of(std::string text, const std::string& dir = "/nonexistent/") {
    Tree t;
    auto s = parse(std::move(text), t, dir);
    REQUIRE_FALSE(s.ok());
    return s.message();
}

std::vector<std::string> args(const Node& n) {
    std::vector<std::string> v;
    for (const auto& a : n.args) v.push_back(a.text);
    return v;
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("conf/parser: directives, arguments and lines") {
    Tree t;
    REQUIRE(parse("worker_processes 2;\n\nerror_log  logs/e.log   info;\ndaemon off;", t).ok());
    REQUIRE(t.nodes.size() == 3);
    CHECK(t.nodes[0].name == "worker_processes");
    CHECK(args(t.nodes[0]) == V{"2"});
    CHECK(t.nodes[0].line == 1);
    CHECK_FALSE(t.nodes[0].block);
    CHECK(t.nodes[0].children.empty());
    CHECK(t.nodes[1].name == "error_log");
    CHECK(args(t.nodes[1]) == V{"logs/e.log", "info"});
    CHECK(t.nodes[1].line == 3);
    CHECK(t.nodes[2].line == 4);
}

TEST_CASE("conf/parser: a directive without arguments") {
    Tree t;
    REQUIRE(parse("a;", t).ok());
    REQUIRE(t.nodes.size() == 1);
    CHECK(t.nodes[0].args.empty());
}

TEST_CASE("conf/parser: the line of a directive is the line of its name") {
    Tree t;
    REQUIRE(parse("\n  listen\n 80\n ;", t).ok());
    CHECK(t.nodes[0].line == 2);
}

TEST_CASE("conf/parser: blocks nest") {
    Tree t;
    REQUIRE(parse("events { worker_connections 10; }\n"
                  "http {\n"
                  "  server {\n"
                  "    listen 80;\n"
                  "    location / { root html; }\n"
                  "    location = /x { }\n"
                  "  }\n"
                  "}\n",
                  t)
                .ok());
    REQUIRE(t.nodes.size() == 2);
    const Node& ev = t.nodes[0];
    CHECK(ev.block);
    CHECK(ev.args.empty());
    REQUIRE(ev.children.size() == 1);
    CHECK(ev.children[0].name == "worker_connections");
    const Node& http = t.nodes[1];
    CHECK(http.line == 2);
    REQUIRE(http.children.size() == 1);
    const Node& srv = http.children[0];
    CHECK(srv.name == "server");
    CHECK(srv.line == 3);
    REQUIRE(srv.children.size() == 3);
    CHECK(srv.children[1].name == "location");
    CHECK(args(srv.children[1]) == V{"/"});
    CHECK(srv.children[1].children[0].name == "root");
    CHECK(srv.children[1].children[0].line == 5);
    CHECK(args(srv.children[2]) == V{"=", "/x"});
    CHECK(srv.children[2].block);
    CHECK(srv.children[2].children.empty());
}

TEST_CASE("conf/parser: quoted arguments keep their flag and decoded text") {
    Tree t;
    REQUIRE(parse("add_header X \"a b\\\"c\" 'd';", t).ok());
    const Node& n = t.nodes[0];
    REQUIRE(n.args.size() == 3);
    CHECK_FALSE(n.args[0].quoted);
    CHECK(n.args[1].text == "a b\"c");
    CHECK(n.args[1].quoted);
    CHECK(n.args[2].quoted);
}

TEST_CASE("conf/parser: variables stay in arguments") {
    Tree t;
    REQUIRE(parse("return 301 https://$host${request_uri}x;", t).ok());
    CHECK(args(t.nodes[0]) == V{"301", "https://$host${request_uri}x"});
}

TEST_CASE("conf/parser: comments are dropped") {
    Tree t;
    REQUIRE(parse("# a;\nb; # c;\n# }\n", t).ok());
    REQUIRE(t.nodes.size() == 1);
    CHECK(t.nodes[0].name == "b");
}

TEST_CASE("conf/parser: every node points at its file; where() is file:line") {
    Tree t;
    REQUIRE(parse("a;\nb { c; }", t).ok());
    REQUIRE(t.files.size() == 1);
    CHECK(t.files[0]->path == "t.conf");
    CHECK(t.files[0]->content == "a;\nb { c; }");
    CHECK(t.nodes[0].file == t.files[0].get());
    CHECK(t.nodes[1].children[0].file == t.files[0].get());
    CHECK(t.nodes[1].where() == "t.conf:2");
    CHECK(Node{}.where() == "?:0");
}

TEST_CASE("conf/parser: parse_text appends to a tree") {
    Tree t;
    REQUIRE(parse("a;", t).ok());
    ParseOptions o;
    REQUIRE(parse_text("command line", "b; c;", o, t).ok());
    REQUIRE(t.files.size() == 2);
    CHECK(t.files[1]->path == "command line");
    REQUIRE(t.nodes.size() == 3);
    CHECK(t.nodes[2].where() == "command line:1");
}

// ---- error messages ---------------------------------------------------------

TEST_CASE("conf/parser: error: unexpected \"}\"") {
    CHECK(error_of("a;\n}") == "unexpected \"}\" in t.conf:2");
    CHECK(error_of("a { }\n}\n") == "unexpected \"}\" in t.conf:2");
}

TEST_CASE("conf/parser: error: unexpected end of file inside a block") {
    CHECK(error_of("http {\n  server {\n    listen 80;\n  }\n") ==
          "unexpected end of file, expecting \"}\" in t.conf:5 (block opened at line 1)");
    CHECK(error_of("a {\n b {") ==
          "unexpected end of file, expecting \"}\" in t.conf:2 (block opened at line 2)");
}

TEST_CASE("conf/parser: error: unexpected end of file in a directive") {
    CHECK(error_of("daemon off") ==
          "unexpected end of file, expecting \";\" or \"}\" in t.conf:1");
    CHECK(error_of("a;\nb\n") == "unexpected end of file, expecting \";\" or \"}\" in t.conf:3");
}

TEST_CASE("conf/parser: error: a directive ended by \"}\"") {
    CHECK(error_of("events {\n worker_connections 10\n}") ==
          "unexpected \"}\", expecting \";\" in t.conf:3");
}

TEST_CASE("conf/parser: error: unexpected \";\" and \"{\"") {
    CHECK(error_of("a;\n;") == "unexpected \";\" in t.conf:2");
    CHECK(error_of("a { ; }") == "unexpected \";\" in t.conf:1");
    CHECK(error_of("{ a; }") == "unexpected \"{\" in t.conf:1");
    CHECK(error_of("a {\n {") == "unexpected \"{\" in t.conf:2");
}

TEST_CASE("conf/parser: error: lexer errors carry file and line") {
    CHECK(error_of("a;\nb \"c;\nd;") == "unterminated string in t.conf:2");
    CHECK(error_of("a '\n") == "unterminated string in t.conf:1");
    CHECK(error_of("a \"b\"c;") == "unexpected \"c\" after quoted string in t.conf:1");
    CHECK(error_of("\n\nset ${x;") == "unterminated variable \"${\" in t.conf:3");
    CHECK(error_of("\"a\"b;") == "unexpected \"b\" after quoted string in t.conf:1");
}

TEST_CASE("conf/parser: error: blocks nested too deeply") {
    ParseOptions o;
    std::string ok, bad;
    for (int i = 0; i < o.max_block_depth; ++i) ok += "a {\n";
    for (int i = 0; i < o.max_block_depth; ++i) ok += "}\n";
    Tree t;
    CHECK(parse(ok, t).ok());
    for (int i = 0; i <= o.max_block_depth; ++i) bad += "a {\n";
    CHECK(error_of(bad) == "blocks are nested deeper than 64 levels in t.conf:65");
}

TEST_CASE("conf/parser: deep nesting of random depth fails cleanly, never overflows") {
    // 200000 levels would overflow the stack of a recursive parser.
    std::string s;
    for (int i = 0; i < 200000; ++i) s += "a{";
    CHECK(error_of(s).find("blocks are nested deeper than") == 0);
}

// ---- include ----------------------------------------------------------------

TEST_CASE("conf/parser: include is expanded in place, relative to conf_dir") {
    TempDir d;
    d.write("conf/main.conf", "a;\ninclude sub/b.conf;\nc;\n");
    d.write("conf/sub/b.conf", "b1;\nb2 x;\n");
    ParseOptions o;
    o.conf_dir = d / "conf/";
    auto t = parse_file(d / "conf/main.conf", o);
    REQUIRE(t.ok());
    REQUIRE(t->files.size() == 2);
    CHECK(t->files[0]->path == d / "conf/main.conf");
    CHECK(t->files[1]->path == d / "conf/sub/b.conf");
    REQUIRE(t->nodes.size() == 4);
    CHECK(t->nodes[1].name == "b1");
    CHECK(t->nodes[2].where() == d / "conf/sub/b.conf:2");
    CHECK(t->nodes[3].where() == d / "conf/main.conf:3");
}

TEST_CASE("conf/parser: include in a nested file stays relative to conf_dir") {
    // As nginx: relative paths are from the main config's directory, not
    // from the including file's.
    TempDir d;
    d.write("main.conf", "include sub/a.conf;");
    d.write("sub/a.conf", "include sub/b.conf;");
    d.write("sub/b.conf", "b;");
    ParseOptions o;
    o.conf_dir = d.path();
    auto t = parse_file(d / "main.conf", o);
    REQUIRE(t.ok());
    REQUIRE(t->nodes.size() == 1);
    CHECK(t->nodes[0].name == "b");
    CHECK(t->files.size() == 3);
}

TEST_CASE("conf/parser: include inside a block adds to that block") {
    TempDir d;
    d.write("servers/one.conf", "server { listen 1; }\n");
    d.write("servers/two.conf", "server { listen 2; }\n");
    Tree t;
    REQUIRE(parse("http {\n  include servers/*.conf;\n  x;\n}", t, d.path()).ok());
    REQUIRE(t.nodes.size() == 1);
    const Node& http = t.nodes[0];
    REQUIRE(http.children.size() == 3);
    CHECK(args(http.children[0].children[0]) == V{"1"});
    CHECK(args(http.children[1].children[0]) == V{"2"});
    CHECK(http.children[2].name == "x");
}

TEST_CASE("conf/parser: include globs are sorted; no match is not an error") {
    TempDir d;
    d.write("c.conf", "c;");
    d.write("a.conf", "a;");
    d.write("b.conf", "b;");
    d.write("b.txt", "nope;");
    Tree t;
    REQUIRE(parse("include *.conf; include n?ne;", t, d.path()).ok());
    REQUIRE(t.nodes.size() == 3);
    CHECK(t.nodes[0].name == "a");
    CHECK(t.nodes[1].name == "b");
    CHECK(t.nodes[2].name == "c");
    REQUIRE(t.files.size() == 4);
    CHECK(t.files[1]->path == d / "a.conf");
}

TEST_CASE("conf/parser: include of an absolute path ignores conf_dir") {
    TempDir d;
    std::string p = d.write("abs.conf", "x;");
    Tree t;
    REQUIRE(parse("include " + p + ";", t, "/nonexistent/").ok());
    REQUIRE(t.nodes.size() == 1);
}

TEST_CASE("conf/parser: a quoted include path") {
    TempDir d;
    d.write("with space.conf", "x;");
    Tree t;
    REQUIRE(parse("include \"with space.conf\";", t, d.path()).ok());
    REQUIRE(t.nodes.size() == 1);
}

TEST_CASE("conf/parser: an empty included file adds nothing") {
    TempDir d;
    d.write("empty.conf", "");
    Tree t;
    REQUIRE(parse("include empty.conf;", t, d.path()).ok());
    CHECK(t.nodes.empty());
    CHECK(t.files.size() == 2);
}

TEST_CASE("conf/parser: error: missing include") {
    TempDir d;
    CHECK(error_of("a;\ninclude missing.conf;", d.path()) ==
          "open() \"" + d / "missing.conf" +
              "\" failed (2: No such file or directory) in t.conf:2");
}

TEST_CASE("conf/parser: error: unreadable include") {
    if (!gatehouse::test::permissions_apply()) {
        MESSAGE("skipped: running as root, permissions do not apply");
        return;
    }
    TempDir d;
    std::string p = d.write("secret.conf", "a;");
    REQUIRE(::chmod(p.c_str(), 0) == 0);
    CHECK(error_of("include secret.conf;", d.path()) ==
          "open() \"" + p + "\" failed (13: Permission denied) in t.conf:1");
}

TEST_CASE("conf/parser: error: include that cannot be read") {
    // Fails for root too: open() succeeds, read() at offset 0 does not.
    CHECK(error_of("include /proc/self/mem;") ==
          "read() \"/proc/self/mem\" failed (5: Input/output error) in t.conf:1");
    TempDir d;
    std::string f = d.write("file", "");
    CHECK(error_of("include file/x.conf;", d.path()) ==
          "open() \"" + f + "/x.conf\" failed (20: Not a directory) in t.conf:1");
}

TEST_CASE("conf/parser: include of a glob through a missing directory matches nothing") {
    TempDir d;
    d.write("file", "");
    Tree t;
    CHECK(parse("include none/*.conf; include file/*.conf;", t, d.path()).ok());
    CHECK(t.nodes.empty());
}

TEST_CASE("conf/parser: error: include glob through an unreadable directory") {
    if (!gatehouse::test::permissions_apply()) {
        MESSAGE("skipped: running as root, permissions do not apply");
        return;
    }
    TempDir d;
    std::string sub = d.mkdir("locked");
    d.write("locked/a.conf", "a;");
    REQUIRE(::chmod(sub.c_str(), 0) == 0);
    CHECK(error_of("include locked/*.conf;", d.path()) ==
          "glob() \"" + d / "locked/*.conf" + "\" failed (13: Permission denied) in t.conf:1");
    ::chmod(sub.c_str(), 0755);
}

TEST_CASE("conf/parser: error: include of a directory") {
    TempDir d;
    d.mkdir("dir");
    CHECK(error_of("\n\ninclude dir;", d.path()) ==
          "\"" + d / "dir" + "\" is a directory in t.conf:3");
}

TEST_CASE("conf/parser: error: include arguments") {
    CHECK(error_of("include;") == "invalid number of arguments in \"include\" directive in t.conf:1");
    CHECK(error_of("include a b;") ==
          "invalid number of arguments in \"include\" directive in t.conf:1");
    CHECK(error_of("include \"\";") == "empty path in \"include\" directive in t.conf:1");
}

TEST_CASE("conf/parser: error: include with a block") {
    CHECK(error_of("\ninclude a.conf { }") ==
          "directive \"include\" is not terminated by \";\" in t.conf:2");
}

TEST_CASE("conf/parser: error: include loop") {
    TempDir d;
    d.write("loop.conf", "include loop.conf;\n");
    CHECK(error_of("include loop.conf;", d.path()) ==
          "include nesting is deeper than 32 levels (an include loop?) in " + d / "loop.conf:1");
}

TEST_CASE("conf/parser: error: errors inside an included file name that file") {
    TempDir d;
    d.write("bad.conf", "a;\nb;\n}\n");
    CHECK(error_of("http {\n  include bad.conf;\n}", d.path()) ==
          "unexpected \"}\" in " + d / "bad.conf:3");
    d.write("open.conf", "server {\n");
    CHECK(error_of("include open.conf;", d.path()) ==
          "unexpected end of file, expecting \"}\" in " + d / "open.conf:2" +
              " (block opened at line 1)");
    d.write("str.conf", "\n\"abc");
    CHECK(error_of("include str.conf;", d.path()) == "unterminated string in " + d / "str.conf:2");
}

TEST_CASE("conf/parser: error: a block cannot close across files") {
    TempDir d;
    d.write("open.conf", "server {\n");
    d.write("close.conf", "}\n");
    CHECK(error_of("include open.conf;\ninclude close.conf;", d.path()) ==
          "unexpected end of file, expecting \"}\" in " + d / "open.conf:2" +
              " (block opened at line 1)");
}

TEST_CASE("conf/parser: error: nesting is counted across included files") {
    TempDir d;
    std::string deep;
    for (int i = 0; i < 40; ++i) deep += "a {\n";
    for (int i = 0; i < 40; ++i) deep += "}\n";
    d.write("deep.conf", deep);
    std::string outer;
    for (int i = 0; i < 30; ++i) outer += "b {\n";
    outer += "include deep.conf;\n";
    for (int i = 0; i < 30; ++i) outer += "}\n";
    CHECK(error_of(outer, d.path()) ==
          "blocks are nested deeper than 64 levels in " + d / "deep.conf:35");
}

TEST_CASE("conf/parser: error: included file too large") {
    TempDir d;
    d.write("big.conf", std::string(100, '#'));
    ParseOptions o;
    o.conf_dir = d.path();
    o.max_file_size = 64;
    Tree t;
    auto s = parse_text("t.conf", "include big.conf;", o, t);
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "\"" + d / "big.conf" + "\" is larger than 64 bytes in t.conf:1");
}

// ---- parse_file and read_file ----------------------------------------------

TEST_CASE("conf/parser: parse_file of a missing file names the call and errno") {
    auto t = parse_file("/nonexistent/g.conf", ParseOptions{});
    REQUIRE_FALSE(t.ok());
    CHECK(t.message() == "open() \"/nonexistent/g.conf\" failed (2: No such file or directory)");
}

TEST_CASE("conf/parser: parse_file errors carry the file's path") {
    TempDir d;
    std::string p = d.write("g.conf", "a {\n");
    auto t = parse_file(p, ParseOptions{});
    REQUIRE_FALSE(t.ok());
    CHECK(t.message() ==
          "unexpected end of file, expecting \"}\" in " + p + ":2 (block opened at line 1)");
}

TEST_CASE("conf/parser: read_file") {
    TempDir d;
    std::string content("a\0b\n", 4);
    std::string p = d.write("f", content);
    auto r = read_file(p, 100);
    REQUIRE(r.ok());
    CHECK(*r == content);
    CHECK(read_file(p, 4).ok());
    auto big = read_file(p, 3);
    REQUIRE_FALSE(big.ok());
    CHECK(big.message() == "\"" + p + "\" is larger than 3 bytes");
    auto dir = read_file(d.path(), 100);
    REQUIRE_FALSE(dir.ok());
    CHECK(dir.message() == "\"" + d.path() + "\" is a directory");
    // Larger than one read() buffer.
    std::string large(100000, 'x');
    std::string lp = d.write("large", large);
    auto lr = read_file(lp, 1 << 20);
    REQUIRE(lr.ok());
    CHECK(lr->size() == large.size());
}

TEST_CASE("conf/parser: a block that reads its own includes keeps them as nodes") {
    TempDir d;
    d.write("data.conf", "10.0.0.0/8 a;\n");
    d.write("servers.conf", "server;\n");
    ParseOptions o;
    o.conf_dir = d.path();
    o.keeps_includes = [](std::string_view block) { return block == "geo"; };
    Tree t;
    REQUIRE(parse_text("t.conf",
                       "include servers.conf;\n"
                       "http {\n  include servers.conf;\n  geo $g {\n    include data.conf;\n"
                       "    default x;\n  }\n}\n",
                       o, t)
                .ok());
    REQUIRE(t.nodes.size() == 2);
    CHECK(t.nodes[0].name == "server");  // outside any block: expanded
    const Node& http = t.nodes[1];
    REQUIRE(http.children.size() == 2);
    CHECK(http.children[0].name == "server");  // another block's: expanded
    const Node& geo = http.children[1];
    REQUIRE(geo.children.size() == 2);
    CHECK(geo.children[0].name == "include");  // left to the geo handler
    CHECK(args(geo.children[0]) == std::vector<std::string>{"data.conf"});
    CHECK(geo.children[0].line == 5);
    CHECK(geo.children[1].name == "default");
}
