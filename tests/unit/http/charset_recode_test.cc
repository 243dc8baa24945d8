#include "http/charset_recode.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace gatehouse::http;
using namespace std::literals;

namespace {

// koi8-r's small a, b and yu, as nginx's conf/koi-utf maps them.
CharsetMap koi_utf() {
    CharsetMap m(true);
    CHECK(m.add("C1", "D0B0"));  // а U+0430
    CHECK(m.add("C2", "D0B1"));  // б U+0431
    CHECK(m.add("C0", "D18E"));  // ю U+044E
    CHECK(m.add("A4", "E282AC"));  // a 3-byte one: € U+20AC
    return m;
}

// Recodes `pieces` one after the other through an output buffer of
// `room` bytes at a time, as the filter does with its slabs.
std::string recode(Recoder& rec, const std::vector<std::string>& pieces, size_t room = 64) {
    std::string out;
    std::vector<char> buf(room);
    for (const std::string& p : pieces) {
        std::string_view in = p;
        while (!in.empty()) {
            auto step = rec.run(in, buf);
            REQUIRE((step.consumed > 0 || step.produced > 0));
            out.append(buf.data(), step.produced);
            in.remove_prefix(step.consumed);
        }
    }
    out.append(buf.data(), rec.finish(buf));
    return out;
}

std::vector<std::string> bytes_of(std::string_view s) {
    std::vector<std::string> v;
    for (char c : s) v.emplace_back(1, c);
    return v;
}

}  // namespace

TEST_CASE("http/charset_recode: 8-bit rows map both ways, '?' for what no row names") {
    CharsetMap m(false);
    REQUIRE(m.add("58", "59"));
    REQUIRE(m.add("C1", "E0"));
    Recoder fwd(m, true), back(m, false);
    CHECK(fwd.kind() == Recoder::Kind::Bytes);
    CHECK_FALSE(fwd.changes_length());
    CHECK(recode(fwd, {"aX\xC1\xFF"}) == "aY\xE0?");
    CHECK(recode(back, {"aY\xE0\xC1"}) == "aX\xC1?");
    CHECK(fwd.passes_unchanged("plain ascii"));
    CHECK_FALSE(fwd.passes_unchanged("X"));
}

TEST_CASE("http/charset_recode: rows are checked as nginx writes them") {
    CharsetMap m(false);
    CHECK(m.add("0", "ff"));
    CHECK(m.add("00FF", "1"));
    CHECK(m.add("100", "1").error().message == "invalid value \"100\"");
    CHECK(m.add("zz", "1").error().message == "invalid value \"zz\"");
    CHECK(m.add("1", "").error().message == "invalid value \"\"");
    CharsetMap u(true);
    CHECK(u.add("C1", "D0B0"));
    CHECK(u.add("C1", "D0").error().message == "invalid value \"D0\"");            // cut short
    CHECK(u.add("C1", "F09F9880").error().message == "invalid value \"F09F9880\"");  // beyond the BMP
    CHECK(u.add("C1", "C0B0").error().message == "invalid value \"C0B0\"");        // overlong
    CHECK(u.add("C1", "EDA080").error().message == "invalid value \"EDA080\"");    // a surrogate
    CHECK(u.add("C1", "D0B").error().message == "invalid value \"D0B\"");
}

TEST_CASE("http/charset_recode: 8-bit to UTF-8") {
    CharsetMap m = koi_utf();
    Recoder rec(m, true);
    CHECK(rec.kind() == Recoder::Kind::ToUtf8);
    CHECK(rec.changes_length());
    CHECK(recode(rec, {"x\xC1\xC2\xC0\xA4 \xFE"}) == "x\u0430\u0431\u044E\u20AC ?");
    CHECK(rec.passes_unchanged("ascii only"));
    CHECK_FALSE(rec.passes_unchanged("\xC1"));
    CHECK_FALSE(rec.passes_unchanged("\xFE"));  // becomes "?"
}

TEST_CASE("http/charset_recode: UTF-8 to 8-bit, references for what the map lacks") {
    CharsetMap m = koi_utf();
    Recoder rec(m, false);
    CHECK(rec.kind() == Recoder::Kind::FromUtf8);
    CHECK(recode(rec, {"a\u0430\u0431\u044E\u20AC"}) == "a\xC1\xC2\xC0\xA4");
    CHECK(recode(rec, {"\u00E9|\u4E2D|\U0001F600|\U0010FFFF"}) == "&#233;|&#20013;|&#128512;|&#1114111;");
}

TEST_CASE("http/charset_recode: ill-formed UTF-8 becomes '?' and the next byte starts afresh") {
    CharsetMap m = koi_utf();
    Recoder rec(m, false);
    CHECK(recode(rec, {"\x80"}) == "?");              // a stray continuation byte
    CHECK(recode(rec, {"\xC0\xAF"}) == "??");         // C0: never valid
    CHECK(recode(rec, {"\xD0" "A"}) == "?A");         // cut short by ASCII: A is kept
    CHECK(recode(rec, {"\xE0\x80\x80"}) == "???");    // overlong
    CHECK(recode(rec, {"\xED\xA0\x80"}) == "???");    // a surrogate
    CHECK(recode(rec, {"\xF4\x90\x80\x80"}) == "????");  // beyond U+10FFFF
    CHECK(recode(rec, {"\xF5"}) == "?");
    CHECK(recode(rec, {"\xE2\x82"}) == "?");          // truncated at the end of the body
    CHECK(recode(rec, {"\xE2\x82\xD0\xB0"}) == "?\xC1");
}

TEST_CASE("http/charset_recode: a sequence split across pieces, and one-byte pieces") {
    CharsetMap m = koi_utf();
    Recoder rec(m, false);
    CHECK(recode(rec, {"x\xD0", "\xB0y"}) == "x\xC1y");
    CHECK(recode(rec, {"\xE2", "\x82", "\xAC"}) == "\xA4");
    CHECK(recode(rec, {"\xF0\x9F", "\x98\x80"}) == "&#128512;");
    // While a sequence is pending, even ASCII is not passed on as is.
    rec.run("\xD0", std::span<char>());  // no room: nothing taken
    std::vector<char> buf(16);
    auto st = rec.run("\xD0", buf);
    CHECK(st.consumed == 1);
    CHECK(st.produced == 0);
    CHECK_FALSE(rec.passes_unchanged("a"));
    CHECK_FALSE(rec.passes_unchanged(""));
    st = rec.run("\xB0", buf);
    CHECK(std::string(buf.data(), st.produced) == "\xC1");
    CHECK(rec.passes_unchanged("a"));

    std::string text;
    for (int i = 0; i < 2000; ++i) text += "\u0430b\u20AC\U0001F600\u00E9";
    std::string whole = recode(rec, {text});
    CHECK(recode(rec, bytes_of(text)) == whole);
    CHECK(recode(rec, {text}, Recoder::kMaxOut) == whole);  // the smallest room

    Recoder to(m, true);
    std::string koi(3000, '\xC1');
    CHECK(recode(to, bytes_of(koi)) == recode(to, {koi}));
}

TEST_CASE("http/charset_recode: run() stops short of the end of the room") {
    CharsetMap m = koi_utf();
    Recoder rec(m, false);
    std::vector<char> buf(Recoder::kMaxOut + 3);
    std::string in;
    for (int i = 0; i < 25; ++i) in += "\U0001F600";  // "&#128512;" each
    auto st = rec.run(in, buf);
    CHECK(st.produced <= buf.size());
    CHECK(st.consumed < in.size());
    std::vector<char> none(Recoder::kMaxOut - 1);
    CHECK(rec.run(in, none).consumed == 0);
}
