#include "http/mime.h"

#include <cstdint>

#include "conf/parser.h"
#include "conf/registry.h"
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

bool MimeTypeList::lists(std::string_view type, std::span<const std::string_view> defaults) const {
    if (type.empty()) return false;
    if (iequals(type, "text/html")) return true;
    if (!types) {
        for (std::string_view t : defaults)
            if (iequals(t, type)) return true;
        return false;
    }
    for (const std::string& t : *types)
        if (t == "*" || iequals(t, type)) return true;
    return false;
}

bool MimeTypeList::any() const {
    if (!types) return false;
    for (const std::string& t : *types)
        if (t == "*") return true;
    return false;
}

Status set_mime_type_list(conf::Ctx& cx, const conf::Node& n, MimeTypeList& l) {
    if (l.set) return cx.duplicate(n);
    auto* list = cx.arena().make<std::vector<std::string>>();
    for (const auto& a : n.args) {
        std::string t = a.text;
        for (char& ch : t) ch = ascii_lower(ch);
        if (t == "*") {
            list->assign(1, t);
            break;
        }
        list->push_back(std::move(t));
    }
    l.types = list;
    l.set = true;
    return {};
}

std::string_view mime_of(std::string_view ct) {
    size_t semi = ct.find(';');
    if (semi != std::string_view::npos) ct = ct.substr(0, semi);
    while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
    return ct;
}

}  // namespace gatehouse::http
