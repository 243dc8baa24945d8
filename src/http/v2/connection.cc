#include "http/v2/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory_resource>
#include <vector>

#include "core/addr_text.h"
#include "core/random.h"
#include "core/str.h"
#include "event/loop.h"
#include "event/worker.h"
#include "http/conditional.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/subrequest.h"
#include "http/v1/connection.h"
#include "http/v2/module.h"
#include "http/v2/request_head.h"
#include "tls/session.h"

namespace gatehouse::http::v2 {

namespace {

Connection* g_conns = nullptr;
bool g_retiring = false;

// nghttp2 is asked for frames until this much waits for the socket.
constexpr size_t kOutBatch = 64 * 1024;
// Frames that ask for no work (see Connection::control_) allowed between
// two requests; a browser sends a handful (SETTINGS, WINDOW_UPDATE, a
// PRIORITY per resource), a flood sends them by the million.
constexpr uint32_t kControlBudget = 10000;
// Streams refused for going over http2_max_concurrent_streams before the
// client is told to calm down: a client that ignores the setting.
constexpr uint32_t kRefusedBudget = 1000;
// RST_STREAM from the client (rapid reset, CVE-2023-44487): ours, then
// nghttp2's token bucket (burst, then rate per second) behind it.
constexpr uint32_t kResetBudget = 1000;
constexpr uint64_t kResetBurst = 2 * kResetBudget;
constexpr uint64_t kResetRate = 33;
// RFC 9113 6.9.1: a flow-control window is at most 2^31-1 octets.
constexpr int32_t kMaxWindow = 0x7fffffff;
// RFC 9113 6.5.2: SETTINGS_INITIAL_WINDOW_SIZE until the client has ours.
constexpr uint64_t kDefaultWindow = 65535;
// RFC 9113 5.1.1: stream ids are 31 bits; the shutdown notice names the largest.
constexpr int32_t kMaxStreamId = 0x7fffffff;
// A response's header block, HPACK-encoded, sent as HEADERS and as many
// CONTINUATION frames as the client's SETTINGS_MAX_FRAME_SIZE needs. The
// fields were bounded where they were made (proxy_buffer_size for an
// origin's, the config and large_client_header_buffers for add_header's);
// this only keeps nghttp2's own cap (64 KiB by default, less than what
// nginx sends) out of their way. A larger block resets its stream.
constexpr size_t kMaxResponseHeadBlock = 1 << 20;

const LocConf& srv_loc(const SrvConf& s) { return *static_cast<const LocConf*>(s.loc_confs[http_core_module.index]); }
const H2SrvConf& h2_srv(const SrvConf& s) { return *static_cast<const H2SrvConf*>(s.srv_confs[http_v2_module.index]); }

// The worker's input buffer: one for all connections, as nginx's
// http2_recv_buffer_size, since nghttp2 keeps what it needs of a frame.
std::vector<uint8_t>& recv_buffer(size_t size) {
    static std::vector<uint8_t> buf;
    if (buf.size() < size) buf.resize(size);
    return buf;
}

// A fresh Sec-WebSocket-Key (RFC 6455 4.1: 16 random bytes, base64) for
// the origin of an HTTP/2 WebSocket, whose client sends none (RFC 8441 5).
// A nonce against caches and confused intermediaries, not a secret.
void websocket_key(char (&out)[24]) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t raw[18] = {};
    const uint64_t a = random64(), b = random64();
    std::memcpy(raw, &a, 8);
    std::memcpy(raw + 8, &b, 8);
    for (size_t i = 0, o = 0; i < 18; i += 3, o += 4) {
        const uint32_t v = uint32_t{raw[i]} << 16 | uint32_t{raw[i + 1]} << 8 | raw[i + 2];
        out[o] = kAlphabet[v >> 18 & 63];
        out[o + 1] = kAlphabet[v >> 12 & 63];
        out[o + 2] = kAlphabet[v >> 6 & 63];
        out[o + 3] = kAlphabet[v & 63];
    }
    out[22] = out[23] = '=';  // 16 bytes: two of padding
}

// Fields HTTP/2 has no place for (RFC 9113 8.2.2).
bool connection_specific(std::string_view name) {
    return iequals(name, "connection") || iequals(name, "keep-alive") || iequals(name, "proxy-connection") ||
           iequals(name, "transfer-encoding") || iequals(name, "upgrade");
}

}  // namespace

Preface match_preface(std::string_view data) {
    size_t n = std::min(data.size(), kPreface.size());
    if (data.substr(0, n) != kPreface.substr(0, n)) return Preface::No;
    return n == kPreface.size() ? Preface::Full : Preface::Partial;
}

void take_over(Handover h) {
    // Owned by the slot from now on: close_connection() frees it.
    std::make_unique<Connection>(h).release();
}

void retire_connections() {
    if (g_retiring) return;
    g_retiring = true;
    for (Connection* c = g_conns; c; c = c->next_) {
        if (c->closed_) continue;
        c->retiring_ = true;
        char b;
        if (c->live_ == 0 && ::recv(c->c_.fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT) != 1) {
            // Idle, nothing on its way that we could see: the one GOAWAY,
            // with the last stream id we took, at once [nginx]. A request
            // the client sends meanwhile is above that id, so it knows the
            // request was not taken and sends it again elsewhere (RFC 9113
            // 6.8), which HTTP/1 cannot tell a client.
            c->goaway(NGHTTP2_NO_ERROR);
            continue;
        }
        // RFC 9113 6.8: a GOAWAY with the largest stream id first, so that
        // requests already on their way are still taken; the real one
        // after a grace, with the last stream id we took.
        nghttp2_submit_shutdown_notice(c->session_);
        event::worker_loop().arm(c->retire_timer_, v1::kRetireGrace);
        c->schedule_send();
    }
}

void close_connections() {
    Connection* next = nullptr;
    for (Connection* c = g_conns; c; c = next) {
        next = c->next_;
        c->close_connection(false);
    }
}

// ---- nghttp2's callbacks --------------------------------------------------------

struct Connection::Callbacks {
    static Connection* self(void* p) { return static_cast<Connection*>(p); }
    static H2Stream* stream(nghttp2_session* s, int32_t id) {
        return static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
    }

    static int begin_frame(nghttp2_session* s, const nghttp2_frame_hd* hd, void* p) {
        Connection* c = self(p);
        // A header block that never ends (HEADERS without END_HEADERS, then
        // nothing, or CONTINUATIONs trickled) holds a stream, so no
        // keepalive_timeout runs: client_header_timeout bounds it, from
        // its first frame, whatever trickles after [nginx: header timeout].
        if (hd->type == NGHTTP2_HEADERS) {
            const int32_t id = hd->stream_id;
            if ((id & 1) && id <= c->max_sid_ && !nghttp2_session_get_stream_user_data(s, id) &&
                !c->was_ended_early(id) && !c->closed_) {
                // A stream that was closed (a second HEADERS, or one after
                // its END_STREAM), or skipped: nghttp2 would drop it
                // unseen; nginx, as RFC 9113 5.1.1 says, ends the
                // connection.
                GH_LOG(Info, "client sent HEADERS frame with incorrect identifier %d, the last was %d", id,
                       c->max_sid_);
                nghttp2_session_terminate_session(s, NGHTTP2_PROTOCOL_ERROR);
                c->schedule_send();
                return 0;
            }
            if (id > c->max_sid_) c->max_sid_ = id;
            if (!c->header_timer_.armed())
                event::worker_loop().arm(c->header_timer_, *c->srv_->client_header_timeout);
            c->header_sid_ = id;
        } else if (hd->type != NGHTTP2_CONTINUATION) {
            // Any other frame: the block before it has ended.
            event::worker_loop().cancel(c->header_timer_);
        }
        return 0;
    }

