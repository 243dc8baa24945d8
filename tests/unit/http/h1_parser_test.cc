#include "http/h1_parser.h"

#include <doctest/doctest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

using namespace gatehouse::http;
using namespace std::literals;

namespace {

constexpr std::string_view kGet = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

// A parser with its storage; keeps the bytes the views point into.
template <class Parser>
struct Fixture {
    std::array<HeaderField, 128> storage{};
    Parser p;
    std::string buf;
    explicit Fixture(Limits l = {}) : p(l, storage) {}
    ParseResult whole(std::string_view s) {
        buf = s;
        return p.parse(buf);
    }
};
using Req = Fixture<RequestParser>;
using Resp = Fixture<ResponseParser>;

ParseResult req(std::string_view s, Limits l = {}) { return Req(l).whole(s); }
ParseResult resp(std::string_view s, Limits l = {}) { return Resp(l).whole(s); }

// Feeds s one byte more per call. With `relocate`, each call sees a fresh
// copy at a new address (the previous one freed), as when a connection
// grows its buffer; the parser must carry its views along.
template <class Parser>
ParseResult bytewise(Parser& p, std::string_view s, bool relocate,
                     std::unique_ptr<std::string>& keep) {
    ParseResult r;
    keep = std::make_unique<std::string>();
    keep->reserve(s.size());
    for (size_t i = 0; i <= s.size(); ++i) {
        if (relocate) {
            auto next = std::make_unique<std::string>(s.substr(0, i));
            keep = std::move(next);
        } else {
            keep->assign(s.substr(0, i));
        }
        r = p.parse(*keep);
        if (r.state != ParseState::NeedMore) break;
    }
    return r;
}

bool same(const ParseResult& a, const ParseResult& b) {
    return a.state == b.state && a.status == b.status && a.consumed == b.consumed &&
           a.reason == b.reason;
}

void check_status(std::string_view s, uint16_t status, std::string_view reason, Limits l = {}) {
    CAPTURE(s);
    ParseResult r = req(s, l);
    CHECK(r.state == ParseState::Error);
    CHECK(r.status == status);
    CHECK(r.reason == reason);
}

}  // namespace

TEST_CASE("http/h1_parser: a simple GET") {
    Req f;
    ParseResult r = f.whole("GET /index.html?x=1 HTTP/1.1\r\nHost: Example.com\r\n"
                            "User-Agent:  curl/8.0  \r\nAccept: */*\r\n\r\nBODY");
    REQUIRE(r.state == ParseState::Done);
    CHECK(r.consumed == f.buf.size() - 4);
    const RequestHead& h = f.p.head();
    CHECK(h.method == Method::Get);
    CHECK(h.method_name == "GET");
    CHECK(h.target == "/index.html?x=1");
    CHECK(h.path == "/index.html?x=1");
    CHECK(h.form == TargetForm::Origin);
    CHECK(h.version_major == 1);
    CHECK(h.version_minor == 1);
    CHECK(h.host == "Example.com");
    REQUIRE(h.headers.size() == 3);
    CHECK(h.headers[1].name == "User-Agent");
    CHECK(h.headers[1].value == "curl/8.0");
    CHECK(h.find("user-agent") == &h.headers[1]);
    CHECK(h.find("accept")->value == "*/*");
    CHECK(h.find("cookie") == nullptr);
    CHECK_FALSE(h.framing.content_length);
    CHECK_FALSE(h.framing.chunked);
    CHECK(h.keep_alive());
    // Views point into the caller's buffer.
    CHECK(h.target.data() == f.buf.data() + 4);
}

TEST_CASE("http/h1_parser: methods, known and other") {
    const std::pair<std::string_view, Method> rows[] = {
        {"GET", Method::Get},         {"HEAD", Method::Head},       {"POST", Method::Post},
        {"PUT", Method::Put},         {"DELETE", Method::Delete},   {"OPTIONS", Method::Options},
        {"TRACE", Method::Trace},     {"PATCH", Method::Patch},     {"PROPFIND", Method::Other},
        {"get", Method::Other},       {"M-SEARCH", Method::Other},
    };
    for (auto [name, m] : rows) {
        Req f;
        REQUIRE(f.whole(std::string(name) + " / HTTP/1.1\r\nHost: a\r\n\r\n").state ==
                ParseState::Done);
        CHECK(f.p.head().method == m);
        CHECK(f.p.head().method_name == name);
    }
    CHECK(parse_method("CONNECT") == Method::Connect);
}

