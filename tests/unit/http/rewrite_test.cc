// Tests of src/http/modules/rewrite.h: the pure pieces of the rewrite
// module, one row per form nginx accepts and per error message.
#include "http/modules/rewrite.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace gatehouse;
using namespace gatehouse::http::rewrite;

namespace {

Result<CondSpec> cond(std::vector<std::string_view> args) { return parse_condition(args); }

std::string cond_error(std::vector<std::string_view> args) {
    auto c = parse_condition(args);
    return c ? std::string("(ok)") : c.message();
}

Result<ReturnSpec> ret(std::vector<std::string_view> args) { return parse_return(args); }

}  // namespace

TEST_CASE("rewrite: a variable alone is a truth test") {
    auto c = cond({"($slow)"});
    REQUIRE(c);
    CHECK(c->kind == CondKind::Var);
    CHECK(c->var == "slow");

    c = cond({"(", "$slow", ")"});
    REQUIRE(c);
    CHECK(c->kind == CondKind::Var);
    CHECK(c->var == "slow");

    c = cond({"(${slow})"});
    REQUIRE(c);
    CHECK(c->var == "slow");
}

TEST_CASE("rewrite: comparisons take the operand after the operator") {
    auto c = cond({"($request_method", "=", "POST)"});
    REQUIRE(c);
    CHECK(c->kind == CondKind::Equal);
    CHECK(c->var == "request_method");
    CHECK(c->operand == "POST");

    c = cond({"(", "$a", "!=", "", ")"});  // if ( $a != "" )
    REQUIRE(c);
    CHECK(c->kind == CondKind::NotEqual);
    CHECK(c->operand == "");
}

TEST_CASE("rewrite: regex operators set case and negation") {
    struct Row {
        std::string_view op;
        CondKind kind;
        bool caseless;
    };
    for (Row row : {Row{"~", CondKind::Match, false}, Row{"~*", CondKind::Match, true},
                    Row{"!~", CondKind::NotMatch, false}, Row{"!~*", CondKind::NotMatch, true}}) {
        CAPTURE(row.op);
        auto c = cond({"($http_user_agent", row.op, "MSIE)"});
        REQUIRE(c);
        CHECK(c->kind == row.kind);
        CHECK(c->caseless == row.caseless);
        CHECK(c->operand == "MSIE");
    }
    // A regex holding ")" is written in quotes, then ")" stands alone.
    auto c = cond({"($http_cookie", "~*", "id=([^;]+)(?:;|$)", ")"});
    REQUIRE(c);
    CHECK(c->operand == "id=([^;]+)(?:;|$)");
}

TEST_CASE("rewrite: file tests") {
    struct Row {
        std::string_view op;
        FileOp file;
        bool negate;
    };
    for (Row row : {Row{"-f", FileOp::Plain, false}, Row{"!-f", FileOp::Plain, true},
                    Row{"-d", FileOp::Dir, false}, Row{"!-d", FileOp::Dir, true},
                    Row{"-e", FileOp::Exists, false}, Row{"!-e", FileOp::Exists, true},
                    Row{"-x", FileOp::Exec, false}, Row{"!-x", FileOp::Exec, true}}) {
        CAPTURE(row.op);
        auto c = cond({"(", row.op, "$request_filename)"});
        REQUIRE(c);
        CHECK(c->kind == CondKind::File);
        CHECK(c->file == row.file);
        CHECK(c->negate == row.negate);
        CHECK(c->operand == "$request_filename");
    }
    auto c = cond({"(-f", "/etc/passwd)"});
    REQUIRE(c);
    CHECK(c->operand == "/etc/passwd");
}

