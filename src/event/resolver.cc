// The resolver's cache and transport. See resolver.h for the contract.
//
// A name's life: resolve() finds or makes its ResolverEntry. A fresh
// answer is copied out at once (Resolve::Done). Otherwise the entry is
// pending and the query waits on it: one entry per name, so concurrent
// lookups share one transaction. The entry asks one Question per record
// type (A, AAAA), each over UDP to one server at a time, the next one
// every kResend or at once when a server refuses (ICMP port unreachable
// on the connected socket); a truncated answer is asked again over TCP
// from the same server. When every question has a checked answer the
// entry is ready: its waiters get a copy of the outcome, and later
// lookups use it until it expires.
#include "event/resolver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <unordered_map>

#include "core/dns_message.h"
#include "core/log.h"
#include "event/loop.h"

namespace gatehouse::event {

namespace {

using namespace std::chrono_literals;

// How long one server has to answer before the question goes to the next
// one (UDP), or a TCP exchange is given up. Shorter than nginx's 5s, so
// that a dead server among several costs little; long enough not to
// pile resends on a slow one.
constexpr Msec kResend = 2000;
// "No such name" and "no address" answers without a SOA record and
// without valid=: cached this long, so that a burst of requests for a bad
// name does not become a burst of queries.
constexpr Msec kNegativeTtl = 10000;
// Largest DNS message over TCP (its length prefix is 16 bits).
constexpr size_t kMaxTcpMessage = 65535;

}  // namespace

std::string_view resolve_strerror(ResolveError e) {
    switch (e) {
        case ResolveError::None: return "No error";
        case ResolveError::FormErr: return "Format error";
        case ResolveError::ServFail: return "Server failure";
        case ResolveError::NxDomain: return "Host not found";
        case ResolveError::NotImp: return "Unimplemented";
        case ResolveError::Refused: return "Operation refused";
        case ResolveError::Unknown: return "Unknown error";
        case ResolveError::Busy: return "Resource temporarily unavailable";
        case ResolveError::TimedOut: return "Operation timed out";
    }
    return "Unknown error";
}

struct Question;
struct ResolverCore;

// A TCP exchange for a truncated answer: connect, write the query with
// its length prefix, read the answer's.
struct TcpExchange {
    Watcher io;
    std::vector<uint8_t> out;  // length prefix + query
    size_t sent = 0;
    std::vector<uint8_t> in;
    size_t want = 2;           // the prefix first, then the message
};

// One record type asked for one entry.
struct Question {
    ResolverCore* impl = nullptr;
    ResolverEntry* entry = nullptr;
    uint16_t qtype = 0;
    bool active = false;       // asked and not yet answered
    bool answered = false;
    std::string qname;         // the name asked now: the entry's, or a CNAME's target
    uint16_t id = 0;
    std::vector<uint8_t> query;
    size_t server = 0;         // the server asked last
    uint64_t asked = 0;        // bit i: server i was asked (answers from it count)
    uint32_t sends = 0;
    Timer resend;
    std::unique_ptr<TcpExchange> tcp;
    // The answer.
    uint8_t rcode = 0;
    std::vector<std::array<uint8_t, 16>> addrs;
    uint32_t ttl = UINT32_MAX;  // min over the records used
    // NOERROR without addresses, the CNAME chain leaving the answer at
    // this name (see ResolverCore::finish).
    std::string cname;
    bool has_negative_ttl = false;
    uint32_t negative_ttl = 0;
};

struct ResolverEntry {
    std::string name;
    bool pending = false;
    bool notifying = false;    // waiters being called: not to be evicted
    ResolveError error = ResolveError::None;
    std::vector<ResolvedAddr> addrs;
    Msec expires = 0;
    ResolveQuery* head = nullptr;  // waiters, in arrival order
    ResolveQuery* tail = nullptr;
    Question q[2];                 // [0] A, [1] AAAA
    int cnames = 0;                // CNAMEs followed to other names
    uint32_t chain_ttl = UINT32_MAX;  // min TTL of those CNAMEs
    std::list<ResolverEntry*>::iterator lru;
};

struct UdpSocket {
    Watcher io;
    ResolverCore* impl = nullptr;
    size_t index = 0;
};

// The resolver proper; Resolver::Impl only holds it, so that the types
// above may point at it.
struct ResolverCore {
    Loop& loop;
    const ResolverSpec& spec;
    std::unordered_map<std::string, std::unique_ptr<ResolverEntry>> cache;
    std::list<ResolverEntry*> lru;  // least recently used first
    std::unordered_map<uint16_t, Question*> by_id;
    std::vector<std::unique_ptr<UdpSocket>> sockets;  // one per server, opened at first use
    size_t next_server = 0;
    size_t pending = 0;
    uint8_t random[64] = {};
    size_t random_left = 0;

