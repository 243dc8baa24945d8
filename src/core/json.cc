// RFC 8259 parsing: a recursive descent whose depth is bounded by
// Limits::max_depth, checked before each descent, so that the stack a
// hostile input can make us use is bounded too.
#include "core/json.h"

#include <charconv>
#include <cmath>
#include <cstring>

#include "core/str.h"

namespace gatehouse::json {

namespace {

class Parser {
public:
    Parser(std::string_view in, const Limits& l) : in_(in), limits_(l) {}

    Result<Value> run() {
        if (in_.size() > limits_.max_size)
            return make_error("body larger than " + std::to_string(limits_.max_size) + " bytes");
        Value v;
        skip_ws();
        if (!value(v, 0)) return make_error(err_);
        skip_ws();
        if (pos_ != in_.size()) {
            fail("unexpected data after the value");
            return make_error(err_);
        }
        return v;
    }

private:
    std::string_view in_;
    const Limits& limits_;
    size_t pos_ = 0;
    size_t values_ = 0;
    std::string err_;

    bool fail(const std::string& why) {
        if (err_.empty()) err_ = why + " at offset " + std::to_string(pos_);
        return false;
    }
    bool unexpected() {
        if (pos_ >= in_.size()) return fail("unexpected end of data");
        const auto c = static_cast<unsigned char>(in_[pos_]);
        if (c >= 0x20 && c < 0x7f) return fail(std::string("unexpected character '") + static_cast<char>(c) + "'");
        char hex[8];
        static constexpr char kDigits[] = "0123456789abcdef";
        hex[0] = '0';
        hex[1] = 'x';
        hex[2] = kDigits[c >> 4];
        hex[3] = kDigits[c & 15];
        return fail("unexpected byte " + std::string(hex, 4));
    }

