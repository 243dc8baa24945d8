// upstream_module: the "upstream" block and its directives, the groups
// proxy_pass names (find_or_add), and resolving names to peers.
//
// Every group of a generation, block or implicit, is one UpstreamConf in
// the generation arena, listed in UpstreamMainConf::upstreams. A bare name
// used before its block ("proxy_pass http://backend;" above "upstream
// backend {") gets its UpstreamConf at once, marked pending; the block,
// when read, fills that same object, so the pointer the proxy keeps never
// changes. Whatever is still pending after the whole file was read is a
// host name, resolved by postconfiguration [nginx ngx_http_upstream_add].
#include "upstream/upstream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "core/shm.h"
#include "core/str.h"
#include "event/resolver.h"
#include "upstream/balancer.h"
#include "upstream/sticky.h"

namespace gatehouse::upstream {

namespace {

using conf::Ctx;
using conf::Level;
using conf::Node;

constexpr uint8_t kSetKeepalive = 1;
constexpr uint8_t kSetKeepaliveTimeout = 2;
constexpr uint8_t kSetKeepaliveRequests = 4;
constexpr uint8_t kSetKeepaliveTime = 64;
constexpr uint8_t kSetMethod = 8;
constexpr uint8_t kSetZone = 16;
constexpr uint8_t kSetHealth = 32;
constexpr uint8_t kSetSticky = 128;

const char* method_name(Method m) {
    switch (m) {
        case Method::RoundRobin: return "round robin";
        case Method::LeastConn: return "least_conn";
        case Method::IpHash: return "ip_hash";
        case Method::Hash: return "hash";
        case Method::Random: return "random";
        case Method::LeastTime: return "least_time";
    }
    return "?";
}

// nginx refuses "backup" with the methods that map a request to a fixed
// peer (or draw one): there is no "when the primaries are unavailable".
bool takes_backup(Method m) {
    return m == Method::RoundRobin || m == Method::LeastConn || m == Method::LeastTime;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// parse_address() says `... in address "x"`; nginx says `... in upstream "x"`.
Error in_upstream(const Error& e, std::string_view shown) {
    std::string m = e.message;
    size_t at = m.rfind(" in address \"");
    if (at != std::string::npos) m.resize(at);
    else if (size_t q = m.find(" in \""); q != std::string::npos) m.resize(q);
    return make_error(m + " in upstream " + quoted(shown));
}

Peer peer_of(const conf::Address& a) {
    Peer p;
    std::memcpy(&p.sa, &a.sa, a.sa_len);
    p.sa_len = a.sa_len;
    p.text = a.kind == conf::Address::Kind::Unix
                 ? a.text()
                 : conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&p.sa));
    return p;
}

// "unix:/path:/uri" names the socket "/path" [nginx ngx_parse_unix_domain_url].
std::string_view strip_unix_uri(std::string_view t) {
    if (t.substr(0, 5) != "unix:") return t;
    size_t colon = t.find(':', 5);
    return colon == std::string_view::npos ? t : t.substr(0, colon);
}

Result<std::vector<Peer>> resolve_as(std::string_view address, uint16_t default_port,
                                     std::string_view shown) {
    conf::AddressRules rules;
    rules.default_port = default_port;
    auto a = conf::parse_address(address, rules);
    if (!a) return in_upstream(a.error(), shown);
    std::vector<Peer> out;
    if (a->kind != conf::Address::Kind::Name) {
        out.push_back(peer_of(*a));
        return out;
    }
    const auto found = conf::lookup_host(a->host, a->port, SOCK_STREAM, true);
    // IPv4 first, then IPv6, each in the resolver's order [nginx].
    for (int family : {AF_INET, AF_INET6}) {
        for (const conf::HostAddress& h : found) {
            if (h.sa.ss_family != family) continue;
            Peer p;
            std::memcpy(&p.sa, &h.sa, h.len);
            p.sa_len = h.len;
            p.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&h.sa));
            out.push_back(std::move(p));
        }
    }
    if (out.empty()) return make_error("host not found in upstream " + quoted(shown));
    return out;
}

