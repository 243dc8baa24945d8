// proxy_module: directives, their merge, the variables, the content
// handler, and the pure helpers of proxy.h. The exchange with the origin
// is in proxy_exchange.cc and proxy_response.cc.
#include "http/modules/proxy.h"

#include <arpa/inet.h>
#include <linux/capability.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "conf/registry.h"
#include "core/log.h"
#include "core/str.h"
#include "event/loop.h"
#include "event/resolver.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/core_module.h"
#include "http/modules/proxy_exchange.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/uri.h"
#include "tls/params.h"
#include "upstream/upstream.h"
#include "upstream/sticky.h"

namespace gatehouse::http {

namespace proxy {

namespace {

std::string_view concat(Arena& a, std::initializer_list<std::string_view> parts) {
    size_t n = 0;
    for (std::string_view p : parts) n += p.size();
    if (n == 0) return {};
    char* out = static_cast<char*>(a.alloc(n, 1));
    char* p = out;
    for (std::string_view s : parts) {
        if (!s.empty()) std::memcpy(p, s.data(), s.size());
        p += s.size();
    }
    return {out, n};
}

bool needs_escape(unsigned char c) {
    return c <= 0x20 || c >= 0x7f || c == '"' || c == '#' || c == '%' || c == '?';
}

}  // namespace

Result<Url> parse_url(std::string_view s, bool allow_https) {
    bool ssl = istarts_with(s, "https://");
    if (ssl && !allow_https) return make_error("https protocol requires SSL support");
    if (!ssl && !istarts_with(s, "http://")) return make_error("invalid URL prefix in \"" + std::string(s) + "\"");
    std::string_view rest = s.substr(ssl ? 8 : 7);
    Url u;
    u.ssl = ssl;
    if (istarts_with(rest, "unix:")) {
        // "unix:/path", then ":" and the URI, if any.
        size_t colon = rest.find(':', 5);
        std::string_view path = rest.substr(5, colon == std::string_view::npos ? std::string_view::npos : colon - 5);
        if (path.empty() || path[0] != '/')
            return make_error("no path in the unix domain socket in \"" + std::string(s) + "\"");
        u.target = rest.substr(0, 5 + path.size());
        u.unix_socket = true;
        u.host_header = "localhost";
        if (colon != std::string_view::npos && colon + 1 < rest.size()) {
            u.uri = rest.substr(colon + 1);
            u.has_uri = true;
        }
        return u;
    }
    size_t end = rest.find_first_of("/?");
    std::string_view auth = rest.substr(0, end);
    if (auth.empty()) return make_error("no host in \"" + std::string(s) + "\"");
    std::string_view port;
    bool has_port = false;
    if (auth[0] == '[') {
        size_t close = auth.find(']');
        if (close == std::string_view::npos) return make_error("invalid host in \"" + std::string(s) + "\"");
        if (close + 1 < auth.size()) {
            if (auth[close + 1] != ':') return make_error("invalid host in \"" + std::string(s) + "\"");
            port = auth.substr(close + 2);
            has_port = true;
        }
    } else if (size_t colon = auth.rfind(':'); colon != std::string_view::npos) {
        port = auth.substr(colon + 1);
        has_port = true;
        if (colon == 0) return make_error("no host in \"" + std::string(s) + "\"");
    }
    if (has_port) {
        auto v = conf::parse_number(port, 65535);
        if (!v || *v == 0) return make_error("invalid port in \"" + std::string(s) + "\"");
    }
    u.target = auth;
    u.host_header = auth;
    u.port = has_port ? port : std::string_view(ssl ? "443" : "80");
    if (end != std::string_view::npos) {
        u.uri = rest.substr(end);
        u.has_uri = true;
    }
    return u;
}

size_t escaped_uri_size(std::string_view in) { return escaped_size(in, needs_escape); }

size_t escape_uri(std::string_view in, char* out) { return escape(in, out, needs_escape); }

std::string_view origin_uri(Arena& a, const UriParts& p) {
    // With variables, a URI part is the whole URI, as written [nginx].
    if (p.vars && p.has_uri) return p.pass_uri.empty() ? std::string_view("/") : p.pass_uri;
    if (!p.has_uri && p.unparsed_valid) return p.unparsed_uri.empty() ? std::string_view("/") : p.unparsed_uri;
    // The decoded URI, with the location's prefix replaced by the URI part
    // when both still apply.
    std::string_view prefix;
    std::string_view tail = p.uri;
    if (p.has_uri && p.location_valid) {
        prefix = p.pass_uri;
        if (!p.location.empty() && tail.substr(0, p.location.size()) == p.location)
            tail.remove_prefix(p.location.size());
    }
    size_t esc = escaped_uri_size(tail);
    size_t n = prefix.size() + esc + (p.args.empty() ? 0 : 1 + p.args.size());
    if (n == 0) return "/";
    char* out = static_cast<char*>(a.alloc(n, 1));
    char* w = out;
    if (!prefix.empty()) std::memcpy(w, prefix.data(), prefix.size());
    w += prefix.size();
    w += escape_uri(tail, w);
    if (!p.args.empty()) {
        *w++ = '?';
        std::memcpy(w, p.args.data(), p.args.size());
        w += p.args.size();
    }
    return {out, static_cast<size_t>(w - out)};
}

namespace {
// A name's length and its first letter lowercased: names of one length
// that start alike are rare, so a field is compared with one name at
// most, and most names (Cache-Control, Expires) with none.
constexpr uint32_t length_and_initial(size_t len, char first) {
    return static_cast<uint32_t>(len) << 8 | static_cast<unsigned char>(first | 0x20);
}

// n's key for those switches; 0, which no case has, for an empty name or
// one too long to have a key.
uint32_t key_of(std::string_view n) {
    return n.empty() || n.size() > 0xffffff ? 0 : length_and_initial(n.size(), n[0]);
}

// n, whose key matched name's (so of its length), is name in any case.
bool is(std::string_view n, std::string_view name) { return iequals_bytes(n.data(), name.data(), name.size()); }
}  // namespace

bool is_hop_by_hop_request(std::string_view n) {
    switch (key_of(n)) {
    case length_and_initial(2, 't'): return is(n, "TE");
    case length_and_initial(6, 'e'): return is(n, "Expect");
    case length_and_initial(7, 't'): return is(n, "Trailer");
    case length_and_initial(7, 'u'): return is(n, "Upgrade");
    case length_and_initial(10, 'c'): return is(n, "Connection");
    case length_and_initial(10, 'k'): return is(n, "Keep-Alive");
    case length_and_initial(14, 'c'): return is(n, "Content-Length");
    case length_and_initial(17, 't'): return is(n, "Transfer-Encoding");
    default: return n.size() >= 6 && (n[0] | 0x20) == 'p' && istarts_with(n, "Proxy-");
    }
}

ResponseField classify_response_field(std::string_view n) {
    using F = ResponseField;
    switch (key_of(n)) {
    case length_and_initial(2, 't'): return is(n, "TE") ? F::HopByHop : F::Other;
    case length_and_initial(4, 'd'): return is(n, "Date") ? F::Hidden : F::Other;
    case length_and_initial(4, 'e'): return is(n, "ETag") ? F::ETag : F::Other;
    case length_and_initial(5, 'x'): return is(n, "X-Pad") ? F::Hidden : F::Other;
    case length_and_initial(6, 's'): return is(n, "Server") ? F::Hidden : F::Other;
    case length_and_initial(7, 'u'): return is(n, "Upgrade") ? F::Upgrade : F::Other;
    case length_and_initial(7, 't'): return is(n, "Trailer") ? F::HopByHop : F::Other;
    case length_and_initial(7, 'r'): return is(n, "Refresh") ? F::Refresh : F::Other;
    case length_and_initial(8, 'l'): return is(n, "Location") ? F::Location : F::Other;
    case length_and_initial(10, 'c'): return is(n, "Connection") ? F::Connection : F::Other;
    case length_and_initial(10, 'k'): return is(n, "Keep-Alive") ? F::HopByHop : F::Other;
    case length_and_initial(12, 'c'): return is(n, "Content-Type") ? F::ContentType : F::Other;
    case length_and_initial(13, 'l'): return is(n, "Last-Modified") ? F::LastModified : F::Other;
    case length_and_initial(14, 'c'): return is(n, "Content-Length") ? F::HopByHop : F::Other;
    case length_and_initial(16, 'p'): return is(n, "Proxy-Connection") ? F::HopByHop : F::Other;
    case length_and_initial(17, 't'): return is(n, "Transfer-Encoding") ? F::HopByHop : F::Other;
    default: break;
    }
    if (n.size() < 8 || (n[0] | 0x20) != 'x' || !istarts_with(n, "X-Accel-")) return F::Other;
    if (n.size() == 17 && is(n, "X-Accel-Buffering")) return F::AccelBuffering;
    if (n.size() == 18 && is(n, "X-Accel-Limit-Rate")) return F::AccelLimitRate;
    if (n.size() == 15 && is(n, "X-Accel-Charset")) return F::AccelCharset;
    return F::Hidden;
}

bool is_hop_by_hop_response(std::string_view n) {
    const ResponseField f = classify_response_field(n);
    return f == ResponseField::Connection || f == ResponseField::Upgrade || f == ResponseField::HopByHop;
}

bool is_hidden_by_default(std::string_view n) {
    const ResponseField f = classify_response_field(n);
    return f == ResponseField::Hidden || f == ResponseField::AccelBuffering || f == ResponseField::AccelLimitRate ||
           f == ResponseField::AccelCharset;
}

bool connection_lists(std::string_view v, std::string_view name) {
    while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view t = v.substr(0, comma);
        while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
        while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
        if (iequals(t, name)) return true;
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
    }
    return false;
}

std::optional<std::string_view> rewrite_prefix(Arena& a, std::string_view value, std::string_view redirect,
                                               std::string_view replacement) {
    if (redirect.empty() || value.substr(0, redirect.size()) != redirect) return std::nullopt;
    return concat(a, {replacement, value.substr(redirect.size())});
}

size_t refresh_url_offset(std::string_view v) {
    for (size_t i = 0; i + 4 <= v.size(); ++i)
        if (iequals(v.substr(i, 4), "url=")) return i + 4;
    return std::string_view::npos;
}

bool is_idempotent(std::string_view m) {
    return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE";
}

bool parse_local_addr(std::string_view s, upstream::LocalAddr& out) {
    conf::AddressRules rules;
    rules.default_port = 0;
    rules.unix_path = false;
    rules.names = false;
    auto a = conf::parse_address(s, rules);
    if (!a || (a->kind != conf::Address::Kind::Inet && a->kind != conf::Address::Kind::Inet6)) return false;
    out.sa = a->sa;
    out.sa_len = a->sa_len;
    return true;
}

}  // namespace proxy

