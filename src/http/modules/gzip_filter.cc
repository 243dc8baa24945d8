// gzip_filter_module: responses compressed on the fly with gzip, brotli or
// zstd, the one the client prefers [nginx ngx_http_gzip_module; brotli_*
// as google/ngx_brotli, zstd_* as tokers/zstd-nginx-module].
//
// One module with three codec backends (http/compressor.h) rather than
// three filters: the coding is chosen once per response among those that
// are on (Accept-Encoding's q-values, ties by compression_order, zstd, br,
// gzip by default: choose_coding
// in http/accept_encoding.h), one Vary is added, and the buffering,
// back-pressure and flushing below are written once for all three.
//
// Header filter. A response is eligible for a coding when the coding is
// on, the status is 200, 403 or 404, it has no Content-Encoding, its type
// is listed (*_types; text/html always is) and its length, when known, is
// at least *_min_length. An eligible response gets "Vary: Accept-Encoding"
// with gzip_vary, whatever the client asked (the representation varies).
// It is then compressed when the request passes gzip_http_version,
// gzip_proxied (a request with Via), gzip_disable, which apply to all three
// codings as the third-party modules read gzip's settings, and the client
// accepts one of the codings. A compressed response loses Content-Length
// and Accept-Ranges (the filter sits before the range filter, as in nginx:
// a Range request for a compressible response gets the whole compressed
// 200; a 206 from an origin is never compressed), and its strong ETag
// becomes weak. HEAD gets the same head as GET and no body, so no
// compressor. Subrequests are never compressed.
//
// Body filter, memory per response bounded whatever the input's shape:
//   - the codec's state, its window bounded (compressor.cc);
//   - output in slabs of *_buffers' size; the filter holds (Flow::Hold)
//     while the stream and the next filters hold *_buffers' total, so a
//     slow client stops the producer (the proxy reads no faster, a file is
//     read no further);
//   - a file Buf (static files, cache hits) is read in pieces of
//     kFilePiece bytes into one slab reused for the response;
//   - at most kWorkPerCall input bytes per call, then the filter resumes
//     itself from the loop: one huge chain never makes one loop turn long.
// Flushing: a flush Buf (proxy's X-Accel-Buffering: no, the head's flush)
// and the end of what the producer has handed over so far (a proxied
// origin pauses between reads: server-sent events, a slow origin) end in
// a sync flush (Z_SYNC_FLUSH, BROTLI_OPERATION_FLUSH, ZSTD_e_flush), so
// the client can decode every byte the proxy has had. nginx flushes only
// on flush Bufs (proxy_buffering off); doing it at every pause costs a few
// bytes per origin read and never leaves a client waiting.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "conf/values.h"
#include "core/log.h"
#include "core/regex.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/stats.h"
#include "http/accept_encoding.h"
#include "http/compressor.h"
#include "http/conditional.h"
#include "http/gzip_conf.h"
#include "http/mime.h"
#include "http/output.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module gzip_filter_module;

