#include "http/cache_policy.h"

#include <doctest/doctest.h>

#include <vector>

using namespace gatehouse::http;

namespace {

constexpr time_t kNow = 1'800'000'000;

struct Case {
    int status = 200;
    std::vector<CacheField> headers;
    uint8_t ignore = 0;
    std::vector<CacheValid> valid;
    bool can_revalidate = false;

    CacheVerdict run() const {
        CacheInput in;
        in.status = status;
        in.headers = headers;
        in.now = kNow;
        in.ignore = ignore;
        in.valid = valid;
        in.can_revalidate = can_revalidate;
        return cache_verdict(in);
    }
};

CacheVerdict with(std::vector<CacheField> h, std::vector<CacheValid> valid = {}) {
    Case c;
    c.headers = std::move(h);
    c.valid = std::move(valid);
    return c.run();
}

}  // namespace

TEST_CASE("http/cache_policy: each source of a lifetime alone") {
    CacheVerdict v = with({{"Cache-Control", "max-age=60"}});
    CHECK(v.store);
    CHECK(v.valid_until == kNow + 60);
    v = with({{"cache-control", "public, s-maxage=30, max-age=60"}});
    CHECK(v.valid_until == kNow + 30);  // s-maxage is the shared cache's
    v = with({{"Expires", "Thu, 31 Dec 2037 23:55:55 GMT"}});
    CHECK(v.store);
    CHECK(v.valid_until == 2145916555);
    v = with({{"X-Accel-Expires", "60"}});
    CHECK(v.valid_until == kNow + 60);
    v = with({{"X-Accel-Expires", "@60"}});
    CHECK(v.store);  // stored, stale at once
    CHECK(v.valid_until == 60);
    v = with({}, {{200, 600}});
    CHECK(v.valid_until == kNow + 600);
    v = with({});
    CHECK_FALSE(v.store);
    CHECK(v.why_not == "no lifetime");
}

TEST_CASE("http/cache_policy: the order of authority, whatever the order of the fields") {
    // Cache-Control over Expires.
    CHECK(with({{"Cache-Control", "max-age=60"}, {"Expires", "Thu, 01 Jan 1970 00:00:01 GMT"}}).valid_until ==
          kNow + 60);
    CHECK(with({{"Expires", "Thu, 01 Jan 1970 00:00:01 GMT"}, {"Cache-Control", "max-age=60"}}).valid_until ==
          kNow + 60);
    // X-Accel-Expires over both, no-cache included.
    for (auto h : {std::vector<CacheField>{{"X-Accel-Expires", "60"},
                                           {"Expires", "Thu, 01 Jan 1970 00:00:01 GMT"},
                                           {"Cache-Control", "no-cache"}},
                   std::vector<CacheField>{{"Expires", "Thu, 01 Jan 1970 00:00:01 GMT"},
                                           {"Cache-Control", "no-cache"},
                                           {"X-Accel-Expires", "60"}}}) {
        CacheVerdict v = with(h);
        CHECK(v.store);
        CHECK(v.valid_until == kNow + 60);
    }
    // "X-Accel-Expires: 0" stores nothing, before or after the others.
    CHECK_FALSE(with({{"X-Accel-Expires", "0"}, {"Cache-Control", "max-age=60"}}).store);
    CHECK_FALSE(with({{"Cache-Control", "max-age=60"}, {"X-Accel-Expires", "0"}}).store);
    // The first X-Accel-Expires decides.
    CHECK(with({{"X-Accel-Expires", "60"}, {"X-Accel-Expires", "0"}}).valid_until == kNow + 60);
    // The headers over proxy_cache_valid.
    CHECK(with({{"Cache-Control", "max-age=5"}}, {{0, 600}}).valid_until == kNow + 5);
}

