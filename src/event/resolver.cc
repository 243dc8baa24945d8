#include "event/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "event/loop.h"

namespace gatehouse::event {

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

// Stub until the transport lands: literals answer themselves, names fail.
struct Resolver::Impl {};

Resolver::Resolver(Loop& loop, const ResolverSpec& spec) : loop_(loop), spec_(spec) {}
Resolver::~Resolver() = default;

void ResolveQuery::cancel() {
    if (resolver_) resolver_->cancel(*this);
}

void Resolver::cancel(ResolveQuery& q) { q.resolver_ = nullptr; }

Resolve Resolver::resolve(ResolveQuery& q, std::string_view name, conf::Duration) {
    q.cancel();
    q.addrs.clear();
    q.error = ResolveError::None;
    q.valid_until = loop_.now();
    std::string h(name);
    ResolvedAddr a;
    in_addr a4{};
    in6_addr a6{};
    if (inet_pton(AF_INET, h.c_str(), &a4) == 1) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr = a4;
        std::memcpy(&a.sa, &sin, sizeof sin);
        a.len = sizeof sin;
    } else if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_addr = a6;
        std::memcpy(&a.sa, &sin6, sizeof sin6);
        a.len = sizeof sin6;
    } else {
        q.error = ResolveError::TimedOut;
        return Resolve::Done;
    }
    q.addrs.push_back(a);
    return Resolve::Done;
}

size_t Resolver::cache_size() const { return 0; }
size_t Resolver::pending_names() const { return 0; }

}  // namespace gatehouse::event
