// Request-target paths: splitting off the query, percent-decoding and
// normalising, the steps nginx takes before matching locations.
//
// Order matters: decode first, then normalise, so that "/%2e%2e/" is the
// ".." it decodes to and cannot slip past the check that keeps a path
// under "/". An encoded slash ("%2F") becomes a separator, as in nginx.
//
// Functions writing to `out` need out.size() >= the input's size and
// accept out.data() == input.data() (in place): output never overtakes
// input.
#pragma once

#include <span>
#include <string_view>

#include "core/result.h"

namespace gatehouse::http {

struct PathQuery {
    std::string_view path;   // up to the first '?', still encoded
    std::string_view query;  // after it: nginx's $args
    bool has_query = false;  // a '?' was there, maybe with nothing after it
};
PathQuery split_path_query(std::string_view target);

// %XX -> the byte. Errors: '%' without two hex digits after it, and "%00",
// which would cut the path short in any C string API down the line.
Result<std::string_view> percent_decode(std::string_view in, std::span<char> out);

// Removes "." segments, resolves ".." against the segment before it and
// merges runs of '/' (RFC 3986 5.2.4, with nginx's merge_slashes). A path
// ending in a "." or ".." segment keeps a trailing '/'. Errors: a path not
// starting with '/', and a ".." that would climb above "/" (nginx: 400).
// Without `merge` ("merge_slashes off"), an empty segment is a segment
// like any other: "/a//../b" is "/a/b".
Result<std::string_view> normalize_path(std::string_view path, std::span<char> out, bool merge = true);

// percent_decode() then normalize_path(). Returns `raw` itself when it is
// already decoded and normal (the common case, no copy), else a view of
// `out`.
Result<std::string_view> clean_path(std::string_view raw, std::span<char> out, bool merge = true);

// Percent-encodes ("%2F", upper-case hex) each byte `needs` selects;
// escaped_size() is the length escape() writes into out.
using EscapeSet = bool (*)(unsigned char);
size_t escaped_size(std::string_view in, EscapeSet needs);
size_t escape(std::string_view in, char* out, EscapeSet needs);

}  // namespace gatehouse::http
