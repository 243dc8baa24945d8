#include <doctest/doctest.h>

#include <cstring>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "event/loop.h"

using namespace gatehouse::event;
using namespace std::chrono_literals;

namespace {

// A non-blocking AF_UNIX stream socketpair, closed on scope exit unless a
// Watcher took the fd over (set to -1).
struct Pair {
    Pair() {
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd) == 0);
    }
    ~Pair() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
    int fd[2];
};

std::unique_ptr<Loop> make_loop(const Clock& c) {
    auto l = Loop::create(c);
    REQUIRE(l.ok());
    return std::move(l).value();
}

void put(int fd, const char* s) { REQUIRE(::write(fd, s, strlen(s)) == static_cast<ssize_t>(strlen(s))); }

// Reads until EAGAIN, as an edge-triggered owner must.
std::string drain(Watcher& w) {
    std::string out;
    char buf[256];
    for (;;) {
        ssize_t n = ::read(w.fd(), buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EAGAIN) w.clear_readable();
        return out;
    }
}

// Records which handler ran, in order, into a shared trace.
struct Trace {
    std::vector<std::string> log;
};

struct Io {
    Io(Trace& t, std::string name) : trace(t), name(std::move(name)) {
        w.on_read = Callback::to<&Io::read>(this);
        w.on_write = Callback::to<&Io::write>(this);
    }
    void read() {
        trace.log.push_back(name + ".read");
        ++reads;
        if (then) then(this);
    }
    void write() {
        trace.log.push_back(name + ".write");
        ++writes;
    }
    Trace& trace;
    std::string name;
    int reads = 0;
    int writes = 0;
    void (*then)(Io*) = nullptr;
    Loop* loop = nullptr;  // for `then`
    Io* other = nullptr;   // for `then`
    int spare_fd = -1;     // for `then`
    Watcher w;
};

struct Step {
    Step(Trace& t, std::string name) : trace(t), name(std::move(name)) {
        ev.cb = Callback::to<&Step::run>(this);
        timer.cb = Callback::to<&Step::run>(this);
    }
    void run() {
        trace.log.push_back(name);
        if (then) then(this);
    }
    Trace& trace;
    std::string name;
    void (*then)(Step*) = nullptr;
    Loop* loop = nullptr;
    Step* other = nullptr;
    Event ev;
    Timer timer;
};

}  // namespace

namespace {
void bump(int* n) { ++*n; }
struct Counter {
    void hit() { ++n; }
    int n = 0;
};
}  // namespace

TEST_CASE("event/loop: Callback::to binds a member function or a free function") {
    Counter c;
    int n = 0;
    Callback m = Callback::to<&Counter::hit>(&c);
    Callback f = Callback::to<&bump>(&n);
    CHECK(m);
    CHECK_FALSE(Callback{});
    m();
    m();
    f();
    CHECK(c.n == 2);
    CHECK(n == 1);
    static_assert(sizeof(Callback) == 2 * sizeof(void*));
}

TEST_CASE("event/loop: the wait is bounded by the nearest timer and by pending work") {
    FakeClock clock(1000);
    auto loop = make_loop(clock);
    Trace tr;
    Step s(tr, "s");
    CHECK(loop->wait_timeout() == -1);
    CHECK(loop->wait_timeout(70) == 70);

    loop->arm(s.timer, 250ms);
    CHECK(s.timer.deadline() == 1250);
    CHECK(loop->wait_timeout() == 250);
    CHECK(loop->wait_timeout(70) == 70);
    clock.advance(100);
    CHECK(loop->wait_timeout() == 250);  // now() is cached until the loop updates it
    loop->update_time();
    CHECK(loop->wait_timeout() == 150);
    clock.advance(1000);
    loop->update_time();
    CHECK(loop->wait_timeout() == 0);  // overdue
    loop->cancel(s.timer);

    loop->post(s.ev);
    CHECK(loop->wait_timeout() == 0);
    loop->unpost(s.ev);
    CHECK(loop->wait_timeout() == -1);
    loop->defer(Callback::to<&Step::run>(&s));
    CHECK(loop->wait_timeout() == 0);
    loop->run_deferred();
    CHECK(tr.log == std::vector<std::string>{"s"});
    CHECK(loop->wait_timeout() == -1);
}

