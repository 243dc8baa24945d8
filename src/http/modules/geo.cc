// geo_module: "geo [$address] $variable { ... }" [nginx ngx_http_geo_module].
//
// A variable whose value depends on an IP address: the client's (after
// realip), or the value of $address read as one (a value that is not an
// address counts as 255.255.255.255, as does a client on a UNIX socket,
// as in nginx). The block holds, one per line:
//
//   default value;              what no entry covers ("" if absent)
//   10.0.0.0/8 value;           CIDR, IPv4 or IPv6: the longest prefix wins
//   192.0.2.1 value;            one address (/32, /128)
//   delete 10.1.0.0/16;         takes back what an earlier line added
//   include file;               more lines (relative to the config's directory)
//   proxy 192.0.2.0/24;         trusted: their X-Forwarded-For is the address
//   proxy_recursive;            ...its last untrusted address
//   ranges;                     first: lines are "a.b.c.d-e.f.g.h value;" (IPv4)
//   volatile;                   not cached for the request
//
// Values are plain strings, never variables, deduplicated. The table is
// built once at configuration time (core/ip_ranges.h): a lookup is a
// binary search, whatever the number of lines and their order. Messages
// and the rules for duplicates and overlapping ranges are nginx's.
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "conf/lexer.h"
#include "conf/module.h"
#include "conf/parser.h"
#include "conf/registry.h"
#include "core/assert.h"
#include "core/cidr.h"
#include "core/hash.h"
#include "core/ip_ranges.h"
#include "core/log.h"
#include "core/str.h"
#include "http/core_module.h"
#include "http/realip_cidr.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

namespace {

using conf::Ctx;
using conf::Node;

// One "geo" block. Owner: the generation arena; the getter's arg.
struct Geo {
    int source = -1;  // the variable read as an address; -1: the client's
    bool ranges = false;
    bool proxy_recursive = false;
    // "proxy": tried in the order written, as nginx (there are few).
    std::vector<::gatehouse::Cidr> proxies;
    // Value i of the table; 0 is "". Views into the generation arena.
    std::vector<std::string_view> values;
    IpTable table;
};

constexpr uint32_t kNoAddress = 0xffffffff;  // 255.255.255.255

IpAddr no_address() {
    IpAddr a;
    a.family = AF_INET;
    std::memset(a.bytes, 0xff, 4);
    return a;
}

bool trusted(const Geo& g, const IpAddr& a) {
    const IpAddr u = a.unmapped();
    for (const auto& c : g.proxies)
        if (c.contains(u)) return true;
    return false;
}

// The address an X-Forwarded-For list gives for a trusted `a`, read from
// its right end: the last element, or, with proxy_recursive, the first
// from the right that is not trusted. An element that is not an address
// ends the walk with the address found so far [nginx
// ngx_http_get_forwarded_addr].
IpAddr forwarded(const Geo& g, std::string_view list, IpAddr a) {
    for (;;) {
        while (!list.empty() && (list.back() == ' ' || list.back() == ',')) list.remove_suffix(1);
        if (list.empty()) return a;
        const size_t sep = list.find_last_of(" ,");
        const std::string_view elem = sep == std::string_view::npos ? list : list.substr(sep + 1);
        sockaddr_storage sa;
        if (!parse_addr_port(elem, &sa)) return a;
        a = ip_of(reinterpret_cast<const sockaddr*>(&sa)).value();
        if (!g.proxy_recursive || sep == std::string_view::npos || !trusted(g, a)) return a;
        list = list.substr(0, sep);
    }
}

IpAddr address_of(Request& r, const Geo& g) {
    IpAddr a = no_address();
    if (g.source < 0) {
        // A UNIX-socket client has no address: nginx looks up 255.255.255.255.
        if (auto ip = ip_of(r.remote_sockaddr)) a = *ip;
    } else {
        const VarValue& v = get_var(r, g.source);
        if (!v.not_found)
            if (auto ip = parse_ip(v.s)) a = *ip;
    }
    if (g.proxies.empty() || !trusted(g, a)) return a;
    // Several fields are one list, in order (RFC 9110 5.3).
    std::string_view list;
    std::pmr::string joined(r.mem());
    int fields = 0;
    for (const HeaderField& h : r.headers)
        if (iequals(h.name, "X-Forwarded-For")) {
            if (fields++ == 0) {
                list = h.value;
                continue;
            }
            if (fields == 2) joined = list;
            joined += ", ";
            joined += h.value;
            list = joined;
        }
    return list.empty() ? a : forwarded(g, list, a);
}

void get_geo(Request& r, VarValue& v, uintptr_t arg) {
    const Geo& g = *reinterpret_cast<const Geo*>(arg);
    const IpAddr a = address_of(r, g).unmapped();
    uint32_t i;
    if (a.family == AF_INET)
        i = g.table.find(a);
    else if (g.ranges)  // IPv4 ranges only: nginx takes an IPv6 client as 255.255.255.255
        i = g.table.find_v4(kNoAddress);
    else
        i = g.table.find(a);
    v.s = g.values[i];
}

// ---- configuration ----------------------------------------------------------

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string dotted(uint32_t a) {
    return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 0xff) + "." +
           std::to_string((a >> 8) & 0xff) + "." + std::to_string(a & 0xff);
}

