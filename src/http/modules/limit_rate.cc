// limit_rate_filter_module: "limit_rate", "limit_rate_after" and
// $limit_rate: a response goes out no faster than a rate, per request
// [nginx: the write filter's limit].
//
// The rate comes from, in this order: "set $limit_rate", the origin's
// X-Accel-Limit-Rate (proxy), then the directive of the location the
// response is sent from (with variables, evaluated when the response
// starts, so an internal redirect's location decides). Like nginx, the
// allowance runs from the request's start with one second's worth up
// front: after t seconds, rate * (t + 1) bytes past limit_rate_after may
// have gone out.
//
// The filter is the last before the stream. It passes what the allowance
// permits (splitting a Buf, memory or file, at the boundary) and holds
// the rest; it runs again when the stream has written what it had or, if
// the allowance is spent, when a timer says enough time has passed. What
// it holds counts in output_pending(), so a proxied origin is read no
// faster than the client is allowed to receive (back-pressure), and the
// memory held stays within the proxy's buffers.
#include <algorithm>
#include <charconv>

#include "conf/module.h"
#include "conf/registry.h"
#include "conf/values.h"
#include "core/log.h"
#include "event/worker.h"
#include "http/output.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module limit_rate_filter_module;

namespace {

using conf::Ctx;
using conf::Node;

struct LimitRateConf {
    const ComplexValue* rate = nullptr;   // "limit_rate"; owner: the generation
    const ComplexValue* after = nullptr;  // "limit_rate_after"
};

void merge(const LimitRateConf& up, LimitRateConf& c) {
    if (!c.rate) c.rate = up.rate;
    if (!c.after) c.after = up.after;
}

template <const ComplexValue* LimitRateConf::*Member>
Status set_value(Ctx& cx, const Node& n, LimitRateConf& c) {
    if (c.*Member) return cx.duplicate(n);
    auto cv = compile_size(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    c.*Member = *cv;
    return {};
}

// The request's pacing, in its arena; the timer is cancelled by its
// destructor when the request goes.
struct Pace {
    uint64_t rate = 0;     // bytes per second; 0: none
    uint64_t after = 0;    // bytes sent before the limit applies
    uint64_t passed = 0;   // body bytes this filter passed on
    event::Timer timer;
};

void on_timer(Request* r) {
    log::Scope s(&r->log_ctx);
    resume_output(*r);
}

// Moves up to `budget` bytes from the front of `in` to `out`; empty Bufs
// (flush, the end) pass once everything before them has.
uint64_t move_bytes(Chain& in, Chain& out, uint64_t budget) {
    uint64_t moved = 0;
    size_t taken = 0;
    for (; taken < in.size(); ++taken) {
        Buf& b = in[taken];
        if (b.empty()) {
            out.push(std::move(b));
            continue;
        }
        if (moved == budget) break;
        uint64_t take = std::min<uint64_t>(budget - moved, b.size());
        if (take == b.size()) {
            moved += take;
            out.push(std::move(b));
            continue;
        }
        // Split: the front goes, the rest stays queued here.
        Buf part = b;
        part.last_buf = false;
        part.flush = false;
        part.truncate(take);
        b.consume(take);
        out.push(std::move(part));
        moved += take;
        break;
    }
    in.erase_front(taken);
    return moved;
}

Flow header_filter(Request& r, ResponseHead&) {
    if (!r.loc_confs) return Flow::Pass;
    const auto& c = r.loc_conf<LimitRateConf>(limit_rate_filter_module);
    if (!r.limit_rate_set) {
        r.limit_rate = eval_size(r, c.rate);
        r.limit_rate_set = true;
    }
    if (r.limit_rate == 0 || r.head_only) return Flow::Pass;
    Pace* p = r.arena().make<Pace>();
    p->rate = r.limit_rate;
    p->after = eval_size(r, c.after);
    p->timer.cb = event::Callback::to<&on_timer>(&r);
    r.set_ctx(limit_rate_filter_module, p);
    return Flow::Pass;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    Pace* p = r.ctx<Pace>(limit_rate_filter_module);
    // A rate set after the head ("set" cannot, an origin's header did
    // already) changes nothing for this response, as in nginx.
    if (!p) {
        out.append(in);
        return Flow::Pass;
    }
    if (p->timer.armed()) return Flow::Hold;
    auto& loop = event::worker_loop();
    uint64_t elapsed_ms = loop.now() - r.counters.start_msec;
    // rate * (elapsed + 1 s), past `after`: what may have gone by now.
    uint64_t allowed = p->after + p->rate + p->rate * elapsed_ms / 1000;
    uint64_t budget = allowed > p->passed ? allowed - p->passed : 0;
    p->passed += move_bytes(in, out, budget);
    if (in.empty()) return Flow::Pass;
    if (p->passed >= allowed) {
        // Spent: wait until the next byte is allowed (at least 1 ms, so a
        // slow rate does not spin).
        uint64_t next_ms = (p->passed + 1 - p->after - p->rate) * 1000 / p->rate;
        uint64_t wait = next_ms > elapsed_ms ? next_ms - elapsed_ms : 1;
        loop.arm(p->timer, std::chrono::milliseconds(wait));
    }
    // Otherwise the stream is behind: it calls again once it has written.
    return Flow::Hold;
}

// ---- $limit_rate ---------------------------------------------------------------

void v_limit_rate(Request& r, VarValue& v, uintptr_t) {
    uint64_t rate = r.limit_rate;
    if (!r.limit_rate_set && r.loc_confs)
        rate = eval_size(r, r.loc_conf<LimitRateConf>(limit_rate_filter_module).rate);
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof buf, rate);
    v.s = r.arena().dup(std::string_view(buf, static_cast<size_t>(res.ptr - buf)));
}

// "set $limit_rate 10k": a size, as the directive's; anything else is no
// limit, as nginx's.
void set_limit_rate(Request& r, std::string_view v, uintptr_t) {
    auto n = conf::parse_size(v);
    r.limit_rate = n ? *n : 0;
    r.limit_rate_set = true;
}

constexpr conf::Directive kDirectives[] = {
    {"limit_rate", conf::kHttpSrvLoc | conf::kIf, conf::Take1,
     conf::custom<set_value<&LimitRateConf::rate>>()},
    {"limit_rate_after", conf::kHttpSrvLoc | conf::kIf, conf::Take1,
     conf::custom<set_value<&LimitRateConf::after>>()},
};

constexpr VariableDef kVariables[] = {
    {"limit_rate", v_limit_rate, 0, kVarNoCache | kVarSettable, set_limit_rate},
};

// The rate is taken with the head: a response without one is not paced.
bool engaged(const Request& r) { return r.ctx<Pace>(limit_rate_filter_module) != nullptr; }

constexpr ModuleHooks kHooks{
    .header_filter = header_filter, .body_filter = body_filter, .body_filter_engaged = engaged, .variables = kVariables};

}  // namespace

extern const conf::Module limit_rate_filter_module{
    .name = "limit_rate_filter",
    .directives = kDirectives,
    .loc = conf::level<LimitRateConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
