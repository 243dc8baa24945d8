// ssl_module: the ssl_* directives, the TLS contexts built from them, the
// SNI choice of a server, the checks of requests on TLS ports and the
// $ssl_* variables [nginx ngx_http_ssl_module].
//
// Contexts are built after the http block, in the master: one per server
// that a TLS port reaches and that has a certificate. A connection starts
// its handshake with the context of its address's default server; the
// SNI callback moves it to the context of the server named (found as the
// Host header would find it), keeping the default one for unknown names
// and clients without SNI. Protocol versions and ciphers are the default
// server's, as nginx's (they are chosen before SNI is looked at).
#include "http/ssl_module.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <ctime>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conf/module.h"
#include "conf/parser.h"
#include "conf/registry.h"
#include "core/log.h"
#include "core/shm.h"
#include "event/resolver.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/ocsp_fetch.h"
#include "http/ocsp_stapler.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/uri.h"
#include "http/variables.h"
#include "tls/context.h"
#include "tls/ocsp.h"
#include "tls/ocsp_cache.h"
#include "tls/params.h"
#include "tls/session.h"
#include "tls/session_cache.h"
#include "tls/ticket_keys.h"

namespace gatehouse::http {

namespace {

using conf::Ctx;
using conf::Node;

// A value read from one directive, with where it was written: what the
// directive means is only known to fail when the context is built.
struct Located {
    std::string value;
    std::string where;
    // ssl_certificate and ssl_certificate_key with variables: the value
    // (owner: the generation arena), evaluated at each handshake, and the
    // directory a relative result is taken from.
    const ComplexValue* dynamic = nullptr;
    std::string dir;
};

// "ssl_ocsp": which of a client's certificates are asked about.
enum class OcspMode : uint8_t { Off, Leaf, On };

struct SslSrvConf {
    std::vector<Located> certificates;                // "ssl_certificate"
    std::vector<Located> keys;                        // "ssl_certificate_key"
    std::optional<std::vector<std::string>> passwords;  // "ssl_password_file"
    std::optional<uint8_t> protocols;                 // "ssl_protocols"
    std::optional<Located> ciphers;                   // "ssl_ciphers"
    std::vector<std::pair<std::string, std::string>> conf_commands;  // "ssl_conf_command"
    std::string conf_commands_where;                  // the first one's, empty: none here
    std::optional<bool> prefer_server_ciphers;        // "ssl_prefer_server_ciphers"
    std::optional<Located> ecdh_curve;                // "ssl_ecdh_curve"
    std::optional<uint64_t> buffer_size;              // "ssl_buffer_size"
    std::optional<Located> dhparam;                   // "ssl_dhparam"
    std::optional<tls::SessionCache> session_cache;   // "ssl_session_cache"
    std::string session_cache_where;
    std::optional<conf::Duration> session_timeout;    // "ssl_session_timeout"
    std::optional<bool> session_tickets;              // "ssl_session_tickets"
    std::vector<tls::TicketKey> ticket_keys;          // "ssl_session_ticket_key"
    bool ticket_keys_set = false;
    std::optional<Located> client_certificate;        // "ssl_client_certificate"
    std::optional<Located> trusted_certificate;       // "ssl_trusted_certificate"
    std::optional<Located> crl;                       // "ssl_crl"
    std::optional<tls::VerifyClient> verify_client;   // "ssl_verify_client"
    std::string verify_client_where;
    std::optional<uint64_t> verify_depth;             // "ssl_verify_depth"
    std::optional<bool> stapling;                     // "ssl_stapling"
    std::optional<Located> stapling_file;             // "ssl_stapling_file"
    std::optional<bool> stapling_verify;              // "ssl_stapling_verify"
    std::optional<Located> stapling_responder;        // "ssl_stapling_responder", checked
    std::string stapling_where;
    std::optional<bool> reject_handshake;             // "ssl_reject_handshake"
    std::optional<OcspMode> ocsp;                     // "ssl_ocsp"
    std::string ocsp_where;
    std::optional<Located> ocsp_responder;            // "ssl_ocsp_responder", checked
    std::optional<std::optional<tls::OcspCacheSpec>> ocsp_cache;  // "ssl_ocsp_cache"; inner empty: off
    std::string ocsp_cache_where;
    std::optional<Located> key_log;                   // "ssl_key_log"

    tls::Context* ctx = nullptr;  // owner: the generation's arena; null without a certificate
    // With variables in a certificate's or key's name: what a handshake
    // evaluates them as a request to (the server these settings are of,
    // and its http block). Owner: the generation.
    SrvConf* owner = nullptr;
    conf::ConfArray main_confs = nullptr;

