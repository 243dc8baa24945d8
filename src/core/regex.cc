#include "core/regex.h"

#include <pcre2.h>

#include <utility>

namespace gatehouse {

namespace {

// One match-data block per process, grown to the largest pattern: workers
// are single-threaded, and a match never nests inside another.
pcre2_match_data* match_data(uint32_t pairs) {
    static pcre2_match_data* md = nullptr;
    static uint32_t size = 0;
    if (pairs > size) {
        if (md) pcre2_match_data_free(md);
        size = pairs < 32 ? 32 : pairs;
        md = pcre2_match_data_create(size, nullptr);
        GH_CHECK(md != nullptr);
    }
    return md;
}

}  // namespace

Regex::Regex(Regex&& o) noexcept
    : code_(std::exchange(o.code_, nullptr)),
      ncaptures_(o.ncaptures_),
      names_(std::move(o.names_)),
      pattern_(std::move(o.pattern_)) {}

Regex& Regex::operator=(Regex&& o) noexcept {
    if (this != &o) {
        if (code_) pcre2_code_free(code_);
        code_ = std::exchange(o.code_, nullptr);
        ncaptures_ = o.ncaptures_;
        names_ = std::move(o.names_);
        pattern_ = std::move(o.pattern_);
    }
    return *this;
}

Regex::~Regex() {
    if (code_) pcre2_code_free(code_);
}

Result<Regex> Regex::compile(std::string_view pattern, bool caseless) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = caseless ? PCRE2_CASELESS : 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     opts, &err, &off, nullptr);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return make_error("pcre2_compile() failed: " + std::string(reinterpret_cast<char*>(msg)) +
                          " in \"" + std::string(pattern) + "\" at \"" +
                          std::string(pattern.substr(off < pattern.size() ? off : pattern.size())) +
                          "\"");
    }
    // JIT is an optimisation: a pattern it cannot take still matches.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    Regex r;
    r.code_ = code;
    r.pattern_ = std::string(pattern);
    uint32_t n = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &n);
    r.ncaptures_ = static_cast<int>(n);
    uint32_t count = 0, entry = 0;
    PCRE2_SPTR table = nullptr;
    pcre2_pattern_info(code, PCRE2_INFO_NAMECOUNT, &count);
    if (count) {
        pcre2_pattern_info(code, PCRE2_INFO_NAMEENTRYSIZE, &entry);
        pcre2_pattern_info(code, PCRE2_INFO_NAMETABLE, &table);
        for (uint32_t i = 0; i < count; ++i) {
            const unsigned char* e = table + i * entry;
            int num = (e[0] << 8) | e[1];
            r.names_.push_back({std::string(reinterpret_cast<const char*>(e + 2)), num});
        }
    }
    match_data(n + 1);
    return r;
}

bool Regex::match(std::string_view s, int* ovec, int ovec_pairs, int* pairs) const {
    pcre2_match_data* md = match_data(static_cast<uint32_t>(ncaptures_ + 1));
    int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, md, nullptr);
    if (rc < 0) return false;  // PCRE2_ERROR_NOMATCH, or a match limit: no match
    if (ovec && ovec_pairs > 0) {
        PCRE2_SIZE* v = pcre2_get_ovector_pointer(md);
        int n = rc == 0 ? ovec_pairs : std::min(rc, ovec_pairs);
        for (int i = 0; i < n; ++i) {
            bool unset = v[2 * i] == PCRE2_UNSET;
            ovec[2 * i] = unset ? -1 : static_cast<int>(v[2 * i]);
            ovec[2 * i + 1] = unset ? -1 : static_cast<int>(v[2 * i + 1]);
        }
        if (pairs) *pairs = n;
    }
    return true;
}

}  // namespace gatehouse
