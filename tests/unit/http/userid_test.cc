#include "http/userid.h"

#include <doctest/doctest.h>

#include <bit>
#include <string>

using namespace gatehouse::http::userid;

namespace {

constexpr bool kLittle = std::endian::native == std::endian::little;

// What nginx 1.22.1 sent from 127.0.0.1 (pid 29208): service, time,
// start value, sequence.
constexpr uint32_t kTime = 0x6B16A6D0, kStart = 0x7F0F7218;

std::string cookie_of(const Uid& uid, char mark = '\0') {
    char out[kCookieChars];
    return std::string(encode_cookie(uid, mark, out));
}

std::string hex_of(const Uid& uid) {
    char out[kHexChars];
    return std::string(format_hex(uid, out));
}

std::string time_of(time_t t) {
    char out[kCookieTimeMax];
    return std::string(cookie_time(t, out));
}

}  // namespace

TEST_CASE("http/userid: a version 2 identifier is in network order, shown as host-order words") {
    const Uid uid = make_uid(Version::V2, 0x7F000001, kTime, kStart, 0x03030302);
    CHECK(cookie_of(uid) == "fwAAAWsWptB/D3IYAwMDAg==");
    CHECK(hex_of(uid) == (kLittle ? "0100007FD0A6166B18720F7F02030303" : "7F0000016B16A6D07F0F721803030302"));
}

TEST_CASE("http/userid: a version 1 identifier is in host order, shown as its numbers") {
    const Uid uid = make_uid(Version::V1, 0, kTime, kStart, 1);
    CHECK(hex_of(uid) == "000000006B16A6D07F0F721800000001");
    if (kLittle) CHECK(cookie_of(uid) == "AAAAANCmFmsYcg9/AQAAAA==");
}

TEST_CASE("http/userid: a mark replaces the first padding character") {
    const Uid uid = make_uid(Version::V2, 0x7F000001, kTime, kStart, 0x03030302);
    CHECK(cookie_of(uid, 't') == "fwAAAWsWptB/D3IYAwMDAgt=");
    CHECK(cookie_of(uid, '9') == "fwAAAWsWptB/D3IYAwMDAg9=");
    CHECK(cookie_of(uid, '=') == "fwAAAWsWptB/D3IYAwMDAg==");

    CHECK(has_mark("fwAAAWsWptB/D3IYAwMDAgt=", 't'));
    CHECK(has_mark("fwAAAWsWptB/D3IYAwMDAg==", '='));
    CHECK_FALSE(has_mark("fwAAAWsWptB/D3IYAwMDAg==", 't'));
    CHECK_FALSE(has_mark("fwAAAWsWptB/D3IYAwMDAgt", 't'));   // no "=" after it
    CHECK_FALSE(has_mark("fwAAAWsWptB/D3IYAwMDAgtx", 't'));  // another character after it
    CHECK_FALSE(has_mark("fwAAAWsWptB/D3IYAwMDAg", 't'));
}

TEST_CASE("http/userid: a cookie's first 22 characters are its identifier") {
    const Uid want = make_uid(Version::V2, 0x7F000001, kTime, kStart, 0x03030302);
    const char* good[] = {
        "fwAAAWsWptB/D3IYAwMDAg==",
        "fwAAAWsWptB/D3IYAwMDAg",          // no padding
        "fwAAAWsWptB/D3IYAwMDAgt=",        // a mark
        "fwAAAWsWptB/D3IYAwMDAgxyz!!",     // anything after them
        "fwAAAWsWptB/D3IYAwMDAh==",        // the four bits past the 16 bytes
    };
    for (const char* v : good) {
        CAPTURE(v);
        Uid uid{};
        CHECK(decode_cookie(v, uid) == CookieStatus::Ok);
        CHECK(uid == want);
    }
    Uid uid{};
    CHECK(decode_cookie("fwAAAWsWptB/D3IYAwMDAz==", uid) == CookieStatus::Ok);
    CHECK(uid[15] == 3);
}

TEST_CASE("http/userid: a cookie that is not 16 bytes of base64 is refused") {
    Uid uid{};
    CHECK(decode_cookie("", uid) == CookieStatus::TooShort);
    CHECK(decode_cookie("short", uid) == CookieStatus::TooShort);
    CHECK(decode_cookie("fwAAAWsWptB/D3IYAwMDA", uid) == CookieStatus::TooShort);  // 21
    const char* bad[] = {
        "fwAAAWsWptB/D3IYAwM!Ag==",  // outside the alphabet
        "fwAA=WsWptB/D3IYAwMDAg==",  // padding inside
        "fwAAAWsWptB/D3IYAwMDA==",   // 21 characters, then padding
        "fwAAAWsWptB/D3IYAwMD====",  // 15 bytes
        "fwAAAWsWptB-D3IYAwMDAg==",  // the URL alphabet
        "fwAAAWsWptB/D3IYAwM Ag==",
    };
    for (const char* v : bad) {
        CAPTURE(v);
        CHECK(decode_cookie(v, uid) == CookieStatus::Invalid);
    }
}

