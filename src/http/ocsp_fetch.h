// One exchange with an OCSP responder, on the worker's loop, never
// blocking it; shared by the stapler (http/ocsp_stapler.h: the server's
// own certificate) and the checks of client certificates ("ssl_ocsp",
// src/http/modules/ssl.cc), so that both resolve, connect, bound and log
// alike [nginx ngx_ssl_ocsp_request serves both as well].
//
// The responder's name through the server's "resolver" (an address
// literal needs none), a connection from the worker's table (it counts
// against worker_connections) to each address in turn, one HTTP/1.0 GET
// (RFC 6960 A.1) and its reply, read into at most kMaxReply bytes, each
// address's try bounded by kTimeout. Failures are logged at error with
// the responder, the peer and the owner's `what`.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/values.h"
#include "core/log.h"
#include "event/loop.h"
#include "event/resolver.h"
#include "event/timer.h"
#include "http/ocsp_reply.h"
#include "tls/ocsp.h"

namespace gatehouse::http {

// Where a request goes and what to say there.
struct OcspTarget {
    tls::ResponderUrl url;
    // The server's "resolver" (owner: the generation); null: none, so
    // only an address literal can be asked.
    const event::ResolverSpec* resolver = nullptr;
    conf::Duration resolver_timeout = event::ResolverConf::kDefaultTimeout;
};

// A GET's head asking `url` about the DER OCSPRequest `der`. Always a
// GET, as nginx: one CertID encodes to about 150 bytes, under the 255 up
// to which RFC 5019 2.1.1 wants GET (cacheable) rather than POST.
std::string ocsp_get_head(const tls::ResponderUrl& url, std::string_view der);

class OcspFetch {
public:
    static constexpr std::chrono::milliseconds kTimeout{60000};  // nginx's
    static constexpr size_t kMaxReply = 16384;                    // nginx's

    OcspFetch();
    OcspFetch(const OcspFetch&) = delete;
    OcspFetch& operator=(const OcspFetch&) = delete;
    // Ends a fetch under way (its connection closed, `done` not called).
    ~OcspFetch() { cancel(); }

    // Worker only. Starts asking `t` (which must outlive the fetch) with
    // `head`; `done` runs from the loop, never under this call, once the
    // body is in (ok()) or every try failed (logged). `what` ends the
    // log lines (", certificate: \"...\""). At most one at a time.
    void start(const OcspTarget& t, std::string head, std::string what, event::Callback done);
    void cancel();
    bool running() const { return phase_ != Phase::Idle; }

    // After `done`: whether a reply's body came, and that body.
    bool ok() const { return ok_; }
    const std::string& body() const { return body_; }
    // The address the body came from, for the owner's log lines.
    const std::string& peer() const { return peer_; }

private:
    enum class Phase : uint8_t { Idle, Resolving, Connecting, Sending, Reading, Finishing };

    void resolved();
    void connect_next();
    void on_read();
    void on_write();
    void on_timeout();
    void close_connection();
    void try_failed();  // this address failed (logged): the next one
    void finish(bool ok);
    void report();
    static void describe(const void* self, FixedWriter& out);

    const OcspTarget* target_ = nullptr;
    std::string head_;
    std::string what_;
    event::Callback done_;
    Phase phase_ = Phase::Idle;
    bool ok_ = false;
    std::string body_;
    event::Event report_;
    event::ResolveQuery query_;
    std::vector<event::ResolvedAddr> addrs_;
    size_t next_addr_ = 0;
    std::string peer_;                   // the address tried, for the log
    event::Connection* conn_ = nullptr;  // owner: the worker's table
    event::Timer timer_;
    size_t sent_ = 0;
    std::string in_;
    std::optional<ResponderReply> reply_;
    log::Context log_;
};

}  // namespace gatehouse::http