    static int begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* p) {
        Connection* c = self(p);
        if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
        if (c->goaway_after_) {
            // Past keepalive_requests: the GOAWAY will say this one was
            // not taken, so the client sends it again elsewhere.
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
            if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) c->ended_early(f->hd.stream_id);
            return 0;
        }
        if (c->live_ >= c->max_streams_) {
            // Over http2_max_concurrent_streams (a client that did not wait
            // for our SETTINGS, or ignores them): refused, so that it may
            // retry it (RFC 9113 8.7) [nginx].
            GH_LOG(Info, "concurrent streams exceeded %u", c->max_streams_);
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
            if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) c->ended_early(f->hd.stream_id);
            if (++c->refused_ > kRefusedBudget) c->calm_down("too many refused streams");
            return 0;
        }
        if (!c->settings_acked_ && !(f->hd.flags & NGHTTP2_FLAG_END_STREAM) && c->body_preread_ < kDefaultWindow) {
            // A body may follow, and until the client acknowledged our
            // SETTINGS its window is the default one (RFC 9113 6.5.3),
            // more than http2_body_preread_size lets a stream buffer:
            // refused, so that it may retry once it knows [nginx].
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
            c->ended_early(f->hd.stream_id);
            if (++c->refused_ > kRefusedBudget) c->calm_down("too many refused streams");
            return 0;
        }
        auto st = std::make_unique<H2Stream>(*c, f->hd.stream_id);
        H2Stream* h = st.release();  // owned by the connection's list until terminate()
        h->next_ = c->streams_;
        if (c->streams_) c->streams_->prev_ = h;
        c->streams_ = h;
        ++c->live_;
        c->update_idle();
        nghttp2_session_set_stream_user_data(s, f->hd.stream_id, h);
        return 0;
    }

    static int header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void*) {
        if (f->hd.type != NGHTTP2_HEADERS) return 0;
        H2Stream* h = stream(s, f->hd.stream_id);
        if (!h || h->started_ || h->start_ev_.posted()) return 0;  // trailers: not kept
        h->on_header({reinterpret_cast<const char*>(name), namelen}, {reinterpret_cast<const char*>(value), valuelen});
        return 0;
    }

    // A regular field nghttp2 would drop (its name or value is not what
    // RFC 9113 8.2.1 allows): judged by nginx's rules instead (request_head.h).
    static int invalid_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                              const uint8_t* value, size_t valuelen, uint8_t, void*) {
        if (f->hd.type != NGHTTP2_HEADERS) return 0;
        H2Stream* h = stream(s, f->hd.stream_id);
        if (!h || h->started_ || h->start_ev_.posted()) return 0;  // trailers: not kept
        h->head_->add_unchecked({reinterpret_cast<const char*>(name), namelen},
                                {reinterpret_cast<const char*>(value), valuelen});
        return 0;
    }

    static int frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* p) {
        Connection* c = self(p);
        const bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
        switch (f->hd.type) {
            case NGHTTP2_HEADERS: {
                event::worker_loop().cancel(c->header_timer_);
                H2Stream* h = stream(s, f->hd.stream_id);
                if (!h) return 0;
                // $request_length: the header block as sent [nginx].
                if (h->req_) h->req_->counters.request_length += f->hd.length;
                if (f->headers.cat == NGHTTP2_HCAT_REQUEST) h->on_headers_done(end);
                else if (end) h->on_end_of_input();  // trailers end the body
                return 0;
            }
            case NGHTTP2_DATA: {
                // Empty DATA frames are counted by feed(), which sees those
                // to closed streams too.
                H2Stream* h = stream(s, f->hd.stream_id);
                if (h && end) h->on_end_of_input();
                return 0;
            }
            case NGHTTP2_PING:
                if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) c->count_control("PING frames");
                return 0;
            case NGHTTP2_SETTINGS:
                if (f->hd.flags & NGHTTP2_FLAG_ACK) c->settings_acked_ = true;
                else c->count_control("SETTINGS frames");
                return 0;
            case NGHTTP2_PRIORITY:
                c->count_control("PRIORITY frames");
                return 0;
            case NGHTTP2_WINDOW_UPDATE:
                c->count_control("WINDOW_UPDATE frames");
                return 0;
            case NGHTTP2_RST_STREAM:
                // Rapid reset (CVE-2023-44487): each stream opened and
                // reset at once costs a request's setup. Past a budget of
                // its own plus one per response completed, the client is
                // told to calm down; nghttp2's rate limit stays behind it.
                if (++c->resets_ > kResetBudget + c->completed_) c->calm_down("stream resets");
                c->count_control("RST_STREAM frames");
                return 0;
            default:
                return 0;
        }
    }

    static int data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data, size_t len, void*) {
        H2Stream* h = stream(s, id);
        if (!h) {
            // A stream we refused or finished: its bytes are nobody's.
            nghttp2_session_consume_connection(s, len);
            return 0;
        }
        h->on_data(data, len);
        return 0;
    }

    static int stream_close(nghttp2_session* s, int32_t id, uint32_t error_code, void*) {
        if (H2Stream* h = stream(s, id)) h->on_reset(error_code);
        return 0;
    }

    // A DATA frame may be as large as the client allows
    // (SETTINGS_MAX_FRAME_SIZE) and the windows let go, up to
    // http2_chunk_size [nginx]; nghttp2 alone stops at 16384.
    static ssize_t read_length(nghttp2_session* s, uint8_t, int32_t id, int32_t conn_window, int32_t stream_window,
                               uint32_t max_frame, void*) {
        int64_t n = std::min<int64_t>({conn_window, stream_window, max_frame});
        H2Stream* h = stream(s, id);
        if (h && h->req_ && h->req_->loc_confs)
            n = std::min<int64_t>(n, static_cast<int64_t>(*h->req_->loc_conf<H2LocConf>(http_v2_module).chunk_size));
        return static_cast<ssize_t>(std::max<int64_t>(n, 1));
    }

    static int frame_send(nghttp2_session* s, const nghttp2_frame* f, void* p) {
        if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            if (H2Stream* h = stream(s, f->hd.stream_id)) h->on_end_stream_sent();
        // The shutdown notice (RFC 9113 6.8: the largest stream id) is not
        // the GOAWAY that names our last stream: that one is still to go.
        if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.last_stream_id != kMaxStreamId) self(p)->goaway_sent_ = true;
        return 0;
    }

    static int frame_not_send(nghttp2_session* s, const nghttp2_frame* f, int lib_error, void*) {
        // A response that cannot go (the stream was reset meanwhile, or
        // its header block is past kMaxResponseHeadBlock).
        if (f->hd.type == NGHTTP2_HEADERS)
            if (H2Stream* h = stream(s, f->hd.stream_id)) {
                if (lib_error == NGHTTP2_ERR_FRAME_SIZE_ERROR) {
                    log::Scope scope(&h->req_->log_ctx);
                    GH_LOG(Error, "response header is too large to send over HTTP/2 (%zu bytes at most)",
                           kMaxResponseHeadBlock);
                }
                h->abort();
            }
        return 0;
    }

    static ssize_t read_data(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                             nghttp2_data_source* src, void*) {
        return static_cast<H2Stream*>(src->ptr)->read_data(buf, length, flags);
    }

    static int error(nghttp2_session*, int, const char* msg, size_t len, void* p) {
        // A field nghttp2 would ignore goes to invalid_header(), which
        // judges it (and logs what makes a request bad).
        constexpr std::string_view kIgnoring = "Ignoring received invalid HTTP header field";
        if (std::string_view(msg, len).starts_with(kIgnoring)) return 0;
        log::Scope scope(&self(p)->log_ctx_);
        GH_LOG(Info, "client sent invalid HTTP/2: %.*s", static_cast<int>(len), msg);
        return 0;
    }

    static int invalid_frame(nghttp2_session*, const nghttp2_frame*, int, void* p) {
        self(p)->count_control("invalid frames");
        return 0;
    }
};

// ---- the connection -----------------------------------------------------------

