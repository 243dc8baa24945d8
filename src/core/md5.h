// MD5 (RFC 1321), one-shot, for the cache's key hash: nginx names cache
// entries by the MD5 of their key, and so does gatehouse; and for
// secure_link's hashes, nginx's scheme (which an operator chooses knowing
// MD5's weakness). OpenSSL's EVP interface spends more on its dispatch
// (~1,300 instructions a call: a context re-initialised through the
// provider) than on hashing a key of one or two blocks (~600), and a
// cache lookup hashes a key on every request.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace gatehouse {

std::array<uint8_t, 16> md5(std::string_view data);

}  // namespace gatehouse
