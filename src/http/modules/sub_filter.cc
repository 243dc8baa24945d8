// sub_filter_module: "sub_filter", "sub_filter_once", "sub_filter_types",
// "sub_filter_last_modified" [nginx ngx_http_sub_module].
//
// Header filter: a response gets its strings replaced when its location
// has "sub_filter" directives (a level with any has none of the outer
// levels'), its MIME type is in sub_filter_types (text/html always, "*"
// any) and it has a whole body (not 204, 206, 304, nor one of length
// 0). A response with Content-Encoding is left alone: its bytes are not
// the text (nginx would search the compressed bytes). The filter sits after
// gunzip, which inflates a gzip origin's body for a client that takes
// no gzip, and before charset and gzip, which recode and compress the
// replaced text, as in nginx. Such a response loses Content-Length (and
// with it ranges), and Last-Modified and the ETag, as nginx: with
// "sub_filter_last_modified on" Last-Modified stays and a strong ETag
// becomes weak. HEAD gets the same head. Subrequests are left alone:
// their bodies never reach a client here.
//
// The search strings and replacements may hold variables: the search
// strings are evaluated in the header filter, each replacement at its
// string's first match. A search string that comes out empty is not
// looked for, nor one longer than kSubMaxSearch (an error is logged);
// "sub_filter" with a longer literal one is an [emerg].
//
// Body filter: http/sub_match.h finds the strings, holding back fewer
// bytes than the longest string. Text that passes unchanged goes on as
// windows of the input's slabs; short pieces (held-back text, short
// replacements, the text between close matches) are copied into slabs
// of kSlab bytes, so that a body of one-byte matches does not become a
// chain of one-byte Bufs. File Bufs (static files, cache hits) are read
// in pieces of kSlab bytes. Input is taken kSegment bytes at a time, and
// the filter holds while the stream or its own output has kOutputBusy
// bytes waiting, so memory stays bounded whatever the body's length and
// shape and however much replacements add. With "sub_filter_once on",
// once every string has been found the rest of the body passes as it is.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"
#include "core/log.h"
#include "core/str.h"
#include "http/mime.h"
#include "http/output.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/sub_match.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module sub_filter_module;

namespace {

using conf::Ctx;
using conf::Node;

struct SubPair {
    ComplexValue search;
    ComplexValue replace;
};

struct SubLocConf {
    std::vector<SubPair> pairs;          // "sub_filter", in their order
    bool pairs_set = false;              // this level has its own
    std::optional<bool> once;            // "sub_filter_once"
    std::optional<bool> last_modified;   // "sub_filter_last_modified"
    MimeTypeList types;                  // "sub_filter_types"
};

// Whether any level has "sub_filter": without, the filters stay out of
// the chains (ModuleHooks::filters_used).
struct SubMainConf {
    bool used = false;
};

void merge(const SubLocConf& up, SubLocConf& c) {
    if (!c.pairs_set) c.pairs = up.pairs;
    conf::inherit(c.once, up.once, true);
    conf::inherit(c.last_modified, up.last_modified, false);
    c.types.inherit(up.types);
}

// sub_filter string replacement;
Status set_sub_filter(Ctx& cx, const Node& n, SubLocConf& c) {
    const std::string& s = n.args[0].text;
    if (s.empty()) return cx.error(n, "empty search pattern");
    auto search = ComplexValue::compile(cx, n, s);
    if (!search) return search.error();
    if (search->literal() && search->text().size() > kSubMaxSearch)
        return cx.error(n, "the search string of \"sub_filter\" is longer than " + std::to_string(kSubMaxSearch) +
                               " bytes");
    auto replace = ComplexValue::compile(cx, n, n.args[1].text);
    if (!replace) return replace.error();
    c.pairs_set = true;  // merge inherits nothing now
    if (auto* m = cx.conf<SubMainConf>(sub_filter_module, conf::Level::Main)) m->used = true;
    c.pairs.push_back({std::move(*search), std::move(*replace)});
    return {};
}

// sub_filter_types mime-type ...;
Status set_types(Ctx& cx, const Node& n, SubLocConf& c) { return set_mime_type_list(cx, n, c.types); }

// ---- the filter ------------------------------------------------------------

constexpr size_t kSlab = 8192;      // copy slabs and file pieces
constexpr size_t kSegment = 1024;   // input bytes per matcher call
constexpr size_t kWindowMin = 64;   // shorter text and replacements are copied

struct SubState final : SubSink {
    SubState(Request& req, std::span<const std::string_view> search, bool once, size_t n)
        : r(req), m(search, once, req.mem()), repl(n, std::nullopt, req.mem()) {}

