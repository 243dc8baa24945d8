#include "tls/params.h"

#include "conf/values.h"

namespace gatehouse::tls {

Result<uint8_t> parse_protocols(std::span<const std::string_view> words) {
    static constexpr struct {
        std::string_view name;
        uint8_t bit;
    } kNames[] = {
        {"SSLv2", kSSLv2},     {"SSLv3", kSSLv3},     {"TLSv1", kTLSv1},
        {"TLSv1.1", kTLSv1_1}, {"TLSv1.2", kTLSv1_2}, {"TLSv1.3", kTLSv1_3},
    };
    uint8_t set = 0;
    for (std::string_view w : words) {
        uint8_t bit = 0;
        for (const auto& n : kNames)
            if (n.name == w) bit = n.bit;
        if (!bit) return make_error("invalid value \"" + std::string(w) + "\"");
        set |= bit;
    }
    if (!(set & (kTLSv1 | kTLSv1_1 | kTLSv1_2 | kTLSv1_3))) {
        std::string all;
        for (std::string_view w : words) all += (all.empty() ? "" : " ") + std::string(w);
        return make_error("no TLS protocol in \"" + all + "\"");
    }
    return set;
}

Result<SessionCache> parse_session_cache(std::span<const std::string_view> words) {
    SessionCache c;
    auto invalid = [](std::string_view w) {
        return make_error("invalid session cache \"" + std::string(w) + "\"");
    };
    for (std::string_view w : words) {
        if (w == "off" || w == "none") {
            // Alone or not at all: "off builtin" says two things at once.
            if (words.size() != 1) return invalid(w);
            c.mode = w == "off" ? SessionCache::Mode::Off : SessionCache::Mode::None;
            return c;
        }
        if (w == "builtin" || w.substr(0, 8) == "builtin:") {
            if (c.builtin) return invalid(w);
            c.builtin = true;
            if (w.size() > 7) {
                auto n = conf::parse_number(w.substr(8), UINT32_MAX);
                if (!n || *n == 0) return invalid(w);
                c.builtin_sessions = *n;
            }
            continue;
        }
        if (w.substr(0, 7) == "shared:") {
            if (c.shared) return invalid(w);
            std::string_view rest = w.substr(7);
            size_t colon = rest.rfind(':');
            if (colon == std::string_view::npos || colon == 0) return invalid(w);
            auto size = conf::parse_size(rest.substr(colon + 1));
            if (!size) return invalid(w);
            c.shared = true;
            c.shared_name = std::string(rest.substr(0, colon));
            if (*size < kMinSharedCache)
                return make_error("session cache \"" + c.shared_name + "\" is too small");
            c.shared_size = *size;
            continue;
        }
        return invalid(w);
    }
    c.mode = SessionCache::Mode::Store;
    return c;
}

Result<VerifyClient> parse_verify_client(std::string_view w) {
    if (w == "off") return VerifyClient::Off;
    if (w == "on") return VerifyClient::On;
    if (w == "optional") return VerifyClient::Optional;
    if (w == "optional_no_ca") return VerifyClient::OptionalNoCa;
    return make_error("invalid value \"" + std::string(w) +
                      "\", it must be \"on\", \"off\", \"optional\" or \"optional_no_ca\"");
}

Result<std::string> alpn_wire(std::span<const std::string_view> names) {
    std::string out;
    for (std::string_view n : names) {
        if (n.empty() || n.size() > 255) return make_error("invalid ALPN protocol \"" + std::string(n) + "\"");
        out += static_cast<char>(n.size());
        out += n;
    }
    return out;
}

Result<std::vector<std::string>> parse_passwords(std::string_view s) {
    std::vector<std::string> pw;
    while (!s.empty()) {
        size_t nl = s.find('\n');
        std::string_view line = s.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (!line.empty()) pw.emplace_back(line);
        if (nl == std::string_view::npos) break;
        s.remove_prefix(nl + 1);
    }
    if (pw.empty()) return make_error("no passwords");
    return pw;
}

}  // namespace gatehouse::tls
