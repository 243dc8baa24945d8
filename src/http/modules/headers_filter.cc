// headers_filter_module: "add_header", "add_trailer" and "expires" [nginx
// headers module].
//
// A header filter: for responses whose status is one of 200, 201, 204,
// 206, 301, 302, 303, 304, 307, 308 it sets Expires and Cache-Control as
// "expires" says, then appends every "add_header" of the location; an
// "add_header ... always" is appended whatever the status. A level with
// any "add_header" does not inherit those of the levels above it.
//
// "add_trailer" fields (for 200, 201, 206, 301, 302, 303, 307, 308, or any
// status with "always") are evaluated when the body ends, by a body
// filter, so that they may say what only the end knows
// ($upstream_response_time, $body_bytes_sent); the header filter marks
// the response so that its framing can carry them.

#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/log.h"
#include "core/str.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/conditional.h"
#include "http/core_module.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module headers_filter_module;

namespace {

using conf::Ctx;
using conf::Node;

struct AddHeader {
    std::string name;
    ComplexValue value;
    bool always = false;  // "always": whatever the status
};

enum class ExpiresType : uint8_t {
    Off,
    Epoch,     // "epoch": Thu, 01 Jan 1970 00:00:01 GMT
    Max,       // "max": Thu, 31 Dec 2037 23:55:55 GMT
    Access,    // "time": from now
    Modified,  // "modified time": from Last-Modified (from now without one)
    Daily,     // "@time": the next such time of day, local time
};

struct Expires {
    ExpiresType type = ExpiresType::Off;
    time_t time = 0;  // seconds, may be negative; Daily: since midnight
};

struct ExpiresConf {
    Expires fixed;                      // a value without variables
    std::optional<ComplexValue> value;  // with variables: parsed per response
    bool modified = false;              // "modified" was given
};

struct HeadersLocConf {
    std::vector<AddHeader> headers;      // "add_header"
    bool headers_set = false;            // this level has its own
    std::vector<AddHeader> trailers;     // "add_trailer"
    bool trailers_set = false;
    std::optional<ExpiresConf> expires;  // "expires"
};

void merge(const HeadersLocConf& up, HeadersLocConf& c) {
    if (!c.headers_set) c.headers = up.headers;
    if (!c.trailers_set) c.trailers = up.trailers;
    if (!c.expires) c.expires = up.expires;
}

// The value of "expires", or of the variable it names [nginx's rules]:
// "epoch", "max", "off" (not after "modified", where they are not times);
// "@15h30m" (not with "modified", below 24h); "[+|-]time" in seconds,
// with nginx's time units except "ms".
Result<Expires> parse_expires(std::string_view v, bool modified) {
    if (!modified) {
        if (v == "epoch") return Expires{ExpiresType::Epoch, 0};
        if (v == "max") return Expires{ExpiresType::Max, 0};
        if (v == "off") return Expires{ExpiresType::Off, 0};
    }
    Expires e{modified ? ExpiresType::Modified : ExpiresType::Access, 0};
    std::string_view t = v;
    bool minus = false;
    if (!t.empty() && t[0] == '@') {
        if (modified) return make_error("daily time cannot be used with \"modified\" parameter");
        e.type = ExpiresType::Daily;
        t.remove_prefix(1);
    } else if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
        minus = t[0] == '-';
        t.remove_prefix(1);
    }
    auto d = conf::parse_duration(t);
    if (!d || t.find("ms") != std::string_view::npos)
        return make_error("invalid value \"" + std::string(v) + "\"");
    e.time = static_cast<time_t>(d->count() / 1000);
    if (e.type == ExpiresType::Daily && e.time > 24 * 60 * 60)
        return make_error("daily time value must be less than 24 hours");
    if (minus) e.time = -e.time;
    return e;
}

// expires [modified] time | epoch | max | off;
Status set_expires(Ctx& cx, const Node& n, HeadersLocConf& c) {
    if (c.expires) return cx.duplicate(n);
    ExpiresConf ec;
    std::string_view v = n.args[0].text;
    if (n.args.size() == 2) {
        if (v != "modified") return cx.error(n, "invalid value \"" + n.args[0].text + "\"");
        ec.modified = true;
        v = n.args[1].text;
    }
    if (v.find('$') != std::string_view::npos) {
        auto cv = ComplexValue::compile(cx, n, v);
        if (!cv) return cv.error();
        ec.value = std::move(*cv);
    } else {
        auto e = parse_expires(v, ec.modified);
        if (!e) return cx.error(n, e.message());
        ec.fixed = *e;
    }
    c.expires = std::move(ec);
    return {};
}