TEST_CASE("event/loop: timers fire on the fake clock, in order, with one now per iteration") {
    FakeClock clock(1000);
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a"), b(tr, "b"), c(tr, "c");
    loop->arm(c.timer, 30ms);
    loop->arm(a.timer, 10ms);
    loop->arm(b.timer, 20ms);

    clock.advance(9);
    loop->run_once(0);
    CHECK(tr.log.empty());
    clock.advance(11);  // 1020: a and b due
    loop->run_once(0);
    CHECK(tr.log == std::vector<std::string>{"a", "b"});
    CHECK(loop->now() == 1020);

    // A timer armed from a callback counts from the iteration's now().
    c.loop = loop.get();
    c.other = &a;
    c.then = [](Step* s) { s->loop->arm(s->other->timer, 5ms); };
    clock.advance(10);
    loop->run_once(0);
    CHECK(tr.log == std::vector<std::string>{"a", "b", "c"});
    CHECK(a.timer.deadline() == 1035);
}

TEST_CASE("event/loop: posted events run in order, once, and can be unposted") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a"), b(tr, "b"), c(tr, "c");
    loop->post(a.ev);
    loop->post(b.ev);
    loop->post(a.ev);  // already posted: keeps its place
    loop->post(c.ev);
    CHECK(a.ev.posted());
    loop->unpost(c.ev);
    loop->unpost(c.ev);
    CHECK_FALSE(c.ev.posted());
    loop->run_once(0);
    CHECK(tr.log == std::vector<std::string>{"a", "b"});
    CHECK_FALSE(a.ev.posted());
    loop->run_once(0);
    CHECK(tr.log.size() == 2);
}

TEST_CASE("event/loop: events posted by posted events run a few rounds deep, then wait") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a"), b(tr, "b"), c(tr, "c");
    a.loop = b.loop = loop.get();
    a.other = &c;
    a.then = [](Step* s) { s->loop->post(s->other->ev); };
    b.then = [](Step* s) { s->loop->post(s->ev); };  // re-posts itself
    loop->post(a.ev);
    loop->post(b.ev);
    loop->run_once(0);
    // c (posted by a) runs in the same iteration; b re-posting itself runs
    // once per round, 4 rounds, then waits for the next iteration.
    CHECK(tr.log == std::vector<std::string>{"a", "b", "c", "b", "b", "b"});
    CHECK(b.ev.posted());
    CHECK(loop->wait_timeout() == 0);
    loop->run_once(0);
    CHECK(tr.log.size() == 10);
}

TEST_CASE("event/loop: what an I/O handler posts runs before the next handler; post_after_batch after all") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p, q;
    Trace tr;
    Io a(tr, "a"), b(tr, "b");
    Step a_next(tr, "a.next"), b_next(tr, "b.next"), flush(tr, "flush");
    // Captureless handlers reach the steps through these.
    static Step* next_of_a;
    static Step* next_of_b;
    static Step* batch_flush;
    next_of_a = &a_next;
    next_of_b = &b_next;
    batch_flush = &flush;
    a.loop = b.loop = loop.get();
    a.then = b.then = [](Io* io) {
        io->loop->post(io->name == "a" ? next_of_a->ev : next_of_b->ev);
        io->loop->post_after_batch(batch_flush->ev);  // twice: runs once
    };
    a.w.set_fd(p.fd[0]);
    b.w.set_fd(q.fd[0]);
    REQUIRE(loop->add(a.w, Interest::Read).ok());
    REQUIRE(loop->add(b.w, Interest::Read).ok());
    put(p.fd[1], "x");
    put(q.fd[1], "y");
    loop->run_once(1000);
    // epoll orders the two watchers as it likes; each one's posted step
    // follows it at once, and the batch's writer comes after both.
    REQUIRE(tr.log.size() == 5);
    const bool a_first = tr.log[0] == "a.read";
    CHECK(tr.log == std::vector<std::string>{a_first ? "a.read" : "b.read", a_first ? "a.next" : "b.next",
                                             a_first ? "b.read" : "a.read", a_first ? "b.next" : "a.next",
                                             "flush"});
    CHECK(loop->wait_timeout() == -1);
    loop->remove(a.w);
    loop->remove(b.w);
}

