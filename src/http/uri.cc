#include "http/uri.h"

#include <cstring>

#include "core/assert.h"
#include "core/str.h"

namespace gatehouse::http {

namespace {

// Nothing to decode, no empty, "." or ".." segment before the last one.
bool is_clean(std::string_view p) {
    if (p.empty() || p[0] != '/') return false;
    if (std::memchr(p.data(), '%', p.size())) return false;
    for (size_t i = 0; i < p.size(); ++i) {
        if (p[i] != '/' || i + 1 == p.size()) continue;
        const std::string_view seg = p.substr(i + 1, p.find('/', i + 1) - (i + 1));
        if (seg.empty() || seg == "." || seg == "..") return false;
    }
    return true;
}

}  // namespace

PathQuery split_path_query(std::string_view target) {
    const size_t q = target.find('?');
    if (q == std::string_view::npos) return {target, {}, false};
    return {target.substr(0, q), target.substr(q + 1), true};
}

Result<std::string_view> percent_decode(std::string_view in, std::span<char> out) {
    GH_CHECK(out.size() >= in.size());
    size_t w = 0;
    for (size_t r = 0; r < in.size(); ++r) {
        char c = in[r];
        if (c == '%') {
            const int hi = r + 2 < in.size() ? hex_value(in[r + 1]) : -1;
            const int lo = hi >= 0 ? hex_value(in[r + 2]) : -1;
            if (lo < 0) return make_error("invalid percent-encoding");
            c = static_cast<char>(hi * 16 + lo);
            if (c == '\0') return make_error("percent-encoded NUL");
            r += 2;
        }
        out[w++] = c;
    }
    return std::string_view(out.data(), w);
}

Result<std::string_view> normalize_path(std::string_view path, std::span<char> out, bool merge) {
    GH_CHECK(out.size() >= path.size());
    if (path.empty() || path[0] != '/')
        return make_error("path does not start with \"/\"");
    // The output is a run of "/segment" and, at the very end, maybe one
    // '/'. It never grows longer than the input read so far (w <= i at the
    // top of the loop), which makes the in-place case safe.
    char* o = out.data();
    size_t w = 0;
    size_t i = 0;
    const size_t n = path.size();
    while (i < n) {
        size_t j = path.find('/', i + 1);
        if (j == std::string_view::npos) j = n;
        const std::string_view seg = path.substr(i + 1, j - i - 1);
        const bool last = j == n;
        if (seg.empty() && !merge && !last) {
            o[w++] = '/';  // kept, for ".." to take away
        } else if (seg.empty() || seg == ".") {
            if (last) o[w++] = '/';
        } else if (seg == "..") {
            if (w == 0) return make_error("path goes above the root");
            while (o[w - 1] != '/') --w;  // drop the segment
            --w;                          // and its '/'
            if (last) o[w++] = '/';
        } else {
            o[w] = '/';
            std::memmove(o + w + 1, seg.data(), seg.size());
            w += 1 + seg.size();
        }
        i = j;
    }
    if (w == 0) o[w++] = '/';
    return std::string_view(o, w);
}

Result<std::string_view> clean_path(std::string_view raw, std::span<char> out, bool merge) {
    if (is_clean(raw)) return raw;
    // Checked on the raw form too: "%2F..." must not become a path.
    if (raw.empty() || raw[0] != '/') return make_error("path does not start with \"/\"");
    auto decoded = percent_decode(raw, out);
    if (!decoded) return decoded;
    return normalize_path(*decoded, out, merge);
}

size_t escaped_size(std::string_view in, EscapeSet needs) {
    size_t n = in.size();
    for (char c : in)
        if (needs(static_cast<unsigned char>(c))) n += 2;
    return n;
}

size_t escape(std::string_view in, char* out, EscapeSet needs) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    char* p = out;
    for (char ch : in) {
        auto c = static_cast<unsigned char>(ch);
        if (needs(c)) {
            *p++ = '%';
            *p++ = kHex[c >> 4];
            *p++ = kHex[c & 0xf];
        } else {
            *p++ = ch;
        }
    }
    return static_cast<size_t>(p - out);
}

}  // namespace gatehouse::http
