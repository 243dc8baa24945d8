// The request head of an HTTP/2 stream: the header fields nghttp2 decoded
// (HPACK) and checked (RFC 9113 8.2 and 8.3: lower-case names, no
// connection-specific fields, pseudo-header fields first, once, the
// required ones present) turned into what the protocol-neutral request
// path reads: a method, a target, a Host field, cookies in one field.
//
// Bounded: the fields are copied into the request arena, their total size
// (RFC 9113 6.5.2's accounting: name, value and 32 octets each) up to
// `max_bytes` and their number up to `max_fields`; past either the head
// is refused (too_large()) and further fields are not kept, so a header
// list made large by HPACK references costs no memory (an "HPACK bomb").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <span>
#include <string_view>
#include <vector>

#include "http/h1_parser.h"

namespace gatehouse::http::v2 {

class RequestHeadBuilder {
public:
    // mem: the request arena, which outlives the head.
    RequestHeadBuilder(std::pmr::memory_resource* mem, size_t max_bytes, size_t max_fields);

    // nginx's rules for field names (underscores_in_headers,
    // ignore_invalid_headers; both off/on by default, as nginx's).
    void set_name_rules(bool underscores, bool ignore_invalid) {
        underscores_ = underscores;
        ignore_invalid_ = ignore_invalid;
    }

    // A field's name or value longer than this (a header buffer of
    // large_client_header_buffers, which bounds an HTTP/1 header line)
    // makes the head too large; unbounded by default.
    void set_max_field(size_t n) { max_field_ = n; }

    // One field, as decoded and checked by nghttp2. A name with '_' is
    // left out unless underscores_in_headers (or ignore_invalid_headers
    // off) keeps it [nginx]. False once the list is past a limit.
    bool add(std::string_view name, std::string_view value);
    // A regular field nghttp2 found invalid and would drop (a name that
    // is not a lower-case token, a value with control characters or
    // whitespace at either end); pseudo-header fields never come here.
    // Judged as nginx does: a name with a control, a space or ':', or a
    // value with NUL, CR or LF, makes the request bad (400, bad()); other
    // odd names are left out (ignore_invalid_headers) or kept; other
    // values are kept as they came.
    bool add_unchecked(std::string_view name, std::string_view value);
    // Why the head must be answered 400, or empty.
    std::string_view bad() const { return bad_; }
    // Past max_bytes or max_fields; too_many(): past max_fields.
    bool too_large() const { return too_large_; }
    bool too_many() const { return too_many_; }

    // Once the last field is in: fills `h` (method, target, host, fields)
    // and `request_line` ("GET /x HTTP/2.0"). The views point into the
    // arena. False, with `reason` set, when the head is not a request this
    // server can take (no :path where one is needed, a path that is not
    // origin-form, an extended CONNECT for another protocol than
    // websocket()); the caller answers 400.
    //
    // An extended CONNECT for a WebSocket (RFC 8441 4) becomes the request
    // an HTTP/1.1 client opening one sends (RFC 6455 4.1), so that the rest
    // of the server, the proxy's upgrade path included, sees nothing else:
    // "GET :path" with "Upgrade: websocket", "Connection: upgrade" and
    // "Sec-WebSocket-Key: `ws_key`" (the HTTP/2 client sends no key, RFC
    // 8441 5; one it sent anyway is dropped); Sec-WebSocket-Version,
    // -Protocol and -Extensions stay as they came.
    bool finish(RequestHead& h, std::string_view& request_line, std::string_view& reason,
                std::string_view ws_key = {});

    // RFC 8441 4: CONNECT with a :protocol.
    bool extended_connect() const { return method_ == "CONNECT" && !protocol_.empty(); }
    // ...whose protocol is the only one this server tunnels.
    bool websocket() const;

    std::string_view method() const { return method_; }
    std::string_view scheme() const { return scheme_; }
    std::string_view authority() const { return authority_; }
    std::string_view path() const { return path_; }
    std::string_view protocol() const { return protocol_; }  // RFC 8441 ":protocol"

private:
    std::string_view copy(std::string_view s);
    bool count(std::string_view name, std::string_view value);
    bool keep(std::string_view name, std::string_view value);

    std::pmr::memory_resource* mem_;
    size_t max_bytes_;
    size_t max_fields_;
    size_t max_field_ = SIZE_MAX;
    size_t bytes_ = 0;
    bool too_large_ = false;
    bool too_many_ = false;
    bool underscores_ = false;
    bool ignore_invalid_ = true;
    std::string_view bad_;  // a static string
    std::string_view method_, scheme_, authority_, path_, protocol_;
    std::pmr::vector<HeaderField> fields_;
    // Each "cookie" field separately (RFC 9113 8.2.3 lets clients split
    // them); joined with "; " by finish().
    std::pmr::vector<std::string_view> cookies_;
    size_t cookie_pos_ = 0;  // where the joined field goes among fields_
};

}  // namespace gatehouse::http::v2
