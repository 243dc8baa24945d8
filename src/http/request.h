// One HTTP request, from its head to its access-log line, whatever the
// protocol under it.
//
// Ownership: a Request belongs to the protocol front-end that made it
// (src/http/v1/connection.h for HTTP/1.1) and lives until the response is
// written or its Stream is aborted; its Arena frees everything it
// allocated at once. It reaches the client only through its Stream
// (stream.h). String views in `in` and in the header fields point into the
// front-end's buffers, kept still for the life of the request, or into the
// arena. Conf pointers belong to the configuration generation, which
// outlives every request it served (a reload keeps the old generation
// until its last connection closes).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <ctime>
#include <memory_resource>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "event/loop.h"
#include "http/fwd.h"
#include "http/h1_parser.h"
#include "http/stream.h"

namespace gatehouse::upstream {
class Client;
}

namespace gatehouse::http {

struct Header {
    std::string_view name;
    std::string_view value;
};

// The response head as filters see it. Special headers have fields; the
// rest are in `headers`. Views point into the arena, the config, or static
// storage.
struct ResponseHead {
    explicit ResponseHead(std::pmr::memory_resource* r) : headers(r), trailers(r) {}
    // The one status of the response: $status, the status line, what the
    // phases and filters test. 0 until a handler sets it.
    int status = 0;
    std::string_view reason;           // empty: the standard reason phrase
    std::pmr::vector<Header> headers;  // in order, sent as is
    std::optional<uint64_t> content_length;  // unset: chunked or close-delimited
    std::string_view content_type;
    std::string_view charset;
    time_t last_modified = -1;         // -1: no Last-Modified
    std::string_view etag;             // with quotes, as sent
    std::string_view location;         // Location, as the handler set it ($sent_http_location)
    // What the stream sends as Location: `location`, made absolute by
    // send_header() when it is a path and absolute_redirect is on.
    std::string_view sent_location;
    bool accept_ranges = false;
    // The origin's Server and Date fields (in `headers`, if it sent them)
    // stand instead of ours, even when it sent none ("proxy_pass_header
    // Server", "proxy_pass_header Date") [nginx].
    bool origin_server = false;
    bool origin_date = false;
    // The origin answered the request's preconditions itself (a proxied
    // response that no cache stores): the not_modified filter leaves it
    // as it is [nginx disable_not_modified].
    bool origin_preconditions = false;
    // An origin's X-Accel-Charset: the charset the body is recoded to,
    // whatever the location's "charset" says [nginx].
    std::string_view override_charset;
    // Trailer fields will follow the body ("add_trailer"): a front-end
    // frames the body so that it can send them (HTTP/1.1: chunked), and
    // sends `trailers` as they are when the body ends (a filter fills
    // them then). Ignored where trailers cannot be sent (HTTP/1.0).
    bool expect_trailers = false;
    std::pmr::vector<Header> trailers;

    // The first header named `name` (case-insensitive), or null.
    Header* find(std::string_view name);
    void remove(std::string_view name);
};

// The request's header fields: the front-end's view (the HTTP/1 parser's
// array) until a module changes one; from then on a copy in the request
// arena, which every reader sees. Values added must live as long as the
// request (the arena, the configuration, static storage).
class HeaderList {
public:
    explicit HeaderList(std::pmr::memory_resource* mem) : mem_(mem) {}
    HeaderList(const HeaderList&) = delete;
    HeaderList& operator=(const HeaderList&) = delete;

    // The front-end's fields, as received.
    void reset(std::span<const HeaderField> fields);

    std::span<const HeaderField> all() const { return own_ ? std::span<const HeaderField>(*own_) : base_; }
    auto begin() const { return all().begin(); }
    auto end() const { return all().end(); }
    size_t size() const { return all().size(); }

