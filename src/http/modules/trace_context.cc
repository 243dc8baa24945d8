// trace_context_module: W3C Trace Context for proxied requests, so that
// one request can be followed from the client through gatehouse to the
// origin. The modes are those of nginx's OpenTelemetry module
// (otel_trace_context), under the name "trace_context":
//
//   trace_context ignore;     # default: the client's fields go on untouched
//   trace_context extract;    # $trace_id continues the client's trace; fields untouched
//   trace_context inject;     # always a new trace; traceparent replaced, tracestate dropped
//   trace_context propagate;  # continue a valid client trace (else start one) and send
//                             # the origin a traceparent naming gatehouse's span
//
// Gatehouse is one span per request: $span_id, random. $trace_id is the
// client's trace when its traceparent is valid (and the mode is not
// inject), else a new random one; $trace_parent_id is the client's span
// (the parent of ours), "-" when there is none. A new trace is sent
// sampled (flags 01): the access log records every request. Continuing
// a trace keeps the client's flags and its tracestate. Several
// traceparent fields, or one that parse_traceparent() refuses, are an
// invalid context: a new trace, and the client's tracestate is dropped,
// as the recommendation says a receiver must.
//
// The fields are rewritten in the request's own header list at the
// Rewrite phase (the location's mode), so every consumer of the headers
// (proxy, auth_request's subrequest, $http_traceparent) sees the context
// that goes to the origin. The identities are drawn once per request and
// survive internal redirects (the module's context is kept; see
// ModuleHooks::ctx_survives_redirects), and a location reached by a
// redirect applies its own mode to the client's original fields, so the
// last location decides what the origin gets. A subrequest has its own
// span, child of the main request's.
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/random.h"
#include "core/str.h"
#include "http/request.h"
#include "http/trace_context.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module trace_context_module;

