#include "event/resolver.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/dns_message.h"
#include "event/clock.h"
#include "event/loop.h"

using namespace gatehouse;
using namespace std::chrono_literals;
using event::Resolve;
using event::ResolveError;
using event::ResolveQuery;
using event::Resolver;
using event::ResolverSpec;

namespace {

// A name server on loopback played by the test: it reads the resolver's
// queries and answers what the test says.
struct FakeServer {
    int udp = -1;
    int tcp = -1;
    uint16_t port = 0;

    FakeServer() {
        // TCP on the UDP port the kernel chose; another process may hold
        // that TCP port already, so a few ports are tried.
        for (int attempt = 0; attempt < 20 && tcp < 0; ++attempt) {
            if (udp >= 0) ::close(udp);
            udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            REQUIRE(udp >= 0);
            sockaddr_in sin{};
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            REQUIRE(::bind(udp, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0);
            socklen_t len = sizeof sin;
            REQUIRE(::getsockname(udp, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
            port = ntohs(sin.sin_port);
            tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            int one = 1;
            ::setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (::bind(tcp, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 || ::listen(tcp, 4) != 0) {
                ::close(tcp);
                tcp = -1;
            }
        }
    }
    ~FakeServer() {
        ::close(udp);
        if (tcp >= 0) ::close(tcp);
    }

    ResolverSpec::Server server() const {
        ResolverSpec::Server s;
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons(port);
        std::memcpy(&s.sa, &sin, sizeof sin);
        s.len = sizeof sin;
        s.text = "127.0.0.1:" + std::to_string(port);
        return s;
    }

    struct Query {
        std::vector<uint8_t> msg;
        sockaddr_storage from{};
        socklen_t from_len = sizeof from;
        uint16_t id() const { return static_cast<uint16_t>(msg[0] << 8 | msg[1]); }
        uint16_t qtype() const { return static_cast<uint16_t>(msg[msg.size() - 4] << 8 | msg[msg.size() - 3]); }
    };

    // The next query, waiting up to `ms`; empty msg when none came.
    Query next(int ms = 1000) {
        Query q;
        pollfd p{udp, POLLIN, 0};
        if (::poll(&p, 1, ms) != 1) return q;
        q.msg.resize(512);
        ssize_t n = ::recvfrom(udp, q.msg.data(), q.msg.size(), 0, reinterpret_cast<sockaddr*>(&q.from),
                               &q.from_len);
        q.msg.resize(n > 0 ? static_cast<size_t>(n) : 0);
        return q;
    }

    void reply(const Query& q, const std::vector<uint8_t>& answer) {
        ::sendto(udp, answer.data(), answer.size(), 0, reinterpret_cast<const sockaddr*>(&q.from), q.from_len);
    }
};

// The answer to `q`: its question echoed, then A/AAAA records pointing
// at the question's name.
std::vector<uint8_t> answer(const FakeServer::Query& q, uint8_t rcode, std::vector<std::vector<uint8_t>> addrs,
                            uint32_t ttl, uint16_t extra_flags = 0) {
    std::vector<uint8_t> a(q.msg);
    uint16_t flags = static_cast<uint16_t>(0x8180 | rcode | extra_flags);
    a[2] = static_cast<uint8_t>(flags >> 8);
    a[3] = static_cast<uint8_t>(flags);
    a[7] = static_cast<uint8_t>(addrs.size());
    for (const auto& ad : addrs) {
        uint16_t type = ad.size() == 4 ? 1 : 28;
        std::vector<uint8_t> rr = {0xc0, 12, static_cast<uint8_t>(type >> 8), static_cast<uint8_t>(type), 0, 1,
                                   static_cast<uint8_t>(ttl >> 24), static_cast<uint8_t>(ttl >> 16),
                                   static_cast<uint8_t>(ttl >> 8), static_cast<uint8_t>(ttl), 0,
                                   static_cast<uint8_t>(ad.size())};
        rr.insert(rr.end(), ad.begin(), ad.end());
        a.insert(a.end(), rr.begin(), rr.end());
    }
    return a;
}

std::string text(const event::ResolvedAddr& a) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (a.sa.ss_family == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&a.sa)->sin_addr, buf, sizeof buf);
    else
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&a.sa)->sin6_addr, buf, sizeof buf);
    return buf;
}

struct Fixture {
    event::FakeClock clock;
    std::unique_ptr<event::Loop> loop;
    FakeServer dns;
    ResolverSpec spec;
    std::unique_ptr<Resolver> resolver;