TEST_CASE("http/userid: what an encoded identifier decodes to is itself") {
    const Uid uid = make_uid(Version::V1, 0xFFFFFFFF, 0x80000000, 0x12345678, 0xABCDEF01);
    char out[kCookieChars];
    Uid back{};
    CHECK(decode_cookie(encode_cookie(uid, 'Z', out), back) == CookieStatus::Ok);
    CHECK(back == uid);
}

TEST_CASE("http/userid: the default service is the last four bytes of the server's address") {
    CHECK(address_service("127.0.0.1") == 0x7F000001);
    CHECK(address_service("192.0.2.10") == 0xC000020A);
    CHECK(address_service("::1") == 1);
    CHECK(address_service("2001:db8::a0b:c0d") == 0x0A0B0C0D);
    CHECK(address_service("::ffff:10.0.0.1") == 0x0A000001);
    CHECK(address_service("unix:") == 0);
    CHECK(address_service("") == 0);
    CHECK(address_service(std::string(100, '1')) == 0);
    // As nginx's test reads it: ::1 shows as 01000000 on little-endian.
    const Uid uid = make_uid(Version::V2, address_service("::1"), 0, 0, 0);
    CHECK(hex_of(uid).substr(0, 8) == (kLittle ? "01000000" : "00000001"));
}

TEST_CASE("http/userid: the start value holds the pid and the start's fraction of a second") {
    CHECK(start_value(650, 29208) == (650u * 50 << 16 | 29208));
    CHECK(start_value(999, 1) == (49950u << 16 | 1));
    CHECK(start_value(0, 0xFFFF) == 0xFFFF);
    // Two pids alike in their low 16 bits differ in the high half.
    CHECK(start_value(10, 0x12345) != start_value(10, 0x2345));
    CHECK((start_value(10, 0x12345) & 0xFFFF) == 0x2345);
}

TEST_CASE("http/userid: sequences step by 0x100 from nginx's starts and never reach 0") {
    Sequence s;
    CHECK(s.next(Version::V1) == 1);
    CHECK(s.next(Version::V1) == 0x101);
    CHECK(s.next(Version::V2) == 0x03030302);
    CHECK(s.next(Version::V2) == 0x03030402);
    CHECK(s.next(Version::V1) == 0x201);

    // Version 2 starts over at 0x03030302 rather than wrap below it.
    uint32_t prev = 0x03030402, v = 0;
    size_t steps = 0;
    while ((v = s.next(Version::V2)) > prev) {
        prev = v;
        ++steps;
    }
    CHECK(prev == 0xFFFFFF02);
    CHECK(v == 0x03030302);
    CHECK(steps > 16000000);
}

TEST_CASE("http/userid: expiry times as nginx writes them") {
    CHECK(time_of(0) == "Thu, 01-Jan-70 00:00:00 GMT");
    CHECK(time_of(946684800) == "Sat, 01-Jan-00 00:00:00 GMT");
    CHECK(time_of(2145916555) == "Thu, 31-Dec-37 23:55:55 GMT");
    CHECK(time_of(2147483648) == "Tue, 19-Jan-2038 03:14:08 GMT");
    CHECK(time_of(2742726608) == "Wed, 29-Nov-2056 12:30:08 GMT");
}

TEST_CASE("http/userid: the cookie is found by its name, case aside") {
    CHECK(find_cookie("uid=abc", "uid") == std::optional<std::string_view>("abc"));
    CHECK(find_cookie("a=b; UID=abc; uid=def", "uid") == std::optional<std::string_view>("abc"));
    CHECK(find_cookie("uidx=1;uid=2", "uid") == std::optional<std::string_view>("2"));
    CHECK(find_cookie("xuid=1", "uid") == std::nullopt);
    CHECK(find_cookie("uid; a=1", "uid") == std::nullopt);
    CHECK(find_cookie("uid=", "uid") == std::optional<std::string_view>(""));
    CHECK(find_cookie("", "uid") == std::nullopt);
    CHECK(find_cookie(" ; ;", "uid") == std::nullopt);
}
