// Base64 (RFC 4648 4): decoding for the credentials of "Authorization:
// Basic" ($remote_user, basic authentication) and userid's cookies, with
// its URL and file name safe form (RFC 4648 5) for secure_link's hashes;
// encoding for userid's cookies.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace gatehouse {

// The characters encode_base64() writes for `in` bytes, padding included.
constexpr size_t base64_encoded_size(size_t in) { return (in + 2) / 3 * 4; }

// Encodes `in` into out (base64_encoded_size(in.size()) characters), with
// '=' padding to a multiple of four. Returns the characters written.
size_t encode_base64(std::string_view in, char* out);

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
