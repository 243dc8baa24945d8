#include "http/v2/request_head.h"

#include <doctest/doctest.h>

#include <memory_resource>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace gatehouse::http;
using namespace gatehouse::http::v2;
using namespace std::literals;

namespace {

struct Built {
    bool ok = false;
    RequestHead head;
    std::string_view line;
    std::string_view reason;
};

Built build(RequestHeadBuilder& b) {
    Built out;
    out.ok = b.finish(out.head, out.line, out.reason);
    return out;
}

std::string field(const RequestHead& h, std::string_view name) {
    const HeaderField* f = h.find(name);
    return f ? std::string(f->value) : "<none>";
}

}  // namespace

TEST_CASE("http/v2/request_head: pseudo-headers make the request line and target") {
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    CHECK(b.add(":method", "GET"));
    CHECK(b.add(":scheme", "https"));
    CHECK(b.add(":authority", "Example.com:8443"));
    CHECK(b.add(":path", "/a/b?x=1"));
    CHECK(b.add("user-agent", "t"));
    Built r = build(b);
    REQUIRE(r.ok);
    CHECK(r.line == "GET /a/b?x=1 HTTP/2.0");
    CHECK(r.head.method == Method::Get);
    CHECK(r.head.target == "/a/b?x=1");
    CHECK(r.head.form == TargetForm::Origin);
    // :authority stands for Host, and a Host field is added for modules.
    CHECK(r.head.host == "Example.com:8443");
    CHECK(field(r.head, "host") == "Example.com:8443");
    CHECK(r.head.headers.size() == 2);
    CHECK(r.head.headers[0].name == "host");
    CHECK(r.head.headers[1].name == "user-agent");
}

TEST_CASE("http/v2/request_head: a Host field without :authority is the host") {
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    b.add(":method", "POST");
    b.add(":scheme", "http");
    b.add(":path", "/");
    b.add("host", "h.test");
    b.add("content-length", "42");
    Built r = build(b);
    REQUIRE(r.ok);
    CHECK(r.head.host == "h.test");
    CHECK(r.head.headers.size() == 2);
    REQUIRE(r.head.framing.content_length.has_value());
    CHECK(*r.head.framing.content_length == 42);
}

TEST_CASE("http/v2/request_head: cookies are joined into one field in place") {
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    b.add(":method", "GET");
    b.add(":scheme", "http");
    b.add(":authority", "a");
    b.add(":path", "/");
    b.add("accept", "*/*");
    b.add("cookie", "a=1");
    b.add("x-y", "z");
    b.add("cookie", "b=2");
    Built r = build(b);
    REQUIRE(r.ok);
    REQUIRE(r.head.headers.size() == 4);
    CHECK(r.head.headers[0].name == "host");
    CHECK(r.head.headers[1].name == "accept");
    CHECK(r.head.headers[2].name == "cookie");
    CHECK(r.head.headers[2].value == "a=1; b=2");
    CHECK(r.head.headers[3].name == "x-y");
}

TEST_CASE("http/v2/request_head: targets this server does not take") {
    std::pmr::monotonic_buffer_resource mem;
    SUBCASE("a path that is not origin-form") {
        RequestHeadBuilder b(&mem, 4096, 100);
        b.add(":method", "GET");
        b.add(":scheme", "http");
        b.add(":path", "x");
        Built r = build(b);
        CHECK_FALSE(r.ok);
        CHECK(r.reason == "client sent invalid :path header");
    }
    SUBCASE("CONNECT is authority-form") {
        RequestHeadBuilder b(&mem, 4096, 100);
        b.add(":method", "CONNECT");
        b.add(":authority", "h:443");
        Built r = build(b);
        REQUIRE(r.ok);
        CHECK(r.head.form == TargetForm::Authority);
        CHECK(r.line == "CONNECT h:443 HTTP/2.0");
    }
    SUBCASE("OPTIONS *") {
        RequestHeadBuilder b(&mem, 4096, 100);
        b.add(":method", "OPTIONS");
        b.add(":scheme", "http");
        b.add(":path", "*");
        Built r = build(b);
        REQUIRE(r.ok);
        CHECK(r.head.form == TargetForm::Asterisk);
    }
}