    explicit Fixture(bool ipv6 = false) {
        auto l = event::Loop::create(clock);
        REQUIRE(l.ok());
        loop = std::move(l).value();
        spec.servers.push_back(dns.server());
        spec.ipv6 = ipv6;
        resolver = std::make_unique<Resolver>(*loop, spec);
    }
    ~Fixture() {
        resolver.reset();
        loop->run_deferred();
    }

    // Runs the loop until `q` is no longer pending (bounded).
    void wait(ResolveQuery& q) {
        for (int i = 0; i < 200 && q.pending(); ++i) loop->run_once(10);
        REQUIRE_FALSE(q.pending());
    }
};

struct Counter {
    int calls = 0;
    void hit() { ++calls; }
};

void arm(ResolveQuery& q, Counter& c) { q.done = event::Callback::to<&Counter::hit>(&c); }

}  // namespace

TEST_CASE("event/resolver: a name is asked once, answered from the loop, then cached for its TTL") {
    Fixture f;
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "Origin.Test.", 5s) == Resolve::Pending);
    CHECK(c.calls == 0);  // never from inside resolve()
    auto got = f.dns.next();
    REQUIRE(got.msg.size() > 12);
    CHECK(got.qtype() == dns::kTypeA);  // ipv6=off: no AAAA
    f.dns.reply(got, answer(got, 0, {{10, 0, 0, 1}, {10, 0, 0, 2}}, 5));
    f.wait(q);
    CHECK(c.calls == 1);
    CHECK(q.error == ResolveError::None);
    REQUIRE(q.addrs.size() == 2);
    CHECK(text(q.addrs[0]) == "10.0.0.1");
    CHECK(text(q.addrs[1]) == "10.0.0.2");
    CHECK(q.valid_until == f.loop->now() + 5000);

    ResolveQuery again;
    CHECK(f.resolver->resolve(again, "origin.test", 5s) == Resolve::Done);
    CHECK(again.addrs.size() == 2);
    CHECK(f.dns.next(50).msg.empty());  // nothing asked

    f.clock.advance(5001);
    f.loop->run_once(0);
    ResolveQuery later;
    CHECK(f.resolver->resolve(later, "origin.test", 5s) == Resolve::Pending);
    CHECK_FALSE(f.dns.next().msg.empty());
    CHECK(f.resolver->cache_size() == 1);
}

TEST_CASE("event/resolver: concurrent lookups of one name are one query; a dead requester gets nothing") {
    Fixture f;
    ResolveQuery a;
    Counter ca, cb;
    arm(a, ca);
    auto b = std::make_unique<ResolveQuery>();
    arm(*b, cb);
    REQUIRE(f.resolver->resolve(a, "x.test", 5s) == Resolve::Pending);
    REQUIRE(f.resolver->resolve(*b, "x.test", 5s) == Resolve::Pending);
    CHECK(f.resolver->pending_names() == 1);
    auto got = f.dns.next();
    REQUIRE_FALSE(got.msg.empty());
    CHECK(f.dns.next(50).msg.empty());  // one query only
    b.reset();                          // the requester died
    f.dns.reply(got, answer(got, 0, {{10, 0, 0, 9}}, 60));
    f.wait(a);
    CHECK(ca.calls == 1);
    CHECK(cb.calls == 0);
    CHECK(f.resolver->pending_names() == 0);
}

