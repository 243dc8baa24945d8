#include "cache/key.h"

#include <cstring>

#include "core/md5.h"
#include "core/str.h"

namespace gatehouse::cache {

uint64_t Hash::head() const {
    uint64_t v;
    std::memcpy(&v, bytes.data(), sizeof v);
    return v;
}

Hash hash_key(std::string_view key) {
    Hash h;
    h.bytes = md5(key);
    return h;
}

Result<Levels> parse_levels(std::string_view s) {
    Levels l;
    size_t i = 0;
    while (true) {
        if (l.n == 3) return make_error("more than 3 levels");
        if (i >= s.size() || (s[i] != '1' && s[i] != '2')) return make_error("a level must be 1 or 2");
        l.len[l.n++] = static_cast<uint8_t>(s[i] - '0');
        ++i;
        if (i == s.size()) return l;
        if (s[i] != ':') return make_error("levels are separated by \":\"");
        ++i;
    }
}

std::array<char, kHexLen> hex(const Hash& h) {
    std::array<char, kHexLen> out;
    hex_lower(h.bytes.data(), h.bytes.size(), out.data());
    return out;
}

std::string level_dirs(const Levels& l, const Hash& h) {
    // From the end of the name: level 1 is its last digit(s), level 2 the
    // ones before them [nginx's layout].
    const auto x = hex(h);
    std::string out;
    size_t end = kHexLen;
    for (uint8_t i = 0; i < l.n; ++i) {
        if (i) out += '/';
        end -= l.len[i];
        out.append(x.data() + end, l.len[i]);
    }
    return out;
}

std::string entry_path(std::string_view dir, const Levels& l, const Hash& h) {
    const auto x = hex(h);
    std::string out;
    out.reserve(dir.size() + l.extra() + kHexLen + 1);
    out += dir;
    out += '/';
    if (l.n) {
        out += level_dirs(l, h);
        out += '/';
    }
    out.append(x.data(), x.size());
    return out;
}

bool parse_hex(std::string_view name, Hash& out) {
    if (name.size() != kHexLen) return false;
    auto digit = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    for (size_t i = 0; i < 16; ++i) {
        int hi = digit(name[2 * i]), lo = digit(name[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return true;
}

}  // namespace gatehouse::cache