    // "ssl_ocsp", once the context is built: the responder named by
    // "ssl_ocsp_responder" (url.host empty: each certificate's AIA), the
    // server's resolver, and the cache (in a zone of the generation;
    // null: none).
    OcspTarget ocsp_target;
    tls::OcspCache* ocsp_zone = nullptr;
};

SslSrvConf& ssl_conf(const SrvConf& s) { return *static_cast<SslSrvConf*>(s.srv_confs[ssl_module.index]); }

void merge(const SslSrvConf& up, SslSrvConf& c) {
    if (c.certificates.empty() && c.keys.empty()) {
        c.certificates = up.certificates;
        c.keys = up.keys;
    }
    conf::inherit(c.passwords, up.passwords);
    conf::inherit(c.protocols, up.protocols, tls::kDefaultProtocols);
    if (!c.ciphers) c.ciphers = up.ciphers ? *up.ciphers : Located{"HIGH:!aNULL:!MD5", {}};
    if (c.conf_commands_where.empty()) {
        c.conf_commands = up.conf_commands;
        c.conf_commands_where = up.conf_commands_where;
    }
    conf::inherit(c.prefer_server_ciphers, up.prefer_server_ciphers, false);
    if (!c.ecdh_curve) c.ecdh_curve = up.ecdh_curve ? *up.ecdh_curve : Located{"auto", {}};
    conf::inherit(c.buffer_size, up.buffer_size, 16384);
    if (!c.dhparam) c.dhparam = up.dhparam;
    if (!c.key_log) c.key_log = up.key_log;
    if (!c.session_cache) {
        c.session_cache = up.session_cache ? *up.session_cache : tls::SessionCache{};
        c.session_cache_where = up.session_cache_where;
    }
    conf::inherit(c.session_timeout, up.session_timeout, std::chrono::minutes(5));
    conf::inherit(c.session_tickets, up.session_tickets, true);
    if (!c.ticket_keys_set) c.ticket_keys = up.ticket_keys;
    if (!c.client_certificate) c.client_certificate = up.client_certificate;
    if (!c.trusted_certificate) c.trusted_certificate = up.trusted_certificate;
    if (!c.crl) c.crl = up.crl;
    if (!c.verify_client) {
        c.verify_client = up.verify_client ? *up.verify_client : tls::VerifyClient::Off;
        c.verify_client_where = up.verify_client_where;
    }
    conf::inherit(c.verify_depth, up.verify_depth, 1);
    if (!c.stapling) c.stapling_where = up.stapling_where;
    conf::inherit(c.stapling, up.stapling, false);
    if (!c.stapling_file) c.stapling_file = up.stapling_file;
    if (!c.stapling_responder) c.stapling_responder = up.stapling_responder;
    if (!c.ocsp) c.ocsp_where = up.ocsp_where;
    conf::inherit(c.ocsp, up.ocsp, OcspMode::Off);
    if (!c.ocsp_responder) c.ocsp_responder = up.ocsp_responder;
    if (!c.ocsp_cache) c.ocsp_cache_where = up.ocsp_cache_where;
    conf::inherit(c.ocsp_cache, up.ocsp_cache, std::optional<tls::OcspCacheSpec>());
    conf::inherit(c.stapling_verify, up.stapling_verify, false);
    conf::inherit(c.reject_handshake, up.reject_handshake, false);
}

// Files named by ssl_* directives are relative to the configuration
// file's directory, as nginx's.
std::string conf_path(const Ctx& cx, std::string_view p) {
    if (!p.empty() && p[0] == '/') return std::string(p);
    return cx.conf_dir() + std::string(p);
}

// ---- directives ------------------------------------------------------------

// A name with variables is kept to be evaluated at each handshake
// [nginx 1.15.9]; one without is a file loaded now.
Status add_file(Ctx& cx, const Node& n, std::vector<Located>& to) {
    std::string_view text = n.args[0].text;
    if (text.find('$') == std::string_view::npos) {
        to.push_back({conf_path(cx, text), n.where()});
        return {};
    }
    auto cv = ComplexValue::compile(cx, n, text);
    if (!cv) return cv.error();
    to.push_back({std::string(text), n.where(), cx.arena().make<ComplexValue>(std::move(*cv)), cx.conf_dir()});
    return {};
}

Status set_certificate(Ctx& cx, const Node& n, SslSrvConf& c) { return add_file(cx, n, c.certificates); }
Status set_certificate_key(Ctx& cx, const Node& n, SslSrvConf& c) { return add_file(cx, n, c.keys); }

template <std::optional<Located> SslSrvConf::*Member, bool Path>
Status set_located(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.*Member) return cx.duplicate(n);
    c.*Member = Located{Path ? conf_path(cx, n.args[0].text) : n.args[0].text, n.where()};
    return {};
}

// ssl_early_data on | off: checked, and "on" warned about as nginx warns
// where its TLS library has no early data. Accepting 0-RTT data means
// answering requests before the handshake ends (replayable ones: RFC 8446
// 8); gatehouse reads none, and a client that sent some sends its
// request again after the handshake (RFC 8446 4.2.10).
Status set_early_data(Ctx& cx, const Node& n, SslSrvConf&) {
    auto on = conf::parse_flag(n.args[0].text);
    if (!on) return cx.invalid(n, on.error());
    if (*on) GH_LOG(Warn, "\"ssl_early_data\" is not supported, ignored in %s", n.where().c_str());
    return {};
}

Status set_password_file(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.passwords) return cx.duplicate(n);
    std::string path = conf_path(cx, n.args[0].text);
    auto text = conf::read_file(path, 1u << 20);
    if (!text) return cx.invalid(n, text.error());
    auto pw = tls::parse_passwords(*text);
    if (!pw) return cx.error(n, "no passwords in \"" + path + "\"");
    c.passwords = std::move(*pw);
    return {};
}

std::vector<std::string_view> words(const Node& n) {
    std::vector<std::string_view> w;
    for (const auto& a : n.args) w.push_back(a.text);
    return w;
}

Status set_protocols(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.protocols) return cx.duplicate(n);
    auto w = words(n);
    auto p = tls::parse_protocols(w);
    if (!p) return cx.invalid(n, p.error());
    c.protocols = *p;
    return {};
}

Status set_conf_command(Ctx&, const Node& n, SslSrvConf& c) {
    if (c.conf_commands_where.empty()) c.conf_commands_where = n.where();
    c.conf_commands.emplace_back(n.args[0].text, n.args[1].text);
    return {};
}

Status set_session_cache(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.session_cache) return cx.duplicate(n);
    auto w = words(n);
    auto sc = tls::parse_session_cache(w);
    if (!sc) return cx.invalid(n, sc.error());
    c.session_cache = std::move(*sc);
    c.session_cache_where = n.where();
    return {};
}

Status set_ticket_key(Ctx& cx, const Node& n, SslSrvConf& c) {
    auto k = tls::read_ticket_key(conf_path(cx, n.args[0].text));
    if (!k) return cx.invalid(n, k.error());
    c.ticket_keys.push_back(*k);
    c.ticket_keys_set = true;
    return {};
}

Status set_verify_client(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.verify_client) return cx.duplicate(n);
    auto v = tls::parse_verify_client(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    c.verify_client = *v;
    c.verify_client_where = n.where();
    return {};
}

Status set_stapling(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.stapling) return cx.duplicate(n);
    auto f = conf::parse_flag(n.args[0].text);
    if (!f) return cx.invalid(n, f.error());
    c.stapling = *f;
    c.stapling_where = n.where();
    return {};
}

// ssl_stapling_responder http://host[:port][/path]: checked now, as the
// AIA's URLs cannot be [nginx checks it only when a certificate uses it,
// and then ignores stapling with a warning].
Status set_stapling_responder(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.stapling_responder) return cx.duplicate(n);
    std::string_view url = n.args[0].text;
    if (auto u = tls::parse_responder_url(url); !u)
        return cx.error(n, u.message() + " in OCSP responder \"" + std::string(url) + "\"");
    c.stapling_responder = Located{std::string(url), n.where()};
    return {};
}

// ---- contexts ----------------------------------------------------------------

Status set_ocsp(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.ocsp) return cx.duplicate(n);
    std::string_view a = n.args[0].text;
    if (a == "on") c.ocsp = OcspMode::On;
    else if (a == "leaf") c.ocsp = OcspMode::Leaf;
    else if (a == "off") c.ocsp = OcspMode::Off;
    else return cx.invalid(n, make_error("invalid value \"" + std::string(a) + "\""));
    c.ocsp_where = n.where();
    return {};
}

// Checked now, as "ssl_stapling_responder" (nginx checks it at startup).
Status set_ocsp_responder(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.ocsp_responder) return cx.duplicate(n);
    std::string_view url = n.args[0].text;
    auto u = tls::parse_responder_url(url);
    if (!u) return cx.error(n, u.message() + " in OCSP responder \"" + std::string(url) + "\"");
    c.ocsp_responder = Located{std::string(url), n.where()};
    return {};
}

