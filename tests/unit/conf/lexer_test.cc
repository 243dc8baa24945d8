// Tests of src/conf/lexer.h: nginx's token rules, one row per rule and per
// error message.
#include "conf/lexer.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using gatehouse::conf::Lexer;
using gatehouse::conf::Tok;
using gatehouse::conf::Token;

namespace {

// Every token up to and including Eof or Error.
std::vector<Token> lex(std::string_view src) {
    Lexer lx(src);
    std::vector<Token> out;
    for (;;) {
        out.push_back(lx.next());
        if (out.back().kind == Tok::Eof || out.back().kind == Tok::Error) return out;
        REQUIRE(out.size() < 10000);
    }
}

// The words, and "; { }" as themselves, for compact comparisons.
std::vector<std::string> texts(std::string_view src) {
    std::vector<std::string> out;
    for (const Token& t : lex(src)) {
        switch (t.kind) {
            case Tok::Word: out.push_back(t.text); break;
            case Tok::Semicolon: out.push_back(";"); break;
            case Tok::BlockOpen: out.push_back("{"); break;
            case Tok::BlockClose: out.push_back("}"); break;
            case Tok::Eof: break;
            case Tok::Error: out.push_back("ERROR: " + t.text); break;
        }
    }
    return out;
}

using V = std::vector<std::string>;

// The one word of `src`, which must lex as a single word then Eof.
Token word(std::string_view src) {
    auto ts = lex(src);
    REQUIRE(ts.size() == 2);
    REQUIRE(ts[1].kind == Tok::Eof);
    return ts[0];
}

// The error token that ends `src`.
Token error_of(std::string_view src) {
    auto ts = lex(src);
    REQUIRE(ts.back().kind == Tok::Error);
    return ts.back();
}

}  // namespace

TEST_CASE("conf/lexer: an empty input is Eof at line 1") {
    auto ts = lex("");
    REQUIRE(ts.size() == 1);
    CHECK(ts[0].kind == Tok::Eof);
    CHECK(ts[0].line == 1);
    CHECK(texts("  \t\r\n\n  ") == V{});
}

TEST_CASE("conf/lexer: words, semicolons and braces") {
    CHECK(texts("worker_processes 4;") == V{"worker_processes", "4", ";"});
    CHECK(texts("events{worker_connections 10;}") ==
          V{"events", "{", "worker_connections", "10", ";", "}"});
    CHECK(texts("a;b{c}") == V{"a", ";", "b", "{", "c", "}"});
    CHECK(texts("a\tb\r\nc") == V{"a", "b", "c"});
}

TEST_CASE("conf/lexer: token kinds") {
    auto ts = lex("a ; { }");
    REQUIRE(ts.size() == 5);
    CHECK(ts[0].kind == Tok::Word);
    CHECK(ts[1].kind == Tok::Semicolon);
    CHECK(ts[2].kind == Tok::BlockOpen);
    CHECK(ts[3].kind == Tok::BlockClose);
    CHECK(ts[4].kind == Tok::Eof);
}

TEST_CASE("conf/lexer: each token carries the line it starts on") {
    auto ts = lex("a\n\nb;\r\n  {\n}\n");
    REQUIRE(ts.size() == 6);
    CHECK(ts[0].line == 1);
    CHECK(ts[1].line == 3);
    CHECK(ts[2].line == 3);
    CHECK(ts[3].line == 4);
    CHECK(ts[4].line == 5);
    CHECK(ts[5].line == 6);  // Eof after the last newline
}

TEST_CASE("conf/lexer: Eof repeats") {
    Lexer lx("a");
    CHECK(lx.next().kind == Tok::Word);
    CHECK(lx.next().kind == Tok::Eof);
    CHECK(lx.next().kind == Tok::Eof);
}

