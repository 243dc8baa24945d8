// The http core: the "http", "server" and "location" blocks and the
// directives every request needs (listen, server_name, limits, timeouts).
//
// Conf tree, as nginx's: the http block has one struct per module at each
// of three levels (main, server, location); a server block has fresh server
// and location structs, a location block fresh location structs. After the
// http block, every server's structs are merged with the http block's and
// every location's with its parent's, so each block sees the inherited
// value of whatever it did not set. Each block keeps its arrays, so that a
// request, once its server and location are chosen, reaches every module's
// struct with one index.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/hash.h"
#include "core/regex.h"
#include "http/file_access.h"
#include "http/fwd.h"
#include "http/variables.h"

namespace gatehouse::log {
class ErrorLog;
}

namespace gatehouse::http {

struct ListenConf {
    conf::Address addr;
    bool default_server = false;
    bool reuseport = false;
    bool deferred = false;
    bool ssl = false;
    bool proxy_protocol = false;  // "proxy_protocol": a PROXY header comes first
    bool http2 = false;           // "http2": HTTP/2 on this address (nginx 1.22 syntax)
    int backlog = 511;  // "backlog=", nginx's default on Linux
    std::optional<bool> ipv6only;
    std::optional<bool> so_keepalive;
    std::optional<int> rcvbuf, sndbuf;  // "rcvbuf=", "sndbuf=": SO_RCVBUF, SO_SNDBUF
    std::string where;  // file:line, for messages
};

enum class LocMatch : uint8_t { Prefix, Exact, PrefixNoRegex, Regex, RegexCaseless, Named };

struct LocConf;

struct ServerName {
    std::string name;                // lower case; "*.x", "x.*", "~re"
    std::unique_ptr<CaptureRegex> regex;  // for "~" names; named groups are variables
};

// http_core_module's server-level struct.
struct SrvConf {
    std::vector<ListenConf> listens;          // "listen"
    std::vector<ServerName> server_names;     // "server_name"
    conf::ConfArray srv_confs = nullptr;      // owner: the generation arena
    conf::ConfArray loc_confs = nullptr;      // the server's location level
    std::vector<LocConf*> named;              // "@name" locations
    std::string where;

    std::optional<uint64_t> client_header_buffer_size;      // "client_header_buffer_size"
    std::optional<uint64_t> large_header_buffers_num;        // "large_client_header_buffers"
    std::optional<uint64_t> large_header_buffer_size;
    std::optional<conf::Duration> client_header_timeout;    // "client_header_timeout"
    std::optional<bool> underscores_in_headers;             // "underscores_in_headers"
    std::optional<bool> ignore_invalid_headers;             // "ignore_invalid_headers"
    std::optional<uint64_t> max_headers;                    // "max_headers": header lines in a request
    std::optional<bool> merge_slashes;                      // "merge_slashes"
    std::optional<uint64_t> request_pool_size;              // "request_pool_size": a request arena's first block
    std::optional<uint64_t> connection_pool_size;           // "connection_pool_size": accepted, unused
    // "http2": HTTP/2 for this server (ALPN "h2" on TLS, h2c with prior
    // knowledge on plain addresses where it is the default server).
    std::optional<bool> http2;
};

struct ErrorPage {
    int status = 0;
    int overwrite = -1;          // "=code": -1 keep, 0 "=" (the target's), else code
    ComplexValue uri;            // "/50x.html", "@fallback", or a URL
};

// http_core_module's location-level struct. One exists for the http block
// and for each server too (their location-level defaults).
struct LocConf {
    LocMatch match = LocMatch::Prefix;
    std::string name;                      // the URI, regex or @name
    std::unique_ptr<CaptureRegex> regex;   // for ~ and ~*; named groups are variables
    conf::ConfArray loc_confs = nullptr;   // owner: the generation arena
    std::vector<LocConf*> locations;       // nested, in config order
    LocConf* parent = nullptr;             // null for http and server level
    bool is_location = false;              // false for the http and server levels
    PhaseFn content_handler = nullptr;     // answers this location alone (proxy_pass)
    // Set by such a handler's directive: a prefix location ending in '/'
    // redirects its name without that '/' there (301) [nginx].
    bool auto_redirect = false;
    std::string where;
    // "limit_except": the methods it lets through as the location says
    // (kMethod* bits); a request with another method gets the block's
    // structs instead (limit_except_confs, owner: the generation arena).
    uint32_t limit_except = 0;
    conf::ConfArray limit_except_confs = nullptr;

