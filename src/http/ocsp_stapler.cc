#include "http/ocsp_stapler.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/arena.h"
#include "event/worker.h"

namespace gatehouse::http {

namespace {

// The staplers of this worker with a fetch running, for quit_worker().
std::vector<OcspStapler*>& running() {
    static std::vector<OcspStapler*> v;
    return v;
}
bool g_quitting = false;

// Wall time, as OCSP's thisUpdate and nextUpdate: the loop's (a test's
// clock may be fake).
int64_t now_sec() { return static_cast<int64_t>(event::worker_loop().wall().sec); }

}  // namespace

// ---- the stapler -----------------------------------------------------------------

Result<OcspStapler*> OcspStapler::make(Arena& arena, const tls::Context& ctx, size_t i, X509* issuer,
                                       StaplerConf conf) {
    auto der = tls::ocsp_request(ctx.certificate(i), issuer);
    if (!der) {
        X509_free(issuer);
        return der.error();
    }
    std::string head = ocsp_get_head(conf.url, *der);
    return arena.make<OcspStapler>(ctx, i, issuer, std::move(conf), std::move(head));
}

OcspStapler::OcspStapler(const tls::Context& ctx, size_t i, X509* issuer, StaplerConf conf, std::string head)
    : ctx_(ctx), index_(i), issuer_(issuer), conf_(std::move(conf)), head_(std::move(head)) {
    target_.url = conf_.url;
    target_.resolver = conf_.resolver;
    target_.resolver_timeout = conf_.resolver_timeout;
    start_.cb = event::Callback::to<&OcspStapler::start>(this);
}

OcspStapler::~OcspStapler() {
    // A worker ends its fetches in quit_worker(), before its generation
    // goes, and the master starts none: only a test's stapler may go with
    // one under way (its loop and table still there).
    if (loading_) done(true);
    X509_free(issuer_);
}

std::string_view OcspStapler::staple() {
    // No loop: not a worker (nothing fetched, nothing to staple).
    if (!event::has_worker_loop()) return {};
    const int64_t now = now_sec();
    std::string_view out;
    if (!der_.empty() && valid_ >= now) out = der_;
    // A fetch is due: start it once this handshake step is over, so that
    // the handshake does not wait on a socket or the resolver.
    if (!loading_ && refresh_ <= now && !g_quitting) {
        loading_ = true;
        running().push_back(this);
        event::worker_loop().post(start_);
    }
    return out;
}

void OcspStapler::start() {
    fetch_.start(target_, head_, ", certificate: \"" + conf_.certificate + "\"",
                 event::Callback::to<&OcspStapler::fetched>(this));
}

void OcspStapler::fetched() {
    if (!fetch_.ok()) return done(false);
    const std::string& body = fetch_.body();
    auto valid = tls::check_ocsp_response(body, ctx_.certificate(index_), issuer_, ctx_.chain(index_), ctx_.store(),
                                          conf_.verify);
    if (!valid) {
        GH_LOG(Error, "%s while requesting certificate status, responder: %s, peer: %s, certificate: \"%s\"",
               valid.message().c_str(), conf_.url.host.c_str(), fetch_.peer().c_str(), conf_.certificate.c_str());
        return done(false);
    }
    der_ = body;
    valid_ = *valid;
    refresh_ = tls::ocsp_refresh_after_success(now_sec(), valid_);
    done(true);
}

void OcspStapler::done(bool ok) {
    fetch_.cancel();
    if (event::has_worker_loop()) event::worker_loop().unpost(start_);
    // A failure: the response held (if any) stays stapled while valid.
    if (!ok && event::has_worker_loop()) refresh_ = now_sec() + tls::kOcspRetryAfterError;
    loading_ = false;
    std::erase(running(), this);
}

void OcspStapler::quit_worker() {
    g_quitting = true;
    // done() takes each out of the list.
    while (!running().empty()) running().back()->done(false);
}

}  // namespace gatehouse::http
