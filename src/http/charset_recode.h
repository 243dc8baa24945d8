// The pure part of the charset filter [nginx ngx_http_charset_module]: the
// table of one "charset_map" block and a streaming recoder over it.
//
// A CharsetMap is what "charset_map A B { ... }" describes: rows "XX YY"
// that map byte XX of charset A to byte YY of charset B, or, when B is
// "utf-8", to the UTF-8 sequence whose bytes YY.. are given in hex (one
// character of the Basic Multilingual Plane, as nginx's conf/koi-utf and
// conf/win-utf write them). The map works both ways: A to B and B to A.
// Bytes below 0x80 map to themselves unless a row says otherwise; a byte
// from 0x80 up with no row becomes "?" [nginx].
//
// A Recoder turns a body in one charset into the other, one piece at a
// time: a UTF-8 sequence may be split across pieces (its state is a few
// integers, never a copy of the input), and run() writes into the caller's
// buffer and stops when that has less than kMaxOut bytes of room, so the
// caller bounds the memory whatever the input. From UTF-8, a character
// the map lacks becomes the HTML reference "&#N;" (N decimal), and an
// invalid or truncated sequence becomes "?" [nginx; one "?" for each
// maximal ill-formed subpart, the Unicode 15 recommendation, 3.9].
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gatehouse::http {

class CharsetMap {
public:
    // utf8: the second charset is "utf-8".
    explicit CharsetMap(bool utf8);

    bool utf8() const { return utf8_; }

    // One row of the block: two hex codes, as written. The error is the
    // message for the config ("invalid value \"...\"").
    Status add(std::string_view from, std::string_view to);

    // The first charset's byte b in the second: 8-bit maps.
    uint8_t forward(uint8_t b) const { return fwd_[b]; }
    // The second charset's byte b in the first: 8-bit maps.
    uint8_t backward(uint8_t b) const { return back_[b]; }
    // The first charset's byte b in UTF-8: {length, bytes...} (utf8 maps).
    const std::array<uint8_t, 4>& to_utf8(uint8_t b) const { return to_utf8_[b]; }
    // The byte for Unicode code point cp (utf8 maps), or -1 when the map
    // has none.
    int from_utf8(uint32_t cp) const;

private:
    bool utf8_;
    std::array<uint8_t, 256> fwd_{};
    std::array<uint8_t, 256> back_{};
    std::array<std::array<uint8_t, 4>, 256> to_utf8_{};
    // Code points 0..0xFFFF in pages of 256: page p's byte for cp
    // (p << 8 | i) at [i], 0 for none (a row cannot map to NUL from
    // above 0x7F). Pages no row touches stay null.
    std::array<std::unique_ptr<std::array<uint8_t, 256>>, 256> pages_;
};

class Recoder {
public:
    enum class Kind : uint8_t {
        Bytes,     // 8-bit to 8-bit: same length
        ToUtf8,    // 8-bit to UTF-8
        FromUtf8,  // UTF-8 to 8-bit
    };
    // The most one input byte can add to the output: "?" for a sequence
    // it cuts short, then "&#1114111;".
    static constexpr size_t kMaxOut = 11;

    // `map` must outlive the Recoder (both: the configuration
    // generation). forward: from the map's first charset to its second.
    Recoder(const CharsetMap& map, bool forward);

    Kind kind() const { return kind_; }
    // Whether the output may differ in length from the input.
    bool changes_length() const { return kind_ != Kind::Bytes; }

    // Whether `in`, recoded from the current state, would come out as
    // it is: no byte changes and no UTF-8 sequence is pending before or
    // after it. Such a piece may be passed on untouched.
    bool passes_unchanged(std::string_view in) const;

    struct Step {
        size_t consumed = 0;  // bytes of `in` used
        size_t produced = 0;  // bytes written to `out`
    };
    // Recodes `in` into `out` until `in` is used up or `out` has less
    // than kMaxOut bytes of room left.
    Step run(std::string_view in, std::span<char> out);

    // The end of the body: a UTF-8 sequence cut short becomes "?".
    // Writes at most one byte to `out` (which has room for it); returns
    // how many.
    size_t finish(std::span<char> out);

private:
    // Writes the byte, or the reference, for code point cp at p.
    char* put_char(uint32_t cp, char* p) const;

    const CharsetMap* map_;
    Kind kind_;
    bool forward_;
    // UTF-8 decoding state: continuation bytes still expected, the code
    // point so far, and the range the next byte must fall in.
    uint8_t need_ = 0;
    uint8_t lo_ = 0x80;
    uint8_t hi_ = 0xBF;
    uint32_t cp_ = 0;
};

}  // namespace gatehouse::http