Status set_ocsp_cache(Ctx& cx, const Node& n, SslSrvConf& c) {
    if (c.ocsp_cache) return cx.duplicate(n);
    auto spec = tls::parse_ocsp_cache(n.args[0].text);
    if (!spec) return cx.invalid(n, spec.error());
    c.ocsp_cache = std::move(*spec);
    c.ocsp_cache_where = n.where();
    return {};
}

Error at(const Error& e, const std::string& where) {
    return where.empty() ? e : make_error(e.message + " in " + where);
}

// SNI: the server the name selects on the connection's address, as the
// Host header would; its context, or null to keep the default's.
tls::Context::NameChoice select_by_name(SSL* ssl, std::string_view name) {
    tls::Session* s = tls::session_of(ssl);
    if (!s || !s->user) return {};
    // The front-end set `user` to its Stream (v1/connection.cc).
    auto* stream = static_cast<Stream*>(s->user);
    const AddrServers& servers = stream->servers();
    // Lower case without one trailing dot; no name, or one with other
    // bytes than a host name's, means the default server.
    SrvConf* srv = servers.default_server;
    char buf[256];
    size_t len = 0;
    bool valid = !name.empty() && name.size() <= 255;
    for (char ch : valid ? name : std::string_view()) {
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_')) {
            valid = false;
            break;
        }
        buf[len++] = ch;
    }
    if (valid) {
        if (len > 0 && buf[len - 1] == '.') --len;
        if (SrvConf* found = find_server(servers, {buf, len}, nullptr)) srv = found;
    }
    const SslSrvConf& c = ssl_conf(*srv);
    // "ssl_reject_handshake on": a name this server answers (or none, for
    // a default server) ends the handshake with unrecognized_name.
    if (*c.reject_handshake) return {nullptr, true};
    if (!valid) return {};
    s->sni_choice = srv;
    return {c.ctx, false};
}

// The handshake's certificates when their names have variables: the
// values are those of a request to the server the settings belong to,
// made for the occasion (its variables see the connection: address,
// $ssl_server_name), as nginx evaluates them.
bool load_dynamic(SSL* ssl, void* arg) {
    auto& c = *static_cast<SslSrvConf*>(arg);
    tls::Session* s = tls::session_of(ssl);
    if (!s || !s->user) return false;
    auto* stream = static_cast<Stream*>(s->user);
    Request r(*stream, c.main_confs, c.owner);
    auto name = [&](const Located& l) {
        if (!l.dynamic) return l.value;
        std::string_view v = l.dynamic->eval(r);
        return !v.empty() && v[0] == '/' ? std::string(v) : l.dir + std::string(v);
    };
    std::span<const std::string> pw;
    if (c.passwords) pw = *c.passwords;
    for (size_t i = 0; i < c.certificates.size(); ++i) {
        std::string cert = name(c.certificates[i]), key = name(c.keys[i]);
        if (auto st = tls::Context::use_certificate(ssl, cert, key, pw); !st) {
            GH_LOG(Error, "%s while SSL handshaking", st.message().c_str());
            return false;
        }
    }
    return true;
}

// ssl_stapling without a file: a stapler per certificate that has an
// issuer and a responder (ssl_stapling_responder, else the first OCSP URL
// of its AIA); without either, a warning and none for it [nginx].
void fetch_staples(Ctx& cx, SslSrvConf& c, const std::vector<std::string>& names) {
    tls::Context& ctx = *c.ctx;
    const auto* rc = static_cast<const event::ResolverConf*>(c.owner->loc_confs[event::resolver_module.index]);
    for (size_t i = 0; i < ctx.certificates(); ++i) {
        const char* name = names[i].c_str();
        X509* issuer = ctx.get1_issuer(i);
        if (!issuer) {
            GH_LOG(Warn, "\"ssl_stapling\" ignored, issuer certificate not found for certificate \"%s\"", name);
            continue;
        }
        StaplerConf sc;
        sc.url_text = c.stapling_responder ? c.stapling_responder->value : tls::aia_responder(ctx.certificate(i));
        if (sc.url_text.empty()) {
            GH_LOG(Warn, "\"ssl_stapling\" ignored, no OCSP responder URL in the certificate \"%s\"", name);
            X509_free(issuer);
            continue;
        }
        auto u = tls::parse_responder_url(sc.url_text);
        if (!u) {
            // Only the AIA's can be wrong here: the directive's was checked.
            GH_LOG(Warn, "\"ssl_stapling\" ignored, %s in OCSP responder \"%s\" in the certificate \"%s\"",
                   u.message().c_str(), sc.url_text.c_str(), name);
            X509_free(issuer);
            continue;
        }
        sc.url = std::move(*u);
        sc.certificate = names[i];
        sc.verify = *c.stapling_verify;
        if (rc) {
            sc.resolver = rc->resolver;
            sc.resolver_timeout = rc->timeout();
        }
        auto st = OcspStapler::make(cx.arena(), ctx, i, issuer, std::move(sc));
        if (!st) {
            GH_LOG(Warn, "\"ssl_stapling\" ignored, %s for certificate \"%s\"", st.message().c_str(), name);
            continue;
        }
        ctx.set_staple_source(i, *st);
    }
}

