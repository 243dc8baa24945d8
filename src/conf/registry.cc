#include "conf/registry.h"

#include <algorithm>
#include <unordered_map>

namespace gatehouse {

void init_modules() {
    for (size_t i = 0; i < modules.size(); ++i) modules[i]->index = static_cast<uint16_t>(i);
}

namespace conf {

namespace {

struct Entry {
    const Module* module;
    const Directive* directive;
};

// Built once per process from the constant module list.
using Table = std::unordered_multimap<std::string_view, Entry>;

const Table& table() {
    static const Table t = [] {
        Table m;
        for (const Module* mod : modules)
            for (const Directive& d : mod->directives) m.emplace(d.name, Entry{mod, &d});
        return m;
    }();
    return t;
}

}  // namespace

std::string_view context_name(uint32_t c) {
    switch (c) {
        case kMain: return "main";
        case kEvents: return "events";
        case kHttp: return "http";
        case kServer: return "server";
        case kLocation: return "location";
        case kUpstream: return "upstream";
        case kServerIf: return "if";
        case kIf: return "if";
        case kLimitExcept: return "limit_except";
        case kTypes: return "types";
        case kMap: return "map";
        default: return "?";
    }
}

size_t edit_distance(std::string_view a, std::string_view b) {
    // Optimal string alignment distance; names are short, so O(n*m) is fine.
    const size_t n = a.size(), m = b.size();
    std::vector<size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
    for (size_t j = 0; j <= m; ++j) prev[j] = j;
    for (size_t i = 1; i <= n; ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= m; ++j) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                cur[j] = std::min(cur[j], prev2[j - 2] + 1);
        }
        prev2.swap(prev);
        prev.swap(cur);
    }
    return prev[m];
}

std::string_view suggest_directive(std::string_view name) {
    std::string_view best;
    size_t best_d = SIZE_MAX;
    for (const auto& [k, e] : table()) {
        size_t d = edit_distance(name, k);
        if (d < best_d || (d == best_d && k < best)) {
            best_d = d;
            best = k;
        }
    }
    // Suggest only what is plausibly a typo: at most 2 edits, and fewer
    // than a third of the name.
    if (best_d == 0 || best_d > 2 || best_d * 3 > name.size()) return {};
    return best;
}

const Directive* find_directive(std::string_view name, uint32_t context, const Module** owner) {
    auto [b, e] = table().equal_range(name);
    for (auto it = b; it != e; ++it)
        if (it->second.directive->contexts & context) {
            if (owner) *owner = it->second.module;
            return it->second.directive;
        }
    return nullptr;
}

bool block_reads_includes(std::string_view name) {
    auto [b, e] = table().equal_range(name);
    for (auto it = b; it != e; ++it)
        if (it->second.directive->args.block && it->second.directive->reads_includes) return true;
    return false;
}

std::string Ctx::full_path(std::string_view p) const {
    if (!p.empty() && p[0] == '/') return std::string(p);
    return prefix_ + std::string(p);
}

Error Ctx::error(const Node& n, std::string_view msg) const {
    return make_error(std::string(msg) + " in " + n.where());
}

Error Ctx::invalid(const Node& n, const Error& why) const {
    return make_error(why.message + " in \"" + n.name + "\" directive in " + n.where());
}

Error Ctx::duplicate(const Node& n) const {
    return make_error("\"" + n.name + "\" directive is duplicate in " + n.where());
}

Status set_failed(Ctx& cx, const Node& n, const Error& e) { return cx.invalid(n, e); }
Status set_duplicate(Ctx& cx, const Node& n) { return cx.duplicate(n); }

ConfArray Ctx::create_level(Level l) {
    auto* a = static_cast<ConfArray>(arena_.alloc(sizeof(void*) * modules.size(), alignof(void*)));
    for (const Module* m : modules) {
        const LevelOps& ops = m->ops(l);
        a[m->index] = ops ? ops.create(arena_) : nullptr;
    }
    return a;
}

Status Ctx::walk(const std::vector<Node>& nodes, uint32_t c) {
    uint32_t saved = context_;
    context_ = c;
    for (const Node& n : nodes) {
        if (auto s = apply(n); !s) {
            context_ = saved;
            return s;
        }
    }
    context_ = saved;
    return {};
}

Status Ctx::apply(const Node& n) {
    const Module* owner = nullptr;
    const Directive* d = find_directive(n.name, context_, &owner);
    if (!d) {
        if (table().count(n.name))
            return error(n, "\"" + n.name + "\" directive is not allowed here");
        std::string msg = "unknown directive \"" + n.name + "\" in " + n.where();
        if (auto s = suggest_directive(n.name); !s.empty())
            msg += " (did you mean \"" + std::string(s) + "\"?)";
        return make_error(std::move(msg));
    }
    if (d->args.block && !n.block)
        return error(n, "directive \"" + n.name + "\" has no opening \"{\"");
    if (!d->args.block && n.block)
        return error(n, "directive \"" + n.name + "\" is not terminated by \";\"");
    if (n.args.size() < d->args.min || n.args.size() > d->args.max)
        return error(n, "invalid number of arguments in \"" + n.name + "\" directive");
    void* conf = nullptr;
    if (d->set.tag) {
        for (int l = 0; l < kLevels; ++l) {
            const LevelOps& ops = owner->ops(static_cast<Level>(l));
            if (ops.tag == d->set.tag && levels_[l]) {
                conf = levels_[l][owner->index];
                break;
            }
        }
        // The directive's contexts promise that its struct exists here.
        GH_CHECK(conf != nullptr);
    }
    return d->set.fn(*this, n, conf);
}

}  // namespace conf
}  // namespace gatehouse