// The state of one block while it is read.
struct Reader {
    Ctx& cx;
    Geo& g;
    std::unordered_map<std::string_view, uint32_t, StringHash, std::equal_to<>> value_index;
    CidrTableBuilder cidrs;
    RangeTableBuilder ranges;
    bool cidr_lines = false;  // a line of CIDR mode was read: "ranges" comes too late
    std::optional<uint32_t> range_default;
    std::vector<uint32_t> replaced;

    uint32_t value(std::string_view text) {
        if (auto it = value_index.find(text); it != value_index.end()) return it->second;
        std::string_view copy = cx.arena().dup(text);
        const auto i = static_cast<uint32_t>(g.values.size());
        g.values.push_back(copy);
        value_index.emplace(copy, i);
        return i;
    }

    // "10.0.0.0/8", "::1", "255.255.255.255".
    Result<::gatehouse::Cidr> network(const Node& e, std::string_view text) {
        auto p = ::gatehouse::parse_cidr(text);
        if (!p) return cx.error(e, "invalid network " + quoted(text));
        if (p->host_bits)
            GH_LOG(Warn, "low address bits of %s are meaningless in %s", std::string(text).c_str(),
                   e.where().c_str());
        return p->cidr;
    }

    void add_cidr(const Node& e, const ::gatehouse::Cidr& c, uint32_t v) {
        if (auto old = cidrs.add(c, v))
            GH_LOG(Warn, "duplicate network \"%s\", value: \"%s\", old value: \"%s\" in %s",
                   e.name.c_str(), std::string(g.values[v]).c_str(),
                   std::string(g.values[*old]).c_str(), e.where().c_str());
    }

    Status cidr_line(const Node& e) {
        cidr_lines = true;
        const std::string& arg = e.args[0].text;
        if (e.name == "default") {
            // Both families' /0, as nginx: "0.0.0.0/0" alone is IPv4 only.
            const uint32_t v = value(arg);
            add_cidr(e, ::gatehouse::parse_cidr("0.0.0.0/0").value().cidr, v);
            add_cidr(e, ::gatehouse::parse_cidr("::/0").value().cidr, v);
            return {};
        }
        if (e.name == "delete") {
            auto c = network(e, arg);
            if (!c) return c.error();
            if (!cidrs.remove(*c))
                GH_LOG(Warn, "no network \"%s\" to delete in %s", arg.c_str(), e.where().c_str());
            return {};
        }
        auto c = network(e, e.name);
        if (!c) return c.error();
        add_cidr(e, *c, value(arg));
        return {};
    }

    // "a.b.c.d-e.f.g.h", host order; nullopt when invalid.
    static std::optional<std::pair<uint32_t, uint32_t>> parse_range(std::string_view s) {
        const size_t dash = s.find('-');
        if (dash == std::string_view::npos) return std::nullopt;
        auto a = parse_ip(s.substr(0, dash)), b = parse_ip(s.substr(dash + 1));
        if (!a || !b || a->family != AF_INET || b->family != AF_INET) return std::nullopt;
        auto host = [](const IpAddr& x) {
            uint32_t n;
            std::memcpy(&n, x.bytes, 4);
            return ntohl(n);
        };
        if (host(*a) > host(*b)) return std::nullopt;
        return std::pair{host(*a), host(*b)};
    }

    Status range_line(const Node& e) {
        const std::string& arg = e.args[0].text;
        if (e.name == "default") {
            const uint32_t v = value(arg);
            if (range_default)
                GH_LOG(Warn, "duplicate default geo range value: \"%s\", old value: \"%s\" in %s",
                       arg.c_str(), std::string(g.values[*range_default]).c_str(), e.where().c_str());
            range_default = v;
            return {};
        }
        const bool del = e.name == "delete";
        const std::string& text = del ? arg : e.name;
        auto r = parse_range(text);
        if (!r) return cx.error(e, "invalid range " + quoted(text));
        if (del) {
            if (!ranges.remove(r->first, r->second))
                GH_LOG(Warn, "no address range \"%s\" to delete in %s", text.c_str(), e.where().c_str());
            return {};
        }
        const uint32_t v = value(arg);
        if (auto o = ranges.add(r->first, r->second, v, &replaced))
            return cx.error(e, "range " + quoted(text) + " overlaps \"" + dotted(o->start) + "-" +
                                   dotted(o->end) + "\"");
        for (uint32_t old : replaced)
            GH_LOG(Warn, "duplicate range \"%s\", value: \"%s\", old value: \"%s\" in %s",
                   text.c_str(), arg.c_str(), std::string(g.values[old]).c_str(), e.where().c_str());
        return {};
    }

