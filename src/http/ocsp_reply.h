// A responder's HTTP reply to an OCSP request (http/ocsp_stapler.h), read
// as its bytes arrive. No I/O, no allocation but the error message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/h1_parser.h"

namespace gatehouse::http {

// A responder's reply to one request, as its bytes arrive: the head
// parsed by the HTTP/1 parser, the body framed by Content-Length or by
// the end of the connection (RFC 9112 6.3; chunked is refused: the
// request was HTTP/1.0).
class ResponderReply {
public:
    enum class State : uint8_t { NeedMore, Done, Error };
    // `max_head`: the most bytes the head may take.
    explicit ResponderReply(size_t max_head = 16384);
    // `buffered`: every byte received so far (each call passes the bytes
    // of the previous one unchanged, then new ones); `eof`: the responder
    // closed its side. Done and Error stay until the object goes.
    State feed(std::string_view buffered, bool eof);
    // Done: the response body, a view into the last `buffered`.
    std::string_view body() const { return body_; }
    // Error: why, for the log ("OCSP responder sent status 404").
    const std::string& error() const { return error_; }

private:
    FieldStore<16> fields_;
    ResponseParser parser_;
    State state_ = State::NeedMore;
    size_t body_start_ = 0;  // once the head is parsed
    std::optional<uint64_t> length_;
    std::string_view body_;
    std::string error_;
};

}  // namespace gatehouse::http
