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

namespace {

// The replacement by the first rule that matches v: a regex matches the
// whole value; a literal rule answers through `literal`.
template <typename Literal>
std::optional<std::string_view> first_rule(Request& r, const std::vector<const Redirect*>& rules,
                                           std::string_view v, Literal literal) {
    for (const Redirect* rule : rules) {
        if (!rule->regex) {
            if (auto to = literal(*rule)) return to;
        } else if (rule->regex->exec(r, r.arena().dup(v))) {
            return rule->replacement.eval(r);
        }
    }
    return std::nullopt;
}

// A Domain value without its leading dot, which the comparison and the
// replacement leave out and the result keeps [nginx]: from ".x.com",
// "x.com" is matched and the "." stays in front of what replaces it.
std::optional<std::string_view> rewrite_domain(Request& r, const std::vector<const Redirect*>& rules,
                                               std::string_view v) {
    return first_rule(r, rules, v, [&](const Redirect& rule) -> std::optional<std::string_view> {
        std::string_view from = rule.redirect.eval(r);
        if (!from.empty() && from[0] == '.') from.remove_prefix(1);
        if (!iequals(from, v)) return std::nullopt;
        std::string_view to = rule.replacement.eval(r);
        if (!to.empty() && to[0] == '.') to.remove_prefix(1);
        return to;
    });
}

// A Path value: a literal replaces a prefix (with case), a regex the whole.
std::optional<std::string_view> rewrite_path(Request& r, const std::vector<const Redirect*>& rules,
                                             std::string_view v) {
    return first_rule(r, rules, v, [&](const Redirect& rule) -> std::optional<std::string_view> {
        std::string_view from = rule.redirect.eval(r);
        if (!v.starts_with(from)) return std::nullopt;
        std::pmr::string out(rule.replacement.eval(r), r.mem());
        out += v.substr(from.size());
        return r.arena().dup(out);
    });
}

// The cookie's name: what precedes its "=" (or its ";"), trimmed.
std::string_view cookie_name(std::string_view value) {
    return trim_ows(value.substr(0, std::min(value.find('='), value.find(';'))));
}

// What the first proxy_cookie_flags rule naming this cookie does; nothing
// when none names it.
CookieFlagSet cookie_flags_for(Request& r, const std::vector<const CookieFlags*>& rules, std::string_view value) {
    std::string_view name = cookie_name(value);
    std::string_view subject;  // the name as a regex reads it, copied once
    for (const CookieFlags* rule : rules) {
        if (rule->regex && subject.data() == nullptr) subject = r.arena().dup(name);
        if (rule->regex ? !rule->regex->exec(r, subject) : !iequals(rule->name.eval(r), name)) continue;
        CookieFlagSet f = rule->fixed;
        // A variable's value that is no flag (empty, say) is skipped.
        for (const ComplexValue& cv : rule->dynamic) parse_cookie_flag(cv.eval(r), f);
        return f;
    }
    return {};
}

// The cookie again with the attributes `f` names removed and those it
// sets appended: "; Secure; HttpOnly; SameSite=X", the other attributes
// kept in order, each after "; ".
std::string_view apply_cookie_flags(Request& r, const CookieFlagSet& f, std::string_view value) {
    const uint8_t touched = f.set | f.clear;
    std::pmr::string out(r.mem());
    size_t pos = value.find(';');
    std::string_view head = value.substr(0, pos);
    while (!head.empty() && (head.back() == ' ' || head.back() == '\t')) head.remove_suffix(1);
    out.append(head);
    while (pos != std::string_view::npos) {
        size_t start = pos + 1;
        pos = value.find(';', start);
        std::string_view attr = trim_ows(value.substr(start, pos == std::string_view::npos ? pos : pos - start));
        if (attr.empty()) continue;
        std::string_view name = trim_ows(attr.substr(0, attr.find('=')));
        if (((touched & CookieFlagSet::kSecure) && iequals(name, "secure")) ||
            ((touched & CookieFlagSet::kHttpOnly) && iequals(name, "httponly")) ||
            ((touched & CookieFlagSet::kSameSite) && iequals(name, "samesite")))
            continue;
        out.append("; ");
        out.append(attr);
    }
    if (f.set & CookieFlagSet::kSecure) out.append("; Secure");
    if (f.set & CookieFlagSet::kHttpOnly) out.append("; HttpOnly");
    if (f.set & CookieFlagSet::kSameSite) {
        static constexpr std::string_view kSameSite[] = {"; SameSite=Strict", "; SameSite=Lax", "; SameSite=None"};
        out.append(kSameSite[static_cast<size_t>(f.samesite)]);
    }
    return r.arena().dup(out);
}

// Domain and Path rules on the attributes' values, in place.
std::string_view rewrite_cookie_attrs(Request& r, const ProxyConf& pc, std::string_view value) {
    std::pmr::string out(r.mem());
    size_t done = 0;  // value[0, done) is in out
    // The attributes follow the first ";" (the cookie's own name=value).
    size_t pos = value.find(';');
    while (pos != std::string_view::npos) {
        size_t start = pos + 1;
        while (start < value.size() && (value[start] == ' ' || value[start] == '\t')) ++start;
        size_t end = value.find(';', start);
        std::string_view attr = value.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
        const size_t eq = attr.find('=');
        if (eq != std::string_view::npos) {
            std::string_view name = attr.substr(0, eq);
            while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
            size_t vstart = start + eq + 1;
            while (vstart < start + attr.size() && value[vstart] == ' ') ++vstart;
            size_t vend = start + attr.size();
            while (vend > vstart && (value[vend - 1] == ' ' || value[vend - 1] == '\t')) --vend;
            std::string_view v = value.substr(vstart, vend - vstart);
            std::optional<std::string_view> to;
            if (pc.cookie_domains && iequals(name, "domain")) {
                if (!v.empty() && v[0] == '.') ++vstart;
                to = rewrite_domain(r, *pc.cookie_domains, value.substr(vstart, vend - vstart));
            } else if (pc.cookie_paths && iequals(name, "path")) {
                to = rewrite_path(r, *pc.cookie_paths, v);
            }
            if (to) {
                out.append(value.substr(done, vstart - done));
                out.append(*to);
                done = vend;
            }
        }
        pos = end;
    }
    if (done == 0) return value;
    out.append(value.substr(done));
    return r.arena().dup(out);
}

}  // namespace

