// realip_module: the client's address as a trusted proxy in front of us
// reports it [nginx realip module].
//
//   set_real_ip_from 192.0.2.0/24;   # the proxies trusted (CIDR, "unix:", a host name)
//   real_ip_header X-Forwarded-For;  # X-Real-IP (default), X-Forwarded-For,
//                                    # proxy_protocol, or any header's name
//   real_ip_recursive on;            # skip trusted addresses from the right
//
// A request coming from a trusted address gets the address (and port,
// when given) the proxy reports as Request::remote_addr, remote_port and
// remote_sockaddr, so that every later handler (limits, allow/deny, the
// access log, proxy's X-Forwarded-For and X-Real-IP) sees the client.
// $realip_remote_addr and $realip_remote_port keep the connection's.
//
// It runs at PostRead with the server's settings and again at Preaccess
// with the location's, as nginx does: the first that replaces the
// address wins, and an internal redirect does not apply the proxy's word
// twice (the address stays replaced, and the stream's is kept apart).
#include <arpa/inet.h>
#include <netdb.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/str.h"
#include "http/phases.h"
#include "http/proxy_protocol.h"
#include "http/realip_cidr.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module realip_module;

namespace {

enum class Source : uint8_t { XRealIp, XForwardedFor, ProxyProtocol, Header };

struct RealipConf {
    // "set_real_ip_from": one range per directive (all addresses of a host
    // name); a level without any takes its parent's list, as nginx.
    std::vector<Cidr> from;
    std::optional<Source> source;  // "real_ip_header"
    std::string header;            // Source::Header: the field's name
    std::optional<bool> recursive; // "real_ip_recursive"
};

void merge(const RealipConf& up, RealipConf& c) {
    if (c.from.empty()) c.from = up.from;
    if (!c.source) {
        c.source = up.source ? *up.source : Source::XRealIp;
        c.header = up.header;
    }
    conf::inherit(c.recursive, up.recursive, false);
}

bool trusted(const RealipConf& c, const sockaddr* sa) {
    for (const Cidr& r : c.from)
        if (cidr_match(r, sa)) return true;
    return false;
}

// The address an X-Forwarded-For-style list gives, read from its right
// end: its last element, or, recursively, the first from the right that
// is not a trusted proxy (the leftmost when all are). An element that is
// not an address stops the walk; false when not even the last was one.
bool from_list(const RealipConf& c, std::string_view list, sockaddr_storage* out) {
    bool found = false;
    for (;;) {
        while (!list.empty() && (list.back() == ' ' || list.back() == ',')) list.remove_suffix(1);
        if (list.empty()) return found;
        const size_t sep = list.find_last_of(" ,");
        const std::string_view elem = sep == std::string_view::npos ? list : list.substr(sep + 1);
        sockaddr_storage sa;
        if (!parse_addr_port(elem, &sa)) return found;
        *out = sa;
        found = true;
        list = sep == std::string_view::npos ? std::string_view() : list.substr(0, sep);
        if (!*c.recursive || !trusted(c, reinterpret_cast<const sockaddr*>(out))) return true;
    }
}

void set_client(Request& r, const sockaddr_storage& sa) {
    auto* copy = r.arena().make<sockaddr_storage>(sa);
    char text[INET6_ADDRSTRLEN] = {};
    uint16_t port;
    if (sa.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(sa);
        inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
        port = ntohs(in.sin_port);
    } else {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(sa);
        inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
        port = ntohs(in6.sin6_port);
    }
    r.set_remote_addr(r.arena().dup(text));
    r.remote_port = port;
    r.remote_sockaddr = reinterpret_cast<const sockaddr*>(copy);
}

Next run_realip(Request& r) {
    if (!r.loc_confs) return Next::Decline;
    // Not configured here: the common case, decided before anything else.
    const RealipConf& c = r.loc_conf<RealipConf>(realip_module);
    if (c.from.empty() || !r.remote_sockaddr) return Next::Decline;
    // Replaced already (at PostRead, or before an internal redirect): the
    // address is no longer the connection's.
    if (r.remote_sockaddr != r.stream().peer_sockaddr()) return Next::Decline;
    if (!trusted(c, r.remote_sockaddr)) return Next::Decline;

    sockaddr_storage sa;
    switch (*c.source) {
        case Source::ProxyProtocol: {
            const ProxyHeader* pp = r.stream().proxy_protocol();
            if (!pp || !pp->has_addresses) return Next::Decline;
            sa = pp->src;
            break;
        }
        case Source::XForwardedFor: {
            // Several fields are one list, in order (RFC 9110 5.3).
            std::pmr::string list(r.mem());
            for (const HeaderField& h : r.headers)
                if (iequals(h.name, "X-Forwarded-For")) {
                    if (!list.empty()) list += ", ";
                    list += h.value;
                }
            if (list.empty() || !from_list(c, list, &sa)) return Next::Decline;
            break;
        }
        case Source::XRealIp:
        case Source::Header: {
            const HeaderField* h = r.headers.find(*c.source == Source::XRealIp ? "X-Real-IP" : c.header);
            if (!h || !from_list(c, h->value, &sa)) return Next::Decline;
            break;
        }
    }
    set_client(r, sa);
    return Next::Decline;
}

void v_realip_remote_addr(Request& r, VarValue& v, uintptr_t) { v.s = r.stream().peer_text(); }
void v_realip_remote_port(Request& r, VarValue& v, uintptr_t) {
    uint16_t port = r.stream().peer_port();
    if (port == 0) {
        v.s = "";
        return;
    }
    char b[8];
    int n = snprintf(b, sizeof b, "%u", static_cast<unsigned>(port));
    v.s = r.arena().dup({b, static_cast<size_t>(n)});
}

using conf::Ctx;
using conf::Node;

Status set_from(Ctx& cx, const Node& n, RealipConf& c) {
    const std::string& v = n.args[0].text;
    std::string warning;
    if (auto cidr = parse_cidr(v, &warning)) {
        if (!warning.empty()) GH_LOG(Warn, "%s in %s", warning.c_str(), n.where().c_str());
        c.from.push_back(*cidr);
        return {};
    }
    // A host name: its addresses now, as nginx resolves it (configuration
    // time, in the master; never in a worker).
    const auto found = v.find('/') == std::string::npos ? conf::lookup_host(v, 0, SOCK_STREAM)
                                                         : std::vector<conf::HostAddress>{};
    if (found.empty()) return cx.error(n, "host not found in set_real_ip_from \"" + v + "\"");
    for (const conf::HostAddress& h : found) c.from.push_back(cidr_of(reinterpret_cast<const sockaddr*>(&h.sa)));
    return {};
}

Status set_header(Ctx& cx, const Node& n, RealipConf& c) {
    if (c.source) return cx.error(n, "\"real_ip_header\" directive is duplicate");
    const std::string& v = n.args[0].text;
    if (v == "X-Real-IP") c.source = Source::XRealIp;
    else if (v == "X-Forwarded-For") c.source = Source::XForwardedFor;
    else if (v == "proxy_protocol") c.source = Source::ProxyProtocol;
    else {
        c.source = Source::Header;
        c.header = v;
    }
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"set_real_ip_from", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_from>()},
    {"real_ip_header", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_header>()},
    {"real_ip_recursive", conf::kHttpSrvLoc, conf::Take1, conf::flag<&RealipConf::recursive>()},
};

bool realip_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return !static_cast<const RealipConf*>(loc[realip_module.index])->from.empty();
}

constexpr PhaseHandler kPhases[] = {{Phase::PostRead, run_realip, realip_wanted},
                                    {Phase::Preaccess, run_realip, realip_wanted}};

constexpr VariableDef kVariables[] = {
    {"realip_remote_addr", v_realip_remote_addr},
    {"realip_remote_port", v_realip_remote_port},
};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

}  // namespace

extern const conf::Module realip_module{
    .name = "realip",
    .directives = kDirectives,
    .loc = conf::level<RealipConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
