// proxy_module: TLS to origins, "proxy_pass https://" and the proxy_ssl_*
// directives [nginx ngx_http_proxy_module, ngx_http_upstream_ssl_*]. The
// client contexts are built here at config time; the handshake itself is
// the upstream::Client's (src/upstream/client.cc).
#include <openssl/ssl.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "conf/registry.h"
#include "http/modules/proxy.h"
#include "tls/context.h"

namespace gatehouse::http::proxy {

std::string_view ssl_host(std::string_view h) {
    if (!h.empty() && h[0] == '[') {
        size_t close = h.find(']');
        return close == std::string_view::npos ? h : h.substr(1, close - 1);
    }
    size_t colon = h.rfind(':');
    return colon == std::string_view::npos ? h : h.substr(0, colon);
}

namespace {

// What makes two locations' contexts (and their resumable sessions) the
// same: every setting, and the proxy_ssl_name declaration itself.
std::string settings_key(const ProxyConf& pc) {
    std::string k;
    auto add = [&](std::string_view v) {
        k += v;
        k += '\0';
    };
    add(*pc.ssl_server_name ? "1" : "0");
    add(*pc.ssl_verify ? "1" : "0");
    add(std::to_string(*pc.ssl_verify_depth));
    add(pc.ssl_trusted_certificate ? *pc.ssl_trusted_certificate : "");
    add(pc.ssl_certificate ? *pc.ssl_certificate : "");
    add(pc.ssl_certificate_key ? *pc.ssl_certificate_key : "");
    add(pc.ssl_certificate_var ? pc.ssl_certificate_var->text() : "");
    add(pc.ssl_certificate_key_var ? pc.ssl_certificate_key_var->text() : "");
    add(std::to_string(*pc.ssl_protocols));
    add(*pc.ssl_ciphers);
    add(*pc.ssl_session_reuse ? "1" : "0");
    add(pc.ssl_crl ? *pc.ssl_crl : "");
    add(pc.ssl_key_log ? *pc.ssl_key_log : "");
    if (pc.ssl_passwords)
        for (const std::string& p : *pc.ssl_passwords) add(p);
    add("|");
    if (pc.ssl_conf_commands)
        for (const auto& [k, v] : *pc.ssl_conf_commands) {
            add(k);
            add(v);
        }
    add(std::to_string(reinterpret_cast<uintptr_t>(pc.ssl_name)));
    return k;
}

Result<UpstreamTls*> make_tls(conf::Ctx& cx, const conf::Node& n, const ProxyConf& pc, std::string key) {
    auto* t = cx.arena().make<UpstreamTls>();
    t->key = std::move(key);
    t->settings.server_name = *pc.ssl_server_name;
    t->settings.verify = *pc.ssl_verify;
    // A certificate chosen per request: a session made with one must not
    // be resumed for a request that names another.
    const bool dynamic = pc.ssl_certificate_var || pc.ssl_certificate_key_var;
    t->settings.session_reuse = *pc.ssl_session_reuse && !dynamic;
    t->name = pc.ssl_name;
    auto* ctx = cx.arena().make<tls::Context>(tls::Context::Side::Client);
    t->settings.ctx = ctx;
    if (pc.ssl_certificate && (!pc.ssl_certificate->empty() || pc.ssl_certificate_var) && !pc.ssl_certificate_key)
        return cx.error(n, "no \"proxy_ssl_certificate_key\" is defined for certificate \"" +
                               (pc.ssl_certificate_var ? pc.ssl_certificate_var->text() : *pc.ssl_certificate) +
                               "\"");
    if (!dynamic && pc.ssl_certificate && !pc.ssl_certificate->empty() && pc.ssl_certificate_key &&
        !pc.ssl_certificate_key->empty()) {
        std::span<const std::string> passwords;
        if (pc.ssl_passwords) passwords = *pc.ssl_passwords;
        if (auto s = ctx->add_certificate(*pc.ssl_certificate, *pc.ssl_certificate_key, passwords); !s)
            return cx.error(n, s.message());
    }
    if (auto s = ctx->set_protocols(*pc.ssl_protocols); !s) return cx.error(n, s.message());
    if (auto s = ctx->set_ciphers(*pc.ssl_ciphers, false); !s) return cx.error(n, s.message());
    if (*pc.ssl_verify) {
        if (!pc.ssl_trusted_certificate)
            return cx.error(n, "no proxy_ssl_trusted_certificate for proxy_ssl_verify");
        if (auto s = ctx->add_trusted(*pc.ssl_trusted_certificate); !s) return cx.error(n, s.message());
    }
    if (pc.ssl_crl) {
        // A revocation list only means something with verification on.
        if (auto s = ctx->add_crl(*pc.ssl_crl); !s) return cx.error(n, s.message());
    }
    // OpenSSL takes an int; no chain is longer than 100.
    ctx->verify_peer(*pc.ssl_verify, static_cast<int>(std::min<uint64_t>(*pc.ssl_verify_depth, 100)));
    if (pc.ssl_key_log)
        if (auto s = ctx->set_key_log(*pc.ssl_key_log); !s) return cx.error(n, s.message());
    if (pc.ssl_conf_commands)
        if (auto s = ctx->conf_commands(*pc.ssl_conf_commands); !s) return cx.error(n, s.message());
    if (*pc.ssl_session_reuse) ctx->keep_client_sessions();
    return t;
}

}  // namespace

Status build_upstream_tls(conf::Ctx& cx, ProxyMainConf& m) {
    for (auto& [pc, pass] : m.https_passes) {
        std::string key = settings_key(*pc);
        UpstreamTls* found = nullptr;
        for (UpstreamTls* t : m.tls)
            if (t->key == key) found = t;
        if (!found) {
            auto t = make_tls(cx, *pass->node, *pc, std::move(key));
            if (!t) return t.error();
            found = *t;
            m.tls.push_back(found);
        }
        pass->tls = found;
    }
    return {};
}

}  // namespace gatehouse::http::proxy
