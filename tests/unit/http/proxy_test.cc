// Tests of src/http/modules/proxy.h: the pure pieces of the proxy module,
// one row per URL form, URI rule and field class.
#include "http/modules/proxy.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

using namespace gatehouse;
using namespace gatehouse::http::proxy;

namespace {

std::string url_error(std::string_view s) {
    auto u = parse_url(s);
    return u ? std::string("(ok)") : u.message();
}

}  // namespace

TEST_CASE("proxy: parse_url takes nginx's forms") {
    auto u = parse_url("http://127.0.0.1:8080");
    REQUIRE(u);
    CHECK(u->target == "127.0.0.1:8080");
    CHECK(u->host_header == "127.0.0.1:8080");
    CHECK(u->port == "8080");
    CHECK_FALSE(u->has_uri);

    u = parse_url("http://backend/two/");
    REQUIRE(u);
    CHECK(u->target == "backend");
    CHECK(u->host_header == "backend");
    CHECK(u->port == "80");
    CHECK(u->has_uri);
    CHECK(u->uri == "/two/");

    u = parse_url("HTTP://Example.com:80/");
    REQUIRE(u);
    CHECK(u->host_header == "Example.com:80");
    CHECK(u->uri == "/");

    u = parse_url("http://[::1]:8000/x");
    REQUIRE(u);
    CHECK(u->target == "[::1]:8000");
    CHECK(u->port == "8000");
    CHECK(u->uri == "/x");

    u = parse_url("http://unix:/run/app.sock");
    REQUIRE(u);
    CHECK(u->unix_socket);
    CHECK(u->target == "unix:/run/app.sock");
    CHECK(u->host_header == "localhost");
    CHECK(u->port.empty());
    CHECK_FALSE(u->has_uri);

    u = parse_url("http://unix:/run/app.sock:/api/");
    REQUIRE(u);
    CHECK(u->target == "unix:/run/app.sock");
    CHECK(u->uri == "/api/");
}

TEST_CASE("proxy: parse_url takes https, port 443 by default") {
    auto u = parse_url("https://example.com/api/");
    REQUIRE(u);
    CHECK(u->ssl);
    CHECK(u->target == "example.com");
    CHECK(u->port == "443");
    CHECK(u->uri == "/api/");
    u = parse_url("HTTPS://[::1]:8443");
    REQUIRE(u);
    CHECK(u->ssl);
    CHECK(u->port == "8443");
    CHECK_FALSE(parse_url("http://x")->ssl);
}

TEST_CASE("proxy: ssl_host drops the port of $proxy_host") {
    CHECK(ssl_host("example.com:8443") == "example.com");
    CHECK(ssl_host("example.com") == "example.com");
    CHECK(ssl_host("[::1]:8443") == "::1");
    CHECK(ssl_host("[::1]") == "::1");
    CHECK(ssl_host("backend") == "backend");
}

TEST_CASE("proxy: parse_url errors") {
    CHECK(url_error("ftp://x") == "invalid URL prefix in \"ftp://x\"");
    CHECK(url_error("backend") == "invalid URL prefix in \"backend\"");
    CHECK(parse_url("https://x", false).message() == "https protocol requires SSL support");
    CHECK(url_error("http://") == "no host in \"http://\"");
    CHECK(url_error("http:///x") == "no host in \"http:///x\"");
    CHECK(url_error("http://x:0") == "invalid port in \"http://x:0\"");
    CHECK(url_error("http://x:65536") == "invalid port in \"http://x:65536\"");
    CHECK(url_error("http://x:a") == "invalid port in \"http://x:a\"");
    CHECK(url_error("http://[::1") == "invalid host in \"http://[::1\"");
    CHECK(url_error("http://unix:") == "no path in the unix domain socket in \"http://unix:\"");
}

