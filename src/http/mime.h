// The "types" map: file name extension -> MIME type [nginx types].
//
// Extensions compare case-insensitively (ASCII), as nginx's do: "PNG" and
// "png" find the same type. One MimeTypes exists per "types { }" block;
// the configuration generation owns it (StaticConf::types points at it),
// so the views find() returns live as long as the generation.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace gatehouse::http {

class MimeTypes {
public:
    // Maps `ext` to `type`. When `ext` was already mapped, the new type
    // replaces the old one (nginx keeps the last and warns) and the old
    // type is returned so that the caller can warn.
    std::optional<std::string> add(std::string_view ext, std::string_view type);

    // The type for `ext` in any case, or empty when it is unknown.
    std::string_view find(std::string_view ext) const;

    size_t size() const { return map_.size(); }
    bool empty() const { return map_.empty(); }

private:
    struct CaseHash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const;
    };
    struct CaseEq {
        using is_transparent = void;
        bool operator()(std::string_view a, std::string_view b) const;
    };
    std::unordered_map<std::string, std::string, CaseHash, CaseEq> map_;
};

// nginx's built-in map, used where no "types" block applies:
// html -> text/html, gif -> image/gif, jpg -> image/jpeg. Empty otherwise.
std::string_view builtin_mime_type(std::string_view ext);

}  // namespace gatehouse::http
