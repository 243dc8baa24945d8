#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "http/log_escape.h"

using namespace gatehouse::http;
using namespace std::string_view_literals;

namespace {

// Escapes through the header's two calls and checks they agree on the size.
std::string esc(LogEscape e, std::string_view s) {
    std::string out(escaped_size(e, s), '?');
    char* end = escape_to(e, s, out.data());
    CHECK(end == out.data() + out.size());
    return out;
}

}  // namespace

TEST_CASE("http/log_escape: parse_log_escape takes the three nginx names") {
    CHECK(parse_log_escape("default").value() == LogEscape::Default);
    CHECK(parse_log_escape("json").value() == LogEscape::Json);
    CHECK(parse_log_escape("none").value() == LogEscape::None);
    auto bad = parse_log_escape("JSON");
    REQUIRE_FALSE(bad);
    CHECK(bad.message() == "unknown log format escaping \"JSON\"");
    CHECK_FALSE(parse_log_escape(""));
}

TEST_CASE("http/log_escape: default leaves printable ASCII alone") {
    std::string all;
    for (int c = 0x20; c < 0x7f; ++c)
        if (c != '"' && c != '\\') all += static_cast<char>(c);
    CHECK(esc(LogEscape::Default, all) == all);
    CHECK(esc(LogEscape::Default, "") == "");
    CHECK(esc(LogEscape::Default, "GET /a?b=c HTTP/1.1") == "GET /a?b=c HTTP/1.1");
}

TEST_CASE("http/log_escape: default writes \\xHH in upper case") {
    CHECK(esc(LogEscape::Default, "say \"hi\"") == "say \\x22hi\\x22");
    CHECK(esc(LogEscape::Default, "a\\b") == "a\\x5Cb");
    CHECK(esc(LogEscape::Default, "\n") == "\\x0A");
    CHECK(esc(LogEscape::Default, "\t\r") == "\\x09\\x0D");
    CHECK(esc(LogEscape::Default, "\x1f") == "\\x1F");
    CHECK(esc(LogEscape::Default, "\x7f") == "\\x7F");
    CHECK(esc(LogEscape::Default, "\x80\xff") == "\\x80\\xFF");
    CHECK(esc(LogEscape::Default, "\0"sv) == "\\x00");
    // UTF-8 is bytes >= 0x80: escaped too, as nginx does.
    CHECK(esc(LogEscape::Default, "caf\xc3\xa9") == "caf\\xC3\\xA9");
}

TEST_CASE("http/log_escape: every byte is escaped or kept, never lost") {
    for (int c = 0; c < 256; ++c) {
        std::string s(1, static_cast<char>(c));
        bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        CHECK(escaped_size(LogEscape::Default, s) == (plain ? 1u : 4u));
    }
}

TEST_CASE("http/log_escape: json escapes as a JSON string body") {
    CHECK(esc(LogEscape::Json, "plain text / 1") == "plain text / 1");
    CHECK(esc(LogEscape::Json, "say \"hi\"") == "say \\\"hi\\\"");
    CHECK(esc(LogEscape::Json, "a\\b") == "a\\\\b");
    CHECK(esc(LogEscape::Json, "\b\f\n\r\t") == "\\b\\f\\n\\r\\t");
    CHECK(esc(LogEscape::Json, "\x01") == "\\u0001");
    CHECK(esc(LogEscape::Json, "\x1f") == "\\u001F");
    CHECK(esc(LogEscape::Json, "\0"sv) == "\\u0000");
    // DEL and bytes >= 0x80 (UTF-8) are valid inside a JSON string.
    CHECK(esc(LogEscape::Json, "\x7f") == "\x7f");
    CHECK(esc(LogEscape::Json, "caf\xc3\xa9") == "caf\xc3\xa9");
}

TEST_CASE("http/log_escape: none copies bytes as they are") {
    std::string_view raw = "a\"b\\c\n\x01\xff";
    CHECK(escaped_size(LogEscape::None, raw) == raw.size());
    CHECK(esc(LogEscape::None, raw) == raw);
    CHECK(esc(LogEscape::None, "") == "");
}
