// Conditional requests (RFC 9110 13): HTTP dates, entity-tag lists, and
// the evaluation of If-Match, If-Unmodified-Since, If-None-Match and
// If-Modified-Since against a response's validators.
//
// The evaluation follows the order of RFC 9110 13.2.2, which differs from
// nginx's only for contradictory or unusable validators:
//   - If-None-Match, when present, decides alone: If-Modified-Since is not
//     consulted (nginx requires both to agree);
//   - "*" matches any current representation, with or without an ETag;
//   - If-Unmodified-Since is ignored when If-Match is present, when its
//     date is invalid, or when the response has no Last-Modified (nginx
//     answers 412 for the last two);
//   - a matching If-None-Match on a method other than GET or HEAD gives
//     412, not 304.
// The "if_modified_since" directive (off, exact, before) is honoured as
// nginx does; "exact" is its default.
#pragma once

#include <ctime>
#include <optional>
#include <string_view>

namespace gatehouse::http {

// "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate), "Sunday, 06-Nov-94
// 08:49:37 GMT" (RFC 850) or "Sun Nov  6 08:49:37 1994" (asctime), as
// RFC 9110 5.6.7 requires recipients to accept. Text after the date (old
// browsers append "; length=N") is ignored. -1 when invalid or before 1970.
time_t parse_http_date(std::string_view s);

// Formats t as an IMF-fixdate ("Tue, 01 Dec 2026 10:00:00 GMT") into out,
// which needs kHttpDateMax bytes; empty for a time gmtime_r() cannot take.
inline constexpr size_t kHttpDateMax = 40;
std::string_view format_http_date(time_t t, char* out);

enum class TagMatch : uint8_t {
    Strong,  // If-Match, If-Range: weak tags never match
    Weak,    // If-None-Match: "W/" is ignored on both sides
};

// Whether the list in an If-Match / If-None-Match value ("\"a\", W/\"b\"")
// holds `etag` (as sent, quotes included). "*" is not handled here.
bool etag_list_matches(std::string_view field, std::string_view etag, TagMatch how);

enum class IfModifiedSince : uint8_t {
    Off,     // If-Modified-Since is ignored
    Exact,   // not modified when the dates are equal
    Before,  // not modified when Last-Modified <= the date
};

// The request's precondition fields, unset when absent.
struct Preconditions {
    std::optional<std::string_view> if_match;
    std::optional<std::string_view> if_unmodified_since;
    std::optional<std::string_view> if_none_match;
    std::optional<std::string_view> if_modified_since;
};

enum class PreconditionResult : uint8_t {
    Proceed,      // send the response as it is
    NotModified,  // 304
    Failed,       // 412
};

// Evaluates `p` for a 200 response with these validators (last_modified
// -1 and etag empty when the response has none). safe_method: GET or HEAD.
PreconditionResult evaluate_preconditions(const Preconditions& p, time_t last_modified,
                                          std::string_view etag, bool safe_method,
                                          IfModifiedSince ims_mode);

}  // namespace gatehouse::http
