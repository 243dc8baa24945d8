// Active health checks: "health_check" in an upstream block with a zone,
// and the "match" blocks that say what a passing answer is.
//
// One worker probes (slot 0; the others only read the verdicts in the
// zone): for each peer a GET of the check's URI every interval, on a
// connection of its own, made by the upstream::Client (client.h) that the
// proxy uses too, on the worker's loop (never blocking). The request is
// HTTP/1.0 with "Connection: close": nothing is pooled between checks.
// Each failed check is logged at error as the proxy logs a failed try.
// A verdict is pass or fail; `fails` consecutive failures take a healthy
// peer out of every method's choice before a client request finds it
// broken, `passes` consecutive passes bring it back (with slow_start, its
// share ramps up). Every change is logged at warn.
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/str.h"
#include "event/connection.h"
#include "event/loop.h"
#include "event/worker.h"
#include "upstream/balancer.h"
#include "upstream/client.h"

namespace gatehouse::upstream {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// ---- one peer's probe ------------------------------------------------------------

// One check of one peer, every interval: an upstream::Client to that peer
// alone (no balancing, no retry, no pool) with a GET of the check's URI.
class Probe final : public Hooks {
public:
    Probe(UpstreamConf& u, size_t index) : u_(u), index_(index) {
        aim();
        request_ = "GET " + u.health->uri + " HTTP/1.0\r\nHost: " + u.host +
                   "\r\nUser-Agent: gatehouse health check\r\nConnection: close\r\n\r\n";
        conf_.connect_timeout = u.health->timeout;
        conf_.send_timeout = u.health->timeout;
        conf_.read_timeout = u.health->timeout;
        conf_.buffer_size = 16384;
        conf_.buffering = false;
        conf_.max_temp_file_size = 0;
        timer_.cb = event::Callback::to<&Probe::start>(this);
        deadline_.cb = event::Callback::to<&Probe::on_deadline>(this);
        log_ctx_.describe = describe;
        log_ctx_.self = this;
    }
    Probe(const Probe&) = delete;
    Probe& operator=(const Probe&) = delete;
    ~Probe() { stop(); }

    void schedule(std::chrono::milliseconds delay) { event::worker_loop().arm(timer_, delay); }

    void stop() {
        check_.reset();
        event::worker_loop().cancel(timer_);
        event::worker_loop().cancel(deadline_);
    }

    // ---- Hooks ----
    void prepare(Client& c) override {
        c.out.head = request_;
        c.out.uri = u_.health->uri;
        c.out.idempotent = true;
    }
    bool start_body(Client&) override { return true; }
    void resume_body(Client&) override {}
    Head on_head(Client& c, const http::StatusHead& h) override {
        status_ = h.status;
        if (!needs_body(u_.health->match)) {
            verdict(c);
            return Head::Stop;
        }
        return Head::Body;
    }
    bool on_body(Client& c, Chain& data) override {
        for (const Buf& b : data)
            if (!b.empty() && !b.in_file()) body_.append(b.view());
        if (data.last() || body_.size() >= kMatchBodyMax) {
            verdict(c);
            return false;
        }
        return true;
    }
    size_t downstream_pending() override { return 0; }
    bool gone() override { return done_; }
    void on_error(Client& c, int) override { finish(false, c.last_error()); }
    void on_truncated(Client& c) override { finish(false, c.last_error()); }
    event::Duplex& open_tunnel(Client&, event::Callback, std::string_view*) override {
        GH_CHECK(false && "a health check never asks for an upgrade");
        __builtin_unreachable();
    }
    void on_tunnel_end(Client&) override {}
    const log::Context* log_context() override { return &log_ctx_; }
    Result<int> temp_file() override { return make_error("a health check keeps no temp file"); }

private:
    // Each check has an arena of its own for the client and the copies of
    // the response's fields; the next check (or stop()) frees it, never
    // the hooks the client is calling.
    struct Check {
        explicit Check(Probe& p)
            : log(arena.resource()), client(p.u_, p.conf_, p, log, arena.resource()) {}
        Arena arena{2048};
        TryLog log;
        Client client;
    };

    // The peer's address now, with port= applied. A slot of a dynamic
    // server changes address at run time: read it anew before each check.
    void aim() {
        const Peer& p = u_.peers[index_];
        target_.server = p.server;
        target_.sa = p.sa;
        target_.sa_len = p.sa_len;
        target_.text = p.text;
        const uint16_t port = u_.health->port;
        if (port && p.sa.ss_family == AF_INET)
            reinterpret_cast<sockaddr_in*>(&target_.sa)->sin_port = htons(port);
        else if (port && p.sa.ss_family == AF_INET6)
            reinterpret_cast<sockaddr_in6*>(&target_.sa)->sin6_port = htons(port);
    }

