#include "core/base64.h"

#include <doctest/doctest.h>

#include <string>

using gatehouse::base64_decoded_max;
using gatehouse::decode_base64;

namespace {

std::optional<std::string> decode(std::string_view in) {
    std::string out(base64_decoded_max(in.size()), '\0');
    auto n = decode_base64(in, out.data());
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
