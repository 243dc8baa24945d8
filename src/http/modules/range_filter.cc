// range_filter_module: byte ranges of 200 responses [nginx range filter].
//
// Applies to a 200 with a known length whose producer allows ranges
// (ResponseHead::accept_ranges, set by the static module): without a
// Range field it only announces "Accept-Ranges: bytes". With one (and an
// If-Range that holds, RFC 9110 13.1.5):
//   - one satisfiable range: 206 with Content-Range, the body cut to it;
//   - none satisfiable: 416 with "Content-Range: bytes */length" and an
//     empty body;
//   - several ranges: the whole 200. nginx answers multipart/byteranges;
//     RFC 9110 14.2 lets a server ignore Range, clients cope, and
//     multi-range requests are rare outside download managers and PDF
//     readers, which fall back to single ranges. It also closes the door on
//     overlapping-range amplification.
// "max_ranges 0" turns ranges off (no Accept-Ranges either); "max_ranges
// N" ignores lists longer than N.
#include "http/conditional.h"
#include "http/h1_parser.h"
#include "http/range.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

extern const conf::Module range_filter_module;

namespace {

struct RangeState {
    explicit RangeState(ByteRange r) : slicer(r) {}
    RangeSlicer slicer;
    bool drop = false;  // 416: no body at all
};

// If-Range: an entity-tag must match strongly, a date exactly.
bool if_range_holds(std::string_view v, const ResponseHead& h) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    if (!v.empty() && (v.front() == '"' || v.substr(0, 2) == "W/"))
        return etag_list_matches(v, h.etag, TagMatch::Strong);
    if (h.last_modified == -1) return false;
    return parse_http_date(v) == h.last_modified;
}

Flow header_filter(Request& r, ResponseHead& h) {
    if (h.status != 200 || !h.content_length || !h.accept_ranges || !r.loc_confs || r.http_version < 10)
        return Flow::Pass;
    const auto& sc = r.loc_conf<StaticConf>(static_module);
    if (sc.max_ranges == 0u) {
        h.accept_ranges = false;
        return Flow::Pass;
    }
    const HeaderField* range = r.headers.find("Range");
    if (!range) return Flow::Pass;
    if (const HeaderField* ir = r.headers.find("If-Range"); ir && !if_range_holds(ir->value, h)) return Flow::Pass;

    uint64_t length = *h.content_length;
    RangeRequest rr = parse_range(range->value, length, sc.max_ranges.value_or(UINT64_MAX));
    if (rr.verdict == RangeVerdict::Ignore || (rr.verdict == RangeVerdict::Satisfiable && rr.count > 1))
        return Flow::Pass;

    char buf[kContentRangeMax];
    auto* st = r.arena().make<RangeState>(rr.first);
    h.reason = {};
    h.accept_ranges = false;
    if (rr.verdict == RangeVerdict::Unsatisfiable) {
        h.status = 416;
        h.headers.push_back({"Content-Range", r.arena().dup(format_unsatisfied_range(length, buf))});
        h.content_length = 0;
        h.content_type = {};
        h.charset = {};
        h.last_modified = -1;
        h.etag = {};
        st->drop = true;
    } else {
        h.status = 206;
        h.headers.push_back({"Content-Range", r.arena().dup(format_content_range(rr.first, length, buf))});
        h.content_length = rr.first.size();
    }
    r.set_ctx(range_filter_module, st);
    return Flow::Pass;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    auto* st = r.ctx<RangeState>(range_filter_module);
    if (!st) {
        out.append(in);
        return Flow::Pass;
    }
    if (st->drop) {
        in.drop_data();
        out.append(in);
        return Flow::Pass;
    }
    st->slicer.run(in, out);
    return Flow::Pass;
}

bool engaged(const Request& r) { return r.ctx<RangeState>(range_filter_module) != nullptr; }

constexpr ModuleHooks kHooks{.header_filter = header_filter, .body_filter = body_filter, .body_filter_engaged = engaged};

}  // namespace

extern const conf::Module range_filter_module{
    .name = "range_filter",
    .http = &kHooks,
};

}  // namespace gatehouse::http
