// The response path: finalizing a handler's response, the filter engine
// (filters that may hold, resumed by back-pressure or by themselves), and
// the status pages. Protocol framing is the Stream's (stream.h).
#include "http/output.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>

#include "core/log.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/conditional.h"
#include "http/core_module.h"
#include "http/head_text.h"
#include "http/phases.h"
#include "http/request.h"

namespace gatehouse::http {

namespace {

// A value bound for the head, with CR, LF and NUL percent-encoded
// (head_text.h); logged when that changed it.
std::string_view field_text(Request& r, std::string_view name, std::string_view v) {
    if (v.empty()) return v;  // most of the head's optional parts
    bool changed = false;
    std::string_view out = encode_breaking<breaks_field>(v, r.arena(), &changed);
    if (changed)
        GH_LOG(Info, "value of \"%.*s\" has CR, LF or NUL bytes, sent percent-encoded",
               static_cast<int>(name.size()), name.data());
    return out;
}

void make_head_text_safe(Request& r, ResponseHead& h) {
    for (Header& x : h.headers) x.value = field_text(r, x.name, x.value);
    h.sent_location = field_text(r, "Location", h.sent_location);
    h.content_type = field_text(r, "Content-Type", h.content_type);
    h.charset = field_text(r, "Content-Type", h.charset);
    h.etag = field_text(r, "ETag", h.etag);
    h.reason = field_text(r, "status line", h.reason);
}

// Reason phrases as nginx sends them, indexed by status - 100.
constexpr std::array<std::string_view, 500> make_reasons() {
    std::array<std::string_view, 500> t{};
    auto set = [&](int code, std::string_view r) { t[static_cast<size_t>(code - 100)] = r; };
    set(100, "Continue"), set(101, "Switching Protocols"), set(103, "Early Hints"), set(200, "OK");
    set(201, "Created");
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

size_t nfilters(const Request& r) { return http_main(r.main_confs)->body_filters.size(); }

// Internet Explorer, which nginx's msie_padding and msie_refresh are for:
// "MSIE " in User-Agent, Opera's imitation aside.
bool is_msie(const Request& r) {
    const HeaderField* ua = r.headers.find("User-Agent");
    return ua && ua->value.find("MSIE ") != std::string_view::npos &&
           ua->value.find("Opera") == std::string_view::npos;
}

// IE replaces an error page shorter than 512 bytes with one of its own
// ("friendly" pages): this comment makes every page longer.
constexpr std::string_view kMsiePadding =
    "<!-- padding: Internet Explorer shows its own page instead of an     -->\r\n"
    "<!-- error page shorter than 512 bytes; these lines make it longer.  -->\r\n"
    "<!-- padding: Internet Explorer shows its own page instead of an     -->\r\n"
    "<!-- error page shorter than 512 bytes; these lines make it longer.  -->\r\n"
    "<!-- padding: Internet Explorer shows its own page instead of an     -->\r\n"
    "<!-- error page shorter than 512 bytes; these lines make it longer.  -->\r\n";

// "msie_refresh": IE gets a page that refreshes to the target instead of
// a redirect [nginx]. The target is escaped for the attribute.
std::string_view refresh_page(Request& r, std::string_view target) {
    std::pmr::string page(r.mem());
    page += "<html><head><meta http-equiv=\"Refresh\" content=\"0; URL=";
    for (char c : target) {
        switch (c) {
            case '"': page += "%22"; break;
            case '<': page += "%3C"; break;
            case '>': page += "%3E"; break;
            default: page += c;
        }
    }
    page += "\"></head><body></body></html>\r\n";
    return r.arena().dup(page);
}

// The body filters this response runs: those with work in it, asked
// once the head has gone out, when every header filter has decided (a
// gzip that compresses, a range that slices). A filter left out costs
// nothing, not even the move of the chain through it: pending[i] is the
// input of the i-th engaged filter, and pending[0] keeps whatever a
// producer queued before the choice.
void choose_body_filters(Request& r, const HttpMainConf& m) {
    OutputState& o = r.output;
    const size_t n = m.body_filters.size();
    o.engaged = static_cast<uint8_t*>(r.arena().alloc(n ? n : 1, 1));
    size_t k = 0;
    // Those the location configures nothing for are not even asked.
    const uint64_t skip = r.loc_confs ? core_loc(r.loc_confs).skip_body_filters : 0;
    for (size_t i = 0; i < n; ++i) {
        if (skip >> i & 1) continue;
        if (!m.body_filters[i].engaged || m.body_filters[i].engaged(r)) o.engaged[k++] = static_cast<uint8_t>(i);
    }
    o.nengaged = static_cast<uint8_t>(k);
    o.chosen = true;
}

// The chains between the filters, made on the first body chain: they
// live (with the Bufs they hold) as long as the request. Once the head
// is out the filters can be chosen, and only the engaged ones need an
// input chain, besides the stream's: a response no filter works on
// makes one chain, not one per filter. Before the head every filter
// might engage.
void ensure_pending(Request& r) {
    OutputState& o = r.output;
    if (o.pending) return;
    if (r.header_sent && !o.chosen) choose_body_filters(r, *http_main(r.main_confs));
    const size_t n = (o.chosen ? o.nengaged : nfilters(r)) + 1;
    auto* a = static_cast<Chain*>(r.arena().alloc(sizeof(Chain) * n, alignof(Chain)));
    for (size_t i = 0; i < n; ++i) ::new (&a[i]) Chain(r.mem());
    // Destroyed with the arena: their Bufs release their slabs.
    struct Release {
        Chain* a;
        size_t n;
        ~Release() {
            for (size_t i = 0; i < n; ++i) a[i].~Chain();
        }
    };
    r.arena().make<Release>(Release{a, n});
    o.pending = a;
}

// Runs the body filters over what waits for them, then hands what came
// out to the stream. Re-entrant calls (a filter's work ends in the
// stream, whose write drains and calls back) are folded into one more
// pass of the outer call.
Flow run_body_filters(Request& r) {
    OutputState& o = r.output;
    if (!r.header_sent || !o.pending) return Flow::Pass;
    if (o.running) {
        o.again = true;
        return Flow::Pass;
    }
    const HttpMainConf& m = *http_main(r.main_confs);
    if (!o.chosen) choose_body_filters(r, m);
    const size_t n = o.nengaged;
    o.running = true;
    Flow result = Flow::Pass;
    do {
        o.again = false;
        for (size_t i = 0; i < n; ++i) {
            Chain& in = o.pending[i];
            const uint64_t bit = uint64_t{1} << i;
            if (in.empty() && !(o.held & bit)) continue;
            Flow fl = m.body_filters[o.engaged[i]].fn(r, in, o.pending[i + 1]);
            if (fl == Flow::Fail) {
                result = Flow::Fail;
                break;
            }
            if (fl == Flow::Hold) {
                o.held |= bit;
            } else {
                o.held &= ~bit;
                // Pass takes all of `in` (fwd.h): a filter that left some
                // would see it again, out of order with new input.
                GH_ASSERT(in.empty());
                in.clear();
            }
        }
        if (result == Flow::Fail) break;
        Chain& last = o.pending[n];
        if (!last.empty()) {
            if (r.head_only) {
                // HEAD, 204, 304: no body bytes, only the end.
                last.drop_data();
            } else {
                r.counters.body_bytes_sent += last.bytes();
            }
            if (last.last() && !r.out.trailers.empty())
                for (Header& t : r.out.trailers) t.value = field_text(r, t.name, t.value);
            if (!last.empty() && r.stream().send_body(r, last) == Flow::Fail) {
                result = Flow::Fail;
                break;
            }
            last.clear();
        }
        if (r.stream().closed()) break;
    } while (o.again);
    o.running = false;
    return result;
}

// The head and body chains of a held header filter or a held body
// filter go on (resume_output), then the producer is told, as on a drain.
void continue_output(Request* rp) {
    Request& r = *rp;
    log::Scope scope(&r.log_ctx);
    if (r.stream().closed()) return;
    if (r.output.head_started && !r.header_sent) {
        Flow fl = send_header(r);
        if (fl == Flow::Fail) {
            r.stream().abort();
            return;
        }
        if (fl == Flow::Hold) return;
    }
    output_drained(r);
}

}  // namespace

std::string_view reason_phrase(int status) {
    if (status < 100 || status > 599) return {};
    return kReasons[static_cast<size_t>(status - 100)];
}

std::string_view server_token(const Request& r) {
    // "build" adds the name given to configure --build, as nginx's does.
    switch (*r.loc_conf<LocConf>(http_core_module).server_tokens) {
        case 0: return "gatehouse";
        case 2: return GH_BUILD[0] ? "gatehouse/" GH_VERSION " (" GH_BUILD ")" : "gatehouse/" GH_VERSION;
        default: return "gatehouse/" GH_VERSION;
    }
}

void weaken_etag(Request& r, ResponseHead& h) {
    if (h.etag.empty() || h.etag.starts_with("W/")) return;
    if (h.etag.front() != '"') {
        h.etag = {};
        return;
    }
    std::pmr::string w("W/", r.mem());
    w += h.etag;
    h.etag = r.arena().dup(w);
}

std::string_view http_date_now() {
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

std::string_view status_page(Request& r, int status) {
    // nginx's 401 page names what is wanted, not the status line's phrase.
    std::string_view reason = status == 401 ? "Authorization Required" : reason_phrase(status);
    std::string_view tokens = server_token(r);
    // 495-497 are 400s whose page says which TLS trouble it was [nginx].
    const bool tls_400 = is_tls_400(status);
    size_t cap = 320 + reason.size() * 3 + tokens.size();
    char* b = static_cast<char*>(r.arena().alloc(cap, 1));
    FixedWriter o{b, b + cap};
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
    std::string_view page{b, static_cast<size_t>(o.p - b)};
    if (status >= 400 && r.loc_confs && *r.loc_conf<LocConf>(http_core_module).msie_padding && is_msie(r)) {
        std::pmr::string padded(page, r.mem());
        padded += kMsiePadding;
        return r.arena().dup(padded);
    }
    return page;
}

void finalize_response(Request& r) {
    Stream& s = r.stream();
    if (s.closed()) return;
    if (r.header_sent || r.output.head_started) {
        // A streaming handler failed after the head went out: the client
        // must not take a truncated body for a whole one.
        s.abort();
        return;
    }
    if (r.out.status == 444) {
        // "return 444": close without a response [nginx]; $status says 444.
        s.abort();
        return;
    }
    if (r.out.status == 0) r.out.status = 200;
    int st = r.out.status;
    if ((st == 301 || st == 302) && r.body.empty() && !r.out.location.empty() && r.loc_confs &&
        *r.loc_conf<LocConf>(http_core_module).msie_refresh && is_msie(r)) {
        std::string_view page = refresh_page(r, r.out.location);
        r.out.status = st = 200;
        r.out.location = {};
        r.out.content_type = "text/html";
        r.out.content_length = page.size();
        Buf b = Buf::memory(page);
        b.last_buf = true;
        r.body.push(std::move(b));
    }
    if (st >= 300 && r.body.empty() && st != 304 && st != 204) {
        std::string_view page = status_page(r, st);
        if (is_tls_400(st)) r.out.status = st = 400;
        r.out.content_type = "text/html";
        r.out.content_length = page.size();
        // A 401 keeps its challenges (auth_basic's, an origin's): without
        // them the client cannot authenticate (RFC 9110 15.5.2).
        std::erase_if(r.out.headers, [st](const Header& h) {
            return st != 401 || !iequals(h.name, "WWW-Authenticate");
        });
        Buf b = Buf::memory(page);
        b.last_buf = true;
        r.body.push(std::move(b));
        // Our own error page: the request may have left a body unread or
        // a broken stream behind.
        if (st == 400 || st == 408 || st == 413 || st == 414 || st == 431 || st == 500 || st == 501 || st == 505)
            s.close_after();
    }
    if (r.body.empty() || !r.body.last()) {
        Buf end;
        end.last_buf = true;
        r.body.push(std::move(end));
    }
    if (send_header(r) == Flow::Fail) {
        s.abort();
        return;
    }
    Chain c(r.mem());
    c.append(r.body);
    if (send_body(r, c) == Flow::Fail) s.abort();
}

Flow send_interim(Request& r, int status, std::span<const Header> fields) {
    if (r.header_sent || r.parent) return Flow::Pass;
    return r.stream().send_interim(r, status, fields);
}

Flow send_header(Request& r) {
    HttpMainConf& m = *http_main(r.main_confs);
    ResponseHead& h = r.out;
    OutputState& o = r.output;
    if (r.header_sent) return Flow::Pass;
    if (!o.head_started) {
        o.head_started = true;
        o.header_next = 0;
        // An error page goes out with the error's status (or its "=code")
        // whatever its handler answered, as in nginx ("return 204" there
        // gives the error and its empty body), but for a redirect, which
        // replaces the error, and for another error, which has its own.
        const bool redirect = h.status == 301 || h.status == 302 || h.status == 303 || h.status == 307 ||
                              h.status == 308;
        if (r.error_page_status && h.status < 400 && !redirect) h.status = r.error_page_status;
        if (h.status == 0) h.status = 200;
    }
    const uint64_t skip = r.loc_confs ? core_loc(r.loc_confs).skip_header_filters : 0;
    for (size_t i = o.header_next; i < m.header_filters.size(); ++i) {
        if (skip >> i & 1) continue;
        Flow fl = m.header_filters[i].fn(r, h);
        if (fl == Flow::Hold) {
            o.header_next = static_cast<uint8_t>(i);
            return Flow::Hold;
        }
        if (fl == Flow::Fail) return Flow::Fail;
    }
    o.header_next = static_cast<uint8_t>(m.header_filters.size());
    // RFC 9110 6.4.1: no content after 1xx, 204 and 304.
    if (h.status == 304 || h.status == 204 || h.status < 200) {
        r.head_only = true;
        h.content_length.reset();
    }

    // Location: absolute unless absolute_redirect is off (nginx keeps
    // $sent_http_location as the handler set it).
    auto& lc = r.loc_conf<LocConf>(http_core_module);
    h.sent_location = h.location;
    if (!h.location.empty() && h.location[0] == '/' && *lc.absolute_redirect) {
        Stream& s = r.stream();
        const bool https = s.tls() != nullptr;
        std::string_view host = r.host;
        if (*lc.server_name_in_redirect && !r.srv->server_names.empty() && !r.srv->server_names[0].regex)
            host = primary_server_name(*r.srv);
        bool v6 = false;
        if (host.empty()) {
            host = s.local_text();
            v6 = host.find(':') != std::string_view::npos;
        }
        const uint16_t port = s.local_port();
        const bool with_port = *lc.port_in_redirect && port != (https ? 443 : 80) && port != 0;
        size_t cap = 8 + 2 + host.size() + 6 + h.location.size();
        char* b = static_cast<char*>(r.arena().alloc(cap, 1));
        FixedWriter w{b, b + cap};
        w.put(https ? "https://" : "http://");
        if (v6) w.put("[");
        w.put(host);
        if (v6) w.put("]");
        if (with_port) {
            w.put(":");
            w.num(port);
        }
        w.put(h.location);
        h.sent_location = {b, static_cast<size_t>(w.p - b)};
    }
    make_head_text_safe(r, h);
    r.header_sent = true;
    if (r.stream().send_head(r, h) == Flow::Fail) return Flow::Fail;
    return run_body_filters(r);
}

Flow send_body(Request& r, Chain& c) {
    if (r.stream().closed()) return Flow::Fail;
    ensure_pending(r);
    r.output.pending[0].append(c);
    return run_body_filters(r);
}

void flush_output(Request& r) {
    if (!r.stream().closed()) r.stream().flush();
}

bool output_takes_pipes(Request& r) {
    if (!r.header_sent || r.head_only || r.stream().closed() || !r.stream().takes_pipes()) return false;
    OutputState& o = r.output;
    if (!o.chosen) choose_body_filters(r, *http_main(r.main_confs));
    return o.nengaged == 0;
}

size_t output_pending(const Request& r) {
    size_t n = r.stream().output_pending();
    // Before the choice only pending[0] can hold anything; after it, the
    // chains past the engaged filters stay empty.
    if (const OutputState& o = r.output; o.pending) {
        const size_t last = o.chosen ? o.nengaged : 0;
        for (size_t i = 0; i <= last; ++i) n += o.pending[i].bytes();
    }
    return n;
}

bool output_busy(const Request& r) { return r.stream().output_pending() >= kOutputBusy; }

void on_output_drained(Request& r, void (*fn)(Request& r)) { r.output.drain_fn = fn; }

void resume_output(Request& r) {
    if (!r.output.resume_ev.cb) r.output.resume_ev.cb = event::Callback::to<&continue_output>(&r);
    event::worker_loop().post(r.output.resume_ev);
}

void output_drained(Request& r) {
    OutputState& o = r.output;
    if (r.stream().closed()) return;
    if (o.held || (o.pending && !o.pending[0].empty())) {
        if (run_body_filters(r) == Flow::Fail) {
            r.stream().abort();
            return;
        }
        if (r.stream().closed()) return;
    }
    if (o.drain_fn && output_pending(r) == 0) o.drain_fn(r);
}

}  // namespace gatehouse::http
