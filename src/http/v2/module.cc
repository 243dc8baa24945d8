#include "http/v2/module.h"

#include <algorithm>

#include "conf/registry.h"
#include "conf/values.h"
#include "core/log.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/stream.h"
#include "http/variables.h"

namespace gatehouse::http {

namespace v2 {
namespace {

using conf::Ctx;
using conf::Node;

// RFC 9113 6.9.1: a flow-control window is at most 2^31-1 octets.
constexpr uint64_t kMaxWindow = (1u << 31) - 1;

void merge_srv(const H2SrvConf& up, H2SrvConf& c) {
    conf::inherit(c.max_concurrent_streams, up.max_concurrent_streams, 128);
    conf::inherit(c.body_preread_size, up.body_preread_size, 64 * 1024);
}

void merge_loc(const H2LocConf& up, H2LocConf& c) { conf::inherit(c.chunk_size, up.chunk_size, 8 * 1024); }

Status set_recv_buffer(Ctx& cx, const Node& n, H2MainConf& c) {
    if (c.recv_buffer_size) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    // Room for a frame header and then some; nginx refuses the same.
    if (*v <= 2 * 16) return cx.error(n, "value is too small");
    c.recv_buffer_size = *v;
    return {};
}

Status set_preread(Ctx& cx, const Node& n, H2SrvConf& c) {
    if (c.body_preread_size) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    if (*v > kMaxWindow) return cx.error(n, "the maximum body preread buffer size is " + std::to_string(kMaxWindow));
    c.body_preread_size = *v;
    return {};
}

Status set_chunk(Ctx& cx, const Node& n, H2LocConf& c) {
    if (c.chunk_size) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    if (*v == 0) return cx.error(n, "the http2 chunk size cannot be zero");
    // A DATA frame carries at most 2^24-1 octets (RFC 9113 4.2); nghttp2
    // sends at most what the peer's SETTINGS_MAX_FRAME_SIZE allows anyway.
    c.chunk_size = std::min<uint64_t>(*v, (1u << 24) - 1);
    return {};
}

// $http2: "h2" over TLS, "h2c" over plain TCP, empty for HTTP/1.x.
void v_http2(Request& r, VarValue& v, uintptr_t) {
    v.s = r.http_version != 20 ? std::string_view() : r.stream().tls() ? "h2" : "h2c";
    v.valid = true;
}

constexpr VariableDef kVariables[] = {
    {"http2", v_http2},
};

// A request over HTTP/2 whose Host names a server with HTTP/2 off (a
// connection made for another name, reused): 421, so that the client
// asks again on a connection of its own [nginx 1.25 ngx_http_set_virtual_server].
Next post_read(Request& r) {
    if (r.http_version != 20 || !r.srv || http2_enabled(r.stream().servers(), *r.srv)) return Next::Decline;
    GH_LOG(Info, "client attempted to request the server name \"%.*s\" with HTTP/2 disabled",
           static_cast<int>(r.host.size()), r.host.data());
    return respond_status(r, 421);
}

// An HTTP/2 request can name a server without "http2" only where some
// address or server of the generation speaks it.
bool post_read_wanted(conf::ConfArray main, conf::ConfArray srv, conf::ConfArray) {
    if (static_cast<const SrvConf*>(srv[http_core_module.index])->http2.value_or(false)) return false;
    const HttpMainConf* m = http_main(main);
    for (const ListenPort& p : m->ports)
        for (const AddrServers& as : p.addrs)
            if (as.http2) return true;
    return std::any_of(m->servers.begin(), m->servers.end(), [](const SrvConf* s) { return s->http2.value_or(false); });
}

constexpr PhaseHandler kPhases[] = {{Phase::PostRead, post_read, post_read_wanted}};

const ModuleHooks kHooks{
    .phases = kPhases,
    .variables = std::span<const VariableDef>(kVariables),
};

// Directives nginx 1.19.7 and 1.25.1 made obsolete: still taken, with
// nginx's warning, and without effect (their values are not looked at,
// as nginx does not), so that an older configuration loads. `Instead`:
// the directive that does the job now, or "" for server push, which is
// gone.
template <const char* Instead>
Status obsolete(conf::Ctx&, const conf::Node& n) {
    if (Instead[0] != '\0')
        GH_LOG(Warn, "the \"%s\" directive is obsolete, use the \"%s\" directive instead in %s", n.name.c_str(),
               Instead, n.where().c_str());
    else
        GH_LOG(Warn, "the \"%s\" directive is obsolete, ignored in %s", n.name.c_str(), n.where().c_str());
    return {};
}

constexpr char kHeaderTimeout[] = "client_header_timeout";
constexpr char kKeepaliveTimeout[] = "keepalive_timeout";
constexpr char kKeepaliveRequests[] = "keepalive_requests";
constexpr char kLargeBuffers[] = "large_client_header_buffers";
constexpr char kPush[] = "";

constexpr conf::Directive kDirectives[] = {
    {"http2_recv_timeout", conf::kHttp | conf::kServer, conf::Take1, conf::custom<obsolete<kHeaderTimeout>>()},
    {"http2_idle_timeout", conf::kHttp | conf::kServer, conf::Take1, conf::custom<obsolete<kKeepaliveTimeout>>()},
    {"http2_max_requests", conf::kHttp | conf::kServer, conf::Take1, conf::custom<obsolete<kKeepaliveRequests>>()},
    {"http2_max_field_size", conf::kHttp | conf::kServer, conf::Take1, conf::custom<obsolete<kLargeBuffers>>()},
    {"http2_max_header_size", conf::kHttp | conf::kServer, conf::Take1, conf::custom<obsolete<kLargeBuffers>>()},
    {"http2_push", conf::kHttpSrvLoc, conf::Take1, conf::custom<obsolete<kPush>>()},
    {"http2_push_preload", conf::kHttpSrvLoc, conf::Take1, conf::custom<obsolete<kPush>>()},
    {"http2_max_concurrent_pushes", conf::kHttp | conf::kServer, conf::Take1, conf::custom<obsolete<kPush>>()},
    {"http2_recv_buffer_size", conf::kHttp, conf::Take1, conf::custom<set_recv_buffer>()},
    {"http2_max_concurrent_streams", conf::kHttp | conf::kServer, conf::Take1,
     conf::number<&H2SrvConf::max_concurrent_streams>()},
    {"http2_body_preread_size", conf::kHttp | conf::kServer, conf::Take1, conf::custom<set_preread>()},
    {"http2_chunk_size", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_chunk>()},
};

}  // namespace
}  // namespace v2

extern const conf::Module http_v2_module{
    .name = "http_v2",
    .directives = v2::kDirectives,
    .main = conf::level<v2::H2MainConf>(),
    .srv = conf::level<v2::H2SrvConf, v2::merge_srv>(),
    .loc = conf::level<v2::H2LocConf, v2::merge_loc>(),
    .http = &v2::kHooks,
};

}  // namespace gatehouse::http
