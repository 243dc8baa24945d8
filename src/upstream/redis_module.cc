// "redis NAME { ... }" (see redis.h) and the worker's registry of clients.
//
// The block's directives are read here rather than through the registry:
// they exist only inside it, as "match" reads its own lines.
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>

#include "conf/registry.h"
#include "core/assert.h"
#include "event/worker.h"
#include "upstream/redis.h"

namespace gatehouse::upstream {

namespace {

using conf::Ctx;
using conf::Level;
using conf::Node;

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// "server 10.0.0.7:6379 [password=...] [user=...]", "server unix:/path".
// A name is looked up now (the master, at configuration time, may block;
// a worker never does) and its first address taken.
Status set_server(Ctx& cx, const Node& n, RedisSpec& s) {
    if (!s.host.empty())
        return cx.error(n, "only one \"server\" is allowed in redis " + quoted(s.name) +
                               " (a Redis Cluster is not followed; see gatehouse.conf(5))");
    if (n.args.empty()) return cx.error(n, "invalid number of arguments in \"server\" directive");
    std::string_view addr = n.args[0].text;
    for (size_t i = 1; i < n.args.size(); ++i) {
        std::string_view a = n.args[i].text;
        if (a.starts_with("password=") && a.size() > 9) s.password = std::string(a.substr(9));
        else if (a.starts_with("user=") && a.size() > 5) s.user = std::string(a.substr(5));
        else return cx.error(n, "invalid parameter " + quoted(a));
    }
    if (!s.user.empty() && s.password.empty()) return cx.error(n, "\"user=\" requires \"password=\"");
    if (addr.starts_with("unix:")) {
        s.host = std::string(addr.substr(5));
        if (s.host.empty()) return cx.error(n, "invalid address " + quoted(addr));
        s.unix_socket = true;
        s.text = std::string(addr);
        return {};
    }
    conf::AddressRules rules;
    rules.default_port = 6379;
    rules.unix_path = false;
    auto a = conf::parse_address(addr, rules);
    if (!a) return cx.error(n, a.message());
    if (a->kind != conf::Address::Kind::Name) {
        s.host = a->host;
        s.port = a->port;
        s.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&a->sa));
        return {};
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string port = std::to_string(a->port);
    if (getaddrinfo(a->host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
        return cx.error(n, "host not found in redis server " + quoted(addr));
    char host[NI_MAXHOST];
    const int rc = getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST);
    s.text = conf::sockaddr_text(res->ai_addr);
    freeaddrinfo(res);
    if (rc != 0) return cx.error(n, "host not found in redis server " + quoted(addr));
    s.host = host;
    s.port = a->port;
    return {};
}

Status set_duration(Ctx& cx, const Node& n, conf::Duration& d) {
    if (n.args.size() != 1) return cx.error(n, "invalid number of arguments in " + quoted(n.name) + " directive");
    auto v = conf::parse_duration(n.args[0].text);
    if (!v || v->count() == 0) return cx.error(n, "invalid value " + quoted(n.args[0].text));
    d = *v;
    return {};
}

Status open_redis(Ctx& cx, const Node& n) {
    auto* m = cx.conf<RedisMainConf>(redis_module, Level::Main);
    GH_CHECK(m != nullptr);
    const std::string& name = n.args[0].text;
    for (const RedisSpec* o : m->blocks)
        if (o->name == name) return cx.error(n, "duplicate redis " + quoted(name));
    auto* s = cx.arena().make<RedisSpec>();
    s->name = name;
    s->where = n.where();
    for (const Node& d : n.children) {
        Status st;
        if (d.name == "server") {
            st = set_server(cx, d, *s);
        } else if (d.name == "timeout") {
            st = set_duration(cx, d, s->timeout);
        } else if (d.name == "connect_timeout") {
            st = set_duration(cx, d, s->connect_timeout);
        } else if (d.name == "sync_interval") {
            st = set_duration(cx, d, s->sync_interval);
        } else if (d.name == "sync_batch") {
            auto v = d.args.size() == 1 ? conf::parse_number(d.args[0].text, 10000) : Result<uint64_t>(make_error(""));
            if (!v || *v == 0) st = cx.error(d, "invalid value in \"sync_batch\" directive");
            else s->sync_batch = static_cast<uint32_t>(*v);
        } else {
            st = cx.error(d, "unknown directive " + quoted(d.name));
        }
        if (!st) return st;
    }
    if (s->host.empty()) return cx.error(n, "no \"server\" is defined in redis " + quoted(name));
    m->blocks.push_back(s);
    return {};
}

// The worker's clients, one per block; see worker_redis().
std::vector<std::unique_ptr<RedisClient>>& registry() {
    static std::vector<std::unique_ptr<RedisClient>> r;
    return r;
}

void exit_worker() { registry().clear(); }

constexpr conf::Directive kDirectives[] = {
    {"redis", conf::kHttp, conf::Block1, conf::custom<open_redis>()},
};

}  // namespace

const RedisSpec* find_redis(const conf::Ctx& cx, std::string_view name) {
    auto* m = cx.conf<RedisMainConf>(redis_module, Level::Main);
    if (!m) return nullptr;
    for (const RedisSpec* s : m->blocks)
        if (s->name == name) return s;
    return nullptr;
}

RedisClient& worker_redis(const RedisSpec& spec) {
    auto& reg = registry();
    for (auto& c : reg)
        if (&c->spec() == &spec) return *c;
    reg.push_back(std::make_unique<RedisClient>(event::worker_loop(), spec));
    reg.back()->start();
    return *reg.back();
}

extern const conf::Module redis_module{
    .name = "redis",
    .directives = kDirectives,
    .main = conf::level<RedisMainConf>(),
    .exit_worker = exit_worker,
};

}  // namespace gatehouse::upstream
