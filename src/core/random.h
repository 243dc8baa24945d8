// Fast random numbers for identifiers ($request_id, trace and span ids):
// xorshift128+ seeded from getrandom() on first use in each process, and
// seeded again when the pid changes, so forked workers never share a
// sequence. Not for secrets: what must be unguessable (DNS query ids,
// TLS keys) reads getrandom() or OpenSSL itself.
#pragma once

#include <cstdint>

namespace gatehouse {

uint64_t random64();

}  // namespace gatehouse