// `h2`: the server speaks HTTP/2 on the address (http2_enabled): ALPN
// offers "h2" first, then "http/1.1" [nginx].
Status build_context(Ctx& cx, SslSrvConf& c, bool h2) {
    static const std::string_view kHttp11[] = {"http/1.1"};
    static const std::string_view kH2Http11[] = {"h2", "http/1.1"};
    auto* ctx = cx.arena().make<tls::Context>();
    c.ctx = ctx;
    if (c.keys.size() < c.certificates.size())
        return make_error("no \"ssl_certificate_key\" is defined for certificate \"" +
                          c.certificates[c.keys.size()].value + "\" in " + c.certificates[c.keys.size()].where);
    if (c.keys.size() > c.certificates.size())
        return make_error("no \"ssl_certificate\" is defined for key \"" + c.keys[c.certificates.size()].value +
                          "\" in " + c.keys[c.certificates.size()].where);
    std::span<const std::string> pw;
    if (c.passwords) pw = *c.passwords;
    bool dynamic = false;
    for (size_t i = 0; i < c.certificates.size(); ++i)
        if (c.certificates[i].dynamic || c.keys[i].dynamic) dynamic = true;
    if (dynamic) {
        // Every pair is loaded at each handshake then, as in nginx.
        ctx->on_certificate(load_dynamic, &c);
    }
    std::vector<std::string> cert_names;  // of the context's certificates, in its order
    for (size_t i = 0; i < c.certificates.size() && !dynamic; ++i) {
        bool key_fault = false;
        if (auto s = ctx->add_certificate(c.certificates[i].value, c.keys[i].value, pw, &key_fault); !s)
            return at(s.error(), key_fault ? c.keys[i].where : c.certificates[i].where);
        if (ctx->certificates() > cert_names.size()) cert_names.push_back(c.certificates[i].value);
    }
    if (auto s = ctx->set_protocols(*c.protocols); !s) return s;
    if (auto s = ctx->set_ciphers(c.ciphers->value, *c.prefer_server_ciphers); !s) return at(s.error(), c.ciphers->where);
    if (auto s = ctx->set_ecdh_curve(c.ecdh_curve->value); !s) return at(s.error(), c.ecdh_curve->where);
    ctx->set_record_size(*c.buffer_size);
    if (c.dhparam)
        if (auto s = ctx->set_dhparam(c.dhparam->value); !s) return at(s.error(), c.dhparam->where);
    if (c.key_log)
        if (auto s = ctx->set_key_log(c.key_log->value); !s) return at(s.error(), c.key_log->where);

    const tls::SessionCache& sc = *c.session_cache;
    tls::SharedSessionCache* shared = nullptr;
    if (sc.shared) {
        shm::ZoneSet* zones = cx.zones();
        if (!zones) return make_error("shared memory is not available here in " + c.session_cache_where);
        auto z = zones->add(sc.shared_name, sc.shared_size, &ssl_module);
        if (!z) return at(z.error(), c.session_cache_where);
        shared = tls::SharedSessionCache::attach(z->zone->addr(), z->zone->size());
        if (!shared) return make_error("session cache \"" + sc.shared_name + "\" is too small in " + c.session_cache_where);
    }
    auto timeout = std::chrono::duration_cast<std::chrono::seconds>(*c.session_timeout);
    if (auto s = ctx->set_session_cache(sc, timeout, shared); !s) return at(s.error(), c.session_cache_where);
    // Without key files: a shared ring per session timeout (its rotation
    // period), found again by name on reload so the keys survive it.
    tls::TicketRing* ring = nullptr;
    if (*c.session_tickets && c.ticket_keys.empty())
        if (shm::ZoneSet* zones = cx.zones()) {
            std::string name = "ssl ticket keys " + std::to_string(timeout.count()) + "s";
            auto z = zones->add(name, tls::TicketRing::kZoneSize, &ssl_module);
            if (!z) return z.error();
            ring = tls::TicketRing::attach(z->zone->addr(), z->zone->size(), time(nullptr));
            GH_CHECK(ring != nullptr);  // kZoneSize fits it
        }
    ctx->set_tickets(*c.session_tickets, c.ticket_keys, ring);

    tls::VerifyClient v = *c.verify_client;
    if ((v == tls::VerifyClient::On || v == tls::VerifyClient::Optional) && !c.client_certificate &&
        !c.trusted_certificate)
        return make_error("no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client in " +
                          c.verify_client_where);
    // OpenSSL takes an int; no chain is longer than 100.
    ctx->set_verify(v, static_cast<int>(std::min<uint64_t>(*c.verify_depth, 100)));
    if (c.client_certificate)
        if (auto s = ctx->add_client_ca(c.client_certificate->value); !s) return at(s.error(), c.client_certificate->where);
    if (c.trusted_certificate)
        if (auto s = ctx->add_trusted(c.trusted_certificate->value); !s) return at(s.error(), c.trusted_certificate->where);
    if (c.crl)
        if (auto s = ctx->add_crl(c.crl->value); !s) return at(s.error(), c.crl->where);
    if (*c.ocsp != OcspMode::Off) {
        if (v == tls::VerifyClient::OptionalNoCa)
            return make_error("\"ssl_ocsp\" is incompatible with \"ssl_verify_client optional_no_ca\" in " +
                              c.ocsp_where);
        if (c.ocsp_responder) c.ocsp_target.url = *tls::parse_responder_url(c.ocsp_responder->value);
        const auto* rc = static_cast<const event::ResolverConf*>(c.owner->loc_confs[event::resolver_module.index]);
        if (rc) {
            c.ocsp_target.resolver = rc->resolver;
            c.ocsp_target.resolver_timeout = rc->timeout();
        }
    }
    if (*c.ocsp != OcspMode::Off && *c.ocsp_cache) {
        const tls::OcspCacheSpec& spec = **c.ocsp_cache;
        shm::ZoneSet* zones = cx.zones();
        if (!zones) return make_error("shared memory is not available here in " + c.ocsp_cache_where);
        // Its own tag: a session cache of the same name is another layout.
        static const char kOcspZoneTag = 0;
        auto z = zones->add(spec.name, spec.size, &kOcspZoneTag);
        if (!z) return at(z.error(), c.ocsp_cache_where);
        c.ocsp_zone = tls::OcspCache::attach(z->zone->addr(), z->zone->size());
        if (!c.ocsp_zone) return make_error("OCSP cache \"" + spec.name + "\" is too small in " + c.ocsp_cache_where);
    }
    if (*c.stapling && dynamic) {
        GH_LOG(Warn, "\"ssl_stapling\" ignored, not supported for certificates with variables in %s",
               c.stapling_where.c_str());
    } else if (*c.stapling) {
        if (!c.stapling_file) {
            fetch_staples(cx, c, cert_names);
        } else if (auto s = ctx->set_stapling(c.stapling_file->value, *c.stapling_verify); !s) {
            return at(s.error(), c.stapling_file->where);
        }
    }
    if (h2) ctx->set_alpn(*tls::alpn_wire(kH2Http11));
    else ctx->set_alpn(*tls::alpn_wire(kHttp11));
    ctx->on_server_name(select_by_name);
    if (auto s = ctx->conf_commands(c.conf_commands); !s) return at(s.error(), c.conf_commands_where);
    std::vector<std::string> names;
    if (dynamic)
        for (size_t i = 0; i < c.certificates.size(); ++i) {
            names.push_back(c.certificates[i].value);
            names.push_back(c.keys[i].value);
        }
    return ctx->finish(names);
}

