// Tests of src/http/trace_context.h: the recommendation's examples and one
// row per rule of parse_traceparent (lengths, separators, case, versions,
// all-zero ids), and the round trip through format_traceparent.
#include "http/trace_context.h"

#include <doctest/doctest.h>

#include <string>

using namespace gatehouse::http;

namespace {

constexpr std::string_view kGood = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

std::string text(const TraceParent& tp) {
    char out[kTraceparentLen];
    format_traceparent(tp, out);
    return std::string(out, sizeof out);
}

}  // namespace

TEST_CASE("http/trace_context: a valid version-00 value and its round trip") {
    auto tp = parse_traceparent(kGood);
    REQUIRE(tp);
    CHECK(tp->trace_id[0] == 0x0a);
    CHECK(tp->trace_id[15] == 0x9c);
    CHECK(tp->parent_id[0] == 0xb7);
    CHECK(tp->parent_id[7] == 0x31);
    CHECK(tp->flags == 1);
    CHECK(tp->sampled());
    CHECK(text(*tp) == kGood);
    auto unsampled = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    REQUIRE(unsampled);
    CHECK_FALSE(unsampled->sampled());
    // Flags other than sampled are kept as sent.
    CHECK(parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff")->flags == 0xff);
}

TEST_CASE("http/trace_context: invalid values") {
    const char* bad[] = {
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",      // short
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-011",    // version 00 is exactly 55
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",     // upper case
        "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",     // separators
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",     // zero trace-id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",     // zero parent-id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",     // version ff
        "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",     // not hex
        "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
        " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",    // nothing trimmed
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",    // later version: '-' after flags
    };
    for (const char* v : bad) {
        CAPTURE(v);
        CHECK_FALSE(parse_traceparent(v));
    }
}

TEST_CASE("http/trace_context: a later version is read as 00, extra fields ignored") {
    auto tp = parse_traceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next");
    REQUIRE(tp);
    CHECK(text(*tp) == kGood);
    CHECK(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
}
