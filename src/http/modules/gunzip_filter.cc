// gunzip_filter_module: "gunzip", "gunzip_buffers" [nginx
// ngx_http_gunzip_module]: a response with "Content-Encoding: gzip" is
// inflated for a client that does not accept gzip (an origin that always
// compresses, "gzip_static always").
//
// Header filter: with gunzip on, a gzip-encoded response (any status but
// 206, whose body is a slice no inflater can start in) for a client that
// may not get gzip (http/gzip_request.h: its Accept-Encoding, HTTP/1.0,
// Via, subrequests, gzip_http_version, gzip_proxied, gzip_disable) loses
// Content-Encoding, Content-Length and Accept-Ranges, and a strong ETag
// becomes weak (the bytes differ, the representation does not) [nginx].
// HEAD gets that head and no inflater. Any gzip response gunzip sees,
// inflated or not, gets "Vary: Accept-Encoding" with gzip_vary (once,
// http/gzip_conf.h): what the client gets depends on its Accept-Encoding
// [nginx sets r->gzip_vary].
//
// Body filter: zlib's inflate (gzip wrapper; several members one after
// the other are one body, RFC 1952 2.2), output in slabs of
// gunzip_buffers' size. Bounded whatever the input: a gzip bomb of a few
// KiB that inflates to GiB produces at most gunzip_buffers' number of
// slabs per call and none while the stream is busy (output_busy): the
// filter holds, the rest of its input stays queued, and the stream's
// drain calls it again (fwd.h). File Bufs ("gzip_static always") are read
// in pieces of one slab into one input slab kept for the response. What
// inflated so far goes on whenever the input runs dry, so a proxied
// stream that pauses is not held back here.
//
// Corrupt or truncated input: "inflate() failed" (or "...returned on
// response end") is logged at error and the filter fails: the response
// is cut (the stream aborts), never sent as if complete.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "conf/values.h"
#include "core/str.h"
#include "http/gzip_conf.h"
#include "http/gzip_request.h"
#include "http/output.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

extern const conf::Module gunzip_filter_module;

namespace {

struct GunzipConf {
    std::optional<bool> enable;         // "gunzip"
    std::optional<uint64_t> bufs_num;   // "gunzip_buffers" number
    std::optional<uint64_t> bufs_size;  // "gunzip_buffers" size
};

// nginx's default on a machine with 4 KiB pages.
constexpr uint64_t kDefaultBufs = 32;
constexpr uint64_t kDefaultBufSize = 4096;

void merge(const GunzipConf& up, GunzipConf& c) {
    conf::inherit(c.enable, up.enable, false);
    if (!c.bufs_num) {
        c.bufs_num = up.bufs_num ? *up.bufs_num : kDefaultBufs;
        c.bufs_size = up.bufs_size ? *up.bufs_size : kDefaultBufSize;
    }
}

// One response's inflater. Made in the request arena, which runs the
// destructor (inflateEnd) when the request goes.
struct Gunzip {
    Gunzip() = default;
    Gunzip(const Gunzip&) = delete;
    Gunzip& operator=(const Gunzip&) = delete;
    ~Gunzip() {
        if (inited) inflateEnd(&z);
    }