TEST_CASE("rewrite: condition errors name the offending word") {
    CHECK(cond_error({"$a"}) == "invalid condition \"$a\"");
    CHECK(cond_error({"($a"}) == "invalid condition \"$a\"");
    CHECK(cond_error({"(a)"}) == "invalid condition \"a\"");
    CHECK(cond_error({"()"}) == "invalid condition \")\"");
    CHECK(cond_error({"(", ")"}) == "invalid condition \")\"");
    CHECK(cond_error({"($a", "=)"}) == "invalid condition \"$a\"");
    CHECK(cond_error({"($a", "==", "b)"}) == "unexpected \"==\" in condition");
    CHECK(cond_error({"($a", "=", "b", "c)"}) == "invalid condition \"$a\"");
    CHECK(cond_error({"(-f)"}) == "invalid condition \"-f\"");
    CHECK(cond_error({"(-q", "x)"}) == "invalid condition \"-q\"");
    CHECK(cond_error({"(!-q", "x)"}) == "invalid condition \"!-q\"");
    CHECK(cond_error({"(-f", "a", "b)"}) == "invalid condition \"-f\"");
}

TEST_CASE("rewrite: truth of a value") {
    CHECK_FALSE(truthy(""));
    CHECK_FALSE(truthy("0"));
    CHECK(truthy("00"));
    CHECK(truthy("1"));
    CHECK(truthy("no"));
}

TEST_CASE("rewrite: flags") {
    auto s = parse_rewrite("/b", "");
    REQUIRE(s);
    CHECK_FALSE(s->stop);
    CHECK_FALSE(s->redirect);
    CHECK(s->add_args);

    s = parse_rewrite("/b", "last");
    REQUIRE(s);
    CHECK(s->stop);
    CHECK_FALSE(s->break_cycle);

    s = parse_rewrite("/b", "break");
    REQUIRE(s);
    CHECK(s->stop);
    CHECK(s->break_cycle);

    s = parse_rewrite("/b", "redirect");
    REQUIRE(s);
    CHECK(s->redirect);
    CHECK(s->status == 302);

    s = parse_rewrite("/b", "permanent");
    REQUIRE(s);
    CHECK(s->redirect);
    CHECK(s->status == 301);

    CHECK(parse_rewrite("/b", "forever").message() == "invalid parameter \"forever\"");
    CHECK(parse_rewrite("", "").message() == "empty replacement");
}

TEST_CASE("rewrite: a URL replacement is a 302 redirect that stops") {
    for (std::string_view url : {"http://a/b", "https://a/b", "$scheme://$host/b"}) {
        CAPTURE(url);
        auto s = parse_rewrite(url, "");
        REQUIRE(s);
        CHECK(s->redirect);
        CHECK(s->status == 302);
        CHECK(s->stop);
        CHECK(s->uri == url);
    }
    auto s = parse_rewrite("https://a/b", "permanent");
    REQUIRE(s);
    CHECK(s->status == 301);
    s = parse_rewrite("/http://", "");
    REQUIRE(s);
    CHECK_FALSE(s->redirect);
}

TEST_CASE("rewrite: args in the replacement and the final question mark") {
    auto s = parse_rewrite("/show?user=$1", "last");
    REQUIRE(s);
    CHECK(s->uri == "/show");
    CHECK(s->args == "user=$1");
    CHECK(s->has_args);
    CHECK(s->add_args);

    s = parse_rewrite("/show?user=$1?", "last");
    REQUIRE(s);
    CHECK(s->uri == "/show");
    CHECK(s->args == "user=$1");
    CHECK_FALSE(s->add_args);

    s = parse_rewrite("/plain?", "");
    REQUIRE(s);
    CHECK(s->uri == "/plain");
    CHECK_FALSE(s->has_args);
    CHECK_FALSE(s->add_args);

    // A redirect keeps its query in the URL, to be sent whole.
    s = parse_rewrite("/new?a=1", "redirect");
    REQUIRE(s);
    CHECK(s->uri == "/new?a=1");
    CHECK(s->args.empty());
    CHECK(s->has_args);
}

TEST_CASE("rewrite: captures split from text with variables") {
    auto p = split_captures("$1/mp3/$2.mp3");
    REQUIRE(p.size() == 4);
    CHECK(p[0].capture == 1);
    CHECK(p[1].text == "/mp3/");
    CHECK(p[1].capture == -1);
    CHECK(p[2].capture == 2);
    CHECK(p[3].text == ".mp3");

    p = split_captures("/x/$host$1${uri}2$a1");
    REQUIRE(p.size() == 3);
    CHECK(p[0].text == "/x/$host");
    CHECK(p[1].capture == 1);
    CHECK(p[2].text == "${uri}2$a1");

    p = split_captures("$10");  // one digit, as nginx reads it
    REQUIRE(p.size() == 2);
    CHECK(p[0].capture == 1);
    CHECK(p[1].text == "0");

    p = split_captures("/a$");
    REQUIRE(p.size() == 1);
    CHECK(p[0].text == "/a$");

    CHECK(split_captures("").empty());
}