    // The first field called `name` (ASCII case-insensitive), or null.
    const HeaderField* find(std::string_view name) const;
    // Appends a field (a repeated name stays repeated).
    void add(std::string_view name, std::string_view value);
    // The first field called `name` gets `value`, the others go; added
    // when there is none.
    void set(std::string_view name, std::string_view value);
    // Removes every field called `name`; how many there were.
    size_t remove(std::string_view name);

private:
    std::pmr::vector<HeaderField>& own();

    std::pmr::memory_resource* mem_;
    std::span<const HeaderField> base_;
    std::pmr::vector<HeaderField>* own_ = nullptr;  // in the arena, once changed
};

// Values the phase engine and logging need, kept small and flat.
struct RequestCounters {
    uint64_t request_length = 0;  // head + body bytes read
    uint64_t bytes_sent = 0;      // head + body bytes written
    uint64_t body_bytes_sent = 0;
    event::Msec start_msec = 0;
    time_t start_sec = 0;         // wall clock at the first byte
    uint32_t start_ms = 0;
};

// One value of a variable for this request (see variables.h).
struct VarValue {
    std::string_view s;
    bool valid = false;      // computed
    bool not_found = false;  // the variable has no value here ("-" in logs)
};

// A request body read whole and kept for the rest of the request
// (read_whole_body, body.h): in memory up to client_body_buffer_size,
// else in a temp file. Handlers after an internal redirect find it here.
struct RequestBody {
    explicit RequestBody(std::pmr::memory_resource* m) : bufs(m) {}
    ~RequestBody();
    Chain bufs;         // once complete: one memory Buf or one file Buf; none for 0 bytes
    uint64_t size = 0;
    int fd = -1;        // the temp file (owned by the request: add_fd)
    bool complete = false;
    // The temp file's name when it has one ($request_body_file), NUL
    // terminated, in the request arena; removed with the request unless
    // kept ("client_body_in_file_only on").
    std::string_view path;
    bool remove_path = false;

    // The reader's (request_body.cc): what it collects, and whom it tells.
    SlabRef mem;
    size_t mem_len = 0;
    // A streamed read (read_body) keeps a copy while the body fits
    // client_body_buffer_size: complete once it all passed, for
    // $request_body and a handler after an internal redirect.
    BodySink streamed_to = nullptr;  // the streaming reader's sink
    bool too_big = false;            // no copy: the body is gone once passed
    // The streaming reader may be handed pipe pieces (body.h read_body);
    // only while too_big, and no longer once the reader has left.
    bool sink_takes_pipes = false;
    bool failed = false;            // a temp file write failed: 500
    void (*done)(Request& r) = nullptr;
    event::Event ev;                // done (or the 500) from the loop
};

// The state of the response path (output.cc) for one request.
struct OutputState {
    Chain* pending = nullptr;      // [body filters + 1]: input waiting for engaged filter i; [nengaged] for the stream
    uint8_t* engaged = nullptr;    // [nengaged]: the body filters this response runs, in order
    uint8_t nengaged = 0;
    bool chosen = false;           // `engaged` is set (once the head went out)
    uint64_t held = 0;             // bit i: engaged filter i returned Hold
    uint8_t header_next = 0;       // a held header filter, run again first
    bool head_started = false;     // send_header ran (maybe held)
    bool running = false;          // the body filters are on the stack
    bool again = false;            // ...and must run once more
    void (*drain_fn)(Request& r) = nullptr;  // on_output_drained()
    event::Event resume_ev;        // resume_output()
};

class Request {
    // First: every arena-backed member below is built from it.
    Stream& stream_;
    Arena arena_;
    mutable std::string_view remote_addr_;  // remote_addr(); null until read or set

public:
    // A request on `srv` (the default server of the address until the
    // Host header chooses another), its clock started.
    Request(Stream& s, const conf::ConfArray main_confs, SrvConf* srv);
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    ~Request();

    Arena& arena() { return arena_; }
    Stream& stream() { return stream_; }
    const Stream& stream() const { return stream_; }
    std::pmr::memory_resource* mem() { return arena_.resource(); }