Status postconfiguration(Ctx& cx) {
    HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    if (!m) return {};
    auto own_ssl_listen = [](const SrvConf& s) -> const ListenConf* {
        for (const ListenConf& l : s.listens)
            if (l.ssl) return &l;
        return nullptr;
    };
    // The servers an address of a TLS port reaches, once each.
    auto servers_of = [](const AddrServers& as) {
        std::vector<SrvConf*> v;
        auto add = [&](SrvConf* s) {
            if (s && std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
        };
        add(as.default_server);
        for (const auto& [name, s] : as.exact) add(s);
        for (const auto& [name, s] : as.wild_head) add(s);
        for (const auto& [name, s] : as.wild_tail) add(s);
        for (const auto& [re, s] : as.regex) add(s);
        return v;
    };
    // A context for each server with a certificate or refusing handshakes.
    // One without either, reached by SNI or Host, keeps its address's
    // default server's context: certificates, verification of clients
    // (its own "ssl_verify_client" is checked per request) [nginx].
    std::vector<SrvConf*> built;
    for (const ListenPort& p : m->ports) {
        if (!p.bind.ssl) continue;
        for (const AddrServers& as : p.addrs)
            for (SrvConf* s : servers_of(as)) {
                SslSrvConf& c = ssl_conf(*s);
                if (std::find(built.begin(), built.end(), s) != built.end()) continue;
                built.push_back(s);
                if (c.certificates.empty() && c.keys.empty() && !*c.reject_handshake) continue;
                c.owner = s;
                c.main_confs = p.main_confs;
                if (auto st = build_context(cx, c, http2_enabled(as, *s)); !st) return st;
            }
    }
    // A handshake starts with the default server's context, so it needs a
    // certificate, or to refuse handshakes; then every server it would hand
    // a handshake to by SNI needs one of its own, or to refuse too.
    auto missing = [&](const SrvConf& s, const AddrServers& as) {
        if (const ListenConf* l = own_ssl_listen(s))
            return make_error("no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive in " + l->where);
        return make_error("no \"ssl_certificate\" is defined for the server of " + as.addr.text() +
                          ", which listens with \"ssl\", in " + s.where);
    };
    for (const ListenPort& p : m->ports) {
        if (!p.bind.ssl) continue;
        for (const AddrServers& as : p.addrs) {
            const SslSrvConf& d = ssl_conf(*as.default_server);
            if (!d.ctx) return missing(*as.default_server, as);
            if (!d.certificates.empty()) continue;
            for (SrvConf* s : servers_of(as))
                if (!ssl_conf(*s).ctx) return missing(*s, as);
        }
    }
    return {};
}

// ---- ssl_ocsp: client certificates asked about ----------------------------------

// The string after "FAILED:" in $ssl_client_verify for a status [nginx].
const char* ocsp_failure(int status) {
    if (status == V_OCSP_CERTSTATUS_REVOKED) return "certificate revoked";
    if (status == V_OCSP_CERTSTATUS_UNKNOWN) return "certificate status unknown";
    return "certificate status request failed";
}
constexpr const char* kOcspFailed = "certificate status request failed";

int64_t wall_now() { return static_cast<int64_t>(event::worker_loop().wall().sec); }

// The client's verified chain, leaf first, root last (new references):
// the handshake's; a resumed session has none kept, so it is built again
// from the store and what the client sent (it was verified when the
// session was made; the result of doing it again does not matter here).
STACK_OF(X509)* client_chain(SSL* ssl) {
    if (STACK_OF(X509)* v = SSL_get0_verified_chain(ssl)) return X509_chain_up_ref(v);
    X509* leaf = SSL_get0_peer_certificate(ssl);
    if (!leaf) return nullptr;
    X509_STORE_CTX* x = X509_STORE_CTX_new();
    GH_CHECK(x != nullptr);
    STACK_OF(X509)* out = nullptr;
    if (X509_STORE_CTX_init(x, SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl)), leaf, SSL_get_peer_cert_chain(ssl)) == 1) {
        (void)X509_verify_cert(x);
        out = X509_STORE_CTX_get1_chain(x);
    }
    X509_STORE_CTX_free(x);
    ERR_clear_error();
    return out;
}

// One client's certificates asked about in turn, from the leaf up,
// before its connection's first request is read. Owned by the TLS
// session (tls::Session::hold): a connection closed meanwhile ends the
// fetch with it. The verdict goes into the session (fail_verify), read
// by check_request() and $ssl_client_verify.
class ClientOcspCheck final : public tls::Session::Hold {
public:
    ClientOcspCheck(const SslSrvConf& c, tls::Session& s, STACK_OF(X509) * chain, size_t count)
        : c_(c), s_(s), chain_(chain), count_(count) {}
    ~ClientOcspCheck() override { sk_X509_pop_free(chain_, X509_free); }

    // Checks what the cache knows; true when that decided (the session
    // holds the verdict), false when a responder is being asked and
    // `resume` runs later, from the loop.
    bool run(event::Callback resume) {
        resume_ = resume;
        return next();
    }

private:
    X509* cert() const { return sk_X509_value(chain_, static_cast<int>(next_)); }
    X509* issuer() const { return sk_X509_value(chain_, static_cast<int>(next_ + 1)); }

    bool next() {
        for (; next_ < count_; ++next_) {
            key_ = tls::ocsp_cache_key(cert(), issuer());
            if (!key_) return fail(kOcspFailed, "OCSP_cert_to_id() failed");
            if (c_.ocsp_zone)
                if (auto st = c_.ocsp_zone->lookup(*key_, wall_now())) {
                    if (*st == V_OCSP_CERTSTATUS_GOOD) continue;
                    return fail(ocsp_failure(*st), nullptr);
                }
            // "ssl_ocsp_responder", else the certificate's own (AIA).
            target_ = c_.ocsp_target;
            if (target_.url.host.empty()) {
                std::string aia = tls::aia_responder(cert());
                if (aia.empty()) return fail(kOcspFailed, "no OCSP responder URL in certificate");
                auto u = tls::parse_responder_url(aia);
                if (!u) return fail(kOcspFailed, "invalid OCSP responder URL in certificate");
                target_.url = std::move(*u);
            }
            auto der = tls::ocsp_request(cert(), issuer());
            if (!der) return fail(kOcspFailed, der.message().c_str());
            fetch_.start(target_, ocsp_get_head(target_.url, *der),
                         ", client: " + client() + ", client certificate: \"" + subject() + "\"",
                         event::Callback::to<&ClientOcspCheck::fetched>(this));
            return false;
        }
        return true;
    }

    // The client's address, for the log lines: they are written from the
    // loop, outside the connection's own log context.
    std::string client() const {
        return s_.user ? std::string(static_cast<Stream*>(s_.user)->peer_text()) : std::string("-");
    }

    std::string subject() const {
        char buf[256];
        X509_NAME_oneline(X509_get_subject_name(cert()), buf, sizeof buf);
        return buf;
    }

    // The verdict is a failure; `log`: why, at error (null: a cached
    // status, said before).
    bool fail(const char* reason, const char* log) {
        if (log)
            GH_LOG(Error, "%s while checking client certificate status, client: %s, certificate: \"%s\"", log,
                   client().c_str(), subject().c_str());
        s_.fail_verify(reason);
        return true;
    }