TEST_CASE("conf/lexer: an error repeats rather than turning into Eof") {
    Lexer lx("a \"b");
    CHECK(lx.next().kind == Tok::Word);
    Token e1 = lx.next();
    CHECK(e1.kind == Tok::Error);
    Token e2 = lx.next();
    CHECK(e2.kind == Tok::Error);
    CHECK(e2.text == e1.text);
    CHECK(e2.line == e1.line);
}

TEST_CASE("conf/lexer: comments") {
    SUBCASE("a whole line") { CHECK(texts("# comment ; { }\na;") == V{"a", ";"}); }
    SUBCASE("after a token") { CHECK(texts("a; # b;\nc;") == V{"a", ";", "c", ";"}); }
    SUBCASE("right after a semicolon") { CHECK(texts("a;#b\n") == V{"a", ";"}); }
    SUBCASE("at end of input without newline") { CHECK(texts("a; #") == V{"a", ";"}); }
    SUBCASE("# inside a word is part of it") { CHECK(texts("a#b;") == V{"a#b", ";"}); }
    SUBCASE("# inside quotes is part of the string") {
        CHECK(texts("\"#a\";") == V{"#a", ";"});
    }
    SUBCASE("lines inside comments are counted") {
        auto ts = lex("# one\n# two\nx");
        CHECK(ts[0].line == 3);
    }
}

TEST_CASE("conf/lexer: double-quoted strings") {
    Token t = word("\"a b;{}\"");
    CHECK(t.text == "a b;{}");
    CHECK(t.quoted);
    CHECK_FALSE(word("ab").quoted);
}

TEST_CASE("conf/lexer: single-quoted strings") {
    Token t = word("'a \"b\" ;'");
    CHECK(t.text == "a \"b\" ;");
    CHECK(t.quoted);
}

TEST_CASE("conf/lexer: an empty quoted string is a word") {
    Token t = word("\"\"");
    CHECK(t.kind == Tok::Word);
    CHECK(t.text.empty());
    CHECK(t.quoted);
    CHECK(texts("server_name '';") == V{"server_name", "", ";"});
}

TEST_CASE("conf/lexer: a quoted word may be followed by a delimiter") {
    CHECK(texts("\"a\";") == V{"a", ";"});
    CHECK(texts("\"a\"{") == V{"a", "{"});
    CHECK(texts("\"a\"}") == V{"a", "}"});
    CHECK(texts("\"a\"\n\"b\"") == V{"a", "b"});
}

