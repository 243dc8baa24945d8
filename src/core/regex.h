// PCRE2 regular expressions, compiled once per generation with JIT.
//
// Used by locations, server names, rewrite, if and map. Matching writes
// capture offsets into the caller's array (a Request's captures) so that
// "$1" and named captures refer to the last successful match.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

typedef struct pcre2_real_code_8 pcre2_code_8;
typedef struct pcre2_real_match_data_8 pcre2_match_data_8;

namespace gatehouse {

class Regex {
public:
    Regex() = default;
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    Regex(Regex&& o) noexcept;
    Regex& operator=(Regex&& o) noexcept;
    ~Regex();

    // The error reads: pcre2_compile() failed: missing ) in "(a" at "".
    static Result<Regex> compile(std::string_view pattern, bool caseless);

    // Number of capture groups (without the whole match).
    int captures() const { return ncaptures_; }
    // Named groups and their numbers.
    struct Named {
        std::string name;
        int number;
    };
    const std::vector<Named>& names() const { return names_; }
    const std::string& pattern() const { return pattern_; }

    // Matches s. On a match returns true and, when ovec is given, fills
    // up to ovec_pairs [start, end) pairs (unset groups are -1, -1) and
    // sets *pairs to the number filled. Never allocates: match data is
    // per thread and sized for the largest regex.
    bool match(std::string_view s, int* ovec = nullptr, int ovec_pairs = 0, int* pairs = nullptr) const;

private:
    pcre2_code_8* code_ = nullptr;
    int ncaptures_ = 0;
    std::vector<Named> names_;
    std::string pattern_;
};

}  // namespace gatehouse