Connection::Connection(Handover& h)
    : c_(*h.c),
      port_(*h.port),
      addr_(*h.addr),
      srv_(h.addr->default_server),
      tls_(std::move(h.tls)),
      pp_(std::move(h.pp)),
      pp_tlvs_(std::move(h.pp_tlvs)),
      preread_(h.preread),
      started_(h.started),
      read_ev_(event::Callback::to<&Connection::on_read>(this)),
      send_ev_(event::Callback::to<&Connection::send_output>(this)),
      retire_timer_(event::Callback::to<&Connection::on_retire_timer>(this)),
      header_timer_(event::Callback::to<&Connection::on_header_timeout>(this)),
      log_ctx_{h.c->number, describe_for_log, this} {
    log::Scope scope(&log_ctx_);
    if (pp_) pp_->tlvs = pp_tlvs_;  // the string moved: its views follow
    if (h.gauge) gauge_.adopt(*h.gauge);
    gauge_.to(stats::ConnGauge::State::Waiting);
    next_ = g_conns;
    if (g_conns) g_conns->prev_ = this;
    g_conns = this;
    std::memcpy(&peer_, &c_.peer, std::min(sizeof peer_, sizeof c_.peer));
    number_ = c_.number;
    addr_text(reinterpret_cast<const sockaddr*>(&c_.peer), peer_text_, sizeof peer_text_, &peer_port_);
    // The server SNI chose, if any: its limits, as nginx's conf_ctx.
    if (tls_ && tls_->sni_choice) srv_ = const_cast<SrvConf*>(static_cast<const SrvConf*>(tls_->sni_choice));
    if (tls_) tls_->user = nullptr;  // the HTTP/1 stream it named is gone
    c_.data = this;
    c_.reclaim = {};
    c_.io.on_read = event::Callback::to<&Connection::on_read>(this);
    c_.io.on_write = event::Callback::to<&Connection::on_write>(this);
    c_.read_timer.cb = event::Callback::to<&Connection::on_read_timeout>(this);
    c_.write_timer.cb = event::Callback::to<&Connection::on_write_timeout>(this);
    event::worker_connections().set_reusable(c_, false);
    if (!init_session()) {
        close_connection();
        return;
    }
    if (g_retiring) {
        retiring_ = true;
        nghttp2_submit_shutdown_notice(session_);
        event::worker_loop().arm(retire_timer_, v1::kRetireGrace);
    }
    update_idle();
    // What TLS or the preface check already read may be all there is:
    // epoll will not say so again.
    event::worker_loop().post(read_ev_);
}

Connection::~Connection() {
    if (session_) nghttp2_session_del(session_);
    if (prev_) prev_->next_ = next_;
    else if (g_conns == this) g_conns = next_;
    if (next_) next_->prev_ = prev_;
}

bool Connection::init_session() {
    nghttp2_session_callbacks* cb = nullptr;
    if (nghttp2_session_callbacks_new(&cb) != 0) return false;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, Callbacks::begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, Callbacks::begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, Callbacks::header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, Callbacks::invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, Callbacks::frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, Callbacks::data_chunk);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cb, Callbacks::read_length);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, Callbacks::stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, Callbacks::frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, Callbacks::frame_not_send);
    nghttp2_session_callbacks_set_error_callback2(cb, Callbacks::error);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, Callbacks::invalid_frame);
    nghttp2_option* opt = nullptr;
    nghttp2_option_new(&opt);
    // Windows open as consumers take body bytes, not as they arrive.
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_stream_reset_rate_limit(opt, kResetBurst, kResetRate);
    // Closed streams are not kept for the priority tree: a client opening
    // and closing streams costs no memory that stays.
    nghttp2_option_set_no_closed_streams(opt, 1);
    // Response fields are not indexed (HPACK literals without indexing,
    // as nginx sends them): a connection keeps no copy of the last
    // responses' fields in its encoder table (up to 4k each, held while
    // it idles), for a few bytes more per response.
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_option_set_max_send_header_block_length(opt, kMaxResponseHeadBlock);
    const H2SrvConf& h2 = h2_srv(*srv_);
    max_streams_ = static_cast<uint32_t>(std::min<uint64_t>(*h2.max_concurrent_streams, 0x7fffffff));
    body_preread_ = *h2.body_preread_size;
    int rv = nghttp2_session_server_new2(&session_, cb, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) return false;
    const uint64_t list = *srv_->large_header_buffer_size * *srv_->large_header_buffers_num;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
         static_cast<uint32_t>(std::min<uint64_t>(*h2.body_preread_size, kMaxWindow))},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(std::min<uint64_t>(list, UINT32_MAX))},
        // RFC 8441 3: WebSockets over streams (extended CONNECT); nghttp2
        // checks the :protocol pseudo-header once the client acknowledged.
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, std::size(iv)) != 0) return false;
    // The connection's window is as large as can be: each stream's bounds
    // what a client may send ahead [nginx].
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kMaxWindow);
    return true;
}

void Connection::describe_for_log(const void* self, FixedWriter& out) {
    auto* c = static_cast<const Connection*>(self);
    out.put(", client: ");
    out.put(c->peer_text_);
    out.put(", server: ");
    const conf::Address& a = c->port_.bind.addr;
    if (a.kind == conf::Address::Kind::Inet && a.host == "*") {
        out.put("0.0.0.0:");
        out.num(a.port);
    } else {
        out.put(a.text());
    }
}

bool Connection::feed(const uint8_t* data, size_t len) {
    // An empty DATA frame asks for no work: a flood of them is bounded as
    // the other control frames are, whether its stream is open or not
    // (nghttp2 drops those to a closed stream without a callback) [nginx].
    scan_.feed(data, len, [this](const FrameHeader& h) {
        if (h.type == NGHTTP2_DATA && h.length == 0 && !(h.flags & NGHTTP2_FLAG_END_STREAM))
            count_control("empty DATA frames");
        // A client cannot push (RFC 9113 8.4): a connection error from
        // the frame header, without waiting for a payload that may never
        // come [nginx].
        if (h.type == NGHTTP2_PUSH_PROMISE && !closed_) {
            GH_LOG(Info, "client sent PUSH_PROMISE frame");
            nghttp2_session_terminate_session(session_, NGHTTP2_PROTOCOL_ERROR);
            schedule_send();
        }
    });
    if (closed_) return false;
    if (first_frame_) {
        // RFC 9113 3.4: the preface is followed by a SETTINGS frame, and
        // nghttp2 ends a session whose first frame is another. nginx
        // takes such clients (its own test suite's is one), and so do we:
        // an empty SETTINGS frame, which changes nothing, stands for the
        // missing one. The preface and the next frame header are kept
        // here until they are all in.
        constexpr size_t kNeed = kPreface.size() + 9;
        head_.append(reinterpret_cast<const char*>(data), len);
        if (head_.size() < kNeed) return true;
        first_frame_ = false;
        std::string bytes = std::move(head_);
        head_ = std::string();
        const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
        const uint8_t type = b[kPreface.size() + 3], flags = b[kPreface.size() + 4];
        if (std::string_view(bytes).substr(0, kPreface.size()) == kPreface &&
            (type != NGHTTP2_SETTINGS || (flags & NGHTTP2_FLAG_ACK))) {
            static constexpr uint8_t kEmptySettings[9] = {0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0};
            drop_settings_ack_ = true;
            if (!feed_session(b, kPreface.size())) return false;
            if (!feed_session(kEmptySettings, sizeof kEmptySettings)) return false;
            return feed_session(b + kPreface.size(), bytes.size() - kPreface.size());
        }
        return feed_session(b, bytes.size());
    }
    return feed_session(data, len);
}

bool Connection::feed_session(const uint8_t* data, size_t len) {
    ssize_t rv = nghttp2_session_mem_recv(session_, data, len);
    if (rv >= 0) return !closed_;
    uint32_t code = NGHTTP2_PROTOCOL_ERROR;
    if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
        GH_LOG(Info, "client sent invalid HTTP/2 connection preface");
    } else if (rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ||
               rv == NGHTTP2_ERR_TOO_MANY_SETTINGS) {
        // Frames that cost us work (ACKs to queue, a header block without
        // end, settings to apply) faster than a client needs.
        GH_LOG(Info, "client sent too many %s, closing connection",
               rv == NGHTTP2_ERR_FLOODED ? "frames to acknowledge"
               : rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ? "CONTINUATION frames"
                                                          : "SETTINGS entries");
        code = NGHTTP2_ENHANCE_YOUR_CALM;
    } else {
        GH_LOG(Info, "HTTP/2 connection error: %s", nghttp2_strerror(static_cast<int>(rv)));
    }
    // nghttp2 queued a GOAWAY for most of them already: that one goes.
    nghttp2_session_terminate_session(session_, code);
    send_output();
    close_connection(true);
    return false;
}

