// split_clients_module: "split_clients STRING $variable { N% value; ... * value; }"
// [nginx ngx_http_split_clients_module].
//
// The string (with variables) is hashed with MurmurHash2 and the hash,
// a fraction of 2^32, falls in one of the parts laid end to end in the
// order written; "*" takes the rest. The same hash and the same
// boundaries as nginx's (percentages with two decimals, each boundary at
// sum * 0xffffffff / 10000), so a client lands in the same part as it
// would on nginx: an A/B split survives a move between the two.
#include <charconv>
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/assert.h"
#include "core/murmur2.h"
#include "http/core_module.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

namespace {

using conf::Ctx;
using conf::Node;

struct Part {
    uint32_t below = 0;  // the hash is in this part when below it; "*": all
    bool rest = false;   // "*"
    std::string value;
};

struct Split {
    ComplexValue source;
    std::vector<Part> parts;
};

void get_split(Request& r, VarValue& v, uintptr_t arg) {
    const Split& s = *reinterpret_cast<const Split*>(arg);
    const uint32_t h = murmur2(s.source.eval(r));
    for (const Part& p : s.parts)
        if (p.rest || h < p.below) {
            v.s = p.value;
            return;
        }
    v.s = {};  // the parts add up to less than 100% and there is no "*"
}

// "12.34%": hundredths of a percent (1234); at most two decimals, as nginx.
std::optional<uint32_t> parse_percent(std::string_view t) {
    if (t.size() < 2 || t.back() != '%') return std::nullopt;
    t.remove_suffix(1);
    size_t dot = t.find('.');
    std::string_view whole = t.substr(0, dot);
    std::string_view frac = dot == std::string_view::npos ? std::string_view() : t.substr(dot + 1);
    if (whole.empty() || frac.size() > 2 || (dot != std::string_view::npos && frac.empty())) return std::nullopt;
    uint32_t w = 0, f = 0;
    auto [e1, ec1] = std::from_chars(whole.data(), whole.data() + whole.size(), w);
    if (ec1 != std::errc() || e1 != whole.data() + whole.size() || w > 100) return std::nullopt;
    if (!frac.empty()) {
        auto [e2, ec2] = std::from_chars(frac.data(), frac.data() + frac.size(), f);
        if (ec2 != std::errc() || e2 != frac.data() + frac.size()) return std::nullopt;
        if (frac.size() == 1) f *= 10;
    }
    return w * 100 + f;
}

Status open_split(Ctx& cx, const Node& n) {
    HttpMainConf* hm = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    GH_CHECK(hm != nullptr);  // http level only
    std::string_view name = n.args[1].text;
    if (name.size() < 2 || name[0] != '$')
        return cx.error(n, "invalid variable name \"" + std::string(name) + "\"");
    name.remove_prefix(1);
    auto* s = cx.arena().make<Split>();
    auto src = ComplexValue::compile(cx, n, n.args[0].text);
    if (!src) return src.error();
    s->source = std::move(*src);

    uint64_t sum = 0;
    for (const Node& e : n.children) {
        if (e.block || e.args.size() != 1) return cx.error(e, "invalid number of the split_clients parameters");
        Part p;
        p.value = e.args[0].text;
        if (e.name == "*") {
            p.rest = true;
            sum = 10000;
        } else {
            // "0%" is an empty part (nginx makes it a second "*").
            auto pc = parse_percent(e.name);
            if (!pc) return cx.error(e, "invalid percent value \"" + e.name + "\"");
            sum += *pc;
            if (sum > 10000) return cx.error(e, "percent total is greater than 100%");
            p.below = static_cast<uint32_t>(sum * 0xffffffffULL / 10000);
        }
        s->parts.push_back(std::move(p));
    }
    int idx = hm->vars.define(name, get_split, reinterpret_cast<uintptr_t>(s), 0);
    if (idx < 0) return cx.error(n, "the duplicate \"" + std::string(name) + "\" variable");
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"split_clients", conf::kHttp, conf::Arity{2, 2, true}, conf::custom<open_split>()},
};

}  // namespace

extern const conf::Module split_clients_module{
    .name = "split_clients",
    .directives = kDirectives,
};

}  // namespace gatehouse::http