// ---- configuration ------------------------------------------------------------------

namespace {

using conf::Ctx;
using conf::Level;
using conf::Node;
using proxy::Pass;

Next run_proxy(Request& r);

bool has_variables(std::string_view s) {
    for (size_t i = 0; i < s.size(); ++i) {
        std::string_view name;
        if (s[i] == '$' && parse_var_ref(s.substr(i), &name) > 0) return true;
    }
    return false;
}

Status set_pass(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.pass) return cx.duplicate(n);
    auto* lc = cx.conf<LocConf>(http_core_module, Level::Loc);
    GH_CHECK(lc != nullptr);  // a location or "if" directive
    if (lc->content_handler) return cx.error(n, "\"proxy_pass\" conflicts with another content handler here");
    const std::string& text = n.args[0].text;
    auto* p = cx.arena().make<Pass>();
    p->url = text;
    bool regexish = lc->match == LocMatch::Regex || lc->match == LocMatch::RegexCaseless ||
                    lc->match == LocMatch::Named || cx.context() == conf::kIf ||
                    cx.context() == conf::kLimitExcept;
    if (has_variables(text)) {
        // Resolved per request: an upstream block by name, or an address
        // (no resolver: host names are looked up at config load only).
        // Only the scheme can be checked now, as far as it is written out:
        // "http:/$uri" may become "http://name/..." [nginx checks it per
        // request only].
        if (istarts_with(text, "https://"))
            return cx.error(n, "https protocol requires SSL support");
        const std::string_view literal = std::string_view(text).substr(0, text.find('$'));
        if (!istarts_with(literal, "http://") && !istarts_with("http://", literal))
            return cx.error(n, "invalid URL prefix in \"" + text + "\"");
        auto cv = ComplexValue::compile(cx, n, text);
        if (!cv) return cv.error();
        p->url_value = std::move(*cv);
    } else {
        auto url = proxy::parse_url(text);
        if (!url) return cx.error(n, url.message());
        if (url->has_uri && regexish)
            return cx.error(n,
                            "\"proxy_pass\" cannot have URI part in location given by regular expression, "
                            "or inside named location, or inside \"if\" statement, or inside "
                            "\"limit_except\" block");
        auto up = upstream::find_or_add(cx, n, url->target, url->ssl ? 443 : 80);
        if (!up) return up.error();
        if (url->ssl && url->unix_socket) return cx.error(n, "https over a unix domain socket is not supported");
        p->ssl = url->ssl;
        p->node = &n;
        if (url->ssl) {
            auto* m = cx.conf<ProxyMainConf>(proxy_module, Level::Main);
            GH_CHECK(m != nullptr);
            m->https_passes.emplace_back(&pc, p);
        }
        p->upstream = *up;
        p->uri = std::string(url->uri);
        p->has_uri = url->has_uri;
        p->host_header = std::string(url->host_header);
        p->port = std::string(url->port);
    }
    if (!regexish) p->location = lc->name;
    pc.pass = p;
    pc.pass_loc = lc;
    lc->content_handler = run_proxy;
    lc->auto_redirect = true;
    return {};
}

Status set_ssl_name(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.ssl_name) return cx.duplicate(n);
    auto cv = ComplexValue::compile(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    pc.ssl_name = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

Status set_ssl_protocols(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.ssl_protocols) return cx.duplicate(n);
    std::vector<std::string_view> w;
    for (const auto& a : n.args) w.push_back(a.text);
    auto p = tls::parse_protocols(w);
    if (!p) return cx.invalid(n, p.error());
    pc.ssl_protocols = *p;
    return {};
}

// Files are relative to the configuration file's directory, as nginx's.
Status set_ssl_path(Ctx& cx, const Node& n, std::optional<std::string>& field) {
    if (field) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    field = !v.empty() && v[0] == '/' ? v : cx.conf_dir() + v;
    return {};
}

