// The per-worker asynchronous DNS resolver: "resolver" and
// "resolver_timeout", as nginx's.
//
// A caller (proxy_pass with variables, an upstream "server NAME resolve")
// asks a Resolver for the IPv4 and/or IPv6 addresses of a name and gets
// them back later, from the worker's loop; the loop never waits on DNS.
// Queries go over UDP to the configured name servers in turn (the next one
// on a retransmission), with random IDs, every answer checked against its
// query (core/dns_message.h); a truncated answer is asked again over TCP.
//
// One Resolver per distinct "resolver" line per worker (worker_resolver()):
// locations repeating the same line share it, and so do upstreams. Its
// cache is the worker's, shared by every request and upstream using it:
// answers are kept for their TTL (or valid=); "no such name" and "no
// address" for their SOA record's TTL, valid= or 10s; server failures
// and timeouts are not kept (the next lookup asks again).
// Concurrent lookups of one name are one DNS transaction. Bounded by
// kMaxPendingNames transactions and kMaxCacheEntries names.
//
// Threading: the worker's loop thread only. Lifetimes are stated per type.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/fwd.h"
#include "conf/module.h"
#include "conf/values.h"
#include "event/fwd.h"
#include "event/timer.h"

namespace gatehouse::event {

// ---- configuration ------------------------------------------------------------

// One "resolver" directive: "resolver address ... [valid=time]
// [ipv4=on|off] [ipv6=on|off] [status_zone=zone]". Owner: the generation
// arena; immutable after the configuration is read. Name server names
// are resolved at load (the master may block; workers never do).
struct ResolverSpec {
    struct Server {
        sockaddr_storage sa{};  // port 53 unless given
        socklen_t len = 0;
        std::string text;       // "127.0.0.1:53", "[::1]:5353": for logs
    };
    std::vector<Server> servers;
    // valid=: how long answers (positive and negative) are cached,
    // instead of their TTLs.
    std::optional<conf::Duration> valid;
    // Which records are asked for. nginx's defaults: both on. Never both
    // off (the directive refuses it).
    bool ipv4 = true;
    bool ipv6 = true;
    // status_zone=: accepted and stored; counted by a later change.
    std::string status_zone;
    std::string where;  // file:line of the directive

    // Same servers and parameters: one Resolver (and one cache) serves both.
    bool same_as(const ResolverSpec& o) const;
};

// The conf struct holding "resolver" and "resolver_timeout": resolver_module's
// location-level struct, present at the http, server and location levels
// and merged as nginx merges them (an unset level inherits its parent's).
//
// How a module finds it:
//   - a request:  r.loc_conf<event::ResolverConf>(event::resolver_module)
//   - config time, in any location-level directive or postconfiguration:
//       cx.conf<event::ResolverConf>(event::resolver_module, conf::Level::Loc)
//   - an upstream block (which is not in the location tree): the http
//     block's own, http_resolver_conf(cx) below, as nginx uses for
//     upstreams.
// Then worker_resolver(*conf.resolver) in the worker, and
// conf.timeout() for each lookup.
struct ResolverConf {
    const ResolverSpec* resolver = nullptr;             // "resolver"; null: none
    std::optional<conf::Duration> resolver_timeout;     // "resolver_timeout"

    conf::Duration timeout() const { return resolver_timeout.value_or(kDefaultTimeout); }
    static constexpr conf::Duration kDefaultTimeout{std::chrono::seconds(30)};
};

// The module's main-level struct: every spec of the generation (for the
// workers to share Resolvers between equal specs) and the http block's
// own ResolverConf (what upstream blocks use).
struct ResolverMainConf {
    std::vector<const ResolverSpec*> specs;  // owner: the generation arena
    const ResolverConf* http = nullptr;      // owner: the generation arena
};

extern const conf::Module resolver_module;

// The http block's own ResolverConf once the http block has been read
// (any postconfiguration may call it); null when the http level set
// neither "resolver" nor "resolver_timeout" (or there is no http block):
// no resolver, the default timeout.
const ResolverConf* http_resolver_conf(const conf::Ctx& cx);

// ---- results ----------------------------------------------------------------------

// Why a lookup failed: nginx's numbers and texts, which appear in logs as
// "could not be resolved (3: Host not found)". 1-5 are the DNS RCODEs.
enum class ResolveError : int {
    None = 0,
    FormErr = 1,   // "Format error"
    ServFail = 2,  // "Server failure"
    NxDomain = 3,  // "Host not found": NXDOMAIN, or the name has no address
    NotImp = 4,    // "Unimplemented"
    Refused = 5,   // "Operation refused"
    // Every name server answered something unusable (bad packet, wrong
    // question): "Unknown error".
    Unknown = 6,
    // Too many names pending in this worker (kMaxPendingNames): the
    // lookup was refused at once, nothing sent. "Resource temporarily
    // unavailable".
    Busy = 11,
    // resolver_timeout passed without an answer: "Operation timed out".
    TimedOut = 110,
};
// The text nginx logs for it ("Host not found").
std::string_view resolve_strerror(ResolveError e);

// One resolved address: the port is 0, the caller sets its own.
struct ResolvedAddr {
    sockaddr_storage sa{};
    socklen_t len = 0;
};

// ---- a lookup ---------------------------------------------------------------------

class Resolver;
struct ResolverEntry;  // resolver.cc: a cached or pending name
struct ResolverCore;   // resolver.cc: the cache and the transport

// One caller's lookup, embedded in the caller (a request's arena, an
// upstream server's per-worker state). Not copyable or movable while
// pending. Destroying a pending query cancels it (the requester died):
// no callback comes, the DNS transaction goes on for the others waiting
// on it and for the cache.
class ResolveQuery {
public:
    ResolveQuery() = default;
    ResolveQuery(const ResolveQuery&) = delete;
    ResolveQuery& operator=(const ResolveQuery&) = delete;
    ~ResolveQuery() { cancel(); }

