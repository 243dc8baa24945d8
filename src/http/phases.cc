#include "http/phases.h"


#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <ctime>

#include "core/log.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/conditional.h"
#include "http/connection.h"
#include "http/core_module.h"

namespace gatehouse::http {

namespace {

bool is_regex(const LocConf* l) { return l->match == LocMatch::Regex || l->match == LocMatch::RegexCaseless; }

enum class Found { None, Prefix, Final };

// nginx's location choice: the longest matching prefix among a level's
// prefix locations (an exact match ends the search at once; "^~" ends it
// before regexes), searched again among that location's nested ones; then
// the regexes, innermost level first, in config order; else the prefix.
Found find_in(Request& r, const LocConf& level, LocConf** best) {
    LocConf* longest = nullptr;
    for (LocConf* l : level.locations) {
        if (is_regex(l)) continue;
        if (l->match == LocMatch::Exact) {
            if (r.uri == l->name) {
                *best = l;
                return Found::Final;
            }
            continue;
        }
        if (r.uri.size() >= l->name.size() && r.uri.compare(0, l->name.size(), l->name) == 0 &&
            (!longest || l->name.size() > longest->name.size()))
            longest = l;
    }
    Found f = Found::None;
    if (longest) {
        *best = longest;
        f = Found::Prefix;
        LocConf* inner = nullptr;
        Found g = find_in(r, *longest, &inner);
        if (g == Found::Final) {
            *best = inner;
            return Found::Final;
        }
        if (g == Found::Prefix) *best = inner;
        if (longest->match == LocMatch::PrefixNoRegex && g == Found::None) return Found::Final;
    }
    for (LocConf* l : level.locations) {
        if (!is_regex(l)) continue;
        if (l->regex->exec(r, r.uri)) {
            *best = l;
            LocConf* inner = nullptr;
            Found g = find_in(r, *l, &inner);
            if (g != Found::None) *best = inner;
            return Found::Final;
        }
    }
    return f;
}

void set_location(Request& r, LocConf* l) {
    r.loc = l;
    r.loc_confs = l->loc_confs;
}

Next find_config(Request& r) {
    // A server-level rewrite already changed the URI the search uses.
    r.uri_changed = false;
    LocConf& server_level = *static_cast<LocConf*>(r.srv->loc_confs[http_core_module.index]);
    LocConf* best = nullptr;
    find_in(r, server_level, &best);
    set_location(r, best ? best : &server_level);
    LocConf& lc = *r.loc;
    if (*lc.internal && !r.internal) return respond_status(r, 404);
    if (r.content_length && *r.content_length > *lc.client_max_body_size && *lc.client_max_body_size != 0) {
        GH_LOG(Error, "client intended to send too large body: %llu bytes, client: %.*s",
               static_cast<unsigned long long>(*r.content_length),
               static_cast<int>(r.conn().peer_addr().size()), r.conn().peer_addr().data());
        r.keepalive = false;
        return respond_status(r, 413);
    }
    return Next::Decline;
}

Next post_rewrite(Request& r) {
    if (!r.uri_changed) return Next::Decline;
    r.uri_changed = false;
    if (--r.uri_changes == 0) {
        GH_LOG(Error, "rewrite or internal redirection cycle while processing \"%.*s\"",
               static_cast<int>(r.uri.size()), r.uri.data());
        return respond_status(r, 500);
    }
    r.set_exten();
    r.phase_index = http_main(r.main_confs)->find_config_step;
    r.restart = true;
    return Next::Decline;
}

Next no_content(Request& r);

// A location with a handler of its own ("proxy_pass" and the like) is
// answered by it alone, as nginx's per-location content handler.
Next location_content(Request& r) {
    PhaseFn h = r.loc ? r.loc->content_handler : nullptr;
    if (!h) return Next::Decline;
    Next n = h(r);
    if (n == Next::Decline || n == Next::Proceed) return no_content(r);
    return n;
}

Next no_content(Request& r) {
    // Nothing answered: nginx's static module would have said 404 (or 405
    // for methods it cannot serve).
    if (r.in.method != Method::Get && r.in.method != Method::Head && r.in.method != Method::Post)
        return respond_status(r, 405);
    return respond_status(r, 404);
}

// Reason phrases as nginx sends them, indexed by status - 100.
constexpr std::array<std::string_view, 500> make_reasons() {
    std::array<std::string_view, 500> t{};
    auto set = [&](int code, std::string_view r) { t[static_cast<size_t>(code - 100)] = r; };
    set(100, "Continue"), set(101, "Switching Protocols"), set(200, "OK"), set(201, "Created");
    set(202, "Accepted"), set(204, "No Content"), set(206, "Partial Content");
    set(301, "Moved Permanently"), set(302, "Moved Temporarily"), set(303, "See Other");
    set(304, "Not Modified"), set(307, "Temporary Redirect"), set(308, "Permanent Redirect");
    set(400, "Bad Request"), set(401, "Unauthorized"), set(402, "Payment Required");
    set(403, "Forbidden"), set(404, "Not Found"), set(405, "Not Allowed");
    set(406, "Not Acceptable"), set(408, "Request Time-out"), set(409, "Conflict");
    set(410, "Gone"), set(411, "Length Required"), set(412, "Precondition Failed");
    set(413, "Request Entity Too Large"), set(414, "Request-URI Too Large");
    set(415, "Unsupported Media Type"), set(416, "Requested Range Not Satisfiable");
    set(421, "Misdirected Request"), set(429, "Too Many Requests");
    set(431, "Request Header Fields Too Large"), set(494, "Request Header Too Large");
    // nginx's own codes for TLS trouble, sent as 400 (see status_page).
    set(495, "The SSL certificate error"), set(496, "No required SSL certificate was sent");
    set(497, "The plain HTTP request was sent to HTTPS port");
    set(500, "Internal Server Error"), set(501, "Not Implemented"), set(502, "Bad Gateway");
    set(503, "Service Temporarily Unavailable"), set(504, "Gateway Time-out");
    set(505, "HTTP Version Not Supported"), set(507, "Insufficient Storage");
    return t;
}
constexpr auto kReasons = make_reasons();

bool is_tls_400(int status) { return status >= 495 && status <= 497; }

std::string_view server_header(Request& r) {
    return *r.loc_conf<LocConf>(http_core_module).server_tokens ? "gatehouse/" GH_VERSION : "gatehouse";
}

// "Tue, 01 Dec 2026 10:00:00 GMT", cached per second.
std::string_view cached_date() {
    static time_t last = -1;
    static char buf[kHttpDateMax];
    static std::string_view v;
    time_t now = static_cast<time_t>(event::worker_loop().wall().sec);
    if (now != last) {
        last = now;
        v = format_http_date(now, buf);
    }
    return v;
}

// A small appending writer over arena memory.
struct Out {
    char* p;
    char* end;
    char* start;
    void put(std::string_view s) {
        size_t n = std::min<size_t>(s.size(), static_cast<size_t>(end - p));
        memcpy(p, s.data(), n);
        p += n;
    }
    void num(uint64_t v) {
        char b[24];
        auto [end, ec] = std::to_chars(b, b + sizeof b, v);
        (void)ec;
        put({b, static_cast<size_t>(end - b)});
    }
};

}  // namespace

std::string_view status_page(Request& r, int status) {
    std::string_view reason = reason_phrase(status);
    std::string_view tokens = server_header(r);
    // 495-497 are 400s whose page says which TLS trouble it was [nginx].
    const bool tls_400 = is_tls_400(status);
    size_t cap = 320 + reason.size() * 3 + tokens.size();
    char* b = static_cast<char*>(r.arena().alloc(cap, 1));
    Out o{b, b + cap, b};
    o.put("<html>\r\n<head><title>");
    o.num(static_cast<uint64_t>(tls_400 ? 400 : status));
    o.put(" ");
    o.put(reason);
    o.put("</title></head>\r\n<body>\r\n<center><h1>");
    o.num(static_cast<uint64_t>(tls_400 ? 400 : status));
    o.put(" ");
    o.put(tls_400 ? reason_phrase(400) : reason);
    o.put("</h1></center>\r\n");
    if (tls_400) {
        o.put("<center>");
        o.put(reason);
        o.put("</center>\r\n");
    }
    o.put("<hr><center>");
    o.put(tokens);
    o.put("</center>\r\n</body>\r\n</html>\r\n");
    return {b, static_cast<size_t>(o.p - b)};
}

namespace {

Next apply_error_page(Request& r, const ErrorPage& ep) {
    std::string_view target = ep.uri.eval(r);
    r.err_status = ep.overwrite < 0 ? r.out.status : ep.overwrite;
    if (!target.empty() && target[0] == '@') {
        r.out.status = 0;
        return named_redirect(r, target);
    }
    if (!target.empty() && target[0] == '/') {
        std::string_view args;
        size_t q = target.find('?');
        if (q != std::string_view::npos) {
            args = target.substr(q + 1);
            target = target.substr(0, q);
        }
        r.out.status = 0;
        // As nginx: the error page is fetched with GET (HEAD stays HEAD).
        if (r.in.method != Method::Head) r.method = "GET";
        return internal_redirect(r, target, args);
    }
    // A URL: redirect the client there.
    int code = ep.overwrite;
    if (code != 301 && code != 302 && code != 303 && code != 307 && code != 308) code = 302;
    r.err_status = 0;
    r.out.status = code;
    r.out.location = target;
    r.body.clear();
    return Next::Respond;
}

}  // namespace

std::string_view reason_phrase(int status) {
    if (status < 100 || status > 599) return {};
    return kReasons[static_cast<size_t>(status - 100)];
}

void build_phase_engine(HttpMainConf& m) {
    m.handlers.clear();
    for (int p = 0; p < kPhases; ++p) {
        m.phase_start[p] = static_cast<uint16_t>(m.handlers.size());
        for (const Module* mod : modules)
            if (mod->http)
                for (const PhaseHandler& h : mod->http->phases)
                    if (static_cast<int>(h.phase) == p) m.handlers.push_back(h.fn);
    }
    m.phase_start[kPhases] = static_cast<uint16_t>(m.handlers.size());

    // Steps: each phase's handlers, then where Proceed goes. The engine's
    // own steps sit between phases.
    m.steps.clear();
    auto add_phase = [&](Phase p) {
        size_t from = m.steps.size();
        for (uint16_t i = m.phase_start[static_cast<int>(p)]; i < m.phase_start[static_cast<int>(p) + 1]; ++i)
            m.steps.push_back({m.handlers[i], 0});
        for (size_t i = from; i < m.steps.size(); ++i) m.steps[i].next = static_cast<uint16_t>(m.steps.size());
    };
    auto add_step = [&](PhaseFn fn) {
        m.steps.push_back({fn, static_cast<uint16_t>(m.steps.size() + 1)});
    };
    add_phase(Phase::PostRead);
    m.server_rewrite_step = static_cast<uint16_t>(m.steps.size());
    add_phase(Phase::ServerRewrite);
    m.find_config_step = static_cast<uint16_t>(m.steps.size());
    add_step(find_config);
    m.rewrite_step = static_cast<uint16_t>(m.steps.size());
    add_phase(Phase::Rewrite);
    add_step(post_rewrite);
    add_phase(Phase::Preaccess);
    add_phase(Phase::Access);
    add_phase(Phase::Precontent);
    add_step(location_content);
    add_phase(Phase::Content);
    add_step(no_content);
}

void run_phases(Request& r) {
    HttpMainConf& m = *http_main(r.main_confs);
    while (!r.conn().closing()) {
        if (r.phase_index >= m.steps.size()) {
            // no_content always responds; reaching here is a bug.
            respond_status(r, 500);
            finalize_response(r);
            return;
        }
        const auto& step = m.steps[r.phase_index];
        Next n = step.fn(r);
        if (r.restart) {
            r.restart = false;
            if (n == Next::Respond) {
                finalize_response(r);
                return;
            }
            continue;
        }
        switch (n) {
            case Next::Decline: ++r.phase_index; break;
            case Next::Proceed: r.phase_index = step.next; break;
            case Next::Suspend: return;
            case Next::Respond: finalize_response(r); return;
        }
    }
}

Next respond_status(Request& r, int status, std::string_view reason) {
    r.out.status = status;
    r.status = status;
    if (!reason.empty()) r.err_reason = reason;
    r.body.clear();
    if (status == 444 || status == 499) return Next::Respond;
    if (!r.no_error_page && r.loc_confs && r.uri_changes > 1) {
        auto& lc = r.loc_conf<LocConf>(http_core_module);
        bool allowed = r.err_status == 0 || *lc.recursive_error_pages;
        if (allowed)
            for (const ErrorPage& ep : lc.error_pages)
                if (ep.status == status) return apply_error_page(r, ep);
    }
    return Next::Respond;
}

Next internal_redirect(Request& r, std::string_view uri, std::string_view args) {
    if (--r.uri_changes == 0) {
        GH_LOG(Error, "rewrite or internal redirection cycle while internally redirecting to \"%.*s\"",
               static_cast<int>(uri.size()), uri.data());
        r.restart = false;
        r.err_status = 0;
        r.no_error_page = true;
        return respond_status(r, 500);
    }
    r.uri = r.arena().dup(uri);
    r.args = r.arena().dup(args);
    r.set_exten();
    r.internal = true;
    r.loc_confs = r.srv->loc_confs;
    r.loc = nullptr;
    for (size_t i = 0; i < modules.size(); ++i) r.set_ctx(*modules[i], nullptr);
    r.phase_index = http_main(r.main_confs)->server_rewrite_step;
    r.restart = true;
    return Next::Decline;
}

Next named_redirect(Request& r, std::string_view name) {
    for (LocConf* l : r.srv->named)
        if (l->name == name) {
            if (--r.uri_changes == 0) {
                r.no_error_page = true;
                return respond_status(r, 500);
            }
            r.internal = true;
            set_location(r, l);
            for (size_t i = 0; i < modules.size(); ++i) r.set_ctx(*modules[i], nullptr);
            r.phase_index = http_main(r.main_confs)->rewrite_step;
            r.restart = true;
            return Next::Decline;
        }
    GH_LOG(Error, "could not find named location \"%.*s\"", static_cast<int>(name.size()), name.data());
    r.no_error_page = true;
    return respond_status(r, 500);
}

void finalize_response(Request& r) {
    if (r.header_sent) {
        // A streaming handler failed after the head went out: the client
        // must not take a truncated body for a whole one.
        r.conn().abort();
        return;
    }
    if (r.out.status == 444) {
        r.status = 444;
        r.keepalive = false;
        r.conn().abort();
        return;
    }
    if (r.out.status == 0) r.out.status = 200;
    int st = r.out.status;
    if (st >= 300 && r.body.empty() && st != 304 && st != 204) {
        std::string_view page = status_page(r, st);
        if (is_tls_400(st)) r.out.status = st = 400;
        r.out.content_type = "text/html";
        r.out.content_length = page.size();
        r.out.headers.clear();
        Buf b = Buf::memory(page);
        b.last_buf = true;
        r.body.push(std::move(b));
        if (st >= 400) {
            // A 4xx/5xx may leave a body unread or a broken stream behind.
            if (st == 400 || st == 408 || st == 413 || st == 414 || st == 431 || st == 500 || st == 501 || st == 505)
                r.keepalive = false;
        }
    }
    if (r.body.empty() || !r.body.last()) {
        Buf end;
        end.last_buf = true;
        r.body.push(std::move(end));
    }
    if (send_header(r) == Flow::Fail) {
        r.conn().abort();
        return;
    }
    Chain c(r.mem());
    c.append(r.body);
    if (send_body(r, c) == Flow::Fail) r.conn().abort();
}

Flow send_header(Request& r) {
    HttpMainConf& m = *http_main(r.main_confs);
    ResponseHead& h = r.out;
    if (r.err_status && h.status == 200) h.status = r.err_status;
    if (h.status == 0) h.status = 200;
    for (HeaderFilter f : m.header_filters) {
        Flow fl = f(r, h);
        if (fl != Flow::Pass) return fl;
    }
    r.status = h.status;
    r.header_sent = true;
    auto& lc = r.loc_conf<LocConf>(http_core_module);
    bool no_body = h.status == 304 || h.status == 204 || h.status < 200;
    if (no_body) {
        r.head_only = true;
        h.content_length.reset();
    }
    if (!h.content_length && !no_body && !r.head_only) {
        if (r.http_version >= 11 && *lc.chunked_transfer_encoding)
            r.chunked_out = true;
        else
            r.keepalive = false;  // the end of the body is the end of the connection
    }
    if (!h.content_length && !no_body && r.head_only && r.http_version < 11) r.keepalive = false;

    // Location: absolute unless absolute_redirect is off.
    std::string_view location = h.location;
    std::string abs;
    if (!location.empty() && location[0] == '/' && *lc.absolute_redirect) {
        const bool https = r.conn().tls() != nullptr;
        abs = https ? "https://" : "http://";
        std::string_view host = r.host;
        if (*lc.server_name_in_redirect && !r.srv->server_names.empty() && !r.srv->server_names[0].regex)
            host = r.srv->server_names[0].name;
        std::string local;
        if (host.empty()) {
            host = r.conn().local_addr();
            if (host.find(':') != std::string_view::npos) {
                local = "[" + std::string(host) + "]";  // IPv6
                host = local;
            }
        }
        abs += host;
        uint16_t port = r.conn().local_port();
        if (*lc.port_in_redirect && port != (https ? 443 : 80) && port != 0) {
            abs += ':';
            abs += std::to_string(port);
        }
        abs += location;
        location = abs;
    }

    std::string_view reason = h.reason.empty() ? reason_phrase(h.status) : h.reason;
    size_t cap = 512 + reason.size() + h.content_type.size() + h.charset.size() + location.size() +
                 h.etag.size();
    for (const Header& x : h.headers) cap += x.name.size() + x.value.size() + 4;
    char* b = static_cast<char*>(r.arena().alloc(cap, 1));
    Out o{b, b + cap, b};
    o.put("HTTP/1.1 ");
    o.num(static_cast<uint64_t>(h.status));
    if (!reason.empty()) {
        o.put(" ");
        o.put(reason);
    }
    o.put("\r\n");
    // A proxied response may carry the origin's own ("proxy_pass_header
    // Server"): it replaces ours, as in nginx.
    if (!h.find("Server")) {
        o.put("Server: ");
        o.put(server_header(r));
        o.put("\r\n");
    }
    if (!h.find("Date")) {
        o.put("Date: ");
        o.put(cached_date());
        o.put("\r\n");
    }
    if (!h.content_type.empty()) {
        o.put("Content-Type: ");
        o.put(h.content_type);
        if (!h.charset.empty()) {
            o.put("; charset=");
            o.put(h.charset);
        }
        o.put("\r\n");
    }
    if (h.content_length) {
        o.put("Content-Length: ");
        o.num(*h.content_length);
        o.put("\r\n");
    }
    if (h.last_modified >= 0) {
        char d[kHttpDateMax];
        o.put("Last-Modified: ");
        o.put(format_http_date(h.last_modified, d));
        o.put("\r\n");
    }
    if (r.chunked_out) o.put("Transfer-Encoding: chunked\r\n");
    if (!location.empty()) {
        o.put("Location: ");
        o.put(location);
        o.put("\r\n");
    }
    // 101: the connection becomes what the Upgrade field says (RFC 9110
    // 15.2.2); the proxy passes that field.
    if (h.status == 101)
        o.put("Connection: upgrade\r\n");
    else
        o.put(r.keepalive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (!h.etag.empty()) {
        o.put("ETag: ");
        o.put(h.etag);
        o.put("\r\n");
    }
    if (h.accept_ranges) o.put("Accept-Ranges: bytes\r\n");
    for (const Header& x : h.headers) {
        if (x.name.empty()) continue;
        o.put(x.name);
        o.put(": ");
        o.put(x.value);
        o.put("\r\n");
    }
    o.put("\r\n");
    Chain c(r.mem());
    c.push(Buf::memory({b, static_cast<size_t>(o.p - b)}));
    r.conn().queue(c);
    return Flow::Pass;
}

Flow send_body(Request& r, Chain& in) {
    HttpMainConf& m = *http_main(r.main_confs);
    // The chains of one call live on the stack (the heap past that): a
    // stream calls this for every piece, and the request arena, freed only
    // with the request, would grow with the length of the body.
    alignas(std::max_align_t) char scratch[2048];
    std::pmr::monotonic_buffer_resource mem(scratch, sizeof scratch, std::pmr::new_delete_resource());
    Chain a(&mem), b(&mem);
    a.reserve(in.size() + 2);
    b.reserve(in.size() + 2);
    a.append(in);
    for (BodyFilter f : m.body_filters) {
        Flow fl = f(r, a, b);
        if (fl == Flow::Fail) return fl;
        if (fl == Flow::Hold && b.empty()) return Flow::Hold;
        a.clear();
        a.append(b);
    }
    bool last = a.last();
    uint64_t bytes = a.bytes();
    Chain out(&mem);
    out.reserve(a.size() + 3);
    if (r.head_only) {
        if (last) {
            Buf e;
            e.last_buf = true;
            out.push(std::move(e));
        }
    } else if (r.chunked_out) {
        if (bytes > 0) {
            // In a slab of its own, freed once sent (see above).
            SlabRef slab = SlabRef::adopt(Slab::make(kMaxChunkHeader));
            char* hdr = slab.get()->data();
            size_t n = write_chunk_header(bytes, std::span<char, kMaxChunkHeader>(hdr, kMaxChunkHeader));
            Buf hb = Buf::memory({hdr, n});
            hb.slab = std::move(slab);
            out.push(std::move(hb));
            for (Buf& x : a)
                if (!x.empty()) out.push(std::move(x));
            out.push(Buf::memory(kChunkEnd));
        }
        if (last) {
            Buf e = Buf::memory(kLastChunk);
            e.last_buf = true;
            out.push(std::move(e));
        }
        r.counters.body_bytes_sent += bytes;
    } else {
        out.append(a);
        r.counters.body_bytes_sent += bytes;
    }
    r.conn().queue(out);
    r.conn().flush();
    return Flow::Pass;
}

// ---- server selection ------------------------------------------------------

SrvConf* find_server(const AddrServers& as, std::string_view host, Request* r) {
    if (host.empty()) {
        auto it = as.exact.find(std::string_view());
        return it != as.exact.end() ? it->second : as.default_server;
    }
    auto it = as.exact.find(host);
    if (it != as.exact.end()) return it->second;
    for (const auto& [suffix, s] : as.wild_head)
        if (host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0)
            return s;
    for (const auto& [prefix, s] : as.wild_tail)
        if (host.size() > prefix.size() && host.compare(0, prefix.size(), prefix) == 0) return s;
    for (const auto& [re, s] : as.regex)
        if (r ? re->exec(*r, host) : re->re.match(host)) return s;
    return as.default_server;
}

void HttpConnection::select_server(Request& r) {
    SrvConf* found = find_server(addr_servers(), r.host, &r);
    r.srv = found;
    r.srv_confs = found->srv_confs;
    r.loc_confs = found->loc_confs;
}

}  // namespace gatehouse::http