// Orders `flat` (the peers of each server in server order, as the server
// lines made them) primaries first, then backups by tier, and points each
// at its Server. Weights start at the server's [nginx: effective = weight].
void place_peers(UpstreamConf& u, std::vector<Peer> flat) {
    std::vector<size_t> first(u.servers.size());
    std::vector<uint8_t> tiers{0};
    for (size_t i = 0, at = 0; i < u.servers.size(); ++i) {
        first[i] = at;
        at += u.servers[i].naddrs;
        tiers.push_back(u.servers[i].backup);
    }
    std::sort(tiers.begin(), tiers.end());
    tiers.erase(std::unique(tiers.begin(), tiers.end()), tiers.end());
    u.peers.clear();
    u.peers.reserve(flat.size());
    u.tier_start.clear();
    for (uint8_t tier : tiers) {
        u.tier_start.push_back(u.peers.size());
        for (size_t i = 0; i < u.servers.size(); ++i) {
            const Server& s = u.servers[i];
            if (s.backup != tier) continue;
            for (size_t j = 0; j < s.naddrs; ++j) {
                Peer p = std::move(flat[first[i] + j]);
                p.server = &s;
                p.local = PeerState();
                p.local.effective_weight.store(s.weight, std::memory_order_relaxed);
                p.shared = nullptr;
                u.peers.push_back(std::move(p));
            }
        }
    }
    u.backup_start = u.tier_start.size() > 1 ? u.tier_start[1] : u.peers.size();
}

// An implicit group's one server, from its resolved addresses.
void set_implicit_peers(UpstreamConf& u, std::vector<Peer> addrs) {
    Server s;
    s.name = u.name;
    s.where = u.where;
    s.naddrs = addrs.size();
    u.servers.clear();
    u.servers.push_back(std::move(s));
    place_peers(u, std::move(addrs));
}

UpstreamMainConf& main_conf(Ctx& cx) {
    auto* m = cx.conf<UpstreamMainConf>(upstream_module, Level::Main);
    // Every caller runs inside the http block, which made it.
    GH_CHECK(m != nullptr);
    return *m;
}

// ---- directives ------------------------------------------------------------

// The block being read: these directives exist only in kUpstream, which
// only open_upstream's walk sets.
UpstreamConf& current(UpstreamMainConf& m) {
    GH_CHECK(m.current != nullptr);
    return *m.current;
}

Status open_upstream(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    const std::string& name = n.args[0].text;
    UpstreamConf* u = nullptr;
    for (UpstreamConf* o : m.upstreams) {
        // An implicit group with a port is named "host:port".
        std::string_view host = o->port ? std::string_view(o->name).substr(0, o->name.rfind(':'))
                                        : std::string_view(o->name);
        if (!iequals(host, name)) continue;
        if (!o->implicit) return cx.error(n, "duplicate upstream " + quoted(name));
        // "proxy_pass http://backend:8080" above "upstream backend": a
        // block's name takes no port [nginx].
        if (o->port)
            return make_error("upstream " + quoted(name) + " may not have port " +
                              std::to_string(o->port) + " in " + o->where);
        if (o->pending && !u) u = o;  // named before its block: fill that one
    }
    if (!u) {
        u = cx.arena().make<UpstreamConf>();
        m.upstreams.push_back(u);
    }
    u->name = name;
    u->host = name;
    u->implicit = false;
    u->pending = false;
    u->port = 0;
    u->where = n.where();

    m.current = u;
    struct Reset {
        UpstreamMainConf& m;
        ~Reset() { m.current = nullptr; }
    } reset{m};
    if (auto s = cx.walk(n.children, conf::kUpstream); !s) return s;
    if (!u->state_path.empty()) {
        // The state file holds the servers [NGINX Plus].
        if (!u->servers.empty())
            return make_error("\"server\" directives are not allowed with \"state\" in upstream " + quoted(name) +
                              " in " + u->servers[0].where);
        if (u->zone_name.empty())
            return make_error("\"state\" requires \"zone\" in upstream " + quoted(name) + " in " + u->state_where);
        for (const auto& st : u->state_servers)
            if (st.params.backup && !takes_backup(u->method))
                return make_error("invalid parameter \"backup\" in " + st.params.where);
    } else {
        // nginx checks this when the block ends, used or not.
        if (u->servers.empty()) return cx.error(n, "no servers are inside upstream");
        if (std::all_of(u->servers.begin(), u->servers.end(), [](const Server& s) { return s.backup; }))
            return cx.error(n, "no servers in upstream " + quoted(name));
    }
    // A method named after the "backup" servers (nginx reports it at the
    // server line when the method comes first, see set_server).
    if (!takes_backup(u->method))
        for (const Server& s : u->servers)
            if (s.backup)
                return make_error("invalid parameter \"backup\" with \"" + std::string(method_name(u->method)) +
                                  "\" in " + s.where);
    // Run-time addresses live in the zone [nginx: the same message, at
    // the same point: once the block is read].
    if (u->resolves && u->zone_name.empty())
        return make_error("resolving names at run time requires upstream " + quoted(name) + " in " + u->where +
                          " to be in shared memory");
    if (u->health && u->zone_name.empty())
        return make_error("\"health_check\" requires \"zone\" in upstream " + quoted(name) + " in " +
                          u->health->where);
    // The server lines parked their addresses in u->peers in server
    // order; now they take their final order.
    std::vector<Peer> flat = std::move(u->peers);
    place_peers(*u, std::move(flat));
    return {};
}

