#include "core/base64.h"

#include <doctest/doctest.h>

#include <string>

using gatehouse::base64_decoded_max;
using gatehouse::decode_base64;
using gatehouse::decode_base64url;
using gatehouse::encode_base64;

namespace {

std::optional<std::string> decode(std::string_view in, bool url = false) {
    std::string out(base64_decoded_max(in.size()), '\0');
    auto n = url ? decode_base64url(in, out.data()) : decode_base64(in, out.data());
    if (!n) return std::nullopt;
    out.resize(*n);
    return out;
}

}  // namespace

TEST_CASE("core/base64: RFC 4648 test vectors, with and without padding") {
    const std::pair<const char*, const char*> rows[] = {
        {"", ""},           {"Zg==", "f"},         {"Zm8=", "fo"},         {"Zm9v", "foo"},
        {"Zm9vYg==", "foob"}, {"Zm9vYmE=", "fooba"}, {"Zm9vYmFy", "foobar"}, {"Zg", "f"},
        {"Zm8", "fo"},      {"dXNlcjpzZWNyZXQ=", "user:secret"},            {"+/+/", "\xfb\xff\xbf"},
    };
    for (const auto& [in, want] : rows) {
        CAPTURE(in);
        CHECK(decode(in) == std::optional<std::string>(want));
    }
}

TEST_CASE("core/base64: malformed input is refused") {
    const char* bad[] = {"Z", "Zm9vY", "Zg=", "Z===", "Zm9v!", "Zm 9v", "Zg==Zg==", "=Zg=", "Zm-_"};
    for (const char* in : bad) {
        CAPTURE(in);
        CHECK_FALSE(decode(in));
    }
}

TEST_CASE("core/base64: the URL alphabet takes '-' and '_' for '+' and '/'") {
    CHECK(decode("-_-_", true) == std::optional<std::string>("\xfb\xff\xbf"));
    CHECK(decode("Zm9vYg==", true) == std::optional<std::string>("foob"));
    CHECK(decode("Zm9vYg", true) == std::optional<std::string>("foob"));
    const char* bad[] = {"+/+/", "Zm9vY", "Zg=", "Zm9v!", "Zg==Zg=="};
    for (const char* in : bad) {
        CAPTURE(in);
        CHECK_FALSE(decode(in, true));
    }
}

TEST_CASE("core/base64: encoding gives the RFC 4648 test vectors, padded") {
    const std::pair<std::string_view, const char*> rows[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
        {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"}, {std::string_view("\xfb\xff\xbf\x00", 4), "+/+/AA=="},
    };
    for (const auto& [in, want] : rows) {
        CAPTURE(want);
        std::string out(gatehouse::base64_encoded_size(in.size()), '\0');
        CHECK(encode_base64(in, out.data()) == out.size());
        CHECK(out == want);
        CHECK(decode(out) == std::optional<std::string>(in));
    }
}