    void start() {
        if (u_.peers[index_].slot) {
            bool there = false;
            {
                GroupLock lock(u_);
                sync_peers(u_);
                there = present(u_.peers[index_]);
            }
            // A slot without an address (or draining) has nothing to check.
            if (!there) {
                schedule(u_.health->interval);
                return;
            }
            aim();
            checked_text_ = u_.peers[index_].text;
        }
        started_ = event::worker_loop().now();
        body_.clear();
        status_ = 0;
        done_ = false;
        check_.reset();
        check_ = std::make_unique<Check>(*this);
        check_->client.set_fixed_peer(target_);
        check_->client.start();
        event::worker_loop().arm(deadline_, u_.health->timeout);
    }

    void on_deadline() {
        if (!done_) finish(false, "timed out");
    }

    // The tail of the client's lines about a check: which check of which
    // peer, then the origin as the proxy's lines name it.
    static void describe(const void* self, FixedWriter& out) {
        auto* p = static_cast<const Probe*>(self);
        out.put(", health check \"");
        out.put(p->u_.health->uri);
        out.put("\" of peer \"");
        out.put(p->target_.text);
        out.put("\" in upstream \"");
        out.put(p->u_.name);
        out.put("\"");
        if (p->check_) p->check_->client.describe_peer(out);
    }

    void verdict(Client& c) {
        std::string_view body = body_;
        if (body.size() > kMatchBodyMax) body = body.substr(0, kMatchBodyMax);
        HeaderLookup find = [](const void* ctx, std::string_view name) -> const std::string_view* {
            for (const TryLog::Field& f : static_cast<const TryLog*>(ctx)->headers)
                if (iequals(f.name, name)) return &f.value;
            return nullptr;
        };
        std::string why = check_response(u_.health->match, status_, find, &c.log(), body);
        finish(why.empty(), why);
    }

    void finish(bool passed, std::string_view why) {
        if (done_) return;
        done_ = true;  // gone(): the client stops and closes its connection
        event::worker_loop().cancel(deadline_);
        // The verdict's lines name the peer themselves: not the check's tail.
        log::Scope no_context(nullptr);
        const event::Msec now = event::worker_loop().now();
        // The verdict is about the address checked: a slot that took
        // another one meanwhile starts its own checks. Another worker may
        // have given the slot its new address (and a fresh state) while
        // this check was under way: this worker's copy of the address is
        // brought up to date first, and the verdict recorded under the
        // lock, so that no change comes between the test and the record.
        Peer& p = u_.peers[index_];
        if (!p.slot) {
            record_check(u_, p, passed, why, now);
        } else {
            GroupLock lock(u_);
            sync_peers(u_);
            if (present(p) && p.text == checked_text_) record_check(u_, p, passed, why, now);
        }
        // Start to start: a slow answer does not stretch the interval.
        const int64_t next = static_cast<int64_t>(started_) + u_.health->interval.count() - static_cast<int64_t>(now);
        schedule(std::chrono::milliseconds(next > 0 ? next : 0));
    }