// One parameter of a server line (or of a state file's): false when it
// is not one of these or its value is invalid. `backup_ok`: the method
// takes backups.
enum class Param : uint8_t { Taken, Invalid, Other };
Param server_param(std::string_view p, Server& s, bool backup_ok) {
    auto number = [&](size_t skip, uint64_t max) { return conf::parse_number(p.substr(skip), max); };
    if (p.substr(0, 7) == "weight=") {
        auto v = number(7, 1000000);
        if (!v || *v == 0) return Param::Invalid;
        s.weight = static_cast<uint32_t>(*v);
    } else if (p.substr(0, 10) == "max_fails=") {
        auto v = number(10, UINT32_MAX);
        if (!v) return Param::Invalid;
        s.max_fails = static_cast<uint32_t>(*v);
    } else if (p.substr(0, 10) == "max_conns=") {
        auto v = number(10, UINT32_MAX);
        if (!v) return Param::Invalid;
        s.max_conns = static_cast<uint32_t>(*v);
    } else if (p.substr(0, 13) == "fail_timeout=") {
        auto v = conf::parse_duration(p.substr(13));
        if (!v) return Param::Invalid;
        s.fail_timeout = *v;
    } else if (p.substr(0, 11) == "slow_start=") {
        auto v = conf::parse_duration(p.substr(11));
        if (!v) return Param::Invalid;
        s.slow_start = *v;
    } else if (p == "backup" || p.substr(0, 7) == "backup=") {
        if (!backup_ok) return Param::Invalid;
        // "backup=N": the tier of fallback, beyond nginx's one.
        auto v = p == "backup" ? Result<uint64_t>(1) : number(7, 255);
        if (!v || *v == 0) return Param::Invalid;
        s.backup = static_cast<uint8_t>(*v);
    } else if (p == "down") {
        s.down = true;
    } else {
        return Param::Other;
    }
    return Param::Taken;
}

Status set_server(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    Server s;
    s.name = n.args[0].text;
    s.where = n.where();
    uint32_t slots = 0;  // "max=": the slots of a "resolve" server
    size_t max_at = 0;
    for (size_t i = 1; i < n.args.size(); ++i) {
        std::string_view p = n.args[i].text;
        auto invalid = [&] { return cx.error(n, "invalid parameter " + quoted(p)); };
        auto number = [&](size_t skip, uint64_t max) { return conf::parse_number(p.substr(skip), max); };
        const Param got = server_param(p, s, takes_backup(u.method));
        if (got == Param::Taken) {
            continue;
        } else if (got == Param::Invalid) {
            return invalid();
        } else if (p == "resolve") {
            s.resolve = true;
        } else if (p.substr(0, 4) == "max=") {
            auto v = number(4, kMaxResolveSlots);
            if (!v || *v == 0) return invalid();
            slots = static_cast<uint32_t>(*v);
            max_at = i;
        } else {
            return invalid();
        }
    }
    if (slots && !s.resolve) return cx.error(n, "invalid parameter " + quoted(n.args[max_at].text));
    if (s.resolve) {
        conf::AddressRules rules;
        rules.default_port = 80;
        auto a = conf::parse_address(s.name, rules);
        if (!a) return cx.error(n, in_upstream(a.error(), s.name).message);
        // An address literal or a socket has nothing to follow: a fixed
        // server, as without "resolve".
        if (a->kind == conf::Address::Kind::Name) {
            // Resolved by the workers, from the start: the master does not
            // ask the system's resolver (the name may not resolve yet).
            s.dynamic = true;
            s.host = a->host;
            s.port = a->port;
            s.naddrs = slots ? slots : kDefaultResolveSlots;
            u.resolves = true;
            for (size_t k = 0; k < s.naddrs; ++k) u.peers.emplace_back();
            u.servers.push_back(std::move(s));
            return {};
        }
        s.resolve = false;
    }
    // nginx resolves a server's name when it reads the line.
    auto addrs = resolve_as(s.name, 80, s.name);
    if (!addrs) return cx.error(n, addrs.message());
    s.naddrs = addrs->size();
    u.servers.push_back(std::move(s));
    for (Peer& p : *addrs) u.peers.push_back(std::move(p));
    return {};
}

