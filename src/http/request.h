// One HTTP request, from its head to its access-log line.
//
// Ownership: a Request belongs to its HttpConnection and lives until the
// response is written (or the connection dies); its Arena frees everything
// it allocated at once. String views in `in` point into the connection's
// read buffer, which is kept still for the life of the request, or into the
// arena. Conf pointers belong to the configuration generation, which
// outlives every request it served (a reload keeps the old generation
// until its last connection closes).
#pragma once

#include <sys/types.h>

#include <ctime>
#include <memory_resource>
#include <optional>
#include <string>
#include <string_view>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/arena.h"
#include "core/buf.h"
#include "event/fwd.h"
#include "http/fwd.h"
#include "http/h1_parser.h"

namespace gatehouse::http {

struct Header {
    std::string_view name;
    std::string_view value;
};

// The response head as filters see it. Special headers have fields; the
// rest are in `headers`. Views point into the arena, the config, or static
// storage.
struct ResponseHead {
    explicit ResponseHead(std::pmr::memory_resource* r) : headers(r) {}
    int status = 0;
    std::string_view reason;           // empty: the standard reason phrase
    std::pmr::vector<Header> headers;  // in order, sent as is
    std::optional<uint64_t> content_length;  // unset: chunked or close-delimited
    std::string_view content_type;
    std::string_view charset;
    time_t last_modified = -1;         // -1: no Last-Modified
    std::string_view etag;             // with quotes, as sent
    std::string_view location;         // Location, made absolute by the writer
    bool accept_ranges = false;

    // The first header named `name` (case-insensitive), or null.
    Header* find(std::string_view name);
    void remove(std::string_view name);
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

class Request {
    // First: every arena-backed member below is built from it.
    HttpConnection& conn_;
    Arena arena_{4096};

public:
    Request(HttpConnection& hc, const conf::ConfArray main_confs, const conf::ConfArray srv_confs);
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    ~Request();

    Arena& arena() { return arena_; }
    HttpConnection& conn() { return conn_; }
    std::pmr::memory_resource* mem() { return arena_.resource(); }

    // ---- the request as received -----------------------------------------
    RequestHead in;              // parsed head; views into the read buffer
    std::string_view method;     // "GET"
    std::string_view request_line;
    std::string_view unparsed_uri;  // $request_uri: as sent, with args
    std::string_view uri;           // $uri: decoded, normalised; rewrites change it
    std::string_view args;          // $args, without "?"
    std::string_view exten;         // extension of uri, for types
    std::string_view host;          // lower case, no port, no trailing dot
    int http_version = 11;          // 10 or 11
    bool head_only = false;         // HEAD: the writer sends no body
    bool keepalive = false;         // the connection may serve another request
    bool internal = false;          // reached by an internal redirect
    bool expect_continue = false;

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
    // False after "rewrite ... break": the URI no longer maps onto the
    // location's prefix, so proxy_pass sends it whole [nginx valid_location].
    bool valid_location = true;
    const std::string_view* named_location = nullptr;

    // ---- regex captures of the last match ($1..$9, named) ---------------
    std::string_view capture_subject;
    int ncaptures = 0;              // pairs
    int captures[20] = {};          // [start, end) offsets

    // ---- variables ----------------------------------------------------------
    VarValue* vars = nullptr;  // indexed by variable index, in the arena

    // ---- request body -------------------------------------------------------
    std::optional<uint64_t> content_length;
    bool chunked = false;
    bool discard_body = false;  // read and drop what remains before the next request

    // ---- response -----------------------------------------------------------
    ResponseHead out;
    Chain body;                 // what a content handler wants sent
    bool header_sent = false;   // header filters ran and the head was queued
    bool done = false;          // the last buffer went to the writer
    int status = 0;             // mirrors out.status once set; $status
    int err_status = 0;         // an error_page redirect: the status to send
    bool no_error_page = false; // answering a malformed request: no error_page
    bool chunked_out = false;   // the writer frames the body as chunked
    bool use_sendfile = false;  // file buffers go out with sendfile() ("sendfile on")
    std::string_view err_reason;  // why a 4xx/5xx was produced, for the info log

    RequestCounters counters;
    // Sets exten from uri: what follows the last "." of the last segment.
    void set_exten();
    // Restart the phase loop at phase_index (set by internal redirects).
    bool restart = false;
    // Files the response reads from; closed with the request.
    void add_fd(int fd);

private:
    void** ctx_ = nullptr;
    int fds_[4] = {-1, -1, -1, -1};
};

}  // namespace gatehouse::http