    // From the loop: the reply is in, or every try failed (logged).
    void fetched() {
        bool decided = true;
        if (!fetch_.ok()) {
            s_.fail_verify(kOcspFailed);
        } else {
            auto st = tls::ocsp_cert_status(fetch_.body(), cert(), issuer(), chain_,
                                             SSL_CTX_get_cert_store(SSL_get_SSL_CTX(s_.ssl())));
            if (!st) {
                fail(kOcspFailed, st.message().c_str());
            } else {
                const int64_t now = wall_now();
                int64_t valid = st->next_update == INT64_MAX ? now + tls::kOcspCacheDefaultValid : st->next_update;
                if (c_.ocsp_zone) c_.ocsp_zone->store(*key_, st->status, valid, now);
                if (st->status != V_OCSP_CERTSTATUS_GOOD) {
                    GH_LOG(Info,
                           "client certificate status \"%s\" from the OCSP responder, client: %s, certificate: \"%s\"",
                           OCSP_cert_status_str(st->status), client().c_str(), subject().c_str());
                    s_.fail_verify(ocsp_failure(st->status));
                } else {
                    ++next_;
                    decided = next();
                }
            }
        }
        // The front-end may close the connection, and this with it: the
        // last thing done here.
        if (decided) resume_();
    }

    const SslSrvConf& c_;  // owner: the generation, which outlives connections
    tls::Session& s_;      // owns this
    STACK_OF(X509)* chain_;  // owned references, leaf first
    size_t count_;           // how many of chain_ to ask about
    size_t next_ = 0;
    std::optional<tls::OcspKey> key_;  // cert()'s
    OcspTarget target_;
    OcspFetch fetch_;
    event::Callback resume_;
};

// ---- variables ------------------------------------------------------------------

tls::Session* session(Request& r) { return r.stream().tls(); }

void keep(Request& r, VarValue& v, std::string_view s) { v.s = r.arena().dup(s); }

void v_protocol(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->protocol());
    v.not_found = true;
}
void v_cipher(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->cipher());
    v.not_found = true;
}
void v_server_name(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->server_name());
    v.not_found = true;
}
void v_alpn(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->alpn());
    v.not_found = true;
}
void v_session_reused(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) {
        v.s = s->reused() ? "r" : ".";
        return;
    }
    v.not_found = true;
}
void v_session_id(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) {
        unsigned len = 0;
        SSL_SESSION* sess = SSL_get_session(s->ssl());
        const unsigned char* id = sess ? SSL_SESSION_get_id(sess, &len) : nullptr;
        char* out = static_cast<char*>(r.arena().alloc(2 * len + 1, 1));
        static constexpr char kHex[] = "0123456789abcdef";
        for (unsigned i = 0; i < len; ++i) {
            out[2 * i] = kHex[id[i] >> 4];
            out[2 * i + 1] = kHex[id[i] & 15];
        }
        v.s = {out, 2 * static_cast<size_t>(len)};
        return;
    }
    v.not_found = true;
}
void v_client_verify(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->client_verify());
    v.not_found = true;
}
void v_client_s_dn(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->client_subject());
    v.not_found = true;
}
void v_client_i_dn(Request& r, VarValue& v, uintptr_t) {
    if (auto* s = session(r)) return keep(r, v, s->client_issuer());
    v.not_found = true;
}

// The certificate variables below are empty (not "not found") without a
// client certificate, as nginx's; only plain connections have no value.
X509* peer_cert(Request& r, VarValue& v) {
    tls::Session* s = session(r);
    if (!s) {
        v.not_found = true;
        return nullptr;
    }
    X509* cert = SSL_get0_peer_certificate(s->ssl());
    if (!cert) v.s = {};
    return cert;
}

// What a memory BIO holds, copied to the request arena; frees the BIO.
std::string_view bio_text(Request& r, BIO* bio) {
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string_view s = r.arena().dup(std::string_view(data, n > 0 ? static_cast<size_t>(n) : 0));
    BIO_free(bio);
    return s;
}

BIO* mem_bio() {
    BIO* bio = BIO_new(BIO_s_mem());
    GH_CHECK(bio != nullptr);
    return bio;
}

// $ssl_client_s_dn_legacy, $ssl_client_i_dn_legacy: OpenSSL's one-line
// form ("/C=US/CN=client1"), which nginx used before RFC 2253.
void v_client_dn_legacy(Request& r, VarValue& v, uintptr_t issuer) {
    X509* cert = peer_cert(r, v);
    if (!cert) return;
    char* line = X509_NAME_oneline(issuer ? X509_get_issuer_name(cert) : X509_get_subject_name(cert), nullptr, 0);
    if (!line) return;
    v.s = r.arena().dup(line);
    OPENSSL_free(line);
}

// The serial number in hexadecimal, upper case, as OpenSSL prints it.
void v_client_serial(Request& r, VarValue& v, uintptr_t) {
    X509* cert = peer_cert(r, v);
    if (!cert) return;
    BIO* bio = mem_bio();
    i2a_ASN1_INTEGER(bio, X509_get0_serialNumber(cert));
    v.s = bio_text(r, bio);
}

// The SHA-1 of the DER certificate, in lower-case hexadecimal.
void v_client_fingerprint(Request& r, VarValue& v, uintptr_t) {
    X509* cert = peer_cert(r, v);
    if (!cert) return;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (X509_digest(cert, EVP_sha1(), md, &len) != 1) return;
    char* out = static_cast<char*>(r.arena().alloc(2 * len, 1));
    static constexpr char kHex[] = "0123456789abcdef";
    for (unsigned i = 0; i < len; ++i) {
        out[2 * i] = kHex[md[i] >> 4];
        out[2 * i + 1] = kHex[md[i] & 15];
    }
    v.s = {out, 2 * static_cast<size_t>(len)};
}

// $ssl_client_v_start, $ssl_client_v_end: as OpenSSL prints times,
// "Jan  5 10:00:00 2026 GMT" [nginx].
void v_client_validity(Request& r, VarValue& v, uintptr_t end) {
    X509* cert = peer_cert(r, v);
    if (!cert) return;
    BIO* bio = mem_bio();
    ASN1_TIME_print(bio, end ? X509_get0_notAfter(cert) : X509_get0_notBefore(cert));
    v.s = bio_text(r, bio);
}

// Whole days until the certificate expires; 0 once it has.
void v_client_v_remain(Request& r, VarValue& v, uintptr_t) {
    X509* cert = peer_cert(r, v);
    if (!cert) return;
    int days = 0, secs = 0;
    // From now (null) to the end: negative once expired.
    if (ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert)) != 1) return;
    if (days < 0 || secs < 0) days = 0;
    char b[16];
    int n = snprintf(b, sizeof b, "%d", days);
    v.s = r.arena().dup(std::string_view(b, static_cast<size_t>(n)));
}