Status set_ssl_trusted(Ctx& cx, const Node& n, ProxyConf& pc) {
    return set_ssl_path(cx, n, pc.ssl_trusted_certificate);
}
// proxy_ssl_certificate, proxy_ssl_certificate_key: a path, "" (none,
// cancelling an inherited one), or a value with variables [nginx 1.21].
template <std::optional<std::string> ProxyConf::*Field, const ComplexValue* ProxyConf::*Var>
Status set_ssl_cert_file(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.*Field) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    auto cv = ComplexValue::compile(cx, n, v);
    if (!cv) return cv.error();
    if (!cv->literal()) {
        pc.*Var = cx.arena().make<ComplexValue>(std::move(*cv));
        pc.*Field = std::string();
        pc.ssl_cert_dir = cx.conf_dir();
        return {};
    }
    if (v.empty()) {
        pc.*Field = std::string();
        return {};
    }
    return set_ssl_path(cx, n, pc.*Field);
}
Status set_ssl_crl(Ctx& cx, const Node& n, ProxyConf& pc) { return set_ssl_path(cx, n, pc.ssl_crl); }
Status set_ssl_key_log(Ctx& cx, const Node& n, ProxyConf& pc) { return set_ssl_path(cx, n, pc.ssl_key_log); }

Status set_ssl_password_file(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.ssl_passwords) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    std::string path = !v.empty() && v[0] == '/' ? v : cx.conf_dir() + v;
    auto text = conf::read_file(path, 1u << 20);
    if (!text) return cx.invalid(n, text.error());
    auto pw = tls::parse_passwords(*text);
    if (!pw) return cx.error(n, "no passwords in \"" + path + "\"");
    pc.ssl_passwords = std::move(*pw);
    return {};
}

Status set_ssl_conf_command(Ctx&, const Node& n, ProxyConf& pc) {
    if (!pc.ssl_conf_commands) pc.ssl_conf_commands.emplace();
    pc.ssl_conf_commands->emplace_back(n.args[0].text, n.args[1].text);
    return {};
}

// "proxy_headers_hash_*": a positive size, as nginx checks it.
template <auto Member>
Status set_hash_size(Ctx& cx, const Node& n, ProxyConf& pc) {
    if ((pc.*Member).has_value()) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    if (*v == 0) return cx.invalid(n, make_error("invalid value \"" + n.args[0].text + "\""));
    pc.*Member = *v;
    return {};
}

Status set_http_version(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.http_version) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "1.0") pc.http_version = 10;
    else if (v == "1.1") pc.http_version = 11;
    else return cx.error(n, "invalid value \"" + v + "\", it must be \"1.0\" or \"1.1\"");
    return {};
}

Status set_header(Ctx& cx, const Node& n, ProxyConf& pc) {
    const std::string& name = n.args[0].text;
    const std::string& value = n.args[1].text;
    if (name.empty()) return cx.error(n, "empty header name");
    // The proxy frames the body itself; a value of its own here could make
    // the origin read the body differently (smuggling). An empty one, which
    // nginx configurations use to drop the field, is what happens anyway.
    if ((iequals(name, "Content-Length") || iequals(name, "Transfer-Encoding")) &&
        !value.empty())
        return cx.error(n, "\"proxy_set_header\" cannot set \"" + name + "\": the proxy frames the body itself");
    auto cv = ComplexValue::compile(cx, n, value);
    if (!cv) return cv.error();
    if (!pc.set_headers) pc.set_headers = cx.arena().make<std::vector<proxy::SetHeader>>();
    pc.set_headers->push_back({name, std::move(*cv)});
    return {};
}

