// Helpers for the balancing methods' tests: run many requests through a
// PeerPicker and count where they went.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "fixture.h"
#include "upstream/upstream.h"

namespace gatehouse::test {

// Each request takes the first peer offered and succeeds at once.
// `prepare` may set the key or client on the picker.
template <typename Prepare>
std::vector<int> spread(Group& g, int n, event::Msec now, Prepare prepare) {
    // The configured servers: a group with a zone also has the upstream
    // API's (runtime_servers.cc), after them, empty.
    size_t configured = 0;
    for (const upstream::Server& s : g.u().servers) configured += !s.api;
    std::vector<int> count(configured, 0);
    for (int i = 0; i < n; ++i) {
        upstream::PeerPicker pk(g.u(), now);
        prepare(pk, i);
        upstream::Peer* p = pk.next();
        REQUIRE(p != nullptr);
        ++count[static_cast<size_t>(g.letter(p) - 'a')];
        pk.done(p, false, now);
    }
    return count;
}

inline std::vector<int> spread(Group& g, int n, event::Msec now = 1'000'000) {
    return spread(g, n, now, [](upstream::PeerPicker&, int) {});
}

// Each count's share of the total is within `tolerance` (absolute, 0.02
// for 2 %) of its weight's share.
inline void check_shares(const std::vector<int>& count, const std::vector<int>& weights, double tolerance) {
    REQUIRE(count.size() == weights.size());
    double n = 0, w = 0;
    for (size_t i = 0; i < count.size(); ++i) {
        n += count[i];
        w += weights[i];
    }
    for (size_t i = 0; i < count.size(); ++i) {
        CAPTURE(i);
        CAPTURE(count[i]);
        CHECK(std::fabs(count[i] / n - weights[i] / w) <= tolerance);
    }
}

}  // namespace gatehouse::test