// The client certificate in PEM; `tabbed`: every line but the first
// starts with a tab, so that it can go in a header field (nginx's
// deprecated $ssl_client_cert).
void client_cert(Request& r, VarValue& v, bool tabbed) {
    tls::Session* s = session(r);
    X509* cert = s ? SSL_get1_peer_certificate(s->ssl()) : nullptr;
    if (!cert) {
        v.s = {};
        return;
    }
    BIO* bio = BIO_new(BIO_s_mem());
    GH_CHECK(bio != nullptr);
    std::pmr::string out(r.mem());
    if (PEM_write_bio_X509(bio, cert) == 1) {
        char* data = nullptr;
        long n = BIO_get_mem_data(bio, &data);
        std::string_view pem(data, n > 0 ? static_cast<size_t>(n) : 0);
        if (!pem.empty() && pem.back() == '\n') pem.remove_suffix(1);
        for (char c : pem) {
            out += c;
            if (c == '\n' && tabbed) out += '\t';
        }
    }
    BIO_free(bio);
    X509_free(cert);
    v.s = r.arena().dup(out);
}
void v_client_cert(Request& r, VarValue& v, uintptr_t) { client_cert(r, v, true); }
void v_client_raw_cert(Request& r, VarValue& v, uintptr_t) { client_cert(r, v, false); }

// The client certificate in PEM, percent-encoded: every byte but
// RFC 3986's unreserved ones, so that it fits in a header or a query.
bool not_unreserved(unsigned char c) {
    return !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
             c == '_' || c == '~');
}
void v_client_escaped_cert(Request& r, VarValue& v, uintptr_t) {
    client_cert(r, v, false);
    if (v.s.empty()) return;
    char* out = static_cast<char*>(r.arena().alloc(escaped_size(v.s, not_unreserved), 1));
    v.s = {out, escape(v.s, out, not_unreserved)};
}

// The ciphers the client offered, by name, ':' between them.
void v_ciphers(Request& r, VarValue& v, uintptr_t) {
    tls::Session* s = session(r);
    STACK_OF(SSL_CIPHER)* list = s ? SSL_get_client_ciphers(s->ssl()) : nullptr;
    if (!list) {
        v.not_found = true;
        return;
    }
    std::pmr::string out(r.mem());
    for (int i = 0; i < sk_SSL_CIPHER_num(list); ++i) {
        if (!out.empty()) out += ':';
        out += SSL_CIPHER_get_name(sk_SSL_CIPHER_value(list, i));
    }
    v.s = r.arena().dup(out);
}

// A group (curve) by name, or 0x%04x for one OpenSSL does not know [nginx].
void append_group(std::pmr::string& out, int id) {
    const char* name = (id & TLSEXT_nid_unknown) ? nullptr : OBJ_nid2sn(id);
    if (name) {
        out += name;
        return;
    }
    char b[16];
    snprintf(b, sizeof b, "0x%04x", id & 0xffff);
    out += b;
}

// TLS 1.3 early data is never accepted (see ssl_early_data): a request
// never arrives before the handshake's end.
void v_early_data(Request& r, VarValue& v, uintptr_t) {
    if (!session(r)) v.not_found = true;
}

// The group the key exchange used.
void v_curve(Request& r, VarValue& v, uintptr_t) {
    tls::Session* s = session(r);
    if (!s) {
        v.not_found = true;
        return;
    }
    int id = SSL_get_negotiated_group(s->ssl());
    std::pmr::string out(r.mem());
    if (id != 0) append_group(out, id);
    v.s = r.arena().dup(out);
}

// The groups (curves) the client offered: names, or 0x%04x for those
// OpenSSL does not know [nginx].
void v_curves(Request& r, VarValue& v, uintptr_t) {
    tls::Session* s = session(r);
    int n = s ? SSL_get1_curves(s->ssl(), nullptr) : 0;
    if (n <= 0) {
        v.not_found = true;
        return;
    }
    std::vector<int> ids(static_cast<size_t>(n));
    SSL_get1_curves(s->ssl(), ids.data());
    std::pmr::string out(r.mem());
    for (int id : ids) {
        if (!out.empty()) out += ':';
        append_group(out, id);
    }
    v.s = r.arena().dup(out);
}

constexpr conf::Directive kDirectives[] = {
    {"ssl_certificate", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_certificate>()},
    {"ssl_certificate_key", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_certificate_key>()},
    {"ssl_password_file", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_password_file>()},
    {"ssl_reject_handshake", conf::kHttp | conf::kServer, conf::Take1, conf::flag<&SslSrvConf::reject_handshake>()},
    {"ssl_early_data", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_early_data>()},
    {"ssl_protocols", conf::kHttp | conf::kServer, conf::Take1More, conf::custom<set_protocols>()},
    {"ssl_ciphers", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::ciphers, false>>()},
    {"ssl_conf_command", conf::kHttp | conf::kServer, conf::Take2, conf::custom<set_conf_command>()},
    {"ssl_prefer_server_ciphers", conf::kHttp | conf::kServer, conf::Take1,
     conf::flag<&SslSrvConf::prefer_server_ciphers>()},
    {"ssl_ecdh_curve", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::ecdh_curve, false>>()},
    {"ssl_buffer_size", conf::kHttp | conf::kServer, conf::Take1, conf::size<&SslSrvConf::buffer_size>()},
    {"ssl_dhparam", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::dhparam, true>>()},
    {"ssl_key_log", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::key_log, true>>()},
    {"ssl_session_cache", conf::kHttp | conf::kServer, conf::Take12, conf::custom<set_session_cache>()},
    {"ssl_session_timeout", conf::kHttp | conf::kServer, conf::Take1,
     conf::duration<&SslSrvConf::session_timeout>()},
    {"ssl_session_tickets", conf::kHttp | conf::kServer, conf::Take1, conf::flag<&SslSrvConf::session_tickets>()},
    {"ssl_session_ticket_key", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_ticket_key>()},
    {"ssl_client_certificate", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::client_certificate, true>>()},
    {"ssl_trusted_certificate", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::trusted_certificate, true>>()},
    {"ssl_crl", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_located<&SslSrvConf::crl, true>>()},
    {"ssl_verify_client", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_verify_client>()},
    {"ssl_verify_depth", conf::kHttp | conf::kServer, conf::Take1, conf::number<&SslSrvConf::verify_depth>()},
    {"ssl_stapling", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_stapling>()},
    {"ssl_stapling_file", conf::kHttp | conf::kServer, conf::Take1,
     conf::custom<set_located<&SslSrvConf::stapling_file, true>>()},
    {"ssl_stapling_verify", conf::kHttp | conf::kServer, conf::Take1, conf::flag<&SslSrvConf::stapling_verify>()},
    {"ssl_stapling_responder", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_stapling_responder>()},
    {"ssl_ocsp", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_ocsp>()},
    {"ssl_ocsp_responder", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_ocsp_responder>()},
    {"ssl_ocsp_cache", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_ocsp_cache>()},
};