// A state file's text: "server ADDRESS [parameters];" lines (what
// runtime_servers.cc writes), comments after '#'. The addresses are
// resolved now, as a server line's; `shown` names the file in errors.
Status parse_state(UpstreamConf& u, std::string_view text, const std::string& shown) {
    size_t line = 1;
    std::vector<std::string> words;
    size_t words_line = 1;
    auto flush = [&]() -> Status {
        const std::string where = shown + ":" + std::to_string(words_line);
        if (words.size() < 2 || words[0] != "server")
            return make_error("invalid line in state file " + where + " (\"server ADDRESS ...;\" expected)");
        auto addrs = resolve_as(words[1], 80, words[1]);
        if (!addrs) return make_error(addrs.message() + " in " + where);
        UpstreamConf::StateServer st;
        st.params.name = words[1];
        st.params.where = where;
        for (size_t i = 2; i < words.size(); ++i) {
            if (words[i] == "drain") {
                st.params.drain = true;
                continue;
            }
            if (server_param(words[i], st.params, takes_backup(u.method)) != Param::Taken)
                return make_error("invalid parameter " + quoted(words[i]) + " in " + where);
        }
        // One "backup" tier for the API's servers (backup=N is the
        // configuration's).
        if (st.params.backup > 1) return make_error("invalid parameter \"backup=\" in " + where);
        for (Peer& p : *addrs) {
            st.sa = p.sa;
            st.sa_len = p.sa_len;
            u.state_servers.push_back(st);
        }
        words.clear();
        return {};
    };
    std::string word;
    bool comment = false;
    for (char c : text) {
        if (comment) {
            if (c == '\n') comment = false, ++line;
            continue;
        }
        if (c == '#') {
            comment = true;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';') {
            if (!word.empty()) {
                if (words.empty()) words_line = line;
                words.push_back(std::move(word));
                word.clear();
            }
            if (c == '\n') ++line;
            if (c == ';')
                if (auto s = flush(); !s) return s;
            continue;
        }
        word += c;
    }
    if (!word.empty() || !words.empty())
        return make_error("unexpected end of state file " + shown + ":" + std::to_string(line) + " (\";\" expected)");
    return {};
}

// "state file" [NGINX Plus]: the group's servers are kept in that file
// (written at each change the upstream API makes) and read from it now;
// the block has no server lines of its own. A missing file is an empty
// group, made by the master for the workers (init_master).
Status set_state(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (!u.state_path.empty()) return cx.duplicate(n);
    u.state_path = cx.full_path(n.args[0].text);
    u.state_where = n.where();
    const int fd = ::open(u.state_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return {};
        return cx.error(n, "open() " + quoted(u.state_path) + " failed (" + std::to_string(errno) + ": " +
                               std::strerror(errno) + ")");
    }
    std::string text;
    char buf[4096];
    for (;;) {
        const ssize_t r = ::read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        text.append(buf, static_cast<size_t>(r));
        // A state file holds at most the group's slots' lines.
        if (text.size() > 1024 * 1024) break;
    }
    ::close(fd);
    if (auto s = parse_state(u, text, u.state_path); !s) return cx.error(n, s.message());
    return {};
}

Status set_once(Ctx& cx, const Node& n, UpstreamConf& u, uint8_t bit) {
    if (u.directives_set & bit) return cx.duplicate(n);
    u.directives_set |= bit;
    return {};
}

Status set_keepalive(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetKeepalive); !s) return s;
    auto v = conf::parse_number(n.args[0].text, UINT32_MAX);
    if (!v || *v == 0) return cx.invalid(n, make_error("invalid value " + quoted(n.args[0].text)));
    u.keepalive = static_cast<uint32_t>(*v);
    return {};
}

Status set_keepalive_timeout(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetKeepaliveTimeout); !s) return s;
    auto v = conf::parse_duration(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    u.keepalive_timeout = *v;
    return {};
}