TEST_CASE("rewrite: escaping captures") {
    auto esc = [](std::string_view in) {
        std::string out(3 * in.size(), '\0');
        out.resize(escape_args(in, out.data()));
        CHECK(out.size() == escaped_args_size(in));
        return out;
    };
    CHECK(esc("a b") == "a%20b");
    CHECK(esc("a&b=c+d?e#f;g%h") == "a%26b=c%2Bd%3Fe%23f%3Bg%25h");
    CHECK(esc("/x/y-z_.~") == "/x/y-z_.~");
    CHECK(esc("\x01\x7f\xc3\xa9") == "%01%7F%C3%A9");

    CHECK(path_was_encoded("/a%20b"));
    CHECK(path_was_encoded("/a+b?x"));
    CHECK_FALSE(path_was_encoded("/ab?x=%20+"));
    CHECK_FALSE(path_was_encoded("/ab"));
}

TEST_CASE("rewrite: the args a rewrite leaves") {
    Arena a;
    // No "?" in the replacement: the request's args stay, or go with "?".
    CHECK(rewritten_args(a, false, "", true, "q=1") == "q=1");
    CHECK(rewritten_args(a, false, "", false, "q=1") == "");
    // Its own args first, then the request's.
    CHECK(rewritten_args(a, true, "u=joe", true, "q=1") == "u=joe&q=1");
    CHECK(rewritten_args(a, true, "u=joe", true, "") == "u=joe");
    CHECK(rewritten_args(a, true, "u=joe", false, "q=1") == "u=joe");
}

TEST_CASE("rewrite: the Location of a rewrite redirect") {
    Arena a;
    CHECK(redirect_location(a, "/new", false, true, "q=1") == "/new?q=1");
    CHECK(redirect_location(a, "/new?a=1", true, true, "q=1") == "/new?a=1&q=1");
    CHECK(redirect_location(a, "/new", false, false, "q=1") == "/new");
    CHECK(redirect_location(a, "/new", false, true, "") == "/new");
}

TEST_CASE("rewrite: return forms") {
    auto r = ret({"404"});
    REQUIRE(r);
    CHECK(r->code == 404);
    CHECK_FALSE(r->has_text);

    r = ret({"200", "hello $uri"});
    REQUIRE(r);
    CHECK(r->code == 200);
    CHECK(r->text == "hello $uri");
    CHECK(r->has_text);

    r = ret({"200", ""});
    REQUIRE(r);
    CHECK_FALSE(r->has_text);

    r = ret({"301", "/elsewhere"});
    REQUIRE(r);
    CHECK(r->code == 301);
    CHECK(is_redirect_code(r->code));

    for (std::string_view url : {"http://x/", "https://x/", "$scheme://$host/"}) {
        CAPTURE(url);
        r = ret({url});
        REQUIRE(r);
        CHECK(r->code == 302);
        CHECK(r->text == url);
    }

    r = ret({"444"});
    REQUIRE(r);
    CHECK(r->code == 444);

    CHECK(ret({"1000"}).message() == "invalid return code \"1000\"");
    CHECK(ret({"abc"}).message() == "invalid return code \"abc\"");
    CHECK(ret({"/local"}).message() == "invalid return code \"/local\"");
    CHECK(ret({"http://x/", "text"}).message() == "invalid return code \"http://x/\"");
    CHECK(ret({"-1"}).message() == "invalid return code \"-1\"");
}

TEST_CASE("rewrite: redirect codes") {
    for (int c : {301, 302, 303, 307, 308}) CHECK(is_redirect_code(c));
    for (int c : {200, 300, 304, 305, 404}) CHECK_FALSE(is_redirect_code(c));
}
