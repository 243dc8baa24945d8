// libFuzzer target for the Range field (src/http/range.h), which any client
// sends. The input's first two bytes give the representation's length (up
// to 64 KiB) and the size of the body's buffers; the rest is the field.
// Checked for every input:
//   - every range parse_range() reports lies inside the representation,
//     is not empty, and they add up to no more than its length; `first`
//     and `count` agree with the list;
//   - order_ranges() leaves them ascending and disjoint, covering the same
//     bytes;
//   - MultipartSlicer, fed the body in buffers of that size, gives each
//     part's head, its bytes, and the tail, then last_buf once.
#include <cstdint>
#include <memory_resource>
#include <string>
#include <string_view>
#include <vector>

#include "core/assert.h"
#include "core/buf.h"
#include "http/range.h"

using namespace gatehouse;
using namespace gatehouse::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const uint64_t length = static_cast<uint64_t>(data[0]) << 8 | data[1];
    const size_t piece = 1 + data[1] % 97;
    std::string_view field(reinterpret_cast<const char*>(data) + 2, size - 2);

    std::pmr::vector<ByteRange> all;
    RangeRequest rr = parse_range(field, length, UINT64_MAX, &all);
    if (rr.verdict != RangeVerdict::Satisfiable) {
        GH_CHECK(rr.verdict != RangeVerdict::Ignore || rr.count <= all.size());
        return 0;
    }
    GH_CHECK(rr.count == all.size() && !all.empty() && all.front() == rr.first);
    uint64_t total = 0;
    std::vector<bool> covered(length, false);
    for (const ByteRange& r : all) {
        GH_CHECK(r.start < r.end && r.end <= length);
        total += r.size();
        for (uint64_t i = r.start; i < r.end; ++i) covered[i] = true;
    }
    GH_CHECK(total <= length);

    order_ranges(all);
    std::vector<bool> again(length, false);
    for (size_t i = 0; i < all.size(); ++i) {
        GH_CHECK(all[i].start < all[i].end && all[i].end <= length);
        if (i > 0) GH_CHECK(all[i - 1].end <= all[i].start);
        for (uint64_t j = all[i].start; j < all[i].end; ++j) again[j] = true;
    }
    GH_CHECK(covered == again);

    std::string body(length, '\0');
    for (uint64_t i = 0; i < length; ++i) body[i] = static_cast<char>('a' + i % 26);
    std::vector<std::string> head_text;
    for (size_t i = 0; i < all.size(); ++i) head_text.push_back("<" + std::to_string(i) + ">");
    std::vector<std::string_view> heads(head_text.begin(), head_text.end());
    std::string want;
    for (size_t i = 0; i < all.size(); ++i) want += head_text[i] + body.substr(all[i].start, all[i].size());
    want += "<end>";

    MultipartSlicer s(all, heads, "<end>");
    std::string got;
    int lasts = 0;
    for (uint64_t at = 0; at < length; at += piece) {
        Chain in, out;
        Buf b = Buf::memory(std::string_view(body).substr(at, piece));
        b.last_buf = at + piece >= length;
        in.push(std::move(b));
        s.run(in, out);
        for (Buf& o : out) {
            got.append(o.view());
            lasts += o.last_buf;
        }
    }
    GH_CHECK(got == want && lasts == 1 && s.done());
    return 0;
}
