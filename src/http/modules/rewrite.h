// The rewrite module's pieces that other code reaches: the parsers of its
// directive arguments (pure, unit-tested in tests/unit/http/rewrite_test.cc)
// and the regex-with-variables helper that "map" shares.
//
// The module itself (rewrite.cc) compiles the "rewrite", "return", "break",
// "if" and "set" directives of one server or location, in config order,
// into a small program [nginx script codes]; the ServerRewrite and Rewrite
// phase handlers run it.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/fwd.h"
#include "core/arena.h"
#include "core/regex.h"
#include "core/result.h"
#include "http/fwd.h"

namespace gatehouse::http {

extern const conf::Module rewrite_module;

// A regex whose named groups are variables: after a match of
// "(?<id>\d+)", "$id" holds the group [nginx ngx_http_regex_compile].
// Owned by the configuration generation.
// CaptureRegex: see http/variables.h.

namespace rewrite {

// ---- "if (condition)" -------------------------------------------------------

enum class CondKind : uint8_t {
    Var,       // ($v): false when empty or "0"
    Equal,     // ($v = value)
    NotEqual,  // ($v != value)
    Match,     // ($v ~ regex), ($v ~* regex)
    NotMatch,  // ($v !~ regex), ($v !~* regex)
    File,      // (-f path), (!-d path) ...
};
enum class FileOp : uint8_t { Plain, Dir, Exists, Exec };  // -f -d -e -x

struct CondSpec {
    CondKind kind = CondKind::Var;
    std::string_view var;      // the variable, without "$" (not for File)
    std::string_view operand;  // the value, the regex or the path
    bool caseless = false;     // "~*", "!~*"
    FileOp file = FileOp::Plain;
    bool negate = false;       // "!-f" ...
};

// The arguments of "if" as written, parentheses included: "($a", "=",
// "b)" or "(", "-f", "$p", ")". Views in the result point into `args`.
// Errors are nginx's: invalid condition "x", unexpected "x" in condition.
Result<CondSpec> parse_condition(std::span<const std::string_view> args);

// nginx's truth of a value: false if empty or "0".
inline bool truthy(std::string_view v) { return !v.empty() && v != "0"; }

// ---- "rewrite regex replacement [flag]" ------------------------------------

struct RewriteSpec {
    // The replacement without a final "?". For a redirect, all of it; else
    // split at its first "?": uri before, args after.
    std::string_view uri;
    std::string_view args;
    bool has_args = false;     // the replacement has a "?" of its own
    bool add_args = true;      // the request's args are kept (no final "?")
    bool redirect = false;     // answer with a Location
    int status = 0;            // 301 or 302 for a redirect
    bool stop = false;         // no further directive of this program runs
    bool break_cycle = false;  // "break": stay in the location
};

// Errors: empty replacement, invalid parameter "x".
Result<RewriteSpec> parse_rewrite(std::string_view replacement, std::string_view flag);

// A replacement as literal text with variables, or as a capture $0..$9.
// Captures are split out because a rewrite escapes them (see escape_args).
struct Piece {
    std::string_view text;  // when capture < 0: text for a ComplexValue
    int capture = -1;
};
std::vector<Piece> split_captures(std::string_view s);

// ---- URIs and arguments -----------------------------------------------------

// nginx escapes a capture copied into a rewrite when the request's path
// was sent percent-encoded or with "+": the capture comes from the decoded
// $uri, and without this "/a%20b" would become a redirect to "/a b" or a
// query string with a stray "&". Escapes " # % & + ; ?", controls and
// bytes >= 0x7f. Returns the bytes written to out (out.size() >= 3 * in).
size_t escape_args(std::string_view in, char* out);
size_t escaped_args_size(std::string_view in);
bool path_was_encoded(std::string_view unparsed_uri);

// r.args after a rewrite to a URI whose own args (after "?") are
// new_args: those, then "&" and the request's when kept.
std::string_view rewritten_args(Arena& a, bool has_args, std::string_view new_args,
                                bool add_args, std::string_view old_args);
// The Location of a rewrite redirect: the replacement, then the request's
// args when kept, after "&" if the replacement has a "?" of its own
// (has_args), else after "?".
std::string_view redirect_location(Arena& a, std::string_view url, bool has_args, bool add_args,
                                   std::string_view old_args);

// ---- "return" ---------------------------------------------------------------

struct ReturnSpec {
    int code = 0;
    std::string_view text;  // a body, or the URL of a redirect
    bool has_text = false;
};
// "return code [text]", "return code URL", "return URL" (302 when URL
// starts with "http://", "https://" or "$scheme"). Error: invalid return
// code "x".
Result<ReturnSpec> parse_return(std::span<const std::string_view> args);
inline bool is_redirect_code(int c) {
    return c == 301 || c == 302 || c == 303 || c == 307 || c == 308;
}

}  // namespace rewrite
}  // namespace gatehouse::http
