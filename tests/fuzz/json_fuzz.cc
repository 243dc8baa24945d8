// libFuzzer target for the JSON reader and writer (src/core/json.h).
//
// Input: one byte choosing the limits, then the text. Checked for every
// input:
// - parsing never reads past the input nor recurses past max_depth (ASan
//   and the stack bound), and an error names an offset inside the input;
// - a parsed value, written back with the Writer, parses again to the
//   same value (the writer escapes whatever strings the reader allows),
//   and writing that again gives the same bytes.
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/assert.h"
#include "core/json.h"

using namespace gatehouse::json;

namespace {

void write(Writer& w, const Value& v) {
    switch (v.type) {
        case Type::Null: w.null(); break;
        case Type::Bool: w.boolean(v.boolean); break;
        case Type::Number:
            // Integers exactly; other numbers are compared by type only
            // (the writer has no double output: the API writes none).
            if (v.integer) w.number(v.i);
            else w.number(0);
            break;
        case Type::String: w.string(v.string); break;
        case Type::Array:
            w.begin_array();
            for (const Value& i : v.items) write(w, i);
            w.end_array();
            break;
        case Type::Object:
            w.begin_object();
            for (const auto& [k, m] : v.members) {
                w.key(k);
                write(w, m);
            }
            w.end_object();
            break;
    }
}

bool same(const Value& a, const Value& b) {
    if (a.type != b.type) return false;
    switch (a.type) {
        case Type::Null: return true;
        case Type::Bool: return a.boolean == b.boolean;
        case Type::Number: return !a.integer || (b.integer && a.i == b.i);
        case Type::String: return a.string == b.string;
        case Type::Array:
            if (a.items.size() != b.items.size()) return false;
            for (size_t i = 0; i < a.items.size(); ++i)
                if (!same(a.items[i], b.items[i])) return false;
            return true;
        case Type::Object:
            if (a.members.size() != b.members.size()) return false;
            for (size_t i = 0; i < a.members.size(); ++i)
                if (a.members[i].first != b.members[i].first || !same(a.members[i].second, b.members[i].second))
                    return false;
            return true;
    }
    return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    Limits l;
    l.max_depth = 1 + (data[0] & 31);
    l.max_values = (data[0] & 32) ? 16 : 4096;
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    auto v = parse(in, l);
    if (!v) {
        const std::string& m = v.message();
        GH_CHECK(!m.empty());
        const size_t at = m.rfind(" at offset ");
        if (at != std::string::npos) {
            size_t off = 0;
            const char* b = m.data() + at + 11;
            auto r = std::from_chars(b, m.data() + m.size(), off);
            GH_CHECK(r.ec == std::errc() && off <= in.size());
        }
        return 0;
    }
    Writer w;
    write(w, *v);
    Limits loose;
    loose.max_size = w.out().size() + 1;
    loose.max_depth = l.max_depth;
    loose.max_values = l.max_values;
    auto again = parse(w.out(), loose);
    GH_CHECK(again);
    GH_CHECK(same(*v, *again));
    Writer w2;
    write(w2, *again);
    GH_CHECK(w2.out() == w.out());
    return 0;
}