Status set_method(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.method) return cx.duplicate(n);
    auto cv = ComplexValue::compile(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    pc.method = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

Status set_set_body(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.set_body) return cx.duplicate(n);
    auto cv = ComplexValue::compile(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    pc.set_body = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

Status add_name(Ctx& cx, const Node& n, std::vector<std::string>*& list) {
    if (!list) list = cx.arena().make<std::vector<std::string>>();
    list->push_back(n.args[0].text);
    return {};
}

Status set_hide_header(Ctx& cx, const Node& n, ProxyConf& pc) { return add_name(cx, n, pc.hide_headers); }
Status set_pass_header(Ctx& cx, const Node& n, ProxyConf& pc) { return add_name(cx, n, pc.pass_headers); }

// The two arguments of a proxy_redirect or proxy_cookie_* rule: a
// literal with variables, or "~regex" ("~*": without case; `caseless`:
// always), then the replacement.
Status compile_rule(Ctx& cx, const Node& n, bool caseless, proxy::Redirect& rd) {
    const std::string& a0 = n.args[0].text;
    if (a0.size() > 1 && a0[0] == '~') {
        const bool star = a0.size() > 2 && a0[1] == '*';
        auto re = CaptureRegex::compile(cx, n, std::string_view(a0).substr(star ? 2 : 1), caseless || star);
        if (!re) return re.error();
        rd.kind = proxy::Redirect::Kind::Regex;
        rd.regex = std::make_unique<CaptureRegex>(std::move(*re));
    } else {
        auto cv = ComplexValue::compile(cx, n, a0);
        if (!cv) return cv.error();
        rd.kind = proxy::Redirect::Kind::Literal;
        rd.redirect = std::move(*cv);
    }
    auto rep = ComplexValue::compile(cx, n, n.args[1].text);
    if (!rep) return rep.error();
    rd.replacement = std::move(*rep);
    return {};
}

Status set_redirect(Ctx& cx, const Node& n, ProxyConf& pc) {
    const std::string& a0 = n.args[0].text;
    if (n.args.size() == 1) {
        if (a0 == "off") {
            pc.redirect_off = true;
            pc.redirects = nullptr;
            return {};
        }
        if (a0 != "default") return cx.error(n, "invalid parameter \"" + a0 + "\"");
    }
    // nginx: rules after "off" on the same level are ignored.
    if (pc.redirect_off.value_or(false)) return {};
    pc.redirect_off = false;
    if (!pc.redirects) pc.redirects = cx.arena().make<std::vector<const proxy::Redirect*>>();
    auto* rd = cx.arena().make<proxy::Redirect>();
    if (n.args.size() == 1) {
        if (pc.pass && pc.pass->url_value)
            return cx.error(n, "\"proxy_redirect default\" cannot be used with \"proxy_pass\" directive with variables");
        rd->kind = proxy::Redirect::Kind::Default;
    } else if (auto s = compile_rule(cx, n, false, *rd); !s) {
        return s;
    }
    pc.redirects->push_back(rd);
    return {};
}

// proxy_cookie_domain off | domain replacement
// proxy_cookie_path off | path replacement
template <bool Domain>
Status set_cookie_rule(Ctx& cx, const Node& n, ProxyConf& pc) {
    auto& rules = Domain ? pc.cookie_domains : pc.cookie_paths;
    bool& set = Domain ? pc.cookie_domains_set : pc.cookie_paths_set;
    const std::string& a0 = n.args[0].text;
    if (n.args.size() == 1) {
        if (a0 != "off") return cx.error(n, "invalid parameter \"" + a0 + "\"");
        if (set) return cx.duplicate(n);
        set = true;
        rules = nullptr;
        return {};
    }
    // nginx: rules after "off" on the same level are ignored.
    if (set && !rules) return {};
    set = true;
    if (!rules) rules = cx.arena().make<std::vector<const proxy::Redirect*>>();
    auto* rule = cx.arena().make<proxy::Redirect>();
    // Domains compare without case; paths with it, unless "~*".
    if (auto s = compile_rule(cx, n, Domain, *rule); !s) return s;
    rules->push_back(rule);
    return {};
}

// proxy_bind address [transparent] | off
Status set_bind(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.bind_set) return cx.duplicate(n);
    pc.bind_set = true;
    const std::string& a0 = n.args[0].text;
    if (n.args.size() == 1 && a0 == "off") return {};
    if (n.args.size() == 2) {
        if (n.args[1].text != "transparent") return cx.error(n, "invalid parameter \"" + n.args[1].text + "\"");
        pc.bind_transparent = true;
        cx.conf<ProxyMainConf>(proxy_module, conf::Level::Main)->transparent = true;
    }
    auto cv = ComplexValue::compile(cx, n, a0);
    if (!cv) return cv.error();
    if (!cv->literal()) {
        pc.bind = cx.arena().make<ComplexValue>(std::move(*cv));
        return {};
    }
    auto* la = cx.arena().make<upstream::LocalAddr>();
    if (!proxy::parse_local_addr(a0, *la)) return cx.error(n, "invalid address \"" + a0 + "\"");
    la->text = cx.arena().dup(a0);
    la->transparent = pc.bind_transparent;
    pc.bind_addr = la;
    return {};
}

Status set_limit_rate(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.limit_rate_set) return cx.duplicate(n);
    auto cv = compile_size(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    pc.limit_rate = *cv;
    pc.limit_rate_set = true;
    return {};
}

// proxy_cookie_flags off | cookie [flag ...]
Status set_cookie_flags(Ctx& cx, const Node& n, ProxyConf& pc) {
    const std::string& a0 = n.args[0].text;
    if (n.args.size() == 1 && a0 == "off") {
        if (pc.cookie_flags_set) return cx.duplicate(n);
        pc.cookie_flags_set = true;
        pc.cookie_flags = nullptr;
        return {};
    }
    if (pc.cookie_flags_set && !pc.cookie_flags) return {};  // after "off", as the other rules
    pc.cookie_flags_set = true;
    auto* rule = cx.arena().make<proxy::CookieFlags>();
    if (a0.size() > 1 && a0[0] == '~') {
        auto re = CaptureRegex::compile(cx, n, std::string_view(a0).substr(1), true);
        if (!re) return re.error();
        rule->regex = std::make_unique<CaptureRegex>(std::move(*re));
    } else {
        auto cv = ComplexValue::compile(cx, n, a0);
        if (!cv) return cv.error();
        rule->name = std::move(*cv);
    }
    for (size_t i = 1; i < n.args.size(); ++i) {
        auto cv = ComplexValue::compile(cx, n, n.args[i].text);
        if (!cv) return cv.error();
        if (!cv->literal()) {
            rule->dynamic.push_back(std::move(*cv));
        } else if (!proxy::parse_cookie_flag(n.args[i].text, rule->fixed)) {
            return cx.error(n, "invalid parameter \"" + n.args[i].text + "\"");
        }
    }
    if (!pc.cookie_flags) pc.cookie_flags = cx.arena().make<std::vector<const proxy::CookieFlags*>>();
    pc.cookie_flags->push_back(rule);
    return {};
}

Status set_buffers(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.buffers_num) return cx.duplicate(n);
    auto num = conf::parse_number(n.args[0].text, 1u << 16);
    if (!num) return cx.invalid(n, num.error());
    if (*num < 2) return cx.error(n, "there must be at least 2 \"proxy_buffers\"");
    auto size = conf::parse_size(n.args[1].text);
    if (!size) return cx.invalid(n, size.error());
    if (*size == 0) return cx.error(n, "invalid value \"" + n.args[1].text + "\"");
    pc.buffers_num = *num;
    pc.buffers_size = *size;
    return {};
}

Status set_nonzero_size(Ctx& cx, const Node& n, std::optional<uint64_t>& field) {
    if (field) return cx.duplicate(n);
    auto size = conf::parse_size(n.args[0].text);
    if (!size) return cx.invalid(n, size.error());
    if (*size == 0) return cx.error(n, "invalid value \"" + n.args[0].text + "\"");
    field = *size;
    return {};
}

Status set_buffer_size(Ctx& cx, const Node& n, ProxyConf& pc) { return set_nonzero_size(cx, n, pc.buffer_size); }
Status set_busy_size(Ctx& cx, const Node& n, ProxyConf& pc) {
    return set_nonzero_size(cx, n, pc.busy_buffers_size);
}
Status set_write_size(Ctx& cx, const Node& n, ProxyConf& pc) {
    return set_nonzero_size(cx, n, pc.temp_file_write_size);
}

Status set_proxy_temp(Ctx& cx, const Node& n, ProxyConf& pc) { return set_temp_path(cx, n, pc.temp_path); }

Status set_next_upstream(Ctx& cx, const Node& n, ProxyConf& pc) {
    if (pc.next_upstream) return cx.duplicate(n);
    static constexpr std::pair<std::string_view, uint16_t> kNames[] = {
        {"error", upstream::kNextError},        {"timeout", upstream::kNextTimeout},
        {"invalid_header", upstream::kNextInvalidHeader}, {"http_500", upstream::kNextHttp500},
        {"http_502", upstream::kNextHttp502},   {"http_503", upstream::kNextHttp503},
        {"http_504", upstream::kNextHttp504},   {"http_403", upstream::kNextHttp403},
        {"http_404", upstream::kNextHttp404},   {"http_429", upstream::kNextHttp429},
        {"non_idempotent", upstream::kNextNonIdempotent}, {"off", upstream::kNextOff},
    };
    uint16_t mask = 0;
    for (const conf::Arg& a : n.args) {
        bool found = false;
        for (const auto& [name, bit] : kNames)
            if (a.text == name) {
                mask |= bit;
                found = true;
            }
        if (!found) return cx.error(n, "invalid value \"" + a.text + "\"");
    }
    if ((mask & upstream::kNextOff) && mask != upstream::kNextOff)
        return cx.error(n, "\"off\" cannot be combined with other values");
    pc.next_upstream = mask;
    return {};
}

// Several directives add up, as nginx's bit masks do.
Status set_ignore_headers(Ctx& cx, const Node& n, ProxyConf& pc) {
    static constexpr std::string_view kKnown[] = {"X-Accel-Redirect", "X-Accel-Expires", "X-Accel-Limit-Rate",
                                                  "X-Accel-Buffering", "X-Accel-Charset", "Expires",
                                                  "Cache-Control", "Set-Cookie", "Vary"};
    uint16_t mask = 0;
    for (const conf::Arg& a : n.args) {
        bool known = false;
        for (std::string_view k : kKnown)
            if (iequals(a.text, k)) known = true;
        if (!known) return cx.error(n, "invalid value \"" + a.text + "\"");
        static constexpr std::pair<std::string_view, uint16_t> kBits[] = {
            {"X-Accel-Buffering", proxy::kIgnoreXAccelBuffering}, {"X-Accel-Expires", proxy::kIgnoreXAccelExpires},
            {"X-Accel-Limit-Rate", proxy::kIgnoreXAccelLimitRate}, {"X-Accel-Redirect", proxy::kIgnoreXAccelRedirect},
            {"Expires", proxy::kIgnoreExpires},       {"Cache-Control", proxy::kIgnoreCacheControl},
            {"Set-Cookie", proxy::kIgnoreSetCookie},  {"Vary", proxy::kIgnoreVary},
            {"X-Accel-Charset", proxy::kIgnoreXAccelCharset}};
        for (const auto& [name, bit] : kBits)
            if (iequals(a.text, name)) mask |= bit;
    }
    pc.ignore_headers = pc.ignore_headers.value_or(0) | mask;
    return {};
}

