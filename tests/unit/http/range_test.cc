// Tests of src/http/range.h: one row per Range rule and per verdict, the
// Content-Range forms, and the slicer over memory and file buffers.
#include "http/range.h"

#include <doctest/doctest.h>

#include <memory_resource>
#include <string>
#include <vector>

using gatehouse::Buf;
using gatehouse::Chain;
using gatehouse::http::ByteRange;
using gatehouse::http::format_content_range;
using gatehouse::http::format_unsatisfied_range;
using gatehouse::http::kContentRangeMax;
using gatehouse::http::parse_range;
using gatehouse::http::RangeSlicer;
using gatehouse::http::RangeVerdict;

namespace {

// The single range parsed from `v` for a 100-byte representation; fails
// the test unless exactly one satisfiable range results.
ByteRange one(std::string_view v, uint64_t len = 100) {
    auto r = parse_range(v, len);
    REQUIRE(r.verdict == RangeVerdict::Satisfiable);
    REQUIRE(r.count == 1);
    return r.first;
}

RangeVerdict verdict(std::string_view v, uint64_t len = 100, uint64_t max = UINT64_MAX) {
    return parse_range(v, len, max).verdict;
}

}  // namespace

TEST_CASE("http/range: the three forms of a byte range") {
    CHECK(one("bytes=0-9") == ByteRange{0, 10});
    CHECK(one("bytes=10-19") == ByteRange{10, 20});
    CHECK(one("bytes=5-") == ByteRange{5, 100});   // open
    CHECK(one("bytes=-10") == ByteRange{90, 100});  // suffix
    CHECK(one("bytes=99-99") == ByteRange{99, 100});
}

TEST_CASE("http/range: ranges are clipped to the representation") {
    CHECK(one("bytes=50-1000") == ByteRange{50, 100});
    CHECK(one("bytes=-1000") == ByteRange{0, 100});
    CHECK(one("bytes=0-18446744073709551615") == ByteRange{0, 100});
}

TEST_CASE("http/range: the unit is case-insensitive, spaces are allowed") {
    CHECK(one("BYTES=1-2") == ByteRange{1, 3});
    CHECK(one("bytes= 1 - 2 ") == ByteRange{1, 3});
    CHECK(one("bytes=1-2 , 200-300") == ByteRange{1, 3});  // the second is skipped
}

TEST_CASE("http/range: other units and an empty list are ignored") {
    CHECK(verdict("items=0-1") == RangeVerdict::Ignore);
    CHECK(verdict("bytes=") == RangeVerdict::Ignore);
    CHECK(verdict("bytes") == RangeVerdict::Ignore);
    CHECK(verdict("") == RangeVerdict::Ignore);
}

TEST_CASE("http/range: syntax errors are unsatisfiable, as in nginx") {
    CHECK(verdict("bytes=a-b") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=1") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=1-2x") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=-") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=1-2,") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=,1-2") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=--1") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=99999999999999999999-") == RangeVerdict::Unsatisfiable);  // overflow
}

TEST_CASE("http/range: ranges past the end, backwards or empty are unsatisfiable") {
    CHECK(verdict("bytes=100-") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=100-200") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=5-3") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=-0") == RangeVerdict::Unsatisfiable);
    CHECK(verdict("bytes=200-300,400-") == RangeVerdict::Unsatisfiable);
}

TEST_CASE("http/range: an empty representation ignores ranges") {
    CHECK(verdict("bytes=0-", 0) == RangeVerdict::Ignore);
    CHECK(verdict("bytes=0-10", 0) == RangeVerdict::Ignore);
    CHECK(verdict("bytes=-5", 0) == RangeVerdict::Ignore);
    CHECK(verdict("bytes=1-", 0) == RangeVerdict::Unsatisfiable);
}

TEST_CASE("http/range: lists count their ranges; limits turn them off") {
    auto r = parse_range("bytes=0-9,20-29,-5", 100);
    CHECK(r.verdict == RangeVerdict::Satisfiable);
    CHECK(r.count == 3);
    CHECK(r.first == ByteRange{0, 10});
    CHECK(verdict("bytes=0-9,20-29", 100, 2) == RangeVerdict::Satisfiable);
    CHECK(verdict("bytes=0-9,20-29,40-49", 100, 2) == RangeVerdict::Ignore);  // max_ranges
    CHECK(verdict("bytes=0-9", 100, 0) == RangeVerdict::Ignore);
    // Overlaps asking for more bytes than exist: the whole thing instead.
    CHECK(verdict("bytes=0-99,0-99") == RangeVerdict::Ignore);
    CHECK(verdict("bytes=0-49,50-99") == RangeVerdict::Satisfiable);
}

TEST_CASE("http/range: Content-Range values") {
    char buf[kContentRangeMax];
    CHECK(format_content_range({0, 10}, 100, buf) == "bytes 0-9/100");
    CHECK(format_content_range({99, 100}, 100, buf) == "bytes 99-99/100");
    CHECK(format_content_range({0, UINT64_MAX}, UINT64_MAX, buf) ==
          "bytes 0-18446744073709551614/18446744073709551615");
    CHECK(format_unsatisfied_range(1234, buf) == "bytes */1234");
}

