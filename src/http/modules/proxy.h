// proxy_module: "proxy_pass" and the directives around it
// [nginx ngx_http_proxy_module], the HTTP/1.x reverse proxy.
//
// Configuration (proxy.cc): "proxy_pass" sets the location's content
// handler (LocConf::content_handler), which the engine runs alone for that
// location. Everything else is a ProxyConf field, merged down the
// location tree as nginx merges it.
//
// One request is an Exchange (proxy_exchange.h), made in the request
// arena by the content handler, which returns Next::Suspend. The
// Exchange is the proxy's policy around an upstream::Client, which does
// the HTTP/1.x work with the origin (src/upstream/client.h: peers,
// connections, pooling, TLS, framing, buffering, retries, the tunnel):
//
//   client body   buffered: read whole (read_whole_body: memory, then
//                 client_body_temp_path) before connecting, and sent again
//                 on a retry or after an error_page; unbuffered: forwarded
//                 piece by piece once connected
//   request head  build_request_head(), nginx's rules (below)
//   response head copy_response_head(): what the client gets of the
//                 origin's fields (below); proxy_intercept_errors hands a
//                 listed status to its error_page instead
//   response body the Client's chains through send_body(), paced by the
//                 client's output (on_output_drained)
//   failures      the status (502, 504) or its error_page
//
// The pure pieces below have unit tests (tests/unit/http/proxy_test.cc,
// and, through a test stream, tests/unit/http/proxy_head_test.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/module.h"
#include "conf/values.h"
#include "core/arena.h"
#include "core/result.h"
#include "http/fwd.h"
#include "http/h1_parser.h"
#include "http/variables.h"
#include "upstream/client.h"