    // The steps (HttpMainConf::steps, the first 64) a request whose
    // location-level structs are these passes over: their handlers have
    // nothing to do here (PhaseHandler::wanted). Set by
    // build_phase_engine; 0, every step runs, where it was not asked.
    uint64_t skip_steps = 0;
    // Likewise the header and body filters (HttpMainConf::header_filters,
    // body_filters) a response served here passes over: their modules
    // configure nothing here (ModuleHooks::filters_wanted).
    uint64_t skip_header_filters = 0;
    uint64_t skip_body_filters = 0;
    // "error_log" of this level, or inherited: the lines about a request
    // handled here go there instead of the main one (owner: the
    // generation arena; null: the main "error_log").
    log::ErrorLog* error_log = nullptr;
    std::optional<bool> internal;                       // "internal"
    std::optional<uint64_t> client_max_body_size;       // "client_max_body_size"
    std::optional<uint64_t> client_body_buffer_size;    // "client_body_buffer_size"
    std::optional<conf::Duration> client_body_timeout;  // "client_body_timeout"
    std::optional<conf::Duration> keepalive_timeout;    // "keepalive_timeout"
    std::optional<conf::Duration> keepalive_min_timeout;  // "keepalive_min_timeout": 0 none
    std::optional<uint64_t> keepalive_requests;         // "keepalive_requests"
    std::optional<conf::Duration> send_timeout;         // "send_timeout"
    std::optional<uint8_t> lingering_close;             // "lingering_close": 0 off, 1 on, 2 always
    std::optional<conf::Duration> lingering_time;       // "lingering_time"
    std::optional<conf::Duration> lingering_timeout;    // "lingering_timeout"
    std::optional<uint8_t> server_tokens;               // "server_tokens": 0 off, 1 on, 2 build
    std::optional<bool> satisfy_any;                    // "satisfy": all (false) or any
    std::optional<conf::Duration> auth_delay;           // "auth_delay": 0 none
    std::optional<bool> tcp_nodelay;                    // "tcp_nodelay"
    std::optional<bool> chunked_transfer_encoding;      // "chunked_transfer_encoding"
    std::optional<bool> absolute_redirect;              // "absolute_redirect"
    std::optional<bool> port_in_redirect;               // "port_in_redirect"
    std::optional<bool> server_name_in_redirect;        // "server_name_in_redirect"
    std::optional<bool> log_not_found;                  // "log_not_found"
    std::optional<Symlinks> disable_symlinks;           // "disable_symlinks"
    const ComplexValue* symlinks_from = nullptr;        // its "from=" (owner: the generation)
    std::optional<bool> log_subrequest;                 // "log_subrequest"
    std::optional<bool> reset_timedout_connection;      // "reset_timedout_connection"
    std::optional<bool> recursive_error_pages;          // "recursive_error_pages"
    std::optional<std::string> client_body_temp_path;   // "client_body_temp_path", absolute
    std::optional<uint8_t> client_body_in_file_only;    // "client_body_in_file_only": 0 off, 1 on, 2 clean
    std::optional<bool> client_body_in_single_buffer;   // "client_body_in_single_buffer"
    std::optional<conf::Duration> keepalive_time;       // "keepalive_time"
    // "early_hints": an origin's 103 goes to the client when one value is
    // neither empty nor "0"; null: never. Owner: the generation arena.
    std::vector<ComplexValue>* early_hints = nullptr;
    std::optional<conf::Duration> keepalive_header;     // "keepalive_timeout"'s second: 0 sends none
    std::optional<uint8_t> keepalive_disable;           // "keepalive_disable": kKeepaliveDisable* bits
    std::optional<bool> tcp_nopush;                     // "tcp_nopush"
    std::optional<uint64_t> sendfile_max_chunk;         // "sendfile_max_chunk" (0: no limit)
    std::optional<uint64_t> output_buffers_num;         // "output_buffers"
    std::optional<uint64_t> output_buffers_size;
    std::optional<uint64_t> postpone_output;            // "postpone_output": accepted, unused
    std::optional<bool> msie_padding;                   // "msie_padding"
    std::optional<bool> msie_refresh;                   // "msie_refresh"
    std::vector<ErrorPage> error_pages;                 // "error_page"
    bool error_pages_set = false;
};

// The servers reachable through one local address.
struct AddrServers {
    conf::Address addr;
    SrvConf* default_server = nullptr;
    // Connections to this address begin with a PROXY protocol header: a
    // "listen" of the address said "proxy_protocol" (per address, as nginx).
    bool proxy_protocol = false;
    // A "listen" of the address said "http2": HTTP/2 for every server on
    // it, whatever their "http2" says (per address, as nginx).
    bool http2 = false;
    std::unordered_map<std::string, SrvConf*, StringHash, std::equal_to<>> exact;
    std::vector<std::pair<std::string, SrvConf*>> wild_head;  // "*.x": ".x" suffix
    std::vector<std::pair<std::string, SrvConf*>> wild_tail;  // "x.*": "x." prefix
    std::vector<std::pair<const CaptureRegex*, SrvConf*>> regex;
    // Every name leads to default_server and none is a regex (whose
    // captures a lookup would set): find_server() need not look.
    bool one_server = false;
};

// A socket to bind: one per port when a wildcard address covers it, else
// one per address [nginx]. Connections to it find their AddrServers by
// their local address.
struct ListenPort {
    ListenConf bind;                 // what to bind, with the options
    std::vector<AddrServers> addrs;  // the wildcard last
    bool wildcard = false;
    conf::ConfArray main_confs = nullptr;  // the generation's http block
};

// http_core_module's main-level struct.
struct HttpMainConf {
    std::string prefix;                     // the generation's, for default temp paths
    // Every "limit_except" block with its location's structs, merged after
    // the http block.
    std::vector<std::pair<conf::ConfArray, conf::ConfArray>> limit_excepts;
    // Accepted and checked for nginx configurations; the tables they size
    // are not hash tables here (see gatehouse.conf(5)).
    std::optional<uint64_t> server_names_hash_max_size;     // "server_names_hash_max_size"
    std::optional<uint64_t> server_names_hash_bucket_size;  // "server_names_hash_bucket_size"
    std::optional<uint64_t> variables_hash_max_size;        // "variables_hash_max_size"
    std::optional<uint64_t> variables_hash_bucket_size;     // "variables_hash_bucket_size"
    // Every temp directory of the configuration (each "*_temp_path" and
    // the modules' defaults under the prefix), once: the master makes them
    // for the workers before they start (see add_temp_dir).
    std::vector<std::string> temp_dirs;
    std::vector<SrvConf*> servers;          // owner: the generation arena
    conf::ConfArray main_confs = nullptr;
    conf::ConfArray srv_confs = nullptr;    // the http block's own levels
    conf::ConfArray loc_confs = nullptr;
    VarTable vars;                          // every variable the config uses
    std::vector<ListenPort> ports;          // built after the http block

