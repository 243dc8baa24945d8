// libFuzzer target for the sub_filter matcher (src/http/sub_match.h),
// which reads any origin's body. Input: byte 0 says "once" (bit 0) and
// how many search strings follow (1 + bits 1-2); byte 1 the size of the
// chunks the body is fed in (1 to 32 bytes); then each string as a length
// byte (taken modulo 16) and its bytes; the rest is the body.
// Checked for every input:
//   - the output is what the rules say, computed plainly over the whole
//     body (first string in order at the leftmost position, no overlap,
//     ASCII case ignored, once);
//   - the same output when the body comes in one piece;
//   - input text is a window of the chunk it came in, and what is held
//     back stays below the longest string.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/assert.h"
#include "http/sub_match.h"

using namespace gatehouse;
using namespace gatehouse::http;

namespace {

struct Out final : SubSink {
    std::string s;
    std::string_view chunk;
    void text(std::string_view t, bool held) override {
        if (!held) GH_CHECK(t.data() >= chunk.data() && t.data() + t.size() <= chunk.data() + chunk.size());
        s += t;
    }
    void match(size_t i) override {
        s += '\0';
        s += static_cast<char>(i);
    }
};

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

std::string reference(const std::vector<std::string_view>& pats, bool once, std::string_view body) {
    std::vector<bool> used(pats.size(), false);
    std::string out;
    size_t p = 0;
    while (p < body.size()) {
        size_t hit = pats.size();
        for (size_t i = 0; i < pats.size() && hit == pats.size(); ++i) {
            std::string_view s = pats[i];
            if (s.empty() || (once && used[i]) || body.size() - p < s.size()) continue;
            if (std::equal(s.begin(), s.end(), body.begin() + p,
                           [](char a, char b) { return lower(a) == lower(b); }))
                hit = i;
        }
        if (hit == pats.size()) {
            out += body[p++];
            continue;
        }
        out += '\0';
        out += static_cast<char>(hit);
        used[hit] = true;
        p += pats[hit].size();
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const bool once = data[0] & 1;
    const size_t npats = 1 + ((data[0] >> 1) & 3);
    const size_t piece = 1 + data[1] % 32;
    std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
    std::vector<std::string_view> pats;
    for (size_t i = 0; i < npats; ++i) {
        if (in.empty()) return 0;
        const size_t len = static_cast<unsigned char>(in[0]) % 16;
        in.remove_prefix(1);
        if (in.size() < len) return 0;
        pats.push_back(in.substr(0, len));
        in.remove_prefix(len);
    }
    size_t longest = 0;
    for (std::string_view p : pats) longest = std::max(longest, p.size());
    const std::string want = reference(pats, once, in);

    SubMatcher m(pats, once);
    Out o;
    for (size_t at = 0;; at += piece) {
        o.chunk = in.substr(std::min(at, in.size()), piece);
        const bool end = at + piece >= in.size();
        m.feed(o.chunk, end, o);
        GH_CHECK(m.held() == 0 || m.held() < longest);
        if (end) break;
    }
    GH_CHECK(m.held() == 0);
    GH_CHECK(o.s == want);

    SubMatcher one(pats, once);
    Out w;
    w.chunk = in;
    one.feed(in, true, w);
    GH_CHECK(w.s == want);
    return 0;
}