    UpstreamConf& u_;
    size_t index_;
    Peer target_;  // the peer's address, with port= applied
    std::string checked_text_;  // a slot's address when its check started
    std::string request_;
    ClientConf conf_;
    event::Timer timer_;     // the next check
    event::Timer deadline_;  // this check's timeout, start to verdict
    std::unique_ptr<Check> check_;
    int status_ = 0;
    std::string body_;
    bool done_ = false;
    event::Msec started_ = 0;
    log::Context log_ctx_;  // no connection of a client: no "*N"
};

std::vector<std::unique_ptr<Probe>>& probes() {
    static std::vector<std::unique_ptr<Probe>> p;
    return p;
}

// ---- "match" ----------------------------------------------------------------------

Result<uint16_t> status_code(std::string_view s) {
    auto v = conf::parse_number(s, 999);
    if (!v || *v < 100) return make_error("invalid status " + quoted(s));
    return static_cast<uint16_t>(*v);
}

Status parse_status(conf::Ctx& cx, const conf::Node& c, Match& m) {
    size_t i = 0;
    if (c.args.size() > 1 && c.args[0].text == "!") {
        m.status_not = true;
        i = 1;
    }
    if (!m.status.empty()) return cx.duplicate(c);
    if (i >= c.args.size()) return cx.error(c, "invalid number of arguments in \"status\"");
    for (; i < c.args.size(); ++i) {
        std::string_view a = c.args[i].text;
        size_t dash = a.find('-');
        auto lo = status_code(a.substr(0, dash));
        auto hi = dash == std::string_view::npos ? lo : status_code(a.substr(dash + 1));
        if (!lo || !hi || *hi < *lo) return cx.error(c, "invalid status " + quoted(a));
        m.status.emplace_back(*lo, *hi);
    }
    return {};
}

Result<std::unique_ptr<Regex>> regex(conf::Ctx& cx, const conf::Node& c, std::string_view pattern) {
    auto re = Regex::compile(pattern, false);
    if (!re) return cx.error(c, re.message());
    return std::make_unique<Regex>(std::move(*re));
}

Status parse_header(conf::Ctx& cx, const conf::Node& c, Match& m) {
    using Op = MatchHeader::Op;
    MatchHeader h;
    const auto& a = c.args;
    if (a.size() == 1) {
        h.name = a[0].text;
    } else if (a.size() == 2 && a[0].text == "!") {
        h.op = Op::Absent;
        h.name = a[1].text;
    } else if (a.size() == 3) {
        h.name = a[0].text;
        std::string_view op = a[1].text;
        h.value = a[2].text;
        if (op == "=") h.op = Op::Equal;
        else if (op == "!=") h.op = Op::NotEqual;
        else if (op == "~") h.op = Op::Regex;
        else if (op == "!~") h.op = Op::NotRegex;
        else return cx.error(c, "invalid operator " + quoted(op) + " in \"header\"");
        if (h.op == Op::Regex || h.op == Op::NotRegex) {
            auto re = regex(cx, c, h.value);
            if (!re) return re.error();
            h.re = std::move(*re);
        }
    } else {
        return cx.error(c, "invalid number of arguments in \"header\"");
    }
    m.headers.push_back(std::move(h));
    return {};
}

Status parse_body(conf::Ctx& cx, const conf::Node& c, Match& m) {
    if (c.args.size() != 2 || (c.args[0].text != "~" && c.args[0].text != "!~"))
        return cx.error(c, "invalid arguments in \"body\": use \"body ~ regex\" or \"body !~ regex\"");
    if (m.body) return cx.duplicate(c);
    auto re = regex(cx, c, c.args[1].text);
    if (!re) return re.error();
    m.body = std::move(*re);
    m.body_not = c.args[0].text == "!~";
    return {};
}

}  // namespace

Status parse_match(conf::Ctx& cx, const conf::Node& n, Match& m) {
    m.name = n.args[0].text;
    m.where = n.where();
    for (const conf::Node& c : n.children) {
        if (c.block) return cx.error(c, "\"" + c.name + "\" takes no block in \"match\"");
        Status s;
        if (c.name == "status") s = parse_status(cx, c, m);
        else if (c.name == "header") s = parse_header(cx, c, m);
        else if (c.name == "body") s = parse_body(cx, c, m);
        else return cx.error(c, "unknown test " + quoted(c.name) + " in \"match\"");
        if (!s) return s;
    }
    return {};
}

Status parse_health_check(conf::Ctx& cx, const conf::Node& n, HealthCheck& hc) {
    hc.where = n.where();
    for (const conf::Arg& arg : n.args) {
        std::string_view p = arg.text;
        auto invalid = [&] { return cx.error(n, "invalid parameter " + quoted(p)); };
        auto after = [&](std::string_view key) { return p.substr(key.size()); };
        if (p.starts_with("interval=") || p.starts_with("timeout=")) {
            auto v = conf::parse_duration(after(p[0] == 'i' ? "interval=" : "timeout="));
            if (!v || v->count() <= 0) return invalid();
            (p[0] == 'i' ? hc.interval : hc.timeout) = *v;
        } else if (p.starts_with("fails=") || p.starts_with("passes=")) {
            auto v = conf::parse_number(after(p[0] == 'f' ? "fails=" : "passes="), UINT32_MAX);
            if (!v || *v == 0) return invalid();
            (p[0] == 'f' ? hc.fails : hc.passes) = static_cast<uint32_t>(*v);
        } else if (p.starts_with("uri=")) {
            hc.uri = std::string(after("uri="));
            if (hc.uri.empty() || hc.uri[0] != '/') return invalid();
            for (char ch : hc.uri)
                if (static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f) return invalid();
        } else if (p.starts_with("port=")) {
            auto v = conf::parse_number(after("port="), 65535);
            if (!v || *v == 0) return invalid();
            hc.port = static_cast<uint16_t>(*v);
        } else if (p.starts_with("match=")) {
            hc.match_name = std::string(after("match="));
            if (hc.match_name.empty()) return invalid();
        } else if (p == "mandatory") {
            hc.mandatory = true;
        } else {
            return invalid();
        }
    }
    return {};
}

