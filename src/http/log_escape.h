// Escaping of variable values in access log lines: the "escape=" parameter
// of "log_format" [nginx log module].
//
//   Default  '"', '\' and every byte below 0x20 or from 0x7f up become
//            "\xHH" (upper-case hex), so that a line stays one line of
//            printable ASCII whatever a client sends;
//   Json     the value is the inside of a JSON string: '"' and '\' get a
//            backslash, \b \f \n \r \t their short forms, other control
//            bytes "\u00HH"; bytes from 0x7f up pass unchanged;
//   None     bytes are copied as they are.
//
// Only variable values are escaped; the literal text of a format is the
// operator's and goes out as written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/result.h"

namespace gatehouse::http {

enum class LogEscape : uint8_t { Default, Json, None };

// "default", "json" or "none" (the value after "escape=").
Result<LogEscape> parse_log_escape(std::string_view s);

// The number of bytes escape_to() writes for s.
size_t escaped_size(LogEscape e, std::string_view s);

// Writes s escaped at out, which has room for escaped_size(e, s) bytes;
// returns the end of what it wrote.
char* escape_to(LogEscape e, std::string_view s, char* out);

}  // namespace gatehouse::http