    Request& r;
    SubMatcher m;
    std::pmr::vector<std::optional<std::string_view>> repl;  // evaluated at the first match
    const SubLocConf* conf = nullptr;                          // owner: the generation
    Chain* out = nullptr;        // during a call: where output goes
    const Buf* src = nullptr;    // during a feed: the Buf the chunk is a window of
    SlabRef copy;                // the copy slab
    size_t copy_from = 0;        // its bytes not yet given out: [copy_from, copy_fill)
    size_t copy_fill = 0;
    SlabRef piece;               // the last piece read from a file
    Buf pend;                    // what is left of it to feed
    bool ended = false;

    // The copied bytes so far go out.
    void emit_copy() {
        if (copy_fill == copy_from) return;
        Buf b;
        b.pos = copy.get()->data() + copy_from;
        b.last = copy.get()->data() + copy_fill;
        b.slab = copy;
        out->push(std::move(b));
        copy_from = copy_fill;
    }
    void put_copy(std::string_view s) {
        while (!s.empty()) {
            if (!copy || copy_fill == kSlab) {
                emit_copy();
                copy = SlabRef::adopt(Slab::make(kSlab));
                copy_from = copy_fill = 0;
            }
            const size_t n = std::min(s.size(), kSlab - copy_fill);
            std::copy_n(s.data(), n, copy.get()->data() + copy_fill);
            copy_fill += n;
            s.remove_prefix(n);
        }
    }
    void text(std::string_view s, bool held) override {
        if (held || s.size() < kWindowMin) {
            put_copy(s);
            return;
        }
        emit_copy();
        Buf w;
        w.pos = s.data();
        w.last = s.data() + s.size();
        w.slab = src->slab;  // null for memory that outlives the response
        out->push(std::move(w));
    }
    void match(size_t i) override {
        if (!repl[i]) repl[i] = conf->pairs[i].replace.eval(r);
        std::string_view v = *repl[i];
        if (v.size() < kWindowMin) {
            put_copy(v);
            return;
        }
        // The configuration's text or the request arena's: both outlive
        // the response.
        emit_copy();
        out->push(Buf::memory(v));
    }
};

constexpr std::string_view kDefaultTypes[] = {"text/html"};

Flow header_filter(Request& r, ResponseHead& h) {
    if (r.parent || !r.loc_confs) return Flow::Pass;
    const auto& c = r.loc_conf<SubLocConf>(sub_filter_module);
    if (c.pairs.empty()) return Flow::Pass;
    // No body, or a part of one (an origin's 206: replacing would make
    // its Content-Range lie; nginx replaces anyway).
    if (h.status == 204 || h.status == 206 || h.status == 304 || h.status < 200) return Flow::Pass;
    if (h.content_length && *h.content_length == 0) return Flow::Pass;
    if (!c.types.any() && !c.types.lists(mime_of(h.content_type), kDefaultTypes)) return Flow::Pass;
    if (const Header* ce = h.find("Content-Encoding"); ce && !ce->value.empty()) return Flow::Pass;

    h.content_length.reset();
    h.accept_ranges = false;
    h.remove("Accept-Ranges");
    if (*c.last_modified) {
        weaken_etag(r, h);
    } else {
        h.last_modified = -1;
        h.remove("Last-Modified");
        h.etag = {};
    }
    if (r.head_only) return Flow::Pass;

    std::pmr::vector<std::string_view> search(r.mem());
    search.reserve(c.pairs.size());
    for (const SubPair& p : c.pairs) {
        std::string_view s = p.search.eval(r);
        if (s.size() > kSubMaxSearch) {
            log_for_request(r, log::Level::Error, 0,
                            "the search string of \"sub_filter\" \"" + p.search.text() + "\" is " +
                                std::to_string(s.size()) + " bytes long, more than " +
                                std::to_string(kSubMaxSearch) + ": not looked for");
        }
        search.push_back(s);  // the matcher skips it (and an empty one)
    }
    auto* st = r.arena().make<SubState>(r, search, *c.once, c.pairs.size());
    st->conf = &c;
    r.set_ctx(sub_filter_module, st);
    return Flow::Pass;
}

// The end or a flush after what was made of the Buf's bytes.
void pass_flags(SubState& st, const Buf& b) {
    if (!b.last_buf && !b.flush) return;
    st.emit_copy();
    Buf f;
    f.last_buf = b.last_buf;
    f.flush = b.flush;
    st.out->push(std::move(f));
    if (b.last_buf) st.ended = true;
}

// Too much waits for the client (what the stream has, what this filter
// gave or copied and the next ones have not taken): the rest of the
// input waits too.
bool busy(Request& r, const SubState& st) {
    return output_busy(r) || st.out->bytes() + (st.copy_fill - st.copy_from) >= kOutputBusy;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    auto* st = r.ctx<SubState>(sub_filter_module);
    if (!st) {
        out.append(in);
        return Flow::Pass;
    }
    if (st->ended) {
        in.clear();  // nothing may follow the end
        return Flow::Pass;
    }
    st->out = &out;
    const uint64_t out_at_entry = out.bytes();
    size_t used = 0;  // Bufs of `in` done with
    bool held = false;
    for (Buf& b : in) {
        // A file Buf is read a piece at a time into `pend`; a memory Buf
        // is fed from where it is. Both kSegment bytes per feed.
        while ((!b.empty() || !st->pend.empty()) && !st->m.done()) {
            if (busy(r, *st)) {
                held = true;
                break;
            }
            if (b.in_file() && st->pend.empty()) {
                st->pend = Buf();
                const size_t want = std::min(b.size(), kSlab);
                // A slab no window points at any more is read into again.
                if (!st->piece || st->piece.get()->refs() > 1) st->piece = SlabRef::adopt(Slab::make(kSlab));
                ssize_t n = ::pread(b.fd, st->piece.get()->data(), want, b.file_pos);
                if (n <= 0) {
                    log_for_request(r, log::Level::Crit, n < 0 ? errno : 0,
                                    n < 0 ? "pread() failed" : "pread() read only 0 bytes: the file shrank");
                    return Flow::Fail;
                }
                st->pend = Buf::in_slab(st->piece, static_cast<size_t>(n));
                b.consume(static_cast<size_t>(n));
            }
            Buf& from = b.in_file() ? st->pend : b;
            Buf chunk;
            chunk.pos = from.pos;
            chunk.last = from.pos + std::min(from.size(), kSegment);
            chunk.slab = from.slab;  // null for memory that outlives the response
            from.consume(chunk.size());
            st->src = &chunk;
            st->m.feed(chunk.view(), b.empty() && st->pend.empty() && b.last_buf, *st);
            st->src = nullptr;
        }
        if (held) break;
        // Bytes left: nothing more to replace (once: every string was
        // found), the rest goes as it is.
        if (!st->pend.empty()) {
            st->emit_copy();
            out.push(std::exchange(st->pend, Buf()));
        }
        if (!b.empty()) {
            st->emit_copy();
            if (b.last_buf) st->ended = true;
            out.push(std::move(b));
        } else {
            // An empty end Buf: the matcher gives back what it held.
            if (b.last_buf) st->m.feed({}, true, *st);
            pass_flags(*st, b);
        }
        ++used;
    }
    in.erase_front(used);
    // What was copied goes now; what the matcher holds back waits.
    st->emit_copy();
    st->out = nullptr;
    if (!held) return Flow::Pass;
    // Output made now that the stream writes at once leaves no queue to
    // drain, which would call the filter again: the loop does.
    if (!output_busy(r) && out.bytes() > out_at_entry) resume_output(r);
    return Flow::Hold;
}

bool engaged(const Request& r) { return r.ctx<SubState>(sub_filter_module) != nullptr; }

bool filters_used(conf::ConfArray main) {
    return main && static_cast<const SubMainConf*>(main[sub_filter_module.index])->used;
}

bool wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return !static_cast<const SubLocConf*>(loc[sub_filter_module.index])->pairs.empty();
}

constexpr ModuleHooks kHooks{.header_filter = header_filter,
                             .body_filter = body_filter,
                             .body_filter_engaged = engaged,
                             .filters_used = filters_used,
                             .filters_wanted = wanted};

constexpr conf::Directive kDirectives[] = {
    {"sub_filter", conf::kHttpSrvLoc, conf::Take2, conf::custom<set_sub_filter>()},
    {"sub_filter_once", conf::kHttpSrvLoc, conf::Take1, conf::flag<&SubLocConf::once>()},
    {"sub_filter_last_modified", conf::kHttpSrvLoc, conf::Take1, conf::flag<&SubLocConf::last_modified>()},
    {"sub_filter_types", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_types>()},
};

}  // namespace

extern const conf::Module sub_filter_module{
    .name = "sub_filter",
    .directives = kDirectives,
    .main = conf::level<SubMainConf>(),
    .loc = conf::level<SubLocConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
