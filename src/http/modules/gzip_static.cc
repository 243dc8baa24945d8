// gzip_static_module: "gzip_static", "brotli_static", "zstd_static"
// [nginx ngx_http_gzip_static_module; brotli_static as google/ngx_brotli,
// zstd_static as tokers/zstd-nginx-module]: a precompressed file.gz,
// file.br or file.zst next to the requested file is sent instead of it.
//
// Content phase, before the static module (configure's MODULES puts this
// module between index and static): for GET and HEAD of a URI not ending
// in "/", when one of the three is on. The file name is the static
// module's (map_uri_to_path: root, alias, try_files' alias) plus the
// coding's suffix; the handler declines when no such file exists, and the
// static module then serves the original.
//
// Which file: the codings that are "on" and that the client accepts are
// tried by Accept-Encoding preference (choose_coding in
// http/accept_encoding.h: q-values, ties zstd, br, gzip), the first whose
// file exists wins; failing that, a coding set "always" is sent whatever
// the client asked (the first existing in the tie order), as nginx's
// "gzip_static always" (for a gunzip behind, or clients known to cope).
//
// The answer is the compressed file's: Content-Length, Last-Modified and
// ETag ("etag" directive) are those of file.gz, so that a cache or a
// conditional request sees the variant it got; Content-Type is the
// original's (by the URI's extension); Content-Encoding names the coding;
// ranges apply to the compressed bytes (accept_ranges), as in nginx.
// Conditional requests and ranges are the filters' (not_modified_filter,
// range_filter), as for any static file.
//
// A request accepts a coding only if it passes nginx's other checks
// (http/gzip_request.h: gzip_http_version, gzip_proxied for a request with
// Via, gzip_disable); "always" skips them, as nginx's. With gzip_vary on,
// the answer gets "Vary: Accept-Encoding" when a compressed file of a
// coding that is on exists, sent or not: a client that did not accept it
// gets the original, which still varies by Accept-Encoding [nginx sets
// r->gzip_vary once the .gz opens]. Only then are the codings the client
// does not accept looked for.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "http/file_access.h"
#include "http/accept_encoding.h"
#include "http/core_module.h"
#include "http/gzip_conf.h"
#include "http/gzip_request.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

extern const conf::Module gzip_static_module;

namespace {

enum class StaticMode : uint8_t { Off, On, Always };

struct GzipStaticConf {
    std::optional<StaticMode> zstd;    // "zstd_static"
    std::optional<StaticMode> brotli;  // "brotli_static"
    std::optional<StaticMode> gzip;    // "gzip_static"

    StaticMode mode(Coding c) const {
        switch (c) {
            case Coding::Zstd: return *zstd;
            case Coding::Br: return *brotli;
            case Coding::Gzip: return *gzip;
        }
        return StaticMode::Off;
    }
};

void merge(const GzipStaticConf& up, GzipStaticConf& c) {
    conf::inherit(c.zstd, up.zstd, StaticMode::Off);
    conf::inherit(c.brotli, up.brotli, StaticMode::Off);
    conf::inherit(c.gzip, up.gzip, StaticMode::Off);
}

std::string_view suffix(Coding c) {
    switch (c) {
        case Coding::Zstd: return ".zst";
        case Coding::Br: return ".br";
        case Coding::Gzip: return ".gz";
    }
    return "";
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// The order in which to look for files: the acceptable codings that are
// on or always, best first, then those set "always" that the client does
// not accept. At most kCodingCount entries; returns how many.
size_t candidates(const GzipStaticConf& c, const AcceptEncoding& ae, const CodingOrder& order,
                  std::array<Coding, kCodingCount>& out) {
    size_t n = 0;
    CodingSet left;
    for (Coding k : order)
        if (c.mode(k) != StaticMode::Off) left.add(k);
    // choose_coding() ranks one at a time: take the best, remove it, again.
    while (auto best = choose_coding(ae, left, order)) {
        out[n++] = *best;
        CodingSet rest;
        for (Coding k : order)
            if (left.has(k) && k != *best) rest.add(k);
        left = rest;
    }
    for (Coding k : order)
        if (left.has(k) && c.mode(k) == StaticMode::Always) out[n++] = k;
    return n;
}

enum class Open : uint8_t { Sent, Missing, Failed };

// Opens path (NUL-terminated) and, when it is a regular file, answers
// with it. Missing: declined (no such file, or a directory); Failed:
// r.out.status is the error to answer.
Open try_send(Request& r, std::string_view path, Coding coding, Next& next) {
    int fd = open_file(path.data(), O_RDONLY | O_NONBLOCK, symlink_check(r));
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG) return Open::Missing;
        bool denied = err == EACCES || err == ELOOP || err == EMLINK;
        log_for_request(r, denied ? log::Level::Error : log::Level::Crit, err, "open() " + quoted(path) + " failed");
        next = respond_status(r, denied ? 403 : 500);
        return Open::Failed;
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        log_for_request(r, log::Level::Crit, errno, "fstat() " + quoted(path) + " failed");
        ::close(fd);
        next = respond_status(r, 500);
        return Open::Failed;
    }
    if (S_ISDIR(st.st_mode)) {
        ::close(fd);
        return Open::Missing;
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        log_for_request(r, log::Level::Crit, 0, quoted(path) + " is not a regular file");
        next = respond_status(r, 404);
        return Open::Failed;
    }
    next = respond_with_file(r, fd, st);
    r.out.headers.push_back({"Content-Encoding", coding_name(coding)});
    return Open::Sent;
}

