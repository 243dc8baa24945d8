// Tests of src/http/limit_sync.h's parameters and of what its walk
// relies on in src/http/limit_table.h: records checked after a sequence
// number are the newest of the LRU list, and the down flag is shared.
#include "http/limit_sync.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/shm.h"
#include "http/limit_table.h"

using gatehouse::http::LimitTable;
using gatehouse::http::parse_sync_arg;
using gatehouse::http::SyncConf;
using gatehouse::shm::ZoneRegistry;
using gatehouse::shm::ZoneSet;

namespace {
const int kTag = 0;
}

TEST_CASE("http/limit_sync: sync= and fail= parameters, one row each") {
    SyncConf c;
    CHECK(parse_sync_arg("sync=fleet", c).value());
    CHECK(c.redis_name == "fleet");
    CHECK(c.synced());
    CHECK_FALSE(c.fail_closed);
    CHECK(parse_sync_arg("fail=closed", c).value());
    CHECK(c.fail_closed);
    CHECK(parse_sync_arg("fail=open", c).value());
    CHECK_FALSE(c.fail_closed);
    // Not ours: the zone directive decides (the bare NGINX Plus "sync").
    CHECK_FALSE(parse_sync_arg("sync", c).value());
    CHECK_FALSE(parse_sync_arg("rate=1r/s", c).value());
    auto bad = parse_sync_arg("fail=maybe", c);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message == "invalid parameter \"fail=maybe\"");
    auto empty = parse_sync_arg("sync=", c);
    REQUIRE_FALSE(empty);
    CHECK(empty.error().message == "invalid parameter \"sync=\"");
    SyncConf none;
    CHECK_FALSE(none.synced());
}

TEST_CASE("http/limit_sync: records checked since a walk are the newest, in sequence order") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("one", 64 * 1024, &kTag);
    REQUIRE(ref);
    auto t = LimitTable::open(*ref, "limit_req", "$k");
    REQUIRE(t);
    LimitTable::Lock lock(*t);
    auto check = [&](std::string_view k) {
        auto* n = t->find(LimitTable::hash_key(k), k);
        if (!n) n = t->insert(LimitTable::hash_key(k), k);
        else t->touch(n);
        n->seen = t->next_seq();
        n->dirty = 1;
        return n;
    };
    check("a");
    check("b");
    check("c");
    const uint64_t since = t->seq();
    CHECK(since == 3);
    check("a");
    check("d");
    // The walk from the newest stops at the first record not checked
    // since: exactly d and a.
    std::vector<std::string> walked;
    for (auto* n = t->newest(); n && n->seen > since; n = t->older(n)) walked.emplace_back(n->key());
    CHECK(walked == std::vector<std::string>{"d", "a"});
    CHECK(t->older(t->find(LimitTable::hash_key("b"), "b")) == nullptr);
}

TEST_CASE("http/limit_sync: the down flag is the zone's, seen by every handle") {
    ZoneRegistry reg;
    ZoneSet gen(reg);
    auto ref = gen.add("one", 64 * 1024, &kTag);
    REQUIRE(ref);
    auto a = LimitTable::open(*ref, "limit_req", "$k");
    auto b = LimitTable::open(*ref, "limit_req", "$k");
    REQUIRE(a);
    REQUIRE(b);
    CHECK_FALSE(b->sync_down());
    a->set_sync_down(true);
    CHECK(b->sync_down());
    a->set_sync_down(false);
    CHECK_FALSE(b->sync_down());
}