Status set_keepalive_requests(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetKeepaliveRequests); !s) return s;
    auto v = conf::parse_number(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    u.keepalive_requests = *v;
    return {};
}

Status set_keepalive_time(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetKeepaliveTime); !s) return s;
    auto v = conf::parse_duration(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    u.keepalive_time = *v;
    return {};
}

// The balancing method directives. A second one replaces the first with a
// warning, as nginx does.
Status set_method(Ctx&, const Node& n, UpstreamConf& u, Method m) {
    if (u.directives_set & kSetMethod)
        GH_LOG(Warn, "load balancing method redefined in %s", n.where().c_str());
    u.directives_set |= kSetMethod;
    u.method = m;
    u.consistent = false;
    u.random_two = false;
    u.hash_key.clear();
    u.hash_node = nullptr;
    u.hash_value = nullptr;
    return {};
}

Status set_least_conn(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    return set_method(cx, n, current(m), Method::LeastConn);
}

Status set_ip_hash(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    return set_method(cx, n, current(m), Method::IpHash);
}

Status set_hash(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (n.args.size() == 2 && n.args[1].text != "consistent")
        return cx.error(n, "invalid parameter " + quoted(n.args[1].text));
    if (n.args[0].text.empty()) return cx.error(n, "invalid key \"\"");
    if (auto s = set_method(cx, n, u, Method::Hash); !s) return s;
    u.hash_key = n.args[0].text;
    u.hash_node = &n;
    u.consistent = n.args.size() == 2;
    return {};
}

Status set_random(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (n.args.size() >= 1 && n.args[0].text != "two")
        return cx.error(n, "invalid parameter " + quoted(n.args[0].text));
    if (n.args.size() == 2 && n.args[1].text != "least_conn")
        return cx.error(n, "invalid parameter " + quoted(n.args[1].text));
    if (auto s = set_method(cx, n, u, Method::Random); !s) return s;
    u.random_two = !n.args.empty();
    return {};
}

Status set_least_time(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    const std::string& a = n.args[0].text;
    if (a != "header" && a != "last_byte") return cx.error(n, "invalid parameter " + quoted(a));
    if (auto s = set_method(cx, n, u, Method::LeastTime); !s) return s;
    u.least_time_header = a == "header";
    return {};
}

// "zone name [size]": without a size, the zone must be declared with one
// by another upstream block (several groups may share a zone).
Status set_zone(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetZone); !s) return s;
    size_t size = 0;
    if (n.args.size() == 2) {
        auto v = conf::parse_size(n.args[1].text);
        if (!v) return cx.invalid(n, v.error());
        // A page at least: the header and a record of a few peers.
        if (*v < 4096) return cx.error(n, "zone " + quoted(n.args[0].text) + " is too small");
        size = static_cast<size_t>(*v);
    }
    if (!cx.zones()) return cx.error(n, "shared memory zones are not available here");
    auto z = cx.zones()->add(n.args[0].text, size, &upstream_module);
    if (!z) return cx.error(n, z.message());
    u.zone_name = n.args[0].text;
    u.zone_size = size;
    u.zone = z->zone;
    return {};
}

// "api_servers_max N": in http for every group with a zone, in an
// upstream block for that group (see add_api_slots).
Status set_api_servers(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    std::optional<uint32_t>& out = m.current ? m.current->api_servers : m.api_servers;
    if (out) return cx.duplicate(n);
    auto v = conf::parse_number(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    if (*v > kMostApiSlots) return cx.error(n, "value must be between 0 and " + std::to_string(kMostApiSlots));
    out = static_cast<uint32_t>(*v);
    return {};
}

Status set_health_check(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetHealth); !s) return s;
    auto* hc = cx.arena().make<HealthCheck>();
    if (auto s = parse_health_check(cx, n, *hc); !s) return s;
    u.health = hc;
    return {};
}

// "resolver" and "resolver_timeout" inside an upstream block [NGINX Plus,
// nginx 1.27.3]: read by resolver_module's own setters (one parser, one
// set of messages) into a location-level array of the block's, which
// postconfiguration then reads instead of the http block's.
Status set_block_resolver(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (!u.resolver_level) u.resolver_level = cx.create_level(Level::Loc);
    Ctx::LevelScope scope(cx, Level::Loc, u.resolver_level);
    const std::vector<Node> one{n};
    return cx.walk(one, conf::kLocation);
}