TEST_CASE("event/loop: after the batch, posted events go first; a job re-posted after it runs 4 rounds") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step job(tr, "job"), a(tr, "a"), b(tr, "b");
    job.loop = a.loop = loop.get();
    job.then = [](Step* s) { s->loop->post_after_batch(s->ev); };  // one more chunk, later
    a.other = &b;
    a.then = [](Step* s) { s->loop->post(s->other->ev); };
    loop->post_after_batch(job.ev);
    loop->post(a.ev);
    CHECK(loop->wait_timeout() == 0);
    loop->run_once(0);
    // Round 1: a, then the job behind it; round 2: b (posted by a), then
    // the job again; rounds 3 and 4: the job; then the next iteration.
    CHECK(tr.log == std::vector<std::string>{"a", "job", "b", "job", "job", "job"});
    CHECK(job.ev.posted());
    CHECK(loop->wait_timeout() == 0);
    loop->unpost(job.ev);
    CHECK(loop->wait_timeout() == -1);
}

TEST_CASE("event/loop: a posted event may unpost one later in the same batch") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a"), b(tr, "b");
    a.loop = loop.get();
    a.other = &b;
    a.then = [](Step* s) { s->loop->unpost(s->other->ev); };
    loop->post(a.ev);
    loop->post(b.ev);
    loop->run_once(0);
    CHECK(tr.log == std::vector<std::string>{"a"});
}

TEST_CASE("event/loop: a destroyed event is unposted") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a");
    {
        Step gone(tr, "gone");
        loop->post(gone.ev);
        loop->post(a.ev);
    }
    loop->run_once(0);
    CHECK(tr.log == std::vector<std::string>{"a"});
}

namespace {

// An object that closes itself from its own read handler, as a connection
// does on EOF: the loop must destroy it only after the handler returns.
struct SelfClosing {
    SelfClosing(Loop& loop, int fd, bool& destroyed, bool& alive_after_close)
        : loop(loop), destroyed(destroyed), alive_after_close(alive_after_close) {
        w.set_fd(fd);
        w.on_read = Callback::to<&SelfClosing::on_read>(this);
    }
    ~SelfClosing() { destroyed = true; }
    void on_read() {
        loop.close(w);
        loop.defer({[](void* p) { static_cast<std::optional<SelfClosing>*>(p)->reset(); }, slot});
        // Still in our own frame: members must be intact.
        alive_after_close = !destroyed && w.fd() == -1;
    }
    Loop& loop;
    bool& destroyed;
    bool& alive_after_close;
    std::optional<SelfClosing>* slot = nullptr;
    Watcher w;
};

}  // namespace

TEST_CASE("event/loop: what a callback closes is destroyed after the iteration") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p;
    bool destroyed = false, alive = false;
    std::optional<SelfClosing> obj;
    obj.emplace(*loop, p.fd[0], destroyed, alive);
    obj->slot = &obj;
    p.fd[0] = -1;  // the watcher owns it now
    REQUIRE(loop->add(obj->w, Interest::Read).ok());

    // Deferred callbacks run last: after timers and posted events.
    Trace tr;
    Step t(tr, "timer"), e(tr, "posted");
    loop->arm(t.timer, 0ms);
    loop->post(e.ev);
    loop->defer({[](void* p) { static_cast<Trace*>(p)->log.push_back("deferred"); }, &tr});

    put(p.fd[1], "x");
    loop->run_once(1000);
    CHECK(alive);
    CHECK(destroyed);
    CHECK_FALSE(obj.has_value());
    CHECK(tr.log == std::vector<std::string>{"timer", "posted", "deferred"});
}

TEST_CASE("event/loop: what a deferred callback defers runs in the same step") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a"), b(tr, "b");
    a.loop = loop.get();
    a.other = &b;
    a.then = [](Step* s) { s->loop->defer(Callback::to<&Step::run>(s->other)); };
    loop->defer(Callback::to<&Step::run>(&a));
    loop->run_once(0);
    CHECK(tr.log == std::vector<std::string>{"a", "b"});
    CHECK(loop->wait_timeout() == -1);
}

