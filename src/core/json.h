// A small, strict JSON reader and a writer (RFC 8259), for the upstream
// API's request and response bodies (src/http/modules/api.cc).
//
// The reader takes untrusted input: it accepts exactly RFC 8259 (no
// comments, no trailing commas, no leading zeros, no NaN, one value and
// nothing after it but whitespace), rejects strings that are not UTF-8
// (surrogates included, written raw or as \u escapes that do not pair),
// rejects an object that names a key twice (which one would count is not
// said by the RFC, so an API must not guess), and bounds what the input
// may cost: its size, its nesting depth and its number of values are
// limits (Limits), checked before anything is allocated for them. The
// message of a failure names the reason and the byte offset, for a 400.
//
// The writer appends compact JSON to a std::string; it escapes strings
// and places the commas, the caller nests begin/end calls correctly
// (checked by GH_ASSERT in debug builds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace gatehouse::json {

enum class Type : uint8_t { Null, Bool, Number, String, Array, Object };

// A parsed value. Owns its strings and children. The special members
// are defined in json.cc, where Value is complete (its vectors hold it).
struct Value {
    Value();
    ~Value();
    Value(const Value&);
    Value(Value&&) noexcept;
    Value& operator=(const Value&);
    Value& operator=(Value&&) noexcept;

    Type type = Type::Null;
    bool boolean = false;
    // Number: its value as a double; `integer` when the text had no
    // fraction or exponent and fits int64_t, then `i` is exact.
    double number = 0;
    bool integer = false;
    int64_t i = 0;
    std::string string;                                   // String
    std::vector<Value> items;                             // Array
    std::vector<std::pair<std::string, Value>> members;   // Object, in input order

    // Object: the member named `key`, or null.
    const Value* find(std::string_view key) const;
    bool is_null() const { return type == Type::Null; }
};

struct Limits {
    size_t max_size = 64 * 1024;  // bytes of input
    size_t max_depth = 16;        // nested arrays/objects; a scalar alone is depth 0
    size_t max_values = 4096;     // values of any kind, keys not counted
};

// Parses `text` whole. Errors read like "unexpected character 'x' at
// offset 12", "nesting deeper than 16 at offset 40", "duplicate key
// \"weight\" at offset 30".
Result<Value> parse(std::string_view text, const Limits& limits = {});

// Compact JSON into `out()`.
class Writer {
public:
    Writer& begin_object();
    Writer& end_object();
    Writer& begin_array();
    Writer& end_array();
    // In an object: the next member's name; a value call must follow.
    Writer& key(std::string_view k);
    Writer& string(std::string_view s);
    Writer& number(int64_t v);
    Writer& unsigned_number(uint64_t v);
    Writer& boolean(bool v);
    Writer& null();

    const std::string& out() const { return out_; }
    std::string take() { return std::move(out_); }

private:
    void before_value();
    std::string out_;
    // One entry per open container: whether a value was written in it.
    std::vector<bool> nonempty_;
    bool after_key_ = false;
};

// `s` as a JSON string literal, quotes included.
std::string quote(std::string_view s);

}  // namespace gatehouse::json
