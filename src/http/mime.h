// The "types" map: file name extension -> MIME type [nginx types].
//
// Extensions compare case-insensitively (ASCII), as nginx's do: "PNG" and
// "png" find the same type. One MimeTypes exists per "types { }" block;
// the configuration generation owns it (StaticConf::types points at it),
// so the views find() returns live as long as the generation.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "conf/fwd.h"
#include "core/result.h"

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

// The list of a "*_types" directive (gzip_types, charset_types) [nginx
// ngx_http_types_slot]: MIME types in lower case, "*" for any; text/html
// always counts. A level that does not set it has its parent's.
struct MimeTypeList {
    const std::vector<std::string>* types = nullptr;  // null: the defaults; owner: the generation
    bool set = false;

    void inherit(const MimeTypeList& up) {
        if (!set) *this = up;
    }
    // Whether `type` (as mime_of() gives it) is listed; `defaults` stand
    // for a list no level set.
    bool lists(std::string_view type, std::span<const std::string_view> defaults = {}) const;
    // Whether the list has "*", which takes even a response without a
    // Content-Type [nginx ngx_http_test_content_type].
    bool any() const;
};

// The directive's setter: "[emerg] ... is duplicate" when set at this level.
Status set_mime_type_list(conf::Ctx& cx, const conf::Node& n, MimeTypeList& l);

// A Content-Type value's type, parameters and white space dropped:
// "text/html; charset=utf-8" -> "text/html".
std::string_view mime_of(std::string_view content_type);

// nginx's built-in map, used where no "types" block applies:
// html -> text/html, gif -> image/gif, jpg -> image/jpeg. Empty otherwise.
std::string_view builtin_mime_type(std::string_view ext);

}  // namespace gatehouse::http
