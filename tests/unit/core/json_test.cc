#include "core/json.h"

#include <doctest/doctest.h>

#include <string>

using namespace gatehouse::json;

namespace {

std::string error_of(std::string_view in, const Limits& l = {}) {
    auto r = parse(in, l);
    return r ? std::string("(parsed)") : r.message();
}

}  // namespace

TEST_CASE("core/json: scalars, arrays and objects") {
    auto v = parse(R"( {"server":"127.0.0.1:8081","weight":5,"down":false,"x":null,"f":-1.5e2,"a":[1,[2],{}]} )");
    REQUIRE(v);
    CHECK(v->type == Type::Object);
    REQUIRE(v->members.size() == 6);
    CHECK(v->members[0].first == "server");
    CHECK(v->find("server")->string == "127.0.0.1:8081");
    CHECK(v->find("weight")->integer);
    CHECK(v->find("weight")->i == 5);
    CHECK(v->find("down")->type == Type::Bool);
    CHECK_FALSE(v->find("down")->boolean);
    CHECK(v->find("x")->is_null());
    CHECK_FALSE(v->find("f")->integer);
    CHECK(v->find("f")->number == -150.0);
    CHECK(v->find("a")->items.size() == 3);
    CHECK(v->find("a")->items[1].items[0].i == 2);
    CHECK(v->find("nope") == nullptr);
    CHECK(parse("0")->i == 0);
    CHECK(parse("-0")->integer);
    CHECK(parse("9223372036854775807")->i == INT64_MAX);
    // Beyond int64: a double, not an integer.
    CHECK_FALSE(parse("9223372036854775808")->integer);
    CHECK(parse("[]")->items.empty());
    CHECK(parse("\"\"")->string.empty());
}

TEST_CASE("core/json: string escapes and UTF-8") {
    CHECK(parse(R"("a\"b\\c\/d\b\f\n\r\t")")->string == "a\"b\\c/d\b\f\n\r\t");
    CHECK(parse(R"("\u00e9\u20ac")")->string == "\xc3\xa9\xe2\x82\xac");
    CHECK(parse(R"("\ud83d\ude00")")->string == "\xf0\x9f\x98\x80");
    CHECK(parse("\"\xc3\xa9\"")->string == "\xc3\xa9");
    CHECK(error_of(R"("\ud83d")") == "unpaired surrogate at offset 1");
    CHECK(error_of(R"("\ude00")") == "unpaired surrogate at offset 1");
    CHECK(error_of(R"("\x")") == "invalid escape at offset 2");
    CHECK(error_of("\"\xc3\"") == "invalid UTF-8 at offset 1");
    CHECK(error_of("\"\xc0\xaf\"") == "invalid UTF-8 at offset 1");       // overlong
    CHECK(error_of("\"\xed\xa0\x80\"") == "invalid UTF-8 at offset 1");   // raw surrogate
    CHECK(error_of("\"\xf4\x90\x80\x80\"") == "invalid UTF-8 at offset 1");  // > U+10FFFF
    CHECK(error_of("\"a\nb\"") == "control character in a string at offset 2");
    CHECK(error_of("\"abc") == "unterminated string at offset 4");
}

TEST_CASE("core/json: strict grammar, one error row each") {
    CHECK(error_of("") == "unexpected end of data at offset 0");
    CHECK(error_of("{") == "unexpected end of data at offset 1");
    CHECK(error_of("[1,]") == "unexpected character ']' at offset 3");
    CHECK(error_of("{\"a\":1,}") == "unexpected character '}' at offset 7");
    CHECK(error_of("{a:1}") == "unexpected character 'a' at offset 1");
    CHECK(error_of("01") == "leading zero in a number at offset 1");
    CHECK(error_of("1.") == "unexpected end of data at offset 2");
    CHECK(error_of("+1") == "unexpected character '+' at offset 0");
    CHECK(error_of(".5") == "unexpected character '.' at offset 0");
    CHECK(error_of("NaN") == "unexpected character 'N' at offset 0");
    CHECK(error_of("1e999") == "number out of range at offset 0");
    CHECK(error_of("tru") == "unexpected character 't' at offset 0");
    CHECK(error_of("1 2") == "unexpected data after the value at offset 2");
    CHECK(error_of("// x\n1") == "unexpected character '/' at offset 0");
    CHECK(error_of("\x01") == "unexpected byte 0x01 at offset 0");
    CHECK(error_of(R"({"a":1,"a":2})") == "duplicate key \"a\" at offset 7");
}

TEST_CASE("core/json: limits bound size, depth and values") {
    Limits l;
    l.max_size = 8;
    CHECK(error_of("[1,2,3,4,5]", l) == "body larger than 8 bytes");
    l = Limits();
    l.max_depth = 2;
    CHECK(parse("[[1]]", l));
    CHECK(error_of("[[[1]]]", l) == "nesting deeper than 2 at offset 2");
    CHECK(error_of("{\"a\":{\"b\":{}}}", l) == "nesting deeper than 2 at offset 10");
    l = Limits();
    l.max_values = 3;
    CHECK(parse("[1,2]", l));
    CHECK(error_of("[1,2,3]", l) == "more than 3 values at offset 5");
    // The default depth stops a deep input long before the stack.
    CHECK(error_of(std::string(100000, '[')) == "body larger than 65536 bytes");
    CHECK(error_of(std::string(1000, '[')) == "nesting deeper than 16 at offset 16");
}

TEST_CASE("core/json: the writer escapes and places commas") {
    Writer w;
    w.begin_object().key("a").number(-1).key("b").begin_array().string("x\"\n\x01").boolean(true).null().end_array();
    w.key("c").begin_object().end_object().key("d").unsigned_number(UINT64_MAX).end_object();
    CHECK(w.out() == R"({"a":-1,"b":["x\"\n\u0001",true,null],"c":{},"d":18446744073709551615})");
    // What it writes, it reads back.
    auto v = parse(w.out());
    REQUIRE(v);
    CHECK(v->find("b")->items[0].string == "x\"\n\x01");
    CHECK(quote("\\") == "\"\\\\\"");
}