TEST_CASE("event/resolver: resolver_timeout ends a lookup with \"Operation timed out\"") {
    Fixture f;
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "slow.test", 500ms) == Resolve::Pending);
    CHECK_FALSE(f.dns.next().msg.empty());
    f.clock.advance(499);
    f.loop->run_once(0);
    CHECK(q.pending());
    f.clock.advance(1);
    f.loop->run_once(0);
    CHECK_FALSE(q.pending());
    CHECK(c.calls == 1);
    CHECK(q.error == ResolveError::TimedOut);
    CHECK(event::resolve_strerror(q.error) == "Operation timed out");
    CHECK(static_cast<int>(q.error) == 110);
}

TEST_CASE("event/resolver: an unanswered question is sent again to the next server") {
    FakeServer second;
    Fixture f;
    f.spec.servers.push_back(second.server());
    // A fresh resolver sees the two servers.
    f.resolver = std::make_unique<Resolver>(*f.loop, f.spec);
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "r.test", 10s) == Resolve::Pending);
    auto first = f.dns.next();
    REQUIRE_FALSE(first.msg.empty());  // the first server: silent
    f.clock.advance(1999);
    f.loop->run_once(0);
    CHECK(second.next(50).msg.empty());
    f.clock.advance(1);
    f.loop->run_once(0);
    auto retry = second.next();
    REQUIRE_FALSE(retry.msg.empty());
    CHECK(retry.id() == first.id());
    second.reply(retry, answer(retry, 0, {{10, 1, 1, 1}}, 30));
    f.wait(q);
    REQUIRE(q.addrs.size() == 1);
    CHECK(text(q.addrs[0]) == "10.1.1.1");
}

TEST_CASE("event/resolver: answers that do not match are ignored") {
    Fixture f;
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "m.test", 5s) == Resolve::Pending);
    auto got = f.dns.next();
    REQUIRE_FALSE(got.msg.empty());
    auto forged = answer(got, 0, {{6, 6, 6, 6}}, 30);
    forged[1] ^= 1;  // another ID
    f.dns.reply(got, forged);
    for (int i = 0; i < 5; ++i) f.loop->run_once(10);
    CHECK(q.pending());
    f.dns.reply(got, answer(got, 0, {{10, 2, 2, 2}}, 30));
    f.wait(q);
    REQUIRE(q.addrs.size() == 1);
    CHECK(text(q.addrs[0]) == "10.2.2.2");
}

TEST_CASE("event/resolver: NXDOMAIN is \"Host not found\", cached") {
    Fixture f;
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "nx.test", 5s) == Resolve::Pending);
    auto got = f.dns.next();
    f.dns.reply(got, answer(got, dns::kNxDomain, {}, 0));
    f.wait(q);
    CHECK(q.error == ResolveError::NxDomain);
    CHECK(event::resolve_strerror(q.error) == "Host not found");
    ResolveQuery again;
    CHECK(f.resolver->resolve(again, "nx.test", 5s) == Resolve::Done);
    CHECK(again.error == ResolveError::NxDomain);
    CHECK(f.dns.next(50).msg.empty());
}

TEST_CASE("event/resolver: SERVFAIL and REFUSED keep their codes") {
    Fixture f;
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "sf.test", 5s) == Resolve::Pending);
    auto got = f.dns.next();
    f.dns.reply(got, answer(got, dns::kRefused, {}, 0));
    f.wait(q);
    CHECK(q.error == ResolveError::Refused);
    CHECK(event::resolve_strerror(q.error) == "Operation refused");
}

TEST_CASE("event/resolver: A and AAAA together, IPv4 first") {
    Fixture f(true);
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "dual.test", 5s) == Resolve::Pending);
    auto q1 = f.dns.next();
    auto q2 = f.dns.next();
    REQUIRE_FALSE(q1.msg.empty());
    REQUIRE_FALSE(q2.msg.empty());
    CHECK(q1.id() != q2.id());
    auto& q6 = q1.qtype() == dns::kTypeAaaa ? q1 : q2;
    auto& q4 = q1.qtype() == dns::kTypeAaaa ? q2 : q1;
    std::vector<uint8_t> six(16, 0);
    six[15] = 1;
    f.dns.reply(q6, answer(q6, 0, {six}, 10));
    for (int i = 0; i < 3; ++i) f.loop->run_once(10);
    CHECK(q.pending());  // waits for both
    f.dns.reply(q4, answer(q4, 0, {{127, 0, 0, 1}}, 20));
    f.wait(q);
    REQUIRE(q.addrs.size() == 2);
    CHECK(text(q.addrs[0]) == "127.0.0.1");
    CHECK(text(q.addrs[1]) == "::1");
    CHECK(q.valid_until == f.loop->now() + 10000);
}