TEST_CASE("http/h1_parser: invalid method is 400, seen before the line ends") {
    check_status("G(ET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "client sent invalid method");
    check_status(" GET / HTTP/1.1\r\n\r\n", 400, "client sent invalid method");
    check_status("GET\t/ HTTP/1.1\r\n\r\n", 400, "client sent invalid method");
    // A TLS ClientHello on the plain port: no need to wait for a LF.
    ParseResult r = req(std::string_view("\x16\x03\x01\x02\x00", 5));
    CHECK(r.state == ParseState::Error);
    CHECK(r.status == 400);
    CHECK(req("GET").state == ParseState::NeedMore);
}

TEST_CASE("http/h1_parser: request line shape") {
    const char* bad[] = {
        "GET  / HTTP/1.1\r\n\r\n",     // two SP
        "GET /  HTTP/1.1\r\n\r\n",     // two SP
        "GET / HTTP/1.1 \r\n\r\n",     // trailing SP
        "GET /\r\n\r\n",               // HTTP/0.9
        "GET\r\n\r\n",
        "GET / HTTP/1.1\rX\r\n\r\n",   // bare CR
    };
    for (const char* s : bad) {
        CAPTURE(s);
        ParseResult r = req(s);
        CHECK(r.state == ParseState::Error);
        CHECK(r.status == 400);
    }
    check_status("GET  / HTTP/1.1\r\n\r\n", 400, "client sent invalid request target");
    check_status("GET /\r\n\r\n", 400, "client sent invalid request line");
    check_status("GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n", 400, "client sent invalid version");
}

TEST_CASE("http/h1_parser: versions") {
    check_status("GET / HTTP/2.0\r\n\r\n", 505, "client sent unsupported HTTP version");
    check_status("GET / HTTP/3.0\r\n\r\n", 505, "client sent unsupported HTTP version");
    check_status("GET / HTTP/0.9\r\n\r\n", 505, "client sent unsupported HTTP version");
    check_status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "client sent unsupported HTTP version");
    for (const char* v : {"http/1.1", "HTTP/1.10", "HTTP/2", "HTTP/1", "HTTP/1.x", "HTTPS/1.1",
                          "HTTP/11.1"})
        check_status(std::string("GET / ") + v + "\r\nHost: a\r\n\r\n", 400,
                     "client sent invalid version");
    Req f;
    REQUIRE(f.whole("GET / HTTP/1.0\r\n\r\n").state == ParseState::Done);
    CHECK(f.p.head().version_minor == 0);
    CHECK(f.p.head().host.empty());
    Req g;
    REQUIRE(g.whole("GET / HTTP/1.2\r\nHost: a\r\n\r\n").state == ParseState::Done);
    CHECK(g.p.head().version_minor == 2);
    CHECK(g.p.head().keep_alive());
}