TEST_CASE("event/loop: read readiness is edge-triggered") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p;
    Trace tr;
    Io io(tr, "r");
    io.w.set_fd(p.fd[0]);
    REQUIRE(loop->add(io.w, Interest::Read).ok());
    CHECK(io.w.registered());

    loop->run_once(0);
    CHECK(io.reads == 0);
    CHECK_FALSE(io.w.readable());

    put(p.fd[1], "ab");
    loop->run_once(1000);
    CHECK(io.reads == 1);
    CHECK(io.w.readable());
    // Not drained, but no new data: no new edge, no new call.
    loop->run_once(0);
    CHECK(io.reads == 1);

    put(p.fd[1], "c");
    loop->run_once(1000);
    CHECK(io.reads == 2);
    CHECK(drain(io.w) == "abc");
    CHECK_FALSE(io.w.readable());
    CHECK(io.writes == 0);  // registered for read only
    loop->remove(io.w);
}

TEST_CASE("event/loop: write readiness is reported once, on registration") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p;
    Trace tr;
    Io io(tr, "rw");
    io.w.set_fd(p.fd[0]);
    REQUIRE(loop->add(io.w, Interest::ReadWrite).ok());
    loop->run_once(1000);
    CHECK(io.writes == 1);
    CHECK(io.w.writable());
    loop->run_once(0);
    CHECK(io.writes == 1);
    loop->remove(io.w);
}

TEST_CASE("event/loop: modify changes the interest") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p;
    Trace tr;
    Io io(tr, "m");
    io.w.set_fd(p.fd[0]);
    REQUIRE(loop->add(io.w, Interest::Read).ok());
    loop->run_once(0);
    CHECK(io.writes == 0);
    REQUIRE(loop->modify(io.w, Interest::ReadWrite).ok());
    loop->run_once(1000);
    CHECK(io.writes == 1);
    loop->remove(io.w);
}

TEST_CASE("event/loop: a peer closing shows as readiness, then EOF") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p;
    Trace tr;
    Io io(tr, "h");
    io.w.set_fd(p.fd[0]);
    REQUIRE(loop->add(io.w, Interest::ReadWrite).ok());
    loop->run_once(1000);  // the initial write readiness
    put(p.fd[1], "bye");
    ::close(p.fd[1]);
    p.fd[1] = -1;
    loop->run_once(1000);
    CHECK(io.reads == 1);
    CHECK(io.w.peer_closed());
    char buf[16];
    CHECK(::read(p.fd[0], buf, sizeof buf) == 3);
    CHECK(::read(p.fd[0], buf, sizeof buf) == 0);
    loop->remove(io.w);
}

TEST_CASE("event/loop: a removed or closed watcher gets no more calls") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p, q;
    Trace tr;
    Io a(tr, "a"), b(tr, "b");
    a.w.set_fd(p.fd[0]);
    b.w.set_fd(q.fd[0]);
    q.fd[0] = -1;
    REQUIRE(loop->add(a.w, Interest::Read).ok());
    REQUIRE(loop->add(b.w, Interest::Read).ok());
    loop->remove(a.w);
    loop->close(b.w);
    CHECK_FALSE(a.w.registered());
    CHECK(a.w.fd() == p.fd[0]);  // remove() leaves the fd open
    CHECK(b.w.fd() == -1);
    put(p.fd[1], "x");
    loop->run_once(0);
    CHECK(a.reads == 0);
    CHECK(b.reads == 0);
}

TEST_CASE("event/loop: a watcher closed earlier in the same batch gets no call") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p, q;
    Trace tr;
    Io a(tr, "a"), b(tr, "b");
    a.w.set_fd(p.fd[0]);
    b.w.set_fd(q.fd[0]);
    p.fd[0] = q.fd[0] = -1;
    a.loop = b.loop = loop.get();
    a.other = &b;
    b.other = &a;
    // Whichever runs first closes the other, whose event is in the batch.
    a.then = b.then = [](Io* io) { io->loop->close(io->other->w); };
    REQUIRE(loop->add(a.w, Interest::Read).ok());
    REQUIRE(loop->add(b.w, Interest::Read).ok());
    put(p.fd[1], "x");
    put(q.fd[1], "y");
    loop->run_once(1000);
    CHECK(a.reads + b.reads == 1);
    loop->close(a.reads ? a.w : b.w);
}