TEST_CASE("proxy: origin_uri follows nginx's rules") {
    Arena a;
    UriParts p;
    p.unparsed_uri = "/one/a%20b?x=1";
    p.uri = "/one/a b";
    p.args = "x=1";
    p.location = "/one/";

    SUBCASE("no URI part: the target as sent") { CHECK(origin_uri(a, p) == "/one/a%20b?x=1"); }
    SUBCASE("no URI part, URI changed: the new one, escaped") {
        p.unparsed_valid = false;
        CHECK(origin_uri(a, p) == "/one/a%20b?x=1");
        p.uri = "/new/?#%";
        p.args = "";
        CHECK(origin_uri(a, p) == "/new/%3F%23%25");
    }
    SUBCASE("URI part: the location's prefix replaced") {
        p.has_uri = true;
        p.pass_uri = "/two/";
        CHECK(origin_uri(a, p) == "/two/a%20b?x=1");
        p.pass_uri = "/";
        CHECK(origin_uri(a, p) == "/a%20b?x=1");
    }
    SUBCASE("URI part after rewrite ... break: the whole URI") {
        p.has_uri = true;
        p.pass_uri = "/two/";
        p.location_valid = false;
        p.unparsed_valid = false;
        p.uri = "/elsewhere";
        CHECK(origin_uri(a, p) == "/elsewhere?x=1");
    }
    SUBCASE("variables: the URI part as is") {
        p.has_uri = true;
        p.vars = true;
        p.pass_uri = "/fixed?k=v";
        CHECK(origin_uri(a, p) == "/fixed?k=v");
    }
    SUBCASE("absolute-form request: empty path is /") {
        p.unparsed_uri = "";
        CHECK(origin_uri(a, p) == "/");
    }
}

TEST_CASE("proxy: escape_uri") {
    char out[64];
    std::string_view in = "/a b\"#%?\x01\x7f\xff/ok-_.~";
    size_t n = escape_uri(in, out);
    CHECK(n == escaped_uri_size(in));
    CHECK(std::string_view(out, n) == "/a%20b%22%23%25%3F%01%7F%FF/ok-_.~");
}

TEST_CASE("proxy: field classes") {
    for (auto n : {"Connection", "keep-alive", "TE", "Trailer", "Upgrade", "Content-Length", "transfer-encoding",
                   "Expect", "Proxy-Connection", "Proxy-Authorization"})
        CHECK(is_hop_by_hop_request(n));
    for (auto n : {"Host", "User-Agent", "Cookie", "Trailers", "Proxy"}) CHECK_FALSE(is_hop_by_hop_request(n));
    // Every name above with its case changed, and one byte off.
    for (auto n : {"te", "EXPECT", "trailer", "UPGRADE", "connection", "KEEP-ALIVE", "content-length",
                   "TRANSFER-ENCODING", "proxy-", "PROXY-AUTHENTICATE"})
        CHECK_MESSAGE(is_hop_by_hop_request(n), std::string(n));
    for (auto n : {"", "TF", "Expecf", "Traile", "Upgradx", "Connectiom", "Keep-Alivf", "Content-Lengtx",
                   "Transfer-Encodinh", "Proxy_", "Prox-y", "Accept", "Content-Type"})
        CHECK_MESSAGE(!is_hop_by_hop_request(n), std::string(n));
    for (auto n : {"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Upgrade", "Proxy-Connection"})
        CHECK(is_hop_by_hop_response(n));
    CHECK_FALSE(is_hop_by_hop_response("Proxy-Authenticate"));
    CHECK_FALSE(is_hop_by_hop_response("Set-Cookie"));
    for (auto n : {"Date", "server", "X-Pad", "X-Accel-Redirect", "x-accel-buffering"}) CHECK(is_hidden_by_default(n));
    CHECK_FALSE(is_hidden_by_default("X-Accelerate"));
    CHECK_FALSE(is_hidden_by_default("Location"));
}