    ResolverCore(Loop& l, const ResolverSpec& s) : loop(l), spec(s) { sockets.resize(spec.servers.size()); }
    ~ResolverCore();

    uint16_t random_id();
    ResolverEntry* find_or_make(const std::string& name);
    void evict();
    void start(ResolverEntry& e);
    void ask_both(ResolverEntry& e, const std::string& name, size_t server);
    void ask(Question& q);
    void send(Question& q);
    void on_resend(Question& q);
    void on_udp(UdpSocket& s);
    void refused(size_t server);
    void take(Question& q, const uint8_t* msg, size_t len, size_t server, bool over_tcp);
    void start_tcp(Question& q);
    void on_tcp(Question& q);
    void end_tcp(Question& q);
    void forget_id(Question& q);
    void finish(ResolverEntry& e);
    void notify(ResolverEntry& e);
    void drop_entry(ResolverEntry& e);
    const char* server_text(size_t i) const { return spec.servers[i].text.c_str(); }
};

// ---- ids, entries ------------------------------------------------------------------

uint16_t ResolverCore::random_id() {
    // Unpredictable IDs are half of what stops an off-path attacker from
    // forging answers (RFC 5452 4.3); the other half is the checked
    // question and the connected socket.
    for (int attempt = 0; attempt < 64; ++attempt) {
        if (random_left < 2) {
            ssize_t n = getrandom(random, sizeof random, GRND_NONBLOCK);
            if (n != static_cast<ssize_t>(sizeof random)) {
                // No entropy yet (early boot): fall back to something
                // that still differs between queries (xorshift).
                static uint64_t x = loop.now() * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(getpid());
                for (size_t i = 0; i < sizeof random; ++i) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    random[i] = static_cast<uint8_t>(x);
                }
            }
            random_left = sizeof random;
        }
        random_left -= 2;
        uint16_t id = static_cast<uint16_t>(random[random_left] << 8 | random[random_left + 1]);
        if (!by_id.count(id)) return id;
    }
    // 64 collisions among at most 2 * kMaxPendingNames IDs in flight
    // cannot happen by chance.
    GH_CHECK(false);
    return 0;
}

ResolverEntry* ResolverCore::find_or_make(const std::string& name) {
    auto it = cache.find(name);
    if (it != cache.end()) {
        lru.splice(lru.end(), lru, it->second->lru);
        return it->second.get();
    }
    if (cache.size() >= kMaxCacheEntries) evict();
    auto e = std::make_unique<ResolverEntry>();
    e->name = name;
    for (int i = 0; i < 2; ++i) {
        Question& q = e->q[i];
        q.impl = this;
        q.entry = e.get();
        q.qtype = i == 0 ? dns::kTypeA : dns::kTypeAaaa;
        q.resend.cb = {[](void* p) {
                           auto* qq = static_cast<Question*>(p);
                           qq->impl->on_resend(*qq);
                       },
                       &q};
    }
    lru.push_back(e.get());
    e->lru = std::prev(lru.end());
    ResolverEntry* raw = e.get();
    cache.emplace(name, std::move(e));
    return raw;
}

void ResolverCore::evict() {
    // Expired entries first, then the least recently used; never one
    // pending or being reported.
    Msec now = loop.now();
    for (auto it = lru.begin(); it != lru.end() && cache.size() >= kMaxCacheEntries;) {
        ResolverEntry* e = *it++;
        if (!e->pending && !e->notifying && e->expires < now) drop_entry(*e);
    }
    for (auto it = lru.begin(); it != lru.end() && cache.size() >= kMaxCacheEntries;) {
        ResolverEntry* e = *it++;
        if (!e->pending && !e->notifying) drop_entry(*e);
    }
}