Result<AddHeader> parse_field(Ctx& cx, const Node& n) {
    AddHeader h;
    h.name = n.args[0].text;
    auto cv = ComplexValue::compile(cx, n, n.args[1].text);
    if (!cv) return cv.error();
    h.value = std::move(*cv);
    if (n.args.size() == 3) {
        if (n.args[2].text != "always") return cx.error(n, "invalid parameter \"" + n.args[2].text + "\"");
        h.always = true;
    }
    return h;
}

// add_header name value [always];
Status set_add_header(Ctx& cx, const Node& n, HeadersLocConf& c) {
    auto h = parse_field(cx, n);
    if (!h) return h.error();
    c.headers_set = true;  // merge inherits nothing now
    c.headers.push_back(std::move(*h));
    return {};
}

// add_trailer name value [always];
Status set_add_trailer(Ctx& cx, const Node& n, HeadersLocConf& c) {
    auto h = parse_field(cx, n);
    if (!h) return h.error();
    c.trailers_set = true;
    c.trailers.push_back(std::move(*h));
    return {};
}

// ---- the filter ------------------------------------------------------------

bool safe_status(int s) {
    switch (s) {
        case 200: case 201: case 204: case 206:
        case 301: case 302: case 303: case 304: case 307: case 308:
            return true;
        default:
            return false;
    }
}

// The statuses add_trailer applies to without "always" [nginx]: those of
// add_header but 204 and 304, which have no body to follow.
bool trailer_status(int s) { return safe_status(s) && s != 204 && s != 304; }

// "Thu, 01 Jan 1970 00:00:01 GMT" (IMF-fixdate, RFC 9110 5.6.7), in r's arena.
std::string_view http_date(Request& r, time_t t) {
    char b[kHttpDateMax];
    return r.arena().dup(format_http_date(t, b));
}

// The next time the clock shows `tod` seconds after local midnight.
time_t next_time_of_day(time_t now, time_t tod) {
    struct tm tm;
    localtime_r(&now, &tm);
    tm.tm_hour = static_cast<int>(tod / 3600);
    tm.tm_min = static_cast<int>(tod % 3600 / 60);
    tm.tm_sec = static_cast<int>(tod % 60);
    tm.tm_isdst = -1;
    time_t next = mktime(&tm);
    if (next > now) return next;
    ++tm.tm_mday;  // mktime() normalises the 32nd of a month
    tm.tm_isdst = -1;
    return mktime(&tm);
}

// Sets the value of the response's `name` header, keeping the first one
// and dropping the others (an origin may have sent several), or adds it.
void set_single(ResponseHead& h, std::string_view name, std::string_view value) {
    bool seen = false;
    std::erase_if(h.headers, [&](Header& x) {
        if (!iequals(x.name, name)) return false;
        if (seen) return true;
        seen = true;
        x.value = value;
        return false;
    });
    if (!seen) h.headers.push_back(Header{name, value});
}

// nginx's Expires and Cache-Control for an "expires" value.
void apply_expires(Request& r, ResponseHead& h, const Expires& e) {
    std::string_view expires, cc;
    if (e.type == ExpiresType::Epoch) {
        expires = "Thu, 01 Jan 1970 00:00:01 GMT";
        cc = "no-cache";
    } else if (e.type == ExpiresType::Max) {
        expires = "Thu, 31 Dec 2037 23:55:55 GMT";
        cc = "max-age=315360000";  // 10 years
    } else {
        time_t now = static_cast<time_t>(event::worker_loop().wall().sec);
        if (e.time == 0 && e.type != ExpiresType::Daily) {
            expires = http_date(r, now);
            cc = "max-age=0";
        } else {
            time_t at, max_age;
            if (e.type == ExpiresType::Daily) {
                at = next_time_of_day(now, e.time);
                max_age = at - now;
            } else if (e.type == ExpiresType::Access || h.last_modified < 0) {
                at = now + e.time;
                max_age = e.time;
            } else {
                at = h.last_modified + e.time;
                max_age = at - now;
            }
            expires = http_date(r, at);
            if (e.time < 0 || max_age < 0) {
                cc = "no-cache";
            } else {
                char b[32];
                int n = snprintf(b, sizeof b, "max-age=%lld", static_cast<long long>(max_age));
                cc = r.arena().dup({b, n > 0 ? static_cast<size_t>(n) : 0});
            }
        }
    }
    set_single(h, "Expires", expires);
    set_single(h, "Cache-Control", cc);
}

