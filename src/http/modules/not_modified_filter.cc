// not_modified_filter_module: conditional requests on 200 responses
// [nginx not_modified filter].
//
// The header filter evaluates If-Match, If-Unmodified-Since,
// If-None-Match and If-Modified-Since against the response's ETag and
// Last-Modified (conditional.h says in which order and where this differs
// from nginx). 304 keeps ETag and Last-Modified and drops the
// representation's metadata (Content-Type, Content-Length,
// Content-Encoding, Accept-Ranges); 412 drops all of it and has an empty
// body. The body filter then swallows the body, passing on only its end.
// Any 200 is eligible but a proxied one that no cache stores: the origin
// had the request's preconditions and answered them [nginx].
#include "core/str.h"
#include "http/conditional.h"
#include "http/h1_parser.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

extern const conf::Module not_modified_filter_module;

namespace {

// Set on a request whose body this filter drops.
struct DropBody {};

// The four conditional fields, first of each, in one pass over the
// request's fields: this runs for every 200, and nearly no request has
// any of them (four find() calls cost ~260 instructions, callgrind).
Preconditions preconditions_of(const Request& r) {
    Preconditions p;
    auto take = [](std::optional<std::string_view>& to, const HeaderField& f) {
        if (!to) to = f.value;
    };
    for (const HeaderField& f : r.headers) {
        // Every name below starts with "If-".
        if (f.name.size() < 8 || (f.name[0] | 0x20) != 'i') continue;
        switch (f.name.size()) {
        case 8:
            if (iequals(f.name, "If-Match")) take(p.if_match, f);
            break;
        case 13:
            if (iequals(f.name, "If-None-Match")) take(p.if_none_match, f);
            break;
        case 17:
            if (iequals(f.name, "If-Modified-Since")) take(p.if_modified_since, f);
            break;
        case 19:
            if (iequals(f.name, "If-Unmodified-Since")) take(p.if_unmodified_since, f);
            break;
        default:
            break;
        }
    }
    return p;
}

Flow header_filter(Request& r, ResponseHead& h) {
    if (h.status != 200 || h.origin_preconditions || !r.loc_confs) return Flow::Pass;
    const Preconditions p = preconditions_of(r);
    if (!p.if_match && !p.if_unmodified_since && !p.if_none_match && !p.if_modified_since) return Flow::Pass;

    const auto& sc = r.loc_conf<StaticConf>(static_module);
    bool safe = r.in.method == Method::Get || r.in.method == Method::Head;
    PreconditionResult res = evaluate_preconditions(p, h.last_modified, h.etag, safe,
                                                    sc.if_modified_since.value_or(IfModifiedSince::Exact));
    if (res == PreconditionResult::Proceed) return Flow::Pass;

    h.reason = {};
    h.content_type = {};
    h.charset = {};
    h.accept_ranges = false;
    h.remove("Content-Encoding");
    if (res == PreconditionResult::NotModified) {
        // RFC 9110 15.4.5: a 304 carries the validators but no Content-Length
        // of its own (one would have to be the 200's).
        h.status = 304;
        h.content_length.reset();
    } else {
        h.status = 412;
        h.content_length = 0;
        h.last_modified = -1;
        h.etag = {};
    }
    r.set_ctx(not_modified_filter_module, r.arena().make<DropBody>());
    return Flow::Pass;
}

Flow body_filter(Request& r, Chain& in, Chain& out) {
    if (!r.ctx<DropBody>(not_modified_filter_module)) {
        out.append(in);
        return Flow::Pass;
    }
    in.drop_data();
    out.append(in);
    return Flow::Pass;
}

bool engaged(const Request& r) { return r.ctx<DropBody>(not_modified_filter_module) != nullptr; }

constexpr ModuleHooks kHooks{.header_filter = header_filter, .body_filter = body_filter, .body_filter_engaged = engaged};

}  // namespace

extern const conf::Module not_modified_filter_module{
    .name = "not_modified_filter",
    .http = &kHooks,
};

}  // namespace gatehouse::http
