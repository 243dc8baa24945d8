// The values of the ssl_* directives that need more than a flag or a
// path: protocol lists, the session cache and client verification. Pure
// parsers, kept apart from OpenSSL so that they are tested alone; the
// errors name the value, the caller adds the directive and file:line.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gatehouse::tls {

// "ssl_protocols": a set of these bits.
enum Protocol : uint8_t {
    kSSLv2 = 1,  // accepted as nginx does; OpenSSL 3 cannot speak them
    kSSLv3 = 2,
    kTLSv1 = 4,
    kTLSv1_1 = 8,
    kTLSv1_2 = 16,
    kTLSv1_3 = 32,
};
inline constexpr uint8_t kDefaultProtocols = kTLSv1_2 | kTLSv1_3;

// "TLSv1.2 TLSv1.3": one word per protocol, in any order. Errors:
// invalid value "TLSv1.4"; invalid value "SSLv3" (with no TLS protocol
// left, nothing could be negotiated: "no TLS protocol in \"SSLv3\"").
Result<uint8_t> parse_protocols(std::span<const std::string_view> words);

// The passphrases of a "ssl_password_file" (server keys) or
// "proxy_ssl_password_file" (the client key to origins): one per line,
// empty lines skipped, a CR before the LF dropped. Error: no passwords in
// the text.
Result<std::vector<std::string>> parse_passwords(std::string_view text);

// "ssl_session_cache off | none | [builtin[:size]] [shared:name:size]".
struct SessionCache {
    enum class Mode : uint8_t {
        Off,   // the server tells clients sessions cannot be resumed
        None,  // session ids are sent but nothing is stored (nginx's default)
        Store, // builtin and/or shared below
    };
    Mode mode = Mode::None;
    bool builtin = false;
    uint64_t builtin_sessions = 20480;  // "builtin:N", in sessions
    bool shared = false;
    std::string shared_name;            // "shared:NAME:SIZE"
    uint64_t shared_size = 0;           // bytes
};
// The smallest shared cache: room for the header and some sessions.
inline constexpr uint64_t kMinSharedCache = 32 * 1024;

// Errors: invalid session cache "builtin:x"; session cache "SSL" is too
// small.
Result<SessionCache> parse_session_cache(std::span<const std::string_view> words);

// "ssl_verify_client".
enum class VerifyClient : uint8_t { Off, On, Optional, OptionalNoCa };
Result<VerifyClient> parse_verify_client(std::string_view word);

// The ALPN protocol list in wire format (length-prefixed names), from
// names such as "http/1.1". Error: a name empty or longer than 255 bytes.
Result<std::string> alpn_wire(std::span<const std::string_view> names);

}  // namespace gatehouse::tls