TEST_CASE("conf/lexer: escapes decoded in quoted strings") {
    CHECK(word(R"("a\"b")").text == "a\"b");
    CHECK(word(R"('a\'b')").text == "a'b");
    CHECK(word(R"("a\\b")").text == "a\\b");
    CHECK(word(R"("a\tb")").text == "a\tb");
    CHECK(word(R"("a\rb")").text == "a\rb");
    CHECK(word(R"("a\nb")").text == "a\nb");
    CHECK(word(R"("a\'b")").text == "a'b");
    CHECK(word(R"('a\"b')").text == "a\"b");
}

TEST_CASE("conf/lexer: other backslash pairs are kept as written") {
    CHECK(word(R"("^/a\d+\.html$")").text == R"(^/a\d+\.html$)");
    CHECK(word(R"('\x')").text == R"(\x)");
}

TEST_CASE("conf/lexer: escapes in unquoted words") {
    CHECK(word(R"(a\"b)").text == "a\"b");
    CHECK(word(R"(a\tb)").text == "a\tb");
    CHECK(word(R"(\d+)").text == R"(\d+)");
    // A backslash keeps a delimiter from ending the word.
    CHECK(texts(R"(a\;b;)") == V{R"(a\;b)", ";"});
    CHECK(texts(R"(a\ b;)") == V{R"(a\ b)", ";"});
    CHECK(texts(R"(a\{b;)") == V{R"(a\{b)", ";"});
}

TEST_CASE("conf/lexer: a trailing backslash stays in the word") {
    CHECK(word("a\\").text == "a\\");
}

TEST_CASE("conf/lexer: a quoted string may span lines; the line is where it starts") {
    auto ts = lex("\"a\nb\" c");
    REQUIRE(ts.size() == 3);
    CHECK(ts[0].text == "a\nb");
    CHECK(ts[0].line == 1);
    CHECK(ts[1].line == 2);
}

TEST_CASE("conf/lexer: an escaped newline in a quoted string is counted") {
    auto ts = lex("\"a\\\nb\" c");
    REQUIRE(ts.size() == 3);
    CHECK(ts[1].line == 2);
}

TEST_CASE("conf/lexer: $var and ${var} stay in the word") {
    CHECK(word("$host").text == "$host");
    CHECK(word("$host$request_uri").text == "$host$request_uri");
    CHECK(word("${host}").text == "${host}");
    CHECK(word("${host}x").text == "${host}x");
    CHECK(word("a${b}c${d}").text == "a${b}c${d}");
    CHECK(texts("return 200 ${a}b;") == V{"return", "200", "${a}b", ";"});
    CHECK(word("\"${a} ${b}\"").text == "${a} ${b}");
    // A brace not after "$" still opens a block.
    CHECK(texts("a{") == V{"a", "{"});
    CHECK(texts("$ {") == V{"$", "{"});
}

TEST_CASE("conf/lexer: error: unterminated variable") {
    Token e = error_of("set ${a");
    CHECK(e.text == "unterminated variable \"${\"");
    CHECK(e.line == 1);
    CHECK(error_of("x ${a;").text == "unterminated variable \"${\"");
    CHECK(error_of("x ${a{").text == "unterminated variable \"${\"");
    Token nl = error_of("\nx ${a\n}");
    CHECK(nl.text == "unterminated variable \"${\"");
    CHECK(nl.line == 2);
}

TEST_CASE("conf/lexer: error: unterminated string, at the line it starts") {
    Token e = error_of("a;\nb \"c\nd\ne");
    CHECK(e.text == "unterminated string");
    CHECK(e.line == 2);
    CHECK(error_of("'abc").text == "unterminated string");
    CHECK(error_of("\"").text == "unterminated string");
    CHECK(error_of("\"a\\\"").text == "unterminated string");  // the quote is escaped
    CHECK(error_of("\"a\\").text == "unterminated string");
}

TEST_CASE("conf/lexer: error: text right after a closing quote") {
    Token e = error_of("a \"b\"c;");
    CHECK(e.text == "unexpected \"c\" after quoted string");
    CHECK(e.line == 1);
    CHECK(error_of("'b'\"c\"").text == "unexpected \"\"\" after quoted string");
    CHECK(error_of("\"b\"#").text == "unexpected \"#\" after quoted string");
}

TEST_CASE("conf/lexer: a closing parenthesis may follow a quoted string") {
    // nginx accepts if ($arg_x = "1"): the ")" starts the next word.
    CHECK(texts("if ($arg_x = \"1\") {") == V{"if", "($arg_x", "=", "1", ")", "{"});
    CHECK(texts("if ($a = '1'))x;") == V{"if", "($a", "=", "1", "))x", ";"});
    CHECK(texts("\"a b\")") == V{"a b", ")"});
}

TEST_CASE("conf/lexer: control characters in messages are shown in hex") {
    CHECK(error_of("\"b\"\x01").text == "unexpected \"\\x01\" after quoted string");
    CHECK(error_of("\"b\"\x1f").text == "unexpected \"\\x1f\" after quoted string");
    CHECK(error_of("\"b\"\x7f").text == "unexpected \"\\x7f\" after quoted string");
    CHECK(error_of(std::string_view("\"b\"\0", 4)).text ==
          "unexpected \"\\x00\" after quoted string");
}

TEST_CASE("conf/lexer: bytes outside ASCII are word characters") {
    CHECK(word("caf\xc3\xa9").text == "caf\xc3\xa9");
    CHECK(word(std::string_view("a\0b", 3)).text == std::string("a\0b", 3));
}