void ResolverCore::drop_entry(ResolverEntry& e) {
    for (Question& q : e.q) {
        forget_id(q);
        loop.cancel(q.resend);
        end_tcp(q);
    }
    if (e.pending) --pending;
    lru.erase(e.lru);
    cache.erase(e.name);  // frees e
}

ResolverCore::~ResolverCore() {
    for (auto& [name, e] : cache) {
        // Detach the waiters silently: their owners go with the worker.
        while (ResolveQuery* w = e->head) {
            e->head = w->next_;
            loop.cancel(w->timer_);
            w->resolver_ = nullptr;
            w->entry_ = nullptr;
            w->prev_ = w->next_ = nullptr;
        }
        for (Question& q : e->q) {
            loop.cancel(q.resend);
            end_tcp(q);
        }
    }
    for (auto& s : sockets)
        if (s && s->io.registered()) loop.close(s->io);
}

// ---- asking ----------------------------------------------------------------------

void ResolverCore::start(ResolverEntry& e) {
    e.pending = true;
    e.error = ResolveError::None;
    e.addrs.clear();
    e.cnames = 0;
    e.chain_ttl = UINT32_MAX;
    ++pending;
    // Both questions go to the same server; the next name to the next
    // server ("queried in a round-robin fashion" [nginx docs]).
    ask_both(e, e.name, next_server++ % spec.servers.size());
}

void ResolverCore::ask_both(ResolverEntry& e, const std::string& name, size_t server) {
    for (int i = 0; i < 2; ++i) {
        Question& q = e.q[i];
        bool wanted = i == 0 ? spec.ipv4 : spec.ipv6;
        q.answered = !wanted;
        q.active = false;
        q.qname = name;
        q.rcode = 0;
        q.addrs.clear();
        q.cname.clear();
        q.ttl = UINT32_MAX;
        q.has_negative_ttl = false;
        q.server = server;
    }
    // Both set up before either is sent: an answer cannot come in
    // between, but ask() may log, and the state should read whole.
    for (int i = 0; i < 2; ++i)
        if (!e.q[i].answered) ask(e.q[i]);
}

// A new question (the entry's name, or a CNAME's target) with a new ID,
// to the question's current server.
void ResolverCore::ask(Question& q) {
    forget_id(q);
    end_tcp(q);
    q.id = random_id();
    by_id[q.id] = &q;
    auto built = dns::build_query(q.id, q.qname, q.qtype);
    GH_CHECK(built.ok());  // qname is normalized
    q.query = std::move(*built);
    q.active = true;
    q.asked = 0;
    q.sends = 0;
    send(q);
}

void ResolverCore::send(Question& q) {
    ++q.sends;
    size_t i = q.server;
    loop.arm(q.resend, std::chrono::milliseconds(kResend));
    if (!sockets[i]) {
        auto s = std::make_unique<UdpSocket>();
        s->impl = this;
        s->index = i;
        const auto& srv = spec.servers[i];
        int fd = ::socket(srv.sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            GH_LOG_ERRNO(Error, errno, "socket() failed while resolving, resolver: %s", server_text(i));
            return;  // the resend timer tries the next server
        }
        // Connected: the kernel drops datagrams from anyone else, and an
        // ICMP "port unreachable" comes back as ECONNREFUSED.
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&srv.sa), srv.len) < 0) {
            GH_LOG_ERRNO(Error, errno, "connect() failed while resolving, resolver: %s", server_text(i));
            ::close(fd);
            return;
        }
        s->io.set_fd(fd);
        s->io.on_read = {[](void* p) {
                             auto* us = static_cast<UdpSocket*>(p);
                             us->impl->on_udp(*us);
                         },
                         s.get()};
        if (auto st = loop.add(s->io, Interest::Read); !st) {
            GH_LOG(Error, "%s while resolving", st.message().c_str());
            ::close(fd);
            return;
        }
        sockets[i] = std::move(s);
    }
    q.asked |= uint64_t{1} << (i % 64);
    ssize_t n;
    do {
        n = ::send(sockets[i]->io.fd(), q.query.data(), q.query.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int err = errno;
        GH_LOG_ERRNO(Error, err, "send() failed while resolving, resolver: %s", server_text(i));
    }
}

