// The request path without sockets: a configuration generation loaded
// from text, a worker loop on a fake clock, and a TestStream, the second
// implementation of http::Stream (the first is the HTTP/1.1 connection).
//
//     test::Site site(R"(server { listen 127.0.0.1:8080; location / { return 200 "hi"; } })");
//     test::Exchange x(site, "GET /a?b=1 HTTP/1.1\r\nHost: localhost\r\n\r\n");
//     x.run();                         // start_request, then the loop until idle
//     CHECK(x.status() == 200);
//     CHECK(x.body() == "hi");
//
// The TestStream records what the response path hands it: the head (its
// status and fields, as a front-end would serialise them), the body bytes
// (files read), whether the body ended, an abort, close_after(). It can
// hold output back (`window`): output_pending() then stays non-zero until
// drain() lets more out, as a slow client would.
#pragma once

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "event/clock.h"
#include "event/connection.h"
#include "event/loop.h"
#include "core/log.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/stream.h"
#include "process/cycle.h"
#include "temp_dir.h"

namespace gatehouse::test {

// A generation of `http` (an http block's content) plus the worker it
// runs in.
class Site {
public:
    explicit Site(std::string http, std::string main = {}) {
        // The request path logs (a file not found...): into a log with no
        // file, not into the test output.
        log::set_error_log(&quiet);
        init_modules();
        dir.mkdir("conf");
        dir.mkdir("logs");
        dir.mkdir("html");
        lo.prefix = dir.path();
        lo.conf_file = dir / "conf/t.conf";
        dir.write("conf/t.conf", "events { }\n" + main + "http {\n" + http + "\n}\n");
        auto c = process::load_cycle(lo);
        REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.message()));
        cycle = std::move(c).value();
        auto l = event::Loop::create(clock);
        REQUIRE(l.ok());
        loop = std::move(l).value();
        table = std::make_unique<event::ConnectionTable>(*loop, 64);
        event::set_worker(loop.get(), table.get());
    }
    ~Site() {
        table.reset();
        event::set_worker(nullptr, nullptr);
        log::set_error_log(nullptr);
    }
    Site(const Site&) = delete;
    Site& operator=(const Site&) = delete;

    http::HttpMainConf& main() { return *http::http_main(cycle->roots[static_cast<int>(conf::Level::Main)]); }
    // The servers of the first listening port, first address.
    const http::AddrServers& servers() { return main().ports.at(0).addrs.at(0); }
    // Runs the loop until nothing is posted (timers wait for the fake
    // clock: advance() moves it).
    void settle() {
        loop->run_once(0);
        for (int i = 0; i < 1000 && loop->has_posted(); ++i) loop->run_once(0);
    }
    // Moves the fake clock on and runs what became due.
    void advance(std::chrono::milliseconds d) {
        clock.advance(static_cast<event::Msec>(d.count()));
        settle();
    }

    log::ErrorLog quiet;
    TempDir dir;
    process::LoadOptions lo;
    std::unique_ptr<process::Cycle> cycle;
    event::FakeClock clock;
    std::unique_ptr<event::Loop> loop;
    std::unique_ptr<event::ConnectionTable> table;
};

class TestStream final : public http::Stream {
public:
    explicit TestStream(Site& s) : site_(s) {
        sockaddr_in* in = reinterpret_cast<sockaddr_in*>(&peer_);
        in->sin_family = AF_INET;
        in->sin_port = htons(51234);
        inet_pton(AF_INET, "192.0.2.7", &in->sin_addr);
    }

    // ---- what the response path did ----
    int status = 0;
    std::string reason;
    std::vector<std::pair<std::string, std::string>> fields;  // as a front-end would send them
    std::string body;
    bool head_sent = false;
    bool ended = false;       // the last buffer came
    bool finished = false;    // the Log phase ran after the end
    bool aborted = false;
    bool close_requested = false;
    size_t sends = 0;         // send_body() calls
    size_t max_pending = 0;   // the most output_pending() ever was

    // ---- what the test controls ----
    // Bytes the stream takes ("writes") at once; the rest stays pending
    // until drain(). SIZE_MAX: everything at once.
    size_t window = SIZE_MAX;
    http::Request* req = nullptr;
    std::string request_body;  // what read_body() hands over, in one piece
    // The PROXY protocol header the "connection" began with (owner: the test).
    const http::ProxyHeader* proxy = nullptr;

    std::string field(std::string_view name) const {
        for (const auto& [n, v] : fields)
            if (iequals(n, name)) return v;
        return {};
    }
    bool has_field(std::string_view name) const {
        for (const auto& [n, v] : fields)
            if (iequals(n, name)) return true;
        return false;
    }

    // The client read `n` more bytes: they leave the queue, and if it
    // empties the request path hears it from the loop.
    void drain(size_t n = SIZE_MAX) {
        size_t take = std::min(n, pending_.size());
        body.append(pending_, 0, take);
        pending_.erase(0, take);
        if (pending_.empty()) {
            if (pending_end_) finish();
            else if (req) site_.loop->post(drain_ev_);
        }
    }

    // ---- http::Stream ----
    const sockaddr* peer_sockaddr() const override { return reinterpret_cast<const sockaddr*>(&peer_); }
    std::string_view peer_text() const override { return "192.0.2.7"; }
    uint16_t peer_port() const override { return 51234; }
    std::string_view local_text() override { return "127.0.0.1"; }
    uint16_t local_port() override { return 8080; }
    tls::Session* tls() const override { return nullptr; }
    bool plain_on_tls_port() const override { return false; }
    uint64_t connection_number() const override { return 42; }
    uint32_t connection_requests() const override { return 1; }
    event::Msec connection_start() const override { return 1000; }
    const http::AddrServers& servers() override { return site_.servers(); }
    const http::ProxyHeader* proxy_protocol() const override { return proxy; }

