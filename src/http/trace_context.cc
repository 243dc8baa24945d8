#include "http/trace_context.h"

namespace gatehouse::http {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;  // upper case is invalid in traceparent
}

// Reads 2 * n hex digits at s into out; false on a non-hex character.
bool read_hex(std::string_view s, uint8_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return true;
}

template <size_t N>
bool all_zero(const std::array<uint8_t, N>& a) {
    for (uint8_t b : a)
        if (b) return false;
    return true;
}

}  // namespace

std::optional<TraceParent> parse_traceparent(std::string_view v) {
    if (v.size() < kTraceparentLen) return std::nullopt;
    uint8_t version;
    if (!read_hex(v, &version, 1) || version == 0xff) return std::nullopt;
    if (version == 0 && v.size() != kTraceparentLen) return std::nullopt;
    if (v.size() > kTraceparentLen && v[kTraceparentLen] != '-') return std::nullopt;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
    TraceParent tp;
    if (!read_hex(v.substr(3), tp.trace_id.data(), 16) || !read_hex(v.substr(36), tp.parent_id.data(), 8) ||
        !read_hex(v.substr(53), &tp.flags, 1))
        return std::nullopt;
    if (all_zero(tp.trace_id) || all_zero(tp.parent_id)) return std::nullopt;
    return tp;
}

void hex_lower(const uint8_t* bytes, size_t n, char* out) {
    static constexpr char kDigits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; ++i) {
        out[2 * i] = kDigits[bytes[i] >> 4];
        out[2 * i + 1] = kDigits[bytes[i] & 15];
    }
}

void format_traceparent(const TraceParent& tp, char (&out)[kTraceparentLen]) {
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    hex_lower(tp.trace_id.data(), 16, out + 3);
    out[35] = '-';
    hex_lower(tp.parent_id.data(), 8, out + 36);
    out[52] = '-';
    hex_lower(&tp.flags, 1, out + 53);
}

}  // namespace gatehouse::http
