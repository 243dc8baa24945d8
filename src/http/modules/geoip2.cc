// geoip2_module: variables from MaxMind DB files (.mmdb), with the syntax
// of the third-party ngx_http_geoip2_module, so its configurations load:
//
//   geoip2 /var/lib/GeoIP/GeoLite2-City.mmdb {
//       auto_reload 60m;
//       $geo_build metadata build_epoch;              # last_check, last_change
//       $geo_country default=XX country iso_code;     # the key path in the record
//       $geo_city source=$http_x_addr city names en;  # another address
//       $geo_region subdivisions 0 iso_code;          # array index
//   }
//
// The address is the client's after realip ($remote_addr), or the value
// of source=$variable read as an IPv4 or IPv6 address; libmaxminddb looks
// an IPv4 address up in an IPv6 database through its IPv4 subtree. A key
// path that is not in the record, stops at a map or an array, an address
// the database does not hold, or a source that is no address leaves the
// variable empty (not found), or gives its default=.
//
// Each request looks an address up once per database: the result is
// kept in the request's context, so the variables of one database cost
// one tree walk, and each variable one key-path walk from the record.
//
// The file is opened at configuration time (an error is [emerg], the
// configuration is refused) and again by a reload. With auto_reload, a
// worker checks the file at most once per interval when it uses the
// database, and swaps a changed file in without a reload (mmdb.h).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <ctime>
#include <memory>
#include <memory_resource>
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/assert.h"
#include "event/worker.h"
#include "event/loop.h"
#include "http/core_module.h"
#include "http/mmdb.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module geoip2_module;

