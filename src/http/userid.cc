#include "http/userid.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>

#include "core/base64.h"
#include "core/str.h"

namespace gatehouse::http::userid {

namespace {

uint32_t host_word(const Uid& uid, size_t i) {
    uint32_t w;
    std::memcpy(&w, uid.data() + 4 * i, 4);
    return w;
}

void put_host(Uid& uid, size_t i, uint32_t w) { std::memcpy(uid.data() + 4 * i, &w, 4); }

void put_network(Uid& uid, size_t i, uint32_t w) {
    uid[4 * i] = static_cast<uint8_t>(w >> 24);
    uid[4 * i + 1] = static_cast<uint8_t>(w >> 16);
    uid[4 * i + 2] = static_cast<uint8_t>(w >> 8);
    uid[4 * i + 3] = static_cast<uint8_t>(w);
}

}  // namespace

CookieStatus decode_cookie(std::string_view value, Uid& uid) {
    if (value.size() < kUidChars) return CookieStatus::TooShort;
    char out[base64_decoded_max(kUidChars)];
    // 22 characters are 132 bits: 16 bytes and four bits the decoder
    // drops. A '=' among them is outside the alphabet, so an identifier
    // cut short by padding is refused rather than read in part.
    auto n = decode_base64(value.substr(0, kUidChars), out);
    if (!n || *n != uid.size()) return CookieStatus::Invalid;
    std::memcpy(uid.data(), out, uid.size());
    return CookieStatus::Ok;
}

bool has_mark(std::string_view value, char mark) {
    return value.size() > kUidChars + 1 && value[kUidChars] == mark && value[kUidChars + 1] == '=';
}

std::string_view encode_cookie(const Uid& uid, char mark, char (&out)[kCookieChars]) {
    const std::string_view bytes(reinterpret_cast<const char*>(uid.data()), uid.size());
    static_assert(base64_encoded_size(sizeof(Uid)) == kCookieChars);
    encode_base64(bytes, out);
    if (mark != '\0') out[kUidChars] = mark;
    return {out, kCookieChars};
}

std::string_view format_hex(const Uid& uid, char (&out)[kHexChars]) {
    static constexpr char kDigits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < 4; ++i) {
        const uint32_t w = host_word(uid, i);
        for (size_t d = 0; d < 8; ++d) out[8 * i + d] = kDigits[w >> (28 - 4 * d) & 0xf];
    }
    return {out, kHexChars};
}

Uid make_uid(Version version, uint32_t service, uint32_t time, uint32_t start, uint32_t seq) {
    Uid uid{};
    const uint32_t words[4] = {service, time, start, seq};
    for (size_t i = 0; i < 4; ++i) {
        if (version == Version::V1) put_host(uid, i, words[i]);
        else put_network(uid, i, words[i]);
    }
    return uid;
}

uint32_t address_service(std::string_view addr) {
    char text[64];
    if (addr.empty() || addr.size() >= sizeof text) return 0;
    std::memcpy(text, addr.data(), addr.size());
    text[addr.size()] = '\0';
    uint8_t b[16];
    const uint8_t* last4 = nullptr;
    if (inet_pton(AF_INET, text, b) == 1) last4 = b;
    else if (inet_pton(AF_INET6, text, b) == 1) last4 = b + 12;
    if (!last4) return 0;
    return uint32_t{last4[0]} << 24 | uint32_t{last4[1]} << 16 | uint32_t{last4[2]} << 8 | last4[3];
}

uint32_t start_value(uint32_t msec, uint32_t pid) {
    const uint32_t fraction = (msec % 1000) * 1000 / 20;  // below 50000: 16 bits
    return ((fraction ^ (pid >> 16)) & 0xffff) << 16 | (pid & 0xffff);
}

uint32_t Sequence::next(Version v) {
    if (v == Version::V1) {
        // 1 + k * 0x100 comes back to 1 after 2^24 steps, never to 0.
        const uint32_t s = v1_;
        v1_ += 0x100;
        return s;
    }
    const uint32_t s = v2_;
    v2_ += 0x100;
    if (v2_ < kV2Start) v2_ = kV2Start;
    return s;
}

std::string_view cookie_time(time_t t, char (&out)[kCookieTimeMax]) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year < 0 || tm.tm_year > 9999 - 1900) return {};
    const int year = tm.tm_year + 1900;
    // The Netscape format's two-digit year up to 2037, four digits after
    // it, as nginx writes them.
    const int shown = year > 2037 ? year : year % 100;
    int n = snprintf(out, sizeof out, "%s, %02d-%s-%02d %02d:%02d:%02d GMT", kDays[tm.tm_wday], tm.tm_mday,
                     kMonths[tm.tm_mon], shown, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n <= 0 || static_cast<size_t>(n) >= sizeof out) return {};
    return {out, static_cast<size_t>(n)};
}

std::optional<std::string_view> find_cookie(std::string_view field, std::string_view name) {
    while (!field.empty()) {
        while (!field.empty() && (field[0] == ' ' || field[0] == ';')) field.remove_prefix(1);
        const size_t semi = field.find(';');
        const std::string_view pair = field.substr(0, semi);
        const size_t eq = pair.find('=');
        if (eq != std::string_view::npos && iequals(pair.substr(0, eq), name)) return pair.substr(eq + 1);
        if (semi == std::string_view::npos) break;
        field.remove_prefix(semi + 1);
    }
    return std::nullopt;
}

}  // namespace gatehouse::http::userid
