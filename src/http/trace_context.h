// W3C Trace Context (https://www.w3.org/TR/trace-context/): the
// "traceparent" field that carries a trace across services, parsed and
// written. Pure functions, no allocation, no request: the trace_context
// module (modules/trace_context.cc) decides what to do with them.
//
//   traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
//                ^v ^trace-id (16 bytes)             ^parent-id (8)   ^flags
//
// Parsing (parse_traceparent), as the recommendation's processing model:
//   - lower-case hex only; each field of its exact length, '-' between;
//   - version "ff" is invalid; version "00" is exactly 55 characters;
//     a higher version may be longer, with '-' right after the flags
//     (its extra fields are ignored: a future version is read as 00);
//   - an all-zero trace-id or parent-id is invalid;
//   - nothing is trimmed: the field's value as the request has it (OWS
//     already removed by the HTTP parser). Several traceparent fields are
//     the caller's business (the module treats them as invalid).
// An invalid value is not an error for the request: the caller starts a
// new trace, as the recommendation says a receiver must.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gatehouse::http {

struct TraceParent {
    std::array<uint8_t, 16> trace_id{};
    std::array<uint8_t, 8> parent_id{};
    uint8_t flags = 0;  // bit 0: sampled

    bool sampled() const { return flags & 1; }
};

std::optional<TraceParent> parse_traceparent(std::string_view v);

// The version-00 text of `tp`, 55 characters, into `out`.
inline constexpr size_t kTraceparentLen = 55;
void format_traceparent(const TraceParent& tp, char (&out)[kTraceparentLen]);

// Lower-case hex of `bytes` into out (2 * n characters).
void hex_lower(const uint8_t* bytes, size_t n, char* out);

}  // namespace gatehouse::http
