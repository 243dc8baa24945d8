// libFuzzer target for parse_traceparent (src/http/trace_context.h), which
// reads a field any client sends. Checked for every input: no read past
// the value (ASan), and an accepted value formats back to itself when it
// is a version-00 value (a later version formats as its first 55 bytes
// with version 00).
#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/assert.h"
#include "http/trace_context.h"

using namespace gatehouse::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view v(reinterpret_cast<const char*>(data), size);
    auto tp = parse_traceparent(v);
    if (!tp) return 0;
    char out[kTraceparentLen];
    format_traceparent(*tp, out);
    GH_CHECK(std::memcmp(out + 2, v.data() + 2, kTraceparentLen - 2) == 0);
    if (v.substr(0, 2) == "00") GH_CHECK(v.size() == kTraceparentLen && std::memcmp(out, v.data(), 2) == 0);
    return 0;
}
