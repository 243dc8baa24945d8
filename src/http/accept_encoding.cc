// Accept-Encoding parsing and the coding choice; the rules are in the header.
#include "http/accept_encoding.h"

#include "core/str.h"

namespace gatehouse::http {

namespace {

// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), RFC 9110
// 12.4.2; thousandths, or -1 when malformed.
int parse_qvalue(std::string_view s) {
    if (s.empty() || (s[0] != '0' && s[0] != '1')) return -1;
    int q = (s[0] - '0') * 1000;
    if (s.size() == 1) return q;
    if (s[1] != '.' || s.size() > 5) return -1;
    int scale = 100;
    for (char c : s.substr(2)) {
        if (c < '0' || c > '9') return -1;
        q += (c - '0') * scale;
        scale /= 10;
    }
    return q > 1000 ? -1 : q;
}

// The weight of one list element after its coding name: "" (q=1) or
// OWS ";" OWS "q=" qvalue; -1 when malformed.
int parse_weight(std::string_view rest) {
    rest = trim_ows(rest);
    if (rest.empty()) return 1000;
    if (rest[0] != ';') return -1;
    rest = trim_ows(rest.substr(1));
    if (rest.size() < 2 || ascii_lower(rest[0]) != 'q' || rest[1] != '=') return -1;
    return parse_qvalue(rest.substr(2));
}

// The token's slot in `ae`, or null for a coding we do not know.
int16_t* slot(AcceptEncoding& ae, std::string_view token) {
    if (iequals(token, "gzip") || iequals(token, "x-gzip")) return &ae.q[size_t(Coding::Gzip)];
    if (iequals(token, "br")) return &ae.q[size_t(Coding::Br)];
    if (iequals(token, "zstd")) return &ae.q[size_t(Coding::Zstd)];
    if (iequals(token, "identity")) return &ae.identity;
    if (token == "*") return &ae.any;
    return nullptr;
}

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

std::string_view coding_name(Coding c) {
    switch (c) {
    case Coding::Zstd: return "zstd";
    case Coding::Br: return "br";
    case Coding::Gzip: return "gzip";
    }
    return "";
}

std::optional<Coding> coding_from_name(std::string_view name) {
    if (iequals(name, "gzip") || iequals(name, "x-gzip")) return Coding::Gzip;
    if (iequals(name, "br")) return Coding::Br;
    if (iequals(name, "zstd")) return Coding::Zstd;
    return std::nullopt;
}

int16_t AcceptEncoding::weight(Coding c) const {
    int16_t own = of(c);
    return own != kNotNamed ? own : any;
}

void parse_accept_encoding(std::string_view field, AcceptEncoding& into) {
    while (!field.empty()) {
        size_t comma = field.find(',');
        std::string_view element = field.substr(0, comma);
        field = comma == std::string_view::npos ? std::string_view{} : field.substr(comma + 1);

        element = trim_ows(element);
        if (element.empty()) continue;  // "gzip,,br" and ", gzip" (RFC 9110 5.6.1)
        size_t n = 0;
        while (n < element.size() && is_tchar(element[n])) n++;
        if (n == 0) continue;
        int q = parse_weight(element.substr(n));
        if (q < 0) continue;  // malformed weight: the element is ignored
        int16_t* s = slot(into, element.substr(0, n));
        if (s != nullptr && *s == kNotNamed) *s = int16_t(q);  // first mention wins
    }
}

std::optional<Coding> choose_coding(const AcceptEncoding& ae, CodingSet enabled,
                                    const CodingOrder& order) {
    std::optional<Coding> best;
    int16_t best_q = 0;
    for (Coding c : order) {
        if (!enabled.has(c)) continue;
        int16_t q = ae.weight(c);
        // Strictly greater: on a tie the earlier coding in `order` stays.
        if (q > best_q) {
            best = c;
            best_q = q;
        }
    }
    return best;
}

}  // namespace gatehouse::http
