// OCSP responses fetched from the responder and stapled ("ssl_stapling"
// without "ssl_stapling_file") [nginx ngx_event_openssl_stapling].
//
// One OcspStapler per certificate, made with the server's TLS context in
// the master; each worker then runs its own (the state is copied by
// fork(), as nginx's per-worker staples). A handshake whose client asks
// for a status (status_request) gets the response this worker holds while
// it is valid, and starts a fetch when one is due: the first handshakes
// go without, as in nginx, and an idle worker asks nothing.
//
// A fetch is http/ocsp_fetch.h's (shared with "ssl_ocsp"): on the
// worker's loop, never blocking it, bounded in time and size. The response is
// checked (tls/ocsp.h) before it replaces the one stapled. When to ask
// again: 5 minutes before nextUpdate, at most an hour on, at least 5
// minutes on; after a failure (logged at error, with the responder, the
// peer and the certificate) in 5 minutes, the old response being stapled
// meanwhile while it is valid [nginx].
#pragma once

#include <openssl/x509.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/log.h"
#include "event/loop.h"
#include "event/resolver.h"
#include "event/timer.h"
#include "http/ocsp_fetch.h"
#include "tls/context.h"
#include "tls/ocsp.h"

namespace gatehouse::http {

struct StaplerConf {
    tls::ResponderUrl url;
    std::string url_text;      // for the log: as written or as in the certificate
    std::string certificate;   // the file, for the log
    bool verify = false;       // "ssl_stapling_verify"
    // The server's "resolver" (owner: the generation); null: none, so
    // only an address literal can be asked.
    const event::ResolverSpec* resolver = nullptr;
    conf::Duration resolver_timeout = event::ResolverConf::kDefaultTimeout;
};

class OcspStapler final : public tls::StapleSource {
public:
    // Certificate `i` of `ctx` (which outlives this), issued by `issuer`
    // (a reference this takes over). Master, configuration time: the
    // request is built now; an error means no stapling for it.
    static Result<OcspStapler*> make(Arena& arena, const tls::Context& ctx, size_t i, X509* issuer,
                                     StaplerConf conf);
    OcspStapler(const tls::Context& ctx, size_t i, X509* issuer, StaplerConf conf, std::string request);
    OcspStapler(const OcspStapler&) = delete;
    OcspStapler& operator=(const OcspStapler&) = delete;
    ~OcspStapler();

    std::string_view staple() override;

    // Worker: a graceful shutdown and the exit, before the loop and the
    // table go: the fetches under way end, and none starts for the rest
    // of the process.
    static void quit_worker();

private:
    void start();
    void fetched();
    void done(bool ok);

    const tls::Context& ctx_;
    size_t index_;
    X509* issuer_;  // owned reference
    StaplerConf conf_;
    OcspTarget target_;  // from conf_
    std::string head_;   // the request: a GET's head

    // The worker's state.
    std::string der_;                // the response stapled; empty: none
    int64_t valid_ = 0;              // until when der_ may be stapled
    int64_t refresh_ = 0;            // not asked again before
    bool loading_ = false;
    event::Event start_;
    OcspFetch fetch_;
};

}  // namespace gatehouse::http
