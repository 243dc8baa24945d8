// charset_filter_module: "charset", "charset_types", "override_charset",
// "source_charset", "charset_map" [nginx ngx_http_charset_module].
//
// Header filter: a response whose MIME type is in charset_types (text/html
// always) and whose Content-Type names no charset gets "; charset=X" from
// "charset" (a name, "off", or variables). One that names its own (an
// origin's "text/html; charset=koi8-r") is left alone unless
// "override_charset on": then its charset is the source and "charset"
// replaces it, whatever its type. Otherwise the source is
// "source_charset", when set. When source and destination differ (names
// compare case-insensitively), the body is recoded through the
// "charset_map" between them, in either direction; without one the
// response goes as it is and the error log says so ([emerg] instead when
// both are written in the configuration, as nginx checks at start). A
// response with Content-Encoding is never recoded (its bytes are not
// text) and then gets no charset either, which would be a lie; with no
// recoding needed it gets one (gzip_static, a compressed origin). 301 and
// 302 never get a charset [nginx: old browsers kept it for the next page].
// Subrequests are left alone: their bodies never reach a client here.
//
// Recoding to or from UTF-8 changes the length: Content-Length goes (the
// response is chunked or close-delimited, and ranges no longer apply);
// 8-bit to 8-bit keeps it. The ETag stays as it is, as nginx leaves it:
// the recoded bytes are a function of the file's and the configuration.
//
// Body filter: http/charset_recode.h does the bytes. A piece that needs no
// change (all ASCII, say) passes on untouched; the others are recoded into
// slabs of at most kSlab bytes, file ranges read in pieces of kSlab. At
// most kBudget new slabs per call and none while the stream is busy
// (output_busy): the filter holds and the rest of its input waits queued,
// so memory stays bounded whatever the body's shape (a million one-byte
// pieces fill a few slabs, not a million).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/log.h"
#include "core/str.h"
#include "http/charset_recode.h"
#include "http/mime.h"
#include "http/output.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module charset_filter_module;

namespace {

using conf::Ctx;
using conf::Node;

// The value of "charset" or "source_charset".
struct CharsetValue {
    bool off = false;                // "charset off"
    std::string name;                // a name without variables
    std::optional<ComplexValue> var; // with variables: evaluated per response
    std::string where;               // file:line, for postconfiguration's errors

    std::string_view eval(Request& r) const { return var ? var->eval(r) : std::string_view(name); }
};

// A "charset_map A B" block: A to B forward, B to A backward.
struct MapEntry {
    std::string a, b;
    const CharsetMap* map;  // owner: the generation arena
};

// A source and destination both written in the configuration that some
// location uses: postconfiguration wants a charset_map between them.
struct RecodePair {
    std::string src, dst, where;
};

struct CharsetMainConf {
    std::vector<MapEntry> maps;        // "charset_map"
    std::vector<RecodePair> recodes;   // filled by merge

