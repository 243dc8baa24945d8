#include "http/htpasswd.h"

#include <doctest/doctest.h>

#include <optional>
#include <string>

using gatehouse::http::apr1_crypt;
using gatehouse::http::HtpasswdScanner;
using gatehouse::http::verify_password;

namespace {

// The password field of `user` in `file` fed `step` bytes at a time;
// nullopt when the user has no line.
std::optional<std::string> lookup(std::string_view file, std::string_view user, size_t step) {
    HtpasswdScanner s(user);
    bool found = false;
    for (size_t i = 0; i < file.size() && !found; i += step) found = s.feed(file.substr(i, step));
    if (!found) found = s.finish();
    if (!found) return std::nullopt;
    return std::string(s.password());
}

}  // namespace

TEST_CASE("http/htpasswd: apr1 matches openssl passwd -apr1") {
    // Made with: openssl passwd -apr1 -salt SALT PASSWORD
    const struct {
        const char *password, *salt, *hash;
    } rows[] = {
        {"password", "salt", "$apr1$salt$Xxd1irWT9ycqoYxGFn4cb."},
        {"secret", "12345678", "$apr1$12345678$0lqb/6VUFP8JY/s/jTrIk0"},
        {"pw", "abcdefghXX", "$apr1$abcdefgh$5VEbMkemELfbhC5ck.U.z1"},  // salt cut at 8
        {"", "x", "$apr1$x$tMwYqBfQwi3FYAr0aJc8M/"},
        {"a-very-long-password-over-sixteen-chars", "s0", "$apr1$s0$WXj0./DcK2ZoG5N3TIQOj/"},
    };
    for (const auto& row : rows) {
        CAPTURE(row.hash);
        CHECK(apr1_crypt(row.password, row.salt) == row.hash);
        CHECK(verify_password(row.password, row.hash));
        CHECK_FALSE(verify_password(std::string(row.password) + "x", row.hash));
    }
    // The salt ends at '$': the stored field's own salt is found so.
    CHECK(apr1_crypt("password", "salt$Xxd1irWT9ycqoYxGFn4cb.") == "$apr1$salt$Xxd1irWT9ycqoYxGFn4cb.");
}

TEST_CASE("http/htpasswd: crypt(3) hashes through libxcrypt, one row per method") {
    // Made with Python's crypt.crypt("password", SETTING).
    const char* hashes[] = {
        "abJnggxhB/yWI",                                           // DES
        "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/",                      // MD5
        "$5$rounds=1000$saltsalt$azOwbpkvuuBKkE82dQPwTsQE8JyT9Fflpr9aKid3aT9",  // SHA-256
        "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
        "$2b$04$abcdefghijklmnopqrstuughE8Ev8uGFaUgY2cNEySvxngrb/Jzdm",  // bcrypt
        "$2y$04$abcdefghijklmnopqrstuughE8Ev8uGFaUgY2cNEySvxngrb/Jzdm",
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$tnSYvahCwPBHKZUspmcxMfb0.WiB9W.zEaKlOBL35rC",  // yescrypt
    };
    for (const char* h : hashes) {
        CAPTURE(h);
        CHECK(verify_password("password", h));
        CHECK_FALSE(verify_password("Password", h));
        CHECK_FALSE(verify_password("", h));
    }
}

TEST_CASE("http/htpasswd: {PLAIN}, {SHA} and {SSHA}") {
    CHECK(verify_password("password", "{PLAIN}password"));
    CHECK_FALSE(verify_password("passwor", "{PLAIN}password"));
    CHECK_FALSE(verify_password("password1", "{PLAIN}password"));
    CHECK(verify_password("", "{PLAIN}"));
    // base64(SHA-1("password"))
    CHECK(verify_password("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
    CHECK_FALSE(verify_password("123", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="));
    // base64(SHA-1("password" + "salt") + "salt")
    CHECK(verify_password("password", "{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0"));
    CHECK_FALSE(verify_password("123", "{SSHA}yI6cZwQadOA1e+/f+T+H3eCQQhRzYWx0"));
}

TEST_CASE("http/htpasswd: a broken field never matches and never fails") {
    const char* broken[] = {"$1$", "$apr1$", "{SSHA}_____wQadOA1e+/f+T+H3eCQQhRzYWx0", "{SSHA}Zm9vCg==",
                            "{SHA}_____Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}Zm9vCg==", "", "*", "!", "$6$",
                            "$2y$99$abcdefghijklmnopqrstuu", "$7$nonsense"};
    for (const char* b : broken) {
        CAPTURE(b);
        CHECK_FALSE(verify_password("1", b));
        CHECK_FALSE(verify_password("", b));
    }
}

TEST_CASE("http/htpasswd: the scanner finds the user's line in pieces of any size") {
    const std::string file =
        "# comment user:{PLAIN}no\n"
        "\n"
        "us:{PLAIN}short\r\n"
        "user:{PLAIN}first:a comment\n"
        "userx:{PLAIN}longer\n"
        "user:{PLAIN}second\n"
        "last:{PLAIN}no-newline";
    for (size_t step : {size_t{1}, size_t{2}, size_t{7}, size_t{4096}}) {
        CAPTURE(step);
        CHECK(lookup(file, "user", step) == std::optional<std::string>("{PLAIN}first"));
        CHECK(lookup(file, "us", step) == std::optional<std::string>("{PLAIN}short"));
        CHECK(lookup(file, "userx", step) == std::optional<std::string>("{PLAIN}longer"));
        CHECK(lookup(file, "last", step) == std::optional<std::string>("{PLAIN}no-newline"));
        CHECK(lookup(file, "u", step) == std::nullopt);
        CHECK(lookup(file, "# comment user", step) == std::nullopt);
        CHECK(lookup(file, "nobody", step) == std::nullopt);
    }
    // An empty password field is a field.
    CHECK(lookup("a:\n", "a", 1) == std::optional<std::string>(""));
    CHECK(lookup("", "a", 1) == std::nullopt);
}

TEST_CASE("http/htpasswd: a field longer than the limit is flagged, not kept") {
    std::string file = "u:{PLAIN}" + std::string(HtpasswdScanner::kMaxField, 'x') + "\nv:{PLAIN}ok\n";
    HtpasswdScanner s("u");
    REQUIRE(s.feed(file));
    CHECK(s.too_long());
    HtpasswdScanner t("v");
    REQUIRE(t.feed(file));
    CHECK_FALSE(t.too_long());
    CHECK(t.password() == "{PLAIN}ok");
}