    // "include file": nginx's geo reads its includes itself, so does this
    // one (Directive::reads_includes): tokens go from the file to the
    // table one line at a time, never as a tree, which a million lines
    // would make a few hundred megabytes. Relative to the configuration's
    // directory, no globs, as nginx's.
    Status include(const Node& n, bool* is_volatile, int depth) {
        static const conf::ParseOptions kLimits;
        if (depth >= kLimits.max_include_depth)
            return cx.error(n, "include nesting is deeper than " +
                                   std::to_string(kLimits.max_include_depth) +
                                   " levels (an include loop?)");
        const std::string& arg = n.args[0].text;
        conf::SourceFile f;
        f.path = !arg.empty() && arg[0] == '/' ? arg : cx.conf_dir() + arg;
        auto text = conf::read_file(f.path, kLimits.max_file_size);
        if (!text) return cx.error(n, text.message());
        f.content = std::move(*text);
        conf::Lexer lx(f.content);
        // One node, reused: its strings keep their buffers line after line.
        Node e;
        e.file = &f;
        auto at = [&](uint32_t line, std::string_view msg) {
            return make_error(std::string(msg) + " in " + f.path + ":" + std::to_string(line));
        };
        for (;;) {
            conf::Token t = lx.next();
            switch (t.kind) {
                case conf::Tok::Eof: return {};
                case conf::Tok::Error: return at(t.line, t.text);
                case conf::Tok::Semicolon: return at(t.line, "unexpected \";\"");
                case conf::Tok::BlockOpen: return at(t.line, "unexpected \"{\"");
                case conf::Tok::BlockClose: return at(t.line, "unexpected \"}\"");
                case conf::Tok::Word: break;
            }
            e.name = std::move(t.text);
            e.line = t.line;
            size_t args = 0;
            for (;;) {
                conf::Token a = lx.next();
                if (a.kind == conf::Tok::Word) {
                    if (args == e.args.size()) e.args.emplace_back();
                    e.args[args].text = std::move(a.text);
                    e.args[args++].quoted = a.quoted;
                    continue;
                }
                if (a.kind == conf::Tok::Semicolon) break;
                if (a.kind == conf::Tok::Error) return at(a.line, a.text);
                if (a.kind == conf::Tok::BlockOpen) return at(a.line, "unexpected \"{\"");
                if (a.kind == conf::Tok::BlockClose) return at(a.line, "unexpected \"}\", expecting \";\"");
                return at(a.line, "unexpected end of file, expecting \";\" or \"}\"");
            }
            e.args.resize(args);
            if (auto s = line(e, is_volatile, depth + 1); !s) return s;
        }
    }

    Status line(const Node& e, bool* is_volatile, int depth = 0) {
        if (e.block) return cx.error(e, "unexpected \"{\"");
        if (e.args.empty()) {
            if (e.name == "ranges") {
                if (cidr_lines)
                    return cx.error(e, "the \"ranges\" directive must be the first directive inside \"geo\" block");
                g.ranges = true;
                return {};
            }
            if (e.name == "proxy_recursive") {
                g.proxy_recursive = true;
                return {};
            }
            if (e.name == "volatile") {
                *is_volatile = true;
                return {};
            }
        }
        if (e.args.size() != 1) return cx.error(e, "invalid number of the geo parameters");
        if (e.name == "include") return include(e, is_volatile, depth);
        if (e.name == "proxy") {
            auto c = network(e, e.args[0].text);
            if (!c) return c.error();
            g.proxies.push_back(*c);
            return {};
        }
        return g.ranges ? range_line(e) : cidr_line(e);
    }
};

Status open_geo(Ctx& cx, const Node& n) {
    HttpMainConf* hm = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    GH_CHECK(hm != nullptr);  // http level only
    auto var_name = [&](std::string_view s) -> Result<std::string_view> {
        if (s.size() < 2 || s[0] != '$') return cx.error(n, "invalid variable name " + quoted(s));
        return s.substr(1);
    };
    auto name = var_name(n.args.back().text);
    if (!name) return name.error();
    auto* g = cx.arena().make<Geo>();
    if (n.args.size() == 2) {
        auto src = var_name(n.args[0].text);
        if (!src) return src.error();
        g->source = hm->vars.index(*src, n);
    }

    Reader rd{cx, *g, {}, {}, {}, false, std::nullopt, {}};
    g->values.push_back({});  // 0: "", when there is no "default"
    rd.value_index.emplace(std::string_view{}, 0);
    bool is_volatile = false;
    for (const Node& e : n.children)
        if (auto s = rd.line(e, &is_volatile); !s) return s;
    g->table = g->ranges ? rd.ranges.build(rd.range_default.value_or(0)) : rd.cidrs.build(0);
    g->values.shrink_to_fit();

    // Settable by "set", as nginx's geo variables.
    const uint8_t flags = kVarSettable | (is_volatile ? kVarNoCache : 0);
    if (hm->vars.define(*name, get_geo, reinterpret_cast<uintptr_t>(g), flags) < 0)
        return cx.error(n, "the duplicate " + quoted(*name) + " variable");
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"geo", conf::kHttp, conf::Arity{1, 2, true}, conf::custom<open_geo>(),
     /*reads_includes=*/true},
};

}  // namespace

extern const conf::Module geo_module{
    .name = "geo",
    .directives = kDirectives,
};

}  // namespace gatehouse::http