TEST_CASE("http/h1_parser: request-target forms") {
    SUBCASE("absolute-form records scheme, authority and path; it overrides Host") {
        Req f;
        REQUIRE(f.whole("GET HTTP://Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: other\r\n\r\n")
                    .state == ParseState::Done);
        const RequestHead& h = f.p.head();
        CHECK(h.form == TargetForm::Absolute);
        CHECK(h.scheme == Scheme::Http);
        CHECK(h.authority == "Example.com:8080");
        CHECK(h.path == "/a/b?c=d");
        CHECK(h.host == "Example.com:8080");
    }
    SUBCASE("absolute-form without a path, or with a query only") {
        Req f;
        REQUIRE(f.whole("GET https://h HTTP/1.1\r\nHost: h\r\n\r\n").state == ParseState::Done);
        CHECK(f.p.head().scheme == Scheme::Https);
        CHECK(f.p.head().path.empty());
        Req g;
        REQUIRE(g.whole("GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n").state == ParseState::Done);
        CHECK(g.p.head().authority == "h");
        CHECK(g.p.head().path == "?x");
    }
    SUBCASE("authority-form is CONNECT's, with a port") {
        Req f;
        REQUIRE(f.whole("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
                    .state == ParseState::Done);
        CHECK(f.p.head().form == TargetForm::Authority);
        CHECK(f.p.head().authority == "example.com:443");
        CHECK(f.p.head().host == "example.com:443");
        CHECK(f.p.head().path.empty());
    }
    SUBCASE("asterisk-form is OPTIONS's") {
        Req f;
        REQUIRE(f.whole("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").state == ParseState::Done);
        CHECK(f.p.head().form == TargetForm::Asterisk);
    }
    SUBCASE("obs-text is taken, as nginx does") {
        CHECK(req("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n").state == ParseState::Done);
    }
    SUBCASE("errors") {
        const char* bad[] = {
            "CONNECT example.com HTTP/1.1",      "CONNECT / HTTP/1.1",
            "CONNECT http://a:1/ HTTP/1.1",      "GET example.com:80 HTTP/1.1",
            "GET * HTTP/1.1",                    "POST * HTTP/1.1",
            "GET ftp://a/ HTTP/1.1",             "GET http://user@a/ HTTP/1.1",
            "GET http:///x HTTP/1.1",            "GET http://a b/ HTTP/1.1",
            "GET /a#frag HTTP/1.1",              "GET /a\x7f HTTP/1.1",
            "GET /a\x01 HTTP/1.1",               "GET a/b HTTP/1.1",
            "GET http:/a HTTP/1.1",              "GET http://a\\b/ HTTP/1.1",
        };
        for (const char* line : bad) {
            const std::string s = std::string(line) + "\r\nHost: a\r\n\r\n";
            CAPTURE(s);
            ParseResult r = req(s);
            CHECK(r.state == ParseState::Error);
            CHECK(r.status == 400);
        }
        check_status("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400,
                     "client sent invalid request target");
    }
}

TEST_CASE("http/h1_parser: Host") {
    check_status("GET / HTTP/1.1\r\n\r\n", 400,
                 "client sent HTTP/1.1 request without \"Host\" header");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400,
                 "client sent duplicate \"Host\" header");
    check_status("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400,
                 "client sent duplicate \"Host\" header");
    // Absolute-form still needs a Host in HTTP/1.1 (RFC 9112 3.2).
    check_status("GET http://a/ HTTP/1.1\r\n\r\n", 400,
                 "client sent HTTP/1.1 request without \"Host\" header");
    const char* bad[] = {"",        "a/b",      "a\\b",        "a b",        "a..b",    ".a",
                         "a@b",     "[::1",     "[]",          "[::1]x",     "[v1]",    "a:12345678",
                         "a:x",     "%zz",      "a\tb",        "[1.2.3.4]",  "[v.x]",   "[vg.x]",
                         "[v1.]",   "[v1.a/b]", "[v1.%41]",    "[a..b::1]",  "[::1]..", "[fe80::1%25eth0]",
                         "a..",     "%41..b",   "..",          "a...b:80"};
    for (const char* host : bad)
        check_status(std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n", 400,
                     "client sent invalid \"Host\" header");
    // IPvFuture (RFC 3986 3.2.2) as nginx takes it, every allowed symbol.
    const char* good[] = {"a", "Example.COM.", "1.2.3.4:80", "[::1]", "[::1]:8080",
                          "a:", "x_y-z~", "%41b", "[::ffff:1.2.3.4]", "[v1.x]",
                          "[v0aF.!$&'()*+,;=-._~Az09:]:80", "a.b.c.", "a.%2E"};
    for (const char* host : good) {
        Req f;
        CAPTURE(host);
        REQUIRE(f.whole(std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n").state ==
                ParseState::Done);
        CHECK(f.p.head().host == host);
    }
}

TEST_CASE("http/h1_parser: parse_authority and normalize_host") {
    auto a = parse_authority("Example.COM.:8080");
    REQUIRE(a);
    CHECK(a->host == "Example.COM.");
    CHECK(a->port == "8080");
    CHECK(a->has_port);
    char buf[64];
    CHECK(normalize_host(a->host, buf) == "example.com");
    auto v6 = parse_authority("[::ABC]");
    REQUIRE(v6);
    CHECK_FALSE(v6->has_port);
    CHECK(normalize_host(v6->host, buf) == "[::abc]");
    std::string s(5, '\0');
    CHECK(normalize_host("LOCAL", s) == "local");
    // A whole authority, as RequestHead::host holds it: the port goes.
    CHECK(normalize_host("Example.COM.:8080", buf) == "example.com");
    CHECK(normalize_host("a:", buf) == "a");
    CHECK(normalize_host("[::ABC]:443", buf) == "[::abc]");
    CHECK(normalize_host("[::1]", buf) == "[::1]");
    CHECK(normalize_host("[vA.B:C]:80", buf) == "[va.b:c]");
}

TEST_CASE("http/h1_parser: fields a request may carry once") {
    const char* names[] = {"If-Modified-Since", "If-Unmodified-Since", "If-Match", "If-None-Match",
                           "If-Range",          "Content-Range",       "Expect",   "Authorization"};
    for (const char* name : names) {
        CAPTURE(name);
        check_status(std::string("GET / HTTP/1.1\r\nHost: a\r\n") + name + ": x\r\n" + name + ": x\r\n\r\n",
                     400, "client sent duplicate header line");
        Req f;
        REQUIRE(f.whole(std::string("GET / HTTP/1.1\r\nHost: a\r\n") + name + ": x\r\n\r\n").state ==
                ParseState::Done);
    }
    // Others may repeat; so may these in a response.
    Req f;
    CHECK(f.whole("GET / HTTP/1.1\r\nHost: a\r\nVia: a\r\nVia: b\r\nCookie: a\r\nCookie: b\r\n\r\n").state ==
          ParseState::Done);
}

TEST_CASE("http/h1_parser: header line syntax") {
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n", 400,
                 "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\n: y\r\n\r\n", 400, "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX y\r\n\r\n", 400, "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX(: y\r\n\r\n", 400,
                 "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"sv, 400,
                 "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400,
                 "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400,
                 "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", 400,
                 "client sent invalid header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n", 400,
                 "client sent invalid header line");
    // The word-at-a-time scan must see a bad byte anywhere in a long value.
    for (size_t at = 0; at < 40; ++at) {
        std::string v(40, 'v');
        v[at] = '\x01';
        check_status("GET / HTTP/1.1\r\nHost: a\r\nX: " + v + "\r\n\r\n", 400,
                     "client sent invalid header line");
    }
    Req f;
    REQUIRE(f.whole("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb \xff\t \r\nY:\r\nZ:   \r\n\r\n").state ==
            ParseState::Done);
    CHECK(f.p.head().find("x")->value == "a\tb \xff");
    CHECK(f.p.head().find("y")->value.empty());
    CHECK(f.p.head().find("z")->value.empty());
}