TEST_CASE("event/resolver: a truncated answer is asked again over TCP") {
    Fixture f;
    REQUIRE(f.dns.tcp >= 0);
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "big.test", 5s) == Resolve::Pending);
    auto got = f.dns.next();
    f.dns.reply(got, answer(got, 0, {}, 0, 0x0200));
    int conn = -1;
    for (int i = 0; i < 100 && conn < 0; ++i) {
        f.loop->run_once(10);
        pollfd p{f.dns.tcp, POLLIN, 0};
        if (::poll(&p, 1, 0) == 1) conn = ::accept(f.dns.tcp, nullptr, nullptr);
    }
    REQUIRE(conn >= 0);
    std::vector<uint8_t> in(2 + got.msg.size());
    size_t have = 0;
    for (int i = 0; i < 100 && have < in.size(); ++i) {
        f.loop->run_once(5);
        pollfd p{conn, POLLIN, 0};
        if (::poll(&p, 1, 5) != 1) continue;
        ssize_t n = ::recv(conn, in.data() + have, in.size() - have, 0);
        REQUIRE(n > 0);
        have += static_cast<size_t>(n);
    }
    REQUIRE(have == in.size());
    CHECK(std::vector<uint8_t>(in.begin() + 2, in.end()) == got.msg);
    FakeServer::Query tq;
    tq.msg = got.msg;
    std::vector<std::vector<uint8_t>> many;
    for (uint8_t i = 1; i <= 40; ++i) many.push_back({10, 9, 0, i});
    auto full = answer(tq, 0, many, 30);
    std::vector<uint8_t> out = {static_cast<uint8_t>(full.size() >> 8), static_cast<uint8_t>(full.size())};
    out.insert(out.end(), full.begin(), full.end());
    REQUIRE(::send(conn, out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
    f.wait(q);
    ::close(conn);
    CHECK(q.error == ResolveError::None);
    CHECK(q.addrs.size() == 40);
}

TEST_CASE("event/resolver: literals answer themselves, bad names are not sent") {
    Fixture f;
    ResolveQuery q;
    CHECK(f.resolver->resolve(q, "192.0.2.7", 5s) == Resolve::Done);
    REQUIRE(q.addrs.size() == 1);
    CHECK(text(q.addrs[0]) == "192.0.2.7");
    CHECK(f.resolver->resolve(q, "[::1]", 5s) == Resolve::Done);
    REQUIRE(q.addrs.size() == 1);
    CHECK(text(q.addrs[0]) == "::1");
    CHECK(f.resolver->resolve(q, "a..b", 5s) == Resolve::Done);
    CHECK(q.error == ResolveError::NxDomain);
    CHECK(f.dns.next(50).msg.empty());
}

TEST_CASE("event/resolver: valid= overrides the TTL") {
    Fixture f;
    f.spec.valid = std::chrono::milliseconds(60000);
    ResolveQuery q;
    Counter c;
    arm(q, c);
    REQUIRE(f.resolver->resolve(q, "v.test", 5s) == Resolve::Pending);
    auto got = f.dns.next();
    f.dns.reply(got, answer(got, 0, {{10, 3, 3, 3}}, 1));
    f.wait(q);
    CHECK(q.valid_until == f.loop->now() + 60000);
}

TEST_CASE("event/resolver: ResolverSpec::same_as compares servers and parameters") {
    FakeServer a;
    ResolverSpec s1, s2;
    s1.servers.push_back(a.server());
    s2.servers.push_back(a.server());
    CHECK(s1.same_as(s2));
    s2.valid = std::chrono::milliseconds(1000);
    CHECK_FALSE(s1.same_as(s2));
    s2.valid.reset();
    s2.ipv6 = false;
    CHECK_FALSE(s1.same_as(s2));
}

TEST_CASE("event/resolver: answers combine as nginx's: a failure fails, an alias is asked for both types") {
    SUBCASE("addresses in A, SERVFAIL in AAAA: the name fails, uncached") {
        Fixture f(true);
        ResolveQuery q;
        Counter c;
        arm(q, c);
        REQUIRE(f.resolver->resolve(q, "n-e.test", 5s) == Resolve::Pending);
        for (int i = 0; i < 2; ++i) {
            auto got = f.dns.next();
            REQUIRE_FALSE(got.msg.empty());
            if (got.qtype() == dns::kTypeA)
                f.dns.reply(got, answer(got, 0, {{10, 0, 0, 1}}, 60));
            else
                f.dns.reply(got, answer(got, dns::kServFail, {}, 0));
        }
        f.wait(q);
        CHECK(q.error == ResolveError::ServFail);
        CHECK(q.addrs.empty());
        ResolveQuery again;
        CHECK(f.resolver->resolve(again, "n-e.test", 5s) == Resolve::Pending);
    }
    SUBCASE("no addresses, AAAA names an alias: its A and AAAA are asked") {
        Fixture f(true);
        ResolveQuery q;
        Counter c;
        arm(q, c);
        REQUIRE(f.resolver->resolve(q, "z-c.test", 5s) == Resolve::Pending);
        for (int i = 0; i < 2; ++i) {
            auto got = f.dns.next();
            REQUIRE_FALSE(got.msg.empty());
            auto a = answer(got, 0, {}, 0);
            if (got.qtype() == dns::kTypeAaaa) {
                // One CNAME record: z-c.test -> alias.test, TTL 30.
                a[7] = 1;
                std::vector<uint8_t> rr = {0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 30, 0, 12,
                                           5, 'a', 'l', 'i', 'a', 's', 4, 't', 'e', 's', 't', 0};
                a.insert(a.end(), rr.begin(), rr.end());
            }
            f.dns.reply(got, a);
        }
        for (int i = 0; i < 5; ++i) f.loop->run_once(10);
        CHECK(q.pending());
        for (int i = 0; i < 2; ++i) {
            auto got = f.dns.next();
            REQUIRE_FALSE(got.msg.empty());
            CHECK(got.msg[13] == 'a');  // "alias.test" asked
            if (got.qtype() == dns::kTypeA)
                f.dns.reply(got, answer(got, 0, {{10, 7, 7, 7}}, 60));
            else
                f.dns.reply(got, answer(got, 0, {}, 0));
        }
        f.wait(q);
        REQUIRE(q.addrs.size() == 1);
        CHECK(text(q.addrs[0]) == "10.7.7.7");
        CHECK(q.valid_until == f.loop->now() + 30000);  // the CNAME's TTL bounds it
    }
}

TEST_CASE("event/resolver: names in flight are bounded; the next lookup fails at once") {
    Fixture f;
    std::vector<std::unique_ptr<ResolveQuery>> qs;
    for (size_t i = 0; i < event::kMaxPendingNames; ++i) {
        qs.push_back(std::make_unique<ResolveQuery>());
        REQUIRE(f.resolver->resolve(*qs.back(), "n" + std::to_string(i) + ".test", 5s) == Resolve::Pending);
    }
    CHECK(f.resolver->pending_names() == event::kMaxPendingNames);
    ResolveQuery extra;
    CHECK(f.resolver->resolve(extra, "one-more.test", 5s) == Resolve::Done);
    CHECK(extra.error == ResolveError::Busy);
    CHECK(event::resolve_strerror(extra.error) == "Resource temporarily unavailable");
    // A name already in flight still joins its transaction.
    ResolveQuery joined;
    CHECK(f.resolver->resolve(joined, "n7.test", 5s) == Resolve::Pending);
    // Once every waiter is gone, the transactions end at their resend.
    qs.clear();
    joined.cancel();
    f.clock.advance(2000);
    f.loop->run_once(0);
    CHECK(f.resolver->pending_names() == 0);
    CHECK(f.resolver->cache_size() == 0);
}