    // ---- the request as received (set by the front-end) ------------------
    RequestHead in;              // method, target, version, host; `in.headers` is the front-end's view
    HeaderList headers;          // the header fields, mutable (see HeaderList)
    std::string_view method;     // "GET"
    std::string_view request_line;
    std::string_view unparsed_uri;  // $request_uri: as sent, with args
    std::string_view uri;           // $uri: decoded, normalised; rewrites change it
    std::string_view args;          // $args, without "?"
    std::string_view exten;         // extension of uri, for types
    std::string_view host;          // lower case, no port, no trailing dot
    int http_version = 11;          // 10, 11 (20 for HTTP/2)
    bool head_only = false;         // HEAD (or a status without body): no body goes out
    bool internal = false;          // reached by an internal redirect
    bool pipelined = false;         // sent before the previous response ended ($pipe)
    // The request this one is a subrequest of (subrequest.h), which
    // outlives it; null for a client's request. The engine skips the
    // Access phase of a subrequest; a module that must act once per
    // client request (a limit) tests it.
    Request* parent = nullptr;
    // Background subrequests of this request still running, and the
    // front-end's event to post when the last is over (subrequest.h,
    // hold_for_background; owner: the stream, which outlives the request).
    uint16_t background = 0;
    event::Event* background_waiter = nullptr;

    // ---- the client --------------------------------------------------------
    // From the stream; a module may replace them (the address behind a
    // trusted proxy). Views into the stream or the arena. The address's
    // text is asked of the stream when first read: a request that logs
    // nothing and reads no address never formats it.
    std::string_view remote_addr() const {
        if (!remote_addr_.data()) remote_addr_ = stream().peer_text();
        return remote_addr_;
    }
    void set_remote_addr(std::string_view text) { remote_addr_ = text; }
    uint16_t remote_port = 0;
    const sockaddr* remote_sockaddr = nullptr;
    // The handler waits on something else (an origin): a client that
    // closes its connection meanwhile ends the request at once (499)
    // instead of when the response is written [nginx
    // ngx_http_upstream_check_broken_connection].
    bool abort_on_client_close = false;
    // The request works for others too (a cache fill that requests
    // collapsed on wait for): a client that goes away does not end it.
    // The stream then goes on without the client, dropping the output,
    // until the response ends (stream.h, "Orphans").
    bool outlive_client = false;

    // ---- routing -----------------------------------------------------------
    SrvConf* srv = nullptr;
    LocConf* loc = nullptr;
    conf::ConfArray main_confs;
    conf::ConfArray srv_confs;
    conf::ConfArray loc_confs = nullptr;

    template <typename T>
    T& main_conf(const Module& m) const {
        return *static_cast<T*>(main_confs[m.index]);
    }
    template <typename T>
    T& srv_conf(const Module& m) const {
        return *static_cast<T*>(srv_confs[m.index]);
    }
    template <typename T>
    T& loc_conf(const Module& m) const {
        return *static_cast<T*>(loc_confs[m.index]);
    }

    // Per-module state of this request, in the arena; null until set.
    template <typename T>
    T* ctx(const Module& m) const {
        return static_cast<T*>(ctx_[m.index]);
    }
    void set_ctx(const Module& m, void* p) { ctx_[m.index] = p; }

    // ---- phases -------------------------------------------------------------
    uint16_t phase_index = 0;      // into the generation's flat handler array
    uint8_t uri_changes = 11;      // nginx: 10 internal redirects, then 500
    bool uri_changed = false;      // a rewrite changed uri: find the location again
    // "satisfy any": the status of the access checks that denied so far
    // (0: none did); see access_denied().
    uint16_t access_code = 0;
    // What limit_req and limit_conn decided ($limit_req_status,
    // $limit_conn_status; 0: no limit applied). Here rather than in the
    // modules' contexts, which an internal redirect clears: a request is
    // limited once, wherever it goes afterwards [nginx r->main].
    uint8_t limit_req_status = 0;
    uint8_t limit_conn_status = 0;
    // False after "rewrite ... break": the URI no longer maps onto the
    // location's prefix, so proxy_pass sends it whole [nginx valid_location].
    bool valid_location = true;
    // The handler that answers the location alone (LocConf::
    // content_handler): the chosen location's, replaced by that of a
    // limit_except or "if" block that has one of its own, kept when the
    // block has none [nginx r->content_handler].
    PhaseFn content_handler = nullptr;
    event::Event resume_ev;        // post_resume(): run_phases() from the loop