TEST_CASE("event/loop: a stale event does not reach the watcher's new registration") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Pair p, q, fresh;
    Trace tr;
    Io a(tr, "a"), b(tr, "b");
    a.w.set_fd(p.fd[0]);
    b.w.set_fd(q.fd[0]);
    p.fd[0] = q.fd[0] = -1;
    a.loop = b.loop = loop.get();
    a.other = &b;
    b.other = &a;
    a.spare_fd = b.spare_fd = fresh.fd[0];
    fresh.fd[0] = -1;
    // Whichever runs first closes the other and re-registers it on a new,
    // quiet fd (an upstream retry does this): the old event must be lost.
    a.then = b.then = [](Io* io) {
        if (io->spare_fd < 0) return;
        Watcher& w = io->other->w;
        io->loop->close(w);
        w.set_fd(io->spare_fd);
        io->spare_fd = io->other->spare_fd = -1;
        REQUIRE(io->loop->add(w, Interest::Read).ok());
    };
    REQUIRE(loop->add(a.w, Interest::Read).ok());
    REQUIRE(loop->add(b.w, Interest::Read).ok());
    put(p.fd[1], "x");
    put(q.fd[1], "y");
    loop->run_once(1000);
    CHECK(a.reads + b.reads == 1);
    CHECK(a.w.registered());
    CHECK(b.w.registered());
    loop->close(a.w);
    loop->close(b.w);
}

namespace {
volatile sig_atomic_t g_got_usr1 = 0;
void on_usr1(int) { g_got_usr1 = 1; }
}  // namespace

TEST_CASE("event/loop: a signal interrupts the wait and is reported") {
    FakeClock clock;
    auto loop = make_loop(clock);

    struct sigaction sa {}, old_sa{};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, &old_sa) == 0);
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    REQUIRE(pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);

    // The worker's pattern: the signal is blocked while the loop runs and
    // raised then; it stays pending and interrupts the next wait.
    sigset_t wait_mask = old_mask;
    sigdelset(&wait_mask, SIGUSR1);
    loop->set_wait_sigmask(&wait_mask);
    g_got_usr1 = 0;
    raise(SIGUSR1);
    CHECK(g_got_usr1 == 0);
    CHECK(loop->run_once(5000) == Wake::Signal);
    CHECK(g_got_usr1 == 1);
    CHECK(loop->run_once(0) == Wake::Events);

    loop->set_wait_sigmask(nullptr);
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    sigaction(SIGUSR1, &old_sa, nullptr);
}

TEST_CASE("event/loop: run() iterates until stop(), calling after_each") {
    FakeClock clock;
    auto loop = make_loop(clock);
    Trace tr;
    Step a(tr, "a"), b(tr, "b");
    a.loop = b.loop = loop.get();
    a.other = &b;
    a.then = [](Step* s) { s->loop->post(s->other->ev); };
    b.then = [](Step* s) { s->loop->stop(); };
    loop->post(a.ev);
    int iterations = 0;
    loop->run({[](void* p) { ++*static_cast<int*>(p); }, &iterations});
    CHECK(loop->stopped());
    CHECK(iterations == 1);  // b, posted by a, runs in the same iteration
    CHECK(tr.log == std::vector<std::string>{"a", "b"});
}

TEST_CASE("event/loop: idle work runs once after activity and a quiet delay, not under load") {
    FakeClock clock(1000);
    auto loop = make_loop(clock);
    int idle = 0;
    loop->set_idle(Callback::to<&bump>(&idle), 1ms);
    // Due at start: the wait is capped by the delay, then it runs once.
    loop->run_once();
    CHECK(idle == 1);
    // Readiness is activity: no idle run in that iteration, one after
    // the next quiet delay.
    Pair p;
    Trace tr;
    Io io(tr, "r");
    io.w.set_fd(p.fd[0]);
    REQUIRE(loop->add(io.w, Interest::Read).ok());
    put(p.fd[1], "x");
    loop->run_once();
    CHECK(io.reads == 1);
    CHECK(idle == 1);
    loop->run_once();
    CHECK(idle == 2);
    // With no activity since, the wait is not capped: a timer is what
    // ends it, and firing is activity again.
    Trace fired;
    Step s(fired, "t");
    loop->arm(s.timer, 5ms);
    CHECK(loop->wait_timeout() == 5);
    clock.advance(5);
    loop->run_once(0);
    CHECK(fired.log == std::vector<std::string>{"t"});
    CHECK(idle == 2);
    loop->run_once();
    CHECK(idle == 3);
    loop->remove(io.w);
}