constexpr VariableDef kVariables[] = {
    {"ssl_protocol", v_protocol},
    {"ssl_cipher", v_cipher},
    {"ssl_server_name", v_server_name},
    {"ssl_alpn_protocol", v_alpn},
    {"ssl_session_reused", v_session_reused},
    {"ssl_session_id", v_session_id},
    {"ssl_client_verify", v_client_verify},
    {"ssl_client_s_dn", v_client_s_dn},
    {"ssl_client_i_dn", v_client_i_dn},
    {"ssl_client_s_dn_legacy", v_client_dn_legacy, 0},
    {"ssl_client_i_dn_legacy", v_client_dn_legacy, 1},
    {"ssl_client_serial", v_client_serial},
    {"ssl_client_fingerprint", v_client_fingerprint},
    {"ssl_client_v_start", v_client_validity, 0},
    {"ssl_client_v_end", v_client_validity, 1},
    {"ssl_client_v_remain", v_client_v_remain},
    {"ssl_client_cert", v_client_cert},
    {"ssl_client_raw_cert", v_client_raw_cert},
    {"ssl_client_escaped_cert", v_client_escaped_cert},
    {"ssl_ciphers", v_ciphers},
    {"ssl_curve", v_curve},
    {"ssl_early_data", v_early_data},
    {"ssl_curves", v_curves},
};

// Checks a request whose head came over a TLS port, once its server is
// chosen: 0 to go on, or the status to answer, with the reason logged
// at info:
//   497  `plain`: an HTTP request sent to the TLS port unencrypted
//   421  SNI chose another server and this one verifies clients
//   495  the client certificate failed verification
//   496  "ssl_verify_client on" and no client certificate
// 495-497 go out as 400 with nginx's pages; "error_page 497" and the
// others may redirect them.
int check_request(Request& r, bool plain) {
    if (plain) {
        GH_LOG(Info, "client sent plain HTTP request to HTTPS port while reading client request headers");
        return 497;
    }
    tls::Session* s = r.stream().tls();
    if (!s || !r.srv) return 0;
    const SslSrvConf& c = ssl_conf(*r.srv);
    tls::VerifyClient v = c.verify_client.value_or(tls::VerifyClient::Off);
    if (v == tls::VerifyClient::Off) return 0;
    // The handshake asked for (or skipped) a client certificate as the
    // SNI server wanted; a Host naming another server that verifies
    // clients would get around that (RFC 9110 15.5.20).
    if (s->sni_choice && s->sni_choice != r.srv) {
        GH_LOG(Info, "client attempted to request the server name different from the one that was negotiated "
                     "while reading client request headers");
        return 421;
    }
    long rc = s->verify_result();
    if (rc != X509_V_OK) {
        // "optional_no_ca": a certificate nobody here can vouch for is
        // still passed on ($ssl_client_verify tells the rest).
        bool untrusted_ok = v == tls::VerifyClient::OptionalNoCa &&
                            (rc == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || rc == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
                             rc == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
                             rc == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                             rc == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE || rc == X509_V_ERR_CERT_UNTRUSTED);
        if (!untrusted_ok) {
            GH_LOG(Info, "client SSL certificate verify error: (%ld:%s) while reading client request headers", rc,
                   X509_verify_cert_error_string(rc));
            return 495;
        }
    }
    // "ssl_ocsp" found the certificate revoked, or could not tell
    // (ssl_after_handshake); as a failed verification [nginx].
    if (!s->verify_failure().empty()) {
        GH_LOG(Info, "client SSL certificate verify error: %s while reading client request headers",
               s->verify_failure().c_str());
        return 495;
    }
    if (v == tls::VerifyClient::On && !s->has_client_cert()) {
        GH_LOG(Info, "client sent no required SSL certificate while reading client request headers");
        return 496;
    }
    return 0;
}

// Right after the head, before any rewrite: what the handshake allows.
// Answered once the server is known, so that its error_page applies (and
// $request_uri is set), as nginx does.
Next post_read(Request& r) {
    Stream& st = r.stream();
    if (!st.tls() && !st.plain_on_tls_port()) return Next::Decline;
    if (int status = check_request(r, st.plain_on_tls_port())) return respond_status(r, status);
    return Next::Decline;
}

// Only a connection to a TLS port has anything to check.
bool post_read_wanted(conf::ConfArray main, conf::ConfArray, conf::ConfArray) {
    const HttpMainConf* m = http_main(main);
    return std::any_of(m->ports.begin(), m->ports.end(), [](const ListenPort& p) { return p.bind.ssl; });
}

constexpr PhaseHandler kPhases[] = {{Phase::PostRead, post_read, post_read_wanted}};
constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

}  // namespace

const tls::Context* ssl_context(const SrvConf& srv) { return ssl_conf(srv).ctx; }

bool ssl_after_handshake(tls::Session& s, event::Callback resume) {
    if (!s.user) return true;
    // The settings of the context the handshake ended with: the SNI
    // server's when it has one, else the address's default server's.
    const SrvConf* srv = static_cast<Stream*>(s.user)->servers().default_server;
    if (s.sni_choice && ssl_conf(*static_cast<const SrvConf*>(s.sni_choice)).ctx)
        srv = static_cast<const SrvConf*>(s.sni_choice);
    const SslSrvConf& c = ssl_conf(*srv);
    // The common case costs these two tests.
    if (!c.ocsp || *c.ocsp == OcspMode::Off) return true;
    tls::VerifyClient v = c.verify_client.value_or(tls::VerifyClient::Off);
    if (v != tls::VerifyClient::On && v != tls::VerifyClient::Optional) return true;
    // Nothing to ask about: no certificate, or one refused already.
    if (!s.has_client_cert() || s.verify_result() != X509_V_OK) return true;
    STACK_OF(X509)* chain = client_chain(s.ssl());
    if (!chain) {
        s.fail_verify(kOcspFailed);
        return true;
    }
    // Every certificate but the root (a self-signed one alone: none);
    // "leaf": the client's own only [nginx].
    int n = sk_X509_num(chain);
    size_t count = n < 2 ? 0 : *c.ocsp == OcspMode::Leaf ? 1 : static_cast<size_t>(n - 1);
    auto check = std::make_unique<ClientOcspCheck>(c, s, chain, count);
    ClientOcspCheck* p = check.get();
    s.hold = std::move(check);
    return p->run(resume);
}

extern const conf::Module ssl_module{
    .name = "ssl",
    .directives = kDirectives,
    .srv = conf::level<SslSrvConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .quit_worker = OcspStapler::quit_worker,
    .exit_worker = OcspStapler::quit_worker,
};

}  // namespace gatehouse::http
