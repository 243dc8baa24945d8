#include "http/secure_link.h"

#include <charconv>
#include <ctime>
#include <limits>

#include "core/base64.h"
#include "core/str.h"

namespace gatehouse::http {

LinkParts split_link(std::string_view value) {
    const size_t comma = value.find(',');
    if (comma == std::string_view::npos) return {value, std::nullopt};
    return {value.substr(0, comma), value.substr(comma + 1)};
}

std::optional<int64_t> parse_link_expires(std::string_view s) {
    // from_chars would take a '-'; only digits are a time here.
    if (s.empty()) return std::nullopt;
    for (char ch : s)
        if (ch < '0' || ch > '9') return std::nullopt;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
    if constexpr (sizeof(time_t) < sizeof(int64_t))
        if (v > std::numeric_limits<time_t>::max()) return std::nullopt;
    return v;
}

std::optional<LinkMd5> decode_link_md5(std::string_view s) {
    // 24 characters encode 18 bytes: anything longer cannot be an MD5, and
    // the check bounds the buffer.
    constexpr size_t kMost = 24;
    if (s.size() > kMost) return std::nullopt;
    // What follows the first '=' is ignored, as nginx's decoder does: a
    // link with one '=' or a stray tail of padding works there.
    s = s.substr(0, s.find('='));
    char buf[base64_decoded_max(kMost)];
    auto n = decode_base64url(s, buf);
    LinkMd5 md5;
    if (!n || *n != md5.size()) return std::nullopt;
    for (size_t i = 0; i < md5.size(); ++i) md5[i] = static_cast<uint8_t>(buf[i]);
    return md5;
}

std::optional<SecretLink> split_secret_link(std::string_view target) {
    if (target.empty()) return std::nullopt;
    // The first character is the target's '/'; the prefix runs to the next.
    const size_t hash_at = target.find('/', 1);
    if (hash_at == std::string_view::npos) return std::nullopt;
    const size_t link_at = target.find('/', hash_at + 1);
    if (link_at == std::string_view::npos) return std::nullopt;
    const std::string_view hex = target.substr(hash_at + 1, link_at - hash_at - 1);
    SecretLink out;
    out.link = target.substr(link_at + 1);
    if (hex.size() != 2 * out.md5.size() || out.link.empty()) return std::nullopt;
    for (size_t i = 0; i < out.md5.size(); ++i) {
        const int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out.md5[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return out;
}

}  // namespace gatehouse::http