Status set_match(Ctx& cx, const Node& n) {
    UpstreamMainConf& m = main_conf(cx);
    for (const Match* o : m.matches)
        if (o->name == n.args[0].text) return cx.error(n, "duplicate match " + quoted(n.args[0].text));
    auto* mt = cx.arena().make<Match>();
    if (auto s = parse_match(cx, n, *mt); !s) return s;
    m.matches.push_back(mt);
    return {};
}

// "sticky cookie name [...]" [NGINX Plus]: sticky.h. Applied before the
// method, whichever it is, so it may come before or after it.
Status set_sticky(Ctx& cx, const Node& n, UpstreamMainConf& m) {
    UpstreamConf& u = current(m);
    if (auto s = set_once(cx, n, u, kSetSticky); !s) return s;
    std::vector<std::string_view> args;
    for (const auto& a : n.args) args.push_back(a.text);
    auto c = parse_sticky(args);
    if (!c) return cx.error(n, c.message());
    c->node = &n;
    u.sticky = cx.arena().make<StickyCookie>(std::move(*c));
    return {};
}

// The slots the upstream API adds servers to (runtime_servers.cc): one
// `api` server per tier, primaries and (for a method with backups)
// backups, of as many slots as the zone's size allows, kApiSlotsMax at
// most. Placed after the configured peers of their tier.
void add_api_slots(const UpstreamMainConf& m, UpstreamConf& u) {
    const size_t n = u.api_servers ? *u.api_servers
                     : m.api_servers ? *m.api_servers
                                     : std::min(kApiSlotsMax, u.zone->size() / kZoneBytesPerApiSlot);
    if (n == 0) return;
    // Each server's peers, before u.servers may move.
    std::vector<std::vector<Peer>> per(u.servers.size());
    for (Peer& p : u.peers) per[static_cast<size_t>(p.server - u.servers.data())].push_back(std::move(p));
    for (int backup = 0; backup <= (takes_backup(u.method) ? 1 : 0); ++backup) {
        Server s;
        s.name = backup ? "(api backup)" : "(api)";
        s.where = u.where;
        s.dynamic = true;
        s.api = true;
        s.backup = static_cast<uint8_t>(backup);
        s.naddrs = n;
        u.servers.push_back(std::move(s));
        per.emplace_back(n);
    }
    std::vector<Peer> flat;
    for (auto& v : per)
        for (Peer& p : v) flat.push_back(std::move(p));
    place_peers(u, std::move(flat));
}

// What a group needs once its peers are final: the match block of its
// checks, the ring of "hash ... consistent", its place in the zone.
Status finish_group(Ctx& cx, UpstreamMainConf& m, UpstreamConf& u) {
    if (u.health && !u.health->match_name.empty() && !u.health->match) {
        for (const Match* mt : m.matches)
            if (mt->name == u.health->match_name) u.health->match = mt;
        if (!u.health->match)
            return make_error("match " + quoted(u.health->match_name) + " not found in " + u.health->where);
    }
    if (u.resolves) {
        // The block's own resolver, else the http block's; each of the
        // two settings on its own, as nginx merges them.
        const auto* own = u.resolver_level ? static_cast<const event::ResolverConf*>(
                                                 u.resolver_level[event::resolver_module.index])
                                           : nullptr;
        const event::ResolverConf* http = event::http_resolver_conf(cx);
        u.resolver = own && own->resolver ? own->resolver : http ? http->resolver : nullptr;
        if (!u.resolver)
            return make_error("no resolver defined to resolve names at run time in upstream " + quoted(u.name) +
                              " in " + u.where);
        u.resolver_timeout = own && own->resolver_timeout ? *own->resolver_timeout
                             : http                       ? http->timeout()
                                                          : event::ResolverConf::kDefaultTimeout;
    }
    if (u.zone) {
        add_api_slots(m, u);
        if (u.state_servers.size() > u.peers.size())
            return make_error("state file " + quoted(u.state_path) + " has more servers than upstream " +
                              quoted(u.name) + " has room for in " + u.state_where);
        if (auto s = attach_zone(u, *u.zone, cx.arena()); !s) return make_error(s.message() + " in " + u.where);
        if (auto s = load_state(u); !s) return make_error(s.message() + " in " + u.state_where);
    }
    // After the zone: slots that a previous generation filled have their
    // points too.
    if (u.method == Method::Hash && u.consistent) {
        GroupLock lock(u);
        sync_peers(u);
        build_ring(u);
    }
    return {};
}

// ---- after the whole configuration ------------------------------------------