TEST_CASE("http/v2/request_head: the header list is bounded in bytes and fields") {
    std::pmr::monotonic_buffer_resource mem;
    SUBCASE("bytes, 32 of overhead per field (RFC 9113 6.5.2)") {
        RequestHeadBuilder b(&mem, 90, 100);
        CHECK(b.add("a", std::string(30, 'x')));  // 1 + 30 + 32 = 63
        CHECK_FALSE(b.add("b", ""));              // 63 + 33 = 96 > 90
        CHECK(b.too_large());
        CHECK_FALSE(b.too_many());
    }
    SUBCASE("fields") {
        RequestHeadBuilder b(&mem, 1 << 20, 3);
        CHECK(b.add("a", "1"));
        CHECK(b.add("b", "1"));
        CHECK(b.add("c", "1"));
        CHECK(b.add(":path", "/"));  // pseudo-headers do not count
        CHECK_FALSE(b.add("d", "1"));
        CHECK(b.too_large());
        CHECK(b.too_many());
        CHECK_FALSE(b.add("e", "1"));
    }
}

TEST_CASE("http/v2/request_head: :authority and Host are checked as HTTP/1's Host") {
    for (std::string_view bad : {""sv, "."sv, "a/b"sv, "a..b"sv, "u@h"sv, "h:x"sv}) {
        CAPTURE(bad);
        std::pmr::monotonic_buffer_resource mem;
        RequestHeadBuilder b(&mem, 4096, 100);
        b.add(":method", "GET");
        b.add(":scheme", "http");
        b.add(":path", "/");
        b.add("host", bad);
        Built r = build(b);
        CHECK_FALSE(r.ok);
        CHECK(r.reason == "client sent invalid host header");
    }
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    b.add(":method", "GET");
    b.add(":scheme", "http");
    b.add(":authority", "[::1]:8080");
    b.add(":path", "/");
    CHECK(build(b).ok);
}

TEST_CASE("http/v2/request_head: a field is bounded by one header buffer") {
    for (auto [name, value, ok] : {std::tuple{"x-a"sv, std::string(16, 'v'), true},
                                   std::tuple{"x-a"sv, std::string(17, 'v'), false},
                                   std::tuple{"x-aaaaaaaaaaaaaaa"sv, std::string(1, 'v'), false}}) {
        CAPTURE(name);
        std::pmr::monotonic_buffer_resource mem;
        RequestHeadBuilder b(&mem, 4096, 100);
        b.set_max_field(16);
        b.add(":method", "GET");
        CHECK(b.add(name, value) == ok);
        CHECK(b.too_large() == !ok);
        CHECK_FALSE(b.too_many());
    }
}

TEST_CASE("http/v2/request_head: a Host that differs from :authority is refused") {
    for (auto [host, ok] : {std::pair{"Example.com"sv, true}, std::pair{"other.com"sv, false},
                            std::pair{"example.com:80"sv, false}}) {
        CAPTURE(host);
        std::pmr::monotonic_buffer_resource mem;
        RequestHeadBuilder b(&mem, 4096, 100);
        b.add(":method", "GET");
        b.add(":scheme", "http");
        b.add(":authority", "example.com");
        b.add(":path", "/");
        b.add("host", host);
        Built r = build(b);
        CHECK(r.ok == ok);
        if (!ok) CHECK(r.reason == "client sent \":authority\" and \"Host\" headers with different values");
    }
}

