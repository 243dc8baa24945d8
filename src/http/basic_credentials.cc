#include "http/basic_credentials.h"

#include "core/base64.h"
#include "core/str.h"

namespace gatehouse::http {

size_t basic_credentials_buffer(std::string_view value) { return base64_decoded_max(value.size()); }

std::optional<BasicCredentials> parse_basic_credentials(std::string_view value, char* buf) {
    if (value.size() < 6 || !iequals(value.substr(0, 6), "basic ")) return std::nullopt;
    value.remove_prefix(6);
    while (!value.empty() && value[0] == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (value.empty()) return std::nullopt;
    auto n = decode_base64(value, buf);
    if (!n) return std::nullopt;
    std::string_view userpass(buf, *n);
    size_t colon = userpass.find(':');
    if (colon == 0 || colon == std::string_view::npos) return std::nullopt;
    return BasicCredentials{userpass.substr(0, colon), userpass.substr(colon + 1)};
}

}  // namespace gatehouse::http