// Field names and values are scanned a word at a time: random lines with
// a bad byte anywhere (all 256 values, at every offset of the words and
// of their tails) must be judged as the byte-at-a-time definition
// judges them: a name of tchar (RFC 9110 5.6.2), a value of HTAB, SP,
// VCHAR and obs-text (RFC 9110 5.5).
TEST_CASE("http/h1_parser: field lines judged as the byte definition judges them") {
    auto tchar = [](unsigned char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos);
    };
    auto vchar = [](unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); };
    uint64_t x = 0x9e3779b97f4a7c15ull;
    auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    const std::string_view plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
    for (int k = 0; k < 20000; ++k) {
        std::string name, value;
        const size_t nl = 1 + next() % 24, vl = next() % 40;
        for (size_t i = 0; i < nl; ++i) name += plain[next() % plain.size()];
        for (size_t i = 0; i < vl; ++i) value += static_cast<char>(0x21 + next() % 0x5e);
        // One or two bytes of any value, in the name or the value.
        for (int b = static_cast<int>(next() % 3); b > 0; --b) {
            const auto c = static_cast<char>(next() % 256);
            if (c == '\n' || c == ':') continue;
            std::string& into = (next() % 2 || value.empty()) ? name : value;
            into[next() % into.size()] = c;
        }
        bool ok = true;
        for (char c : name) ok = ok && tchar(static_cast<unsigned char>(c));
        for (char c : value) ok = ok && vchar(static_cast<unsigned char>(c));
        const std::string head = "HTTP/1.1 200 OK\r\n" + name + ":" + value + "\r\n\r\n";
        Resp f;
        CAPTURE(head);
        const ParseResult r = f.whole(head);
        REQUIRE((r.state == ParseState::Done) == ok);
        if (ok) {
            size_t b = 0, e = value.size();
            while (b < e && (value[b] == ' ' || value[b] == '\t')) ++b;
            while (e > b && (value[e - 1] == ' ' || value[e - 1] == '\t')) --e;
            REQUIRE(f.p.head().headers.size() == 1);
            CHECK(f.p.head().headers[0].name == name);
            CHECK(f.p.head().headers[0].value == value.substr(b, e - b));
        }
    }
}