namespace gatehouse::http {

extern const conf::Module proxy_module;

namespace proxy {

// ---- pure helpers --------------------------------------------------------------

// A "proxy_pass" URL: "http://host[:port][/uri]", "http://unix:/path[:/uri]",
// or "http://name[/uri]" naming an upstream block; "https://" the same
// over TLS. Views point into the input.
struct Url {
    std::string_view target;       // for upstream::find_or_add: "host:port", "name", "unix:/p"
    std::string_view uri;          // "/two/", empty when there is none
    bool has_uri = false;          // a URI part was written (even "/")
    std::string_view host_header;  // $proxy_host: the authority as written; "localhost" for unix
    std::string_view port;         // $proxy_port: as written, "80" when omitted, empty for unix
    bool unix_socket = false;
    bool ssl = false;              // https://: port 443 when omitted
};
// Errors: invalid URL prefix in "x", no host in "x", invalid port in "x".
// `allow_https` false: "https protocol requires SSL support" (proxy_pass
// with variables, whose TLS settings are not built).
Result<Url> parse_url(std::string_view url, bool allow_https = true);

// The name TLS to an origin uses (SNI, certificate check): $proxy_host
// or "proxy_ssl_name" without its port, "[::1]:8443" giving "::1".
std::string_view ssl_host(std::string_view proxy_host);

// What the request line to the origin carries, by nginx's rules:
//   - the URL has a URI part and the location is a prefix one still valid
//     for the request (no "rewrite ... break" in it): the location's prefix
//     of the (normalised, decoded) URI is replaced by that part;
//   - the URL has none: the client's request-target as sent, unless the URI
//     was changed (rewrite, internal redirect), then the changed one;
//   - a "rewrite ... break" in the location: the changed URI, whole.
// Decoded URIs are escaped again (escape_uri) and args appended after "?".
struct UriParts {
    std::string_view pass_uri;       // Url::uri
    bool has_uri = false;            // Url::has_uri
    bool vars = false;               // proxy_pass had variables: pass_uri is used as is
    std::string_view location;       // the prefix the URI part replaces
    bool location_valid = true;      // Request::valid_location
    bool unparsed_valid = true;      // the URI was not changed: !Request::internal
    std::string_view unparsed_uri;   // $request_uri
    std::string_view uri;            // $uri
    std::string_view args;           // $args
};
std::string_view origin_uri(Arena& a, const UriParts& p);

// Percent-encodes what a decoded path cannot carry raw in a request line:
// controls, space, '"', '#', '%', '?', and bytes >= 0x7f. out needs
// escaped_uri_size(in) bytes; returns the bytes written.
size_t escaped_uri_size(std::string_view in);
size_t escape_uri(std::string_view in, char* out);

// Request header fields never passed from the client: hop-by-hop ones
// (RFC 9110 7.6.1: Connection, Keep-Alive, TE, Trailer, Upgrade, and the
// Proxy-* family, "Proxy-Connection" above all), the framing the proxy
// redoes (Content-Length, Transfer-Encoding) and Expect, which the proxy
// answers itself.
bool is_hop_by_hop_request(std::string_view name);
// What a response field's name means to the proxy, found with one
// switch on its length: copy_response_head asked a dozen questions of
// every field name, ~40 % of copying a cached head (callgrind).
enum class ResponseField : uint8_t {
    Other,
    Connection,      // hop-by-hop, and names more of them
    Upgrade,         // hop-by-hop but after 101
    HopByHop,        // Keep-Alive, TE, Trailer, Proxy-Connection, framing
    Hidden,          // Date, Server, X-Pad, X-Accel-* not below
    AccelBuffering,  // X-Accel-Buffering (hidden too)
    AccelLimitRate,  // X-Accel-Limit-Rate (hidden too)
    AccelCharset,    // X-Accel-Charset (hidden too)
    ContentType,
    Location,
    Refresh,
    ETag,
    LastModified,
};
ResponseField classify_response_field(std::string_view name);
// Response fields never passed to the client: hop-by-hop ones and the
// framing the writer redoes.
bool is_hop_by_hop_response(std::string_view name);
// Fields nginx hides from the client unless "proxy_pass_header" lets them
// through: Date, Server, X-Pad, X-Accel-*.
bool is_hidden_by_default(std::string_view name);
// Whether a Connection field value names `name` (a comma-separated token
// list, ASCII case-insensitive).
bool connection_lists(std::string_view connection_value, std::string_view name);

// "proxy_redirect redirect replacement" with a literal redirect: when
// `value` starts with `redirect` (case-sensitive, as nginx), the
// replacement followed by the rest of value; else nullopt.
std::optional<std::string_view> rewrite_prefix(Arena& a, std::string_view value, std::string_view redirect,
                                               std::string_view replacement);
// In a Refresh field ("5; url=http://x/"): where the URL starts, or npos.
size_t refresh_url_offset(std::string_view value);

// RFC 9110 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
bool is_idempotent(std::string_view method);

// ---- configuration -----------------------------------------------------------------

// TLS to origins ("proxy_pass https://"): the client context of one set
// of proxy_ssl_* settings, shared by every location that has the same.
// Owner: the generation arena (made in postconfiguration).
struct UpstreamTls {
    upstream::TlsSettings settings;      // "proxy_ssl_server_name", "_verify", "_session_reuse", the context
    std::string key;                     // the settings, to find an equal set
    const ComplexValue* name = nullptr;  // "proxy_ssl_name"; null: ssl_host($proxy_host)
};

// One "proxy_pass". Owner: the generation arena.
struct Pass {
    std::string url;          // as written, for messages and "proxy_redirect default"
    // Null when the URL has variables: it is evaluated per request and
    // names an upstream block or an address.
    upstream::UpstreamConf* upstream = nullptr;
    std::optional<ComplexValue> url_value;  // with variables
    std::string uri;          // Url::uri
    bool has_uri = false;
    std::string location;     // the prefix it replaces: the location's name
    std::string host_header;  // $proxy_host
    std::string port;         // $proxy_port
    bool ssl = false;         // https://
    const conf::Node* node = nullptr;  // the directive (owner: the generation's tree), for errors
    // The TLS settings of the location that has this proxy_pass: set by
    // postconfiguration for https (owner: the generation arena).
    const UpstreamTls* tls = nullptr;
};

struct SetHeader {
    std::string name;
    ComplexValue value;  // an empty value: the field is not sent
};

struct Redirect {
    enum class Kind : uint8_t { Default, Literal, Regex };
    Kind kind = Kind::Literal;
    ComplexValue redirect;                // Literal
    std::unique_ptr<CaptureRegex> regex;  // Regex
    ComplexValue replacement;
};

// What a "proxy_cookie_flags" rule does to a cookie's Secure, HttpOnly
// and SameSite attributes: a bit in `set` adds the attribute (SameSite
// with `samesite`'s value), a bit in `clear` removes it. Later flags of a
// rule override earlier ones.
struct CookieFlagSet {
    enum : uint8_t { kSecure = 1, kHttpOnly = 2, kSameSite = 4 };
    enum class SameSite : uint8_t { Strict, Lax, None };
    uint8_t set = 0, clear = 0;
    SameSite samesite = SameSite::Strict;
};

// Applies one flag ("secure", "nohttponly", "samesite=lax"...), compared
// without case; false if it is none of nginx's eight.
bool parse_cookie_flag(std::string_view flag, CookieFlagSet& out);

// One "proxy_cookie_flags" rule: the cookie it names (a literal with
// variables, compared without case, or "~regex", caseless) and its flags:
// those without variables parsed at load, the others per response.
struct CookieFlags {
    ComplexValue name;
    std::unique_ptr<CaptureRegex> regex;
    CookieFlagSet fixed;
    std::vector<ComplexValue> dynamic;
};

// "proxy_ignore_headers" fields this proxy acts on.
enum IgnoreHeaders : uint16_t {
    kIgnoreXAccelBuffering = 1 << 0,
    // The cache's (proxy_cache.cc hands them to cache_policy.h).
    kIgnoreXAccelExpires = 1 << 1,
    kIgnoreExpires = 1 << 2,
    kIgnoreCacheControl = 1 << 3,
    kIgnoreSetCookie = 1 << 4,
    kIgnoreVary = 1 << 5,
    kIgnoreXAccelLimitRate = 1 << 6,
    kIgnoreXAccelRedirect = 1 << 7,
    kIgnoreXAccelCharset = 1 << 8,
};

}  // namespace proxy

// proxy_module's location-level struct. Lists are built at the level that
// writes them and shared by the levels that inherit them (owner: the
// generation arena), as nginx inherits them: whole, and only when the level
// has none of its own.
struct ProxyConf {
    // "proxy_pass": not inherited into nested locations; inherited into an
    // "if" block, which nginx treats as part of its location.
    const proxy::Pass* pass = nullptr;
    const LocConf* pass_loc = nullptr;  // the location (or "if") that has it

