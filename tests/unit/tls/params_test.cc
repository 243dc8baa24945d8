// Tests of src/tls/params.h: a row per value and per error message.
#include "tls/params.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace gatehouse::tls;

namespace {

template <typename R>
std::string error_of(const R& r) {
    REQUIRE_FALSE(r.ok());
    return r.message();
}

template <typename F>
auto with(F f, std::vector<std::string_view> words) {
    return f(std::span<const std::string_view>(words));
}

}  // namespace

TEST_CASE("tls/params: parse_protocols takes nginx's names in any order") {
    CHECK(with(parse_protocols, {"TLSv1.2", "TLSv1.3"}).value() == (kTLSv1_2 | kTLSv1_3));
    CHECK(with(parse_protocols, {"TLSv1.3"}).value() == kTLSv1_3);
    CHECK(with(parse_protocols, {"TLSv1.3", "TLSv1", "TLSv1.1"}).value() == (kTLSv1 | kTLSv1_1 | kTLSv1_3));
    // Accepted as nginx does, but they add nothing OpenSSL 3 can speak.
    CHECK(with(parse_protocols, {"SSLv3", "TLSv1.2"}).value() == (kSSLv3 | kTLSv1_2));
    CHECK(kDefaultProtocols == (kTLSv1_2 | kTLSv1_3));
}

TEST_CASE("tls/params: parse_protocols errors") {
    CHECK(error_of(with(parse_protocols, {"TLSv1.4"})) == "invalid value \"TLSv1.4\"");
    CHECK(error_of(with(parse_protocols, {"tlsv1.2"})) == "invalid value \"tlsv1.2\"");
    CHECK(error_of(with(parse_protocols, {"SSLv2", "SSLv3"})) == "no TLS protocol in \"SSLv2 SSLv3\"");
}

TEST_CASE("tls/params: parse_session_cache") {
    auto off = with(parse_session_cache, {"off"}).value();
    CHECK(off.mode == SessionCache::Mode::Off);
    auto none = with(parse_session_cache, {"none"}).value();
    CHECK(none.mode == SessionCache::Mode::None);
    CHECK(SessionCache{}.mode == SessionCache::Mode::None);  // nginx's default

    auto b = with(parse_session_cache, {"builtin"}).value();
    CHECK(b.mode == SessionCache::Mode::Store);
    CHECK(b.builtin);
    CHECK(b.builtin_sessions == 20480);
    CHECK_FALSE(b.shared);
    CHECK(with(parse_session_cache, {"builtin:1000"}).value().builtin_sessions == 1000);

    auto s = with(parse_session_cache, {"shared:SSL:10m"}).value();
    CHECK(s.shared);
    CHECK_FALSE(s.builtin);
    CHECK(s.shared_name == "SSL");
    CHECK(s.shared_size == 10u << 20);

    auto both = with(parse_session_cache, {"builtin:10", "shared:a:b:64k"}).value();
    CHECK(both.builtin);
    CHECK(both.builtin_sessions == 10);
    CHECK(both.shared_name == "a:b");  // the size follows the last colon
    CHECK(both.shared_size == 65536);
}

TEST_CASE("tls/params: parse_session_cache errors") {
    CHECK(error_of(with(parse_session_cache, {"on"})) == "invalid session cache \"on\"");
    CHECK(error_of(with(parse_session_cache, {"off", "builtin"})) == "invalid session cache \"off\"");
    CHECK(error_of(with(parse_session_cache, {"builtin", "none"})) == "invalid session cache \"none\"");
    CHECK(error_of(with(parse_session_cache, {"builtin:"})) == "invalid session cache \"builtin:\"");
    CHECK(error_of(with(parse_session_cache, {"builtin:0"})) == "invalid session cache \"builtin:0\"");
    CHECK(error_of(with(parse_session_cache, {"builtin:x"})) == "invalid session cache \"builtin:x\"");
    CHECK(error_of(with(parse_session_cache, {"builtin", "builtin:5"})) == "invalid session cache \"builtin:5\"");
    CHECK(error_of(with(parse_session_cache, {"shared:SSL"})) == "invalid session cache \"shared:SSL\"");
    CHECK(error_of(with(parse_session_cache, {"shared::1m"})) == "invalid session cache \"shared::1m\"");
    CHECK(error_of(with(parse_session_cache, {"shared:SSL:1q"})) == "invalid session cache \"shared:SSL:1q\"");
    CHECK(error_of(with(parse_session_cache, {"shared:a:1m", "shared:b:1m"})) ==
          "invalid session cache \"shared:b:1m\"");
    CHECK(error_of(with(parse_session_cache, {"shared:SSL:1k"})) == "session cache \"SSL\" is too small");
}

TEST_CASE("tls/params: parse_verify_client") {
    CHECK(parse_verify_client("off").value() == VerifyClient::Off);
    CHECK(parse_verify_client("on").value() == VerifyClient::On);
    CHECK(parse_verify_client("optional").value() == VerifyClient::Optional);
    CHECK(parse_verify_client("optional_no_ca").value() == VerifyClient::OptionalNoCa);
    CHECK(error_of(parse_verify_client("yes")) ==
          "invalid value \"yes\", it must be \"on\", \"off\", \"optional\" or \"optional_no_ca\"");
}

TEST_CASE("tls/params: alpn_wire prefixes each name with its length") {
    CHECK(with(alpn_wire, {"http/1.1"}).value() == std::string("\x08http/1.1"));
    CHECK(with(alpn_wire, {"h2", "http/1.1"}).value() == std::string("\x02h2\x08http/1.1"));
    CHECK(error_of(with(alpn_wire, {""})) == "invalid ALPN protocol \"\"");
    CHECK(error_of(with(alpn_wire, {std::string(256, 'x')})).substr(0, 22) == "invalid ALPN protocol ");
}
