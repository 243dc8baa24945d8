// htpasswd files and the password formats they hold, for auth_basic.
//
// A file is lines of "user:password[:comment]"; lines starting with '#'
// are comments [nginx, Apache htpasswd]. The password field says its
// format by its start:
//   {PLAIN}text          the password itself
//   {SHA}base64          SHA-1 of the password (RFC 2307 style)
//   {SSHA}base64         SHA-1 of password + salt, then the salt
//   $apr1$salt$hash      Apache's MD5 variant (computed here)
//   anything else        crypt(3) through libxcrypt: DES ("ab..."),
//                        $1$ (MD5), $5$ (SHA-256), $6$ (SHA-512),
//                        $2y$/$2b$ (bcrypt), and the rest it knows
// Every format is checked by computing the stored string from the
// password and comparing the two in constant time. A field that is no
// valid hash of its format just never matches (nginx's answer, 401, on
// a Debian libc whose crypt() returns a failure token).
//
// Cost: bcrypt and SHA-crypt hashes are slow by design (bcrypt cost 10 is
// tens of milliseconds of CPU); the worker computes them in its loop, as
// nginx does, so a busy site protected by them wants a low cost.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gatehouse::http {

// Finds one user's password field in an htpasswd file given in pieces of
// any size (the file is read per request through a small buffer, so its
// size does not matter). Lines are compared byte for byte with the user;
// the first line of that user wins.
class HtpasswdScanner {
public:
    // `user` must outlive the scanner.
    explicit HtpasswdScanner(std::string_view user) : user_(user) {}

    // The next piece of the file. True once the user's line was found
    // and its password field is complete: the caller stops reading.
    bool feed(std::string_view piece);
    // The end of the file: true when the user's line was found (its
    // password ended by the end of the file, without a newline).
    bool finish();
    // The password field once found.
    std::string_view password() const { return {field_, field_len_}; }
    // The field was longer than kMaxField and is not kept (no format
    // produces one): the caller counts it as a mismatch.
    bool too_long() const { return overflow_; }

    static constexpr size_t kMaxField = 512;

private:
    enum class State : uint8_t { Login, Password, Skip, Done };
    std::string_view user_;
    State state_ = State::Login;
    size_t matched_ = 0;  // bytes of the user matched on this line
    char field_[kMaxField];
    size_t field_len_ = 0;
    bool overflow_ = false;
};

// Whether `password` (as the client sent it) is the one `stored` (a
// password field, see above) was made from. Constant time in the
// comparison of the computed and the stored strings.
bool verify_password(std::string_view password, std::string_view stored);

// "$apr1$SALT$HASH" for `password` and `salt` (at most its first 8
// characters, up to a '$'): Apache's MD5-based crypt, for tests.
std::string apr1_crypt(std::string_view password, std::string_view salt);

}  // namespace gatehouse::http