namespace {

using conf::Ctx;
using conf::Node;

// One "geoip2" block. Owner: the generation arena (made with make<>, so
// the file is closed with the generation).
struct Database {
    MmdbSource source;
    size_t index = 0;  // into Geoip2Ctx::lookups
    Database(std::string path, event::Msec interval) : source(std::move(path), interval) {}
};

struct Geoip2MainConf {
    std::vector<Database*> databases;  // owner: the generation arena
};

// "$var [default=v] [source=$x] key path...": the getter's arg.
struct GeoVar {
    Database* db = nullptr;
    std::vector<std::string> keys;
    std::vector<const char*> path;  // keys' c_str(), then nullptr, for MMDB_aget_value
    std::string default_value;
    bool has_default = false;
    ComplexValue source;
    bool has_source = false;
};

enum class MetaField : uint8_t { BuildEpoch, LastCheck, LastChange };

struct MetaVar {
    Database* db = nullptr;
    MetaField field = MetaField::BuildEpoch;
};

// One database's lookup for this request. `file` keeps the file the
// result points into mapped until the request ends, whatever auto_reload
// does meanwhile (a request reads one version of a database).
struct Lookup {
    std::shared_ptr<MmdbFile> file;  // sharers: MmdbSource, requests
    sockaddr_storage addr{};         // the address looked up (ss_family 0: none yet)
    MMDB_lookup_result_s result{};
};

struct Geoip2Ctx {
    explicit Geoip2Ctx(std::pmr::memory_resource* m, size_t n) : lookups(n, m) {}
    std::pmr::vector<Lookup> lookups;
};

bool same_address(const sockaddr_storage& a, const sockaddr* b) {
    if (a.ss_family != b->sa_family) return false;
    if (a.ss_family == AF_INET)
        return std::memcmp(&reinterpret_cast<const sockaddr_in&>(a).sin_addr,
                           &reinterpret_cast<const sockaddr_in*>(b)->sin_addr, 4) == 0;
    return std::memcmp(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(b)->sin6_addr, 16) == 0;
}

// The address text of source=: IPv4 or IPv6, nothing around it.
bool parse_source(std::string_view s, sockaddr_storage* out) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (s.empty() || s.size() >= sizeof buf) return false;
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    *out = {};
    auto* in4 = reinterpret_cast<sockaddr_in*>(out);
    if (inet_pton(AF_INET, buf, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        return true;
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
    if (inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

// The record for the variable's address, looked up at most once per
// request, database and address; null when there is none.
const MMDB_lookup_result_s* lookup(Request& r, const GeoVar& g) {
    sockaddr_storage parsed;
    const sockaddr* sa = r.remote_sockaddr;
    if (g.has_source) {
        if (!parse_source(g.source.eval(r), &parsed)) return nullptr;
        sa = reinterpret_cast<const sockaddr*>(&parsed);
    }
    if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) return nullptr;  // unix:

    auto* cx = r.ctx<Geoip2Ctx>(geoip2_module);
    if (!cx) {
        const auto& main = r.main_conf<Geoip2MainConf>(geoip2_module);
        cx = r.arena().make<Geoip2Ctx>(r.mem(), main.databases.size());
        r.set_ctx(geoip2_module, cx);
    }
    Lookup& l = cx->lookups[g.db->index];
    if (l.addr.ss_family != 0 && same_address(l.addr, sa)) return &l.result;

    MmdbSource& src = g.db->source;
    if (!l.file) {
        // A request's first use of the database: the moment to see
        // whether its file changed; later lookups stay on that version.
        const auto& loop = event::worker_loop();
        src.check(loop.now(), loop.wall().sec);
        l.file = src.current();
    }
    int err = MMDB_SUCCESS;
    MMDB_lookup_result_s res = l.file->lookup(sa, &err);
    std::memcpy(&l.addr, sa, sa->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    // An IPv6 address in an IPv4-only database is an error here, simply
    // an address the database does not hold.
    if (err != MMDB_SUCCESS) res.found_entry = false;
    l.result = res;
    return &l.result;
}

void get_geo(Request& r, VarValue& v, uintptr_t arg) {
    const GeoVar& g = *reinterpret_cast<const GeoVar*>(arg);
    if (const MMDB_lookup_result_s* res = lookup(r, g); res && res->found_entry) {
        MMDB_entry_s entry = res->entry;
        MMDB_entry_data_s data;
        if (MMDB_aget_value(&entry, &data, g.path.data()) == MMDB_SUCCESS &&
            render_entry(data, r.arena(), &v.s))
            return;
    }
    if (g.has_default) {
        v.s = g.default_value;
        return;
    }
    v.s = {};
    v.not_found = true;
}

void get_meta(Request& r, VarValue& v, uintptr_t arg) {
    const MetaVar& m = *reinterpret_cast<const MetaVar*>(arg);
    MmdbSource& src = m.db->source;
    const auto& loop = event::worker_loop();
    src.check(loop.now(), loop.wall().sec);
    uint64_t n = 0;
    switch (m.field) {
        case MetaField::BuildEpoch: n = src.current()->build_epoch(); break;
        case MetaField::LastCheck: n = static_cast<uint64_t>(src.last_check()); break;
        case MetaField::LastChange: n = static_cast<uint64_t>(src.last_change()); break;
    }
    std::string s = std::to_string(n);
    v.s = r.arena().dup(s);
}

Status add_variable(Ctx& cx, const Node& e, Database* db, HttpMainConf& hm) {
    std::string_view name = e.name;
    if (name.size() < 2) return cx.error(e, "invalid variable name \"" + e.name + "\"");
    name.remove_prefix(1);

    if (!e.args.empty() && e.args[0].text == "metadata") {
        if (e.args.size() != 2)
            return cx.error(e, "invalid number of arguments for metadata of \"" + e.name + "\"");
        auto* m = cx.arena().make<MetaVar>();
        m->db = db;
        const std::string& f = e.args[1].text;
        if (f == "build_epoch") m->field = MetaField::BuildEpoch;
        else if (f == "last_check") m->field = MetaField::LastCheck;
        else if (f == "last_change") m->field = MetaField::LastChange;
        else return cx.error(e, "unknown metadata field \"" + f + "\"");
        // Cached for the request: last_check may move under a request that
        // reads the variable twice, the value may not.
        if (hm.vars.define(name, get_meta, reinterpret_cast<uintptr_t>(m), kVarSettable) < 0)
            return cx.error(e, "the duplicate \"" + std::string(name) + "\" variable");
        return {};
    }

    auto* g = cx.arena().make<GeoVar>();
    g->db = db;
    size_t i = 0;
    // Settings come first and hold "="; the key path starts at the first
    // argument without one (a key may hold "=" after that).
    for (; i < e.args.size() && e.args[i].text.find('=') != std::string::npos; ++i) {
        const std::string& a = e.args[i].text;
        if (a.starts_with("default=") && a.size() > 8) {
            if (g->has_default) return cx.error(e, "duplicate \"default\" for \"" + e.name + "\"");
            g->default_value = a.substr(8);
            g->has_default = true;
        } else if (a.starts_with("source=") && a.size() > 7) {
            if (g->has_source) return cx.error(e, "duplicate \"source\" for \"" + e.name + "\"");
            if (a[7] != '$') return cx.error(e, "invalid source variable name \"" + a.substr(7) + "\"");
            auto cv = ComplexValue::compile(cx, e, std::string_view(a).substr(7));
            if (!cv) return cv.error();
            g->source = std::move(*cv);
            g->has_source = true;
        } else {
            return cx.error(e, "invalid parameter \"" + a + "\" for \"" + e.name + "\"");
        }
    }
    if (i == e.args.size()) return cx.error(e, "no key path for \"" + e.name + "\"");
    for (; i < e.args.size(); ++i) g->keys.push_back(e.args[i].text);
    for (const std::string& k : g->keys) g->path.push_back(k.c_str());
    g->path.push_back(nullptr);
    // Settable, as in the third-party module: "set" may override it.
    if (hm.vars.define(name, get_geo, reinterpret_cast<uintptr_t>(g), kVarSettable) < 0)
        return cx.error(e, "the duplicate \"" + std::string(name) + "\" variable");
    return {};
}

Status open_geoip2(Ctx& cx, const Node& n) {
    HttpMainConf* hm = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    auto* gm = cx.conf<Geoip2MainConf>(geoip2_module, conf::Level::Main);
    GH_CHECK(hm != nullptr && gm != nullptr);  // http level only

    const std::string path = cx.full_path(n.args[0].text);
    for (const Database* d : gm->databases)
        if (d->source.path() == path) return cx.error(n, "duplicate geoip2 database \"" + path + "\"");

    // auto_reload may come anywhere in the block: read it first.
    event::Msec interval = 0;
    bool have_interval = false;
    for (const Node& e : n.children) {
        if (e.name != "auto_reload") continue;
        if (e.block) return cx.error(e, "unexpected \"{\"");
        if (have_interval) return cx.duplicate(e);
        if (e.args.size() != 1) return cx.error(e, "invalid number of arguments in \"auto_reload\" directive");
        auto d = conf::parse_duration(e.args[0].text);
        if (!d) return cx.invalid(e, d.error());
        interval = static_cast<event::Msec>(d->count());
        have_interval = true;
    }

    auto* db = cx.arena().make<Database>(path, interval);
    db->index = gm->databases.size();
    // libmaxminddb's stamp of the generation's load: now.
    if (auto s = db->source.load(static_cast<int64_t>(::time(nullptr))); !s)
        return cx.error(n, s.message());
    gm->databases.push_back(db);

    for (const Node& e : n.children) {
        if (e.name == "auto_reload") continue;
        if (e.block) return cx.error(e, "unexpected \"{\"");
        if (e.name.empty() || e.name[0] != '$') return cx.error(e, "unknown directive \"" + e.name + "\"");
        if (auto s = add_variable(cx, e, db, *hm); !s) return s;
    }
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"geoip2", conf::kHttp, conf::Block1, conf::custom<open_geoip2>()},
};

}  // namespace

extern const conf::Module geoip2_module{
    .name = "geoip2",
    .directives = kDirectives,
    .main = conf::level<Geoip2MainConf>(),
};

}  // namespace gatehouse::http
