// The pure parts of secure_link_module (modules/secure_link.cc): reading
// what a link carries, in both of nginx's modes. Tested in
// tests/unit/http/secure_link_test.cc.
//
//   "secure_link $arg_md5,$arg_expires": the value is the MD5 in base64url
//   (RFC 4648 5, padding optional), then, after the first comma, the time
//   the link expires in seconds since the Epoch.
//   "secure_link_secret word": the request's target is
//   "/prefix/<MD5 in hex>/link"; the MD5 is that of link + word.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gatehouse::http {

using LinkMd5 = std::array<uint8_t, 16>;

// "hash" or "hash,expires": split at the first comma. `expires` is absent
// without a comma, and may then be anything, empty included.
struct LinkParts {
    std::string_view hash;
    std::optional<std::string_view> expires;
};
LinkParts split_link(std::string_view value);

// An expiry time: decimal digits only, greater than zero, within time_t.
// nullopt otherwise ("", "0", "-5", "12x", an overflow): nginx holds such
// a link invalid, not expired.
std::optional<int64_t> parse_link_expires(std::string_view s);

// The 16 bytes of a base64url MD5: at most 24 characters, read up to the
// first '=' (nginx's leniency: "...A=" and "...A=x" pass); nullopt for a
// bad character or another length.
std::optional<LinkMd5> decode_link_md5(std::string_view s);

// What a request target says in secret mode: the first segment (after
// the leading '/', up to the next '/') is a prefix, the second is 32 hex
// digits (either case), the rest, not empty, is the link, arguments
// included, as sent. nullopt for any other shape.
struct SecretLink {
    LinkMd5 md5;
    std::string_view link;
};
std::optional<SecretLink> split_secret_link(std::string_view target);

}  // namespace gatehouse::http