void merge(const ProxyConf& up, ProxyConf& c) {
    using namespace std::chrono_literals;
    // Inherited by "if" and limit_except blocks, which proxy with the
    // handler of their location (Request::content_handler); a nested
    // location inherits it too, but has no handler of its own to run it.
    if (!c.pass) {
        c.pass = up.pass;
        c.pass_loc = up.pass_loc;
    }
    conf::inherit(c.http_version, up.http_version, 11);
    if (!c.set_headers) c.set_headers = up.set_headers;
    conf::inherit(c.pass_request_headers, up.pass_request_headers, true);
    conf::inherit(c.pass_request_body, up.pass_request_body, true);
    if (!c.method) c.method = up.method;
    if (!c.set_body) c.set_body = up.set_body;
    if (!c.hide_headers) c.hide_headers = up.hide_headers;
    if (!c.pass_headers) c.pass_headers = up.pass_headers;
    if (!c.cookie_domains_set) c.cookie_domains = up.cookie_domains;
    if (!c.cookie_paths_set) c.cookie_paths = up.cookie_paths;
    if (!c.cookie_flags_set) c.cookie_flags = up.cookie_flags;
    if (!c.limit_rate_set) c.limit_rate = up.limit_rate;
    conf::inherit(c.pass_trailers, up.pass_trailers, false);
    if (!c.bind_set) {
        c.bind_addr = up.bind_addr;
        c.bind = up.bind;
        c.bind_transparent = up.bind_transparent;
    }
    if (!c.redirect_off) {
        c.redirect_off = up.redirect_off;
        c.redirects = up.redirects;
    }
    conf::inherit(c.intercept_errors, up.intercept_errors, false);
    conf::inherit(c.force_ranges, up.force_ranges, false);
    conf::inherit(c.ignore_client_abort, up.ignore_client_abort, false);
    conf::inherit(c.buffering, up.buffering, true);
    conf::inherit(c.request_buffering, up.request_buffering, true);
    conf::inherit(c.splice, up.splice, true);
    conf::inherit(c.buffer_size, up.buffer_size, 4096);
    if (!c.buffers_num) {
        c.buffers_num = up.buffers_num ? *up.buffers_num : 8;
        c.buffers_size = up.buffers_size ? *up.buffers_size : 4096;
    }
    uint64_t larger = std::max(*c.buffer_size, *c.buffers_size);
    conf::inherit(c.busy_buffers_size, up.busy_buffers_size, 2 * larger);
    conf::inherit(c.max_temp_file_size, up.max_temp_file_size, uint64_t{1} << 30);
    conf::inherit(c.temp_file_write_size, up.temp_file_write_size, 2 * larger);
    conf::inherit(c.temp_path, up.temp_path);
    conf::inherit(c.connect_timeout, up.connect_timeout, 60s);
    conf::inherit(c.send_timeout, up.send_timeout, 60s);
    conf::inherit(c.read_timeout, up.read_timeout, 60s);
    conf::inherit(c.next_upstream, up.next_upstream, upstream::kNextError | upstream::kNextTimeout);
    conf::inherit(c.next_upstream_tries, up.next_upstream_tries, 0);
    conf::inherit(c.next_upstream_timeout, up.next_upstream_timeout, 0ms);
    conf::inherit(c.ignore_headers, up.ignore_headers, 0);
    conf::inherit(c.socket_keepalive, up.socket_keepalive, false);
    conf::inherit(c.ssl_server_name, up.ssl_server_name, false);
    if (!c.ssl_name) c.ssl_name = up.ssl_name;
    conf::inherit(c.ssl_verify, up.ssl_verify, false);
    conf::inherit(c.ssl_verify_depth, up.ssl_verify_depth, 1);
    conf::inherit(c.ssl_trusted_certificate, up.ssl_trusted_certificate);
    // A certificate and its key go together: both from the same level.
    if (!c.ssl_certificate && !c.ssl_certificate_key) {
        c.ssl_certificate = up.ssl_certificate;
        c.ssl_certificate_key = up.ssl_certificate_key;
        c.ssl_certificate_var = up.ssl_certificate_var;
        c.ssl_certificate_key_var = up.ssl_certificate_key_var;
        c.ssl_cert_dir = up.ssl_cert_dir;
    }
    conf::inherit(c.ssl_protocols, up.ssl_protocols, tls::kDefaultProtocols);
    conf::inherit(c.ssl_ciphers, up.ssl_ciphers, std::string("DEFAULT"));
    conf::inherit(c.ssl_session_reuse, up.ssl_session_reuse, true);
    conf::inherit(c.ssl_passwords, up.ssl_passwords);
    conf::inherit(c.ssl_crl, up.ssl_crl);
    conf::inherit(c.ssl_key_log, up.ssl_key_log);
    conf::inherit(c.ssl_conf_commands, up.ssl_conf_commands);
    conf::inherit(c.headers_hash_max_size, up.headers_hash_max_size, 512);
    conf::inherit(c.headers_hash_bucket_size, up.headers_hash_bucket_size, 64);
}

Status postconfiguration(Ctx& cx) {
    if (auto* m = cx.conf<ProxyMainConf>(proxy_module, Level::Main)) {
        m->prefix = cx.prefix();
        add_temp_dir(cx, m->prefix + std::string(kProxyTempDir));
        if (auto st = proxy::build_upstream_tls(cx, *m); !st) return st;
    }
    // "hash key": the upstream layer sits below http and cannot compile
    // variables; the key is compiled here, once per group.
    if (auto* umc = cx.conf<upstream::UpstreamMainConf>(upstream::upstream_module, Level::Main))
        for (upstream::UpstreamConf* u : umc->upstreams) {
            // "sticky cookie ... samesite=$variable", likewise.
            if (upstream::StickyCookie* sc = u->sticky; sc && !sc->samesite_var.empty() && !sc->samesite_value) {
                auto cv = ComplexValue::compile(cx, *sc->node, sc->samesite_var);
                if (!cv) return cv.error();
                sc->samesite_value = cx.arena().make<ComplexValue>(std::move(*cv));
                if (auto* hm = cx.conf<HttpMainConf>(http_core_module, Level::Main))
                    if (auto st = hm->vars.check(); !st) return st;
            }
            if (u->method != upstream::Method::Hash || u->hash_value || !u->hash_node) continue;
            auto cv = ComplexValue::compile(cx, *u->hash_node, u->hash_key);
            if (!cv) return cv.error();
            u->hash_value = cx.arena().make<ComplexValue>(std::move(*cv));
            // Variables first used here were not in the core's check.
            if (auto* hm = cx.conf<HttpMainConf>(http_core_module, Level::Main))
                if (auto st = hm->vars.check(); !st) return st;
        }
    return {};
}