TEST_CASE("http/h1_parser: names that are not plain, as ignore_invalid_headers wants") {
    Limits ignore;
    ignore.ignore_invalid_names = true;
    ignore.underscores = false;
    const std::string msg =
        "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1\r\nx.foo: 2\r\nA<b: 3\r\n"
        "\xc3\xa9: 4\r\nX-Ok: 5\r\n\r\n";
    SUBCASE("left out, counted, the first kept for the log") {
        Req f(ignore);
        REQUIRE(f.whole(msg).state == ParseState::Done);
        const RequestHead& h = f.p.head();
        REQUIRE(h.headers.size() == 2);
        CHECK(h.headers[0].name == "Host");
        CHECK(h.headers[1].name == "X-Ok");
        CHECK(h.find("x-forwarded-for") == nullptr);
        CHECK(h.ignored_fields == 4);
        CHECK(h.first_ignored == "X_Forwarded_For: 1");
    }
    SUBCASE("underscores allowed") {
        ignore.underscores = true;
        Req f(ignore);
        REQUIRE(f.whole(msg).state == ParseState::Done);
        CHECK(f.p.head().find("x_forwarded_for")->value == "1");
        CHECK(f.p.head().ignored_fields == 3);
    }
    SUBCASE("off: tokens pass, anything else is 400") {
        check_status(msg, 400, "client sent invalid header line");
        Req f;
        REQUIRE(f.whole("GET / HTTP/1.1\r\nHost: a\r\nx_foo: 1\r\n.foo: 2\r\n\r\n").state ==
                ParseState::Done);
        CHECK(f.p.head().headers.size() == 3);
        CHECK(f.p.head().ignored_fields == 0);
    }
    SUBCASE("never left out: a control byte, a space, a leading colon") {
        check_status("GET / HTTP/1.1\r\nHost: a\r\nfoo\x02: 1\r\n\r\n", 400,
                     "client sent invalid header line", ignore);
        check_status("GET / HTTP/1.1\r\nHost: a\r\n:foo: 1\r\n\r\n", 400,
                     "client sent invalid header line", ignore);
        check_status("GET / HTTP/1.1\r\nHost: a\r\nfoo bar: 1\r\n\r\n", 400,
                     "client sent invalid header line", ignore);
        check_status("GET / HTTP/1.1\r\nHost: a\r\n foo: 1\r\n\r\n", 400,
                     "client sent folded header line", ignore);
    }
    SUBCASE("the first left-out line moves with the buffer") {
        RequestParser p(ignore, std::span<HeaderField>());
        std::unique_ptr<std::string> keep;
        REQUIRE(bytewise(p, msg, true, keep).state == ParseState::Done);
        CHECK(p.head().first_ignored == "X_Forwarded_For: 1");
    }
}

TEST_CASE("http/h1_parser: many fields outgrow the caller's storage") {
    // No count limit by default: max_head bounds the fields, and the table
    // grows past the caller's array, views and all, even while the buffer
    // moves.
    std::string msg = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 1000; ++i) msg += "X" + std::to_string(i) + ": v" + std::to_string(i) + "\r\n";
    msg += "\r\n";
    std::array<HeaderField, 4> small{};
    RequestParser p({}, small);
    std::unique_ptr<std::string> keep;
    REQUIRE(bytewise(p, msg, true, keep).state == ParseState::Done);
    REQUIRE(p.head().headers.size() == 1001);
    CHECK(p.head().headers[1000].name == "X999");
    CHECK(p.head().headers[1000].value == "v999");
    CHECK(p.head().find("x500")->value == "v500");
    // The next message reuses the grown table.
    p.reset();
    REQUIRE(p.parse(kGet).state == ParseState::Done);
    CHECK(p.head().headers.size() == 1);
}

TEST_CASE("http/h1_parser: obs-fold is 400") {
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400,
                 "client sent folded header line");
    check_status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400,
                 "client sent folded header line");
    // Whitespace between the request line and the first field (RFC 9112 2.2).
    check_status("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "client sent folded header line");
}