    // The recoder from `src` to `dst`, if a map joins them.
    std::optional<Recoder> recoder(std::string_view src, std::string_view dst) const {
        for (const MapEntry& m : maps) {
            if (iequals(m.a, src) && iequals(m.b, dst)) return Recoder(*m.map, true);
            if (iequals(m.b, src) && iequals(m.a, dst)) return Recoder(*m.map, false);
        }
        return std::nullopt;
    }
    bool joined(std::string_view a, std::string_view b) const {
        for (const MapEntry& m : maps)
            if ((iequals(m.a, a) && iequals(m.b, b)) || (iequals(m.b, a) && iequals(m.a, b))) return true;
        return false;
    }
};

struct CharsetLocConf {
    std::optional<CharsetValue> charset;         // "charset"
    std::optional<CharsetValue> source;          // "source_charset"
    std::optional<bool> override_charset;        // "override_charset"
    MimeTypeList types;  // "charset_types"; unset: kDefaultTypes
    CharsetMainConf* main = nullptr;  // owner: the generation; for merge
};

constexpr std::string_view kDefaultTypes[] = {"text/html",  "text/xml",
                                              "text/plain", "text/vnd.wap.wml",
                                              "application/javascript", "application/rss+xml"};

void merge(const CharsetLocConf& up, CharsetLocConf& c) {
    if (!c.charset) c.charset = up.charset;
    if (!c.source) c.source = up.source;
    conf::inherit(c.override_charset, up.override_charset, false);
    c.types.inherit(up.types);
    if (!c.main) c.main = up.main;
    // nginx checks at start that a location recoding between two named
    // charsets has a map for them; with variables only requests can tell.
    if (!c.main || !c.charset || !c.source || c.charset->off) return;
    const CharsetValue& d = *c.charset;
    const CharsetValue& s = *c.source;
    if (d.var || s.var || iequals(d.name, s.name)) return;
    for (const RecodePair& p : c.main->recodes)
        if (iequals(p.src, s.name) && iequals(p.dst, d.name)) return;
    c.main->recodes.push_back({s.name, d.name, d.where});
}

CharsetMainConf* main_conf(Ctx& cx) {
    return cx.conf<CharsetMainConf>(charset_filter_module, conf::Level::Main);
}

Status set_value(Ctx& cx, const Node& n, std::optional<CharsetValue>& slot, bool may_be_off) {
    if (slot) return cx.duplicate(n);
    CharsetValue v;
    const std::string& a = n.args[0].text;
    v.where = n.where();
    if (may_be_off && a == "off") {
        v.off = true;
    } else if (a.find('$') != std::string::npos) {
        auto cv = ComplexValue::compile(cx, n, a);
        if (!cv) return cv.error();
        v.var = std::move(*cv);
    } else {
        v.name = a;
    }
    slot = std::move(v);
    return {};
}

// charset name | off;
Status set_charset(Ctx& cx, const Node& n, CharsetLocConf& c) {
    c.main = main_conf(cx);
    return set_value(cx, n, c.charset, true);
}

// source_charset name;
Status set_source(Ctx& cx, const Node& n, CharsetLocConf& c) {
    c.main = main_conf(cx);
    return set_value(cx, n, c.source, false);
}

// charset_types mime-type ...;
Status set_types(Ctx& cx, const Node& n, CharsetLocConf& c) { return set_mime_type_list(cx, n, c.types); }

// charset_map a b { XX YY; ... }
Status open_map(Ctx& cx, const Node& n) {
    CharsetMainConf* m = main_conf(cx);
    GH_CHECK(m != nullptr);  // "charset_map" is allowed in http only
    const std::string& a = n.args[0].text;
    const std::string& b = n.args[1].text;
    if (iequals(a, b))
        return cx.error(n, "\"charset_map\" between the same charsets \"" + a + "\" and \"" + b + "\"");
    // nginx takes "utf-8" first too and then reads its rows as if the
    // other side were UTF-8, which recodes garbage; refused here.
    if (iequals(a, "utf-8"))
        return cx.error(n, "\"utf-8\" must be the second charset of \"charset_map\", not \"" + a + "\"");
    if (m->joined(a, b)) return cx.error(n, "duplicate \"charset_map\" between \"" + a + "\" and \"" + b + "\"");
    auto* map = cx.arena().make<CharsetMap>(iequals(b, "utf-8"));
    for (const Node& e : n.children) {
        if (e.block) return cx.error(e, "unexpected \"{\"");
        if (e.args.size() != 1) return cx.error(e, "invalid parameters number");
        if (auto s = map->add(e.name, e.args[0].text); !s) return cx.error(e, s.error().message);
    }
    m->maps.push_back({a, b, map});
    return {};
}

Status postconfiguration(Ctx& cx) {
    CharsetMainConf* m = main_conf(cx);
    if (!m) return {};
    for (const RecodePair& p : m->recodes)
        if (!m->joined(p.src, p.dst))
            return make_error("no \"charset_map\" between the charsets \"" + p.src + "\" and \"" + p.dst + "\" in " +
                              p.where);
    return {};
}

// ---- the filter ------------------------------------------------------------

constexpr size_t kSlab = 8192;   // the largest output (and file read) slab
constexpr size_t kBudget = 16;   // new output slabs per call

struct CharsetState {
    explicit CharsetState(const Recoder& r) : rec(r) {}
    Recoder rec;
    SlabRef out;  // the output slab being filled
    size_t out_fill = 0;
    size_t out_cap = 0;
    SlabRef in;   // a piece of a file Buf
};

// The charset a Content-Type value names ("...; charset=koi8-r", quotes
// taken off) and where the value stops without it [nginx: the rest of the
// value after "charset=" is the name].
struct TypeCharset {
    std::string_view charset;
    size_t type_len = 0;
};
TypeCharset charset_of(std::string_view ct) {
    for (size_t semi = ct.find(';'); semi != std::string_view::npos; semi = ct.find(';', semi + 1)) {
        size_t p = semi + 1;
        while (p < ct.size() && (ct[p] == ' ' || ct[p] == '\t')) ++p;
        if (!istarts_with(ct.substr(p), "charset=")) continue;
        std::string_view v = ct.substr(p + 8);
        if (!v.empty() && v.front() == '"') v.remove_prefix(1);
        if (!v.empty() && v.back() == '"') v.remove_suffix(1);
        size_t len = semi;
        while (len > 0 && (ct[len - 1] == ' ' || ct[len - 1] == '\t')) --len;
        return {v, len};
    }
    return {{}, ct.size()};
}

// The response says `dst`: Content-Type loses the charset it had.
void say_charset(Request& r, ResponseHead& h, const TypeCharset& tc, std::string_view dst) {
    h.content_type = h.content_type.substr(0, tc.type_len);
    h.charset = h.status == 301 || h.status == 302 ? std::string_view() : r.arena().dup(dst);
}

Flow header_filter(Request& r, ResponseHead& h) {
    if (r.parent || !r.loc_confs || h.content_type.empty()) return Flow::Pass;
    const auto& c = r.loc_conf<CharsetLocConf>(charset_filter_module);
    // An origin's X-Accel-Charset names the charset wherever the response
    // goes, "charset" and charset_types or not [nginx].
    const bool accel = !h.override_charset.empty();
    if (!accel && (!c.charset || c.charset->off)) return Flow::Pass;
    TypeCharset tc;
    if (!h.charset.empty()) {
        tc = {h.charset, h.content_type.size()};  // a handler's own
    } else {
        tc = charset_of(h.content_type);
    }
    std::string_view dst;
    if (accel) {
        dst = h.override_charset;
    } else {
        if (!tc.charset.empty()) {
            if (!*c.override_charset) return Flow::Pass;
        } else if (!c.types.lists(mime_of(h.content_type), kDefaultTypes)) {
            return Flow::Pass;
        }
        dst = c.charset->eval(r);
        if (dst.empty()) return Flow::Pass;  // a variable without a value
    }

    std::string_view src = tc.charset;
    if (src.empty() && c.source) src = c.source->eval(r);
    if (src.empty() || iequals(src, dst)) {
        say_charset(r, h, tc, dst);
        return Flow::Pass;
    }
    // Compressed bytes cannot be recoded, and naming a charset they are
    // not in would mislead: as it is.
    if (const Header* ce = h.find("Content-Encoding"); ce && !ce->value.empty()) return Flow::Pass;
    const auto& m = r.main_conf<CharsetMainConf>(charset_filter_module);
    std::optional<Recoder> rec = m.recoder(src, dst);
    if (!rec) {
        log_for_request(r, log::Level::Error, 0,
                        "no \"charset_map\" between the charsets \"" + std::string(src) + "\" and \"" +
                            std::string(dst) + "\"");
        return Flow::Pass;
    }
    say_charset(r, h, tc, dst);
    if (rec->changes_length()) h.content_length.reset();
    if (!r.head_only) r.set_ctx(charset_filter_module, r.arena().make<CharsetState>(*rec));
    return Flow::Pass;
}

// The slab filled so far goes to `out`.
void emit(CharsetState& st, Chain& out, bool flush) {
    if (!st.out || st.out_fill == 0) return;
    Buf b = Buf::in_slab(std::move(st.out), st.out_fill);
    b.flush = flush;
    out.push(std::move(b));
    st.out = SlabRef();
    st.out_fill = 0;
}

// Room in the output slab for at least kMaxOut bytes, a new slab when the
// current one is short (sized for `pending` input bytes, up to kSlab);
// false when the budget is spent.
bool room(CharsetState& st, Chain& out, size_t& budget, size_t pending) {
    if (st.out && st.out_cap - st.out_fill >= Recoder::kMaxOut) return true;
    emit(st, out, false);
    if (budget == 0) return false;
    --budget;
    size_t grow = st.rec.kind() == Recoder::Kind::Bytes ? 1 : 4;
    st.out_cap = std::clamp(pending * grow + Recoder::kMaxOut, size_t{64}, kSlab);
    st.out = SlabRef::adopt(Slab::make(st.out_cap));
    st.out_fill = 0;
    return true;
}

// Recodes as much of `data` as the budget allows; how much it took.
size_t recode(CharsetState& st, std::string_view data, Chain& out, size_t& budget, size_t pending) {
    size_t done = 0;
    while (done < data.size()) {
        if (!room(st, out, budget, pending - done)) break;
        auto step = st.rec.run(data.substr(done),
                               std::span<char>(st.out.get()->data() + st.out_fill, st.out_cap - st.out_fill));
        done += step.consumed;
        st.out_fill += step.produced;
    }
    return done;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    auto* st = r.ctx<CharsetState>(charset_filter_module);
    if (!st) {
        out.append(in);
        return Flow::Pass;
    }
    // None while the stream is busy, nor while what this filter already
    // gave is still queued ahead of it: the engine may call again before
    // the stream got anything (a head and a body in one turn).
    size_t budget = output_busy(r) || out.bytes() >= kOutputBusy ? 0 : kBudget;
    size_t pending = 0;  // input bytes still to recode: sizes the slabs
    for (const Buf& b : in) pending += b.size();
    size_t used = 0;  // Bufs of `in` done with
    for (Buf& b : in) {
        if (!b.in_file() && st->rec.passes_unchanged(b.view())) {
            // As it is: after what was recoded before it.
            emit(*st, out, false);
            pending -= b.size();
            out.push(std::move(b));
            ++used;
            continue;
        }
        if (b.in_file()) {
            while (!b.empty()) {
                if (!st->in) st->in = SlabRef::adopt(Slab::make(kSlab));
                size_t want = std::min(b.size(), kSlab);
                ssize_t n = ::pread(b.fd, st->in.get()->data(), want, b.file_pos);
                if (n <= 0) {
                    log_for_request(r, log::Level::Crit, n < 0 ? errno : 0,
                                    n < 0 ? "pread() failed" : "pread() read only 0 bytes: the file shrank");
                    return Flow::Fail;
                }
                size_t took = recode(*st, {st->in.get()->data(), static_cast<size_t>(n)}, out, budget, pending);
                b.consume(took);
                pending -= took;
                if (took < static_cast<size_t>(n)) break;  // the budget ran out
            }
        } else {
            size_t took = recode(*st, b.view(), out, budget, pending);
            b.consume(took);
            pending -= took;
        }
        if (!b.empty()) break;  // hold: the rest waits
        if (b.last_buf) {
            if (room(*st, out, budget, 0)) {
                st->out_fill += st->rec.finish(
                    std::span<char>(st->out.get()->data() + st->out_fill, st->out_cap - st->out_fill));
            } else {
                break;
            }
            emit(*st, out, false);
            Buf end;
            end.last_buf = true;
            out.push(std::move(end));
        } else if (b.flush) {
            emit(*st, out, true);
            if (out.empty() || !out.back().flush) {
                Buf f;
                f.flush = true;
                out.push(std::move(f));
            }
        }
        ++used;
    }
    in.erase_front(used);
    if (!in.empty()) return Flow::Hold;  // called again when the stream drains
    // The producer has handed over all it had: what is recoded goes now.
    emit(*st, out, false);
    return Flow::Pass;
}

bool engaged(const Request& r) { return r.ctx<CharsetState>(charset_filter_module) != nullptr; }

constexpr ModuleHooks kHooks{.header_filter = header_filter, .body_filter = body_filter, .body_filter_engaged = engaged};

constexpr conf::Arity kMapArgs{2, 2, true};

constexpr conf::Directive kDirectives[] = {
    {"charset", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::custom<set_charset>()},
    {"source_charset", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::custom<set_source>()},
    {"override_charset", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::flag<&CharsetLocConf::override_charset>()},
    {"charset_types", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_types>()},
    {"charset_map", conf::kHttp, kMapArgs, conf::custom<open_map>()},
};

}  // namespace

extern const conf::Module charset_filter_module{
    .name = "charset_filter",
    .directives = kDirectives,
    .main = conf::level<CharsetMainConf>(),
    .loc = conf::level<CharsetLocConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
};

}  // namespace gatehouse::http