TEST_CASE("http/cache_policy: what stores nothing") {
    CHECK(with({{"Cache-Control", "no-store"}}, {{0, 60}}).why_not == "Cache-Control: no-store or private");
    CHECK_FALSE(with({{"Cache-Control", "private, max-age=60"}}).store);
    CHECK_FALSE(with({{"Cache-Control", "no-cache, max-age=60"}}).store);
    CHECK_FALSE(with({{"Cache-Control", "no-cache"}, {"Cache-Control", "max-age=60"}}).store);
    CHECK_FALSE(with({{"Cache-Control", "max-age=0"}}).store);
    CHECK(with({{"Set-Cookie", "a=b"}, {"Cache-Control", "max-age=60"}}).why_not == "Set-Cookie");
    CHECK(with({{"Vary", "Accept, *"}}, {{0, 60}}).why_not == "Vary: *");
    CHECK_FALSE(with({{"Expires", "Thu, 01 Jan 1970 00:00:01 GMT"}}).store);
    CHECK_FALSE(with({{"Expires", "garbage"}}).store);  // an invalid date is the past
    CHECK_FALSE(with({}, {{0, 0}}).store);
    Case partial;
    partial.status = 206;
    partial.headers = {{"Cache-Control", "max-age=60"}};
    CHECK(partial.run().why_not == "status");
}

TEST_CASE("http/cache_policy: no-cache and max-age=0 are stored to revalidate, when that is possible") {
    Case c;
    c.headers = {{"Cache-Control", "no-cache"}, {"ETag", "\"x\""}};
    c.can_revalidate = true;
    CacheVerdict v = c.run();
    CHECK(v.store);
    CHECK(v.revalidate_always);
    CHECK(v.valid_until == kNow);
    c.headers = {{"Cache-Control", "max-age=0"}, {"Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT"}};
    CHECK(c.run().revalidate_always);
    // Without a validator, nothing to revalidate with.
    c.headers = {{"Cache-Control", "no-cache"}};
    CHECK_FALSE(c.run().store);
    // Without proxy_cache_revalidate, as nginx: not stored.
    c.headers = {{"Cache-Control", "no-cache"}, {"ETag", "\"x\""}};
    c.can_revalidate = false;
    CHECK_FALSE(c.run().store);
}

TEST_CASE("http/cache_policy: proxy_ignore_headers") {
    Case c;
    c.headers = {{"Expires", "Thu, 31 Dec 2037 23:55:55 GMT"},
                 {"Cache-Control", "max-age=60"},
                 {"X-Accel-Expires", "60"},
                 {"Set-Cookie", "a"},
                 {"Vary", "*"}};
    c.ignore = kIgnoreExpires | kIgnoreCacheControl | kIgnoreXAccelExpires | kIgnoreSetCookie | kIgnoreVary;
    CHECK(c.run().why_not == "no lifetime");
    c.valid = {{200, 10}};
    CHECK(c.run().valid_until == kNow + 10);
    c.ignore = kIgnoreXAccelExpires | kIgnoreSetCookie | kIgnoreVary;
    CHECK(c.run().valid_until == kNow + 60);
}

TEST_CASE("http/cache_policy: extensions, Age, proxy_cache_valid order") {
    CacheVerdict v = with({{"Cache-Control", "max-age=10, stale-while-revalidate=30, stale-if-error=\"600\""}});
    CHECK(v.stale_while_revalidate == 30);
    CHECK(v.stale_if_error == 600);
    // Kept with X-Accel-Expires.
    v = with({{"Cache-Control", "stale-while-revalidate=2145902155"}, {"X-Accel-Expires", "@1"}});
    CHECK(v.store);
    CHECK(v.valid_until == 1);
    CHECK(v.stale_while_revalidate == 2145902155u);
    CHECK(with({{"Age", "17"}, {"Cache-Control", "max-age=60"}}).age == 17);
    // First matching rule, "any" included, as nginx.
    Case c;
    c.status = 404;
    c.valid = {{200, 600}, {0, 60}, {404, 5}};
    CHECK(c.run().valid_until == kNow + 60);
    c.status = 500;
    c.valid = {{200, 600}};
    CHECK_FALSE(c.run().store);
    // A huge max-age is forever, not an overflow into the past.
    v = with({{"Cache-Control", "max-age=9223372036854775808"}});
    CHECK(v.store);
    CHECK(v.valid_until > kNow);
}

TEST_CASE("http/cache_policy: parse_delta_seconds") {
    CHECK(parse_delta_seconds("0") == 0);
    CHECK(parse_delta_seconds("120") == 120);
    CHECK(parse_delta_seconds("99999999999999999999") == INT32_MAX);
    CHECK(parse_delta_seconds("") == -1);
    CHECK(parse_delta_seconds("1s") == -1);
    CHECK(parse_delta_seconds("-1") == -1);
}
