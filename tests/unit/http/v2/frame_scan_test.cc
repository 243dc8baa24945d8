#include "http/v2/frame_scan.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace gatehouse::http::v2;

namespace {

std::string frame(uint32_t length, uint8_t type, uint8_t flags, uint32_t sid) {
    std::string f;
    f += static_cast<char>(length >> 16);
    f += static_cast<char>(length >> 8);
    f += static_cast<char>(length);
    f += static_cast<char>(type);
    f += static_cast<char>(flags);
    f += static_cast<char>(sid >> 24);
    f += static_cast<char>(sid >> 16);
    f += static_cast<char>(sid >> 8);
    f += static_cast<char>(sid);
    f.append(length, 'p');
    return f;
}

std::vector<FrameHeader> scan(const std::string& bytes, size_t skip, size_t piece) {
    FrameScan s(skip);
    std::vector<FrameHeader> seen;
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    for (size_t at = 0; at < bytes.size(); at += piece)
        s.feed(p + at, std::min(piece, bytes.size() - at), [&](const FrameHeader& h) { seen.push_back(h); });
    return seen;
}

}  // namespace

TEST_CASE("http/v2/frame_scan: every header once, whatever the pieces") {
    const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const std::string bytes = preface + frame(6, 4, 0, 0) + frame(0, 0, 0, 1) + frame(20, 0, 1, 3) +
                              frame(8, 6, 0, 0) + frame(0, 0, 0, 0x80000005);
    for (size_t piece : {size_t{1}, size_t{5}, size_t{9}, size_t{10}, bytes.size()}) {
        CAPTURE(piece);
        auto seen = scan(bytes, preface.size(), piece);
        REQUIRE(seen.size() == 5);
        CHECK(seen[0].type == 4);
        CHECK(seen[0].length == 6);
        CHECK((seen[1].type == 0 && seen[1].length == 0 && seen[1].stream_id == 1));
        CHECK((seen[2].length == 20 && seen[2].flags == 1 && seen[2].stream_id == 3));
        CHECK(seen[3].type == 6);
        // The reserved bit is not part of the id (RFC 9113 4.1).
        CHECK(seen[4].stream_id == 5);
    }
}

TEST_CASE("http/v2/frame_scan: a payload is skipped, not read as headers") {
    // A DATA payload that looks like a frame header.
    const std::string inner = frame(0, 0, 0, 7);
    std::string bytes = frame(static_cast<uint32_t>(inner.size()), 0, 0, 1).substr(0, 9) + inner + frame(0, 8, 0, 1);
    auto seen = scan(bytes, 0, 4);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].length == 9);
    CHECK(seen[1].type == 8);
    // A header cut short is not reported until its last octet came.
    CHECK(scan(bytes.substr(0, bytes.size() - 1), 0, 3).size() == 1);
}