void Connection::on_read() {
    log::Scope scope(&log_ctx_);
    if (closed_) return;
    if (!preread_.empty()) {
        std::string bytes = std::move(preread_);
        preread_.clear();
        if (!feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())) return;
    }
    const auto& mc = *static_cast<const H2MainConf*>(port_.main_confs[http_v2_module.index]);
    auto& buf = recv_buffer(static_cast<size_t>(mc.recv_buffer_size.value_or(kDefaultRecvBuffer)));
    for (;;) {
        // Input stops while output waits for the socket: a client that
        // does not read cannot make us queue answers (PING ACKs, SETTINGS
        // ACKs) without end.
        if (out_pos_ < out_.size()) {
            input_held_ = true;
            break;
        }
        event::IoResult io = c_.recv({reinterpret_cast<char*>(buf.data()), buf.size()});
        if (io.kind == event::IoResult::Ok) {
            if (!feed(buf.data(), io.bytes)) return;
            send_output();
            if (closed_) return;
            continue;
        }
        if (io.kind == event::IoResult::Again) break;
        if (io.kind == event::IoResult::Error && io.err != ECONNRESET)
            GH_LOG_ERRNO(Info, io.err, "recv() failed while processing HTTP/2 connection");
        close_connection();
        return;
    }
    send_output();
}

void Connection::on_write() {
    log::Scope scope(&log_ctx_);
    if (closed_) return;
    // OpenSSL had to write before it could read on (a TLS 1.3 key update).
    if (tls_ && tls_->read_wants_write()) on_read();
    send_output();
}

void Connection::schedule_send() {
    if (!closed_) event::worker_loop().post_after_batch(send_ev_);
}

void Connection::send_output() {
    log::Scope scope(&log_ctx_);
    if (closed_ || sending_) return;
    sending_ = true;
    for (;;) {
        if (out_pos_ < out_.size()) {
            event::IoResult io = c_.send({out_.data() + out_pos_, out_.size() - out_pos_});
            if (io.kind == event::IoResult::Ok) {
                out_pos_ += io.bytes;
                continue;
            }
            if (io.kind == event::IoResult::Again) {
                if (!c_.write_timer.armed()) event::worker_loop().arm(c_.write_timer, *srv_loc(*srv_).send_timeout);
                sending_ = false;
                return;
            }
            if (io.err != EPIPE && io.err != ECONNRESET)
                GH_LOG_ERRNO(Info, io.err, "send() failed while processing HTTP/2 connection");
            sending_ = false;
            close_connection();
            return;
        }
        out_.clear();
        out_pos_ = 0;
        while (out_.size() < kOutBatch) {
            const uint8_t* data = nullptr;
            ssize_t n = nghttp2_session_mem_send(session_, &data);
            if (n < 0) {
                GH_LOG(Info, "HTTP/2 connection error: %s", nghttp2_strerror(static_cast<int>(n)));
                sending_ = false;
                close_connection();
                return;
            }
            if (n == 0) break;
            // nghttp2 hands over one frame at a time: the first SETTINGS
            // ACK answers the SETTINGS feed() made up, which the client
            // did not send and must not see acknowledged [nginx].
            if (drop_settings_ack_ && n == 9 && data[3] == NGHTTP2_SETTINGS && (data[4] & NGHTTP2_FLAG_ACK)) {
                drop_settings_ack_ = false;
                continue;
            }
            out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
        }
        if (out_.empty()) break;
    }
    event::worker_loop().cancel(c_.write_timer);
    sending_ = false;
    if (closed_) return;
    if (input_held_) {
        // Input waited for this output to go (on_read): it goes on.
        input_held_ = false;
        event::worker_loop().post(read_ev_);
    }
    check_done();
    // Idle: the batch buffer goes back, whatever its size, as HTTP/1
    // gives its buffers back (an idle connection holds nothing of ours).
    if (!closed_ && live_ == 0 && !out_.empty()) std::string().swap(out_);
}

void Connection::check_done() {
    if (closed_ || sending_ || out_pos_ < out_.size()) return;
    if (nghttp2_session_want_read(session_) || nghttp2_session_want_write(session_)) return;
    // nghttp2 is done (GOAWAY sent, or the session ended): streams whose
    // response is out finish from their posted events first, which call
    // this again; one still working can no longer answer.
    for (H2Stream* s = streams_; s; s = s->next_)
        if (!(s->end_sent_ && s->out_last_)) {
            close_connection(true);
            return;
        }
    if (live_ == 0) linger_close();
}

void Connection::linger_close() {
    // The client may have sent frames we will not read (WINDOW_UPDATE,
    // SETTINGS ACK); closing over them would reset the connection and
    // could destroy the responses it has not read yet. Stop sending, and
    // read for a while [nginx lingering close].
    closed_ = true;
    event::worker_loop().unpost(read_ev_);
    event::worker_loop().unpost(send_ev_);
    event::worker_loop().cancel(retire_timer_);
    event::worker_loop().cancel(header_timer_);
    event::worker_loop().cancel(c_.write_timer);
    if (tls_) tls_->shutdown();
    if (::shutdown(c_.fd(), SHUT_WR) != 0) {
        release();
        return;
    }
    c_.io.on_read = event::Callback::to<&Connection::linger_read>(this);
    c_.io.on_write = {};
    c_.read_timer.cb = event::Callback::to<&Connection::release>(this);
    event::worker_loop().arm(c_.read_timer, *srv_loc(*srv_).lingering_timeout);
    linger_read();
}

void Connection::linger_read() {
    char sink[4096];
    for (;;) {
        event::IoResult io = c_.recv({sink, sizeof sink});
        if (io.kind == event::IoResult::Ok) continue;
        if (io.kind == event::IoResult::Again) return;
        release();
        return;
    }
}

void Connection::release() {
    if (released_) return;
    released_ = true;
    event::worker_connections().close(c_);
    if (!streams_) free_later();
}

void Connection::free_later() {
    event::worker_loop().defer({[](void* p) { std::unique_ptr<Connection>(static_cast<Connection*>(p)); }, this});
}

void Connection::update_idle() {
    if (closed_) return;
    if (live_ > 0) {
        event::worker_loop().cancel(c_.read_timer);
        return;
    }
    // keepalive_timeout of the default server: an idle connection with no
    // stream open closes then (GOAWAY first) [nginx]. With 0 it closes
    // after its first stream (start()); until that one comes it has
    // client_header_timeout, as an HTTP/1 connection has.
    const LocConf& lc = srv_loc(*srv_);
    if (lc.keepalive_timeout->count() == 0 && requests_ == 0)
        event::worker_loop().arm(c_.read_timer, *srv_->client_header_timeout);
    else
        event::worker_loop().arm(c_.read_timer, *lc.keepalive_timeout);
}

void Connection::on_read_timeout() {
    log::Scope scope(&log_ctx_);
    if (closed_ || live_ > 0) return;
    nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
    send_output();  // then check_done() closes
}

void Connection::on_write_timeout() {
    log::Scope scope(&log_ctx_);
    GH_LOG(Info, "client timed out (110: Connection timed out) while sending response to client");
    close_connection();
}

void Connection::on_retire_timer() {
    log::Scope scope(&log_ctx_);
    if (closed_) return;
    goaway(NGHTTP2_NO_ERROR);
    send_output();
}

void Connection::on_header_timeout() {
    log::Scope scope(&log_ctx_);
    if (closed_) return;
    GH_LOG(Info, "client timed out (110: Connection timed out) while reading client request headers");
    if (header_sid_ > 0 && nghttp2_session_get_stream_user_data(session_, header_sid_)) {
        // The stream whose head did not come in time is reset with
        // PROTOCOL_ERROR, and the connection goes on [nginx]: the rest of
        // the block, if it comes, is decoded (HPACK's table needs it) and
        // dropped. A block that never ends then holds no stream: the
        // connection is idle, and keepalive_timeout, which what trickles
        // in does not extend, ends it.
        nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, header_sid_, NGHTTP2_PROTOCOL_ERROR);
        send_output();
        return;
    }
    // No stream to reset (the block's stream was refused, or its frame
    // header is not all in): GOAWAY, and the connection ends with it.
    nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
    send_output();
    close_connection();
}

void Connection::goaway(uint32_t error_code) {
    if (closed_ || goaway_sent_) return;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_), error_code,
                          nullptr, 0);
    goaway_sent_ = true;
    schedule_send();
}

void Connection::calm_down(const char* what) {
    if (closed_) return;
    GH_LOG(Info, "client sent too many %s, closing connection", what);
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
    schedule_send();
}

void Connection::count_control(const char* what) {
    if (++control_ > kControlBudget) calm_down(what);
}