namespace {

Buf mem(std::string_view s, bool last = false) {
    Buf b = Buf::memory(s);
    b.last_buf = last;
    return b;
}

std::string text_of(Chain& c) {
    std::string s;
    for (Buf& b : c) s.append(b.view());
    return s;
}

}  // namespace

TEST_CASE("http/range: the slicer cuts memory buffers across calls") {
    RangeSlicer s({3, 9});
    Chain in, out;
    in.push(mem("0123"));
    in.push(mem("45"));
    s.run(in, out);
    CHECK(in.empty());
    CHECK(text_of(out) == "345");
    CHECK_FALSE(out.last());
    CHECK_FALSE(s.done());
    out.clear();
    in.push(mem("6789abc"));
    in.push(mem("def", true));
    s.run(in, out);
    CHECK(text_of(out) == "678");
    CHECK(out.last());
    CHECK(s.done());
    out.clear();
    in.push(mem("more", true));
    s.run(in, out);
    CHECK(out.empty());
}

TEST_CASE("http/range: the slicer trims a file buffer without reading it") {
    RangeSlicer s({90, 100});
    Chain in, out;
    Buf b = Buf::file(7, 0, 100);
    b.last_buf = true;
    in.push(std::move(b));
    s.run(in, out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].fd == 7);
    CHECK(out[0].file_pos == 90);
    CHECK(out[0].file_last == 100);
    CHECK(out[0].last_buf);
}

TEST_CASE("http/range: a body shorter than the range still ends") {
    RangeSlicer s({10, 20});
    Chain in, out;
    in.push(mem("0123456789ab", true));
    s.run(in, out);
    CHECK(text_of(out) == "ab");
    CHECK(out.last());
    CHECK(s.done());

    RangeSlicer t({50, 60});
    Chain in2, out2;
    in2.push(mem("short", true));
    t.run(in2, out2);
    REQUIRE(out2.size() == 1);
    CHECK(out2[0].empty());
    CHECK(out2.last());
}

TEST_CASE("http/range: every satisfiable range, in the order asked; then ordered and merged") {
    std::pmr::vector<ByteRange> all;
    auto r = parse_range("bytes=0-9, -10, 1000-, 10-19", 100, UINT64_MAX, &all);
    CHECK(r.verdict == RangeVerdict::Satisfiable);
    CHECK(r.count == 3);
    CHECK(all == std::pmr::vector<ByteRange>{{0, 10}, {90, 100}, {10, 20}});
    gatehouse::http::order_ranges(all);
    // Adjacent ranges stay apart: only overlaps merge.
    CHECK(all == std::pmr::vector<ByteRange>{{0, 10}, {10, 20}, {90, 100}});

    std::pmr::vector<ByteRange> o{{40, 50}, {5, 10}, {45, 60}, {0, 6}, {58, 59}};
    gatehouse::http::order_ranges(o);
    CHECK(o == std::pmr::vector<ByteRange>{{0, 10}, {40, 60}});
}

TEST_CASE("http/range: multipart parts are cut from buffers of any shape") {
    const std::vector<ByteRange> ranges{{1, 3}, {5, 6}, {8, 12}};
    const std::vector<std::string_view> heads{"<a>", "<b>", "<c>"};
    // One byte a buffer, a buffer a call, and the whole body at once.
    for (size_t piece : {size_t{1}, size_t{3}, size_t{16}}) {
        CAPTURE(piece);
        gatehouse::http::MultipartSlicer s(ranges, heads, "<end>");
        const std::string body = "0123456789abcdef";
        std::string got;
        bool ended = false;
        for (size_t at = 0; at < body.size(); at += piece) {
            Chain in, out;
            const bool last = at + piece >= body.size();
            in.push(mem(std::string_view(body).substr(at, piece), last));
            s.run(in, out);
            CHECK(in.empty());
            got += text_of(out);
            if (out.last()) {
                CHECK_FALSE(ended);
                ended = true;
            }
        }
        CHECK(got == "<a>12<b>5<c>89ab<end>");
        CHECK(ended);
        CHECK(s.done());
    }
}

TEST_CASE("http/range: multipart parts of one file buffer point into it") {
    const std::vector<ByteRange> ranges{{0, 10}, {90, 100}};
    const std::vector<std::string_view> heads{"H1", "H2"};
    gatehouse::http::MultipartSlicer s(ranges, heads, "T");
    Chain in, out;
    Buf b = Buf::file(7, 0, 100);
    b.last_buf = true;
    in.push(std::move(b));
    s.run(in, out);
    REQUIRE(out.size() == 5);
    CHECK(out[0].view() == "H1");
    CHECK((out[1].fd == 7 && out[1].file_pos == 0 && out[1].file_last == 10 && !out[1].last_buf));
    CHECK(out[2].view() == "H2");
    CHECK((out[3].fd == 7 && out[3].file_pos == 90 && out[3].file_last == 100 && !out[3].last_buf));
    CHECK((out[4].view() == "T" && out[4].last_buf));
}

TEST_CASE("http/range: a body shorter than the last part ends the multipart body") {
    const std::vector<ByteRange> ranges{{0, 2}, {50, 60}};
    const std::vector<std::string_view> heads{"H1", "H2"};
    gatehouse::http::MultipartSlicer s(ranges, heads, "T");
    Chain in, out;
    in.push(mem("0123", true));
    s.run(in, out);
    CHECK(text_of(out) == "H101");
    CHECK(out.last());
    CHECK(s.done());
}