void ResolverCore::on_resend(Question& q) {
    ResolverEntry& e = *q.entry;
    if (!e.head) {
        // Nobody waits any more: stop here rather than keep asking for
        // an answer only the cache would use.
        drop_entry(e);
        return;
    }
    end_tcp(q);
    q.server = (q.server + 1) % spec.servers.size();
    send(q);
}

void ResolverCore::refused(size_t server) {
    // The server's port is closed: every question waiting on it goes on
    // to the next server now rather than at its resend timer.
    std::vector<Question*> moved;
    for (auto& [id, q] : by_id)
        if (q->active && !q->tcp && q->server == server) moved.push_back(q);
    for (Question* q : moved) {
        if (spec.servers.size() == 1) continue;  // wait: it may come back
        q->server = (q->server + 1) % spec.servers.size();
        send(*q);
    }
}

void ResolverCore::on_udp(UdpSocket& s) {
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = ::recv(s.io.fd(), buf, sizeof buf, 0);
        if (n < 0) {
            int err = errno;
            if (err == EINTR) continue;
            if (err == EAGAIN) {
                s.io.clear_readable();
                return;
            }
            GH_LOG_ERRNO(Error, err, "recv() failed while resolving, resolver: %s", server_text(s.index));
            if (err == ECONNREFUSED) refused(s.index);
            continue;  // the error is consumed; read on
        }
        if (n < 2) continue;
        uint16_t id = static_cast<uint16_t>(buf[0] << 8 | buf[1]);
        auto it = by_id.find(id);
        if (it == by_id.end() || !(it->second->asked & (uint64_t{1} << (s.index % 64)))) {
            GH_LOG(Error, "unexpected DNS response for ID %u, resolver: %s", id, server_text(s.index));
            continue;
        }
        take(*it->second, buf, static_cast<size_t>(n), s.index, false);
    }
}

// A message that claims to answer q: checked, then used or ignored.
void ResolverCore::take(Question& q, const uint8_t* msg, size_t len, size_t server, bool over_tcp) {
    auto a = dns::parse_answer({msg, len}, q.id, q.qname, q.qtype);
    if (!a) {
        // Spoofed or broken: logged and ignored, the question waits on.
        GH_LOG(Error, "invalid DNS response (%s) while resolving \"%s\", resolver: %s",
               a.message().c_str(), q.qname.c_str(), server_text(server));
        return;
    }
    if (a->rcode == dns::kFormErr) {
        // The server could not read our query: another may, at the next
        // resend [nginx ignores it too].
        GH_LOG(Error, "DNS error (1: Format error) while resolving \"%s\", resolver: %s", q.qname.c_str(),
               server_text(server));
        return;
    }
    if (a->truncated) {
        if (over_tcp) {
            GH_LOG(Error, "truncated DNS response over TCP while resolving \"%s\", resolver: %s",
                   q.qname.c_str(), server_text(server));
            return;
        }
        q.server = server;
        start_tcp(q);
        return;
    }
    forget_id(q);
    loop.cancel(q.resend);
    if (!over_tcp) end_tcp(q);
    q.rcode = a->rcode;
    q.addrs = std::move(a->addrs);
    q.cname = std::move(a->cname);
    if (!q.addrs.empty() || !q.cname.empty()) q.ttl = std::min(q.ttl, a->ttl);
    q.has_negative_ttl = a->has_negative_ttl;
    q.negative_ttl = a->negative_ttl;
    q.active = false;
    q.answered = true;
    if (over_tcp) end_tcp(q);
    ResolverEntry& e = *q.entry;
    if (e.q[0].answered && e.q[1].answered) finish(e);
}

