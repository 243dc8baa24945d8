// Tests of src/http/conditional.h: the three HTTP date forms, entity-tag
// lists, and the precondition order of RFC 9110 13.2.2.
#include "http/conditional.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

using namespace gatehouse::http;

TEST_CASE("http/conditional: the three date forms read the same instant") {
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
    CHECK(parse_http_date("Sun Nov 16 08:49:37 1994") == 784111777 + 10 * 86400);
}

TEST_CASE("http/conditional: dates at the edges") {
    CHECK(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT") == 0);
    CHECK(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT") == 951782400);
    CHECK(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT") == 253402300799);
    CHECK(parse_http_date("Tuesday, 01-Jan-69 00:00:00 GMT") == 3124224000);  // 2069
    // Old browsers append the length; the weekday is not checked.
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT; length=120") == 784111777);
    CHECK(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT ") == 784111777);
}

TEST_CASE("http/conditional: a date read again gives the same answer as the first time") {
    // The last IMF-fixdate is remembered: the same text again, other text
    // between, and a one-byte change must all read as without it.
    const char* a = "Sun, 06 Nov 1994 08:49:37 GMT";
    const char* b = "Thu, 01 Jan 1970 00:00:00 GMT";
    for (int i = 0; i < 3; ++i) {
        CHECK(parse_http_date(a) == 784111777);
        CHECK(parse_http_date(a) == 784111777);
        CHECK(parse_http_date(b) == 0);
    }
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:38 GMT") == 784111778);
    CHECK(parse_http_date("Sun, 31 Nov 1994 08:49:37 GMT") == -1);
    CHECK(parse_http_date("Sun, 31 Nov 1994 08:49:37 GMT") == -1);
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMX") == -1);
    CHECK(parse_http_date(a) == 784111777);
}

TEST_CASE("http/conditional: invalid dates are -1") {
    CHECK(parse_http_date("") == -1);
    CHECK(parse_http_date("yesterday") == -1);
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37") == -1);       // no GMT
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC") == -1);
    CHECK(parse_http_date("Sun, 6 Nov 1994 08:49:37 GMT") == -1);    // one-digit day
    CHECK(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT") == -1);
    CHECK(parse_http_date("Sun, 31 Nov 1994 08:49:37 GMT") == -1);   // no such day
    CHECK(parse_http_date("Mon, 29 Feb 1900 00:00:00 GMT") == -1);   // not a leap year
    CHECK(parse_http_date("Sun, 06 Nov 1994 24:00:00 GMT") == -1);
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:60:00 GMT") == -1);
    CHECK(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT") == -1);   // before the epoch
    CHECK(parse_http_date("1994-11-06T08:49:37Z") == -1);
}

// IMF-fixdate has a fast path at fixed offsets; a day name of four
// letters takes the general scanner instead, which must agree with it on
// every date and on every one-byte change of one.
TEST_CASE("http/conditional: the IMF-fixdate fast path reads as the scanner does") {
    uint64_t x = 88172645463325252ull;
    auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    const std::string alphabet = "09 :,GMTNovnov/-\t\xff";
    for (int k = 0; k < 2000; ++k) {
        const time_t t = static_cast<time_t>(next() % 253402300800ull);
        char buf[kHttpDateMax];
        const std::string d(format_http_date(t, buf));
        REQUIRE(parse_http_date(d) == t);
        REQUIRE(parse_http_date("X" + d) == t);
        for (size_t i = 3; i < d.size(); ++i) {
            std::string m = d;
            m[i] = alphabet[next() % alphabet.size()];
            CAPTURE(m);
            CHECK(parse_http_date(m) == parse_http_date("X" + m));
        }
    }
}

TEST_CASE("http/conditional: entity-tag lists") {
    CHECK(etag_list_matches("\"a\"", "\"a\"", TagMatch::Strong));
    CHECK(etag_list_matches("\"x\", \"a\"", "\"a\"", TagMatch::Strong));
    CHECK(etag_list_matches("\"x\",\t\"a\" ,", "\"a\"", TagMatch::Weak));
    CHECK(etag_list_matches("\"a,b\"", "\"a,b\"", TagMatch::Strong));
    CHECK_FALSE(etag_list_matches("\"ab\"", "\"a\"", TagMatch::Strong));
    CHECK_FALSE(etag_list_matches("\"a\"", "", TagMatch::Weak));
    CHECK_FALSE(etag_list_matches("a", "\"a\"", TagMatch::Weak));  // unquoted
    CHECK_FALSE(etag_list_matches("\"a", "\"a\"", TagMatch::Weak));
}

TEST_CASE("http/conditional: weak comparison ignores W/, strong refuses it") {
    CHECK(etag_list_matches("W/\"a\"", "\"a\"", TagMatch::Weak));
    CHECK(etag_list_matches("\"a\"", "W/\"a\"", TagMatch::Weak));
    CHECK(etag_list_matches("W/\"a\"", "W/\"a\"", TagMatch::Weak));
    CHECK_FALSE(etag_list_matches("W/\"a\"", "\"a\"", TagMatch::Strong));
    CHECK_FALSE(etag_list_matches("\"a\"", "W/\"a\"", TagMatch::Strong));
}

namespace {

constexpr time_t kLm = 784111777;
constexpr const char* kLmText = "Sun, 06 Nov 1994 08:49:37 GMT";
constexpr const char* kLater = "Sun, 06 Nov 1994 08:49:38 GMT";
constexpr const char* kEarlier = "Sun, 06 Nov 1994 08:49:36 GMT";
constexpr std::string_view kTag = "\"5f-10\"";

PreconditionResult eval(const Preconditions& p, bool safe = true, IfModifiedSince m = IfModifiedSince::Exact,
                        time_t lm = kLm, std::string_view tag = kTag) {
    return evaluate_preconditions(p, lm, tag, safe, m);
}

}  // namespace

TEST_CASE("http/conditional: If-None-Match") {
    Preconditions p;
    p.if_none_match = "\"5f-10\"";
    CHECK(eval(p) == PreconditionResult::NotModified);
    CHECK(eval(p, false) == PreconditionResult::Failed);
    p.if_none_match = "\"other\"";
    CHECK(eval(p) == PreconditionResult::Proceed);
    p.if_none_match = "*";
    CHECK(eval(p) == PreconditionResult::NotModified);
    p.if_none_match = "\"5f-10\"";
    CHECK(eval(p, true, IfModifiedSince::Exact, kLm, "") == PreconditionResult::Proceed);  // no ETag
}

TEST_CASE("http/conditional: If-Modified-Since in each mode") {
    Preconditions p;
    p.if_modified_since = kLmText;
    CHECK(eval(p) == PreconditionResult::NotModified);
    CHECK(eval(p, true, IfModifiedSince::Before) == PreconditionResult::NotModified);
    CHECK(eval(p, true, IfModifiedSince::Off) == PreconditionResult::Proceed);
    CHECK(eval(p, false) == PreconditionResult::Proceed);  // only GET and HEAD
    p.if_modified_since = kLater;
    CHECK(eval(p) == PreconditionResult::Proceed);  // exact: not equal
    CHECK(eval(p, true, IfModifiedSince::Before) == PreconditionResult::NotModified);
    p.if_modified_since = kEarlier;
    CHECK(eval(p) == PreconditionResult::Proceed);
    CHECK(eval(p, true, IfModifiedSince::Before) == PreconditionResult::Proceed);
    p.if_modified_since = "garbage";
    CHECK(eval(p) == PreconditionResult::Proceed);
    p.if_modified_since = kLmText;
    CHECK(eval(p, true, IfModifiedSince::Exact, -1) == PreconditionResult::Proceed);  // no Last-Modified
}

TEST_CASE("http/conditional: If-None-Match decides over If-Modified-Since") {
    Preconditions p;
    p.if_none_match = "\"other\"";
    p.if_modified_since = kLmText;
    CHECK(eval(p) == PreconditionResult::Proceed);
    p.if_none_match = "\"5f-10\"";
    p.if_modified_since = kEarlier;
    CHECK(eval(p) == PreconditionResult::NotModified);
}

TEST_CASE("http/conditional: If-Match and If-Unmodified-Since fail with 412") {
    Preconditions p;
    p.if_match = "\"5f-10\"";
    CHECK(eval(p) == PreconditionResult::Proceed);
    p.if_match = "\"other\"";
    CHECK(eval(p) == PreconditionResult::Failed);
    p.if_match = "W/\"5f-10\"";
    CHECK(eval(p) == PreconditionResult::Failed);  // strong comparison
    p.if_match = "*";
    CHECK(eval(p) == PreconditionResult::Proceed);
    p.if_match = "\"5f-10\"";
    CHECK(eval(p, true, IfModifiedSince::Exact, kLm, "") == PreconditionResult::Failed);

    Preconditions u;
    u.if_unmodified_since = kLmText;
    CHECK(eval(u) == PreconditionResult::Proceed);
    u.if_unmodified_since = kLater;
    CHECK(eval(u) == PreconditionResult::Proceed);
    u.if_unmodified_since = kEarlier;
    CHECK(eval(u) == PreconditionResult::Failed);
    u.if_unmodified_since = "garbage";
    CHECK(eval(u) == PreconditionResult::Proceed);  // RFC 9110 13.1.4: ignored
    u.if_unmodified_since = kEarlier;
    u.if_match = "\"5f-10\"";
    CHECK(eval(u) == PreconditionResult::Proceed);  // If-Match present: IUS ignored
}

TEST_CASE("http/conditional: a failed If-Match wins over If-None-Match") {
    Preconditions p;
    p.if_match = "\"other\"";
    p.if_none_match = "\"5f-10\"";
    CHECK(eval(p) == PreconditionResult::Failed);
}

TEST_CASE("http/conditional: format_http_date writes what gmtime_r and strftime would") {
    auto libc = [](time_t t) {
        struct tm tm;
        gmtime_r(&t, &tm);
        char b[64];
        size_t n = strftime(b, sizeof b, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        return std::string(b, n);
    };
    std::vector<time_t> times = {0, 59, 86399, 86400, 784111777, 951782399, 951782400, 951868800,
                                 4107542399, 4107542400, 253402300799};
    uint64_t x = 88172645463325252ULL;  // xorshift: a fixed spread over the whole range
    for (int i = 0; i < 100000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        times.push_back(static_cast<time_t>(x % 253402300800ULL));
    }
    char out[kHttpDateMax];
    for (time_t t : times) {
        REQUIRE(format_http_date(t, out) == libc(t));
        REQUIRE(parse_http_date(format_http_date(t, out)) == t);
    }
    // The last date is kept for the next call: repeated and alternating
    // times still come out right, into whichever buffer is given.
    for (time_t t : {784111777, 784111777, 0, 784111777, 0, 0}) {
        char other[kHttpDateMax];
        REQUIRE(format_http_date(t, other) == libc(t));
    }
    // Outside four-digit years: libc's route, as before.
    CHECK(format_http_date(253402300800, out) == "Sat, 01 Jan 10000 00:00:00 GMT");
    CHECK(format_http_date(-1, out) == "Wed, 31 Dec 1969 23:59:59 GMT");
}
