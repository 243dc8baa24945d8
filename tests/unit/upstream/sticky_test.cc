// Tests of src/upstream/sticky.cc and the sticky part of PeerPicker
// (round_robin.cc): the directive's arguments (a row per error message,
// and the registry's file:line), the server id, the Set-Cookie field,
// and the pick: the cookie's server first, else the method.
#include "upstream/sticky.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "fixture.h"
#include "upstream/upstream.h"

using namespace gatehouse;
using gatehouse::test::CapturedLog;
using gatehouse::test::Group;
using gatehouse::test::HttpConf;
using upstream::Peer;
using upstream::PeerPicker;
using upstream::StickyCookie;

namespace {

constexpr event::Msec kT0 = 1'000'000;

Result<StickyCookie> parse(std::vector<std::string_view> args) { return upstream::parse_sticky(args); }

std::string error_of(std::vector<std::string_view> args) {
    auto c = parse(std::move(args));
    REQUIRE_FALSE(c.ok());
    return c.message();
}

std::string conf_error(const std::string& text) {
    HttpConf c;
    auto s = c.add("t.conf", text);
    if (s) s = c.finish();
    REQUIRE_FALSE(s.ok());
    return s.message();
}

std::string id_of(const Peer& p) { return std::string(upstream::view(upstream::sticky_id(p))); }

}  // namespace

TEST_CASE("upstream/sticky: every parameter") {
    auto c = parse({"cookie", "srv_id", "expires=1h", "domain=.example.com", "httponly", "samesite=LAX", "secure",
                    "path=/"});
    REQUIRE(c.ok());
    CHECK(c->name == "srv_id");
    CHECK(c->expires == 3600);
    CHECK(c->domain == ".example.com");
    CHECK(c->path == "/");
    CHECK(c->httponly);
    CHECK(c->secure);
    CHECK(c->samesite == "Lax");
    CHECK(c->samesite_var.empty());

    auto d = parse({"cookie", "s"});
    REQUIRE(d.ok());
    CHECK(d->expires == upstream::kStickySession);
    CHECK(d->domain.empty());
    CHECK(d->path.empty());
    CHECK_FALSE(d->httponly);
    CHECK(d->samesite.empty());

    CHECK(parse({"cookie", "s", "expires=max"})->expires == upstream::kStickyMax);
    CHECK(parse({"cookie", "s", "expires=90"})->expires == 90);
    CHECK(parse({"cookie", "s", "expires=1d"})->expires == 86400);
    CHECK(parse({"cookie", "s", "samesite=$v"})->samesite_var == "$v");
    CHECK(parse({"cookie", "s", "samesite=none"})->samesite == "None");
    CHECK(parse({"cookie", "s", "samesite=Strict"})->samesite == "Strict");
}

TEST_CASE("upstream/sticky: errors") {
    CHECK(error_of({"route", "$a"}) == "invalid parameter \"route\"");
    CHECK(error_of({"learn"}) == "invalid parameter \"learn\"");
    CHECK(error_of({"cookie"}) == "invalid number of arguments");
    CHECK(error_of({"cookie", "a;b"}) == "invalid cookie name \"a;b\"");
    CHECK(error_of({"cookie", "a=b"}) == "invalid cookie name \"a=b\"");
    CHECK(error_of({"cookie", "s", "bogus"}) == "invalid parameter \"bogus\"");
    CHECK(error_of({"cookie", "s", "expires="}) == "invalid expires value \"\"");
    CHECK(error_of({"cookie", "s", "expires=soon"}) == "invalid expires value \"soon\"");
    CHECK(error_of({"cookie", "s", "expires=-1"}) == "invalid expires value \"-1\"");
    CHECK(error_of({"cookie", "s", "samesite=maybe"}) == "invalid samesite value \"maybe\"");
    CHECK(error_of({"cookie", "s", "samesite=$"}) == "invalid samesite value \"$\"");
    CHECK(error_of({"cookie", "s", "domain="}) == "invalid domain value \"\"");
    CHECK(error_of({"cookie", "s", "path=/a;b"}) == "invalid path value \"/a;b\"");
    CHECK(error_of({"cookie", "s", "path=/", "path=/b"}) == "duplicate parameter \"path=/b\"");
    CHECK(error_of({"cookie", "s", "expires=1h", "expires=max"}) == "duplicate parameter \"expires=max\"");
}

TEST_CASE("upstream/sticky: the registry names file:line") {
    CHECK(conf_error("upstream u {\n  server 127.0.0.1:1;\n  sticky cookie s bogus;\n}\n") ==
          "invalid parameter \"bogus\" in t.conf:3");
    CHECK(conf_error("upstream u {\n  server 127.0.0.1:1;\n  sticky cookie s expires=x;\n}\n") ==
          "invalid expires value \"x\" in t.conf:3");
    CHECK(conf_error("upstream u {\n  sticky cookie a;\n  server 127.0.0.1:1;\n  sticky cookie b;\n}\n") ==
          "\"sticky\" directive is duplicate in t.conf:4");
    CHECK(conf_error("sticky cookie a;\n").find("\"sticky\" directive is not allowed here in t.conf:1") == 0);
}

