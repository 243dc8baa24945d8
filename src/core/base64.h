// Base64 decoding (RFC 4648 4), for the credentials of "Authorization:
// Basic" ($remote_user, and basic authentication later).
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

}  // namespace gatehouse