    std::optional<int> http_version;                       // "proxy_http_version": 10 or 11
    std::vector<proxy::SetHeader>* set_headers = nullptr;  // "proxy_set_header"
    std::optional<bool> pass_request_headers;              // "proxy_pass_request_headers"
    std::optional<bool> pass_request_body;                 // "proxy_pass_request_body"
    const ComplexValue* method = nullptr;                  // "proxy_method"
    const ComplexValue* set_body = nullptr;                // "proxy_set_body"
    std::vector<std::string>* hide_headers = nullptr;  // "proxy_hide_header"
    std::vector<std::string>* pass_headers = nullptr;  // "proxy_pass_header"
    // "proxy_redirect": null and !redirect_off means "default".
    std::vector<const proxy::Redirect*>* redirects = nullptr;
    std::optional<bool> redirect_off;                      // "proxy_redirect off" (or a list)
    // "proxy_cookie_domain", "proxy_cookie_path": null is none ("off", or
    // nothing said at any level). A level with any inherits none.
    // Literal and Regex rules (proxy::Redirect's form).
    std::vector<const proxy::Redirect*>* cookie_domains = nullptr;
    std::vector<const proxy::Redirect*>* cookie_paths = nullptr;
    bool cookie_domains_set = false, cookie_paths_set = false;
    // "proxy_cookie_flags": the same inheritance; the first rule naming a
    // cookie applies.
    std::vector<const proxy::CookieFlags*>* cookie_flags = nullptr;
    bool cookie_flags_set = false;
    std::optional<bool> intercept_errors;                  // "proxy_intercept_errors"
    std::optional<bool> force_ranges;                      // "proxy_force_ranges"
    std::optional<bool> pass_trailers;                     // "proxy_pass_trailers"
    std::optional<bool> ignore_client_abort;               // "proxy_ignore_client_abort"
    std::optional<bool> buffering;                         // "proxy_buffering"
    std::optional<bool> request_buffering;                 // "proxy_request_buffering"
    std::optional<bool> splice;                            // "proxy_splice"
    std::optional<uint64_t> buffer_size;                   // "proxy_buffer_size"
    std::optional<uint64_t> buffers_num;                   // "proxy_buffers"
    std::optional<uint64_t> buffers_size;
    std::optional<uint64_t> busy_buffers_size;             // "proxy_busy_buffers_size"
    std::optional<uint64_t> max_temp_file_size;            // "proxy_max_temp_file_size"
    const ComplexValue* limit_rate = nullptr;              // "proxy_limit_rate"; null: 0
    // "proxy_bind": an address without variables parsed at load
    // (bind_addr), one with them per request (bind); neither: "off" or
    // nothing said.
    const upstream::LocalAddr* bind_addr = nullptr;
    const ComplexValue* bind = nullptr;
    bool bind_transparent = false;
    bool bind_set = false;
    bool limit_rate_set = false;
    std::optional<uint64_t> temp_file_write_size;          // "proxy_temp_file_write_size"
    std::optional<std::string> temp_path;                  // "proxy_temp_path", absolute
    std::optional<conf::Duration> connect_timeout;         // "proxy_connect_timeout"
    std::optional<conf::Duration> send_timeout;            // "proxy_send_timeout"
    std::optional<conf::Duration> read_timeout;            // "proxy_read_timeout"
    std::optional<uint16_t> next_upstream;                 // "proxy_next_upstream": upstream::NextUpstream bits
    std::optional<uint64_t> next_upstream_tries;           // "proxy_next_upstream_tries"
    std::optional<conf::Duration> next_upstream_timeout;   // "proxy_next_upstream_timeout"
    std::optional<uint16_t> ignore_headers;                // "proxy_ignore_headers"
    std::optional<bool> socket_keepalive;                  // "proxy_socket_keepalive"