TEST_CASE("http/h1_parser: line endings") {
    SUBCASE("bare LF is a line end unless reject_bare_lf") {
        Req f;
        REQUIRE(f.whole("GET / HTTP/1.1\nHost: a\nX: y\r\n\n").state == ParseState::Done);
        CHECK(f.p.head().host == "a");
        CHECK(f.p.head().find("x")->value == "y");
        Limits strict;
        strict.reject_bare_lf = true;
        check_status("GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "client sent invalid request line",
                     strict);
        check_status("GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "client sent invalid header line",
                     strict);
        check_status("GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "client sent invalid header line",
                     strict);
        CHECK(req(kGet, strict).state == ParseState::Done);
    }
    SUBCASE("empty lines before the request line are skipped") {
        Req f;
        ParseResult r = f.whole("\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        REQUIRE(r.state == ParseState::Done);
        CHECK(r.consumed == f.buf.size());
        CHECK(f.p.head().method_name == "GET");
        CHECK(req("\r\n\r\n").state == ParseState::NeedMore);
    }
    SUBCASE("a bare CR before the request line is an error") {
        check_status("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "client sent invalid request line");
    }
}

TEST_CASE("http/h1_parser: Content-Length") {
    Req f;
    REQUIRE(f.whole("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0042\r\n\r\n").state ==
            ParseState::Done);
    CHECK(f.p.head().framing.content_length == 42u);
    Req g;
    REQUIRE(g.whole("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 9223372036854775807\r\n\r\n")
                .state == ParseState::Done);
    CHECK(g.p.head().framing.content_length == 9223372036854775807ull);
    const char* bad[] = {"",    "+1",  "-1",  "1 1", "1,1", "0x10", "1.0",
                         "9223372036854775808", "99999999999999999999999"};
    for (const char* v : bad)
        check_status(std::string("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ") + v +
                         "\r\n\r\n",
                     400, "client sent invalid \"Content-Length\" header");
    // Duplicates are refused even when equal (see h1_parser.h).
    check_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                 400, "client sent duplicate \"Content-Length\" header");
    check_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                 400, "client sent duplicate \"Content-Length\" header");
    check_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400,
                 "client sent invalid \"Content-Length\" header");
}

TEST_CASE("http/h1_parser: Transfer-Encoding") {
    for (const char* te : {"chunked", "Chunked", "CHUNKED", " chunked ", ", chunked,"}) {
        Req f;
        CAPTURE(te);
        REQUIRE(f.whole(std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ") + te +
                        "\r\n\r\n")
                    .state == ParseState::Done);
        CHECK(f.p.head().framing.chunked);
        CHECK(f.p.head().framing.has_transfer_encoding);
        CHECK_FALSE(f.p.head().framing.content_length);
    }
    auto te = [](std::string v) { return "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + v +
                                         "\r\n\r\n"; };
    const std::string_view invalid = "client sent invalid \"Transfer-Encoding\" header";
    check_status(te("gzip, chunked"), 501, "client sent unknown transfer coding");
    check_status(te("x-custom, chunked"), 501, "client sent unknown transfer coding");
    check_status(te("gzip"), 400, invalid);
    check_status(te("identity"), 400, invalid);
    check_status(te("chunked, gzip"), 400, invalid);
    check_status(te("chunked, chunked"), 400, invalid);
    check_status(te("chunked;ext=1"), 400, invalid);
    check_status(te("chunked x"), 400, invalid);
    check_status(te(""), 400, invalid);
    check_status(te("\"chunked\""), 400, invalid);
    check_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n",
                 400, invalid);
    // Lines add up to one list: the last coding is the one that counts.
    check_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                 "Transfer-Encoding: gzip\r\n\r\n",
                 400, invalid);
    check_status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n",
                 501, "client sent unknown transfer coding");
    check_status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
                 "\r\n\r\n",
                 400,
                 "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same "
                 "time");
    check_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
                 "client sent \"Transfer-Encoding\" in HTTP/1.0 request");
    check_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 400,
                 "client sent \"Transfer-Encoding\" in HTTP/1.0 request");
}