Status postconfiguration(Ctx& cx) {
    auto* m = cx.conf<UpstreamMainConf>(upstream_module, Level::Main);
    if (!m) return {};
    for (UpstreamConf* u : m->upstreams) {
        if (!u->pending) continue;
        u->pending = false;
        // "proxy_pass http://backend" and "https://backend" above the
        // block are two references (default ports differ); the block took
        // the first. The second gets a copy of the block's servers, with
        // run-time state of its own.
        const UpstreamConf* block = nullptr;
        for (const UpstreamConf* o : m->upstreams)
            if (!o->implicit && iequals(o->name, u->name)) block = o;
        if (block) {
            u->servers = block->servers;
            u->keepalive = block->keepalive;
            u->keepalive_timeout = block->keepalive_timeout;
            u->keepalive_requests = block->keepalive_requests;
            u->keepalive_time = block->keepalive_time;
            u->method = block->method;
            u->hash_key = block->hash_key;
            u->hash_node = block->hash_node;
            u->consistent = block->consistent;
            u->random_two = block->random_two;
            u->least_time_header = block->least_time_header;
            u->sticky = block->sticky;
            u->zone_name = block->zone_name;
            u->zone = block->zone;
            u->api_servers = block->api_servers;
            u->health = block->health;
            u->resolves = block->resolves;
            u->resolver_level = block->resolver_level;
            u->implicit = false;
            std::vector<Peer> flat;
            for (const Server& s : block->servers)
                for (const Peer& p : block->peers)
                    if (p.server == &s) flat.push_back(p);
            place_peers(*u, std::move(flat));
            continue;
        }
        // No block of that name: a host [nginx: "host not found in
        // upstream \"backend\" in file:line" of the first reference].
        auto addrs = resolve_as(u->name, u->default_port, u->name);
        if (!addrs) return make_error(addrs.message() + " in " + u->where);
        set_implicit_peers(*u, std::move(*addrs));
    }
    for (UpstreamConf* u : m->upstreams)
        if (auto s = finish_group(cx, *m, *u); !s) return s;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"upstream", conf::kHttp, conf::Block1, conf::custom<open_upstream>()},
    {"server", conf::kUpstream, conf::Take1More, conf::custom<set_server>()},
    {"keepalive", conf::kUpstream, conf::Take1, conf::custom<set_keepalive>()},
    {"keepalive_timeout", conf::kUpstream, conf::Take1, conf::custom<set_keepalive_timeout>()},
    {"keepalive_requests", conf::kUpstream, conf::Take1, conf::custom<set_keepalive_requests>()},
    {"keepalive_time", conf::kUpstream, conf::Take1, conf::custom<set_keepalive_time>()},
    {"least_conn", conf::kUpstream, conf::Take0, conf::custom<set_least_conn>()},
    {"ip_hash", conf::kUpstream, conf::Take0, conf::custom<set_ip_hash>()},
    {"hash", conf::kUpstream, conf::Take12, conf::custom<set_hash>()},
    {"random", conf::kUpstream, conf::Arity{0, 2, false}, conf::custom<set_random>()},
    {"least_time", conf::kUpstream, conf::Take1, conf::custom<set_least_time>()},
    {"zone", conf::kUpstream, conf::Take12, conf::custom<set_zone>()},
    {"health_check", conf::kUpstream, conf::Arity{0, 255, false}, conf::custom<set_health_check>()},
    {"match", conf::kHttp, conf::Block1, conf::custom<set_match>()},
    {"resolver", conf::kUpstream, conf::Take1More, conf::custom<set_block_resolver>()},
    {"resolver_timeout", conf::kUpstream, conf::Take1, conf::custom<set_block_resolver>()},
    {"state", conf::kUpstream, conf::Take1, conf::custom<set_state>()},
    {"api_servers_max", conf::kHttp | conf::kUpstream, conf::Take1, conf::custom<set_api_servers>()},
    {"sticky", conf::kUpstream, conf::Take1More, conf::custom<set_sticky>()},
};

}  // namespace

Result<std::vector<Peer>> resolve(std::string_view address, uint16_t default_port) {
    return resolve_as(address, default_port, address);
}