TEST_CASE("upstream/sticky: the id is the MD5 of the address, in hex") {
    // md5("127.0.0.1:8001"), as `printf %s 127.0.0.1:8001 | md5sum` says.
    CHECK(upstream::view(upstream::sticky_id("127.0.0.1:8001")) == "c69a4fd523c3ca0ca67cda2f009f1ea6");
    const auto a = upstream::sticky_id("127.0.0.1:8001");
    CHECK(upstream::view(a) == upstream::view(upstream::sticky_id("127.0.0.1:8001")));
    CHECK(upstream::view(a) != upstream::view(upstream::sticky_id("127.0.0.1:8002")));
    // RFC 1321's test vector.
    CHECK(upstream::view(upstream::sticky_id("abc")) == "900150983cd24fb0d6963f7d28e17f72");
    for (char ch : a) CHECK(((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')));
}

TEST_CASE("upstream/sticky: the Set-Cookie field") {
    StickyCookie c = *parse({"cookie", "srv_id"});
    CHECK(upstream::sticky_set_cookie(c, "abc", 0, "") == "srv_id=abc");
    c = *parse({"cookie", "srv_id", "expires=max", "path=/"});
    CHECK(upstream::sticky_set_cookie(c, "abc", 0, "") == "srv_id=abc; expires=Thu, 31-Dec-2037 23:55:55 GMT; path=/");
    c = *parse({"cookie", "srv_id", "expires=1h", "domain=.example.com", "httponly", "samesite=strict", "secure",
                "path=/app"});
    // 2026-01-01 00:00:00 UTC, plus an hour.
    CHECK(upstream::sticky_set_cookie(c, "abc", 1767225600, c.samesite) ==
          "srv_id=abc; expires=Thu, 01-Jan-2026 01:00:00 GMT; max-age=3600; domain=.example.com; httponly; "
          "samesite=Strict; secure; path=/app");
    CHECK(upstream::sticky_samesite("") == "");
    CHECK(upstream::sticky_samesite("LAX") == "Lax");
    CHECK(upstream::sticky_samesite("none") == "None");
    CHECK(upstream::sticky_samesite("strict") == "Strict");
    CHECK(upstream::sticky_samesite("whatever") == "Strict");
}

TEST_CASE("upstream/sticky: the cookie's server first, else the method") {
    CapturedLog log;  // the failures' warnings
    Group g({"", "", ""}, "  sticky cookie s;\n");
    REQUIRE(g.u().sticky != nullptr);
    const std::string c = id_of(g.u().peers[2]);
    for (int i = 0; i < 6; ++i) {
        PeerPicker pk(g.u(), kT0);
        pk.set_sticky(c);
        Peer* p = pk.next();
        CHECK(g.letter(p) == 'c');
        pk.done(p, false, kT0);
    }
    SUBCASE("a value naming no server: round robin") {
        std::string seen;
        for (int i = 0; i < 3; ++i) {
            PeerPicker pk(g.u(), kT0);
            pk.set_sticky("0123456789abcdef0123456789abcdef");
            Peer* p = pk.next();
            seen += g.letter(p);
            pk.done(p, false, kT0);
        }
        std::sort(seen.begin(), seen.end());
        CHECK(seen == "abc");
    }
    SUBCASE("a retry is the method's, never the cookie's server again") {
        PeerPicker pk(g.u(), kT0);
        pk.set_sticky(c);
        Peer* p = pk.next();
        CHECK(g.letter(p) == 'c');
        pk.done(p, true, kT0);
        Peer* q = pk.next();
        CHECK((g.letter(q) == 'a' || g.letter(q) == 'b'));
        pk.done(q, false, kT0);
    }
    SUBCASE("failed max_fails times: balanced") {
        PeerPicker pk(g.u(), kT0);
        pk.set_sticky(c);
        pk.done(pk.next(), true, kT0);
        PeerPicker again(g.u(), kT0 + 1);
        again.set_sticky(c);
        CHECK(g.letter(again.next()) != 'c');
    }
}

TEST_CASE("upstream/sticky: down, max_conns and backups") {
    Group g({"", "down", "max_conns=1", "backup"}, "  sticky cookie s;\n");
    auto pick = [&](size_t i) {
        PeerPicker pk(g.u(), kT0);
        pk.set_sticky(id_of(g.u().peers[i]));
        Peer* p = pk.next();
        pk.done(p, false, kT0);
        return g.letter(p);
    };
    CHECK(pick(0) == 'a');
    CHECK(pick(1) != 'b');
    // The backup is not offered while a primary is usable.
    CHECK(pick(3) != 'd');
    PeerPicker busy(g.u(), kT0);
    busy.set_sticky(id_of(g.u().peers[2]));
    Peer* held = busy.next();
    REQUIRE(g.letter(held) == 'c');
    CHECK(pick(2) != 'c');  // at max_conns
    busy.done(held, false, kT0);
}

TEST_CASE("upstream/sticky: a backup keeps its sessions while no primary is usable") {
    CapturedLog log;  // the tier switches
    Group g({"down", "down", "backup", "backup"}, "  sticky cookie s;\n");
    for (int i = 0; i < 4; ++i) {
        PeerPicker pk(g.u(), kT0);
        pk.set_sticky(id_of(g.u().peers[3]));
        Peer* p = pk.next();
        CHECK(g.letter(p) == 'd');
        pk.done(p, false, kT0);
    }
    // Not with a method without backups ("backup" is refused there), nor
    // in a tier above the first usable one ("backup=2").
    Group t({"down", "backup", "backup=2"}, "  sticky cookie s;\n");
    PeerPicker pk(t.u(), kT0);
    pk.set_sticky(id_of(t.u().peers[2]));
    CHECK(t.letter(pk.next()) == 'b');
}

TEST_CASE("upstream/sticky: a group without it ignores the value") {
    Group g({"", ""});
    CHECK(g.u().sticky == nullptr);
    const std::string b = id_of(g.u().peers[1]);
    PeerPicker pk(g.u(), kT0);
    pk.set_sticky(b);
    CHECK(g.letter(pk.next()) == 'a');
}
