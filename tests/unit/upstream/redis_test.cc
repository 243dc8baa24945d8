#include "upstream/redis.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "event/clock.h"
#include "event/loop.h"

using namespace gatehouse;
using upstream::RedisClient;
using upstream::RedisSpec;

namespace {

// A Redis server on loopback played by the test: it accepts the client,
// reads what it sends and writes the replies the test gives, raw RESP.
struct FakeRedis {
    int lfd = -1;
    int conn = -1;
    uint16_t port = 0;

    FakeRedis() {
        lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(lfd >= 0);
        int one = 1;
        ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
        REQUIRE(::listen(lfd, 4) == 0);
        socklen_t len = sizeof sin;
        REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
        port = ntohs(sin.sin_port);
    }
    ~FakeRedis() {
        if (conn >= 0) ::close(conn);
        ::close(lfd);
    }
    // Accepts the next connection if one is waiting.
    bool accept_one() {
        pollfd p{lfd, POLLIN, 0};
        if (::poll(&p, 1, 0) != 1) return false;
        if (conn >= 0) ::close(conn);
        conn = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        return conn >= 0;
    }
    // What the client sent so far (non-blocking).
    std::string read_some() {
        std::string out;
        char buf[4096];
        for (;;) {
            pollfd p{conn, POLLIN, 0};
            if (::poll(&p, 1, 0) != 1) break;
            ssize_t n = ::recv(conn, buf, sizeof buf, 0);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }
    void reply(std::string_view s) { REQUIRE(::send(conn, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size())); }
    void drop() {
        ::close(conn);
        conn = -1;
    }
};

struct Fixture {
    event::FakeClock clock;
    std::unique_ptr<event::Loop> loop;
    FakeRedis redis;
    RedisSpec spec;
    std::unique_ptr<RedisClient> client;

