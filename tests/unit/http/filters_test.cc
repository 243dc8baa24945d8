// Response filters that pause (fwd.h): the example filters of the
// contract, run through the real filter engine (output.cc) on a
// TestStream.
//
//   throttle   passes at most four bytes per call and holds the rest: it
//              is called again when the stream has written what it had
//   generator  turns each input chain into much more output, checking
//              output_busy(): a slow client bounds what waits for it
//   later      a header filter that holds the head until a timer fires,
//              then resumes the response itself with resume_output()
#include <doctest/doctest.h>

#include <string>

#include "test_stream.h"

using gatehouse::Buf;
using gatehouse::Chain;
using gatehouse::test::Exchange;
using gatehouse::test::Site;
namespace http = gatehouse::http;
namespace event = gatehouse::event;

namespace {

// ---- throttle: at most kStep bytes per call -------------------------------------

constexpr size_t kStep = 4;
int throttle_calls = 0;

http::Flow throttle(http::Request&, Chain& in, Chain& out) {
    ++throttle_calls;
    size_t budget = kStep;
    while (!in.empty()) {
        Buf& b = in.front();
        if (b.empty()) {  // the end, or a flush
            out.push(std::move(b));
            in.erase_front(1);
            continue;
        }
        if (budget == 0) break;
        size_t take = std::min(budget, b.size());
        if (take == b.size()) {
            out.push(std::move(b));
            in.erase_front(1);
        } else {
            Buf part = Buf::memory(b.view().substr(0, take));
            part.slab = b.slab;
            out.push(std::move(part));
            b.pos += take;
        }
        budget -= take;
    }
    // What is left stays in `in`, queued for us: Hold, and the engine calls
    // again once the stream drained.
    return in.empty() ? http::Flow::Pass : http::Flow::Hold;
}

// ---- generator: 16 KiB of output per input byte, paced by output_busy() ------

constexpr size_t kPiece = 16 * 1024;
size_t generated = 0;
size_t to_generate = 0;
bool generator_saw_last = false;
std::string piece_text(kPiece, 'g');

http::Flow generator(http::Request& r, Chain& in, Chain& out) {
    for (Buf& b : in) {
        to_generate += b.size() * kPiece;
        if (b.last_buf) generator_saw_last = true;
    }
    in.clear();
    // Bounded work per call, and none while the client is behind.
    for (int i = 0; i < 8 && generated < to_generate && !http::output_busy(r); ++i) {
        out.push(Buf::memory(piece_text));
        generated += kPiece;
    }
    if (generated < to_generate) return http::Flow::Hold;
    if (generator_saw_last) {
        Buf end;
        end.last_buf = true;
        out.push(std::move(end));
        generator_saw_last = false;
    }
    return http::Flow::Pass;
}

// ---- later: the head waits for a timer ----------------------------------------------

event::Timer later_timer;
http::Request* later_req = nullptr;
bool later_ready = false;

void later_fire(void*) {
    later_ready = true;
    // Our own work is done: the engine runs the filters again.
    http::resume_output(*later_req);
}

http::Flow later(http::Request& r, http::ResponseHead& h) {
    if (!later_ready) {
        later_req = &r;
        later_timer.cb = {later_fire, nullptr};
        gatehouse::event::worker_loop().arm(later_timer, std::chrono::milliseconds(100));
        return http::Flow::Hold;
    }
    h.headers.push_back({"X-Later", "yes"});
    return http::Flow::Pass;
}

}  // namespace

TEST_CASE("http/filters: a body filter that holds is resumed when the stream drains") {
    Site s(R"(server { listen 127.0.0.1:8080; location / { return 200 "0123456789abcdefghij"; } })");
    s.main().body_filters.push_back({throttle});
    throttle_calls = 0;
    Exchange x(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    REQUIRE(x.stream.ended);
    CHECK(x.body() == "0123456789abcdefghij");
    // Five pieces of four bytes: five calls at least, each after a drain.
    CHECK(throttle_calls >= 5);
    CHECK(x.stream.sends >= 5);
    CHECK(x.stream.finished);
}

TEST_CASE("http/filters: a producing filter sees back-pressure and keeps memory bounded") {
    Site s(R"(server { listen 127.0.0.1:8080; location / { return 200 "abcdefghijklmnop"; } })");
    s.main().body_filters.push_back({generator});
    generated = to_generate = 0;
    generator_saw_last = false;
    Exchange x(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.stream.window = 4096;  // a slow client
    x.run();
    // 16 input bytes: 256 KiB to produce, far more than may wait.
    size_t rounds = 0;
    while (!x.stream.ended && rounds++ < 10000) {
        x.stream.drain(8192);
        s.settle();
    }
    REQUIRE(x.stream.ended);
    CHECK(x.body().size() == 16 * kPiece);
    CHECK(x.body() == std::string(16 * kPiece, 'g'));
    // Never much more than the busy mark waited for the client.
    CHECK(x.stream.max_pending <= http::kOutputBusy + 8 * kPiece);
}

TEST_CASE("http/filters: a header filter holds the head until its own work is ready") {
    Site s(R"(server { listen 127.0.0.1:8080; location / { return 200 "body"; } })");
    s.main().header_filters.push_back({later});
    later_ready = false;
    Exchange x(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    x.run();
    // Held: nothing went out, the body waits behind the head.
    CHECK_FALSE(x.stream.head_sent);
    CHECK(x.body().empty());
    CHECK(http::output_pending(x.r()) == 4);
    s.advance(std::chrono::milliseconds(100));
    REQUIRE(x.stream.head_sent);
    CHECK(x.stream.field("X-Later") == "yes");
    CHECK(x.body() == "body");
    CHECK(x.stream.ended);
    s.loop->cancel(later_timer);
}