    // Runs once when a pending lookup ends (answer, error, timeout), from
    // the loop: never from inside Resolver::resolve(). The query is no
    // longer pending when it runs; the callback may destroy the query's
    // owner or start another lookup on it. Set before resolve().
    Callback done;

    // The outcome, valid once resolve() returned Resolve::Done or `done`
    // ran, until the next resolve() on this query.
    ResolveError error = ResolveError::None;
    // IPv4 addresses first, then IPv6, each in the answer's order; empty
    // on error. Owned by the query (copied out of the cache).
    std::vector<ResolvedAddr> addrs;
    // Until when the answer may be used (the loop's clock): the cache
    // entry's expiry, for a caller re-resolving periodically (upstream
    // "resolve"). Errors: when the negative entry expires (now for a
    // timeout).
    Msec valid_until = 0;

    bool pending() const { return resolver_ != nullptr; }
    // Stops waiting: no callback will come. No-op when not pending.
    void cancel();

private:
    friend class Resolver;
    friend struct ResolverCore;         // resolver.cc
    Resolver* resolver_ = nullptr;      // non-null exactly while pending
    ResolverEntry* entry_ = nullptr;    // the cache entry it waits on
    ResolveQuery* prev_ = nullptr;      // the entry's list of waiters
    ResolveQuery* next_ = nullptr;
    Timer timer_;                       // this caller's resolver_timeout
};

enum class Resolve : uint8_t {
    Done,     // answered at once (cache, an address literal, an error):
              // the outcome is in the query, `done` will not run
    Pending,  // `done` runs later from the loop
};

// Limits of one Resolver (documented constants, as nginx has no
// directives for them).
inline constexpr size_t kMaxPendingNames = 1024;  // DNS transactions in flight
inline constexpr size_t kMaxCacheEntries = 10000; // names cached, least recently used go first

// A worker's resolver for one ResolverSpec. Owner: the worker registry
// below (or a unit test); the Loop and the spec outlive it. Destroying it
// completes nothing: pending queries are detached silently (their owners
// are being torn down with the worker).
class Resolver {
public:
    // Opens no socket yet (first use does). `spec` must outlive it.
    Resolver(Loop& loop, const ResolverSpec& spec);
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Looks up `name` (a host name, case-insensitive, a trailing dot
    // allowed; an IPv4 or IPv6 literal answers itself) for `q`, giving up
    // after `timeout` (resolver_timeout). A query already pending is
    // cancelled first. Done: the outcome is in q; Pending: q.done runs
    // later. A name that cannot be a DNS name ("a..b", a label over 63
    // bytes) is Done with NxDomain ("Host not found"), as nginx says.
    Resolve resolve(ResolveQuery& q, std::string_view name, conf::Duration timeout);

    const ResolverSpec& spec() const { return spec_; }

    // For tests and status: names cached (pending ones included) and DNS
    // transactions in flight.
    size_t cache_size() const;
    size_t pending_names() const;

private:
    friend class ResolveQuery;
    struct Impl;
    void cancel(ResolveQuery& q);

    Loop& loop_;
    const ResolverSpec& spec_;
    std::unique_ptr<Impl> impl_;
};

// The worker's Resolver for `spec`, made at first use and shared by every
// spec equal to it (ResolverSpec::same_as); destroyed at worker exit
// (resolver_module's exit_worker). Worker loop thread only, after
// event::worker_loop() is set.
Resolver& worker_resolver(const ResolverSpec& spec);

}  // namespace gatehouse::event