bool parse_cookie_flag(std::string_view flag, CookieFlagSet& f) {
    using F = CookieFlagSet;
    auto add = [&](uint8_t bit) { f.set |= bit; f.clear &= ~bit; };
    auto remove = [&](uint8_t bit) { f.clear |= bit; f.set &= ~bit; };
    if (iequals(flag, "secure")) add(F::kSecure);
    else if (iequals(flag, "httponly")) add(F::kHttpOnly);
    else if (iequals(flag, "nosecure")) remove(F::kSecure);
    else if (iequals(flag, "nohttponly")) remove(F::kHttpOnly);
    else if (iequals(flag, "nosamesite")) remove(F::kSameSite);
    else if (iequals(flag, "samesite=strict")) { add(F::kSameSite); f.samesite = F::SameSite::Strict; }
    else if (iequals(flag, "samesite=lax")) { add(F::kSameSite); f.samesite = F::SameSite::Lax; }
    else if (iequals(flag, "samesite=none")) { add(F::kSameSite); f.samesite = F::SameSite::None; }
    else return false;
    return true;
}

std::string_view rewrite_cookie(Request& r, const ProxyConf& pc, std::string_view value) {
    if (pc.cookie_domains || pc.cookie_paths) value = rewrite_cookie_attrs(r, pc, value);
    if (!pc.cookie_flags) return value;
    const CookieFlagSet f = cookie_flags_for(r, *pc.cookie_flags, value);
    if ((f.set | f.clear) == 0) return value;
    return apply_cookie_flags(r, f, value);
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
            // Set-Cookie, only where cookie rules exist (most places have none).
            if ((pc.cookie_domains || pc.cookie_paths || pc.cookie_flags) && iequals(x.name, "Set-Cookie")) {
                out.headers.push_back({x.name, rewrite_cookie(r, pc, x.value)});
                break;
            }
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
