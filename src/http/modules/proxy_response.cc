// The response side of the proxy's policy: the origin's head made the
// client's (copy_response_head), with proxy_redirect (rewrite_redirect).
// The origin's bytes themselves are the upstream::Client's business.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

#include "core/str.h"
#include "http/conditional.h"
#include "http/modules/proxy.h"
#include "http/request.h"

namespace gatehouse::http::proxy {

namespace {

bool listed(const std::vector<std::string>* names, std::string_view name) {
    if (!names) return false;
    for (const std::string& n : *names)
        if (iequals(n, name)) return true;
    return false;
}

}  // namespace

std::string_view rewrite_redirect(Request& r, const ProxyConf& pc, const Pass& pass, std::string_view value,
                                  size_t from) {
    if (pc.redirect_off.value_or(false)) return value;
    std::string_view head = value.substr(0, from);
    std::string_view v = value.substr(from);
    auto with_head = [&](std::string_view s) -> std::string_view {
        if (head.empty()) return s;
        std::pmr::string t(head, r.mem());
        t += s;
        return r.arena().dup(t);
    };
    auto apply_default = [&]() -> std::optional<std::string_view> {
        // "proxy_redirect default": the proxy_pass URL (with "/" when it has
        // no URI) becomes the location's prefix ("/" without a URI).
        if (pass.url_value) return std::nullopt;
        if (pass.has_uri) return rewrite_prefix(r.arena(), v, pass.url, pass.location);
        std::pmr::string from_url(pass.url, r.mem());
        from_url += '/';
        return rewrite_prefix(r.arena(), v, from_url, "/");
    };
    if (!pc.redirects) {
        if (auto s = apply_default()) return with_head(*s);
        return value;
    }
    for (const Redirect* rd : *pc.redirects) {
        std::optional<std::string_view> s;
        switch (rd->kind) {
            case Redirect::Kind::Default: s = apply_default(); break;
            case Redirect::Kind::Literal:
                s = rewrite_prefix(r.arena(), v, rd->redirect.eval(r), rd->replacement.eval(r));
                break;
            case Redirect::Kind::Regex: {
                std::string_view subject = r.arena().dup(v);
                if (rd->regex->exec(r, subject)) s = rd->replacement.eval(r);
                break;
            }
        }
        if (s) return with_head(*s);
    }
    return value;
}

void apply_accel_limit_rate(Request& r, const ProxyConf& pc, std::string_view value) {
    if (*pc.ignore_headers & kIgnoreXAccelLimitRate) return;
    uint64_t rate = 0;
    if (!iequals(value, "off")) {
        auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), rate);
        if (ec != std::errc() || end != value.data() + value.size()) return;  // not a number: ignored
    }
    r.limit_rate = rate;
    r.limit_rate_set = true;
}

void copy_response_head(Request& r, const ProxyConf& pc, const Pass& pass, int status, std::string_view reason,
                        std::span<const upstream::TryLog::Field> fields, const Framing& framing,
                        std::optional<bool>* accel_buffering) {
    ResponseHead& out = r.out;
    out.status = status;
    if (!reason.empty()) out.reason = r.arena().dup(reason);
    // Fields the origin's Connection names are hop-by-hop (RFC 9110 7.6.1);
    // most responses have one Connection field or none.
    std::string_view conn_value;
    bool several = false;
    for (const auto& f : fields)
        if (iequals(f.name, "Connection")) {
            several = !conn_value.empty();
            conn_value = f.value;
        }
    // "keep-alive", the usual value, names only a field dropped anyway.
    if (!several && iequals(conn_value, "keep-alive")) conn_value = {};
    auto named_by_connection = [&](std::string_view name) {
        if (conn_value.empty()) return false;
        if (!several) return connection_lists(conn_value, name);
        for (const auto& f : fields)
            if (iequals(f.name, "Connection") && connection_lists(f.value, name)) return true;
        return false;
    };
    // Room for every field at once: growing one by one reallocated the
    // arena vector three or four times a response (~400 instructions).
    out.headers.reserve(out.headers.size() + fields.size());
    for (const auto& x : fields) {
        using F = ResponseField;
        const F kind = classify_response_field(x.name);
        if (kind == F::AccelBuffering && !(*pc.ignore_headers & kIgnoreXAccelBuffering)) {
            if (iequals(x.value, "no")) *accel_buffering = false;
            else if (iequals(x.value, "yes")) *accel_buffering = true;
        }
        if (kind == F::AccelLimitRate) apply_accel_limit_rate(r, pc, x.value);
        if (kind == F::AccelCharset && !(*pc.ignore_headers & kIgnoreXAccelCharset)) out.override_charset = x.value;
        if (status == 101 && kind == F::Upgrade) {
            out.headers.push_back({x.name, x.value});
            continue;
        }
        if (kind == F::Connection || kind == F::Upgrade || kind == F::HopByHop || named_by_connection(x.name))
            continue;
        const bool by_default = kind == F::Hidden || kind == F::AccelBuffering || kind == F::AccelLimitRate ||
                                kind == F::AccelCharset;
        bool hidden = (by_default || listed(pc.hide_headers, x.name)) && !listed(pc.pass_headers, x.name);
        if (hidden) continue;
        switch (kind) {
        case F::ContentType:
            out.content_type = x.value;
            break;
        case F::Location:
            out.location = rewrite_redirect(r, pc, pass, x.value, 0);
            break;
        case F::Refresh: {
            size_t at = refresh_url_offset(x.value);
            out.headers.push_back(
                {x.name, at == std::string_view::npos ? x.value : rewrite_redirect(r, pc, pass, x.value, at)});
            break;
        }
        case F::ETag:
            out.etag = x.value;
            break;
        case F::LastModified:
            // As a field the writer formats: not_modified_filter compares it.
            if (time_t lm = parse_http_date(x.value); lm >= 0) {
                out.last_modified = lm;
                break;
            }
            [[fallthrough]];
        default:
            out.headers.push_back({x.name, x.value});
            break;
        }
    }
    if (!framing.chunked && framing.content_length && status != 204 && status != 304)
        out.content_length = *framing.content_length;
    out.origin_server = listed(pc.pass_headers, "Server");
    out.origin_date = listed(pc.pass_headers, "Date");
}

}  // namespace gatehouse::http::proxy
