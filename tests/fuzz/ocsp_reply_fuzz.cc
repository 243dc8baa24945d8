// libFuzzer target for the reading of an OCSP responder's reply
// (src/http/ocsp_reply.h), over the HTTP/1 response parser.
//
// Input: one byte seeding the split points, then the bytes the responder
// sent (the end of the input is its close). Checked for every input:
// - fed whole, one byte at a time, or in pieces, the outcome, the body
//   and the error are the same;
// - a body lies inside the bytes received, after a head;
// - Done and Error stick; an error has a message;
// - at the close, nothing is left undecided.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/assert.h"
#include "http/ocsp_reply.h"

using namespace gatehouse::http;

namespace {

struct Outcome {
    ResponderReply::State state = ResponderReply::State::NeedMore;
    std::string body;
    std::string error;
    bool operator==(const Outcome&) const = default;
};

// Feeds `in` growing by pieces that `next_piece` sizes, copied each time
// into a new buffer (as a connection's may move), then the close.
template <class Next>
Outcome feed(std::string_view in, Next next_piece) {
    ResponderReply r;
    std::string buf;
    size_t pos = 0;
    auto check = [&](ResponderReply::State s, const std::string& b) {
        if (s == ResponderReply::State::Done) {
            GH_CHECK(r.body().data() >= b.data() && r.body().data() + r.body().size() <= b.data() + b.size());
        }
        if (s == ResponderReply::State::Error) GH_CHECK(!r.error().empty());
        return s;
    };
    while (pos < in.size()) {
        std::string next = buf + std::string(in.substr(pos, next_piece()));
        pos = next.size();
        buf.swap(next);
        ResponderReply::State s = check(r.feed(buf, false), buf);
        if (s != ResponderReply::State::NeedMore) {
            GH_CHECK(r.feed(buf, true) == s);  // sticky
            return {s, std::string(s == ResponderReply::State::Done ? r.body() : ""), r.error()};
        }
    }
    ResponderReply::State s = check(r.feed(buf, true), buf);
    GH_CHECK(s != ResponderReply::State::NeedMore);
    return {s, std::string(s == ResponderReply::State::Done ? r.body() : ""), r.error()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const uint8_t seed = data[0];
    const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

    const Outcome whole = feed(in, [&] { return in.size(); });
    GH_CHECK(whole.body.size() <= in.size());
    // A body follows a head, which ends with an empty line.
    if (whole.state == ResponderReply::State::Done) {
        const size_t at = in.find(whole.body, in.find('\n') + 1);
        GH_CHECK(at != std::string_view::npos && in.substr(0, at).find('\n') != std::string_view::npos);
    }
    GH_CHECK(feed(in, [] { return size_t{1}; }) == whole);
    uint32_t x = seed * 2654435761u + 1;
    GH_CHECK(feed(in, [&] {
                 x = x * 1103515245u + 12345u;
                 return size_t{1} + (x >> 16) % 64;
             }) == whole);
    return 0;
}