    void skip_ws() {
        while (pos_ < in_.size() &&
               (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\n' || in_[pos_] == '\r'))
            ++pos_;
    }
    bool eat(char c) {
        if (pos_ < in_.size() && in_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    bool literal(std::string_view word) {
        if (in_.substr(pos_, word.size()) != word) return unexpected();
        pos_ += word.size();
        return true;
    }

    bool value(Value& v, size_t depth) {
        if (++values_ > limits_.max_values)
            return fail("more than " + std::to_string(limits_.max_values) + " values");
        if (pos_ >= in_.size()) return unexpected();
        switch (in_[pos_]) {
            case '{': return object(v, depth + 1);
            case '[': return array(v, depth + 1);
            case '"': v.type = Type::String; return string(v.string);
            case 't': v.type = Type::Bool; v.boolean = true; return literal("true");
            case 'f': v.type = Type::Bool; v.boolean = false; return literal("false");
            case 'n': v.type = Type::Null; return literal("null");
            default: return number(v);
        }
    }

    bool object(Value& v, size_t depth) {
        if (depth > limits_.max_depth) return fail("nesting deeper than " + std::to_string(limits_.max_depth));
        v.type = Type::Object;
        ++pos_;  // '{'
        skip_ws();
        if (eat('}')) return true;
        for (;;) {
            skip_ws();
            if (pos_ >= in_.size() || in_[pos_] != '"') return unexpected();
            const size_t key_at = pos_;
            std::string key;
            if (!string(key)) return false;
            for (const auto& m : v.members)
                if (m.first == key) {
                    pos_ = key_at;
                    return fail("duplicate key " + quote(key));
                }
            skip_ws();
            if (!eat(':')) return unexpected();
            skip_ws();
            v.members.emplace_back(std::move(key), Value());
            if (!value(v.members.back().second, depth)) return false;
            skip_ws();
            if (eat('}')) return true;
            if (!eat(',')) return unexpected();
        }
    }

    bool array(Value& v, size_t depth) {
        if (depth > limits_.max_depth) return fail("nesting deeper than " + std::to_string(limits_.max_depth));
        v.type = Type::Array;
        ++pos_;  // '['
        skip_ws();
        if (eat(']')) return true;
        for (;;) {
            skip_ws();
            v.items.emplace_back();
            if (!value(v.items.back(), depth)) return false;
            skip_ws();
            if (eat(']')) return true;
            if (!eat(',')) return unexpected();
        }
    }

    // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    bool number(Value& v) {
        const size_t start = pos_;
        auto digits = [&] {
            const size_t from = pos_;
            while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
            return pos_ > from;
        };
        eat('-');
        if (pos_ >= in_.size() || in_[pos_] < '0' || in_[pos_] > '9') return unexpected();
        if (in_[pos_] == '0') {
            ++pos_;
            if (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') return fail("leading zero in a number");
        } else {
            digits();
        }
        bool whole = true;
        if (eat('.')) {
            whole = false;
            if (!digits()) return unexpected();
        }
        if (pos_ < in_.size() && (in_[pos_] == 'e' || in_[pos_] == 'E')) {
            whole = false;
            ++pos_;
            if (!eat('+')) eat('-');
            if (!digits()) return unexpected();
        }
        const char* b = in_.data() + start;
        const char* e = in_.data() + pos_;
        v.type = Type::Number;
        if (whole) {
            int64_t i = 0;
            auto r = std::from_chars(b, e, i);
            if (r.ec == std::errc() && r.ptr == e) {
                v.integer = true;
                v.i = i;
                v.number = static_cast<double>(i);
                return true;
            }
        }
        double d = 0;
        auto r = std::from_chars(b, e, d);
        // Too large or too small for a double: refused rather than rounded
        // to infinity or zero.
        if (r.ptr != e || r.ec != std::errc() || !std::isfinite(d)) {
            pos_ = start;
            return fail("number out of range");
        }
        v.number = d;
        return true;
    }

    bool hex4(uint32_t& out) {
        out = 0;
        for (int k = 0; k < 4; ++k) {
            if (pos_ >= in_.size()) return unexpected();
            const int h = hex_value(in_[pos_]);
            if (h < 0) return unexpected();
            out = out << 4 | static_cast<uint32_t>(h);
            ++pos_;
        }
        return true;
    }
    static void put_utf8(std::string& s, uint32_t cp) {
        if (cp < 0x80) {
            s += static_cast<char>(cp);
        } else if (cp < 0x800) {
            s += static_cast<char>(0xc0 | cp >> 6);
            s += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            s += static_cast<char>(0xe0 | cp >> 12);
            s += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
            s += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            s += static_cast<char>(0xf0 | cp >> 18);
            s += static_cast<char>(0x80 | (cp >> 12 & 0x3f));
            s += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
            s += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }

    // One raw UTF-8 sequence starting at pos_ (a lead byte >= 0x80),
    // checked as RFC 3629 says: shortest form, no surrogates, <= U+10FFFF.
    bool utf8(std::string& out) {
        const auto b0 = static_cast<unsigned char>(in_[pos_]);
        size_t n;
        uint32_t cp, min;
        if (b0 >= 0xc2 && b0 <= 0xdf) n = 1, cp = b0 & 0x1f, min = 0x80;
        else if (b0 >= 0xe0 && b0 <= 0xef) n = 2, cp = b0 & 0x0f, min = 0x800;
        else if (b0 >= 0xf0 && b0 <= 0xf4) n = 3, cp = b0 & 0x07, min = 0x10000;
        else return fail("invalid UTF-8");
        if (pos_ + n >= in_.size()) return fail("invalid UTF-8");
        for (size_t k = 1; k <= n; ++k) {
            const auto b = static_cast<unsigned char>(in_[pos_ + k]);
            if ((b & 0xc0) != 0x80) return fail("invalid UTF-8");
            cp = cp << 6 | (b & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return fail("invalid UTF-8");
        out.append(in_.data() + pos_, n + 1);
        pos_ += n + 1;
        return true;
    }

    bool string(std::string& out) {
        ++pos_;  // '"'
        for (;;) {
            if (pos_ >= in_.size()) return fail("unterminated string");
            const auto c = static_cast<unsigned char>(in_[pos_]);
            if (c == '"') {
                ++pos_;
                return true;
            }
            if (c < 0x20) return fail("control character in a string");
            if (c >= 0x80) {
                if (!utf8(out)) return false;
                continue;
            }
            if (c != '\\') {
                out += static_cast<char>(c);
                ++pos_;
                continue;
            }
            ++pos_;
            if (pos_ >= in_.size()) return fail("unterminated string");
            const char e = in_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    const size_t at = pos_ - 2;
                    uint32_t cp;
                    if (!hex4(cp)) return false;
                    if (cp >= 0xdc00 && cp <= 0xdfff) {
                        pos_ = at;
                        return fail("unpaired surrogate");
                    }
                    if (cp >= 0xd800 && cp <= 0xdbff) {
                        uint32_t lo;
                        if (in_.substr(pos_, 2) != "\\u") {
                            pos_ = at;
                            return fail("unpaired surrogate");
                        }
                        pos_ += 2;
                        if (!hex4(lo)) return false;
                        if (lo < 0xdc00 || lo > 0xdfff) {
                            pos_ = at;
                            return fail("unpaired surrogate");
                        }
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    }
                    put_utf8(out, cp);
                    break;
                }
                default: --pos_; return fail("invalid escape");
            }
        }
    }
};

}  // namespace

Value::Value() = default;
Value::~Value() = default;
Value::Value(const Value&) = default;
Value::Value(Value&&) noexcept = default;
Value& Value::operator=(const Value&) = default;
Value& Value::operator=(Value&&) noexcept = default;

const Value* Value::find(std::string_view key) const {
    for (const auto& m : members)
        if (m.first == key) return &m.second;
    return nullptr;
}

Result<Value> parse(std::string_view text, const Limits& limits) { return Parser(text, limits).run(); }

std::string quote(std::string_view s) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    out += "\\u00";
                    out += kDigits[c >> 4];
                    out += kDigits[c & 15];
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
    return out;
}

void Writer::before_value() {
    if (after_key_) {
        after_key_ = false;
        return;
    }
    if (!nonempty_.empty()) {
        if (nonempty_.back()) out_ += ',';
        nonempty_.back() = true;
    }
}

Writer& Writer::begin_object() {
    before_value();
    out_ += '{';
    nonempty_.push_back(false);
    return *this;
}

Writer& Writer::end_object() {
    GH_ASSERT(!nonempty_.empty() && !after_key_);
    nonempty_.pop_back();
    out_ += '}';
    return *this;
}

Writer& Writer::begin_array() {
    before_value();
    out_ += '[';
    nonempty_.push_back(false);
    return *this;
}

Writer& Writer::end_array() {
    GH_ASSERT(!nonempty_.empty() && !after_key_);
    nonempty_.pop_back();
    out_ += ']';
    return *this;
}

Writer& Writer::key(std::string_view k) {
    GH_ASSERT(!nonempty_.empty() && !after_key_);
    if (nonempty_.back()) out_ += ',';
    nonempty_.back() = true;
    out_ += quote(k);
    out_ += ':';
    after_key_ = true;
    return *this;
}

Writer& Writer::string(std::string_view s) {
    before_value();
    out_ += quote(s);
    return *this;
}

Writer& Writer::number(int64_t v) {
    before_value();
    out_ += std::to_string(v);
    return *this;
}

Writer& Writer::unsigned_number(uint64_t v) {
    before_value();
    out_ += std::to_string(v);
    return *this;
}

Writer& Writer::boolean(bool v) {
    before_value();
    out_ += v ? "true" : "false";
    return *this;
}

Writer& Writer::null() {
    before_value();
    out_ += "null";
    return *this;
}

}  // namespace gatehouse::json
