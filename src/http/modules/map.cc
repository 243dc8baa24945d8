// map_module: "map string $variable { ... }" [nginx ngx_http_map_module].
//
// A map defines a variable computed when used: the source string is
// evaluated for the request and looked up among the block's keys, in
// nginx's order of priority:
//   1. exact strings, compared ignoring case;
//   2. with "hostnames": the longest "*.example.com" or ".example.com";
//   3. with "hostnames": the longest "mail.*";
//   4. the first regex ("~re", "~*re" caseless) that matches, in config
//      order; its captures ($1, named) are visible to the value;
//   5. "default", else the empty string.
// Values may hold variables. The value is cached for the request unless
// the map is "volatile".
#include <algorithm>
#include <cctype>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/hash.h"
#include "http/core_module.h"
#include "http/modules/rewrite.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module map_module;

namespace {

using conf::Ctx;
using conf::Node;

struct Wildcard {
    std::string part;  // ".example.com" (head) or "mail." (tail), lower case
    bool bare = false;  // ".example.com" matches "example.com" too
    const ComplexValue* value = nullptr;
};

// One "map" block. Owner: the generation arena; the getter's arg.
struct Map {
    ComplexValue source;
    bool hostnames = false;
    bool any_string_key = false;  // exact or wildcard keys: lower-case the source
    const ComplexValue* default_value = nullptr;
    std::unordered_map<std::string, const ComplexValue*, StringHash, std::equal_to<>> exact;
    std::vector<Wildcard> head;  // longest first
    std::vector<Wildcard> tail;  // longest first
    std::vector<std::pair<CaptureRegex, const ComplexValue*>> regexes;
    // Values by text, so that "1" written a thousand times compiles once.
    std::unordered_map<std::string, const ComplexValue*, StringHash, std::equal_to<>> values;

