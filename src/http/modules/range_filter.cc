// range_filter_module: byte ranges of 200 responses [nginx range filter].
//
// Applies to a 200 with a known length whose producer allows ranges
// (ResponseHead::accept_ranges, set by the static module): without a
// Range field it only announces "Accept-Ranges: bytes". With one (and an
// If-Range that holds, RFC 9110 13.1.5):
//   - one satisfiable range: 206 with Content-Range, the body cut to it;
//   - none satisfiable: 416 with "Content-Range: bytes */length" and an
//     empty body;
//   - several ranges: 206 multipart/byteranges (RFC 9110 14.6) [nginx],
//     the parts in ascending order with overlapping ones merged (15.3.7.2
//     allows both), so that they are cut from the body as it streams,
//     whatever its buffers; nginx keeps the order asked and needs the
//     body in one buffer. Ranges adding up to more than the body are
//     ignored (range.h), so overlaps cannot amplify a response.
// A Content-Range the response had (an origin's, add_header's) gives way
// to the one written here [nginx].
// "max_ranges 0" turns ranges off (no Accept-Ranges either); "max_ranges
// N" ignores lists longer than N.
#include <cstdio>
#include <string>

#include "core/random.h"
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
    MultipartSlicer* parts = nullptr;  // several ranges: this cuts instead
    bool drop = false;  // 416: no body at all
};

// The multipart answer's head and the parts' heads and closing delimiter
// (RFC 9110 14.6, RFC 2046 5.1.1). The boundary is 20 random digits: a
// body that happens to hold it is as unlikely as with nginx's counter.
MultipartSlicer* start_multipart(Request& r, ResponseHead& h, const std::pmr::vector<ByteRange>& ranges,
                                 uint64_t length) {
    char boundary[21];
    snprintf(boundary, sizeof boundary, "%020llu", static_cast<unsigned long long>(random64() % 10000000000000000000ull));
    const std::string_view b(boundary, 20);
    std::string type_line;
    if (!h.content_type.empty()) {
        type_line = "Content-Type: ";
        type_line += h.content_type;
        if (!h.charset.empty()) {
            type_line += "; charset=";
            type_line += h.charset;
        }
        type_line += "\r\n";
    }
    auto* heads = r.arena().make<std::pmr::vector<std::string_view>>(r.mem());
    heads->reserve(ranges.size());
    uint64_t total = 0;
    char cr[kContentRangeMax];
    for (const ByteRange& x : ranges) {
        std::string head = "\r\n--";
        head += b;
        head += "\r\n";
        head += type_line;
        head += "Content-Range: ";
        head += format_content_range(x, length, cr);
        head += "\r\n\r\n";
        heads->push_back(r.arena().dup(head));
        total += head.size() + x.size();
    }
    std::string tail = "\r\n--";
    tail += b;
    tail += "--\r\n";
    total += tail.size();
    h.content_type = r.arena().dup("multipart/byteranges; boundary=" + std::string(b));
    h.charset = {};
    h.content_length = total;
    return r.arena().make<MultipartSlicer>(std::span<const ByteRange>(ranges), std::span<const std::string_view>(*heads),
                                           r.arena().dup(tail));
}

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
    auto* ranges = r.arena().make<std::pmr::vector<ByteRange>>(r.mem());
    RangeRequest rr = parse_range(range->value, length, sc.max_ranges.value_or(UINT64_MAX), ranges);
    if (rr.verdict == RangeVerdict::Ignore) return Flow::Pass;
    if (rr.verdict == RangeVerdict::Satisfiable && rr.count > 1) {
        order_ranges(*ranges);
        rr.first = ranges->front();
    }

    char buf[kContentRangeMax];
    auto* st = r.arena().make<RangeState>(rr.first);
    h.reason = {};
    h.accept_ranges = false;
    h.remove("Content-Range");
    if (rr.verdict == RangeVerdict::Unsatisfiable) {
        h.status = 416;
        h.headers.push_back({"Content-Range", r.arena().dup(format_unsatisfied_range(length, buf))});
        h.content_length = 0;
        h.content_type = {};
        h.charset = {};
        h.last_modified = -1;
        h.etag = {};
        st->drop = true;
    } else if (ranges->size() > 1) {
        h.status = 206;
        st->parts = start_multipart(r, h, *ranges, length);
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
    if (st->parts) st->parts->run(in, out);
    else st->slicer.run(in, out);
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
