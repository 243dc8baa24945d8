// Tests of src/http/accept_encoding.h: one row per parsing rule (tokens,
// q-values, "*", identity, x-gzip, case, whitespace, malformed parts) and
// per choice rule (q=0, "*", ties, identity;q=0, nothing enabled).
#include "http/accept_encoding.h"

#include <doctest/doctest.h>

using namespace gatehouse::http;

namespace {

int16_t gz(std::string_view f) { return parse_accept_encoding(f).of(Coding::Gzip); }

// The chosen coding's name, "" for the identity body.
std::string_view pick(std::string_view field, CodingSet enabled = {Coding::Zstd, Coding::Br, Coding::Gzip},
                      const CodingOrder& order = kDefaultCodingOrder) {
    auto c = choose_coding(parse_accept_encoding(field), enabled, order);
    return c ? coding_name(*c) : std::string_view{};
}

}  // namespace

TEST_CASE("http/accept_encoding: tokens and their default weight") {
    auto ae = parse_accept_encoding("gzip, deflate, br, zstd");
    CHECK(ae.of(Coding::Gzip) == 1000);
    CHECK(ae.of(Coding::Br) == 1000);
    CHECK(ae.of(Coding::Zstd) == 1000);
    CHECK(ae.identity == kNotNamed);
    CHECK(ae.any == kNotNamed);
    CHECK(gz("deflate") == kNotNamed);
    CHECK(gz("") == kNotNamed);
    CHECK(gz("gzipx") == kNotNamed);   // another token
    CHECK(gz("xgzip") == kNotNamed);
    CHECK(gz("gzip,deflate") == 1000);  // the common browser form
}

TEST_CASE("http/accept_encoding: q-values in thousandths") {
    CHECK(gz("gzip;q=1") == 1000);
    CHECK(gz("gzip;q=1.") == 1000);
    CHECK(gz("gzip;q=1.000") == 1000);
    CHECK(gz("gzip;q=0.5") == 500);
    CHECK(gz("gzip;q=0.05") == 50);
    CHECK(gz("gzip;q=0.001") == 1);
    CHECK(gz("gzip;q=0.123") == 123);
    CHECK(gz("gzip;q=0") == 0);
    CHECK(gz("gzip;q=0.") == 0);
    CHECK(gz("gzip;q=0.000") == 0);
    CHECK(gz("gzip; q=0") == 0);     // nginx's gzip.t-style spacing
    CHECK(gz("gzip ; q=0.5") == 500);
    CHECK(gz("gzip;Q=0.5") == 500);
    CHECK(gz("gzip;\tq=0.5\t") == 500);
}

TEST_CASE("http/accept_encoding: a malformed weight drops the element") {
    CHECK(gz("gzip;q=1.001") == kNotNamed);   // above 1
    CHECK(gz("gzip;q=1.5") == kNotNamed);
    CHECK(gz("gzip;q=2") == kNotNamed);
    CHECK(gz("gzip;q=0.0001") == kNotNamed);  // four decimals
    CHECK(gz("gzip;q=") == kNotNamed);
    CHECK(gz("gzip;q") == kNotNamed);
    CHECK(gz("gzip;") == kNotNamed);
    CHECK(gz("gzip;q = 0.5") == kNotNamed);   // no whitespace around "="
    CHECK(gz("gzip;q=.5") == kNotNamed);
    CHECK(gz("gzip;q=0.5x") == kNotNamed);
    CHECK(gz("gzip;q=-1") == kNotNamed);
    CHECK(gz("gzip;level=1") == kNotNamed);   // a parameter other than q
    CHECK(gz("gzip;q=0.5;x=1") == kNotNamed);  // a second parameter
    CHECK(gz("gzip q=0.5") == kNotNamed);
    // The other elements still count.
    auto ae = parse_accept_encoding("gzip;q=bad, br;q=0.4");
    CHECK(ae.of(Coding::Gzip) == kNotNamed);
    CHECK(ae.of(Coding::Br) == 400);
}

TEST_CASE("http/accept_encoding: case, whitespace, empty elements, x-gzip") {
    CHECK(gz("GZIP") == 1000);
    CHECK(gz("GZip;Q=0.2") == 200);
    CHECK(gz("  gzip  ") == 1000);
    CHECK(gz("\tgzip\t,") == 1000);
    CHECK(gz(",, ,gzip;q=0.3,,") == 300);
    CHECK(gz("x-gzip") == 1000);
    CHECK(gz("X-Gzip;q=0.7") == 700);
    CHECK(parse_accept_encoding("BR").of(Coding::Br) == 1000);
    CHECK(parse_accept_encoding("ZStd;q=0.9").of(Coding::Zstd) == 900);
}