void ResolverCore::forget_id(Question& q) {
    auto it = by_id.find(q.id);
    if (it != by_id.end() && it->second == &q) by_id.erase(it);
}

// ---- TCP --------------------------------------------------------------------------

void ResolverCore::start_tcp(Question& q) {
    end_tcp(q);
    const auto& srv = spec.servers[q.server];
    int fd = ::socket(srv.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        GH_LOG_ERRNO(Error, errno, "socket() failed while resolving, resolver: %s", server_text(q.server));
        return;
    }
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&srv.sa), srv.len) < 0 && errno != EINPROGRESS) {
        GH_LOG_ERRNO(Error, errno, "connect() failed while resolving, resolver: %s", server_text(q.server));
        ::close(fd);
        return;
    }
    auto t = std::make_unique<TcpExchange>();
    t->out.reserve(q.query.size() + 2);
    t->out.push_back(static_cast<uint8_t>(q.query.size() >> 8));
    t->out.push_back(static_cast<uint8_t>(q.query.size()));
    t->out.insert(t->out.end(), q.query.begin(), q.query.end());
    t->io.set_fd(fd);
    t->io.on_read = t->io.on_write = {[](void* p) {
                                          auto* qq = static_cast<Question*>(p);
                                          if (qq->tcp) qq->impl->on_tcp(*qq);
                                      },
                                      &q};
    if (auto st = loop.add(t->io, Interest::ReadWrite); !st) {
        GH_LOG(Error, "%s while resolving", st.message().c_str());
        ::close(fd);
        return;
    }
    q.tcp = std::move(t);
    // The resend timer, already armed, bounds the exchange.
}

void ResolverCore::on_tcp(Question& q) {
    TcpExchange& t = *q.tcp;
    while (t.sent < t.out.size()) {
        if (!t.io.writable()) return;
        ssize_t n = ::send(t.io.fd(), t.out.data() + t.sent, t.out.size() - t.sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                t.io.clear_writable();
                return;
            }
            GH_LOG_ERRNO(Error, errno, "send() failed while resolving over TCP, resolver: %s",
                         server_text(q.server));
            end_tcp(q);
            return;
        }
        t.sent += static_cast<size_t>(n);
    }
    for (;;) {
        if (!t.io.readable()) return;
        if (t.in.size() == t.want) {
            if (t.want == 2) {
                size_t len = static_cast<size_t>(t.in[0]) << 8 | t.in[1];
                if (len < 12 || len > kMaxTcpMessage) {
                    GH_LOG(Error, "invalid DNS response length %zu over TCP, resolver: %s", len,
                           server_text(q.server));
                    end_tcp(q);
                    return;
                }
                t.in.clear();
                t.want = len;
                continue;
            }
            std::vector<uint8_t> msg = std::move(t.in);
            take(q, msg.data(), msg.size(), q.server, true);
            return;
        }
        size_t old = t.in.size();
        t.in.resize(t.want);
        ssize_t n = ::recv(t.io.fd(), t.in.data() + old, t.want - old, 0);
        if (n <= 0) {
            t.in.resize(old);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) {
                t.io.clear_readable();
                return;
            }
            if (n == 0)
                GH_LOG(Error, "DNS server closed the TCP connection early, resolver: %s", server_text(q.server));
            else
                GH_LOG_ERRNO(Error, errno, "recv() failed while resolving over TCP, resolver: %s",
                             server_text(q.server));
            end_tcp(q);
            return;
        }
        t.in.resize(old + static_cast<size_t>(n));
    }
}

void ResolverCore::end_tcp(Question& q) {
    if (!q.tcp) return;
    if (q.tcp->io.registered()) loop.close(q.tcp->io);
    // An event of this Watcher may still be ahead in this epoll batch:
    // the loop reads the Watcher to drop it, so it is freed after the
    // iteration (Loop::defer).
    loop.defer({[](void* p) { std::unique_ptr<TcpExchange>(static_cast<TcpExchange*>(p)); },
                q.tcp.release()});
}

// ---- answers ----------------------------------------------------------------------

