#include "http/charset_recode.h"

#include <algorithm>
#include <charconv>

namespace gatehouse::http {

namespace {

Error invalid(std::string_view v) { return make_error("invalid value \"" + std::string(v) + "\""); }

// A hex number of at most 8 digits (nginx's ngx_hextoi takes any length;
// more digits than that cannot be a byte anyway).
bool parse_hex(std::string_view s, uint32_t& v) {
    if (s.empty() || s.size() > 8) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
    return ec == std::errc() && end == s.data() + s.size();
}

// The code point of the one UTF-8 character that is all of `b`, or -1
// (invalid, overlong, a surrogate, or more than one character).
int32_t decode_one(std::span<const uint8_t> b) {
    if (b.empty()) return -1;
    uint8_t c = b[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return b.size() == 1 ? c : -1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return -1;
    if (b.size() != len) return -1;
    for (size_t i = 1; i < len; ++i) {
        if ((b[i] & 0xC0) != 0x80) return -1;
        cp = cp << 6 | (b[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    return static_cast<int32_t>(cp);
}

}  // namespace

CharsetMap::CharsetMap(bool utf8) : utf8_(utf8) {
    for (int i = 0; i < 256; ++i) {
        auto b = static_cast<uint8_t>(i < 0x80 ? i : '?');
        fwd_[i] = b;
        back_[i] = b;
        to_utf8_[i] = {1, b, 0, 0};
    }
}

Status CharsetMap::add(std::string_view from, std::string_view to) {
    uint32_t src;
    if (!parse_hex(from, src) || src > 0xFF) return invalid(from);
    if (!utf8_) {
        uint32_t dst;
        if (!parse_hex(to, dst) || dst > 0xFF) return invalid(to);
        fwd_[src] = static_cast<uint8_t>(dst);
        back_[dst] = static_cast<uint8_t>(src);
        return {};
    }
    // The UTF-8 side: the bytes of one character of the BMP (nginx keeps
    // three bytes per row and pages for 0..0xFFFF only).
    if (to.size() < 2 || to.size() > 6 || to.size() % 2 != 0) return invalid(to);
    std::array<uint8_t, 3> bytes{};
    size_t n = to.size() / 2;
    for (size_t i = 0; i < n; ++i) {
        uint32_t v;
        if (!parse_hex(to.substr(i * 2, 2), v)) return invalid(to);
        bytes[i] = static_cast<uint8_t>(v);
    }
    int32_t cp = decode_one(std::span<const uint8_t>(bytes.data(), n));
    if (cp < 0 || cp > 0xFFFF) return invalid(to);
    to_utf8_[src] = {static_cast<uint8_t>(n), bytes[0], bytes[1], bytes[2]};
    auto& page = pages_[static_cast<size_t>(cp) >> 8];
    if (!page) page = std::make_unique<std::array<uint8_t, 256>>();
    (*page)[static_cast<size_t>(cp) & 0xFF] = static_cast<uint8_t>(src);
    return {};
}

int CharsetMap::from_utf8(uint32_t cp) const {
    if (cp > 0xFFFF) return -1;
    const auto& page = pages_[cp >> 8];
    if (page && (*page)[cp & 0xFF] != 0) return (*page)[cp & 0xFF];
    // ASCII no row names maps to itself.
    if (cp < 0x80) return static_cast<int>(cp);
    return -1;
}

Recoder::Recoder(const CharsetMap& map, bool forward) : map_(&map), forward_(forward) {
    if (!map.utf8()) kind_ = Kind::Bytes;
    else kind_ = forward ? Kind::ToUtf8 : Kind::FromUtf8;
}

bool Recoder::passes_unchanged(std::string_view in) const {
    if (need_ != 0) return false;
    for (char ch : in) {
        auto b = static_cast<uint8_t>(ch);
        switch (kind_) {
            case Kind::Bytes:
                if ((forward_ ? map_->forward(b) : map_->backward(b)) != b) return false;
                break;
            case Kind::ToUtf8: {
                const auto& e = map_->to_utf8(b);
                if (e[0] != 1 || e[1] != b) return false;
                break;
            }
            case Kind::FromUtf8:
                if (b >= 0x80 || map_->from_utf8(b) != b) return false;
                break;
        }
    }
    return true;
}

char* Recoder::put_char(uint32_t cp, char* p) const {
    int b = map_->from_utf8(cp);
    if (b >= 0) {
        *p++ = static_cast<char>(b);
        return p;
    }
    // Not in the map: an HTML character reference, "&#1114111;" at most.
    *p++ = '&';
    *p++ = '#';
    auto [end, ec] = std::to_chars(p, p + 7, cp);
    (void)ec;  // seven digits hold any code point
    p = end;
    *p++ = ';';
    return p;
}

Recoder::Step Recoder::run(std::string_view in, std::span<char> out) {
    const auto* src = reinterpret_cast<const uint8_t*>(in.data());
    const uint8_t* const src_end = src + in.size();
    char* dst = out.data();
    char* const dst_end = out.data() + out.size();

    if (kind_ == Kind::Bytes) {
        size_t n = std::min(in.size(), out.size());
        for (size_t i = 0; i < n; ++i) dst[i] = static_cast<char>(forward_ ? map_->forward(src[i]) : map_->backward(src[i]));
        return {n, n};
    }
    while (src < src_end && static_cast<size_t>(dst_end - dst) >= kMaxOut) {
        uint8_t b = *src;
        if (kind_ == Kind::ToUtf8) {
            const auto& e = map_->to_utf8(b);
            for (uint8_t i = 0; i < e[0]; ++i) *dst++ = static_cast<char>(e[1 + i]);
            ++src;
            continue;
        }
        // From UTF-8: a byte-at-a-time decoder, so that a sequence split
        // across pieces needs no copy (Unicode 15, table 3-7, gives the
        // ranges a second byte may take).
        if (need_ > 0) {
            if (b >= lo_ && b <= hi_) {
                cp_ = cp_ << 6 | (b & 0x3F);
                lo_ = 0x80, hi_ = 0xBF;
                ++src;
                if (--need_ == 0) dst = put_char(cp_, dst);
                continue;
            }
            // Cut short: "?" for what came, and `b` starts afresh.
            *dst++ = '?';
            need_ = 0;
            lo_ = 0x80, hi_ = 0xBF;
        }
        ++src;
        if (b < 0x80) {
            dst = put_char(b, dst);
        } else if (b >= 0xC2 && b <= 0xDF) {
            need_ = 1, cp_ = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need_ = 2, cp_ = b & 0x0F;
            if (b == 0xE0) lo_ = 0xA0;  // overlong below
            if (b == 0xED) hi_ = 0x9F;  // surrogates above
        } else if (b >= 0xF0 && b <= 0xF4) {
            need_ = 3, cp_ = b & 0x07;
            if (b == 0xF0) lo_ = 0x90;  // overlong below
            if (b == 0xF4) hi_ = 0x8F;  // beyond U+10FFFF above
        } else {
            *dst++ = '?';  // a stray continuation byte, C0, C1, F5..FF
        }
    }
    return {static_cast<size_t>(src - reinterpret_cast<const uint8_t*>(in.data())),
            static_cast<size_t>(dst - out.data())};
}

size_t Recoder::finish(std::span<char> out) {
    if (need_ == 0 || out.empty()) return 0;
    need_ = 0;
    lo_ = 0x80, hi_ = 0xBF;
    out[0] = '?';
    return 1;
}

}  // namespace gatehouse::http
