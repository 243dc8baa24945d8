#include "cache/entry.h"

#include <doctest/doctest.h>

#include <string>

using namespace gatehouse::cache;

namespace {

constexpr std::string_view kHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"abc\"\r\n\r\n";

EntryMeta meta(uint64_t body_len) {
    EntryMeta m;
    m.valid_until = 1'800'000'060;
    m.stored_at = 1'800'000'000;
    m.age = 3;
    m.stale_while_revalidate = 10;
    m.stale_if_error = 20;
    m.flags = kRevalidateAlways;
    m.status = 200;
    m.last_modified = 1'700'000'000;
    m.variant = hash_key("gzip");
    m.body_len = body_len;
    return m;
}

std::string file(std::string_view body) {
    return serialize_header(meta(body.size()), "http://a/x", "Accept-Encoding", "\"abc\"", kHead) + std::string(body);
}

}  // namespace

TEST_CASE("cache/entry: a file round-trips") {
    const std::string f = file("hello");
    auto need = header_length(f);
    REQUIRE(need);
    CHECK(*need == f.size() - 5);
    auto e = parse_header(f, f.size());
    REQUIRE(e);
    CHECK(e->key == "http://a/x");
    CHECK(e->vary == "Accept-Encoding");
    CHECK(e->etag == "\"abc\"");
    CHECK(e->head == kHead);
    CHECK(e->body_start == f.size() - 5);
    CHECK(e->meta.valid_until == 1'800'000'060);
    CHECK(e->meta.stored_at == 1'800'000'000);
    CHECK(e->meta.age == 3);
    CHECK(e->meta.stale_while_revalidate == 10);
    CHECK(e->meta.stale_if_error == 20);
    CHECK(e->meta.flags == kRevalidateAlways);
    CHECK(e->meta.status == 200);
    CHECK(e->meta.last_modified == 1'700'000'000);
    CHECK(e->meta.variant == hash_key("gzip"));
    CHECK(e->meta.body_len == 5);
    CHECK(f.substr(e->body_start) == "hello");
}

TEST_CASE("cache/entry: the body length is written last, in place") {
    // While the body is written the header says 0: such a file, cut short
    // anywhere, never parses.
    std::string f = serialize_header(meta(0), "k", "", "", kHead) + "partial";
    CHECK(parse_header(f, f.size()).error().message == "cache file is cut short");
    char len[8];
    encode_u64(7, len);
    f.replace(kBodyLenOffset, 8, len, 8);
    CHECK(parse_header(f, f.size()));
}

TEST_CASE("cache/entry: what is not an entry is refused") {
    const std::string f = file("hello");
    CHECK(parse_header(f, f.size() - 1).error().message == "cache file is cut short");
    CHECK(parse_header(f, f.size() + 1).error().message == "cache file is cut short");
    CHECK(parse_header(std::string_view(f).substr(0, 50), f.size()).error().message == "cache file is cut short");
    std::string bad = f;
    bad[0] = 'X';
    CHECK(parse_header(bad, bad.size()).error().message == "cache file has a bad magic");
    bad = f;
    bad[57] = 0x7f;  // a key length far past the limit
    CHECK(parse_header(bad, bad.size()).error().message == "cache file has a bad header");
    bad = f;
    bad[62] = 1;  // reserved bytes must be zero
    CHECK_FALSE(parse_header(bad, bad.size()));
    std::string nohead = serialize_header(meta(0), "k", "", "", "junk");
    CHECK_FALSE(parse_header(nohead, nohead.size()));
    // Every truncation of the header part is refused, never misread.
    for (size_t n = 0; n < f.size() - 5; ++n) CHECK_FALSE(parse_header(std::string_view(f).substr(0, n), f.size()));
}