void ResolverCore::finish(ResolverEntry& e) {
    // How the two answers combine, as nginx combines them
    // (http_resolver_aaaa.t): a server failure in either fails the name;
    // addresses in either are the answer, a CNAME in the other then
    // ignored; with none, a CNAME leaving the last answer (AAAA when
    // asked) makes the name an alias, whose A and AAAA are asked next.
    ResolveError failed = ResolveError::None;
    bool any = false;
    for (Question& q : e.q) {
        if (failed == ResolveError::None && q.rcode != dns::kNoError && q.rcode != dns::kNxDomain)
            failed = q.rcode <= dns::kRefused ? static_cast<ResolveError>(q.rcode) : ResolveError::Unknown;
        any = any || !q.addrs.empty();
    }
    Question& last = spec.ipv6 ? e.q[1] : e.q[0];
    if (failed == ResolveError::None && !any && !last.cname.empty() && e.cnames + 1 < dns::kMaxCnameChain) {
        ++e.cnames;
        e.chain_ttl = std::min(e.chain_ttl, last.ttl);
        std::string target = last.cname;
        // An alias of a name this worker knows: its answer serves.
        auto it = cache.find(target);
        if (it != cache.end()) {
            const ResolverEntry& t = *it->second;
            const Msec now = loop.now();
            if (!t.pending && t.error == ResolveError::None && now < t.expires) {
                e.pending = false;
                --pending;
                e.error = ResolveError::None;
                e.addrs = t.addrs;
                const Msec chain = spec.valid ? static_cast<Msec>(spec.valid->count()) : Msec{e.chain_ttl} * 1000;
                e.expires = now + std::min(chain, t.expires - now);
                notify(e);
                return;
            }
        }
        ask_both(e, target, last.server);
        return;
    }
    e.pending = false;
    --pending;
    Msec now = loop.now();
    uint32_t ttl = e.chain_ttl;
    for (Question& q : e.q) {
        for (const auto& a : q.addrs) {
            ResolvedAddr r;
            if (q.qtype == dns::kTypeA) {
                sockaddr_in sin{};
                sin.sin_family = AF_INET;
                std::memcpy(&sin.sin_addr, a.data(), 4);
                std::memcpy(&r.sa, &sin, sizeof sin);
                r.len = sizeof sin;
            } else {
                sockaddr_in6 sin6{};
                sin6.sin6_family = AF_INET6;
                std::memcpy(&sin6.sin6_addr, a.data(), 16);
                std::memcpy(&r.sa, &sin6, sizeof sin6);
                r.len = sizeof sin6;
            }
            e.addrs.push_back(r);
        }
        if (!q.addrs.empty()) ttl = std::min(ttl, q.ttl);
    }
    if (failed != ResolveError::None) e.addrs.clear();
    Msec life;
    if (!e.addrs.empty()) {
        e.error = ResolveError::None;
        life = spec.valid ? static_cast<Msec>(spec.valid->count()) : Msec{ttl} * 1000;
    } else {
        // A failure (A before AAAA), else no data for either: "Host not
        // found" [nginx].
        e.error = failed != ResolveError::None ? failed : ResolveError::NxDomain;
        bool neg = false;
        uint32_t neg_ttl = UINT32_MAX;
        for (Question& q : e.q) {
            if (q.has_negative_ttl) {
                neg = true;
                neg_ttl = std::min(neg_ttl, q.negative_ttl);
            }
        }
        if (e.error != ResolveError::NxDomain)
            life = 0;  // a failing server is not an answer: ask again next time [nginx]
        else
            life = spec.valid ? static_cast<Msec>(spec.valid->count())
                              : neg ? Msec{neg_ttl} * 1000 : kNegativeTtl;
    }
    e.expires = now + life;
    notify(e);
}

void ResolverCore::notify(ResolverEntry& e) {
    e.notifying = true;
    // One waiter at a time from the head: a callback may cancel others
    // (unlinking them) or start lookups, which find this entry fresh.
    while (ResolveQuery* w = e.head) {
        e.head = w->next_;
        if (e.head) e.head->prev_ = nullptr;
        else e.tail = nullptr;
        loop.cancel(w->timer_);
        w->resolver_ = nullptr;
        w->entry_ = nullptr;
        w->prev_ = w->next_ = nullptr;
        w->error = e.error;
        w->addrs = e.addrs;
        w->valid_until = e.expires;
        if (w->done) w->done();
    }
    e.notifying = false;
}