    http::Flow send_head(http::Request&, const http::ResponseHead& h) override {
        REQUIRE_FALSE(head_sent);
        head_sent = true;
        status = h.status;
        reason = std::string(h.reason);
        if (!h.content_type.empty()) fields.emplace_back("Content-Type", h.content_type);
        if (h.content_length) fields.emplace_back("Content-Length", std::to_string(*h.content_length));
        if (!h.sent_location.empty()) fields.emplace_back("Location", h.sent_location);
        if (!h.etag.empty()) fields.emplace_back("ETag", h.etag);
        for (const auto& x : h.headers) fields.emplace_back(x.name, x.value);
        return http::Flow::Pass;
    }
    http::Flow send_body(http::Request&, Chain& in) override {
        if (aborted) return http::Flow::Fail;
        ++sends;
        for (Buf& b : in) {
            if (b.in_file()) {
                std::string s(b.size(), '\0');
                REQUIRE(::pread(b.fd, s.data(), s.size(), b.file_pos) == static_cast<ssize_t>(s.size()));
                pending_ += s;
            } else {
                pending_.append(b.view());
            }
            if (b.last_buf) pending_end_ = true;
        }
        in.clear();
        // What fits the window goes out now.
        size_t take = std::min(window, pending_.size());
        body.append(pending_, 0, take);
        pending_.erase(0, take);
        max_pending = std::max(max_pending, pending_.size());
        if (pending_.empty() && pending_end_) {
            finish();
        } else if (pending_.empty() && req && (req->output.held || req->output.drain_fn)) {
            // All written: whoever waits for room goes on from the loop,
            // as the HTTP/1 stream does.
            site_.loop->post(drain_ev_);
        }
        return http::Flow::Pass;
    }
    void flush() override {}
    size_t output_pending() const override { return pending_.size(); }
    void close_after() override { close_requested = true; }
    void abort() override { aborted = true; }
    bool closed() const override { return aborted; }
    bool read_body(http::Request& r, http::BodySink sink) override {
        if (body_taken_) return false;
        body_taken_ = true;
        Chain c(r.mem());
        if (!request_body.empty()) c.push(Buf::memory(r.arena().dup(request_body)));
        Buf end;
        end.last_buf = true;
        c.push(std::move(end));
        sink(r, c);
        return true;
    }
    void resume_body() override {}
    event::Duplex& open_tunnel(event::Callback, std::string_view*) override {
        FAIL("no tunnels in the test stream");
        __builtin_unreachable();
    }

private:
    void finish() {
        if (ended) return;
        ended = true;
        if (req) {
            req->done = true;
            http::run_log_phase(*req);
            finished = true;
        }
    }
    static void on_drain(TestStream* s) {
        if (s->req && !s->aborted && s->pending_.empty()) http::output_drained(*s->req);
    }

    Site& site_;
    sockaddr_storage peer_{};
    std::string pending_;
    bool pending_end_ = false;
    bool body_taken_ = false;
    event::Event drain_ev_{event::Callback::to<&TestStream::on_drain>(this)};
};

// One request on a TestStream: the head parsed as the HTTP/1 front-end
// parses it, then the neutral path.
class Exchange {
public:
    Exchange(Site& s, std::string head) : site_(s), stream(s), raw_(std::move(head)) {
        http::Limits lim;
        parser_ = std::make_unique<http::RequestParser>(lim, std::span<http::HeaderField>(fields_));
        http::ParseResult pr = parser_->parse(raw_);
        REQUIRE_MESSAGE(pr.state == http::ParseState::Done, "the test's request head must parse");
        const http::RequestHead& h = parser_->head();
        req = std::make_unique<http::Request>(stream, s.main().main_confs, stream.servers().default_server);
        stream.req = req.get();
        http::Request& r = *req;
        r.in = h;
        r.headers.reset(h.headers);
        r.method = h.method_name;
        r.http_version = h.version_minor == 0 ? 10 : 11;
        r.head_only = h.method == http::Method::Head;
        r.content_length = h.framing.content_length;
        r.has_body = h.framing.chunked || r.content_length.value_or(0) > 0;
        r.request_line = std::string_view(raw_).substr(0, raw_.find("\r\n"));
        r.unparsed_uri = h.form == http::TargetForm::Absolute ? h.path : h.target;
    }
    ~Exchange() {
        stream.req = nullptr;
        req.reset();
        site_.settle();
    }

    // Starts the request and runs the loop until it is idle.
    Exchange& run() {
        http::start_request(*req);
        site_.settle();
        return *this;
    }
    // A client that takes `step` bytes per drain, until the body ends
    // (bounded rounds).
    void read_slowly(size_t step) {
        for (size_t rounds = 0; !stream.ended && !stream.aborted && rounds < 1000000; ++rounds) {
            stream.drain(step);
            site_.settle();
        }
    }
    int status() const { return stream.status; }
    const std::string& body() const { return stream.body; }
    http::Request& r() { return *req; }

    Site& site_;
    TestStream stream;
    std::unique_ptr<http::Request> req;

private:
    std::string raw_;
    http::HeaderField fields_[32];
    std::unique_ptr<http::RequestParser> parser_;
};

}  // namespace gatehouse::test