namespace {

enum class Mode : uint8_t { Ignore, Extract, Inject, Propagate };

struct TraceConf {
    std::optional<Mode> mode;  // "trace_context"
};

struct TraceMain {
    // Some level says inject or propagate: a request redirected from
    // there to a location that does not still needs its client's fields
    // put back (run_trace), wherever it ends up.
    bool rewrites = false;
};

void merge(const TraceConf& up, TraceConf& c) { conf::inherit(c.mode, up.mode, Mode::Ignore); }

Result<Mode> parse_mode(std::string_view s) {
    if (s == "ignore") return Mode::Ignore;
    if (s == "extract") return Mode::Extract;
    if (s == "inject") return Mode::Inject;
    if (s == "propagate") return Mode::Propagate;
    return make_error("invalid value \"" + std::string(s) + "\"");
}

Status set_mode(conf::Ctx& cx, const conf::Node& n, TraceConf& c) {
    if (c.mode) return conf::set_duplicate(cx, n);
    auto m = parse_mode(n.args[0].text);
    if (!m) return conf::set_failed(cx, n, m.error());
    c.mode = *m;
    if (*m == Mode::Inject || *m == Mode::Propagate)
        cx.conf<TraceMain>(trace_context_module, conf::Level::Main)->rewrites = true;
    return {};
}

// One per request, made on first need; kept across internal redirects.
struct Trace {
    explicit Trace(std::pmr::memory_resource* m) : client_fields(m) {}
    std::optional<TraceParent> client;                // the client's valid context
    std::array<uint8_t, 16> new_trace{};              // when not continuing the client's
    std::array<uint8_t, 8> span{};                    // gatehouse's span
    std::pmr::vector<HeaderField> client_fields;      // the client's traceparent and tracestate, in order
    bool rewritten = false;                           // the header list no longer holds them as sent
};

template <size_t N>
void fill_random(std::array<uint8_t, N>& a) {
    for (size_t i = 0; i < N; i += 8) {
        uint64_t v = random64();
        for (size_t k = 0; k < 8 && i + k < N; ++k) a[i + k] = static_cast<uint8_t>(v >> (8 * k));
    }
}

template <size_t N>
void fill_nonzero(std::array<uint8_t, N>& a) {
    do fill_random(a);
    while (a == std::array<uint8_t, N>{});
}

Trace& trace_of(Request& r) {
    if (auto* t = r.ctx<Trace>(trace_context_module)) return *t;
    auto* t = r.arena().make<Trace>(r.mem());
    size_t count = 0;
    const HeaderField* tp = nullptr;
    for (const HeaderField& f : r.headers)
        if (iequals(f.name, "traceparent") || iequals(f.name, "tracestate")) {
            t->client_fields.push_back(f);
            if (iequals(f.name, "traceparent")) {
                ++count;
                tp = &f;
            }
        }
    if (count == 1) t->client = parse_traceparent(tp->value);
    fill_nonzero(t->new_trace);
    fill_nonzero(t->span);
    r.set_ctx(trace_context_module, t);
    return *t;
}

Mode mode_of(const Request& r) {
    if (!r.loc_confs) return Mode::Ignore;
    return *r.loc_conf<TraceConf>(trace_context_module).mode;
}

// Whether r continues the client's trace in this mode.
bool continues(const Trace& t, Mode m) { return t.client && m != Mode::Inject; }

Next run_trace(Request& r) {
    const Mode m = mode_of(r);
    Trace* t = r.ctx<Trace>(trace_context_module);
    if (m == Mode::Ignore || m == Mode::Extract) {
        if (t && t->rewritten) {  // a redirect from a location that rewrote them
            r.headers.remove("traceparent");
            r.headers.remove("tracestate");
            for (const HeaderField& f : t->client_fields) r.headers.add(f.name, f.value);
            t->rewritten = false;
        }
        return Next::Decline;
    }
    if (!t) t = &trace_of(r);
    TraceParent out;
    out.parent_id = t->span;
    const bool cont = continues(*t, m);
    out.trace_id = cont ? t->client->trace_id : t->new_trace;
    out.flags = cont ? t->client->flags : 0x01;
    char text[kTraceparentLen];
    format_traceparent(out, text);
    r.headers.remove("traceparent");
    r.headers.remove("tracestate");
    r.headers.add("traceparent", r.arena().dup({text, sizeof text}));
    if (cont)
        for (const HeaderField& f : t->client_fields)
            if (iequals(f.name, "tracestate")) r.headers.add(f.name, f.value);
    t->rewritten = true;
    return Next::Decline;
}

// ---- variables ----------------------------------------------------------------

enum : uintptr_t { kTraceId, kSpanId, kParentId };

void v_trace(Request& r, VarValue& v, uintptr_t what) {
    Trace& t = trace_of(r);
    const bool cont = continues(t, mode_of(r));
    char buf[32];
    switch (what) {
        case kTraceId:
            hex_lower(cont ? t.client->trace_id.data() : t.new_trace.data(), 16, buf);
            v.s = r.arena().dup({buf, 32});
            return;
        case kSpanId:
            hex_lower(t.span.data(), 8, buf);
            v.s = r.arena().dup({buf, 16});
            return;
        default:
            if (!cont) {
                v.not_found = true;
                return;
            }
            hex_lower(t.client->parent_id.data(), 8, buf);
            v.s = r.arena().dup({buf, 16});
    }
}

constexpr VariableDef kVariables[] = {
    {"trace_id", v_trace, kTraceId},
    {"span_id", v_trace, kSpanId},
    {"trace_parent_id", v_trace, kParentId},
};

constexpr conf::Directive kDirectives[] = {
    {"trace_context", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_mode>()},
};

// Nothing to do in a generation where no level rewrites the fields.
bool trace_wanted(conf::ConfArray main, conf::ConfArray, conf::ConfArray) {
    return static_cast<const TraceMain*>(main[trace_context_module.index])->rewrites;
}

constexpr PhaseHandler kPhases[] = {{Phase::Rewrite, run_trace, trace_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables, .ctx_survives_redirects = true};

}  // namespace

extern const conf::Module trace_context_module{
    .name = "trace_context",
    .directives = kDirectives,
    .main = conf::level<TraceMain>(),
    .loc = conf::level<TraceConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