// ---- the public side ----------------------------------------------------------

struct Resolver::Impl {
    Impl(Loop& l, const ResolverSpec& s) : core(l, s) {}
    ResolverCore core;
};

Resolver::Resolver(Loop& loop, const ResolverSpec& spec)
    : loop_(loop), spec_(spec), impl_(std::make_unique<Impl>(loop, spec)) {}

Resolver::~Resolver() = default;

size_t Resolver::cache_size() const { return impl_->core.cache.size(); }
size_t Resolver::pending_names() const { return impl_->core.pending; }

void ResolveQuery::cancel() {
    if (resolver_) resolver_->cancel(*this);
}

void Resolver::cancel(ResolveQuery& q) {
    ResolverEntry* e = q.entry_;
    if (q.prev_) q.prev_->next_ = q.next_;
    else if (e) e->head = q.next_;
    if (q.next_) q.next_->prev_ = q.prev_;
    else if (e) e->tail = q.prev_;
    q.prev_ = q.next_ = nullptr;
    q.entry_ = nullptr;
    q.resolver_ = nullptr;
    loop_.cancel(q.timer_);
    // The entry's transaction goes on (other waiters, the cache); with no
    // waiter left, its next resend timer ends it.
}

namespace {

bool literal(std::string_view name, ResolvedAddr& a) {
    std::string h(name);
    in_addr a4{};
    in6_addr a6{};
    if (inet_pton(AF_INET, h.c_str(), &a4) == 1) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr = a4;
        std::memcpy(&a.sa, &sin, sizeof sin);
        a.len = sizeof sin;
        return true;
    }
    if (!h.empty() && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = a6;
        std::memcpy(&a.sa, &sin6, sizeof sin6);
        a.len = sizeof sin6;
        return true;
    }
    return false;
}

}  // namespace

Resolve Resolver::resolve(ResolveQuery& q, std::string_view name, conf::Duration timeout) {
    q.cancel();
    q.addrs.clear();
    q.error = ResolveError::None;
    Msec now = loop_.now();
    q.valid_until = now;
    ResolvedAddr lit;
    if (literal(name, lit)) {
        q.addrs.push_back(lit);
        q.valid_until = UINT64_MAX;
        return Resolve::Done;
    }
    std::string key = dns::normalize_name(name);
    if (key.empty()) {
        q.error = ResolveError::NxDomain;
        return Resolve::Done;
    }
    ResolverCore& im = impl_->core;
    auto it = im.cache.find(key);
    ResolverEntry* e = it == im.cache.end() ? nullptr : it->second.get();
    if (e && !e->pending && (now < e->expires || e->notifying)) {
        im.lru.splice(im.lru.end(), im.lru, e->lru);
        q.error = e->error;
        q.addrs = e->addrs;
        q.valid_until = e->expires;
        return Resolve::Done;
    }
    if (!e || !e->pending) {
        if (im.pending >= kMaxPendingNames) {
            GH_LOG(Error, "too many names being resolved (%zu), \"%s\" refused", im.pending, key.c_str());
            q.error = ResolveError::Busy;
            return Resolve::Done;
        }
        e = im.find_or_make(key);
    }
    // Wait on the entry.
    q.resolver_ = this;
    q.entry_ = e;
    q.prev_ = e->tail;
    q.next_ = nullptr;
    if (e->tail) e->tail->next_ = &q;
    else e->head = &q;
    e->tail = &q;
    q.timer_.cb = {[](void* p) {
                       auto* w = static_cast<ResolveQuery*>(p);
                       Resolver* r = w->resolver_;
                       r->cancel(*w);
                       w->error = ResolveError::TimedOut;
                       w->valid_until = r->loop_.now();
                       if (w->done) w->done();
                   },
                   &q};
    loop_.arm(q.timer_, timeout);
    if (!e->pending) im.start(*e);
    return Resolve::Pending;
}

}  // namespace gatehouse::event
