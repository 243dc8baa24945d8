// HTTP/1.x message heads (RFC 9112): a request line or a status line and
// the header section, parsed strictly and incrementally, with no I/O and no
// allocation.
//
// Use (one parser per connection, reset between messages):
//
//     FieldStore<32> fields;
//     RequestParser p(limits, fields.span());
//     for (;;) {                                  // called from the read loop
//         ParseResult r = p.parse(buffered);      // all bytes read so far
//         if (r.state == ParseState::NeedMore) break;   // read more, call again
//         if (r.state == ParseState::Error) return reply(r.status, r.reason);
//         handle(p.head());                       // body starts at r.consumed
//         p.reset();                              // next: buffered.substr(r.consumed)
//     }
//
// `buffered` is every byte of the message received so far, starting at its
// first byte; each call must pass the bytes of the previous call unchanged
// followed by any new ones. The parser remembers how far it got, so the
// total work over all calls is O(size of the head). The buffer may move
// between calls (grown by copying, as nginx does with
// large_client_header_buffers): views already taken are moved along with
// it.
//
// Every string_view in a head points into the `buffered` of the last call
// and is valid while those bytes stay where they are; `headers` points into
// the caller's storage. A head is meaningful only after Done.
//
// Choices, each checked by a test in tests/unit/http/h1_parser_test.cc:
// - Line endings: CRLF, and also a bare LF (RFC 9112 2.2 allows it; nginx
//   and many scripts rely on it). The parser never forwards the client's
//   bytes: a proxy re-serialises fields with CRLF, so an origin can never
//   see a line structure different from ours. A bare CR is always an error
//   (RFC 9112 2.2). Limits::reject_bare_lf makes the parser strict. Chunked
//   framing has no such leniency (chunked.h).
// - Too long header lines and too large heads answer 431 (RFC 6585 5),
//   where nginx answers 400 "client sent too long header line": 431 tells
//   the client which part to shrink and is what RFC 6585 defines for it.
//   A too long request line is 414, as in nginx.
// - Content-Length: a second field line is an error even with the same
//   value, and so is a list ("5, 5"). RFC 9110 8.6 allows accepting
//   identical values, but no correct sender emits them and rejecting them
//   leaves one interpretation for every hop (nginx does the same).
// - HTTP/1.x with x > 1 is processed as HTTP/1.1 (RFC 9110 2.5);
//   version_minor keeps the number received.
// - Field names are tokens (RFC 9110 5.1); anything else is 400. With
//   Limits::ignore_invalid_names (nginx's ignore_invalid_headers, on by
//   default there) a name holding anything but letters, digits and '-'
//   ('_' too with Limits::underscores) is left out of the head instead,
//   as nginx does, so that "X_Forwarded_For" can never be read as
//   X-Forwarded-For by a CGI-style origin. A name with a control
//   character, a space or a leading ':' is 400 either way. Where nginx
//   passes a name that is not a token (such as "a<b") when the option is
//   off, gatehouse answers 400: it never forwards a field another parser
//   would frame differently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string_view>

namespace gatehouse::http {

// Methods the server treats specially; others are Other with the token in
// RequestHead::method_name. Method names are case-sensitive (RFC 9110 9.1).
enum class Method : uint8_t {
    Other,
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
};
Method parse_method(std::string_view token);

// RFC 9112 3.2.
enum class TargetForm : uint8_t { Origin, Absolute, Authority, Asterisk };
enum class Scheme : uint8_t { None, Http, Https };

struct HeaderField {
    std::string_view name;   // a token, case as received
    std::string_view value;  // without leading and trailing whitespace
};

// Room for N fields, left uninitialized: the parser writes a field before
// anything reads it, and zeroing a HeaderField[32] (1 KiB) cost every
// request its stores. The array of bytes provides the storage and creates
// the HeaderField objects (an implicit-lifetime type) as they are written.
template <size_t N>
struct FieldStore {
    std::span<HeaderField> span() { return {std::launder(reinterpret_cast<HeaderField*>(raw)), N}; }
    alignas(HeaderField) std::byte raw[N * sizeof(HeaderField)];
};

struct Limits {
    // The request line (-> 414) or status line, without its CRLF.
    size_t max_start_line = 8192;
    // One field line, without its CRLF (-> 431).
    size_t max_header_line = 8192;
    // Every byte of the head: leading empty lines, the start line, the
    // fields and the final empty line (-> 431).
    size_t max_head = 32768;
    // Field lines (-> 431). Unlimited by default: max_head bounds them,
    // as nginx's header buffers do; the field table grows to fit.
    size_t max_headers = SIZE_MAX;
    // Reject a line ended by LF alone (-> 400); see the file comment.
    bool reject_bare_lf = false;
    // Leave out fields whose names are not plain (see the file comment).
    bool ignore_invalid_names = false;
    bool underscores = true;  // with ignore_invalid_names: '_' is plain
};

// What Content-Length, Transfer-Encoding and Connection say. A request
// with Transfer-Encoding has chunked set (anything else is an error); a
// response may legitimately have neither length (read until close, RFC
// 9112 6.3), and the no-body rules for HEAD, 1xx, 204 and 304 are the
// caller's.
struct Framing {
    std::optional<uint64_t> content_length;  // never set together with chunked
    bool has_transfer_encoding = false;
    bool chunked = false;
    bool conn_close = false;       // "Connection: close"
    bool conn_keep_alive = false;  // "Connection: keep-alive"
    bool conn_upgrade = false;     // "Connection: upgrade"
};

struct MessageHead {
    uint8_t version_major = 0;
    uint8_t version_minor = 0;
    std::span<const HeaderField> headers;  // into the parser's storage
    Framing framing;