namespace {

using conf::Ctx;
using conf::Node;

// Input bytes compressed per call before the filter yields to the loop.
constexpr size_t kWorkPerCall = 256 * 1024;
// A file Buf is read in pieces of this size into one slab per response:
// fewer, larger reads than one per output buffer.
constexpr size_t kFilePiece = 32 * 1024;

struct Bufs {
    uint64_t num = 0;
    uint64_t size = 0;
};

// One coding's directives ("gzip", "gzip_types", ...).
struct CodingConf {
    std::optional<bool> on;
    MimeTypeList types;  // unset: text/html only
    std::optional<uint64_t> min_length;
    std::optional<uint64_t> level;
    std::optional<Bufs> buffers;
};

void merge_coding(const CodingConf& up, CodingConf& c, uint64_t level) {
    conf::inherit(c.on, up.on, false);
    c.types.inherit(up.types);
    conf::inherit(c.min_length, up.min_length, uint64_t{20});
    conf::inherit(c.level, up.level, level);
    // nginx's default on a 4 KiB-page machine: 32 4k.
    conf::inherit(c.buffers, up.buffers, Bufs{32, 4096});
}

// gzip_proxied bits [nginx].
enum : uint32_t {
    kProxiedOff = 1u << 0,
    kProxiedExpired = 1u << 1,
    kProxiedNoCache = 1u << 2,
    kProxiedNoStore = 1u << 3,
    kProxiedPrivate = 1u << 4,
    kProxiedNoLm = 1u << 5,
    kProxiedNoEtag = 1u << 6,
    kProxiedAuth = 1u << 7,
    kProxiedAny = 1u << 8,
};

struct GzipConf {
    CodingConf gzip;    // "gzip", "gzip_types", "gzip_min_length", "gzip_comp_level", "gzip_buffers"
    CodingConf brotli;  // "brotli", "brotli_types", "brotli_min_length", "brotli_comp_level", "brotli_buffers"
    CodingConf zstd;    // "zstd", "zstd_types", "zstd_min_length", "zstd_comp_level", "zstd_buffers"
    std::optional<uint32_t> proxied;       // "gzip_proxied"
    std::optional<bool> vary;              // "gzip_vary"
    const std::vector<Regex>* disable = nullptr;  // "gzip_disable" regexes; owner: the generation
    bool disable_msie6 = false;            // "gzip_disable msie6"
    bool disable_set = false;
    std::optional<int> http_version;       // "gzip_http_version": 10, 11
    std::optional<uint64_t> brotli_window; // "brotli_window": bytes, a power of 2
    std::optional<CodingOrder> order;      // "compression_order": Accept-Encoding ties
};

void merge(const GzipConf& up, GzipConf& c) {
    merge_coding(up.gzip, c.gzip, 1);
    merge_coding(up.brotli, c.brotli, 6);
    merge_coding(up.zstd, c.zstd, 1);
    conf::inherit(c.proxied, up.proxied, kProxiedOff);
    conf::inherit(c.vary, up.vary, false);
    if (!c.disable_set) {
        c.disable = up.disable;
        c.disable_msie6 = up.disable_msie6;
        c.disable_set = up.disable_set;
    }
    conf::inherit(c.http_version, up.http_version, 11);
    conf::inherit(c.brotli_window, up.brotli_window, uint64_t{512 * 1024});
    conf::inherit(c.order, up.order, kDefaultCodingOrder);
}

// ---- setters ------------------------------------------------------------------

template <CodingConf GzipConf::*C>
Status set_on(Ctx& cx, const Node& n, GzipConf& g) {
    CodingConf& c = g.*C;
    if (c.on) return cx.duplicate(n);
    auto v = conf::parse_flag(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    c.on = *v;
    return {};
}

template <CodingConf GzipConf::*C>
Status set_types(Ctx& cx, const Node& n, GzipConf& g) {
    return set_mime_type_list(cx, n, (g.*C).types);
}

template <CodingConf GzipConf::*C>
Status set_min_length(Ctx& cx, const Node& n, GzipConf& g) {
    CodingConf& c = g.*C;
    if (c.min_length) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    if (!v) return cx.invalid(n, v.error());
    c.min_length = *v;
    return {};
}

template <CodingConf GzipConf::*C, int Lo, int Hi>
Status set_level(Ctx& cx, const Node& n, GzipConf& g) {
    CodingConf& c = g.*C;
    if (c.level) return cx.duplicate(n);
    auto v = conf::parse_number(n.args[0].text);
    if (!v) return cx.error(n, "invalid number \"" + n.args[0].text + "\"");
    if (*v < Lo || *v > Hi)
        return cx.error(n, "value must be between " + std::to_string(Lo) + " and " + std::to_string(Hi));
    c.level = *v;
    return {};
}

template <CodingConf GzipConf::*C>
Status set_buffers(Ctx& cx, const Node& n, GzipConf& g) {
    CodingConf& c = g.*C;
    if (c.buffers) return cx.duplicate(n);
    auto num = conf::parse_number(n.args[0].text);
    auto size = conf::parse_size(n.args[1].text);
    if (!num || *num == 0 || !size || *size == 0 || *size > (64u << 20))
        return cx.error(n, "invalid value \"" + n.args[0].text + " " + n.args[1].text + "\"");
    c.buffers = Bufs{*num, *size};
    return {};
}

Status set_proxied(Ctx& cx, const Node& n, GzipConf& g) {
    if (g.proxied) return cx.duplicate(n);
    static constexpr std::pair<std::string_view, uint32_t> kNames[] = {
        {"off", kProxiedOff},         {"expired", kProxiedExpired},
        {"no-cache", kProxiedNoCache}, {"no-store", kProxiedNoStore},
        {"private", kProxiedPrivate},  {"no_last_modified", kProxiedNoLm},
        {"no_etag", kProxiedNoEtag},   {"auth", kProxiedAuth},
        {"any", kProxiedAny},
    };
    uint32_t bits = 0;
    for (const auto& a : n.args) {
        uint32_t bit = 0;
        for (const auto& [name, b] : kNames)
            if (a.text == name) bit = b;
        if (!bit) return cx.error(n, "invalid value \"" + a.text + "\"");
        bits |= bit;
    }
    g.proxied = bits;
    return {};
}

Status set_disable(Ctx& cx, const Node& n, GzipConf& g) {
    if (g.disable_set) return cx.duplicate(n);
    auto* list = cx.arena().make<std::vector<Regex>>();
    for (const auto& a : n.args) {
        if (a.text == "msie6") {
            g.disable_msie6 = true;
            continue;
        }
        // nginx's "degradation" needs its degradation module; none here.
        auto re = Regex::compile(a.text, true);
        if (!re) return cx.error(n, re.message());
        list->push_back(std::move(*re));
    }
    g.disable = list;
    g.disable_set = true;
    return {};
}

// "compression_order zstd br gzip": the codings named first win ties of
// Accept-Encoding's q-values; those not named follow in the default order
// (zstd, br, gzip), so "compression_order gzip" puts gzip first only.
Status set_order(Ctx& cx, const Node& n, GzipConf& g) {
    if (g.order) return cx.duplicate(n);
    CodingOrder order{};
    CodingSet seen;
    size_t k = 0;
    for (const auto& a : n.args) {
        auto c = coding_from_name(a.text);
        if (!c || a.text != coding_name(*c)) return cx.error(n, "invalid value \"" + a.text + "\"");
        if (seen.has(*c)) return cx.error(n, "duplicate value \"" + a.text + "\"");
        seen.add(*c);
        order[k++] = *c;
    }
    for (Coding c : kDefaultCodingOrder)
        if (!seen.has(c)) order[k++] = c;
    g.order = order;
    return {};
}

Status set_http_version(Ctx& cx, const Node& n, GzipConf& g) {
    if (g.http_version) return cx.duplicate(n);
    const std::string& v = n.args[0].text;
    if (v == "1.0") g.http_version = 10;
    else if (v == "1.1") g.http_version = 11;
    else return cx.error(n, "invalid value \"" + v + "\"");
    return {};
}

Status set_brotli_window(Ctx& cx, const Node& n, GzipConf& g) {
    if (g.brotli_window) return cx.duplicate(n);
    auto v = conf::parse_size(n.args[0].text);
    // 1k..16m, a power of 2 [ngx_brotli].
    if (!v || *v < 1024 || *v > (16u << 20) || (*v & (*v - 1)))
        return cx.error(n, "invalid value \"" + n.args[0].text + "\"");
    g.brotli_window = *v;
    return {};
}

// ---- the decision ---------------------------------------------------------------

const CodingConf& coding_conf(const GzipConf& g, Coding c) {
    switch (c) {
        case Coding::Zstd: return g.zstd;
        case Coding::Br: return g.brotli;
        default: return g.gzip;
    }
}

// nginx's MSIE 4-6 without SV1 (6.0 SP2 has a working gzip).
bool is_msie6(std::string_view ua) {
    size_t at = ua.find("MSIE ");
    if (at == std::string_view::npos || at + 7 >= ua.size()) return false;
    if (ua[at + 6] != '.') return false;
    char v = ua[at + 5];
    if (v == '4' || v == '5') return true;
    return v == '6' && ua.find("SV1", at + 8) == std::string_view::npos;
}

// ASCII case-insensitive search.
bool contains_ci(std::string_view s, std::string_view what) {
    if (what.size() > s.size()) return false;
    for (size_t i = 0; i + what.size() <= s.size(); ++i)
        if (iequals(s.substr(i, what.size()), what)) return true;
    return false;
}

bool field_has(const ResponseHead& h, std::string_view name, std::string_view token) {
    for (const Header& x : h.headers)
        if (iequals(x.name, name) && contains_ci(x.value, token)) return true;
    return false;
}

const Header* field(const ResponseHead& h, std::string_view name) {
    for (const Header& x : h.headers)
        if (iequals(x.name, name)) return &x;
    return nullptr;
}

// gzip_proxied for a request that came through a proxy (it has Via).
bool proxied_ok(const Request& r, const ResponseHead& h, uint32_t p) {
    if (!r.headers.find("Via")) return true;
    if (p & kProxiedOff) return false;
    if (p & kProxiedAny) return true;
    if ((p & kProxiedAuth) && r.headers.find("Authorization")) return true;
    if (const Header* e = field(h, "Expires")) {
        // Expired: an Expires earlier than the response's Date (the
        // origin's, when passed on; else now). Either unparsable: no
        // compression [nginx].
        if (!(p & kProxiedExpired)) return false;
        const time_t exp = parse_http_date(e->value);
        if (exp == -1) return false;
        time_t date = static_cast<time_t>(event::worker_loop().wall().sec);
        if (const Header* d = field(h, "Date")) date = parse_http_date(d->value);
        return date != -1 && exp < date;
    }
    if (field(h, "Cache-Control")) {
        if ((p & kProxiedNoCache) && field_has(h, "Cache-Control", "no-cache")) return true;
        if ((p & kProxiedNoStore) && field_has(h, "Cache-Control", "no-store")) return true;
        if ((p & kProxiedPrivate) && field_has(h, "Cache-Control", "private")) return true;
        return false;
    }
    if ((p & kProxiedNoLm) && h.last_modified == -1) return true;
    if ((p & kProxiedNoEtag) && h.etag.empty()) return true;
    return false;
}

bool disabled_for(const Request& r, const GzipConf& g) {
    const HeaderField* ua = r.headers.find("User-Agent");
    if (!ua) return false;
    if (g.disable)
        for (const Regex& re : *g.disable)
            if (re.match(ua->value)) return true;
    return g.disable_msie6 && is_msie6(ua->value);
}

// ---- per response -------------------------------------------------------------

struct Compression {
    Coding coding = Coding::Gzip;
    std::unique_ptr<Compressor> z;  // null: HEAD, nothing to compress
    Bufs bufs;
    Op op = Op::Process;            // a Flush or Finish under way
    bool pending_input = false;     // input taken since the last flush
    bool finished = false;
    SlabRef file_slab;              // a file Buf's piece being compressed
    const char* fpos = nullptr;
    size_t flen = 0;
    SlabRef out_slab;               // the output slab being filled
    size_t out_fill = 0;
    uint64_t in_bytes = 0;
    uint64_t out_bytes = 0;
};

// One Vary naming Accept-Encoding: an origin's may already.
void add_vary(ResponseHead& h) {
    if (field_has(h, "Vary", "Accept-Encoding")) return;
    h.headers.push_back({"Vary", "Accept-Encoding"});
}

Flow header_filter(Request& r, ResponseHead& h) {
    if (!r.loc_confs || r.parent) return Flow::Pass;
    const auto& g = r.loc_conf<GzipConf>(gzip_filter_module);
    if (!*g.gzip.on && !*g.brotli.on && !*g.zstd.on) return Flow::Pass;
    if (h.status != 200 && h.status != 403 && h.status != 404) return Flow::Pass;
    if (const Header* ce = h.find("Content-Encoding"); ce && !ce->value.empty()) return Flow::Pass;
    std::string_view type = mime_of(h.content_type);
    CodingSet eligible;
    for (Coding c : {Coding::Zstd, Coding::Br, Coding::Gzip}) {
        const CodingConf& cc = coding_conf(g, c);
        if (!*cc.on || !cc.types.lists(type)) continue;
        if (h.content_length && *h.content_length < *cc.min_length) continue;
        eligible.add(c);
    }
    if (eligible.empty()) return Flow::Pass;
    add_gzip_vary(r, h);

    if (!gzip_request_ok(r, h)) return Flow::Pass;
    AcceptEncoding ae;
    bool any_field = false;
    for (const HeaderField& f : r.headers)
        if (iequals(f.name, "Accept-Encoding")) {
            parse_accept_encoding(f.value, ae);
            any_field = true;
        }
    if (!any_field) return Flow::Pass;
    std::optional<Coding> chosen = choose_coding(ae, eligible, *g.order);
    if (!chosen) return Flow::Pass;

    const CodingConf& cc = coding_conf(g, *chosen);
    auto* st = r.arena().make<Compression>();
    st->coding = *chosen;
    st->bufs = *cc.buffers;
    if (!r.head_only) {
        CompressorParams p;
        p.coding = *chosen;
        p.level = static_cast<int>(*cc.level);
        if (*chosen == Coding::Br) {
            int w = 0;
            while ((uint64_t{1} << (w + 1)) <= *g.brotli_window) ++w;
            p.window_bits = w;
        }
        p.length = h.content_length;
        st->z = make_compressor(p);
        if (!st->z) {
            GH_LOG(Error, "%.*s compressor could not be created", static_cast<int>(coding_name(*chosen).size()),
                   coding_name(*chosen).data());
            return Flow::Fail;
        }
    }
    h.headers.push_back({"Content-Encoding", coding_name(*chosen)});
    h.content_length.reset();
    // Ours (a file) and an origin's: byte ranges of the compressed
    // stream are not served.
    h.accept_ranges = false;
    h.remove("Accept-Ranges");
    // Another representation, so not byte-identical.
    weaken_etag(r, h);
    r.set_ctx(gzip_filter_module, st);
    return Flow::Pass;
}

// The output slab goes out (with `flags` of the Buf: flush, last).
void emit(Compression& st, Chain& out, bool flush, bool last) {
    if (st.out_fill == 0 && !flush && !last) return;
    Buf b;
    if (st.out_fill) {
        b = Buf::in_slab(std::move(st.out_slab), st.out_fill);
        st.out_bytes += st.out_fill;
    }
    b.flush = flush;
    b.last_buf = last;
    st.out_slab = {};
    st.out_fill = 0;
    out.push(std::move(b));
}

// One codec step with the room left in the output slab; a full slab goes out.
bool compress(Compression& st, Op op, const char** in, size_t* len, Chain& out, bool* done) {
    if (!st.out_slab) {
        st.out_slab = SlabRef::adopt(Slab::make(st.bufs.size));
        st.out_fill = 0;
    }
    char* o = st.out_slab.get()->data() + st.out_fill;
    size_t room = st.bufs.size - st.out_fill;
    if (!st.z->step(op, in, len, &o, &room, done)) return false;
    st.out_fill = st.bufs.size - room;
    if (room == 0) {
        emit(st, out, false, false);
        // A flush or finish that filled the slab exactly may have more.
        if (op != Op::Process) *done = false;
    }
    return true;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    auto* st = r.ctx<Compression>(gzip_filter_module);
    if (!st || !st->z) {
        out.append(in);
        return Flow::Pass;
    }
    if (st->finished) {
        // Nothing may follow the end; what does is dropped.
        in.clear();
        return Flow::Pass;
    }
    const uint64_t limit = st->bufs.num * st->bufs.size;
    size_t taken = 0;  // Bufs of `in` done with
    size_t work = 0;
    const uint64_t out_at_entry = out.bytes();
    auto hold = [&](bool self) {
        in.erase_front(taken);
        if (self) resume_output(r);
        return Flow::Hold;
    };
    for (;;) {
        // Back-pressure: the client has not taken what went out yet. The
        // stream calls again when its queue empties, a later filter that
        // holds our output when it goes on; but output made in this call
        // that the stream may write at once (its queue never non-empty,
        // so no drain) needs a call from the loop.
        if (const size_t queued = r.stream().output_pending(); queued + out.bytes() >= limit)
            return hold(queued < limit && out.bytes() > out_at_entry);
        if (st->op != Op::Process) {
            const char* none = nullptr;
            size_t zero = 0;
            bool done = false;
            if (!compress(*st, st->op, &none, &zero, out, &done)) {
                GH_LOG(Error, "%.*s compression failed", static_cast<int>(coding_name(st->coding).size()),
                       coding_name(st->coding).data());
                return Flow::Fail;
            }
            if (!done) continue;
            const bool last = st->op == Op::Finish;
            emit(*st, out, !last, last);
            st->op = Op::Process;
            st->pending_input = false;
            if (last) {
                st->finished = true;
                stats::compressed(static_cast<uint8_t>(st->coding), st->in_bytes, st->out_bytes);
                in.clear();
                return Flow::Pass;
            }
            continue;
        }
        if (work >= kWorkPerCall) return hold(true);
        // The next input: the rest of a file piece, else of the Buf at hand.
        if (st->flen == 0 && taken < in.size()) {
            Buf& b = in[taken];
            if (b.in_file() && !b.empty()) {
                if (!st->file_slab) st->file_slab = SlabRef::adopt(Slab::make(kFilePiece));
                size_t want = std::min<size_t>(b.size(), kFilePiece);
                ssize_t n = pread(b.fd, st->file_slab.get()->data(), want, b.file_pos);
                if (n <= 0) {
                    GH_LOG(Crit, "pread() failed (%d: %s)", n < 0 ? errno : 0,
                           n < 0 ? std::strerror(errno) : "file shrank");
                    return Flow::Fail;
                }
                b.consume(static_cast<size_t>(n));
                st->fpos = st->file_slab.get()->data();
                st->flen = static_cast<size_t>(n);
            }
        }
        if (st->flen) {
            const char* p = st->fpos;
            size_t before = st->flen;
            bool done = false;
            if (!compress(*st, Op::Process, &p, &st->flen, out, &done)) return Flow::Fail;
            st->fpos = p;
            work += before - st->flen;
            st->in_bytes += before - st->flen;
            st->pending_input = true;
            continue;
        }
        if (taken == in.size()) {
            // All the producer has handed over so far is in: out with it,
            // decodable, unless nothing came since the last flush.
            if (st->pending_input) {
                st->op = Op::Flush;
                continue;
            }
            in.clear();
            return Flow::Pass;
        }
        Buf& b = in[taken];
        if (!b.in_file() && !b.empty()) {
            const char* p = b.pos;
            size_t len = b.size();
            bool done = false;
            if (!compress(*st, Op::Process, &p, &len, out, &done)) return Flow::Fail;
            work += static_cast<size_t>(p - b.pos);
            st->in_bytes += static_cast<size_t>(p - b.pos);
            if (p != b.pos) st->pending_input = true;
            b.pos = p;
            continue;
        }
        // This Buf is all taken: its flags now.
        const bool last = b.last_buf, flush = b.flush;
        ++taken;
        if (last) st->op = Op::Finish;
        else if (flush && st->pending_input) st->op = Op::Flush;
        else if (flush) emit(*st, out, true, false);  // nothing to flush: pass the flush on
    }
}

// ---- $gzip_ratio ------------------------------------------------------------------

void v_ratio(Request& r, VarValue& v, uintptr_t coding) {
    auto* st = r.ctx<Compression>(gzip_filter_module);
    if (!st || !st->z || !st->finished || static_cast<uintptr_t>(st->coding) != coding) {
        v.not_found = true;
        return;
    }
    char buf[24];
    v.s = r.arena().dup(format_ratio(st->in_bytes, st->out_bytes, buf));
}

constexpr VariableDef kVariables[] = {
    {"gzip_ratio", v_ratio, static_cast<uintptr_t>(Coding::Gzip), kVarNoCache},
    {"brotli_ratio", v_ratio, static_cast<uintptr_t>(Coding::Br), kVarNoCache},
    {"zstd_ratio", v_ratio, static_cast<uintptr_t>(Coding::Zstd), kVarNoCache},
};

constexpr uint32_t kCtx = conf::kHttpSrvLoc | conf::kIf;

constexpr conf::Directive kDirectives[] = {
    {"gzip", kCtx, conf::Take1, conf::custom<set_on<&GzipConf::gzip>>()},
    {"gzip_types", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_types<&GzipConf::gzip>>()},
    {"gzip_min_length", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_min_length<&GzipConf::gzip>>()},
    {"gzip_comp_level", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_level<&GzipConf::gzip, 1, 9>>()},
    {"gzip_buffers", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_buffers<&GzipConf::gzip>>()},
    {"gzip_proxied", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_proxied>()},
    {"gzip_vary", conf::kHttpSrvLoc, conf::Take1, conf::flag<&GzipConf::vary>()},
    {"gzip_disable", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_disable>()},
    {"gzip_http_version", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_http_version>()},
    {"brotli", kCtx, conf::Take1, conf::custom<set_on<&GzipConf::brotli>>()},
    {"brotli_types", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_types<&GzipConf::brotli>>()},
    {"brotli_min_length", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_min_length<&GzipConf::brotli>>()},
    {"brotli_comp_level", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_level<&GzipConf::brotli, 0, 11>>()},
    {"brotli_buffers", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_buffers<&GzipConf::brotli>>()},
    {"brotli_window", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_brotli_window>()},
    {"zstd", kCtx, conf::Take1, conf::custom<set_on<&GzipConf::zstd>>()},
    {"zstd_types", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_types<&GzipConf::zstd>>()},
    {"zstd_min_length", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_min_length<&GzipConf::zstd>>()},
    {"zstd_comp_level", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_level<&GzipConf::zstd, 1, 22>>()},
    {"zstd_buffers", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_buffers<&GzipConf::zstd>>()},
    {"compression_order", conf::kHttpSrvLoc, conf::Take13, conf::custom<set_order>()},
};

bool engaged(const Request& r) { return r.ctx<Compression>(gzip_filter_module) != nullptr; }

// No coding on here: nothing to compress, no Vary to add.
bool wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    const auto& g = *static_cast<const GzipConf*>(loc[gzip_filter_module.index]);
    return *g.gzip.on || *g.brotli.on || *g.zstd.on;
}

constexpr ModuleHooks kHooks{.header_filter = header_filter,
                             .body_filter = body_filter,
                             .body_filter_engaged = engaged,
                             .filters_wanted = wanted,
                             .variables = kVariables};

}  // namespace

bool gzip_request_ok(const Request& r, const ResponseHead& h) {
    if (r.parent) return false;  // a subrequest's output is part of another response
    if (!r.loc_confs) {
        // The defaults: gzip_http_version 1.1, gzip_proxied off, no gzip_disable.
        return r.http_version >= 11 && !r.headers.find("Via");
    }
    const auto& g = r.loc_conf<GzipConf>(gzip_filter_module);
    if (r.http_version < *g.http_version) return false;
    if (disabled_for(r, g)) return false;
    return proxied_ok(r, h, *g.proxied);
}

bool gzip_vary_on(const Request& r) {
    return r.loc_confs && *r.loc_conf<GzipConf>(gzip_filter_module).vary;
}

const CodingOrder& coding_order(const Request& r) {
    if (!r.loc_confs) return kDefaultCodingOrder;
    return *r.loc_conf<GzipConf>(gzip_filter_module).order;
}

void add_gzip_vary(const Request& r, ResponseHead& h) {
    if (gzip_vary_on(r)) add_vary(h);
}

extern const conf::Module gzip_filter_module{
    .name = "gzip_filter",
    .directives = kDirectives,
    .loc = conf::level<GzipConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