std::string check_response(const Match* m, int status, HeaderLookup find, const void* ctx, std::string_view body) {
    if (!m || m->status.empty()) {
        if (status < 200 || status > 399) return "status " + std::to_string(status);
    } else {
        bool in = false;
        for (auto [lo, hi] : m->status) in = in || (status >= lo && status <= hi);
        if (in == m->status_not) return "status " + std::to_string(status);
    }
    if (!m) return {};
    using Op = MatchHeader::Op;
    for (const MatchHeader& h : m->headers) {
        const std::string_view* v = find(ctx, h.name);
        switch (h.op) {
            case Op::Present:
                if (!v) return "header " + quoted(h.name) + " is missing";
                break;
            case Op::Absent:
                if (v) return "header " + quoted(h.name) + " is present";
                break;
            case Op::Equal:
            case Op::NotEqual:
                // A missing field fails both: the test is about its value.
                if (!v) return "header " + quoted(h.name) + " is missing";
                if ((*v == h.value) != (h.op == Op::Equal))
                    return "header " + quoted(h.name) + " is " + quoted(*v);
                break;
            case Op::Regex:
            case Op::NotRegex:
                if (!v) return "header " + quoted(h.name) + " is missing";
                if (h.re->match(*v) != (h.op == Op::Regex)) return "header " + quoted(h.name) + " is " + quoted(*v);
                break;
        }
    }
    if (m->body && m->body->match(body) == m->body_not)
        return std::string("body ") + (m->body_not ? "matches " : "does not match ") + quoted(m->body->pattern());
    return {};
}

void record_check(UpstreamConf& u, Peer& p, bool passed, std::string_view why, event::Msec now) {
    PeerState& st = p.st();
    const HealthCheck& hc = *u.health;
    const auto h = static_cast<Health>(st.health.load(kRelaxed));
    if (p.totals) {
        p.totals->checks.fetch_add(1, kRelaxed);
        if (!passed) p.totals->check_fails.fetch_add(1, kRelaxed);
    }
    if (passed) {
        st.hc_fails.store(0, kRelaxed);
        const uint32_t n = st.hc_passes.fetch_add(1, kRelaxed) + 1;
        if (h == Health::Unchecked) {
            st.health.store(static_cast<uint32_t>(Health::Up), kRelaxed);
            GH_LOG(Info, "upstream server \"%s\" of upstream \"%s\" passed its first health check", p.text.c_str(),
                   u.name.c_str());
        } else if (h == Health::Down && n >= hc.passes) {
            // Passive failures from before do not count against it now.
            st.fails.store(0, kRelaxed);
            if (peer_slow_start(p) > 0) st.slow_start_from.store(now ? now : 1, kRelaxed);
            st.health.store(static_cast<uint32_t>(Health::Up), kRelaxed);
            GH_LOG(Warn, "upstream server \"%s\" of upstream \"%s\" is healthy again: %u health check%s passed%s",
                   p.text.c_str(), u.name.c_str(), n, n == 1 ? "" : "s",
                   peer_slow_start(p) > 0 ? ", slow start begins" : "");
        }
        return;
    }
    st.hc_passes.store(0, kRelaxed);
    const uint32_t n = st.hc_fails.fetch_add(1, kRelaxed) + 1;
    if (h == Health::Unchecked || (h == Health::Up && n >= hc.fails)) {
        st.health.store(static_cast<uint32_t>(Health::Down), kRelaxed);
        st.slow_start_from.store(0, kRelaxed);
        if (p.totals) p.totals->unhealthy.fetch_add(1, kRelaxed);
        GH_LOG(Warn, "upstream server \"%s\" of upstream \"%s\" is unhealthy: health check of \"%s\" failed: %.*s",
               p.text.c_str(), u.name.c_str(), hc.uri.c_str(), static_cast<int>(why.size()), why.data());
    }
}

void start_health_checks(UpstreamMainConf* m, int slot) {
    if (!m || slot != 0) return;
    for (UpstreamConf* u : m->upstreams) {
        if (!u->health) continue;
        if (u->zone_group) u->zone_group->prober.store(static_cast<int32_t>(::getpid()), kRelaxed);
        for (size_t i = 0; i < u->peers.size(); ++i) {
            if (u->peers[i].server->down) continue;
            probes().push_back(std::make_unique<Probe>(*u, i));
            // At once: "mandatory" peers take no request until checked.
            probes().back()->schedule(std::chrono::milliseconds(0));
        }
    }
}

void stop_health_checks() {
    for (auto& p : probes()) p->stop();
    probes().clear();
}

}  // namespace gatehouse::upstream
