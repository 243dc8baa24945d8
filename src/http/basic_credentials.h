// The credentials of "Authorization: Basic" (RFC 7617): what $remote_user
// shows and what auth_basic checks, read the one same way [nginx].
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace gatehouse::http {

struct BasicCredentials {
    std::string_view user;      // never empty
    std::string_view password;  // may be empty
};

// The most bytes parse_basic_credentials() writes for `value`.
size_t basic_credentials_buffer(std::string_view value);

// Parses an Authorization field's value: "Basic" (any case), spaces, then
// base64 of "user:password". Decodes into `buf` (basic_credentials_buffer
// bytes), which the views point into. nullopt for another scheme, bad
// base64, no ':' or an empty user: nginx treats them all as no
// credentials at all.
std::optional<BasicCredentials> parse_basic_credentials(std::string_view value, char* buf);

}  // namespace gatehouse::http
