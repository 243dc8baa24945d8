#include "core/random.h"

#include <sys/random.h>
#include <unistd.h>

namespace gatehouse {

uint64_t random64() {
    // One generator per process; the worker's loop is its only thread.
    static uint64_t s0 = 0, s1 = 0;
    static pid_t owner = 0;
    if (const pid_t me = getpid(); me != owner) {
        uint64_t seed[2] = {0, 0};
        if (getrandom(seed, sizeof seed, 0) != sizeof seed) seed[0] = static_cast<uint64_t>(me) ^ 0x9e3779b97f4a7c15ull;
        s0 = seed[0] | 1;  // never the all-zero state
        s1 = seed[1] ^ 0xbf58476d1ce4e5b9ull;
        owner = me;
    }
    uint64_t a = s0;
    const uint64_t b = s1;
    s0 = b;
    a ^= a << 23;
    s1 = a ^ b ^ (a >> 17) ^ (b >> 26);
    return s1 + b;
}

}  // namespace gatehouse