void Connection::forget(H2Stream* s) {
    if (s->prev_) s->prev_->next_ = s->next_;
    else if (streams_ == s) streams_ = s->next_;
    if (s->next_) s->next_->prev_ = s->prev_;
    s->prev_ = s->next_ = nullptr;
    --live_;
    if (live_ == 0) gauge_.to(stats::ConnGauge::State::Waiting);
    if (closed_) {
        if (released_ && !streams_) free_later();  // the last orphan went
        return;
    }
    if (goaway_after_ && live_ == 0) goaway(NGHTTP2_NO_ERROR);
    check_done();
    if (closed_) return;
    if (!s->remote_closed_) nghttp2_session_set_stream_user_data(session_, s->id_, nullptr);
    if (!s->in_end_) ended_early(s->id_);  // its trailers may still come
    // What the stream held of the connection's window is given back.
    if (s->unconsumed_ > 0) {
        nghttp2_session_consume_connection(session_, static_cast<size_t>(s->unconsumed_));
        s->unconsumed_ = 0;
    }
    update_idle();
    schedule_send();
}

void Connection::close_connection(bool linger) {
    if (closed_) return;
    closed_ = true;
    // Every stream goes first, each with its log line, while the
    // connection they point at is still whole; nghttp2 is not called. A
    // stream whose response fills the cache goes on without its client
    // (an orphan, stream.h), as over HTTP/1; this object stays for it.
    if (!local_known_ && streams_) {
        addr_text(c_.local_address(), local_text_, sizeof local_text_, &local_port_);
        local_known_ = true;
    }
    H2Stream* next = nullptr;
    for (H2Stream* s = streams_; s; s = next) {
        next = s->next_;
        s->remote_closed_ = true;
        if (s->orphan_ || (!s->closed_ && s->orphan())) continue;
        if (!s->closed_ && s->started_ && !s->req_->done && !s->req_->header_sent && s->req_->out.status == 0 &&
            s->req_->loc_confs)
            s->req_->out.status = 499;
        s->closed_ = true;
        s->terminate();
    }
    event::worker_loop().unpost(read_ev_);
    event::worker_loop().unpost(send_ev_);
    event::worker_loop().cancel(retire_timer_);
    event::worker_loop().cancel(header_timer_);
    if (linger && out_pos_ >= out_.size()) {
        // Our GOAWAY is out whole. The client may still be sending (a
        // flood, the rest of a body): closing over unread bytes resets
        // the connection, and a reset can destroy the GOAWAY before the
        // client reads why [nginx: lingering close for HTTP/2 too].
        linger_close();
        return;
    }
    if (tls_) tls_->shutdown();
    release();
}

// ---- a stream --------------------------------------------------------------------

H2Stream::H2Stream(Connection& conn, int32_t id)
    : conn_(conn),
      id_(id),
      start_ev_(event::Callback::to<&H2Stream::start>(this)),
      body_ev_(event::Callback::to<&H2Stream::pump_body>(this)),
      drain_ev_(event::Callback::to<&H2Stream::on_drained>(this)),
      finish_ev_(event::Callback::to<&H2Stream::finish>(this)),
      tunnel_ev_(event::Callback::to<&H2Stream::on_tunnel_event>(this)),
      send_timer_(event::Callback::to<&H2Stream::on_send_timeout>(this)),
      body_timer_(event::Callback::to<&H2Stream::on_body_timeout>(this)) {
    req_ = std::make_unique<Request>(*this, conn_.port_.main_confs, conn_.srv_);
    const SrvConf& s = *conn_.srv_;
    // large_client_header_buffers bounds the header list, as it bounds an
    // HTTP/1 head [nginx].
    const size_t max_bytes = static_cast<size_t>(*s.large_header_buffer_size * *s.large_header_buffers_num);
    head_ = req_->arena().make<RequestHeadBuilder>(req_->mem(), max_bytes, static_cast<size_t>(*s.max_headers));
    head_->set_name_rules(*s.underscores_in_headers, *s.ignore_invalid_headers);
    // A field longer than one buffer, as an HTTP/1 header line [nginx].
    head_->set_max_field(static_cast<size_t>(*s.large_header_buffer_size));
}

H2Stream::~H2Stream() {
    // The request (its arena, its modules' state) goes first: it may still
    // point at this stream.
    req_.reset();
}

const sockaddr* H2Stream::peer_sockaddr() const { return reinterpret_cast<const sockaddr*>(&conn_.peer_); }
std::string_view H2Stream::peer_text() const { return conn_.peer_text_; }
uint16_t H2Stream::peer_port() const { return conn_.peer_port_; }
std::string_view H2Stream::local_text() {
    if (!conn_.local_known_) {
        addr_text(conn_.c_.local_address(), conn_.local_text_, sizeof conn_.local_text_, &conn_.local_port_);
        conn_.local_known_ = true;
    }
    return conn_.local_text_;
}
uint16_t H2Stream::local_port() {
    local_text();
    return conn_.local_port_;
}
tls::Session* H2Stream::tls() const { return conn_.tls_.get(); }
uint64_t H2Stream::connection_number() const { return conn_.number_; }
uint32_t H2Stream::connection_requests() const { return conn_.requests_; }
event::Msec H2Stream::connection_start() const { return conn_.started_; }
const AddrServers& H2Stream::servers() { return conn_.addr_; }
const ProxyHeader* H2Stream::proxy_protocol() const { return conn_.pp_.get(); }

void H2Stream::on_header(std::string_view name, std::string_view value) {
    head_->add(name, value);
}

void H2Stream::on_headers_done(bool end_stream) {
    in_end_ = end_stream;
    no_body_in_ = end_stream;
    event::worker_loop().post(start_ev_);
}

void H2Stream::start() {
    log::Scope scope(&req_->log_ctx);
    if (closed_ || started_) return;
    started_ = true;
    Request& r = *req_;
    Connection& c = conn_;
    ++c.c_.requests;
    ++c.requests_;
    c.control_ = 0;  // a request: the control frames before it were its own
    // keepalive_requests of the default server: after that many streams,
    // GOAWAY, and the connection ends with its last stream [nginx].
    // The GOAWAY goes once the streams taken are answered: some clients
    // (python-h2) take no response after one.
    const LocConf& dl = srv_loc(*c.srv_);
    if (c.requests_ >= *dl.keepalive_requests) c.goaway_after_ = true;
    // keepalive_time: no stream after this one once the connection is that
    // old; keepalive_timeout 0: no stream after this one at all [nginx].
    if (event::worker_loop().now() - c.started_ > static_cast<event::Msec>(dl.keepalive_time->count()) ||
        dl.keepalive_timeout->count() == 0)
        c.goaway_after_ = true;
    r.http_version = 20;
    if (head_->too_large()) {
        // max_headers: 400, as for HTTP/1 [nginx]; the size: 431.
        const bool many = head_->too_many();
        const char* why = many ? "client sent too many header lines" : "client sent too large request";
        GH_LOG(Info, "%s", why);
        r.method = head_->method();
        r.request_line = r.arena().dup(std::string(head_->method()) + " " + std::string(head_->path()) + " HTTP/2.0");
        reject_request(r, many ? 400 : 431, why);
        return;
    }
    if (!head_->bad().empty()) {
        // A field an HTTP/1 hop could not carry as it is [nginx: 400].
        std::string_view why = head_->bad();
        GH_LOG(Info, "%.*s", static_cast<int>(why.size()), why.data());
        r.method = head_->method();
        r.request_line = r.arena().dup(std::string(head_->method()) + " " + std::string(head_->path()) + " HTTP/2.0");
        reject_request(r, 400, why);
        return;
    }
    if (head_->extended_connect() && !head_->websocket()) {
        // RFC 8441 4: a protocol this server does not tunnel. The request
        // is well formed; what it asks for is not implemented here, as
        // nginx says of a Transfer-Encoding it does not know.
        GH_LOG(Info, "client sent unsupported :protocol header");
        r.method = head_->method();
        r.request_line = r.arena().dup(std::string(head_->method()) + " " + std::string(head_->path()) + " HTTP/2.0");
        reject_request(r, 501, "client sent unsupported :protocol header");
        return;
    }
    ws_ = head_->websocket();
    char key[24];
    if (ws_) websocket_key(key);
    std::string_view reason;
    if (!head_->finish(r.in, r.request_line, reason, ws_ ? std::string_view(key, sizeof key) : std::string_view())) {
        GH_LOG(Info, "%.*s", static_cast<int>(reason.size()), reason.data());
        r.method = head_->method();
        reject_request(r, 400, reason);
        return;
    }
    r.headers.reset(r.in.headers);
    r.method = r.in.method_name;
    r.unparsed_uri = r.in.target;
    r.head_only = r.in.method == Method::Head;
    r.content_length = r.in.framing.content_length;
    // A body comes unless HEADERS ended the stream; its length is known
    // when content-length says so (nghttp2 holds DATA to it).
    // A WebSocket's DATA frames are the tunnel's, read once it is open.
    r.has_body = !ws_ && !no_body_in_ && r.content_length.value_or(1) > 0;
    conn_.gauge_.request_started();
    http::start_request(r);
}