Next serve_precompressed(Request& r) {
    if (r.in.method != Method::Get && r.in.method != Method::Head) return Next::Decline;
    if (r.uri.empty() || r.uri.back() == '/') return Next::Decline;
    const auto& c = r.loc_conf<GzipStaticConf>(gzip_static_module);
    if (*c.gzip == StaticMode::Off && *c.brotli == StaticMode::Off && *c.zstd == StaticMode::Off)
        return Next::Decline;

    std::array<Coding, kCodingCount> order{};
    size_t n = candidates(c, request_codings(r, r.out), coding_order(r), order);
    const bool vary = gzip_vary_on(r);
    if (n == 0 && !vary) return Next::Decline;
    std::string_view base = map_uri_to_path(r, r.uri);
    if (base.empty()) return Next::Decline;  // the static module answers
    auto path_of = [&](Coding k) -> std::string_view {
        std::string_view sfx = suffix(k);
        char* p = static_cast<char*>(r.arena().alloc(base.size() + sfx.size() + 1, 1));
        base.copy(p, base.size());
        sfx.copy(p + base.size(), sfx.size());
        p[base.size() + sfx.size()] = '\0';
        return {p, base.size() + sfx.size()};
    };

    for (size_t i = 0; i < n; ++i) {
        Next next = Next::Decline;
        switch (try_send(r, path_of(order[i]), order[i], next)) {
            case Open::Sent: add_gzip_vary(r, r.out); return next;
            case Open::Failed: return next;
            case Open::Missing: break;
        }
    }
    if (!vary) return Next::Decline;
    // The original goes out; it varies if a compressed file is there.
    for (Coding k : kDefaultCodingOrder) {
        if (c.mode(k) == StaticMode::Off || std::find(order.begin(), order.begin() + n, k) != order.begin() + n)
            continue;
        struct stat st;
        if (stat_file(path_of(k).data(), &st, symlink_check(r)) == 0 && S_ISREG(st.st_mode)) {
            add_gzip_vary(r, r.out);
            break;
        }
    }
    return Next::Decline;
}

// ---- configuration -------------------------------------------------------

using conf::Ctx;
using conf::Node;

template <std::optional<StaticMode> GzipStaticConf::*Field>
Status set_mode(Ctx& cx, const Node& n, GzipStaticConf& c) {
    if ((c.*Field).has_value()) return cx.duplicate(n);
    std::string_view v = n.args[0].text;
    if (v == "off") c.*Field = StaticMode::Off;
    else if (v == "on") c.*Field = StaticMode::On;
    else if (v == "always") c.*Field = StaticMode::Always;
    else return cx.error(n, "invalid value \"" + std::string(v) + "\"");
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"gzip_static", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_mode<&GzipStaticConf::gzip>>()},
    {"brotli_static", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_mode<&GzipStaticConf::brotli>>()},
    {"zstd_static", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_mode<&GzipStaticConf::zstd>>()},
};

constexpr PhaseHandler kPhases[] = {
    {Phase::Content, serve_precompressed},
};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module gzip_static_module{
    .name = "gzip_static",
    .directives = kDirectives,
    .loc = conf::level<GzipStaticConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