    // ---- regex captures of the last match ($1..$9, named) ---------------
    std::string_view capture_subject;
    int ncaptures = 0;              // pairs
    int captures[20] = {};          // [start, end) offsets

    // ---- variables ----------------------------------------------------------
    VarValue* vars = nullptr;  // indexed by variable index, in the arena

    // ---- request body -------------------------------------------------------
    std::optional<uint64_t> content_length;  // unset with has_body: length unknown (chunked)
    bool has_body = false;
    RequestBody* body_kept = nullptr;  // read_whole_body(): in the arena

    // ---- response -----------------------------------------------------------
    ResponseHead out;
    Chain body;                 // what a content handler wants sent
    bool header_sent = false;   // the head went to the stream
    bool done = false;          // the response is complete; the Log phase ran or runs now
    // The response went out whole: set when the stream first asks
    // hold_for_background() for a delivered response, which runs the
    // after_response hooks then. Never for an orphan's (stream.h).
    bool response_complete = false;
    // "error_page 404 =200 /x", "error_page 404 /x": the status the
    // response of the redirected request goes out with when it is 200
    // (the error's own, or the "=code"); 0 when no error page is running.
    int error_page_status = 0;
    bool no_error_page = false; // answering a malformed request: no error_page
    bool use_sendfile = false;  // file buffers go out with sendfile() ("sendfile on")
    // Bytes per second the body may go out at, 0 for no limit; set: chosen
    // by "set $limit_rate" or the origin's X-Accel-Limit-Rate, so the
    // limit_rate directive no longer decides (limit_rate.cc).
    uint64_t limit_rate = 0;
    bool limit_rate_set = false;
    std::string_view err_reason;  // why a 4xx/5xx was produced, for the info log
    OutputState output;

    RequestCounters counters;
    // What the stream's head said of the connection and the framing, set
    // when it is sent: $sent_http_connection ("upgrade" for a 101, else
    // "keep-alive" or "close"), $sent_http_keep_alive ("timeout=N") and
    // $sent_http_transfer_encoding, which nginx computes likewise rather
    // than from r.out.headers. An HTTP/2 stream leaves them as they are.
    struct SentFraming {
        bool keepalive = false;
        bool chunked = false;
        uint32_t keepalive_timeout = 0;  // seconds the Keep-Alive field said; 0: none
    } sent_framing;

    // ---- the error log -------------------------------------------------------
    // What lines about this request carry (core/log.h): its connection's
    // number and describe_request()'s tail. The front-end's callbacks put
    // the same in scope; code entering the request from the loop on its
    // own (a posted event, a timer of a module) does: log::Scope s(&r.log_ctx).
    log::Context log_ctx;
    // The upstream exchange, for the ", upstream: \"...\"" of those lines;
    // owner: the module that proxies (its state, in the arena).
    const upstream::Client* upstream = nullptr;

    // Sets exten from uri: what follows the last "." of the last segment.
    void set_exten();
    // Files the response reads from; closed with the request.
    void add_fd(int fd);

private:
    void** ctx_ = nullptr;
    int fds_[4] = {-1, -1, -1, -1};
};

// Appends nginx's context of a line about r: ", client: <address>,
// server: <name>, request: \"<request line>\"", then, when there are,
// ", upstream: \"<url>\"", ", host: \"<Host>\"", ", referrer: \"<Referer>\"";
// a subrequest adds ", subrequest: \"<its uri>\"" after the request line.
void describe_request(const Request& r, FixedWriter& out);

}  // namespace gatehouse::http