// ---- the response ----------------------------------------------------------------

// A HEADERS frame without END_STREAM before the response's own (RFC 9113
// 8.1): names in lower case, connection-specific fields left out.
Flow H2Stream::send_interim(Request& r, int status, std::span<const Header> fields) {
    if (orphan_ || ws_) return Flow::Pass;
    if (closed_ || conn_.closed_) return Flow::Fail;
    if (head_sent_ || status < 100 || status > 199) return Flow::Pass;
    std::pmr::vector<nghttp2_nv> nv(r.mem());
    nv.reserve(1 + fields.size());
    char code[3] = {static_cast<char>('0' + status / 100), static_cast<char>('0' + status / 10 % 10),
                    static_cast<char>('0' + status % 10)};
    auto add = [&](std::string_view name, std::string_view value) {
        nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                      NGHTTP2_NV_FLAG_NONE});
    };
    add(":status", {code, 3});
    for (const Header& x : fields) {
        if (x.name.empty() || connection_specific(x.name)) continue;
        char* low = static_cast<char*>(r.arena().alloc(x.name.size(), 1));
        for (size_t i = 0; i < x.name.size(); ++i) low[i] = ascii_lower(x.name[i]);
        add({low, x.name.size()}, x.value);
    }
    if (nghttp2_submit_headers(conn_.session_, NGHTTP2_FLAG_NONE, id_, nullptr, nv.data(), nv.size(), nullptr) != 0)
        return Flow::Fail;
    conn_.schedule_send();
    return Flow::Pass;
}

Flow H2Stream::send_head(Request& r, const ResponseHead& h) {
    if (orphan_) return Flow::Pass;
    if (closed_ || conn_.closed_) return Flow::Fail;
    // RFC 8441 5: a WebSocket stream's 101 is a 200 that leaves the stream
    // open for the tunnel. A 2xx without 101 means the location did not
    // tunnel (no proxy with the upgrade fields, a static file): the client
    // would take it for an open WebSocket, so it is answered 501 instead,
    // without its body. Other answers (an origin's 403) go as they are.
    const bool tunnel = ws_ && h.status == 101;
    const bool refused = ws_ && h.status >= 200 && h.status < 300;
    // Otherwise no 1xx but the final answer, and no 101: HTTP/2 has no
    // upgrade (RFC 9113 8.6).
    if (h.status < 200 && !tunnel) return Flow::Fail;
    if (refused) {
        GH_LOG(Info, "WebSocket over HTTP/2 not tunnelled: the location answered %d", h.status);
        r.out.status = 501;
        no_body_ = true;
        std::pmr::vector<nghttp2_nv> nv(r.mem());
        auto add = [&](std::string_view name, std::string_view value) {
            nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                          NGHTTP2_NV_FLAG_NONE});
        };
        add(":status", "501");
        add("server", server_token(r));
        add("date", http_date_now());
        if (nghttp2_submit_response(conn_.session_, id_, nv.data(), nv.size(), nullptr) != 0) return Flow::Fail;
        head_sent_ = true;
        conn_.schedule_send();
        return Flow::Pass;
    }
    if (tunnel) {
        r.out.status = 200;  // what the client got ($status)
        ws_open_ = true;
    }
    // A 101 is head only for the response path; the tunnel's bytes follow.
    no_body_ = !tunnel && (r.head_only || h.status == 204 || h.status == 304);
    trailers_ = h.expect_trailers && !no_body_ && !tunnel;
    std::pmr::vector<nghttp2_nv> nv(r.mem());
    nv.reserve(12 + h.headers.size());
    auto add = [&](std::string_view name, std::string_view value) {
        nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                      NGHTTP2_NV_FLAG_NONE});
    };
    const int code = tunnel ? 200 : h.status % 1000;
    char status[3] = {static_cast<char>('0' + code / 100), static_cast<char>('0' + code / 10 % 10),
                      static_cast<char>('0' + code % 10)};
    add(":status", {status, 3});
    auto has = [&](std::string_view name) {
        for (const Header& x : h.headers)
            if (iequals(x.name, name)) return true;
        return false;
    };
    if (!h.origin_server && !has("Server")) add("server", server_token(r));
    if (!h.origin_date && !has("Date")) add("date", http_date_now());
    if (!h.content_type.empty()) {
        if (h.charset.empty()) {
            add("content-type", h.content_type);
        } else {
            std::string v = std::string(h.content_type) + "; charset=" + std::string(h.charset);
            add("content-type", r.arena().dup(v));
        }
    }
    if (h.content_length && !tunnel) add("content-length", r.arena().dup(std::to_string(*h.content_length)));
    if (h.last_modified >= 0) {
        char d[kHttpDateMax];
        add("last-modified", r.arena().dup(format_http_date(h.last_modified, d)));
    }
    if (!h.sent_location.empty()) add("location", h.sent_location);
    if (!h.etag.empty()) add("etag", h.etag);
    if (h.accept_ranges) add("accept-ranges", "bytes");
    for (const Header& x : h.headers) {
        if (x.name.empty() || connection_specific(x.name)) continue;
        // The origin's answer to our key, not to anything the client sent.
        if (tunnel && iequals(x.name, "Sec-WebSocket-Accept")) continue;
        // HTTP/2 field names are lower case (RFC 9113 8.2.1).
        char* low = static_cast<char*>(r.arena().alloc(x.name.size(), 1));
        for (size_t i = 0; i < x.name.size(); ++i) low[i] = ascii_lower(x.name[i]);
        add({low, x.name.size()}, x.value);
    }
    size_t head_bytes = 0;
    for (const nghttp2_nv& n : nv) head_bytes += n.namelen + n.valuelen + 4;
    r.counters.bytes_sent += head_bytes;
    nghttp2_data_provider prd{};
    prd.source.ptr = this;
    prd.read_callback = Connection::Callbacks::read_data;
    int rv = nghttp2_submit_response(conn_.session_, id_, nv.data(), nv.size(), no_body_ ? nullptr : &prd);
    if (rv != 0) return Flow::Fail;
    head_sent_ = true;
    conn_.schedule_send();
    return Flow::Pass;
}

Flow H2Stream::send_body(Request&, Chain& in) {
    if (orphan_) {
        // Dropped, and so "written": a producer pacing itself on the
        // drain goes on (the connection that would have said so may be
        // gone).
        if (in.last()) event::worker_loop().post(finish_ev_);
        else event::worker_loop().post(drain_ev_);
        in.clear();
        return Flow::Pass;
    }
    if (closed_ || conn_.closed_) return Flow::Fail;
    if (ws_open_) {
        // The "body" of the 101 (none, and its end): the tunnel's bytes go
        // through send(), and only its end ends the stream.
        in.clear();
        return Flow::Pass;
    }
    const bool last = in.last();
    if (!no_body_) {
        for (Buf& b : in) {
            if (b.empty()) continue;
            out_bytes_ += b.size();
            Buf keep = std::move(b);
            keep.last_buf = keep.flush = false;
            out_q_.push_back(std::move(keep));
        }
    }
    in.clear();
    if (last) out_last_ = true;
    if (no_body_) {
        maybe_finish();
        return Flow::Pass;
    }
    if (deferred_ && (out_bytes_ > 0 || out_last_)) {
        deferred_ = false;
        nghttp2_session_resume_data(conn_.session_, id_);
    }
    // A client that keeps its window shut gets send_timeout to open it.
    if (out_bytes_ > 0 && !send_timer_.armed())
        event::worker_loop().arm(send_timer_, *req_->loc_conf<LocConf>(http_core_module).send_timeout);
    conn_.schedule_send();
    return Flow::Pass;
}

void H2Stream::flush() { conn_.schedule_send(); }

