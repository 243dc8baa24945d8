#include "http/basic_credentials.h"

#include <doctest/doctest.h>

#include <string>

using gatehouse::http::basic_credentials_buffer;
using gatehouse::http::parse_basic_credentials;

namespace {

struct Parsed {
    std::string user, password;
    bool operator==(const Parsed&) const = default;
};

std::optional<Parsed> parse(std::string_view value) {
    std::string buf(basic_credentials_buffer(value), '\0');
    auto c = parse_basic_credentials(value, buf.data());
    if (!c) return std::nullopt;
    return Parsed{std::string(c->user), std::string(c->password)};
}

}  // namespace

TEST_CASE("http/basic_credentials: user and password of the Basic scheme") {
    CHECK(parse("Basic dXNlcjpzZWNyZXQ=") == Parsed{"user", "secret"});
    CHECK(parse("basic dXNlcjpzZWNyZXQ=") == Parsed{"user", "secret"});
    CHECK(parse("BASIC   dXNlcjpzZWNyZXQ=  ") == Parsed{"user", "secret"});
    CHECK(parse("Basic dXNlcjpzZWNyZXQ") == Parsed{"user", "secret"});  // no padding
    CHECK(parse("Basic dTo=") == Parsed{"u", ""});                       // "u:"
    CHECK(parse("Basic dTphOmI=") == Parsed{"u", "a:b"});                // "u:a:b"
}

TEST_CASE("http/basic_credentials: anything else is no credentials") {
    const char* bad[] = {
        "",  "Basic", "Basic ", "Basic    ", "Bearer dXNlcjpzZWNyZXQ=", "Basicx dXNlcjpzZWNyZXQ=",
        "Basic dXNlcg==",  // "user": no colon
        "Basic OnA=",      // ":p": empty user
        "Basic !!!!",      // not base64
    };
    for (const char* b : bad) {
        CAPTURE(b);
        CHECK(parse(b) == std::nullopt);
    }
}
