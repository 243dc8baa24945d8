// libFuzzer target for the HTTP/2 request head (src/http/v2/request_head.h)
// and the preface check in front of nghttp2 (match_preface): whatever
// fields a client sends (nghttp2 has decoded them, not necessarily
// checked them all), the builder stays within its bounds and finish()
// either refuses the head or gives views that lie in its arena, a request
// line that names the method, and a Host when an authority was given.
//
// Input: NUL-separated name/value pairs (a name starting with '!' goes
// through add_unchecked()); the first byte picks the limits.
#include <cstdint>
#include <memory_resource>
#include <string_view>

#include "core/assert.h"
#include "http/v2/connection.h"
#include "http/v2/request_head.h"

using namespace gatehouse::http;
using namespace gatehouse::http::v2;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    const Preface p = match_preface(in);
    GH_CHECK(p != Preface::Full || in.substr(0, kPreface.size()) == kPreface);
    if (in.empty()) return 0;
    const size_t max_bytes = 64u << (static_cast<uint8_t>(in[0]) & 7);
    const size_t max_fields = 1 + (static_cast<uint8_t>(in[0]) >> 3);
    in.remove_prefix(1);
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, max_bytes, max_fields);
    size_t bytes = 0;
    bool refused = false;
    while (!in.empty()) {
        size_t z = in.find('\0');
        std::string_view name = in.substr(0, z);
        in.remove_prefix(z == std::string_view::npos ? in.size() : z + 1);
        z = in.find('\0');
        std::string_view value = in.substr(0, z);
        in.remove_prefix(z == std::string_view::npos ? in.size() : z + 1);
        // A name starting with '!' stands for a field nghttp2 found
        // invalid and handed to add_unchecked() (its name without the '!').
        const bool unchecked = !name.empty() && name[0] == '!';
        if (unchecked) name.remove_prefix(1);
        bytes += name.size() + value.size() + 32;
        if (!(unchecked ? b.add_unchecked(name, value) : b.add(name, value))) refused = true;
        GH_CHECK(!refused || b.too_large());
    }
    GH_CHECK(b.too_large() == refused);
    GH_CHECK(!b.too_large() || b.too_many() || bytes > max_bytes);
    // A bad field makes the head refused with a reason, never half-kept.
    GH_CHECK(b.bad().empty() || b.bad().starts_with("client sent "));
    RequestHead h;
    std::string_view line, reason;
    if (!b.finish(h, line, reason)) {
        GH_CHECK(!reason.empty());
        return 0;
    }
    GH_CHECK(line.substr(0, b.method().size()) == b.method());
    GH_CHECK(line.size() >= 9 && line.substr(line.size() - 9) == " HTTP/2.0");
    if (!b.authority().empty()) GH_CHECK(h.host == b.authority());
    for (const HeaderField& f : h.headers) GH_CHECK(f.name.empty() || f.name[0] != ':');
    return 0;
}
