#include "http/mime.h"

#include <cstdint>

#include "core/str.h"

namespace gatehouse::http {

namespace {

}  // namespace

size_t MimeTypes::CaseHash::operator()(std::string_view s) const {
    // FNV-1a over the lower-cased bytes: equal under CaseEq, equal hash.
    uint64_t h = 14695981039346656037ull;
    for (char c : s) {
        h ^= static_cast<unsigned char>(ascii_lower(c));
        h *= 1099511628211ull;
    }
    return static_cast<size_t>(h);
}

bool MimeTypes::CaseEq::operator()(std::string_view a, std::string_view b) const {
    return iequals(a, b);
}

std::optional<std::string> MimeTypes::add(std::string_view ext, std::string_view type) {
    auto it = map_.find(ext);
    if (it == map_.end()) {
        map_.emplace(std::string(ext), std::string(type));
        return std::nullopt;
    }
    std::string old = std::move(it->second);
    it->second = std::string(type);
    return old;
}

std::string_view MimeTypes::find(std::string_view ext) const {
    if (ext.empty()) return {};
    auto it = map_.find(ext);
    return it == map_.end() ? std::string_view() : std::string_view(it->second);
}

std::string_view builtin_mime_type(std::string_view ext) {
    if (iequals(ext, "html")) return "text/html";
    if (iequals(ext, "gif")) return "image/gif";
    if (iequals(ext, "jpg")) return "image/jpeg";
    return {};
}

}  // namespace gatehouse::http
