#include <doctest/doctest.h>

#include <cstdlib>
#include <ctime>
#include <string>

#include "event/clock.h"

using namespace gatehouse::event;

namespace {

// Pins TZ for a test, so log_time() strings are predictable.
struct ScopedTz {
    explicit ScopedTz(const char* tz) {
        if (const char* old = getenv("TZ")) saved = old, had = true;
        setenv("TZ", tz, 1);
        tzset();
    }
    ~ScopedTz() {
        if (had) setenv("TZ", saved.c_str(), 1);
        else unsetenv("TZ");
        tzset();
    }
    std::string saved;
    bool had = false;
};

}  // namespace

TEST_CASE("event/clock: a fake clock moves only when advanced") {
    FakeClock c(5000, {1764547200, 250});
    CHECK(c.monotonic() == 5000);
    CHECK(c.wall().sec == 1764547200);
    CHECK(c.wall().msec == 250);
    c.advance(1800);
    CHECK(c.monotonic() == 6800);
    CHECK(c.wall().sec == 1764547202);
    CHECK(c.wall().msec == 50);
    c.set_wall({100, 0});
    CHECK(c.wall().sec == 100);
    CHECK(c.monotonic() == 6800);
}

TEST_CASE("event/clock: cached time changes only on update()") {
    FakeClock c(1000);
    CachedTime t(c);
    CHECK(t.now() == 1000);
    c.advance(42);
    CHECK(t.now() == 1000);
    t.update();
    CHECK(t.now() == 1042);
    CHECK(t.wall().msec == 42);
}

TEST_CASE("event/clock: log_time is the error log timestamp, per second") {
    ScopedTz tz("UTC");
    FakeClock c(1000, {1764547200, 0});  // 2025-12-01 00:00:00 UTC
    CachedTime t(c);
    CHECK(t.log_time() == "2025/12/01 00:00:00");
    c.advance(999);
    t.update();
    CHECK(t.log_time() == "2025/12/01 00:00:00");
    c.advance(1);
    t.update();
    CHECK(t.log_time() == "2025/12/01 00:00:01");
    c.set_wall({1767225599, 0});  // last second of 2025
    t.update();
    CHECK(t.log_time() == "2025/12/31 23:59:59");
}

TEST_CASE("event/clock: the system clock is monotonic and roughly now") {
    SystemClock& c = system_clock();
    Msec a = c.monotonic();
    Msec b = c.monotonic();
    CHECK(b >= a);
    CHECK(c.wall().sec > 1700000000);  // after 2023
    CHECK(c.wall().msec < 1000);
}
