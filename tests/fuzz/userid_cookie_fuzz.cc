// libFuzzer target for the userid cookie (src/http/userid.h), which any
// client sends. Checked for every input: no read past the value (ASan);
// a value is refused (too short, invalid) or its identifier encodes back
// to its first 21 characters (the 22nd also carries four bits past the
// 16 bytes, which a decoder drops) and decodes again to itself, with a
// mark; has_mark() and find_cookie() never read past the value.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/assert.h"
#include "http/userid.h"

using namespace gatehouse::http::userid;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view v(reinterpret_cast<const char*>(data), size);
    (void)has_mark(v, 't');
    (void)find_cookie(v, "uid");
    Uid uid{};
    const CookieStatus s = decode_cookie(v, uid);
    if (s == CookieStatus::TooShort) {
        GH_CHECK(v.size() < kUidChars);
        return 0;
    }
    if (s == CookieStatus::Invalid) return 0;
    char out[kCookieChars];
    std::string_view enc = encode_cookie(uid, size > 0 ? '0' + data[0] % 10 : '=', out);
    GH_CHECK(enc.size() == kCookieChars);
    GH_CHECK(std::memcmp(enc.data(), v.data(), kUidChars - 1) == 0);
    Uid again{};
    GH_CHECK(decode_cookie(enc, again) == CookieStatus::Ok && again == uid);
    char hex[kHexChars];
    GH_CHECK(format_hex(uid, hex).size() == kHexChars);
    return 0;
}
