// The string search of "sub_filter" (modules/sub_filter.cc), pure: body
// bytes in, pieces of output out, with no Buf, request or socket.
//
// Semantics [nginx ngx_http_sub_module, as its tests show]:
//   - the search strings are compared ignoring ASCII case; other bytes
//     (UTF-8 included) compare as they are;
//   - the body is scanned from left to right; at each position the first
//     string, in the order given, that occurs there is replaced, and the
//     scan goes on after it (matches never overlap). A later string is
//     replaced at a position only when every earlier one is known not to
//     occur there: with "abpatternyz" before "abpa", "abpatternyz" wins
//     where both occur, "abpa" where only it does;
//   - with `once`, each string is replaced at its first occurrence only
//     and then no longer looked for; when none is left the rest of the
//     body passes as it is.
//
// Incremental: the body comes in chunks of any size, down to one byte,
// and an occurrence may span any number of them. The matcher holds back
// the bytes from the first position it cannot decide yet (a prefix of
// some string runs to the end of the chunk), never more than the longest
// string less one byte: its memory is bounded by the strings, not the
// body. Cost: each position where some string's first byte is found is
// compared with the strings in turn, so the worst case is the body's
// length times the strings' total length, as nginx's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <span>
#include <string_view>
#include <vector>

namespace gatehouse::http {

// The longest search string: "sub_filter" refuses a longer one at start
// ([emerg]); one made longer by variables is not looked for (an error is
// logged). nginx has no such limit (its tests use 272 bytes); this bounds
// what a response holds back.
inline constexpr size_t kSubMaxSearch = 1024;

// Where the matcher's output goes, in body order.
class SubSink {
public:
    // Bytes of the body that pass unchanged. `held`: they are the
    // matcher's own copy, valid only during the call; otherwise a window
    // of the chunk given to feed().
    virtual void text(std::string_view s, bool held) = 0;
    // An occurrence of search string `index` (its position in the list
    // given to the constructor): its replacement goes here.
    virtual void match(size_t index) = 0;

protected:
    ~SubSink() = default;
};

class SubMatcher {
public:
    // `search`: the strings in their order; an empty one, or one longer
    // than kSubMaxSearch, is never found. The matcher keeps its own
    // copies (in `mem`).
    SubMatcher(std::span<const std::string_view> search, bool once,
               std::pmr::memory_resource* mem = std::pmr::get_default_resource());

    // The next chunk of the body; `end`: the body ends with it (nothing
    // is held back after). Every byte of the body is reported to `out`
    // exactly once, as text or as part of a match, and in order.
    void feed(std::string_view chunk, bool end, SubSink& out);

    // Nothing will ever be replaced any more (once: every string was
    // found, or there was none to look for) and nothing is held: the
    // caller may pass the rest of the body on without feeding it.
    bool done() const { return active_ == 0 && held_.empty(); }
    // Bytes held back now (at most longest() - 1).
    size_t held() const { return held_.size(); }
    size_t longest() const { return longest_; }

private:
    struct Pattern {
        size_t off = 0, len = 0;  // in text_, lower case
        bool active = false;
    };
    enum class At : uint8_t { None, Match, Undecided };
    struct Verdict {
        At at;
        size_t index;
    };

    Verdict examine(const char* d, size_t n, size_t p, bool end) const;
    // Scans positions [from, limit) of d[0, n): text and matches go to
    // `out` (`held` says how text is reported). Returns the first position
    // not yet reported: >= limit, or an undecided position below it.
    size_t scan(const char* d, size_t n, size_t from, size_t limit, bool end, bool held, SubSink& out);
    void deactivate(size_t i);

    std::pmr::string text_;            // the strings, folded, one after another
    std::pmr::vector<Pattern> pats_;
    bool once_;
    size_t active_ = 0;                // strings still looked for
    size_t longest_ = 0;               // of those given, found ones included
    bool first_[256] = {};             // a first byte (folded) of an active string
    std::pmr::string held_;            // held back: < longest_ bytes
    std::pmr::string join_;            // held_ and the chunk's start, in feed()
};

}  // namespace gatehouse::http