// ---- the content handler -----------------------------------------------------------

upstream::TryLog& upstream_log(Request& r) {
    if (auto* prev = r.ctx<proxy::Exchange>(proxy_module)) return prev->log();
    return *r.arena().make<upstream::TryLog>(r.mem());
}

void log_error(Request& r, std::string_view msg) { log_for_request(r, log::Level::Error, 0, msg); }

// The lookup of proxy_pass's host name at request time, in the request
// arena, kept in the resolver module's slot of the request (the proxy is
// its one user). The request waits suspended; if it dies first (the
// client left: abort_on_client_close), the arena destroys the query,
// which cancels it.
struct HostLookup {
    explicit HostLookup(Request& r) : r(r) { q.done = event::Callback::to<&HostLookup::on_done>(this); }
    void on_done() {
        log::Scope s(&r.log_ctx);
        r.abort_on_client_close = false;
        finished = true;
        post_resume(r);
    }
    Request& r;
    std::string host;  // the name asked, as the URL gave it
    event::ResolveQuery q;
    bool finished = false;
};

// The group of a resolved name for this request: one server, a peer per
// address, tried in turn under proxy_next_upstream as nginx's implicit
// group is. The list starts one further on each lookup in the worker, as
// nginx's resolver rotates it, so that the addresses share the load.
upstream::UpstreamConf* resolved_group(Request& r, const proxy::Url& url, const conf::Address& a,
                                       const std::vector<event::ResolvedAddr>& addrs) {
    static size_t rotate = 0;
    auto* u = r.arena().make<upstream::UpstreamConf>();
    u->name = std::string(url.target);
    u->host = std::string(url.host_header);
    u->implicit = true;
    upstream::Server s;
    s.name = u->name;
    s.naddrs = addrs.size();
    u->servers.push_back(std::move(s));
    const size_t first = rotate++ % addrs.size();
    for (size_t i = 0; i < addrs.size(); ++i) {
        const event::ResolvedAddr& ra = addrs[(first + i) % addrs.size()];
        upstream::Peer p;
        p.server = &u->servers[0];
        std::memcpy(&p.sa, &ra.sa, ra.len);
        p.sa_len = ra.len;
        if (p.sa.ss_family == AF_INET)
            reinterpret_cast<sockaddr_in*>(&p.sa)->sin_port = htons(a.port);
        else
            reinterpret_cast<sockaddr_in6*>(&p.sa)->sin6_port = htons(a.port);
        p.text = conf::sockaddr_text(reinterpret_cast<const sockaddr*>(&p.sa));
        u->peers.push_back(std::move(p));
    }
    u->backup_start = u->peers.size();
    return u;
}

// A host name through the location's resolver: the group once the answer
// is in, else null with `next` set (Suspend while waiting, or the 502).
upstream::UpstreamConf* resolve_host(Request& r, const proxy::Url& url, const conf::Address& a,
                                     const event::ResolverConf& rc, Next& next) {
    auto* lk = r.ctx<HostLookup>(event::resolver_module);
    if (lk && lk->host == a.host && lk->q.pending()) {
        next = Next::Suspend;  // resumed before the answer: wait on
        return nullptr;
    }
    if (!lk || lk->host != a.host || !lk->finished) {
        if (!lk) {
            lk = r.arena().make<HostLookup>(r);
            r.set_ctx(event::resolver_module, lk);
        }
        lk->host = a.host;
        lk->finished = false;
        event::Resolver& res = event::worker_resolver(*rc.resolver);
        if (res.resolve(lk->q, a.host, rc.timeout()) == event::Resolve::Pending) {
            r.abort_on_client_close = true;
            next = Next::Suspend;
            return nullptr;
        }
        lk->finished = true;
    }
    if (lk->q.error != event::ResolveError::None) {
        log_error(r, a.host + " could not be resolved (" + std::to_string(static_cast<int>(lk->q.error)) + ": " +
                         std::string(event::resolve_strerror(lk->q.error)) + ")");
        next = respond_status(r, 502);
        return nullptr;
    }
    return resolved_group(r, url, a, lk->q.addrs);
}

// proxy_pass with variables: an upstream block by that name, an address
// made into a group of one for this request, or a host name resolved now
// through the location's "resolver". Null with `next` set otherwise.
upstream::UpstreamConf* runtime_upstream(Request& r, const proxy::Url& url, Next& next) {
    void* umc = upstream::upstream_module.index < modules.size() ? r.main_confs[upstream::upstream_module.index]
                                                                 : nullptr;
    if (umc) {
        std::string_view host = url.target.substr(0, url.target.rfind(':'));
        for (upstream::UpstreamConf* u : static_cast<upstream::UpstreamMainConf*>(umc)->upstreams) {
            if (!u->implicit && (u->name == url.target || u->name == host)) return u;
            // The group another proxy_pass made for the same host and
            // port (http: variables cannot say https): its addresses were
            // resolved at load [nginx].
            if (u->implicit && !u->pending && u->default_port == 80 && iequals(u->name, url.target)) return u;
        }
    }
    conf::AddressRules rules;
    auto a = conf::parse_address(url.target, rules);
    if (a && a->kind == conf::Address::Kind::Name) {
        const auto& rc = r.loc_conf<event::ResolverConf>(event::resolver_module);
        if (rc.resolver) return resolve_host(r, url, *a, rc, next);
    }
    if (!a || a->kind == conf::Address::Kind::Name) {
        log_error(r, "no resolver defined to resolve \"" + std::string(url.target) + "\"");
        next = respond_status(r, 502);
        return nullptr;
    }
    auto* u = r.arena().make<upstream::UpstreamConf>();
    u->name = a->text();
    u->host = std::string(url.host_header);
    u->implicit = true;
    upstream::Server s;
    s.name = u->name;
    u->servers.push_back(std::move(s));
    upstream::Peer p;
    p.server = &u->servers[0];
    p.sa = a->sa;
    p.sa_len = a->sa_len;
    p.text = u->name;
    u->peers.push_back(std::move(p));
    u->backup_start = u->peers.size();
    return u;
}

Next run_proxy(Request& r) {
    const auto& pc = r.loc_conf<ProxyConf>(proxy_module);
    if (!pc.pass) {
        // An "if" block with proxy_pass matched, then a later one of a
        // location without it: the handler stays, the block has nothing
        // to proxy to [nginx answers 500 too].
        log_error(r, "no upstream configuration");
        return respond_status(r, 500);
    }
    const Pass& pass = *pc.pass;
    upstream::TryLog& log = upstream_log(r);
    proxy::Url url;
    upstream::UpstreamConf* u = pass.upstream;
    if (u) {
        url.uri = pass.uri;
        url.has_uri = pass.has_uri;
        url.host_header = pass.host_header;
        url.port = pass.port;
    } else {
        std::string_view text = pass.url_value->eval(r);
        // TLS settings are built at config time for literal https URLs
        // only.
        auto parsed = proxy::parse_url(text, false);
        if (!parsed) {
            log_error(r, parsed.message());
            return respond_status(r, 500);
        }
        url = *parsed;
        Next next = Next::Decline;
        u = runtime_upstream(r, url, next);
        if (!u) return next;
    }
    auto* ex = r.arena().make<proxy::Exchange>(r, pc, pass, *u, log, url);
    r.set_ctx(proxy_module, ex);
    return ex->start();
}

