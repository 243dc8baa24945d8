// Base64 decoding (RFC 4648 4), for the credentials of "Authorization:
// Basic" ($remote_user, and basic authentication later), and its URL and
// file name safe form (RFC 4648 5), for secure_link's hashes.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace gatehouse {

// The most bytes decode_base64() writes for `in`.
constexpr size_t base64_decoded_max(size_t in) { return (in + 3) / 4 * 3; }

// Decodes `in` into out (base64_decoded_max(in.size()) bytes). Padding is
// optional, as clients omit it; anything outside the alphabet, a lone
// final character, or data after '=' is an error (nullopt). Returns the
// bytes written.
std::optional<size_t> decode_base64(std::string_view in, char* out);

// The same with the alphabet of RFC 4648 5: '-' and '_' where base64 has
// '+' and '/' (which are then errors). Same rules for padding.
std::optional<size_t> decode_base64url(std::string_view in, char* out);

}  // namespace gatehouse