TEST_CASE("http/h1_parser: Connection and keep-alive") {
    auto head = [](Req& f, std::string s) {
        REQUIRE(f.whole(s).state == ParseState::Done);
        return f.p.head();
    };
    Req a, b, c, d, e;
    RequestHead h = head(a, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    CHECK(h.framing.conn_close);
    CHECK_FALSE(h.keep_alive());
    h = head(b, "GET / HTTP/1.0\r\n\r\n");
    CHECK_FALSE(h.keep_alive());
    h = head(c, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    CHECK(h.framing.conn_keep_alive);
    CHECK(h.keep_alive());
    h = head(d, "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                "Upgrade: websocket\r\n\r\n");
    CHECK(h.framing.conn_upgrade);
    CHECK(h.framing.conn_keep_alive);
    CHECK_FALSE(h.framing.conn_close);
    h = head(e, "GET / HTTP/1.1\r\nHost: a\r\nConnection: te\r\nConnection: CLOSE\r\n\r\n");
    CHECK(h.framing.conn_close);
}

TEST_CASE("http/h1_parser: Expect: 100-continue") {
    Req a, b, c;
    REQUIRE(a.whole("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .state == ParseState::Done);
    CHECK(a.p.head().expect_100_continue);
    // RFC 9110 10.1.1: ignored from an HTTP/1.0 client.
    REQUIRE(b.whole("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").state == ParseState::Done);
    CHECK_FALSE(b.p.head().expect_100_continue);
    REQUIRE(c.whole("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n").state ==
            ParseState::Done);
    CHECK_FALSE(c.p.head().expect_100_continue);
}

TEST_CASE("http/h1_parser: limits at the limit and one past") {
    Limits l;
    l.max_start_line = 64;
    l.max_header_line = 32;
    l.max_head = 256;
    l.max_headers = 4;

    SUBCASE("request line: 414") {
        const std::string at = "GET /" + std::string(64 - 14, 'a') + " HTTP/1.1";
        REQUIRE(at.size() == 64);
        CHECK(req(at + "\r\nHost: a\r\n\r\n", l).state == ParseState::Done);
        CHECK(req(at + "\nHost: a\r\n\r\n", l).state == ParseState::Done);
        const std::string past = "GET /" + std::string(65 - 14, 'a') + " HTTP/1.1";
        check_status(past + "\r\nHost: a\r\n\r\n", 414, "client sent too long URI", l);
        // Without its line end: seen as soon as there is one byte too many.
        check_status(past.substr(0, 65), 414, "client sent too long URI", l);
        CHECK(req(past.substr(0, 64), l).state == ParseState::NeedMore);
        CHECK(req(at + "\r", l).state == ParseState::NeedMore);
    }
    SUBCASE("header line: 431") {
        const std::string at = "X: " + std::string(29, 'v');
        REQUIRE(at.size() == 32);
        CHECK(req("GET / HTTP/1.1\r\nHost: a\r\n" + at + "\r\n\r\n", l).state == ParseState::Done);
        check_status("GET / HTTP/1.1\r\nHost: a\r\n" + at + "v\r\n\r\n", 431,
                     "client sent too long header line", l);
        check_status("GET / HTTP/1.1\r\nHost: a\r\n" + at + "v", 431,
                     "client sent too long header line", l);
    }
    SUBCASE("head size: 431") {
        std::string head = "GET / HTTP/1.1\r\nHost: a\r\n";
        const std::string fill = "X: " + std::string(256 - head.size() - 4 - 3, 'v') + "\r\n";
        l.max_header_line = 1024;
        head += fill;
        REQUIRE(head.size() + 2 == 256);
        CHECK(req(head + "\r\n", l).state == ParseState::Done);
        check_status("\r\n" + head + "\r\n", 431, "client sent too large request header", l);
        check_status("\r\n\r\n" + head, 431, "client sent too large request header", l);
        CHECK(req("\r\n" + head, l).state == ParseState::NeedMore);
    }
    SUBCASE("header count: 431") {
        std::string head = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
        CHECK(req(head + "\r\n", l).state == ParseState::Done);
        check_status(head + "D: 4\r\n\r\n", 431, "client sent too many header lines", l);
    }
}

TEST_CASE("http/h1_parser: pipelined requests") {
    Req f;
    f.buf = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: b\r\n"
            "Content-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: c\r\n\r\nGET /4";
    std::string_view in = f.buf;
    ParseResult r = f.p.parse(in);
    REQUIRE(r.state == ParseState::Done);
    CHECK(f.p.head().target == "/1");
    // Done and Error stick until reset().
    CHECK(same(f.p.parse(in), r));
    in.remove_prefix(r.consumed);
    f.p.reset();
    r = f.p.parse(in);
    REQUIRE(r.state == ParseState::Done);
    CHECK(f.p.head().target == "/2");
    REQUIRE(f.p.head().framing.content_length == 3u);
    in.remove_prefix(r.consumed + 3);
    f.p.reset();
    r = f.p.parse(in);
    REQUIRE(r.state == ParseState::Done);
    CHECK(f.p.head().target == "/3");
    CHECK(f.p.head().host == "c");
    in.remove_prefix(r.consumed);
    f.p.reset();
    CHECK(f.p.parse(in).state == ParseState::NeedMore);
}

TEST_CASE("http/h1_parser: byte by byte equals whole, in place or moved") {
    const std::string inputs[] = {
        std::string(kGet),
        "\r\n\r\nPOST http://x.org:81/p?q HTTP/1.1\r\nHost: y\r\nTransfer-Encoding: chunked\r\n"
        "Connection: keep-alive\r\nExpect: 100-continue\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
        "G\x01T / HTTP/1.1\r\n\r\n",
        "GET /" + std::string(100, 'a') + "\x01 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n" + std::string(100, 'X') + ": 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\n\r",
        "GE" + std::string(80, 'T') + "\x01",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    };
    Limits l;
    l.max_start_line = 64;
    l.max_header_line = 64;
    l.max_head = 150;
    for (const std::string& s : inputs) {
        CAPTURE(s);
        Req whole(l);
        const ParseResult w = whole.whole(s);
        for (bool relocate : {false, true}) {
            Req f(l);
            std::unique_ptr<std::string> keep;
            const ParseResult b = bytewise(f.p, s, relocate, keep);
            CHECK(same(w, b));
            if (w.state != ParseState::Done) continue;
            const RequestHead& x = whole.p.head();
            const RequestHead& y = f.p.head();
            auto off = [](std::string_view v, const std::string& base) {
                return v.data() - base.data();
            };
            CHECK(off(y.target, *keep) == off(x.target, whole.buf));
            CHECK(y.target == x.target);
            CHECK(y.method_name == x.method_name);
            CHECK(y.authority == x.authority);
            CHECK(y.path == x.path);
            CHECK(y.host == x.host);
            CHECK(off(y.host, *keep) == off(x.host, whole.buf));
            REQUIRE(y.headers.size() == x.headers.size());
            for (size_t i = 0; i < x.headers.size(); ++i) {
                CHECK(off(y.headers[i].name, *keep) == off(x.headers[i].name, whole.buf));
                CHECK(y.headers[i].value == x.headers[i].value);
            }
            CHECK(y.framing.chunked == x.framing.chunked);
            CHECK(y.expect_100_continue == x.expect_100_continue);
        }
    }
}

TEST_CASE("http/h1_parser: the status line of a response") {
    Resp f;
    ParseResult r = f.whole("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello");
    REQUIRE(r.state == ParseState::Done);
    CHECK(r.consumed == f.buf.size() - 5);
    CHECK(f.p.head().status == 404);
    CHECK(f.p.head().reason == "Not Found");
    CHECK(f.p.head().framing.content_length == 5u);
    CHECK(f.p.head().headers.size() == 2);

    Resp g;
    REQUIRE(g.whole("HTTP/1.0 200\r\n\r\n").state == ParseState::Done);
    CHECK(g.p.head().status == 200);
    CHECK(g.p.head().reason.empty());
    CHECK_FALSE(g.p.head().keep_alive());
    Resp h;
    REQUIRE(h.whole("HTTP/1.1 204 \r\nTransfer-Encoding: chunked\r\n\r\n").state ==
            ParseState::Done);
    CHECK(h.p.head().framing.chunked);
    CHECK(h.p.head().reason.empty());
    // No Host needed in a response; Host is not even looked at.
    CHECK(resp("HTTP/1.1 200 OK\r\nHost: a/b\r\nHost: c\r\n\r\n").state == ParseState::Done);
}

TEST_CASE("http/h1_parser: response errors are 502") {
    auto bad = [](std::string_view s, std::string_view reason) {
        CAPTURE(s);
        ParseResult r = resp(s);
        CHECK(r.state == ParseState::Error);
        CHECK(r.status == 502);
        CHECK(r.reason == reason);
    };
    bad("HTTP/1.1 99 X\r\n\r\n", "upstream sent invalid status line");
    bad("HTTP/1.1 2000 X\r\n\r\n", "upstream sent invalid status line");
    bad("HTTP/1.1 20x X\r\n\r\n", "upstream sent invalid status line");
    bad("HTTP/1.1  200 X\r\n\r\n", "upstream sent invalid status line");
    bad("HTTP/1.1 200 A\x01\r\n\r\n", "upstream sent invalid status line");
    bad("http/1.1 200 OK\r\n\r\n", "upstream sent invalid status line");
    bad("\r\nHTTP/1.1 200 OK\r\n\r\n", "upstream sent invalid status line");
    bad("HTTP/2.0 200 OK\r\n\r\n", "upstream sent unsupported HTTP version");
    bad("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", "upstream sent invalid header line");
    bad("HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", "upstream sent folded header line");
    bad("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "upstream sent duplicate \"Content-Length\" header");
    bad("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "upstream sent invalid \"Content-Length\" header");
    bad("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time");
    bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "upstream sent unknown transfer coding");
    bad("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "upstream sent unknown transfer coding");
    bad("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "upstream sent \"Transfer-Encoding\" in HTTP/1.0 response");
    Limits l;
    l.max_start_line = 20;
    ParseResult r = resp("HTTP/1.1 200 " + std::string(20, 'x'), l);
    CHECK(r.status == 502);
    CHECK(r.reason == "upstream sent too long status line");
}