// The Log phase, before access_log: an exchange cut short by the client
// ends its try first.
Next end_exchange(Request& r) {
    if (auto* ex = r.ctx<proxy::Exchange>(proxy_module)) ex->finish();
    return Next::Decline;
}

// ---- variables ---------------------------------------------------------------------------

proxy::Exchange* exchange(Request& r) { return r.ctx<proxy::Exchange>(proxy_module); }

void v_proxy_host(Request& r, VarValue& v, uintptr_t) {
    if (auto* ex = exchange(r)) {
        v.s = ex->proxy_host();
        return;
    }
    const auto* pc = r.loc_confs ? &r.loc_conf<ProxyConf>(proxy_module) : nullptr;
    if (pc && pc->pass && pc->pass->upstream) {
        v.s = pc->pass->host_header;
        return;
    }
    v.not_found = true;
}

void v_proxy_port(Request& r, VarValue& v, uintptr_t) {
    if (auto* ex = exchange(r)) {
        v.s = ex->proxy_port();
        return;
    }
    const auto* pc = r.loc_confs ? &r.loc_conf<ProxyConf>(proxy_module) : nullptr;
    if (pc && pc->pass && pc->pass->upstream) {
        v.s = pc->pass->port;
        return;
    }
    v.not_found = true;
}

bool is_xff(std::string_view name) {
    return iequals(name, "X-Forwarded-For");
}

void v_add_xff(Request& r, VarValue& v, uintptr_t) {
    std::string_view addr = r.remote_addr();
    size_t total = 0, count = 0;
    for (const HeaderField& h : r.headers)
        if (is_xff(h.name)) {
            total += h.value.size() + 2;
            ++count;
        }
    if (count == 0) {
        v.s = addr;
        return;
    }
    char* out = static_cast<char*>(r.arena().alloc(total + addr.size(), 1));
    char* p = out;
    for (const HeaderField& h : r.headers)
        if (is_xff(h.name)) {
            std::memcpy(p, h.value.data(), h.value.size());
            p += h.value.size();
            *p++ = ',';
            *p++ = ' ';
        }
    std::memcpy(p, addr.data(), addr.size());
    p += addr.size();
    v.s = {out, static_cast<size_t>(p - out)};
}

enum class TryField : uint8_t { Addr, Status, ResponseTime, ConnectTime, HeaderTime, Bytes, Sent, Length };

// "a, b": one value per try, as nginx lists them.
void v_tries(Request& r, VarValue& v, uintptr_t arg) {
    auto* ex = exchange(r);
    if (!ex || ex->log().tries.empty()) {
        v.not_found = true;
        return;
    }
    std::pmr::string s(r.mem());
    auto ms = [&](int64_t t) {
        if (t < 0) {
            s += '-';
            return;
        }
        char b[32];
        int n = snprintf(b, sizeof b, "%lld.%03lld", static_cast<long long>(t / 1000),
                         static_cast<long long>(t % 1000));
        s.append(b, static_cast<size_t>(n));
    };
    bool first = true;
    for (const upstream::TryRecord& t : ex->log().tries) {
        if (!first) s += ", ";
        first = false;
        switch (static_cast<TryField>(arg)) {
            case TryField::Addr: s += t.addr; break;
            case TryField::Status:
                if (t.status == 0) s += '-';
                else s += std::to_string(t.status);
                break;
            case TryField::ResponseTime: ms(t.response_ms); break;
            case TryField::ConnectTime: ms(t.connect_ms); break;
            case TryField::HeaderTime: ms(t.header_ms); break;
            case TryField::Bytes: s += std::to_string(t.bytes); break;
            case TryField::Sent: s += std::to_string(t.sent); break;
            case TryField::Length: s += std::to_string(t.body); break;
        }
    }
    v.s = r.arena().dup(s);
}

void v_upstream_http(Request& r, VarValue& v, uintptr_t arg) {
    auto name = *reinterpret_cast<const std::string_view*>(arg);
    auto* ex = exchange(r);
    if (!ex) {
        v.not_found = true;
        return;
    }
    // Several fields of the name join with ", " (Set-Cookie too), as nginx's.
    join_fields(r, v, ex->log().headers, name, ", ");
}

// $upstream_cookie_NAME: the value of the cookie NAME (compared ignoring
// case, as $cookie_NAME) that the origin set with Set-Cookie.
void v_upstream_cookie(Request& r, VarValue& v, uintptr_t arg) {
    auto name = *reinterpret_cast<const std::string_view*>(arg);
    v.not_found = true;
    auto* ex = exchange(r);
    if (!ex) return;
    for (const auto& h : ex->log().headers) {
        if (!iequals(h.name, "set-cookie")) continue;
        // Set-Cookie: NAME=VALUE *( ";" attribute ) (RFC 6265 4.1.1)
        std::string_view pair = h.value.substr(0, h.value.find(';'));
        const size_t eq = pair.find('=');
        if (eq == std::string_view::npos) continue;
        // Spaces around the name and the value go; a tab is part of them,
        // as in $cookie_NAME and nginx (RFC 6265 5.2 would take tabs too).
        std::string_view n = pair.substr(0, eq);
        while (!n.empty() && n.back() == ' ') n.remove_suffix(1);
        if (!iequals(n, name)) continue;
        std::string_view value = pair.substr(eq + 1);
        while (!value.empty() && value[0] == ' ') value.remove_prefix(1);
        while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
        v.s = value;
        v.not_found = false;
        return;
    }
}

constexpr uint8_t kNoCache = kVarNoCache;

constexpr VariableDef kVariables[] = {
    {"proxy_host", v_proxy_host, 0, kNoCache},
    {"proxy_port", v_proxy_port, 0, kNoCache},
    {"proxy_add_x_forwarded_for", v_add_xff},
    {"upstream_addr", v_tries, static_cast<uintptr_t>(TryField::Addr), kNoCache},
    {"upstream_status", v_tries, static_cast<uintptr_t>(TryField::Status), kNoCache},
    {"upstream_response_time", v_tries, static_cast<uintptr_t>(TryField::ResponseTime), kNoCache},
    {"upstream_connect_time", v_tries, static_cast<uintptr_t>(TryField::ConnectTime), kNoCache},
    {"upstream_header_time", v_tries, static_cast<uintptr_t>(TryField::HeaderTime), kNoCache},
    {"upstream_bytes_received", v_tries, static_cast<uintptr_t>(TryField::Bytes), kNoCache},
    {"upstream_bytes_sent", v_tries, static_cast<uintptr_t>(TryField::Sent), kNoCache},
    {"upstream_response_length", v_tries, static_cast<uintptr_t>(TryField::Length), kNoCache},
    {"upstream_http_", v_upstream_http, 0, kVarPrefix | kNoCache},
    {"upstream_cookie_", v_upstream_cookie, 0, kVarPrefix | kNoCache},
};

// ---- the module ------------------------------------------------------------------------------

constexpr uint32_t kLoc = conf::kHttpSrvLoc;

