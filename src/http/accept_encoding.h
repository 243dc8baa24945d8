// Accept-Encoding (RFC 9110 12.5.3): the client's content codings with
// their q-values, and the choice of the coding a response is sent in.
//
// Pure functions, no allocation, no request: the compressing filters
// (gzip, brotli, zstd), gzip_static/brotli_static/zstd_static and gunzip
// all decide through choose_coding() so that one request gets one answer.
//
// Parsing (parse_accept_encoding):
//   - The field is a comma list of `coding [ OWS ";" OWS "q=" qvalue ]`;
//     empty elements are skipped (RFC 9110 5.6.1), OWS is SP or HTAB.
//   - Coding names and the "q" are case-insensitive; "x-gzip" counts as
//     "gzip" (RFC 9110 8.4.1.3); unknown codings (deflate, compress...)
//     are ignored.
//   - qvalue is "0" or "1" with up to 3 decimals, at most 1.000; it is kept
//     in thousandths. An element with a malformed weight (q=1.5, q=0.0001,
//     q=, "q = 1", a parameter other than q, a second parameter) is ignored
//     as a whole, as nginx declines gzip for "gzip;q=bad".
//   - The first mention of a coding wins ("gzip;q=0, gzip" refuses gzip,
//     as nginx looks at the first "gzip" only). Call parse_accept_encoding
//     once per field line, in order, on the same AcceptEncoding.
//
// Choice (choose_coding), among the enabled codings:
//   - a coding's weight is its own q if named, else the q of "*" if "*" is
//     named, else it is not acceptable; q=0 is never chosen;
//   - the highest weight wins; ties go to the earlier coding in `order`
//     (default zstd, br, gzip);
//   - "identity" plays no part: "identity;q=0" with no acceptable coding
//     gives no coding, i.e. the identity body, which RFC 9110 12.5.3
//     allows and nginx does; a higher q for identity than for gzip does not
//     stop gzip either (nginx ignores identity altogether).
//   - no Accept-Encoding field at all: no coding (nginx compresses only for
//     a client that asks, although RFC 9110 would allow any coding).
//
// Deliberate differences from nginx's gzip check (ngx_http_gzip_ok), all
// on inputs real browsers do not send: "*" alone accepts gzip (nginx:
// no), "x-gzip" accepts gzip (nginx: no), HTAB counts as whitespace
// (nginx: SP only). gzip_http_version, gzip_proxied and gzip_disable are
// not decided here (they belong to the gzip module).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string_view>

namespace gatehouse::http {

// Index into AcceptEncoding::q and CodingSet bits. Values are stable.
enum class Coding : uint8_t { Zstd = 0, Br = 1, Gzip = 2 };
inline constexpr size_t kCodingCount = 3;

// The token as sent in Content-Encoding: "zstd", "br", "gzip".
std::string_view coding_name(Coding c);

// The coding with this Content-Encoding token (exact, lower case as
// configured or as an origin sends it: case-insensitive), or nullopt.
std::optional<Coding> coding_from_name(std::string_view name);

// Weights in thousandths, 0..1000; kNotNamed when the field did not name it.
inline constexpr int16_t kNotNamed = -1;

struct AcceptEncoding {
    std::array<int16_t, kCodingCount> q{kNotNamed, kNotNamed, kNotNamed};  // by Coding
    int16_t identity = kNotNamed;
    int16_t any = kNotNamed;  // "*"

    int16_t of(Coding c) const { return q[static_cast<size_t>(c)]; }
    // The weight choose_coding() uses: own q, else "*", else kNotNamed.
    int16_t weight(Coding c) const;
    // Whether the client accepts c (weight > 0): what "gzip_static on" and
    // gunzip ask about gzip alone.
    bool accepts(Coding c) const { return weight(c) > 0; }
};

// Adds one Accept-Encoding field value to `into` (see the rules above).
// Never fails: what cannot be read is ignored.
void parse_accept_encoding(std::string_view field, AcceptEncoding& into);
inline AcceptEncoding parse_accept_encoding(std::string_view field) {
    AcceptEncoding ae;
    parse_accept_encoding(field, ae);
    return ae;
}

// A set of codings (bit 1 << Coding).
class CodingSet {
public:
    constexpr CodingSet() = default;
    constexpr CodingSet(std::initializer_list<Coding> cs) {
        for (Coding c : cs) add(c);
    }
    constexpr void add(Coding c) { bits_ |= uint8_t(1u << static_cast<unsigned>(c)); }
    constexpr bool has(Coding c) const { return bits_ & (1u << static_cast<unsigned>(c)); }
    constexpr bool empty() const { return bits_ == 0; }

private:
    uint8_t bits_ = 0;
};

// The tie order; a permutation of the three codings (a configuration
// setter checks that), earlier wins.
using CodingOrder = std::array<Coding, kCodingCount>;
inline constexpr CodingOrder kDefaultCodingOrder{Coding::Zstd, Coding::Br, Coding::Gzip};

// The coding to send among `enabled`, or nullopt for the identity body.
std::optional<Coding> choose_coding(const AcceptEncoding& ae, CodingSet enabled,
                                    const CodingOrder& order = kDefaultCodingOrder);

}  // namespace gatehouse::http
