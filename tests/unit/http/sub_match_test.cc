// Tests of src/http/sub_match.h: the rules (first string in order at the
// leftmost position, no overlap, once, case), then the same answers
// whatever the chunks: every split point, every pair of split points,
// one-byte chunks, against a whole-body reference.
#include "http/sub_match.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using gatehouse::http::kSubMaxSearch;
using gatehouse::http::SubMatcher;
using gatehouse::http::SubSink;

namespace {

// Writes text as it is and a match as "<index>"; counts held bytes.
struct Collect final : SubSink {
    std::string s;
    size_t held_bytes = 0;
    std::string_view chunk;  // the chunk being fed: input text must be in it
    bool outside = false;    // input text that was not a window of `chunk`
    void text(std::string_view t, bool held) override {
        if (held) {
            held_bytes += t.size();
        } else if (t.data() < chunk.data() || t.data() + t.size() > chunk.data() + chunk.size()) {
            outside = true;
        }
        s += t;
    }
    void match(size_t i) override { s += "<" + std::to_string(i) + ">"; }
};

std::string run(const std::vector<std::string_view>& pats, bool once, const std::vector<std::string>& chunks) {
    SubMatcher m(pats, once);
    Collect c;
    for (size_t i = 0; i < chunks.size(); ++i) {
        c.chunk = chunks[i];
        m.feed(chunks[i], i + 1 == chunks.size(), c);
        CHECK(m.held() < std::max<size_t>(m.longest(), 1));
    }
    CHECK(m.held() == 0);
    CHECK_FALSE(c.outside);
    return c.s;
}

std::string whole(const std::vector<std::string_view>& pats, bool once, std::string_view body) {
    return run(pats, once, {std::string(body)});
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// The rules written plainly over the whole body.
std::string reference(const std::vector<std::string_view>& pats, bool once, std::string_view body) {
    std::vector<bool> used(pats.size(), false);
    std::string out;
    size_t p = 0;
    while (p < body.size()) {
        bool found = false;
        for (size_t i = 0; i < pats.size() && !found; ++i) {
            std::string_view s = pats[i];
            if (s.empty() || s.size() > kSubMaxSearch || (once && used[i]) || body.size() - p < s.size()) continue;
            bool eq = true;
            for (size_t k = 0; k < s.size() && eq; ++k) eq = lower(body[p + k]) == lower(s[k]);
            if (!eq) continue;
            out += "<" + std::to_string(i) + ">";
            used[i] = true;
            p += s.size();
            found = true;
        }
        if (!found) out += body[p++];
    }
    return out;
}

// Every way of cutting `body` in two and three, and in single bytes.
void check_splits(const std::vector<std::string_view>& pats, bool once, std::string_view body) {
    const std::string want = reference(pats, once, body);
    CHECK(whole(pats, once, body) == want);
    for (size_t a = 0; a <= body.size(); ++a) {
        CHECK(run(pats, once, {std::string(body.substr(0, a)), std::string(body.substr(a))}) == want);
        for (size_t b = a; b <= body.size(); ++b)
            CHECK(run(pats, once,
                      {std::string(body.substr(0, a)), std::string(body.substr(a, b - a)),
                       std::string(body.substr(b))}) == want);
    }
    std::vector<std::string> bytes;
    for (char c : body) bytes.emplace_back(1, c);
    bytes.emplace_back();  // the end, empty
    CHECK(run(pats, once, bytes) == want);
}

}  // namespace

TEST_CASE("http/sub_match: a string is replaced, case aside") {
    CHECK(whole({"foo"}, true, "a foo b") == "a <0> b");
    CHECK(whole({"foo"}, true, "FoO") == "<0>");
    CHECK(whole({"FOO"}, true, "xfooy") == "x<0>y");
    CHECK(whole({"foo"}, true, "fo") == "fo");
    CHECK(whole({"foo"}, true, "") == "");
}

TEST_CASE("http/sub_match: once replaces each string at its first place only") {
    CHECK(whole({"foo"}, true, "foofoo") == "<0>foo");
    CHECK(whole({"foo"}, false, "foofoo") == "<0><0>");
    CHECK(whole({"aab", "yyz"}, true, "aabyyzaab") == "<0><1>aab");
    CHECK(whole({"aab", "yyz"}, true, "yyzyyzaabaabyyz") == "<1>yyz<0>aabyyz");
    CHECK(whole({"a"}, false, "CAAC") == "C<0><0>C");
    CHECK(whole({"a"}, true, "CAAC") == "C<0>AC");
}

TEST_CASE("http/sub_match: the scan restarts after a partial match") {
    CHECK(whole({"abac"}, true, "abaabac") == "aba<0>");
    CHECK(whole({"abac"}, true, "ababac") == "ab<0>");
    CHECK(whole({"ababx"}, true, "abababx") == "ab<0>");
    CHECK(whole({"aab"}, true, "aaaab") == "aa<0>");
    CHECK(whole({"foo"}, false, "foofo") == "<0>fo");
}

TEST_CASE("http/sub_match: the leftmost place wins, then the first string") {
    // Leftmost: "aaabb" starts before "aabb" within it.
    CHECK(whole({"aabb", "aaabb"}, false, "aabbaaabbaabb") == "<0><1><0>");
    // Same place: the first listed, whichever is longer.
    CHECK(whole({"abpatternyz", "abpa", "tter"}, false, "abpatternyzX") == "<0>X");
    CHECK(whole({"abpatternyz", "abpa", "tter"}, false, "abpatternyX") == "<1><2>nyX");
    CHECK(whole({"ab", "abc"}, false, "abc") == "<0>c");
    CHECK(whole({"abc", "ab"}, false, "abc") == "<0>");
    // Matches do not overlap.
    CHECK(whole({"aba"}, false, "ababa") == "<0>ba");
    CHECK(whole({"ab", "cd", "ef", "x"}, false, "abcdxefx") == "<0><1><3><2><3>");
}

TEST_CASE("http/sub_match: bytes beyond ASCII compare exactly") {
    CHECK(whole({"паттерн"}, false, "ТЕКСТпаттерн") == "ТЕКСТ<0>");
    // Case folding is ASCII only: "П" is not "п".
    CHECK(whole({"паттерн"}, false, "ПАТТЕРН") == "ПАТТЕРН");
    CHECK(whole({"\xff\x80"}, false, std::string_view("a\xff\x80", 3)) == "a<0>");
}

TEST_CASE("http/sub_match: empty and over-long strings are never found") {
    const std::string too_long(kSubMaxSearch + 1, 'a');
    CHECK(whole({"", too_long, "b"}, false, std::string(kSubMaxSearch + 2, 'a') + "b") ==
          std::string(kSubMaxSearch + 2, 'a') + "<2>");
    SubMatcher none(std::vector<std::string_view>{""}, true);
    CHECK(none.done());
    const std::string max(kSubMaxSearch, 'q');
    CHECK(whole({max}, false, "x" + max + "x") == "x<0>x");
}

TEST_CASE("http/sub_match: done once every string was used") {
    std::vector<std::string_view> pats{"ab", "cd"};
    SubMatcher m(pats, true);
    Collect c;
    c.chunk = "xxab";
    m.feed(c.chunk, false, c);
    CHECK_FALSE(m.done());
    c.chunk = "c";
    m.feed(c.chunk, false, c);
    CHECK_FALSE(m.done());  // "c" is held: "cd" may follow
    CHECK(m.held() == 1);
    c.chunk = "d tail";
    m.feed(c.chunk, false, c);
    CHECK(m.done());
    CHECK(c.s == "xx<0><1> tail");
    // Off: never done.
    SubMatcher all(pats, false);
    CHECK_FALSE(all.done());
}

TEST_CASE("http/sub_match: what is held is bounded by the longest string") {
    std::vector<std::string_view> pats{"abcdefgh", "xyz"};
    SubMatcher m(pats, false);
    Collect c;
    // A prefix of the longest string at the end of every chunk.
    for (int i = 0; i < 1000; ++i) {
        c.chunk = "..abcdefg";
        m.feed(c.chunk, false, c);
        CHECK(m.held() <= 7);
    }
    c.chunk = "h";
    m.feed(c.chunk, true, c);
    CHECK(m.held() == 0);
    std::string want;
    for (int i = 0; i < 999; ++i) want += "..abcdefg";
    want += "..<0>";
    CHECK(c.s == want);
}

TEST_CASE("http/sub_match: a held prefix that fails is given back as text") {
    std::vector<std::string_view> pats{"abc"};
    SubMatcher m(pats, false);
    Collect c;
    c.chunk = "xab";
    m.feed(c.chunk, false, c);
    CHECK(c.s == "x");
    CHECK(m.held() == 2);
    c.chunk = "d";
    m.feed(c.chunk, false, c);
    CHECK(c.s == "xabd");
    CHECK(c.held_bytes == 2);
    CHECK(m.held() == 0);
    c.chunk = "ab";
    m.feed(c.chunk, true, c);  // the end: nothing may stay held
    CHECK(c.s == "xabdab");
}

TEST_CASE("http/sub_match: split points everywhere give the same answer") {
    check_splits({"foo"}, false, "xfoofoOfofoo");
    check_splits({"foo"}, true, "xfoofoOfofoo");
    check_splits({"aabb", "aaabb"}, false, "aabbaaabbaabb");
    check_splits({"abpatternyz", "abpa", "tter"}, false, "abpatternyzABabpatternyABCabpa");
    check_splits({"abpatternyz", "abpa", "tter"}, true, "abpatternyzABabpatternyABCabpa");
    check_splits({"aab", "yyz"}, true, "yyzyyzaabaabyyz");
    check_splits({"a", "aa", "aaa"}, false, "aaaaaaa");
    check_splits({"aaa", "aa", "a"}, false, "aaaaaaa");
    check_splits({"abab", "bab"}, false, "abababab");
    check_splits({"x", "xyz", "yz"}, true, "xyzxyzyz");
    check_splits({"ABC", "bcd"}, false, "abcdBCDabCD");
}

TEST_CASE("http/sub_match: random bodies in random chunks match the reference") {
    // A fixed linear congruential sequence: the same cases on every run.
    uint32_t seed = 12345;
    auto next = [&](uint32_t n) {
        seed = seed * 1103515245u + 12345u;
        return (seed >> 16) % n;
    };
    const char alphabet[] = "abAB";
    for (int round = 0; round < 400; ++round) {
        std::vector<std::string> owned;
        const size_t npats = 1 + next(4);
        for (size_t i = 0; i < npats; ++i) {
            std::string s;
            const size_t len = 1 + next(6);
            for (size_t k = 0; k < len; ++k) s += alphabet[next(4)];
            owned.push_back(s);
        }
        std::vector<std::string_view> pats(owned.begin(), owned.end());
        std::string body;
        const size_t blen = next(60);
        for (size_t k = 0; k < blen; ++k) body += alphabet[next(4)];
        const bool once = next(2) == 0;
        std::vector<std::string> chunks;
        for (size_t at = 0; at < body.size();) {
            size_t n = std::min<size_t>(body.size() - at, next(8));
            chunks.push_back(body.substr(at, n));
            at += n;
        }
        chunks.emplace_back();
        CAPTURE(body);
        CHECK(run(pats, once, chunks) == reference(pats, once, body));
    }
}

TEST_CASE("http/sub_match: a million one-byte chunks") {
    std::vector<std::string_view> pats{"<needle>", "<ne"};
    SubMatcher m(pats, false);
    std::string body;
    while (body.size() < 1000000) body += "..<needle>.<nee.<NE";
    body.resize(1000000);
    Collect c;
    size_t most = 0;
    for (size_t i = 0; i < body.size(); ++i) {
        c.chunk = std::string_view(body).substr(i, 1);
        m.feed(c.chunk, i + 1 == body.size(), c);
        most = std::max(most, m.held());
    }
    CHECK(most == 7);  // "<needle": the longest string less one byte
    CHECK(m.held() == 0);
    CHECK(c.s == reference(pats, false, body));
}