constexpr conf::Directive kDirectives[] = {
    {"proxy_pass", conf::kLocation | conf::kIf | conf::kLimitExcept, conf::Take1, conf::custom<set_pass>()},
    {"proxy_http_version", kLoc, conf::Take1, conf::custom<set_http_version>()},
    {"proxy_set_header", kLoc, conf::Take2, conf::custom<set_header>()},
    {"proxy_pass_request_headers", kLoc, conf::Take1, conf::flag<&ProxyConf::pass_request_headers>()},
    {"proxy_pass_request_body", kLoc, conf::Take1, conf::flag<&ProxyConf::pass_request_body>()},
    {"proxy_method", kLoc, conf::Take1, conf::custom<set_method>()},
    {"proxy_set_body", kLoc, conf::Take1, conf::custom<set_set_body>()},
    {"proxy_hide_header", kLoc, conf::Take1, conf::custom<set_hide_header>()},
    {"proxy_pass_header", kLoc, conf::Take1, conf::custom<set_pass_header>()},
    {"proxy_redirect", kLoc, conf::Take12, conf::custom<set_redirect>()},
    {"proxy_cookie_domain", kLoc, conf::Take12, conf::custom<set_cookie_rule<true>>()},
    {"proxy_cookie_path", kLoc, conf::Take12, conf::custom<set_cookie_rule<false>>()},
    {"proxy_cookie_flags", kLoc, conf::Take1More, conf::custom<set_cookie_flags>()},
    {"proxy_intercept_errors", kLoc, conf::Take1, conf::flag<&ProxyConf::intercept_errors>()},
    {"proxy_force_ranges", kLoc, conf::Take1, conf::flag<&ProxyConf::force_ranges>()},
    {"proxy_ignore_client_abort", kLoc, conf::Take1, conf::flag<&ProxyConf::ignore_client_abort>()},
    {"proxy_buffering", kLoc, conf::Take1, conf::flag<&ProxyConf::buffering>()},
    {"proxy_request_buffering", kLoc, conf::Take1, conf::flag<&ProxyConf::request_buffering>()},
    {"proxy_splice", kLoc, conf::Take1, conf::flag<&ProxyConf::splice>()},
    {"proxy_buffer_size", kLoc, conf::Take1, conf::custom<set_buffer_size>()},
    {"proxy_buffers", kLoc, conf::Take2, conf::custom<set_buffers>()},
    {"proxy_busy_buffers_size", kLoc, conf::Take1, conf::custom<set_busy_size>()},
    {"proxy_max_temp_file_size", kLoc, conf::Take1, conf::size<&ProxyConf::max_temp_file_size>()},
    {"proxy_limit_rate", kLoc, conf::Take1, conf::custom<set_limit_rate>()},
    {"proxy_pass_trailers", kLoc, conf::Take1, conf::flag<&ProxyConf::pass_trailers>()},
    {"proxy_bind", kLoc, conf::Take12, conf::custom<set_bind>()},
    {"proxy_temp_file_write_size", kLoc, conf::Take1, conf::custom<set_write_size>()},
    {"proxy_temp_path", kLoc, conf::Arity{1, 4, false}, conf::custom<set_proxy_temp>()},
    {"proxy_connect_timeout", kLoc, conf::Take1, conf::duration<&ProxyConf::connect_timeout>()},
    {"proxy_send_timeout", kLoc, conf::Take1, conf::duration<&ProxyConf::send_timeout>()},
    {"proxy_read_timeout", kLoc, conf::Take1, conf::duration<&ProxyConf::read_timeout>()},
    {"proxy_next_upstream", kLoc, conf::Take1More, conf::custom<set_next_upstream>()},
    {"proxy_next_upstream_tries", kLoc, conf::Take1, conf::number<&ProxyConf::next_upstream_tries>()},
    {"proxy_next_upstream_timeout", kLoc, conf::Take1, conf::duration<&ProxyConf::next_upstream_timeout>()},
    {"proxy_ignore_headers", kLoc, conf::Take1More, conf::custom<set_ignore_headers>()},
    {"proxy_socket_keepalive", kLoc, conf::Take1, conf::flag<&ProxyConf::socket_keepalive>()},
    {"proxy_ssl_server_name", kLoc, conf::Take1, conf::flag<&ProxyConf::ssl_server_name>()},
    {"proxy_ssl_name", kLoc, conf::Take1, conf::custom<set_ssl_name>()},
    {"proxy_ssl_verify", kLoc, conf::Take1, conf::flag<&ProxyConf::ssl_verify>()},
    {"proxy_ssl_verify_depth", kLoc, conf::Take1, conf::number<&ProxyConf::ssl_verify_depth>()},
    {"proxy_ssl_trusted_certificate", kLoc, conf::Take1, conf::custom<set_ssl_trusted>()},
    {"proxy_ssl_certificate", kLoc, conf::Take1,
     conf::custom<set_ssl_cert_file<&ProxyConf::ssl_certificate, &ProxyConf::ssl_certificate_var>>()},
    {"proxy_ssl_certificate_key", kLoc, conf::Take1,
     conf::custom<set_ssl_cert_file<&ProxyConf::ssl_certificate_key, &ProxyConf::ssl_certificate_key_var>>()},
    {"proxy_ssl_protocols", kLoc, conf::Take1More, conf::custom<set_ssl_protocols>()},
    {"proxy_ssl_ciphers", kLoc, conf::Take1, conf::string<&ProxyConf::ssl_ciphers>()},
    {"proxy_ssl_session_reuse", kLoc, conf::Take1, conf::flag<&ProxyConf::ssl_session_reuse>()},
    {"proxy_ssl_password_file", kLoc, conf::Take1, conf::custom<set_ssl_password_file>()},
    {"proxy_ssl_crl", kLoc, conf::Take1, conf::custom<set_ssl_crl>()},
    {"proxy_ssl_key_log", kLoc, conf::Take1, conf::custom<set_ssl_key_log>()},
    {"proxy_ssl_conf_command", kLoc, conf::Take2, conf::custom<set_ssl_conf_command>()},
    {"proxy_headers_hash_max_size", kLoc, conf::Take1,
     conf::custom<set_hash_size<&ProxyConf::headers_hash_max_size>>()},
    {"proxy_headers_hash_bucket_size", kLoc, conf::Take1,
     conf::custom<set_hash_size<&ProxyConf::headers_hash_bucket_size>>()},
};

constexpr PhaseHandler kPhases[] = {
    {Phase::Log, end_exchange},
};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

// "proxy_bind ... transparent" sets IP_TRANSPARENT, which needs CAP_NET_RAW
// (or CAP_NET_ADMIN) in workers that run as another user than root.
uint64_t worker_capabilities(const conf::Roots& g) {
    conf::ConfArray main = g[static_cast<int>(conf::Level::Main)];
    if (!main) return 0;
    const auto* m = static_cast<const ProxyMainConf*>(main[proxy_module.index]);
    return m && m->transparent ? uint64_t{1} << CAP_NET_RAW : 0;
}

}  // namespace

extern const conf::Module proxy_module{
    .name = "proxy",
    .directives = kDirectives,
    .main = conf::level<ProxyMainConf>(),
    .loc = conf::level<ProxyConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .worker_capabilities = worker_capabilities,
};

}  // namespace gatehouse::http
