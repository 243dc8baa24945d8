#include "http/variables.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "conf/registry.h"
#include "conf/values.h"
#include "core/random.h"
#include "core/str.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/basic_credentials.h"
#include "http/conditional.h"
#include "http/core_module.h"
#include "http/proxy_protocol.h"
#include "http/request.h"

namespace gatehouse::http {

// ---- the table -------------------------------------------------------------

void VarTable::load_modules() {
    defs_.clear();
    for (const Module* m : modules)
        if (m->http)
            for (const VariableDef& d : m->http->variables) defs_.push_back(&d);
}

const VariableDef* VarTable::find_def(std::string_view name, std::string_view* suffix) const {
    for (const VariableDef* d : defs_)
        if (!(d->flags & kVarPrefix) && d->name == name) return d;
    const VariableDef* best = nullptr;
    for (const VariableDef* d : defs_)
        // The bare prefix ("$arg_") is a name too, of nothing [nginx].
        if ((d->flags & kVarPrefix) && name.size() >= d->name.size() &&
            name.compare(0, d->name.size(), d->name) == 0 &&
            (!best || d->name.size() > best->name.size()))
            best = d;
    if (best && suffix) *suffix = name.substr(best->name.size());
    return best;
}

int VarTable::index(std::string_view name, const conf::Node& where) {
    for (size_t i = 0; i < vars_.size(); ++i)
        if (vars_[i].name == name) return static_cast<int>(i);
    Var v;
    v.name = std::string(name);
    v.first_use = where.where();
    std::string_view suffix;
    if (const VariableDef* d = find_def(name, &suffix)) {
        v.get = d->get;
        v.arg = d->arg;
        v.flags = d->flags;
        v.set = d->set;
        if (d->flags & kVarPrefix) {
            suffix_text_.push_back(std::make_unique<std::string>(suffix));
            suffixes_.push_back(std::make_unique<std::string_view>(*suffix_text_.back()));
            v.suffix = suffixes_.back().get();
            v.arg = reinterpret_cast<uintptr_t>(v.suffix);
        }
    }
    vars_.push_back(std::move(v));
    return static_cast<int>(vars_.size() - 1);
}

int VarTable::define_user(std::string_view name) {
    for (size_t i = 0; i < vars_.size(); ++i)
        if (vars_[i].name == name) {
            if (!vars_[i].get) vars_[i].user = true;
            return static_cast<int>(i);
        }
    Var v;
    v.name = std::string(name);
    std::string_view suffix;
    if (const VariableDef* d = find_def(name, &suffix); d && !(d->flags & kVarPrefix)) {
        v.get = d->get;
        v.arg = d->arg;
        v.flags = d->flags;
        v.set = d->set;
    } else {
        v.user = true;
    }
    vars_.push_back(std::move(v));
    return static_cast<int>(vars_.size() - 1);
}

int VarTable::define(std::string_view name, VarGetter get, uintptr_t arg, uint8_t flags) {
    std::string_view suffix;
    const VariableDef* d = find_def(name, &suffix);
    if (d && !(d->flags & kVarPrefix) && !(d->flags & kVarSettable)) return -1;
    for (size_t i = 0; i < vars_.size(); ++i)
        if (vars_[i].name == name) {
            Var& v = vars_[i];
            if (v.user) return -1;  // "set" owns it
            v.get = get;
            v.arg = arg;
            v.flags = flags;
            v.set = nullptr;
            v.suffix = nullptr;
            return static_cast<int>(i);
        }
    Var v;
    v.name = std::string(name);
    v.get = get;
    v.arg = arg;
    v.flags = flags;
    vars_.push_back(std::move(v));
    return static_cast<int>(vars_.size() - 1);
}

int VarTable::assignable(std::string_view name) {
    int idx = define_user(name);
    const Var& v = var(idx);
    return v.user || (v.flags & kVarSettable) ? idx : -1;
}

int VarTable::find(std::string_view name) const {
    for (size_t i = 0; i < vars_.size(); ++i)
        if (vars_[i].name == name) return static_cast<int>(i);
    return -1;
}

Status VarTable::check() const {
    for (const Var& v : vars_)
        if (!v.get && !v.user) return make_error("unknown \"" + v.name + "\" variable in " + v.first_use);
    return {};
}

void set_var(Request& r, int index, std::string_view value) {
    r.vars[index] = VarValue{value, true, false};
    const VarTable::Var& def = http_main(r.main_confs)->vars.var(index);
    if (def.set) def.set(r, value, def.arg);
}

std::optional<std::string_view> request_arg(std::string_view args, std::string_view name) {
    while (!args.empty()) {
        const size_t amp = args.find('&');
        const std::string_view kv = args.substr(0, amp);
        const size_t eq = kv.find('=');
        // As nginx: the name must be followed by "=" ("?a&b=1" has no $arg_a).
        if (eq != std::string_view::npos && iequals(kv.substr(0, eq), name)) return kv.substr(eq + 1);
        if (amp == std::string_view::npos) break;
        args.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

const VarValue& get_var(Request& r, int index) {
    static const VarValue kNotFound{{}, true, true};
    HttpMainConf* m = http_main(r.main_confs);
    if (!m || !r.vars || index < 0 || static_cast<size_t>(index) >= m->vars.size()) return kNotFound;
    VarValue& v = r.vars[index];
    const VarTable::Var& def = m->vars.var(index);
    if (v.valid && !(def.flags & kVarNoCache)) return v;
    if (def.user) {
        // "set" stores the value directly; an unset one is empty (and may
        // be reported by the uninitialized getter).
        if (!v.valid) {
            if (VarGetter g = m->vars.uninitialized_getter()) {
                v = VarValue{};
                g(r, v, static_cast<uintptr_t>(index));
            } else {
                v.not_found = true;
            }
            v.valid = true;
        }
        return v;
    }
    v = VarValue{};
    def.get(r, v, def.arg);
    v.valid = true;
    return v;
}

// ---- complex values ----------------------------------------------------------

size_t parse_var_ref(std::string_view s, std::string_view* name) {
    if (s.size() < 2 || s[0] != '$') return 0;
    auto word = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    };
    if (s[1] == '{') {
        size_t close = s.find('}', 2);
        if (close == std::string_view::npos || close == 2) return 0;
        for (size_t i = 2; i < close; ++i)
            if (!word(s[i])) return 0;
        *name = s.substr(2, close - 2);
        return close + 1;
    }
    size_t i = 1;
    if (s[1] >= '0' && s[1] <= '9') {
        *name = s.substr(1, 1);  // $1: a single digit, as nginx reads it
        return 2;
    }
    while (i < s.size() && word(s[i])) ++i;
    if (i == 1) return 0;
    *name = s.substr(1, i - 1);
    return i;
}

Result<const ComplexValue*> compile_size(conf::Ctx& cx, const conf::Node& n, std::string_view text) {
    auto cv = ComplexValue::compile(cx, n, text);
    if (!cv) return cv.error();
    if (cv->literal()) {
        auto size = conf::parse_size(cv->text());
        if (!size) return cx.invalid(n, size.error());
    }
    return cx.arena().make<ComplexValue>(std::move(*cv));
}

uint64_t eval_size(Request& r, const ComplexValue* cv) {
    if (!cv) return 0;
    auto v = conf::parse_size(cv->eval(r));
    return v ? *v : 0;
}

Result<ComplexValue> ComplexValue::compile(conf::Ctx& cx, const conf::Node& n, std::string_view text) {
    ComplexValue cv;
    cv.text_ = std::string(text);
    HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
    std::string_view s = cv.text_;
    size_t lit_start = 0;
    size_t i = 0;
    while (i < s.size()) {
        if (s[i] != '$') {
            ++i;
            continue;
        }
        std::string_view name;
        size_t len = parse_var_ref(s.substr(i), &name);
        if (len == 0) {
            if (i + 1 < s.size() && s[i + 1] == '{')
                return cx.error(n, "invalid variable name in \"" + std::string(text) + "\"");
            ++i;  // a lone "$" is literal
            continue;
        }
        if (i > lit_start) cv.segs_.push_back({lit_start, i - lit_start, -1, -1});
        Seg seg;
        if (name.size() == 1 && name[0] >= '0' && name[0] <= '9') {
            seg.capture = name[0] - '0';
            cv.captures_ = true;
        } else {
            if (!m) return cx.error(n, "variables are not allowed here");
            seg.var = m->vars.index(name, n);
        }
        cv.segs_.push_back(seg);
        i += len;
        lit_start = i;
    }
    if (lit_start < s.size()) cv.segs_.push_back({lit_start, s.size() - lit_start, -1, -1});
    return cv;
}

std::string_view ComplexValue::eval(Request& r) const {
    if (segs_.empty()) return {};
    if (segs_.size() == 1 && segs_[0].var < 0 && segs_[0].capture < 0)
        return std::string_view(text_).substr(segs_[0].lit_pos, segs_[0].lit_len);
    // Two passes: sizes, then bytes, into the request arena.
    auto piece = [&](const Seg& g) -> std::string_view {
        if (g.var >= 0) {
            const VarValue& v = get_var(r, g.var);
            return v.not_found ? std::string_view() : v.s;
        }
        if (g.capture >= 0) {
            if (g.capture >= r.ncaptures || r.captures[2 * g.capture] < 0) return {};
            int a = r.captures[2 * g.capture], b = r.captures[2 * g.capture + 1];
            return r.capture_subject.substr(static_cast<size_t>(a), static_cast<size_t>(b - a));
        }
        return std::string_view(text_).substr(g.lit_pos, g.lit_len);
    };
    size_t total = 0;
    for (const Seg& g : segs_) total += piece(g).size();
    char* out = static_cast<char*>(r.arena().alloc(total ? total : 1, 1));
    size_t pos = 0;
    for (const Seg& g : segs_) {
        std::string_view p = piece(g);
        if (pos + p.size() > total) break;  // a NoCache variable grew between passes
        if (p.empty()) continue;             // may have no data pointer at all
        memcpy(out + pos, p.data(), p.size());
        pos += p.size();
    }
    return {out, pos};
}

// ---- regexes with named captures ----------------------------------------------

namespace {

// Groups read back from one match: enough for any sane pattern; a named
// group numbered beyond this is set empty.
constexpr int kMatchPairs = 64;
// $0..$9, what Request::captures holds.
constexpr int kRequestPairs = 10;

}  // namespace

Result<CaptureRegex> CaptureRegex::compile(conf::Ctx& cx, const conf::Node& n,
                                           std::string_view pattern, bool caseless) {
    auto re = Regex::compile(pattern, caseless);
    if (!re) return cx.error(n, re.message());
    CaptureRegex c;
    c.re = std::move(*re);
    if (!c.re.names().empty()) {
        HttpMainConf* m = cx.conf<HttpMainConf>(http_core_module, conf::Level::Main);
        GH_CHECK(m != nullptr);  // rewrite, if and map exist only inside "http"
        for (const Regex::Named& nm : c.re.names()) {
            int idx = m->vars.assignable(nm.name);
            if (idx < 0) return cx.error(n, "the duplicate \"" + nm.name + "\" variable");
            c.named.emplace_back(nm.number, idx);
        }
    }
    return c;
}

bool CaptureRegex::exec(Request& r, std::string_view s) const {
    if (re.captures() == 0) return re.match(s);
    int ovec[2 * kMatchPairs];
    int pairs = 0;
    if (!re.match(s, ovec, kMatchPairs, &pairs)) return false;
    int keep = pairs < kRequestPairs ? pairs : kRequestPairs;
    for (int i = 0; i < 2 * keep; ++i) r.captures[i] = ovec[i];
    r.ncaptures = keep;
    r.capture_subject = s;
    for (auto [group, var] : named) {
        VarValue& v = r.vars[var];
        v = VarValue{};
        if (group < pairs && ovec[2 * group] >= 0)
            v.s = s.substr(static_cast<size_t>(ovec[2 * group]),
                           static_cast<size_t>(ovec[2 * group + 1] - ovec[2 * group]));
        v.valid = true;
    }
    return true;
}

// ---- the core variables ------------------------------------------------------

namespace {

void set(VarValue& v, std::string_view s) { v.s = s; }

std::string_view num(Request& r, uint64_t n) {
    char b[24];
    int len = snprintf(b, sizeof b, "%llu", static_cast<unsigned long long>(n));
    return r.arena().dup({b, static_cast<size_t>(len)});
}

const HeaderField* find_in(Request& r, std::string_view name) {
    for (const HeaderField& h : r.headers)
        if (iequals(h.name, name)) return &h;
    return nullptr;
}


void v_http(Request& r, VarValue& v, uintptr_t arg) {
    auto name = *reinterpret_cast<const std::string_view*>(arg);
    // Repeated headers join with ", " ("; " for Cookie), as nginx does.
    join_fields(r, v, r.headers, name, header_matches("cookie", name) ? "; " : ", ");
}

void v_sent_http(Request& r, VarValue& v, uintptr_t arg) {
    auto name = *reinterpret_cast<const std::string_view*>(arg);
    if (header_matches("content_type", name) && !r.out.content_type.empty()) return set(v, r.out.content_type);
    if (header_matches("content_length", name) && r.out.content_length) return set(v, num(r, *r.out.content_length));
    if (header_matches("location", name) && !r.out.location.empty()) return set(v, r.out.location);
    // Fields kept apart from the list, written by the stream.
    if (header_matches("etag", name) && !r.out.etag.empty()) return set(v, r.out.etag);
    if (header_matches("accept_ranges", name) && r.out.accept_ranges) return set(v, "bytes");
    if (header_matches("last_modified", name) && r.out.last_modified >= 0) {
        char d[kHttpDateMax];
        return set(v, r.arena().dup(format_http_date(r.out.last_modified, d)));
    }
    // The fields the stream writes itself, as nginx computes them.
    if (header_matches("connection", name))
        return set(v, r.out.status == 101 ? "upgrade" : r.sent_framing.keepalive ? "keep-alive" : "close");
    if (header_matches("keep_alive", name)) {
        if (!r.sent_framing.keepalive || !r.sent_framing.keepalive_timeout) return void(v.not_found = true);
        return set(v, r.arena().dup("timeout=" + std::string(num(r, r.sent_framing.keepalive_timeout))));
    }
    if (header_matches("transfer_encoding", name)) {
        if (!r.sent_framing.chunked) return void(v.not_found = true);
        return set(v, "chunked");
    }
    join_fields(r, v, r.out.headers, name, ", ");
}

void v_arg(Request& r, VarValue& v, uintptr_t arg) {
    if (auto a = request_arg(r.args, *reinterpret_cast<const std::string_view*>(arg))) set(v, *a);
    else v.not_found = true;
}

void v_cookie(Request& r, VarValue& v, uintptr_t arg) {
    auto name = *reinterpret_cast<const std::string_view*>(arg);
    for (const HeaderField& h : r.headers) {
        if (!iequals(h.name, "cookie")) continue;
        std::string_view c = h.value;
        while (!c.empty()) {
            while (!c.empty() && (c[0] == ' ' || c[0] == ';')) c.remove_prefix(1);
            size_t semi = c.find(';');
            std::string_view kv = c.substr(0, semi);
            size_t eq = kv.find('=');
            // Cookie names compare without case, as variable names do [nginx].
            if (eq != std::string_view::npos && iequals(kv.substr(0, eq), name)) {
                set(v, kv.substr(eq + 1));
                return;
            }
            if (semi == std::string_view::npos) break;
            c.remove_prefix(semi + 1);
        }
    }
    v.not_found = true;
}

void v_remote_addr(Request& r, VarValue& v, uintptr_t) { set(v, r.remote_addr()); }
void v_remote_port(Request& r, VarValue& v, uintptr_t) {
    if (r.remote_port == 0) return set(v, "");
    set(v, num(r, r.remote_port));
}
// $proxy_protocol_addr and the rest: what the PROXY header said; not
// found without one, or when it carried no address (LOCAL, UNKNOWN).
enum PpField : uintptr_t { kPpAddr, kPpPort, kPpServerAddr, kPpServerPort };
void v_proxy_protocol(Request& r, VarValue& v, uintptr_t field) {
    const ProxyHeader* pp = r.stream().proxy_protocol();
    if (!pp || !pp->has_addresses) {
        v.not_found = true;
        return;
    }
    switch (field) {
        case kPpAddr: return set(v, pp->src_text);
        case kPpPort: return set(v, num(r, pp->src_port));
        case kPpServerAddr: return set(v, pp->dst_text);
        default: return set(v, num(r, pp->dst_port));
    }
}
// $proxy_protocol_tlv_NAME (proxy_protocol.h names them).
void v_proxy_protocol_tlv(Request& r, VarValue& v, uintptr_t arg) {
    auto name = *reinterpret_cast<const std::string_view*>(arg);
    const ProxyHeader* pp = r.stream().proxy_protocol();
    char buf[16];
    std::optional<std::string_view> val;
    if (pp) val = lookup_tlv(pp->tlvs, name, buf);
    if (!val) {
        v.not_found = true;
        return;
    }
    // ssl_verify is written into buf: copied; the rest live in the connection.
    set(v, name == "ssl_verify" ? r.arena().dup(*val) : *val);
}
void v_server_addr(Request& r, VarValue& v, uintptr_t) { set(v, r.arena().dup(r.stream().local_text())); }
void v_server_port(Request& r, VarValue& v, uintptr_t) { set(v, num(r, r.stream().local_port())); }
void v_server_name(Request& r, VarValue& v, uintptr_t) { set(v, r.srv ? primary_server_name(*r.srv) : ""); }
void v_host(Request& r, VarValue& v, uintptr_t) {
    if (!r.host.empty()) return set(v, r.host);
    set(v, r.srv ? primary_server_name(*r.srv) : "");
}
void v_request(Request& r, VarValue& v, uintptr_t) { set(v, r.request_line); }
void v_request_uri(Request& r, VarValue& v, uintptr_t) { set(v, r.unparsed_uri); }
void v_uri(Request& r, VarValue& v, uintptr_t) { set(v, r.uri); }
void v_args(Request& r, VarValue& v, uintptr_t) { set(v, r.args); }
void set_args(Request& r, std::string_view v, uintptr_t) { r.args = v; }
void v_is_args(Request& r, VarValue& v, uintptr_t) { set(v, r.args.empty() ? "" : "?"); }
void v_scheme(Request& r, VarValue& v, uintptr_t) { set(v, r.stream().tls() ? "https" : "http"); }
void v_https(Request& r, VarValue& v, uintptr_t) { set(v, r.stream().tls() ? "on" : ""); }
// The client's method, in a subrequest too (a GET of its own): an auth
// service is told what the client asked with it [nginx r->main].
void v_method(Request& r, VarValue& v, uintptr_t) {
    const Request* m = &r;
    while (m->parent) m = m->parent;
    set(v, m->method);
}
void v_protocol(Request& r, VarValue& v, uintptr_t) {
    // HTTP/1.2..1.9 are served as 1.1 (RFC 9110 2.5); 20 is HTTP/2.
    set(v, r.http_version == 10 ? "HTTP/1.0" : r.http_version == 20 ? "HTTP/2.0" : "HTTP/1.1");
}
void v_status(Request& r, VarValue& v, uintptr_t) {
    int s = r.out.status;
    if (s == 0) return set(v, "000");
    char b[8];
    int n = snprintf(b, sizeof b, "%03d", s);
    set(v, r.arena().dup({b, static_cast<size_t>(n)}));
}
void v_body_bytes_sent(Request& r, VarValue& v, uintptr_t) {
    // Bytes of the body sent: what went out minus the head, as nginx counts.
    set(v, num(r, r.counters.body_bytes_sent));
}
void v_bytes_sent(Request& r, VarValue& v, uintptr_t) { set(v, num(r, r.counters.bytes_sent)); }
void v_request_length(Request& r, VarValue& v, uintptr_t) { set(v, num(r, r.counters.request_length)); }
// "OK" once the response went out whole, else empty: in a log line,
// whether the client got all of it; in a post_action, whether the
// client's response was (always, as a post_action follows only those)
// [nginx].
void v_request_completion(Request& r, VarValue& v, uintptr_t) { set(v, r.response_complete ? "OK" : ""); }
// "1.234": seconds with milliseconds since `from`.
void since(Request& r, VarValue& v, event::Msec from) {
    event::Msec now = event::worker_loop().now();
    event::Msec d = now > from ? now - from : 0;
    char b[32];
    int n = snprintf(b, sizeof b, "%llu.%03llu", static_cast<unsigned long long>(d / 1000),
                     static_cast<unsigned long long>(d % 1000));
    set(v, r.arena().dup({b, static_cast<size_t>(n)}));
}
void v_request_time(Request& r, VarValue& v, uintptr_t) { since(r, v, r.counters.start_msec); }
void v_connection_time(Request& r, VarValue& v, uintptr_t) { since(r, v, r.stream().connection_start()); }

// The client's address in 4 or 16 bytes (a key for limits and maps);
// empty for a Unix-socket client.
void v_binary_remote_addr(Request& r, VarValue& v, uintptr_t) {
    const sockaddr* sa = r.remote_sockaddr;
    if (sa && sa->sa_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        return set(v, r.arena().dup({reinterpret_cast<const char*>(&in->sin_addr), 4}));
    }
    if (sa && sa->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        return set(v, r.arena().dup({reinterpret_cast<const char*>(&in6->sin6_addr), 16}));
    }
    set(v, "");
}

// The request body when a handler read it whole into memory; not found
// when it went to a file, was not read whole, or had no bytes (nginx has
// no buffers then: "-" in a log line) [nginx].
void v_request_body(Request& r, VarValue& v, uintptr_t) {
    const RequestBody* b = r.body_kept;
    if (!b || !b->complete || b->fd >= 0 || b->bufs.empty()) {
        v.not_found = true;
        return;
    }
    set(v, b->bufs.begin()->view());
}

// The name of the temp file holding the request body, when it went to
// one with a name (body.h: open_temp_file).
void v_request_body_file(Request& r, VarValue& v, uintptr_t) {
    const RequestBody* b = r.body_kept;
    if (!b || b->path.empty()) {
        v.not_found = true;
        return;
    }
    set(v, b->path);
}

void v_pipe(Request& r, VarValue& v, uintptr_t) { set(v, r.pipelined ? "p" : "."); }
// The local time now and its UTC offset in minutes, for the log formats.
struct LocalNow {
    struct tm tm;
    char sign;
    long off;  // minutes, absolute
};
LocalNow local_now() {
    LocalNow n;
    time_t t = static_cast<time_t>(event::worker_loop().wall().sec);
    localtime_r(&t, &n.tm);
    long off = n.tm.tm_gmtoff / 60;
    n.sign = off < 0 ? '-' : '+';
    n.off = off < 0 ? -off : off;
    return n;
}

void v_time_local(Request& r, VarValue& v, uintptr_t) {
    static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    LocalNow n = local_now();
    char b[64];
    int len = snprintf(b, sizeof b, "%02d/%s/%04d:%02d:%02d:%02d %c%02ld%02ld", n.tm.tm_mday, kMonths[n.tm.tm_mon],
                       n.tm.tm_year + 1900, n.tm.tm_hour, n.tm.tm_min, n.tm.tm_sec, n.sign, n.off / 60, n.off % 60);
    set(v, r.arena().dup({b, static_cast<size_t>(len)}));
}
void v_time_iso8601(Request& r, VarValue& v, uintptr_t) {
    LocalNow n = local_now();
    char b[64];
    int len = snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld", n.tm.tm_year + 1900, n.tm.tm_mon + 1,
                       n.tm.tm_mday, n.tm.tm_hour, n.tm.tm_min, n.tm.tm_sec, n.sign, n.off / 60, n.off % 60);
    set(v, r.arena().dup({b, static_cast<size_t>(len)}));
}
void v_msec(Request& r, VarValue& v, uintptr_t) {
    auto w = event::worker_loop().wall();
    char b[32];
    int n = snprintf(b, sizeof b, "%lld.%03u", static_cast<long long>(w.sec), w.msec);
    set(v, r.arena().dup({b, static_cast<size_t>(n)}));
}
void v_request_id(Request& r, VarValue& v, uintptr_t) {
    // 16 random bytes in hex.
    char b[33];
    snprintf(b, sizeof b, "%016llx%016llx", static_cast<unsigned long long>(random64()),
             static_cast<unsigned long long>(random64()));
    set(v, r.arena().dup({b, 32}));
}
void v_connection(Request& r, VarValue& v, uintptr_t) { set(v, num(r, r.stream().connection_number())); }
void v_connection_requests(Request& r, VarValue& v, uintptr_t) {
    set(v, num(r, r.stream().connection_requests()));
}
void v_hostname(Request&, VarValue& v, uintptr_t) {
    static char name[256] = {};
    if (!name[0] && gethostname(name, sizeof name - 1) != 0) name[0] = '\0';
    set(v, name);
}
void v_pid(Request& r, VarValue& v, uintptr_t) { set(v, num(r, static_cast<uint64_t>(getpid()))); }
void v_content_length(Request& r, VarValue& v, uintptr_t) {
    if (!r.content_length) {
        v.not_found = true;
        return;
    }
    set(v, num(r, *r.content_length));
}
void v_content_type(Request& r, VarValue& v, uintptr_t) {
    if (const HeaderField* h = find_in(r, "content-type")) return set(v, h->value);
    v.not_found = true;
}
// The user name of "Authorization: Basic" credentials, whether or not
// anything checks them [nginx]; not found without valid ones (an empty
// user name is none, as for auth_basic).
void v_remote_user(Request& r, VarValue& v, uintptr_t) {
    v.not_found = true;
    const HeaderField* h = find_in(r, "authorization");
    if (!h) return;
    char* buf = static_cast<char*>(r.arena().alloc(basic_credentials_buffer(h->value) + 1, 1));
    auto cred = parse_basic_credentials(h->value, buf);
    if (!cred) return;
    v.not_found = false;
    set(v, cred->user);
}

}  // namespace

bool header_matches(std::string_view header, std::string_view var) {
    if (header.size() != var.size()) return false;
    for (size_t i = 0; i < var.size(); ++i) {
        char h = header[i], v = var[i];
        if (h >= 'A' && h <= 'Z') h = static_cast<char>(h + 32);
        if (h == '-') h = '_';
        if (v >= 'A' && v <= 'Z') v = static_cast<char>(v + 32);
        if (h != v) return false;
    }
    return true;
}

extern const VariableDef kCoreVariables[] = {
    {"http_", v_http, 0, kVarPrefix},
    {"sent_http_", v_sent_http, 0, kVarPrefix | kVarNoCache},
    {"arg_", v_arg, 0, kVarPrefix | kVarNoCache},
    {"cookie_", v_cookie, 0, kVarPrefix},
    {"remote_addr", v_remote_addr},
    {"remote_port", v_remote_port},
    {"server_addr", v_server_addr},
    {"proxy_protocol_addr", v_proxy_protocol, kPpAddr},
    {"proxy_protocol_port", v_proxy_protocol, kPpPort},
    {"proxy_protocol_server_addr", v_proxy_protocol, kPpServerAddr},
    {"proxy_protocol_server_port", v_proxy_protocol, kPpServerPort},
    {"proxy_protocol_tlv_", v_proxy_protocol_tlv, 0, kVarPrefix},
    {"server_port", v_server_port},
    {"server_name", v_server_name},
    {"host", v_host},
    {"request", v_request},
    {"request_uri", v_request_uri},
    {"uri", v_uri, 0, kVarNoCache},
    {"document_uri", v_uri, 0, kVarNoCache},
    {"args", v_args, 0, kVarNoCache | kVarSettable, set_args},
    {"query_string", v_args, 0, kVarNoCache},
    {"is_args", v_is_args, 0, kVarNoCache},
    {"scheme", v_scheme},
    {"https", v_https},
    {"request_method", v_method, 0, kVarNoCache},
    {"server_protocol", v_protocol},
    {"status", v_status, 0, kVarNoCache},
    {"body_bytes_sent", v_body_bytes_sent, 0, kVarNoCache},
    {"bytes_sent", v_bytes_sent, 0, kVarNoCache},
    {"request_length", v_request_length, 0, kVarNoCache},
    {"request_completion", v_request_completion, 0, kVarNoCache},
    {"request_time", v_request_time, 0, kVarNoCache},
    {"time_local", v_time_local, 0, kVarNoCache},
    {"time_iso8601", v_time_iso8601, 0, kVarNoCache},
    {"msec", v_msec, 0, kVarNoCache},
    {"request_id", v_request_id},
    {"connection", v_connection},
    {"connection_requests", v_connection_requests},
    {"connection_time", v_connection_time, 0, kVarNoCache},
    {"binary_remote_addr", v_binary_remote_addr},
    {"request_body", v_request_body, 0, kVarNoCache},
    {"request_body_file", v_request_body_file, 0, kVarNoCache},
    {"pipe", v_pipe},
    {"hostname", v_hostname},
    {"pid", v_pid},
    {"content_length", v_content_length},
    {"content_type", v_content_type},
    {"remote_user", v_remote_user},
};
extern const size_t kCoreVariablesCount = std::size(kCoreVariables);

}  // namespace gatehouse::http
