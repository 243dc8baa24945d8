#include "http/log_escape.h"

#include <array>
#include <cstring>
#include <string>

namespace gatehouse::http {

namespace {

// Extra bytes each input byte costs, per mode: 0 when copied as is.
using CostTable = std::array<uint8_t, 256>;

constexpr CostTable default_costs() {
    CostTable t{};
    for (int c = 0; c < 256; ++c)
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') t[c] = 3;  // "\xHH"
    return t;
}

constexpr CostTable json_costs() {
    CostTable t{};
    for (int c = 0; c < 0x20; ++c) t[c] = 5;  // "\u00HH"
    for (int c : {'\b', '\f', '\n', '\r', '\t', '"', '\\'}) t[c] = 1;
    return t;
}

constexpr CostTable kDefaultCost = default_costs();
constexpr CostTable kJsonCost = json_costs();

// A short JSON escape for c, or 0 when c takes the \u00HH form.
char json_short(unsigned char c) {
    switch (c) {
        case '\b': return 'b';
        case '\f': return 'f';
        case '\n': return 'n';
        case '\r': return 'r';
        case '\t': return 't';
        case '"': return '"';
        case '\\': return '\\';
        default: return 0;
    }
}

}  // namespace

Result<LogEscape> parse_log_escape(std::string_view s) {
    if (s == "default") return LogEscape::Default;
    if (s == "json") return LogEscape::Json;
    if (s == "none") return LogEscape::None;
    return make_error("unknown log format escaping \"" + std::string(s) + "\"");
}

size_t escaped_size(LogEscape e, std::string_view s) {
    if (e == LogEscape::None) return s.size();
    const CostTable& cost = e == LogEscape::Json ? kJsonCost : kDefaultCost;
    size_t n = s.size();
    for (unsigned char c : s) n += cost[c];
    return n;
}

char* escape_to(LogEscape e, std::string_view s, char* out) {
    // Upper case in both forms, as nginx writes them.
    static constexpr char kUpper[] = "0123456789ABCDEF";
    if (e == LogEscape::None) {
        if (!s.empty()) std::memcpy(out, s.data(), s.size());
        return out + s.size();
    }
    const bool json = e == LogEscape::Json;
    const CostTable& cost = json ? kJsonCost : kDefaultCost;
    for (unsigned char c : s) {
        if (cost[c] == 0) {
            *out++ = static_cast<char>(c);
            continue;
        }
        *out++ = '\\';
        if (!json) {
            *out++ = 'x';
            *out++ = kUpper[c >> 4];
            *out++ = kUpper[c & 0xf];
        } else if (char sc = json_short(c); sc != 0) {
            *out++ = sc;
        } else {
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = kUpper[c >> 4];
            *out++ = kUpper[c & 0xf];
        }
    }
    return out;
}

}  // namespace gatehouse::http
