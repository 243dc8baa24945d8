// "redis NAME { ... }" (see redis.h) and the worker's registry of clients.
//
// The block's directives are read here rather than through the registry:
// they exist only inside it, as "match" reads its own lines.
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "conf/parser.h"
#include "conf/registry.h"
#include "conf/values.h"
#include "core/assert.h"
#include "event/worker.h"
#include "tls/context.h"
#include "tls/params.h"
#include "upstream/redis.h"

namespace gatehouse::upstream {

using event::Callback;
using event::Loop;
using event::Msec;

namespace {

using conf::Ctx;
using conf::Level;
using conf::Node;

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// "server 10.0.0.7:6379 [password=...] [user=...]", "server unix:/path".
// A name is looked up now (the master, at configuration time, may block;
// a worker never does) and its first address taken.
Status set_server(Ctx& cx, const Node& n, RedisSpec& s, std::string& written_host) {
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
    written_host = a->host;
    if (a->kind != conf::Address::Kind::Name) {
        s.host = a->host;
        s.port = a->port;
        s.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&a->sa));
        return {};
    }
    const auto found = conf::lookup_host(a->host, a->port, SOCK_STREAM);
    if (found.empty()) return cx.error(n, "host not found in redis server " + quoted(addr));
    const auto* sa = reinterpret_cast<const sockaddr*>(&found[0].sa);
    char host[NI_MAXHOST];
    if (getnameinfo(sa, found[0].len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0)
        return cx.error(n, "host not found in redis server " + quoted(addr));
    s.text = conf::sockaddr_text(sa);
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

// The ssl_* lines of one block as read, turned into a client context
// once the whole block is read (their order does not matter). Each field
// keeps its node, for the file:line of an error about it.
struct SslLines {
    std::optional<bool> on, verify, server_name, session_reuse;
    std::optional<uint64_t> verify_depth;
    std::optional<uint8_t> protocols;
    std::optional<std::string> ciphers, name, certificate, certificate_key, trusted, crl;
    std::optional<std::vector<std::string>> passwords;
    const Node* certificate_node = nullptr;
    const Node* verify_node = nullptr;
    const Node* first = nullptr;  // the first ssl_* line, for errors about the whole
};

// Files are relative to the configuration file's directory, as nginx's.
std::string full_path(Ctx& cx, const std::string& v) { return !v.empty() && v[0] == '/' ? v : cx.conf_dir() + v; }

Status need_one(Ctx& cx, const Node& n) {
    if (n.args.size() != 1) return cx.error(n, "invalid number of arguments in " + quoted(n.name) + " directive");
    return {};
}

Status set_flag(Ctx& cx, const Node& n, std::optional<bool>& f) {
    if (auto s = need_one(cx, n); !s) return s;
    if (f) return cx.duplicate(n);
    auto v = conf::parse_flag(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    f = *v;
    return {};
}

Status set_string(Ctx& cx, const Node& n, std::optional<std::string>& f, bool path) {
    if (auto s = need_one(cx, n); !s) return s;
    if (f) return cx.duplicate(n);
    f = path ? full_path(cx, n.args[0].text) : n.args[0].text;
    return {};
}

// One ssl_* line of a redis block; false in *known when it is none.
Status ssl_line(Ctx& cx, const Node& d, SslLines& l, bool* known) {
    *known = true;
    if (!l.first) l.first = &d;
    const std::string& k = d.name;
    if (k == "ssl") return set_flag(cx, d, l.on);
    if (k == "ssl_verify") {
        l.verify_node = &d;
        return set_flag(cx, d, l.verify);
    }
    if (k == "ssl_server_name") return set_flag(cx, d, l.server_name);
    if (k == "ssl_session_reuse") return set_flag(cx, d, l.session_reuse);
    if (k == "ssl_ciphers") return set_string(cx, d, l.ciphers, false);
    if (k == "ssl_name") return set_string(cx, d, l.name, false);
    if (k == "ssl_certificate") {
        l.certificate_node = &d;
        return set_string(cx, d, l.certificate, true);
    }
    if (k == "ssl_certificate_key") return set_string(cx, d, l.certificate_key, true);
    if (k == "ssl_trusted_certificate") return set_string(cx, d, l.trusted, true);
    if (k == "ssl_crl") return set_string(cx, d, l.crl, true);
    if (k == "ssl_verify_depth") {
        if (auto s = need_one(cx, d); !s) return s;
        if (l.verify_depth) return cx.duplicate(d);
        auto v = conf::parse_number(d.args[0].text);
        if (!v) return cx.invalid(d, v.error());
        l.verify_depth = *v;
        return {};
    }
    if (k == "ssl_protocols") {
        if (d.args.empty()) return cx.error(d, "invalid number of arguments in \"ssl_protocols\" directive");
        if (l.protocols) return cx.duplicate(d);
        std::vector<std::string_view> w;
        for (const auto& a : d.args) w.push_back(a.text);
        auto p = tls::parse_protocols(w);
        if (!p) return cx.invalid(d, p.error());
        l.protocols = *p;
        return {};
    }
    if (k == "ssl_password_file") {
        if (auto s = need_one(cx, d); !s) return s;
        if (l.passwords) return cx.duplicate(d);
        std::string path = full_path(cx, d.args[0].text);
        auto text = conf::read_file(path, 1u << 20);
        if (!text) return cx.invalid(d, text.error());
        auto pw = tls::parse_passwords(*text);
        if (!pw) return cx.error(d, "no passwords in \"" + path + "\"");
        l.passwords = std::move(*pw);
        return {};
    }
    *known = false;
    if (l.first == &d) l.first = nullptr;
    return {};
}

// "ssl on": the client context, built now so that a bad file or value is
// an [emerg] of this configuration, not a failure in every worker.
Status make_tls(Ctx& cx, const Node& block, const SslLines& l, const std::string& written_host, RedisSpec& s) {
    if (!l.on || !*l.on) return {};
    auto* t = cx.arena().make<RedisTls>();
    auto* ctx = cx.arena().make<tls::Context>(tls::Context::Side::Client);
    t->ctx = ctx;
    t->name = l.name ? *l.name : s.unix_socket ? std::string() : written_host;
    t->server_name = l.server_name.value_or(false);
    t->verify = l.verify.value_or(false);
    t->session_reuse = l.session_reuse.value_or(true);
    const Node& at = l.first ? *l.first : block;
    if (l.certificate && !l.certificate_key)
        return cx.error(*l.certificate_node,
                        "no \"ssl_certificate_key\" is defined for certificate \"" + *l.certificate + "\"");
    if (l.certificate) {
        std::span<const std::string> passwords;
        if (l.passwords) passwords = *l.passwords;
        if (auto st = ctx->add_certificate(*l.certificate, *l.certificate_key, passwords); !st)
            return cx.error(*l.certificate_node, st.message());
    }
    if (auto st = ctx->set_protocols(l.protocols.value_or(tls::kDefaultProtocols)); !st)
        return cx.error(at, st.message());
    if (auto st = ctx->set_ciphers(l.ciphers.value_or("DEFAULT"), false); !st) return cx.error(at, st.message());
    if (t->verify) {
        if (!l.trusted) return cx.error(*l.verify_node, "no ssl_trusted_certificate for ssl_verify");
        if (auto st = ctx->add_trusted(*l.trusted); !st) return cx.error(*l.verify_node, st.message());
    }
    if (l.crl)
        if (auto st = ctx->add_crl(*l.crl); !st) return cx.error(at, st.message());
    // OpenSSL takes an int; no chain is longer than 100.
    ctx->verify_peer(t->verify, static_cast<int>(std::min<uint64_t>(l.verify_depth.value_or(1), 100)));
    if (t->session_reuse) ctx->keep_client_sessions();
    s.tls = t;
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
    SslLines ssl;
    std::string written_host;
    for (const Node& d : n.children) {
        Status st;
        bool ssl_known = false;
        if (d.name.starts_with("ssl")) {
            st = ssl_line(cx, d, ssl, &ssl_known);
            if (!st) return st;
            if (ssl_known) continue;
        }
        if (d.name == "server") {
            st = set_server(cx, d, *s, written_host);
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
    if (auto st = make_tls(cx, n, ssl, written_host, *s); !st) return st;
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
