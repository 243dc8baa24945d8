#include "event/clock.h"

#include <cstdio>

namespace gatehouse::event {

Msec SystemClock::monotonic() const {
    timespec ts;
    // CLOCK_MONOTONIC is a vDSO call; it cannot fail with a valid clock id.
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<Msec>(ts.tv_sec) * 1000 + static_cast<Msec>(ts.tv_nsec / 1000000);
}

WallTime SystemClock::wall() const {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return {static_cast<int64_t>(ts.tv_sec), static_cast<uint32_t>(ts.tv_nsec / 1000000)};
}

SystemClock& system_clock() {
    static SystemClock c;
    return c;
}

void CachedTime::update() {
    now_ = clock_.monotonic();
    wall_ = clock_.wall();
    if (wall_.sec == log_sec_) return;
    // localtime_r() reads the zone file once (first call), then only
    // computes; once a second is cheap enough for the worker.
    log_sec_ = wall_.sec;
    time_t t = static_cast<time_t>(wall_.sec);
    struct tm tm;
    localtime_r(&t, &tm);
    // Unsigned and bounded only so that -Wformat-truncation can prove the
    // fit; no real date is changed.
    auto two = [](int v) { return static_cast<unsigned>(v) % 100u; };
    snprintf(log_time_, sizeof log_time_, "%04u/%02u/%02u %02u:%02u:%02u",
             static_cast<unsigned>(tm.tm_year + 1900) % 10000u, two(tm.tm_mon + 1),
             two(tm.tm_mday), two(tm.tm_hour), two(tm.tm_min), two(tm.tm_sec));
}

}  // namespace gatehouse::event