TEST_CASE("proxy: classify_response_field, every name and its near misses") {
    using F = ResponseField;
    const std::pair<const char*, F> known[] = {
        {"te", F::HopByHop},
        {"DATE", F::Hidden},
        {"etag", F::ETag},
        {"x-pad", F::Hidden},
        {"Server", F::Hidden},
        {"upgrade", F::Upgrade},
        {"Trailer", F::HopByHop},
        {"REFRESH", F::Refresh},
        {"location", F::Location},
        {"connection", F::Connection},
        {"Keep-Alive", F::HopByHop},
        {"content-type", F::ContentType},
        {"Last-Modified", F::LastModified},
        {"Content-Length", F::HopByHop},
        {"proxy-connection", F::HopByHop},
        {"Transfer-Encoding", F::HopByHop},
        {"x-accel-buffering", F::AccelBuffering},
        {"X-Accel-Limit-Rate", F::AccelLimitRate},
        {"X-Accel-", F::Hidden},
        {"X-Accel-Expires", F::Hidden},
        {"x-accel-redirect", F::Hidden},
        {"X-Accel-Charset", F::AccelCharset},
        {"x-accel-charsex", F::Hidden},
        {"X-Accel-Limit-Ratf", F::Hidden},  // X-Accel-* all the same
    };
    for (const auto& [name, kind] : known) CHECK_MESSAGE(classify_response_field(name) == kind, std::string(name));
    // The same lengths, one byte off; and the empty name.
    for (auto n : {"", "TF", "Data", "ETags", "X-Pat", "Serve", "Upgrades", "Traile", "Locatio", "Connectiom",
                   "Keep-Alivf", "Content-Typ", "Last-Modifie", "Content-Lengtx", "Proxy-Connectio",
                   "Transfer-Encodinh", "Y-Accel-Buffering", "Y-Accel-Limit-Rate", "X-Accel", "X-Accelerate",
                   "Set-Cookie", "Cache-Control"})
        CHECK_MESSAGE(classify_response_field(n) == F::Other, std::string(n));
}

TEST_CASE("proxy: connection_lists") {
    CHECK(connection_lists("close", "close"));
    CHECK(connection_lists("Keep-Alive, X-Foo", "x-foo"));
    CHECK(connection_lists(" upgrade ,close", "Upgrade"));
    CHECK_FALSE(connection_lists("x-foobar", "x-foo"));
    CHECK_FALSE(connection_lists("", "close"));
}

TEST_CASE("proxy: rewrite_prefix and Refresh") {
    Arena a;
    auto r = rewrite_prefix(a, "http://b:8080/two/x?y", "http://b:8080/two/", "/one/");
    REQUIRE(r);
    CHECK(*r == "/one/x?y");
    CHECK_FALSE(rewrite_prefix(a, "http://B:8080/two/x", "http://b:8080/two/", "/one/"));
    CHECK_FALSE(rewrite_prefix(a, "/x", "", "/y"));
    CHECK(refresh_url_offset("5; url=http://x/") == 7);
    CHECK(refresh_url_offset("5;URL=/a") == 6);
    CHECK(refresh_url_offset("5") == std::string_view::npos);
}

TEST_CASE("proxy: idempotent methods (RFC 9110 9.2.2)") {
    for (auto m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}) CHECK(is_idempotent(m));
    for (auto m : {"POST", "PATCH", "LOCK", "get", "PROPFIND"}) CHECK_FALSE(is_idempotent(m));
}

TEST_CASE("proxy: parse_cookie_flag, nginx's eight flags; the last one of a kind wins") {
    CookieFlagSet f;
    CHECK(parse_cookie_flag("Secure", f));
    CHECK(parse_cookie_flag("samesite=LAX", f));
    CHECK(f.set == (CookieFlagSet::kSecure | CookieFlagSet::kSameSite));
    CHECK(f.samesite == CookieFlagSet::SameSite::Lax);
    CHECK(parse_cookie_flag("nosecure", f));
    CHECK(f.set == CookieFlagSet::kSameSite);
    CHECK(f.clear == CookieFlagSet::kSecure);
    CHECK(parse_cookie_flag("samesite=none", f));
    CHECK(f.samesite == CookieFlagSet::SameSite::None);
    CHECK(parse_cookie_flag("nohttponly", f));
    CHECK(parse_cookie_flag("httponly", f));
    CHECK(f.set == (CookieFlagSet::kHttpOnly | CookieFlagSet::kSameSite));
    CHECK(f.clear == CookieFlagSet::kSecure);
    const CookieFlagSet before = f;
    for (std::string_view bad : {"", "samesite", "samesite=", "samesite=always", "secure ", "no"})
        CHECK_FALSE(parse_cookie_flag(bad, f));
    CHECK((f.set == before.set && f.clear == before.clear));
}