    // TLS to origins, for "proxy_pass https://".
    std::optional<bool> ssl_server_name;                   // "proxy_ssl_server_name"
    const ComplexValue* ssl_name = nullptr;                // "proxy_ssl_name"
    std::optional<bool> ssl_verify;                        // "proxy_ssl_verify"
    std::optional<uint64_t> ssl_verify_depth;              // "proxy_ssl_verify_depth"
    std::optional<std::string> ssl_trusted_certificate;    // "proxy_ssl_trusted_certificate", absolute
    // "proxy_ssl_certificate", "proxy_ssl_certificate_key": absolute
    // paths; empty: none (""). With variables (the _var), evaluated per
    // request and made absolute under the configuration's directory
    // (ssl_cert_dir); the field is then empty.
    std::optional<std::string> ssl_certificate;
    std::optional<std::string> ssl_certificate_key;
    const ComplexValue* ssl_certificate_var = nullptr;
    const ComplexValue* ssl_certificate_key_var = nullptr;
    std::string ssl_cert_dir;
    std::optional<uint8_t> ssl_protocols;                  // "proxy_ssl_protocols"
    std::optional<std::string> ssl_ciphers;                // "proxy_ssl_ciphers"
    std::optional<bool> ssl_session_reuse;                 // "proxy_ssl_session_reuse"
    std::optional<std::vector<std::string>> ssl_passwords; // "proxy_ssl_password_file"
    std::optional<std::string> ssl_crl;                    // "proxy_ssl_crl", absolute
    std::optional<std::string> ssl_key_log;                // "proxy_ssl_key_log", absolute
    // "proxy_ssl_conf_command": the list of the level that has one, whole.
    std::optional<std::vector<std::pair<std::string, std::string>>> ssl_conf_commands;
    std::optional<uint64_t> headers_hash_max_size;         // "proxy_headers_hash_max_size": accepted, unused
    std::optional<uint64_t> headers_hash_bucket_size;      // "proxy_headers_hash_bucket_size": accepted, unused
};

// proxy_module's main-level struct.
struct ProxyMainConf {
    std::string prefix;  // the generation's prefix, for the default temp paths
    // Every "proxy_pass https://" with its location's conf, for
    // postconfiguration to build the TLS contexts after the merge, and
    // the contexts it made (owner: the generation arena).
    std::vector<std::pair<const ProxyConf*, proxy::Pass*>> https_passes;
    std::vector<proxy::UpstreamTls*> tls;
    bool transparent = false;  // a "proxy_bind ... transparent": workers keep CAP_NET_RAW
};

namespace proxy {

// ---- the request to the origin and the response to the client ----------------------

// What build_request_head() is told besides the request and its location.
struct HeadInputs {
    std::string_view method;  // proxy_method, or the client's
    std::string_view uri;     // the request-target (origin_uri)
    std::string_view host;    // $proxy_host: the Host field unless proxy_set_header sets one
    bool pooled = false;      // the group keeps connections ("keepalive"): no "Connection: close"
    // The body's framing: a length (maybe 0), chunked, or none at all.
    std::optional<uint64_t> body_length;
    bool body_chunked = false;
    // A cached location wants the whole current response: the client's
    // conditionals and Range stay out (they apply to what the cache
    // answers), and a revalidation sends the entry's validators.
    bool drop_conditionals = false;
    std::string_view if_none_match;
    std::string_view if_modified_since;
};

// A request head for the origin, by nginx's rules: the request line in
// proxy_http_version; proxy_set_header first (an empty value drops the
// field; Content-Length and Transfer-Encoding are the proxy's), then Host
// and "Connection: close" when not set (close only without pooling),
// then the body's framing, then the client's fields unless
// proxy_pass_request_headers is off, without hop-by-hop ones (those
// is_hop_by_hop_request() names and those the client's Connection
// lists), Host, and those proxy_set_header replaced (and the
// conditionals and Range when HeadInputs says so), then the validators.
struct OriginRequest {
    std::string_view head;  // in the request arena
    std::string_view uri;
    bool upgrade = false;   // an Upgrade field went: a 101 is acceptable
    bool close = false;     // "Connection: close" went, or HTTP/1.0: not poolable
};
OriginRequest build_request_head(Request& r, const ProxyConf& pc, const HeadInputs& in);

// The origin's X-Accel-Limit-Rate (bytes per second, or "off"), unless
// proxy_ignore_headers names it: the response's rate, outranking
// limit_rate (limit_rate.cc) [nginx]. A value that is neither is ignored.
void apply_accel_limit_rate(Request& r, const ProxyConf& pc, std::string_view value);
// The client's response head (r.out) from the origin's: the status and
// reason, then each field in order except the hop-by-hop ones (and those
// the origin's Connection lists), the framing, and those hidden (Date,
// Server, X-Pad, X-Accel-*, proxy_hide_header) unless proxy_pass_header
// lets them through; Location and Refresh rewritten by proxy_redirect;
// Content-Type, ETag and a valid Last-Modified into their fields (the
// filters compare them); the Content-Length of a length-framed body.
// `fields` must live as long as the request (the TryLog's copies).
// X-Accel-Buffering "yes"/"no", unless proxy_ignore_headers says so,
// is returned in *accel_buffering.
void copy_response_head(Request& r, const ProxyConf& pc, const Pass& pass, int status, std::string_view reason,
                        std::span<const upstream::TryLog::Field> fields, const Framing& framing,
                        std::optional<bool>* accel_buffering);

// "proxy_redirect" applied to a Location or Refresh value, from `from`
// (Refresh: after "url="); the value itself when nothing applies.
std::string_view rewrite_redirect(Request& r, const ProxyConf& pc, const Pass& pass, std::string_view value,
                                  size_t from);

// A "proxy_bind" address: an IPv4 or IPv6 literal, with a port or not;
// false for anything else (names included, as nginx).
bool parse_local_addr(std::string_view s, upstream::LocalAddr& out);

// "proxy_cookie_domain" and "proxy_cookie_path" applied to a Set-Cookie
// value's Domain and Path attributes (names without case, the first rule
// that matches each), then "proxy_cookie_flags"; the value itself when
// nothing applies.
std::string_view rewrite_cookie(Request& r, const ProxyConf& pc, std::string_view value);

// Builds the client TLS context of every https proxy_pass in
// `m.https_passes` from its location's merged proxy_ssl_* settings,
// sharing one between locations whose settings are equal
// (proxy_ssl.cc). Config time, from postconfiguration; errors name the
// proxy_pass's file:line.
Status build_upstream_tls(conf::Ctx& cx, ProxyMainConf& m);
}  // namespace proxy

}  // namespace gatehouse::http