    const ComplexValue* find(Request& r, std::string_view s) const;
};

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

const ComplexValue* Map::find(Request& r, std::string_view s) const {
    // '' is a key like any other: "map $http_upgrade $c { '' close; }" is
    // how nginx configurations tell a request without the field.
    if (any_string_key && s.empty())
        if (auto it = exact.find(std::string_view{}); it != exact.end()) return it->second;
    if (any_string_key && !s.empty()) {
        char* low = static_cast<char*>(r.arena().alloc(s.size(), 1));
        for (size_t i = 0; i < s.size(); ++i)
            low[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
        std::string_view k(low, s.size());
        if (auto it = exact.find(k); it != exact.end()) return it->second;
        for (const Wildcard& w : head)
            if ((k.size() > w.part.size() && k.ends_with(w.part)) ||
                (w.bare && k == std::string_view(w.part).substr(1)))
                return w.value;
        for (const Wildcard& w : tail)
            if (k.size() > w.part.size() && k.starts_with(w.part)) return w.value;
    }
    for (const auto& [re, value] : regexes)
        if (re.exec(r, s)) return value;
    return default_value;
}

void get_map(Request& r, VarValue& v, uintptr_t arg) {
    const Map& m = *reinterpret_cast<const Map*>(arg);
    std::string_view s = m.source.eval(r);
    if (m.hostnames && !s.empty() && s.back() == '.') s.remove_suffix(1);
    const ComplexValue* value = m.find(r, s);
    v.s = value ? value->eval(r) : std::string_view{};
}

// How a "hostnames" key is stored [nginx ngx_hash_add_key, wildcards].
enum class KeyKind : uint8_t { Exact, Head, Tail, Invalid };

KeyKind classify(std::string_view k, bool hostnames, std::string* part, bool* bare) {
    *bare = false;
    if (!hostnames) {
        *part = lower(k);
        return KeyKind::Exact;
    }
    int stars = 0;
    for (size_t i = 0; i < k.size(); ++i) {
        if (k[i] == '*' && ++stars > 1) return KeyKind::Invalid;
        if (k[i] == '.' && i + 1 < k.size() && k[i + 1] == '.') return KeyKind::Invalid;
        if (k[i] == '\0') return KeyKind::Invalid;
    }
    if (k.size() > 1 && k[0] == '.') {
        *part = lower(k);
        *bare = true;
        return stars ? KeyKind::Invalid : KeyKind::Head;
    }
    if (k.size() > 2 && k[0] == '*' && k[1] == '.') {
        *part = lower(k.substr(1));
        return KeyKind::Head;
    }
    if (k.size() > 2 && k[k.size() - 2] == '.' && k.back() == '*') {
        *part = lower(k.substr(0, k.size() - 1));
        return KeyKind::Tail;
    }
    if (stars) return KeyKind::Invalid;
    *part = lower(k);
    return KeyKind::Exact;
}

// The requested VarTable API (see the report of this module): a variable
// computed by a getter that the configuration defines. Until VarTable has
// it, "map" is refused with a message rather than failing the build.
int define_computed(VarTable& vars, std::string_view name, VarGetter get, uintptr_t arg, uint8_t flags) {
    return vars.define(name, get, arg, flags);
}

Status add_entry(Ctx& cx, const Node& e, Map& m) {
    std::string_view key = e.name;
    std::string_view text = e.args[0].text;
    const ComplexValue* value;
    if (auto it = m.values.find(text); it != m.values.end()) {
        value = it->second;
    } else {
        auto cv = ComplexValue::compile(cx, e, text);
        if (!cv) return cv.error();
        value = cx.arena().make<ComplexValue>(std::move(*cv));
        m.values.emplace(std::string(text), value);
    }
    if (key == "default") {
        if (m.default_value) return cx.error(e, "duplicate default map parameter");
        m.default_value = value;
        return {};
    }
    if (key.size() > 1 && key[0] == '~') {
        bool caseless = key.size() > 2 && key[1] == '*';
        auto re = CaptureRegex::compile(cx, e, key.substr(caseless ? 2 : 1), caseless);
        if (!re) return re.error();
        m.regexes.emplace_back(std::move(*re), value);
        return {};
    }
    // "\default", "\hostnames", "\~x": the key itself, not a parameter.
    if (!key.empty() && key[0] == '\\') key.remove_prefix(1);
    std::string part;
    bool bare = false;
    KeyKind kind = classify(key, m.hostnames, &part, &bare);
    auto conflict = [&] { return cx.error(e, "conflicting parameter \"" + std::string(key) + "\""); };
    switch (kind) {
        case KeyKind::Invalid:
            return cx.error(e, "invalid hostname or wildcard \"" + std::string(key) + "\"");
        case KeyKind::Exact:
            if (!m.exact.emplace(std::move(part), value).second) return conflict();
            break;
        case KeyKind::Head:
        case KeyKind::Tail: {
            auto& list = kind == KeyKind::Head ? m.head : m.tail;
            for (const Wildcard& w : list)
                if (w.part == part) return conflict();
            list.push_back(Wildcard{std::move(part), bare, value});
            break;
        }
    }
    m.any_string_key = true;
    return {};
}

Status open_map(Ctx& cx, const Node& n) {
    HttpMainConf* hm = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    GH_CHECK(hm != nullptr);  // "map" is allowed in http only
    std::string_view name = n.args[1].text;
    if (name.size() < 2 || name[0] != '$')
        return cx.error(n, "invalid variable name \"" + std::string(name) + "\"");
    name.remove_prefix(1);

    auto* m = cx.arena().make<Map>();
    auto src = ComplexValue::compile(cx, n, n.args[0].text);
    if (!src) return src.error();
    m->source = std::move(*src);

    bool is_volatile = false;
    for (const Node& e : n.children) {
        if (e.block) return cx.error(e, "unexpected \"{\"");
        if (e.args.empty() && e.name == "hostnames") {
            m->hostnames = true;
            continue;
        }
        if (e.args.empty() && e.name == "volatile") {
            is_volatile = true;
            continue;
        }
        if (e.args.size() != 1) return cx.error(e, "invalid number of the map parameters");
        if (auto s = add_entry(cx, e, *m); !s) return s;
    }
    // The most specific wildcard wins: the longest.
    auto longer = [](const Wildcard& a, const Wildcard& b) { return a.part.size() > b.part.size(); };
    std::stable_sort(m->head.begin(), m->head.end(), longer);
    std::stable_sort(m->tail.begin(), m->tail.end(), longer);

    // A map variable may be changed by "set", as in nginx.
    uint8_t flags = kVarSettable | (is_volatile ? kVarNoCache : 0);
    int idx = define_computed(hm->vars, name, get_map, reinterpret_cast<uintptr_t>(m), flags);
    if (idx < 0) return cx.error(n, "the duplicate \"" + std::string(name) + "\" variable");
    return {};
}

// Accepted for nginx compatibility: the tables here are not fixed-size
// hashes, so there is nothing to size.
struct MapMainConf {
    std::optional<uint64_t> hash_max_size;     // "map_hash_max_size"
    std::optional<uint64_t> hash_bucket_size;  // "map_hash_bucket_size"
};

constexpr conf::Arity kMapArgs{2, 2, true};

constexpr conf::Directive kDirectives[] = {
    {"map", conf::kHttp, kMapArgs, conf::custom<open_map>()},
    {"map_hash_max_size", conf::kHttp, conf::Take1, conf::number<&MapMainConf::hash_max_size>()},
    {"map_hash_bucket_size", conf::kHttp, conf::Take1, conf::size<&MapMainConf::hash_bucket_size>()},
};

}  // namespace

extern const conf::Module map_module{
    .name = "map",
    .directives = kDirectives,
    .main = conf::level<MapMainConf>(),
};

}  // namespace gatehouse::http
