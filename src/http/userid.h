// The pure parts of userid_filter_module (modules/userid.cc): the client
// identifier a cookie carries, as nginx's module writes and reads it
// [nginx userid module, compatible with Apache's mod_uid]. Tested in
// tests/unit/http/userid_test.cc; the cookie decoder, which reads what any
// client sends, has a fuzz target (tests/fuzz/userid_cookie_fuzz.cc).
//
// An identifier is four 32-bit words: the service, the time it was made,
// a value of the process that made it (its start time and pid) and a
// sequence number. The cookie carries the 16 bytes in base64 (24
// characters, the last two "=" padding); the first padding character may
// be replaced by a mark ("userid_mark"). The byte order of the words is
// that of the cookie's version: "userid v1" writes them in the host's
// order, as mod_uid's first cookies, "userid on" (version 2) in network
// order. $uid_got and $uid_set show each group of four bytes read as a
// host-order number in eight hexadecimal digits, as nginx does, so that a
// version 2 service of 127.0.0.1 shows as "0100007F" on a little-endian
// machine.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string_view>

namespace gatehouse::http::userid {

// The 16 bytes of an identifier, as the cookie carries them.
using Uid = std::array<uint8_t, 16>;

enum class Version : uint8_t { V1, V2 };

// The characters of a cookie value that carry the identifier (16 bytes
// in base64 without padding), and of a whole value (with padding).
inline constexpr size_t kUidChars = 22;
inline constexpr size_t kCookieChars = 24;
// $uid_got, $uid_set without the name: four groups of eight hex digits.
inline constexpr size_t kHexChars = 32;
// "Thu, 31-Dec-37 23:55:55 GMT", or with a four-digit year after 2037.
inline constexpr size_t kCookieTimeMax = 40;

// What a cookie value says.
enum class CookieStatus : uint8_t {
    Ok,        // uid is its identifier
    TooShort,  // fewer than kUidChars characters
    Invalid,   // its first kUidChars characters are not 16 bytes of base64
};
// Reads the identifier from the first kUidChars characters of a cookie
// value; what follows them (padding, a mark, anything) is not read. The
// four bits past the 16th byte are ignored, as nginx's decoder does.
CookieStatus decode_cookie(std::string_view value, Uid& uid);

// Whether a cookie value carries `mark` ("userid_mark"): the character
// after the identifier is the mark and the one after it "=".
bool has_mark(std::string_view value, char mark);

// The cookie value for `uid`: kCookieChars characters, the first padding
// character replaced by `mark` unless it is '\0'.
std::string_view encode_cookie(const Uid& uid, char mark, char (&out)[kCookieChars]);

// $uid_got, $uid_set (after "name="): "0100007F6B16A6D07F0F721802030303".
std::string_view format_hex(const Uid& uid, char (&out)[kHexChars]);

// A new identifier of `version`: `service`, `time`, `start` and `seq` in
// the version's byte order.
Uid make_uid(Version version, uint32_t service, uint32_t time, uint32_t start, uint32_t seq);

// The default service of a version 2 identifier: the server's IPv4
// address, the last four bytes of its IPv6 address, as a number whose
// network-order bytes are the address's; 0 for a UNIX socket or anything
// else. `addr` is the text of $server_addr ("127.0.0.1", "::1", "unix:").
uint32_t address_service(std::string_view addr);

// The per-process part of an identifier, as nginx's: the fraction of the
// second the process started in (microseconds over 20; here from the
// clock's milliseconds) in the high 16 bits, the pid in the low 16. A pid
// wider than 16 bits folds its high bits into the high half, so that two
// workers started in the same millisecond never share the value.
uint32_t start_value(uint32_t msec, uint32_t pid);

// The sequence numbers of one process, one per version, as nginx's: they
// step by 0x100; version 1 starts at 1, version 2 at 0x03030302 and
// starts over there rather than wrap below it. Never 0.
class Sequence {
public:
    uint32_t next(Version v);

private:
    uint32_t v1_ = 1;
    uint32_t v2_ = kV2Start;
    static constexpr uint32_t kV2Start = 0x03030302;
};

// The expiry time of a cookie as nginx writes it: "Thu, 31-Dec-37
// 23:55:55 GMT", the year in two digits up to 2037 and in four after.
// Empty for a time gmtime_r() cannot take.
std::string_view cookie_time(time_t t, char (&out)[kCookieTimeMax]);

// The value of the cookie called `name` (ASCII case-insensitive, as
// nginx compares cookie names) in one Cookie field; the first such
// cookie; nullopt when none.
std::optional<std::string_view> find_cookie(std::string_view field, std::string_view name);

}  // namespace gatehouse::http::userid