// Adds one header; a few names replace the response's own rather than
// adding a second one, and an empty value adds nothing [nginx].
void add_header(ResponseHead& h, std::string_view name, std::string_view value) {
    if (iequals(name, "ETag")) {
        h.remove("ETag");
        h.etag = value;
        return;
    }
    if (iequals(name, "Last-Modified")) {
        // The response's time becomes the operator's, which If-Range and
        // the conditionals then compare with [nginx]. A date in the form
        // sent is kept as a time; any other text is sent as written, and
        // the response has no time of its own.
        h.remove("Last-Modified");
        h.last_modified = -1;
        const time_t t = value.empty() ? -1 : parse_http_date(value);
        char d[kHttpDateMax];
        if (t >= 0 && format_http_date(t, d) == value) {
            h.last_modified = t;
            return;
        }
    }
    if (!value.empty()) h.headers.push_back(Header{name, value});
}

const HeadersLocConf* headers_conf(Request& r) {
    conf::ConfArray locs = r.loc_confs;
    if (!locs && r.srv_confs) locs = static_cast<SrvConf*>(r.srv_confs[http_core_module.index])->loc_confs;
    return locs ? static_cast<const HeadersLocConf*>(locs[headers_filter_module.index]) : nullptr;
}

Flow headers_filter(Request& r, ResponseHead& h) {
    const HeadersLocConf* conf = headers_conf(r);
    if (!conf) return Flow::Pass;
    const auto& c = *conf;
    for (const AddHeader& a : c.trailers)
        if (a.always || trailer_status(h.status)) h.expect_trailers = true;
    const bool safe = safe_status(h.status);
    if (safe && c.expires) {
        Expires e = c.expires->fixed;
        if (c.expires->value) {
            std::string_view v = c.expires->value->eval(r);
            // A value that is not one leaves the response without
            // Expires, as nginx does; the log says why.
            auto p = parse_expires(v, c.expires->modified);
            if (p) e = *p;
            else {
                GH_LOG(Error, "%s in \"expires\" value", p.message().c_str());
                e.type = ExpiresType::Off;
            }
        }
        if (e.type != ExpiresType::Off) apply_expires(r, h, e);
    }
    for (const AddHeader& a : c.headers)
        if (safe || a.always) add_header(h, a.name, a.value.eval(r));
    return Flow::Pass;
}

// At the end of the body: the trailers, evaluated now.
Flow trailers_filter(Request& r, Chain& in, Chain& out) {
    if (r.out.expect_trailers && in.last()) {
        if (const HeadersLocConf* c = headers_conf(r))
            for (const AddHeader& a : c->trailers) {
                if (!a.always && !trailer_status(r.out.status)) continue;
                std::string_view v = a.value.eval(r);
                if (!v.empty()) r.out.trailers.push_back({a.name, v});
            }
    }
    out.append(in);
    return Flow::Pass;
}

// $sent_trailer_NAME: a trailer field sent (known once the body ended).
void v_sent_trailer(Request& r, VarValue& v, uintptr_t arg) {
    join_fields(r, v, r.out.trailers, *reinterpret_cast<const std::string_view*>(arg), ", ");
}

constexpr VariableDef kVariables[] = {
    {"sent_trailer_", v_sent_trailer, 0, kVarPrefix | kVarNoCache},
};

// Trailers are decided with the head (expect_trailers).
bool trailers_engaged(const Request& r) { return r.out.expect_trailers; }

bool wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    const auto& c = *static_cast<const HeadersLocConf*>(loc[headers_filter_module.index]);
    return !c.headers.empty() || !c.trailers.empty() || c.expires.has_value();
}

constexpr ModuleHooks kHooks{.header_filter = headers_filter,
                             .body_filter = trailers_filter,
                             .body_filter_engaged = trailers_engaged,
                             .filters_wanted = wanted,
                             .variables = kVariables};

constexpr conf::Directive kDirectives[] = {
    {"add_header", conf::kHttpSrvLoc | conf::kIf, conf::Take23, conf::custom<set_add_header>()},
    {"add_trailer", conf::kHttpSrvLoc | conf::kIf, conf::Take23, conf::custom<set_add_trailer>()},
    {"expires", conf::kHttpSrvLoc | conf::kIf, conf::Take12, conf::custom<set_expires>()},
};

}  // namespace

extern const conf::Module headers_filter_module{
    .name = "headers_filter",
    .directives = kDirectives,
    .loc = conf::level<HeadersLocConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