    Fixture(std::string password = "", std::string user = "") {
        auto l = event::Loop::create(clock);
        REQUIRE(l.ok());
        loop = std::move(l).value();
        spec.name = "r";
        spec.host = "127.0.0.1";
        spec.port = redis.port;
        spec.text = "127.0.0.1:" + std::to_string(redis.port);
        spec.password = std::move(password);
        spec.user = std::move(user);
        client = std::make_unique<RedisClient>(*loop, spec);
    }
    ~Fixture() {
        client.reset();
        loop->run_deferred();
    }
    // Runs the loop (real time, bounded) until pred() holds.
    template <typename P>
    bool spin(P pred) {
        for (int i = 0; i < 300; ++i) {
            if (pred()) return true;
            loop->run_once(5);
        }
        return pred();
    }
    std::string read_until(std::string_view what) {
        std::string got;
        spin([&] {
            got += redis.read_some();
            return got.find(what) != std::string::npos;
        });
        return got;
    }
};

struct Got {
    int calls = 0;
    bool null = false;
    std::string text;
    static void fn(void* p, redisReply* r) {
        auto* g = static_cast<Got*>(p);
        ++g->calls;
        g->null = r == nullptr;
        if (r && r->str) g->text.assign(r->str, r->len);
        if (r && r->type == REDIS_REPLY_INTEGER) g->text = std::to_string(r->integer);
    }
};

}  // namespace

TEST_CASE("upstream/redis: connects on start, pipelines commands, answers from the loop") {
    Fixture f;
    CHECK_FALSE(f.client->ready());
    std::string_view ping[] = {"PING"};
    CHECK_FALSE(f.client->command(ping, Got::fn, nullptr));  // not started: nothing sent
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    CHECK_FALSE(f.client->down());

    Got a, b;
    std::string_view get[] = {"GET", std::string_view("k\0ey", 4)};  // binary-safe
    std::string_view incr[] = {"INCRBY", "n", "5"};
    REQUIRE(f.client->command(get, Got::fn, &a));
    REQUIRE(f.client->command(incr, Got::fn, &b));
    CHECK(f.client->in_flight() == 2);
    CHECK(a.calls == 0);  // never from inside command()
    const std::string sent = f.read_until("$1\r\n5\r\n");
    CHECK(sent == std::string("*2\r\n$3\r\nGET\r\n$4\r\nk\0ey\r\n", 23) + "*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$1\r\n5\r\n");
    f.redis.reply("$5\r\nhello\r\n:7\r\n");
    REQUIRE(f.spin([&] { return b.calls == 1; }));
    CHECK(a.calls == 1);
    CHECK(a.text == "hello");
    CHECK(b.text == "7");
    CHECK(f.client->in_flight() == 0);
}

TEST_CASE("upstream/redis: AUTH with a user before anything else; refused AUTH is not ready") {
    Fixture f("secret", "gh");
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    CHECK(f.read_until("secret\r\n") == "*3\r\n$4\r\nAUTH\r\n$2\r\ngh\r\n$6\r\nsecret\r\n");
    CHECK_FALSE(f.client->ready());
    f.redis.reply("-WRONGPASS invalid username-password pair\r\n");
    // The connection goes and a retry waits for the backoff.
    REQUIRE(f.spin([&] { return f.client->down(); }));
    CHECK_FALSE(f.client->ready());
    f.clock.advance(upstream::kRedisBackoffMin);
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    CHECK(f.read_until("secret\r\n") == "*3\r\n$4\r\nAUTH\r\n$2\r\ngh\r\n$6\r\nsecret\r\n");
    f.redis.reply("+OK\r\n");
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    CHECK_FALSE(f.client->down());
}

TEST_CASE("upstream/redis: a reply past the timeout fails the command and reconnects") {
    Fixture f;
    f.spec.timeout = std::chrono::milliseconds(50);
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    Got a;
    std::string_view ping[] = {"PING"};
    REQUIRE(f.client->command(ping, Got::fn, &a));
    f.read_until("PING\r\n");
    f.clock.advance(49);
    f.loop->run_once(0);
    CHECK(a.calls == 0);
    f.clock.advance(1);
    REQUIRE(f.spin([&] { return a.calls == 1; }));
    CHECK(a.null);
    CHECK(f.client->down());
    CHECK_FALSE(f.client->ready());
    CHECK_FALSE(f.client->command(ping, Got::fn, &a));
    // Back after the backoff, on a new connection.
    f.clock.advance(upstream::kRedisBackoffMin);
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
}

TEST_CASE("upstream/redis: a lost connection fails what is in flight; destroying fails the rest") {
    Fixture f;
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    Got a;
    std::string_view ping[] = {"PING"};
    REQUIRE(f.client->command(ping, Got::fn, &a));
    f.read_until("PING\r\n");
    f.redis.drop();
    REQUIRE(f.spin([&] { return a.calls == 1; }));
    CHECK(a.null);
    CHECK(f.client->down());

    f.clock.advance(upstream::kRedisBackoffMin);
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    Got b;
    REQUIRE(f.client->command(ping, Got::fn, &b));
    f.client.reset();
    CHECK(b.calls == 1);
    CHECK(b.null);
}

TEST_CASE("upstream/redis: replies split anywhere, or many in one read, come out whole and in order") {
    Fixture f;
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    Got a, b, c;
    std::string_view get[] = {"GET", "k"};
    REQUIRE(f.client->command(get, Got::fn, &a));
    REQUIRE(f.client->command(get, Got::fn, &b));
    REQUIRE(f.client->command(get, Got::fn, &c));
    f.read_until("k\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2");
    f.redis.reply("$5\r\nhel");
    f.loop->run_once(5);
    CHECK(a.calls == 0);  // half a reply is no reply
    f.redis.reply("lo\r\n:1\r\n$");
    REQUIRE(f.spin([&] { return b.calls == 1; }));
    CHECK(a.text == "hello");
    CHECK(b.text == "1");
    CHECK(c.calls == 0);
    f.redis.reply("-1\r\n");
    REQUIRE(f.spin([&] { return c.calls == 1; }));
    CHECK_FALSE(c.null);  // a null bulk string is a reply (REDIS_REPLY_NIL)
    CHECK(f.client->in_flight() == 0);
    CHECK(f.client->ready());
}

TEST_CASE("upstream/redis: a reply that is not RESP, or not asked for, drops the connection") {
    Fixture f;
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    Got a;
    std::string_view ping[] = {"PING"};
    REQUIRE(f.client->command(ping, Got::fn, &a));
    f.read_until("PING\r\n");
    f.redis.reply("?what\r\n");
    REQUIRE(f.spin([&] { return a.calls == 1; }));
    CHECK(a.null);
    CHECK(f.client->down());

    f.clock.advance(upstream::kRedisBackoffMin);
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    f.redis.reply("+PONG\r\n");  // nobody asked
    REQUIRE(f.spin([&] { return !f.client->ready(); }));
    CHECK(f.client->down());
}

TEST_CASE("upstream/redis: commands of one iteration leave in one write") {
    Fixture f;
    f.client->start();
    REQUIRE(f.spin([&] { return f.redis.accept_one(); }));
    REQUIRE(f.spin([&] { return f.client->ready(); }));
    Got a, b;
    std::string_view ping[] = {"PING"};
    REQUIRE(f.client->command(ping, Got::fn, &a));
    REQUIRE(f.client->command(ping, Got::fn, &b));
    CHECK(f.redis.read_some().empty());  // nothing before the loop runs
    CHECK(f.read_until("PING\r\n*1\r\n$4\r\nPING\r\n") == "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
}