Result<UpstreamConf*> find_or_add(Ctx& cx, const Node& n, std::string_view target,
                                  uint16_t default_port) {
    UpstreamMainConf& m = main_conf(cx);
    target = strip_unix_uri(target);
    conf::AddressRules rules;
    rules.default_port = default_port;
    auto a = conf::parse_address(target, rules);
    if (!a) return cx.error(n, in_upstream(a.error(), target).message);
    const bool is_unix = a->kind == conf::Address::Kind::Unix;
    const bool bare = !is_unix && !a->port_given;
    std::string host = a->kind == conf::Address::Kind::Inet6 ? "[" + a->host + "]" : a->host;

    if (bare) {
        // Maybe an upstream block, maybe defined below: decided at the end.
        for (UpstreamConf* u : m.upstreams) {
            if (!iequals(u->name, target)) continue;
            if (!u->implicit) return u;
            if (u->pending && u->default_port == default_port) return u;
        }
        auto* u = cx.arena().make<UpstreamConf>();
        u->name = std::string(target);
        u->host = u->name;
        u->implicit = true;
        u->pending = true;
        u->default_port = default_port;
        u->where = n.where();
        m.upstreams.push_back(u);
        return u;
    }

    std::string name = is_unix ? a->text() : host + ":" + std::to_string(a->port);
    for (UpstreamConf* u : m.upstreams) {
        if (!is_unix && !u->implicit && iequals(u->name, host))
            return cx.error(n, "upstream " + quoted(host) + " may not have port " +
                                   std::to_string(a->port));
        if (u->implicit && !u->pending && u->default_port == default_port &&
            iequals(u->name, name))
            return u;
    }
    // nginx names the host alone in this message for a proxy_pass target.
    auto addrs = resolve_as(target, default_port, is_unix ? target : std::string_view(host));
    if (!addrs) return cx.error(n, addrs.message());
    auto* u = cx.arena().make<UpstreamConf>();
    u->name = std::move(name);
    // $proxy_host: the port only when it is not the scheme's; "localhost"
    // for a Unix socket [nginx ngx_http_proxy_set_vars].
    u->host = is_unix ? "localhost"
                      : (a->port == default_port ? host : host + ":" + std::to_string(a->port));
    u->implicit = true;
    u->port = is_unix ? 0 : a->port;
    u->default_port = default_port;
    u->where = n.where();
    set_implicit_peers(*u, std::move(*addrs));
    m.upstreams.push_back(u);
    return u;
}

namespace {

// Worker 0 alone runs the active health checks (health.cc): one prober
// for all workers, the verdicts shared through the zones. Every worker
// takes part in resolving "resolve" servers (resolve.cc).
Status init_worker(const conf::Roots& g, int slot) {
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    auto* m = main ? static_cast<UpstreamMainConf*>(main[upstream_module.index]) : nullptr;
    start_health_checks(m, slot);
    // Every worker: whichever sees an answer expire first asks (resolve.cc).
    start_resolving(m);
    return {};
}

// Idle pooled origin connections would keep a retiring worker alive until
// keepalive_timeout: nginx closes them at shutdown too. The probes stop
// as well: the new generation's worker 0 takes over the checks.
void quit_worker() {
    retire_idle();
    stop_health_checks();
    stop_resolving();
}

// The state files are made by the master and given to the workers, who
// rewrite them at each API change but cannot make files where root keeps
// them.
Status init_master(const conf::Roots& g, const std::optional<conf::WorkerUser>& workers) {
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    auto* m = main ? static_cast<UpstreamMainConf*>(main[upstream_module.index]) : nullptr;
    if (!m) return {};
    for (const UpstreamConf* u : m->upstreams) {
        if (u->state_path.empty()) continue;
        const int fd = ::open(u->state_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return make_error("open() " + quoted(u->state_path) + " failed (" + std::to_string(errno) + ": " +
                              std::strerror(errno) + ")");
        const bool ok = !workers || ::fchown(fd, workers->uid, workers->gid) == 0;
        const int e = errno;
        ::close(fd);
        if (!ok)
            return make_error("fchown() " + quoted(u->state_path) + " failed (" + std::to_string(e) + ": " +
                              std::strerror(e) + ")");
    }
    return {};
}

void exit_worker() {
    stop_resolving();
    stop_health_checks();
    close_idle();
}

}  // namespace

extern const conf::Module upstream_module{
    .name = "upstream",
    .directives = kDirectives,
    .main = conf::level<UpstreamMainConf>(),
    .postconfiguration = postconfiguration,
    .init_master = init_master,
    .init_worker = init_worker,
    .quit_worker = quit_worker,
    .exit_worker = exit_worker,
};

}  // namespace gatehouse::upstream