    // Phase handlers, flat, with the engine's own steps (find the
    // location, re-find it after a rewrite, 404 when no content handler
    // answered) in between; see build_phase_engine().
    struct Step {
        PhaseFn fn;
        uint16_t next;  // where Proceed goes: the first step of the next phase
    };
    std::vector<Step> steps;
    uint16_t server_rewrite_step = 0;  // internal redirects restart here
    uint16_t find_config_step = 0;
    uint16_t rewrite_step = 0;         // named locations start here
    uint16_t post_access_step = 0;     // subrequests skip the Access phase to here
    std::vector<PhaseFn> handlers;     // the Log phase, run after the response
    uint16_t phase_start[kPhases + 1] = {};
    using FiltersWanted = decltype(ModuleHooks::filters_wanted);
    struct HeaderFilterEntry {
        HeaderFilter fn;
        FiltersWanted wanted = nullptr;  // ModuleHooks::filters_wanted
    };
    std::vector<HeaderFilterEntry> header_filters;  // module order
    struct BodyFilterEntry {
        BodyFilter fn;
        bool (*engaged)(const Request& r) = nullptr;  // ModuleHooks::body_filter_engaged
        FiltersWanted wanted = nullptr;
    };
    std::vector<BodyFilterEntry> body_filters;
    // ModuleHooks::after_response, module order.
    std::vector<void (*)(Request& r)> after_response;
};

extern const conf::Module http_core_module;

// The server of `as` named `host` (lower case, no port, no trailing dot):
// exact name, longest "*.x", longest "x.*", then regexes in order; the
// default server when none matches. With `r`, a regex's captures become
// its variables. Used for the Host header and for TLS SNI.
SrvConf* find_server(const AddrServers& as, std::string_view host, Request* r);

// The server's name ($server_name, the log's "server:", redirects): its
// first server_name, without the leading '.' of ".example.com" [nginx];
// empty without one.
std::string_view primary_server_name(const SrvConf& s);

// Whether connections to `as` may speak HTTP/2 with the servers of the
// address: "listen ... http2" there, or "http2 on" in `srv` (the default
// server, or the one SNI chose) [nginx].
inline bool http2_enabled(const AddrServers& as, const SrvConf& srv) { return as.http2 || srv.http2.value_or(false); }

// "keepalive_disable" bits: POST requests of MSIE 6 and older, any
// request of Safari on macOS (browsers whose keep-alive was broken).
inline constexpr uint8_t kKeepaliveDisableMsie6 = 1;
inline constexpr uint8_t kKeepaliveDisableSafari = 2;
// Whether the location's keepalive_disable rules out keep-alive for r's
// browser (its User-Agent), as nginx tells them apart.
bool keepalive_disabled(const Request& r, const LocConf& lc);

// Whether r's location lets a 103 through ("early_hints"): one of its
// values is neither empty nor "0" [nginx 1.29].
bool early_hints_wanted(Request& r);

// "limit_except" method names, as bits: GET (which lets HEAD through too),
// HEAD, POST, PUT, DELETE, MKCOL, COPY, MOVE, OPTIONS, PROPFIND,
// PROPPATCH, LOCK, UNLOCK, PATCH [nginx]. 0 for any other name.
uint32_t method_bit(std::string_view method);

// The http main conf of a generation, or null without an http block.
HttpMainConf* http_main(const conf::ConfArray main_confs);
// http_core_module's struct of a location-level array (a server's, a
// location's, a limit_except or "if" block's).
inline LocConf& core_loc(const conf::ConfArray loc_confs) {
    return *static_cast<LocConf*>(loc_confs[http_core_module.index]);
}

// A "*_temp_path path [level1 [level2 [level3]]]" directive, stored as an
// absolute path without a trailing slash. The levels are accepted for
// nginx configurations; temp files here are never named (see
// open_temp_file, body.h), so they have no use.
Status set_temp_path(conf::Ctx& cx, const conf::Node& n, std::optional<std::string>& field);

// Adds `dir` (absolute) to the temp directories of the http block being
// read (HttpMainConf::temp_dirs), for a module's default temp path;
// set_temp_path adds what it sets.
void add_temp_dir(conf::Ctx& cx, std::string dir);

}  // namespace gatehouse::http