TEST_CASE("http/v2/request_head: fields nghttp2 would drop are judged by nginx's rules") {
    struct Head {
        std::pmr::monotonic_buffer_resource mem;
        RequestHeadBuilder b{&mem, 4096, 100};
    };
    std::vector<std::unique_ptr<Head>> heads;
    auto head = [&heads](bool underscores, bool ignore_invalid) {
        RequestHeadBuilder* b = &heads.emplace_back(std::make_unique<Head>())->b;
        b->set_name_rules(underscores, ignore_invalid);
        b->add(":method", "GET");
        b->add(":scheme", "http");
        b->add(":authority", "h");
        b->add(":path", "/");
        return b;
    };
    SUBCASE("a name with a control, a space, ':' or upper case: 400") {
        for (std::string_view name : {"x:foo"sv, "x foo"sv, "foo\x02"sv, "X-Foo"sv, "foo\x7f"sv}) {
            CAPTURE(name);
            RequestHeadBuilder* b = head(false, true);
            CHECK(b->add_unchecked(name, "v"));
            CHECK(b->bad() == "client sent invalid header name");
        }
    }
    SUBCASE("a value with NUL, CR or LF: 400") {
        for (std::string_view value : {"a\r\nreferer: x"sv, "a\nb"sv, std::string_view("a\0b", 3)}) {
            RequestHeadBuilder* b = head(false, true);
            b->add_unchecked("x-foo", value);
            CHECK(b->bad() == "client sent header with invalid value");
        }
    }
    SUBCASE("other control characters and edge whitespace in a value are kept") {
        RequestHeadBuilder* b = head(false, true);
        b->add_unchecked("x-foo", "a\x01b\x7f ");
        Built r = build(*b);
        REQUIRE(r.ok);
        CHECK(b->bad().empty());
        CHECK(field(r.head, "x-foo") == "a\x01b\x7f ");
    }
    SUBCASE("odd names and underscores follow ignore_invalid_headers and underscores_in_headers") {
        RequestHeadBuilder* b = head(false, true);
        b->add_unchecked("x.foo", "1");
        b->add("x_bar", "2");
        Built r = build(*b);
        CHECK(field(r.head, "x.foo") == "<none>");
        CHECK(field(r.head, "x_bar") == "<none>");
        b = head(true, true);
        b->add("x_bar", "2");
        CHECK(field(build(*b).head, "x_bar") == "2");
        b = head(false, false);
        b->add_unchecked("x.foo", "1");
        b->add("x_bar", "2");
        r = build(*b);
        CHECK(field(r.head, "x.foo") == "1");
        CHECK(field(r.head, "x_bar") == "2");
        CHECK(b->bad().empty());
    }
}

TEST_CASE("http/v2/request_head: an extended CONNECT for a WebSocket is the HTTP/1.1 upgrade") {
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    b.add(":method", "CONNECT");
    b.add(":protocol", "websocket");
    b.add(":scheme", "https");
    b.add(":authority", "example.com");
    b.add(":path", "/chat?room=1");
    b.add("sec-websocket-version", "13");
    b.add("sec-websocket-protocol", "chat");
    b.add("sec-websocket-key", "c2VudCBieSB0aGUgY2xpZW50");  // RFC 8441 5: not sent; dropped
    CHECK(b.extended_connect());
    CHECK(b.websocket());
    Built r;
    r.ok = b.finish(r.head, r.line, r.reason, "dGhlIHNhbXBsZSBub25jZQ==");
    REQUIRE(r.ok);
    CHECK(r.head.method == Method::Get);
    CHECK(r.head.method_name == "GET");
    CHECK(r.head.form == TargetForm::Origin);
    CHECK(r.head.target == "/chat?room=1");
    CHECK(r.line == "GET /chat?room=1 HTTP/2.0");
    CHECK(field(r.head, "upgrade") == "websocket");
    CHECK(field(r.head, "connection") == "upgrade");
    CHECK(field(r.head, "sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ==");
    CHECK(field(r.head, "sec-websocket-version") == "13");
    CHECK(field(r.head, "sec-websocket-protocol") == "chat");
    size_t keys = 0;
    for (const HeaderField& f : r.head.headers) keys += f.name == "sec-websocket-key";
    CHECK(keys == 1);
}

TEST_CASE("http/v2/request_head: an extended CONNECT for another protocol is refused") {
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    b.add(":method", "CONNECT");
    b.add(":protocol", "connect-udp");
    b.add(":scheme", "https");
    b.add(":authority", "example.com");
    b.add(":path", "/.well-known/masque/udp/192.0.2.6/443/");
    CHECK(b.extended_connect());
    CHECK_FALSE(b.websocket());
    Built r = build(b);
    CHECK_FALSE(r.ok);
    CHECK(r.reason == "client sent unsupported :protocol header");
}

TEST_CASE("http/v2/request_head: the WebSocket protocol token is case-insensitive; plain CONNECT is not extended") {
    std::pmr::monotonic_buffer_resource mem;
    RequestHeadBuilder b(&mem, 4096, 100);
    b.add(":method", "CONNECT");
    b.add(":protocol", "WebSocket");
    CHECK(b.websocket());
    RequestHeadBuilder plain(&mem, 4096, 100);
    plain.add(":method", "CONNECT");
    plain.add(":authority", "example.com:443");
    CHECK_FALSE(plain.extended_connect());
    Built r = build(plain);
    REQUIRE(r.ok);
    CHECK(r.head.form == TargetForm::Authority);
}