    z_stream z{};
    bool inited = false;
    size_t buf_size = 0;
    size_t buf_num = 0;
    SlabRef out;          // the output slab being filled
    size_t out_fill = 0;
    SlabRef in;           // a piece of a file Buf, read for inflate
    bool more_out = false;      // inflate filled the output: it may have more without input
    bool member_ended = false;  // the last inflate ended a gzip member
    bool seen_input = false;
};

Flow header_filter(Request& r, ResponseHead& h) {
    if (!r.loc_confs) return Flow::Pass;
    const auto& c = r.loc_conf<GunzipConf>(gunzip_filter_module);
    if (!*c.enable || h.status == 206) return Flow::Pass;
    const Header* ce = h.find("Content-Encoding");
    if (!ce || !iequals(ce->value, "gzip")) return Flow::Pass;
    add_gzip_vary(r, h);
    if (request_codings(r, h).accepts(Coding::Gzip)) return Flow::Pass;

    h.remove("Content-Encoding");
    h.content_length.reset();
    h.accept_ranges = false;
    weaken_etag(r, h);
    if (r.head_only) return Flow::Pass;

    auto* g = r.arena().make<Gunzip>();
    // 16 + MAX_WBITS: the gzip wrapper only (zlib's convention).
    if (inflateInit2(&g->z, 16 + MAX_WBITS) != Z_OK) {
        log_for_request(r, log::Level::Alert, 0, "inflateInit2() failed");
        return Flow::Fail;
    }
    g->inited = true;
    g->buf_size = static_cast<size_t>(*c.bufs_size);
    g->buf_num = static_cast<size_t>(*c.bufs_num);
    r.set_ctx(gunzip_filter_module, g);
    return Flow::Pass;
}

// The slab filled so far goes to `out` (flagged flush when asked).
void emit(Gunzip& g, Chain& out, bool flush) {
    if (!g.out || g.out_fill == 0) return;
    Buf b = Buf::in_slab(std::move(g.out), g.out_fill);
    b.flush = flush;
    out.push(std::move(b));
    g.out = SlabRef();
    g.out_fill = 0;
}

enum class Step : uint8_t { Done, Full, Error };

// Inflates [next_in, avail_in) of g.z into output slabs until the input is
// used up and inflate has nothing more, or `budget` slabs were emitted.
Step inflate_some(Request& r, Gunzip& g, Chain& out, size_t& budget) {
    while (g.z.avail_in > 0 || g.more_out) {
        if (!g.out) {
            if (budget == 0) return Step::Full;
            g.out = SlabRef::adopt(Slab::make(g.buf_size));
            g.out_fill = 0;
        }
        if (g.z.avail_in > 0) {
            g.seen_input = true;
            // Another member follows the one that ended (RFC 1952 2.2).
            if (g.member_ended) {
                inflateReset(&g.z);
                g.member_ended = false;
            }
        }
        g.z.next_out = reinterpret_cast<Bytef*>(g.out.get()->data() + g.out_fill);
        g.z.avail_out = static_cast<uInt>(g.buf_size - g.out_fill);
        int rc = inflate(&g.z, Z_NO_FLUSH);
        g.out_fill = g.buf_size - g.z.avail_out;
        g.more_out = rc == Z_OK && g.z.avail_out == 0;
        if (g.out_fill == g.buf_size) {
            emit(g, out, false);
            --budget;
        }
        if (rc == Z_STREAM_END) {
            g.member_ended = true;
            g.more_out = false;
            continue;
        }
        if (rc == Z_BUF_ERROR) break;  // no progress possible: needs input
        if (rc != Z_OK) {
            log_for_request(r, log::Level::Error, 0,
                            "inflate() failed: " + std::to_string(rc) + (g.z.msg ? std::string(", ") + g.z.msg : ""));
            return Step::Error;
        }
    }
    return Step::Done;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    auto* g = r.ctx<Gunzip>(gunzip_filter_module);
    if (!g) {
        out.append(in);
        return Flow::Pass;
    }
    // Slabs this call may emit; none while the client is behind.
    size_t budget = output_busy(r) ? 0 : g->buf_num;
    size_t used = 0;  // Bufs of `in` done with
    for (Buf& b : in) {
        if (b.in_file()) {
            // One piece at a time; what inflate did not take is read again.
            while (!b.empty()) {
                if (!g->in) g->in = SlabRef::adopt(Slab::make(g->buf_size));
                size_t want = std::min(b.size(), g->buf_size);
                ssize_t n = ::pread(b.fd, g->in.get()->data(), want, b.file_pos);
                if (n <= 0) {
                    log_for_request(r, log::Level::Crit, n < 0 ? errno : 0,
                                    n < 0 ? "pread() failed" : "pread() read only 0 bytes: the file shrank");
                    return Flow::Fail;
                }
                g->z.next_in = reinterpret_cast<Bytef*>(g->in.get()->data());
                g->z.avail_in = static_cast<uInt>(n);
                Step s = inflate_some(r, *g, out, budget);
                if (s == Step::Error) return Flow::Fail;
                b.consume(static_cast<size_t>(n) - g->z.avail_in);
                g->z.avail_in = 0;
                if (s == Step::Full) break;
            }
        } else {
            g->z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(b.pos));
            g->z.avail_in = static_cast<uInt>(b.size());
            Step s = inflate_some(r, *g, out, budget);
            if (s == Step::Error) return Flow::Fail;
            b.consume(b.size() - g->z.avail_in);
            g->z.avail_in = 0;
        }
        if (!b.empty() || g->more_out) break;  // the budget ran out: hold
        if (b.last_buf) {
            // An empty body is an empty body; a started member must end.
            if (g->seen_input && !g->member_ended) {
                log_for_request(r, log::Level::Error, 0, "inflate() returned on response end: the gzip body is truncated");
                return Flow::Fail;
            }
            emit(*g, out, false);
            Buf end;
            end.last_buf = true;
            out.push(std::move(end));
        } else if (b.flush) {
            emit(*g, out, true);
        }
        ++used;
    }
    in.erase_front(used);
    if (!in.empty()) return Flow::Hold;  // called again when the stream drains
    // The producer has handed over all it had: what is inflated goes now.
    emit(*g, out, false);
    return Flow::Pass;
}

// ---- configuration -------------------------------------------------------

using conf::Ctx;
using conf::Node;

Status set_buffers(Ctx& cx, const Node& n, GunzipConf& c) {
    if (c.bufs_num) return cx.duplicate(n);
    auto num = conf::parse_number(n.args[0].text, 1u << 16);
    if (!num || *num == 0) return cx.error(n, "invalid value \"" + n.args[0].text + "\"");
    auto size = conf::parse_size(n.args[1].text);
    if (!size || *size == 0 || *size > (1u << 30))
        return cx.error(n, "invalid value \"" + n.args[1].text + "\"");
    c.bufs_num = *num;
    c.bufs_size = *size;
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"gunzip", conf::kHttpSrvLoc, conf::Take1, conf::flag<&GunzipConf::enable>()},
    {"gunzip_buffers", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_buffers>()},
};

bool engaged(const Request& r) { return r.ctx<Gunzip>(gunzip_filter_module) != nullptr; }

bool wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return *static_cast<const GunzipConf*>(loc[gunzip_filter_module.index])->enable;
}

constexpr ModuleHooks kHooks{.header_filter = header_filter,
                             .body_filter = body_filter,
                             .body_filter_engaged = engaged,
                             .filters_wanted = wanted};

}  // namespace

extern const conf::Module gunzip_filter_module{
    .name = "gunzip_filter",
    .directives = kDirectives,
    .loc = conf::level<GunzipConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
