// A transparent string hash: lets a std::unordered_map<std::string, ...>
// (with std::equal_to<>) be searched with a string_view, without building
// a std::string per lookup.
#pragma once

#include <functional>
#include <string_view>

namespace gatehouse {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace gatehouse