    // The first field called `name` (ASCII case-insensitive), or nullptr.
    const HeaderField* find(std::string_view name) const;
    // Whether the connection may carry another message (RFC 9112 9.3).
    bool keep_alive() const;
};

struct RequestHead : MessageHead {
    Method method = Method::Other;
    std::string_view method_name;
    std::string_view target;  // the request-target as received
    TargetForm form = TargetForm::Origin;
    Scheme scheme = Scheme::None;  // absolute-form only
    std::string_view authority;    // absolute-form and authority-form
    // Origin-form: the target. Absolute-form: what follows the authority,
    // path and query; empty stands for "/" (RFC 9112 3.2.2). Empty for
    // the other forms.
    std::string_view path;
    // The authority the request is for: the target's in absolute-form and
    // authority-form (RFC 9112 3.2.2 says the Host field is then ignored),
    // the Host field's value otherwise; empty for HTTP/1.0 without Host.
    // Validated, case as received, maybe with a port: see normalize_host().
    std::string_view host;
    bool expect_100_continue = false;  // HTTP/1.1 only (RFC 9110 10.1.1)
    // Limits::ignore_invalid_names: how many field lines were left out,
    // and the first of them (for the log).
    size_t ignored_fields = 0;
    std::string_view first_ignored;
};

// (Named StatusHead, not ResponseHead: that name is the response filters' view
// of a response, src/http/request.h.)
struct StatusHead : MessageHead {
    uint16_t status = 0;  // three digits, 100..999; meaning is the caller's
    std::string_view reason;
};

enum class ParseState : uint8_t { NeedMore, Done, Error };

namespace detail {
enum class H1Error : uint8_t;  // h1_parser.cc: the reasons and their statuses
}

struct ParseResult {
    ParseState state = ParseState::NeedMore;
    // Error: the status to answer: 400, 414, 431, 501 or 505 for a request
    // (Limits says which limit gives which); 502 for a response.
    uint16_t status = 0;
    // Done: bytes of the head, the final empty line included; the body or
    // the next pipelined message starts there.
    size_t consumed = 0;
    // Error: a static lower-case message for the info log, such as
    // "client sent invalid header line".
    std::string_view reason;
};

// The request and response parsers share everything but the start line
// and the framing rules. Once Done or Error, parse() keeps returning that
// result until reset().
template <class Head>
class HeadParser {
public:
    // `storage` holds the field views of the usual head and must outlive
    // the parser's heads; a head with more fields moves them to a table
    // on the heap, doubled as needed and kept until the parser goes (the
    // only allocation; max_head bounds it).
    HeadParser(const Limits& limits, std::span<HeaderField> storage);

    ParseResult parse(std::string_view buffered);
    // Valid after parse() returned Done.
    const Head& head() const { return head_; }
    // Forget the message, keep limits and storage.
    void reset();

private:
    enum class Phase : uint8_t { StartLine, Fields, Done, Error };

    using Err = detail::H1Error;
    ParseResult fail(Err e);
    Err prefix_error(const char* p, size_t avail, size_t raw_end);
    Err field_line(std::string_view line);
    Err on_field(std::string_view name, std::string_view value);
    Err finish();
    void grow();
    void rebase(const char* data);

    Limits limits_;
    std::span<HeaderField> storage_;
    std::unique_ptr<HeaderField[]> spill_;  // storage_ once it outgrew the caller's
    Head head_;
    ParseResult result_;  // once Done or Error
    uintptr_t base_ = 0;  // buffered.data() of the last call
    size_t line_start_ = 0;
    size_t scan_ = 0;        // where the search for LF resumes
    size_t method_scan_ = 0;  // requests: where the method check resumes
    size_t nfields_ = 0;
    Phase phase_ = Phase::StartLine;
    bool method_ended_ = false;
    // Framing seen so far, settled by finish().
    bool host_seen_ = false;
    bool te_chunked_last_ = false;
    bool te_chunked_seen_ = false;
    bool te_other_ = false;
    uint16_t unique_seen_ = 0;  // requests: bits of kUniqueFields (h1_parser.cc)
};

using RequestParser = HeadParser<RequestHead>;
using ResponseParser = HeadParser<StatusHead>;
extern template class HeadParser<RequestHead>;
extern template class HeadParser<StatusHead>;

// An authority (RFC 3986 3.2) as HTTP accepts it: host [":" port] with no
// userinfo. host is a reg-name, an IPv4 address or a bracketed IPv6
// address or IPvFuture; neither may contain "..", nor a reg-name start
// with '.', since $host may end up in a file path (nginx refuses them
// too).
struct Authority {
    std::string_view host;  // brackets kept for IPv6
    std::string_view port;  // digits, maybe empty
    bool has_port = false;  // a ':' was present
};
std::optional<Authority> parse_authority(std::string_view s);

// The host as a name to compare and log, like nginx's $host: without the
// port, lowercased, without one trailing '.'. `host` is a validated
// authority (RequestHead::host) or its Authority::host; `out` needs
// host.size() bytes; returns the part of `out` written.
std::string_view normalize_host(std::string_view host, std::span<char> out);

}  // namespace gatehouse::http