ssize_t H2Stream::read_data(uint8_t* buf, size_t length, uint32_t* flags) {
    if (closed_) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    Request& r = *req_;
    const auto& h2 = r.loc_conf<H2LocConf>(http_v2_module);
    const size_t cap = std::min<size_t>(length, static_cast<size_t>(*h2.chunk_size));
    const bool had = out_bytes_ > 0;
    size_t n = 0;
    while (n < cap && !out_q_.empty()) {
        Buf& b = out_q_.front();
        const size_t take = std::min(cap - n, b.size());
        if (b.in_file()) {
            // The file is read a frame at a time, never held whole.
            ssize_t got;
            do {
                got = ::pread(b.fd, buf + n, take, b.file_pos);
            } while (got < 0 && errno == EINTR);
            if (got <= 0) {
                log::Scope scope(&r.log_ctx);
                if (got == 0) GH_LOG(Error, "file was truncated while sending response");
                else GH_LOG_ERRNO(Crit, errno, "pread() failed while sending response to client");
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
            b.consume(static_cast<size_t>(got));
            n += static_cast<size_t>(got);
            out_bytes_ -= static_cast<size_t>(got);
        } else {
            std::memcpy(buf + n, b.pos, take);
            b.consume(take);
            n += take;
            out_bytes_ -= take;
        }
        if (b.empty()) out_q_.pop_front();
    }
    r.counters.bytes_sent += n;  // body_bytes_sent: counted by the response path
    if (n > 0) conn_.control_ = 0;  // the client takes a response: its frames are its own
    if (n > 0 && tunnel_) event::worker_loop().post(tunnel_ev_);  // room for send()
    if (out_q_.empty()) {
        event::worker_loop().cancel(send_timer_);
        if (had) event::worker_loop().post(drain_ev_);
        if (out_last_) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (trailers_ && !r.out.trailers.empty()) {
                // The trailers end the stream instead (RFC 9113 8.1).
                std::pmr::vector<nghttp2_nv> nv(r.mem());
                for (const Header& t : r.out.trailers) {
                    char* low = static_cast<char*>(r.arena().alloc(t.name.size(), 1));
                    for (size_t i = 0; i < t.name.size(); ++i) low[i] = ascii_lower(t.name[i]);
                    nv.push_back({reinterpret_cast<uint8_t*>(low),
                                  reinterpret_cast<uint8_t*>(const_cast<char*>(t.value.data())), t.name.size(),
                                  t.value.size(), NGHTTP2_NV_FLAG_NONE});
                }
                if (nghttp2_submit_trailer(conn_.session_, id_, nv.data(), nv.size()) == 0)
                    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
        } else if (n == 0) {
            deferred_ = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    } else if (n > 0) {
        event::worker_loop().arm(send_timer_, *r.loc_conf<LocConf>(http_core_module).send_timeout);
    }
    return static_cast<ssize_t>(n);
}

void H2Stream::on_drained() {
    log::Scope scope(&req_->log_ctx);
    if (!terminated_ && !tunnel_ && out_bytes_ == 0) output_drained(*req_);
}

void H2Stream::on_end_stream_sent() {
    end_sent_ = true;
    maybe_finish();
}

// The response is complete once its last Buf came and END_STREAM went
// (with HEADERS for a response without body, else with the last DATA or
// the trailers).
void H2Stream::maybe_finish() {
    // A tunnel's END_STREAM is one half closed: the other may go on.
    if (tunnel_ && !tunnel_over_) return;
    if (out_last_ && end_sent_ && !terminated_) event::worker_loop().post(finish_ev_);
}

void H2Stream::finish() {
    if (terminated_) return;
    // Background subrequests (mirror) of a complete response still run:
    // the stream stays (counted as one the connection serves) until the
    // last one posts finish_ev_ again (subrequest.h).
    if (hold_for_background(*req_, finish_ev_, !orphan_)) {
        // A body still coming (an origin that answered before it ended)
        // has no reader any more: its window stays shut, without
        // client_body_timeout, and the stream is reset when it ends.
        if (body_started_ && !body_done_) {
            body_paused_ = true;
            event::worker_loop().cancel(body_timer_);
            event::worker_loop().unpost(body_ev_);
        }
        return;
    }
    log::Scope scope(&req_->log_ctx);
    Request& r = *req_;
    r.done = true;
    ++conn_.completed_;
    if (!remote_closed_ && !conn_.closed_) {
        // The client is still sending a body nobody wants: stop it
        // (RFC 9113 8.1: RST_STREAM NO_ERROR after a complete response);
        // one that took longer than client_body_timeout hears of it
        // (PROTOCOL_ERROR after the 408) [nginx].
        nghttp2_submit_rst_stream(conn_.session_, NGHTTP2_FLAG_NONE, id_,
                                  timed_out_ ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_NO_ERROR);
    }
    terminate();
}

void H2Stream::terminate() {
    if (terminated_) return;
    terminated_ = true;
    closed_ = closed_ || !req_->done;
    event::Loop& loop = event::worker_loop();
    loop.unpost(start_ev_);
    loop.unpost(body_ev_);
    loop.unpost(drain_ev_);
    loop.unpost(finish_ev_);
    loop.unpost(tunnel_ev_);
    loop.cancel(send_timer_);
    loop.cancel(body_timer_);
    if (started_ && !logged_) {
        logged_ = true;
        log::Scope scope(&req_->log_ctx);
        run_log_phase(*req_);
    }
    out_q_.clear();
    in_q_.clear();
    conn_.forget(this);
    loop.defer({[](void* p) { std::unique_ptr<H2Stream>(static_cast<H2Stream*>(p)); }, this});
}

bool H2Stream::orphan() {
    Request& r = *req_;
    if (!started_ || !r.outlive_client || r.done || (r.has_body && !body_done_)) return false;
    log::Scope scope(&r.log_ctx);
    GH_LOG(Info, "client closed stream; the response goes on for the cache");
    orphan_ = true;
    out_q_.clear();
    out_bytes_ = 0;
    event::worker_loop().cancel(send_timer_);
    event::worker_loop().post(drain_ev_);
    if (out_last_) event::worker_loop().post(finish_ev_);
    return true;
}

void H2Stream::on_reset(uint32_t error_code) {
    remote_closed_ = true;
    if (terminated_) return;
    if (tunnel_ && !tunnel_over_) {
        // Both halves closed with END_STREAM: the tunnel sees the client's
        // end (recv() says Eof) and ends, then the stream finishes.
        if (error_code == NGHTTP2_NO_ERROR && in_end_ && end_sent_) return;
    } else if (end_sent_ && out_last_) {
        return;  // complete: finish() is posted
    }
    if (orphan_ || orphan()) return;
    if (started_) {
        log::Scope scope(&req_->log_ctx);
        if (error_code != NGHTTP2_NO_ERROR)
            GH_LOG(Info, "client terminated stream %d with status %u", id_, error_code);
        if (!req_->header_sent && req_->out.status == 0 && req_->loc_confs) req_->out.status = 499;
    }
    closed_ = true;
    terminate();
}

void H2Stream::abort() {
    if (terminated_) return;
    if (orphan_) {
        terminate();
        return;
    }
    uint32_t code = timed_out_ ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_INTERNAL_ERROR;
    if (tunnel_ && !tunnel_over_) {
        // The tunnel ended (the upstream client's on_tunnel_end).
        tunnel_over_ = true;
        if (out_last_ && in_end_ && !closed_) {
            // Each side closed its half: a complete stream, finished once
            // our END_STREAM is out.
            maybe_finish();
            return;
        }
        // An origin gone, a timeout: the client learns the tunnel broke.
        code = NGHTTP2_CANCEL;
    }
    if (req_->loc_confs && !req_->header_sent && req_->out.status == 0) req_->out.status = 499;
    closed_ = true;
    if (!remote_closed_ && !conn_.closed_) {
        // The client must not take a cut body for a whole one.
        nghttp2_submit_rst_stream(conn_.session_, NGHTTP2_FLAG_NONE, id_, code);
        conn_.schedule_send();
    }
    terminate();
}

void H2Stream::on_send_timeout() {
    log::Scope scope(&req_->log_ctx);
    GH_LOG(Info, "client timed out (110: Connection timed out) while sending response to client");
    if (req_->out.status == 0) req_->out.status = 408;
    abort();
}

event::Duplex& H2Stream::open_tunnel(event::Callback on_ready, std::string_view* leftover) {
    // What the client sent before the tunnel opened waits in in_q_: recv()
    // hands it over first.
    if (leftover) *leftover = {};
    if (ws_ && head_sent_ && !closed_) {
        tunnel_ = true;
        tunnel_ready_ = on_ready;
    }
    return *this;
}

void H2Stream::on_tunnel_event() {
    if (tunnel_ && !tunnel_over_ && !terminated_) tunnel_ready_();
}

event::IoResult H2Stream::recv(std::span<char> buf) {
    if (!tunnel_ || closed_ || conn_.closed_) return {event::IoResult::Error, 0, EPIPE};
    size_t n = 0;
    while (n < buf.size() && !in_q_.empty()) {
        Buf& b = in_q_.front();
        const size_t take = std::min(buf.size() - n, b.size());
        std::memcpy(buf.data() + n, b.pos, take);
        b.consume(take);
        n += take;
        if (b.empty()) in_q_.pop_front();
    }
    if (n > 0) {
        // Taken by the origin's side: the client may send as much again.
        consume(n);
        return {event::IoResult::Ok, n, 0};
    }
    if (in_end_) return {event::IoResult::Eof, 0, 0};
    return {event::IoResult::Again, 0, 0};
}

event::IoResult H2Stream::send(std::span<const char> buf) {
    if (!tunnel_ || closed_ || conn_.closed_ || out_last_) return {event::IoResult::Error, 0, EPIPE};
    // Bounded: a client that does not read (its window shut) stops the
    // origin's side here, and send_timeout ends the wait.
    const size_t cap = static_cast<size_t>(*req_->loc_conf<H2LocConf>(http_v2_module).chunk_size);
    if (out_bytes_ >= cap) return {event::IoResult::Again, 0, 0};
    size_t n = 0;
    while (n < buf.size()) {
        constexpr size_t kSlab = 16384;
        if (!out_slab_ || out_used_ == out_slab_.get()->capacity()) {
            out_slab_ = SlabRef::adopt(Slab::make(kSlab));
            out_used_ = 0;
        }
        const size_t take = std::min(buf.size() - n, out_slab_.get()->capacity() - out_used_);
        char* dst = out_slab_.get()->data() + out_used_;
        std::memcpy(dst, buf.data() + n, take);
        if (!out_q_.empty() && out_q_.back().slab.get() == out_slab_.get() && out_q_.back().last == dst) {
            out_q_.back().last += take;
        } else {
            Buf b = Buf::memory({dst, take});
            b.slab = out_slab_;
            out_q_.push_back(std::move(b));
        }
        out_used_ += take;
        n += take;
    }
    out_bytes_ += n;
    if (deferred_) {
        deferred_ = false;
        nghttp2_session_resume_data(conn_.session_, id_);
    }
    if (!send_timer_.armed())
        event::worker_loop().arm(send_timer_, *req_->loc_conf<LocConf>(http_core_module).send_timeout);
    conn_.schedule_send();
    return {event::IoResult::Ok, n, 0};
}

void H2Stream::shutdown_send() {
    if (!tunnel_ || out_last_ || closed_ || conn_.closed_) return;
    out_last_ = true;
    if (deferred_) {
        deferred_ = false;
        nghttp2_session_resume_data(conn_.session_, id_);
    }
    conn_.schedule_send();
}

// ---- the request body --------------------------------------------------------------

void H2Stream::on_data(const uint8_t* data, size_t len) {
    unconsumed_ += len;
    if (terminated_ || (body_done_ && !ws_)) return;  // dropped; forget() gives the window back
    in_total_ += len;
    req_->counters.request_length += len;
    // Copied out of nghttp2's buffer into slabs the reader can keep; at
    // most the stream's window is ever here, since the window opens only
    // as the reader takes bytes.
    while (len > 0) {
        constexpr size_t kSlab = 16384;
        if (!in_slab_ || in_used_ == in_slab_.get()->capacity()) {
            in_slab_ = SlabRef::adopt(Slab::make(kSlab));
            in_used_ = 0;
        }
        size_t take = std::min(len, in_slab_.get()->capacity() - in_used_);
        char* dst = in_slab_.get()->data() + in_used_;
        std::memcpy(dst, data, take);
        if (!in_q_.empty() && in_q_.back().slab.get() == in_slab_.get() && in_q_.back().last == dst) {
            in_q_.back().last += take;
        } else {
            Buf b = Buf::memory({dst, take});
            b.slab = in_slab_;
            in_q_.push_back(std::move(b));
        }
        in_used_ += take;
        data += take;
        len -= take;
    }
    if (tunnel_) event::worker_loop().post(tunnel_ev_);
    else if (sink_ && !body_paused_ && !ws_) event::worker_loop().post(body_ev_);
}

void H2Stream::on_end_of_input() {
    in_end_ = true;
    if (tunnel_) event::worker_loop().post(tunnel_ev_);
    else if (sink_ && !body_paused_ && !ws_) event::worker_loop().post(body_ev_);
}

void H2Stream::consume(size_t n) {
    if (n == 0 || conn_.closed_) return;
    unconsumed_ -= std::min<uint64_t>(n, unconsumed_);
    if (!remote_closed_) nghttp2_session_consume(conn_.session_, id_, n);
    else nghttp2_session_consume_connection(conn_.session_, n);
    conn_.schedule_send();
}

bool H2Stream::read_body(Request& r, BodySink sink) {
    if (body_started_) return false;
    body_started_ = true;
    sink_ = sink;
    if (!r.has_body) {
        body_done_ = true;
        Chain c(r.mem());
        Buf end;
        end.last_buf = true;
        c.push(std::move(end));
        sink_(r, c);
        return true;
    }
    const auto& lc = r.loc_conf<LocConf>(http_core_module);
    const uint64_t max = *lc.client_max_body_size;
    if (max && r.content_length && *r.content_length > max) {
        char why[96];
        snprintf(why, sizeof why, "client intended to send too large body: %llu bytes",
                 static_cast<unsigned long long>(*r.content_length));
        body_failed(413, why);
        return true;
    }
    if (!in_end_) event::worker_loop().arm(body_timer_, *lc.client_body_timeout);
    pump_body();
    return true;
}

void H2Stream::resume_body() {
    if (!body_started_ || body_done_ || !body_paused_) return;
    body_paused_ = false;
    event::worker_loop().post(body_ev_);
}

void H2Stream::pump_body() {
    if (!sink_ || body_paused_ || body_done_ || in_pump_ || closed_) return;
    log::Scope scope(&req_->log_ctx);
    Request& r = *req_;
    const auto& lc = r.loc_conf<LocConf>(http_core_module);
    const uint64_t max = *lc.client_max_body_size;
    if (max && in_total_ > max) {
        body_failed(413, "client intended to send too large chunked body");
        return;
    }
    in_pump_ = true;
    while (!body_paused_ && !body_done_ && !closed_) {
        if (in_q_.empty() && !in_end_) break;
        // The piece lives on this frame: the sink moves out the Bufs it
        // keeps, and the request arena does not grow per piece.
        alignas(std::max_align_t) char scratch[512];
        std::pmr::monotonic_buffer_resource mem(scratch, sizeof scratch);
        Chain piece(&mem);
        size_t bytes = 0;
        while (!in_q_.empty()) {
            bytes += in_q_.front().size();
            piece.push(std::move(in_q_.front()));
            in_q_.pop_front();
        }
        const bool last = in_end_;
        if (last) {
            body_done_ = true;
            event::worker_loop().cancel(body_timer_);
            if (piece.empty()) piece.push(Buf());
            piece.back().last_buf = true;
        } else {
            event::worker_loop().arm(body_timer_, *lc.client_body_timeout);
        }
        // The consumer took these: the client may send as much again.
        consume(bytes);
        bool more = sink_(r, piece);
        if (!more && !last) body_paused_ = true;
    }
    in_pump_ = false;
}

void H2Stream::on_body_timeout() {
    log::Scope scope(&req_->log_ctx);
    if (body_done_ || closed_) return;
    timed_out_ = true;
    body_failed(408, "client timed out (110: Connection timed out) while reading client request body");
}

void H2Stream::body_failed(int status, const char* why) {
    Request& r = *req_;
    body_done_ = true;
    event::worker_loop().cancel(body_timer_);
    GH_LOG(Info, "%s", why);
    if (r.header_sent) {
        abort();
        return;
    }
    r.no_error_page = status == 400 || status == 408;
    continue_request(r, respond_status(r, status));
}

}  // namespace gatehouse::http::v2