TEST_CASE("http/accept_encoding: the first mention wins, across field lines") {
    CHECK(gz("gzip;q=0, gzip") == 0);
    CHECK(gz("gzip, gzip;q=0") == 1000);
    CHECK(gz("x-gzip;q=0.2, gzip") == 200);
    AcceptEncoding ae;
    parse_accept_encoding("br;q=0.5", ae);
    parse_accept_encoding("gzip, br", ae);  // a second Accept-Encoding line
    CHECK(ae.of(Coding::Br) == 500);
    CHECK(ae.of(Coding::Gzip) == 1000);
}

TEST_CASE("http/accept_encoding: identity and * are kept") {
    auto ae = parse_accept_encoding("identity;q=0, *;q=0.3");
    CHECK(ae.identity == 0);
    CHECK(ae.any == 300);
    CHECK(ae.weight(Coding::Gzip) == 300);  // * covers codings not named
    CHECK(ae.accepts(Coding::Gzip));
    auto named = parse_accept_encoding("gzip;q=0, *");
    CHECK(named.weight(Coding::Gzip) == 0);  // named beats *
    CHECK_FALSE(named.accepts(Coding::Gzip));
    CHECK(named.accepts(Coding::Br));
    CHECK_FALSE(parse_accept_encoding("").accepts(Coding::Gzip));
}

TEST_CASE("http/accept_encoding: coding names") {
    CHECK(coding_name(Coding::Zstd) == "zstd");
    CHECK(coding_name(Coding::Br) == "br");
    CHECK(coding_name(Coding::Gzip) == "gzip");
    CHECK(coding_from_name("gzip") == Coding::Gzip);
    CHECK(coding_from_name("X-GZIP") == Coding::Gzip);
    CHECK(coding_from_name("br") == Coding::Br);
    CHECK(coding_from_name("zstd") == Coding::Zstd);
    CHECK_FALSE(coding_from_name("deflate"));
    CHECK_FALSE(coding_from_name(""));
}

TEST_CASE("http/accept_encoding: the highest q wins") {
    CHECK(pick("gzip;q=0.9, br;q=0.5, zstd;q=0.1") == "gzip");
    CHECK(pick("gzip;q=0.5, br;q=0.9") == "br");
    CHECK(pick("gzip, br;q=0.999") == "gzip");
    CHECK(pick("gzip;q=0.001") == "gzip");  // small but acceptable
}

TEST_CASE("http/accept_encoding: ties follow the order") {
    CHECK(pick("gzip, br, zstd") == "zstd");
    CHECK(pick("gzip, br") == "br");
    CHECK(pick("gzip;q=0.5, br;q=0.5") == "br");
    CHECK(pick("gzip, br, zstd", {Coding::Zstd, Coding::Br, Coding::Gzip},
               {Coding::Gzip, Coding::Br, Coding::Zstd}) == "gzip");
    CHECK(pick("gzip, br, zstd", {Coding::Zstd, Coding::Br, Coding::Gzip},
               {Coding::Br, Coding::Gzip, Coding::Zstd}) == "br");
}

TEST_CASE("http/accept_encoding: only enabled codings are chosen") {
    CHECK(pick("br, zstd", {Coding::Gzip}) == "");
    CHECK(pick("gzip;q=0.1, br", {Coding::Gzip}) == "gzip");
    CHECK(pick("gzip, br, zstd", {Coding::Gzip, Coding::Br}) == "br");
    CHECK(pick("gzip, br, zstd", {}) == "");
}

TEST_CASE("http/accept_encoding: q=0 is honoured") {
    CHECK(pick("gzip;q=0") == "");
    CHECK(pick("gzip; q=0") == "");
    CHECK(pick("gzip;q=0, br;q=0, zstd;q=0") == "");
    CHECK(pick("zstd;q=0, br;q=0.1, gzip") == "gzip");
    CHECK(pick("*;q=0") == "");
    CHECK(pick("*;q=0, gzip") == "gzip");
}

TEST_CASE("http/accept_encoding: * covers the codings not named") {
    CHECK(pick("*") == "zstd");
    CHECK(pick("*", {Coding::Gzip}) == "gzip");
    CHECK(pick("zstd;q=0, *") == "br");
    CHECK(pick("br;q=0.5, *;q=0.4", {Coding::Br, Coding::Gzip}) == "br");
    CHECK(pick("br;q=0.5, *;q=0.6", {Coding::Br, Coding::Gzip}) == "gzip");
}

TEST_CASE("http/accept_encoding: identity does not decide") {
    CHECK(pick("identity;q=0") == "");            // identity body anyway
    CHECK(pick("identity;q=0, deflate") == "");
    CHECK(pick("identity;q=0, gzip") == "gzip");
    CHECK(pick("identity, gzip;q=0.1") == "gzip");  // as nginx: identity is ignored
    CHECK(pick("identity") == "");
    CHECK(pick("") == "");
    CHECK(pick("deflate, compress") == "");
}
