// static_module: files from "root" or "alias", and "try_files".
//
// Content phase (serve_file): GET and HEAD get the file (POST 405, as
// nginx); a directory without a trailing slash is redirected (301) to the
// URI with one; a URI ending in "/" that the index module did not resolve
// is 403. Open failures: not found 404, permission 403, the rest 500, each
// logged with the call and errno. The body is a file buffer sent as it is;
// conditional requests and ranges are filters of their own
// (not_modified_filter.cc, range_filter.cc).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "http/file_access.h"
#include "http/core_module.h"
#include "http/mime.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

// ---- pure helpers -----------------------------------------------------------

std::optional<std::string_view> path_tail(RootKind kind, size_t alias_len, std::string_view uri) {
    switch (kind) {
        case RootKind::Root: return uri;
        case RootKind::Alias:
            if (uri.size() < alias_len) return std::nullopt;
            return uri.substr(alias_len);
        case RootKind::RegexAlias: return std::string_view();
    }
    return std::nullopt;
}

std::optional<std::string_view> join_path(std::string_view base, std::string_view tail, std::span<char> out) {
    GH_CHECK(out.size() > base.size() + tail.size());
    if (tail.find('\0') != std::string_view::npos) return std::nullopt;
    base.copy(out.data(), base.size());
    tail.copy(out.data() + base.size(), tail.size());
    size_t len = base.size() + tail.size();
    out[len] = '\0';
    std::string_view path(out.data(), len);
    // Check every segment from the one the junction falls in: "/data/" +
    // "../x" and "/data/" + ".." must not pass; "/data/img" + "../x" is
    // the harmless "img..". Whole segments of the base are the operator's,
    // except the last when nothing follows: an alias in a regex location
    // may end in a capture ("/data/$1" with $1 "..").
    size_t seg = base.size();
    if (tail.empty() || (!base.empty() && base.back() != '/' && tail.front() != '/')) {
        size_t slash = base.empty() ? std::string_view::npos : path.rfind('/', base.size() - 1);
        seg = slash == std::string_view::npos ? 0 : slash + 1;
    }
    while (seg <= len) {
        size_t end = path.find('/', seg);
        if (end == std::string_view::npos) end = len;
        std::string_view s = path.substr(seg, end - seg);
        if (s == "." || s == "..") return std::nullopt;
        seg = end + 1;
    }
    return path;
}

std::string_view format_etag(time_t mtime, off_t size, std::span<char, kEtagMax> out) {
    int n = snprintf(out.data(), out.size(), "\"%llx-%llx\"", static_cast<unsigned long long>(mtime),
                     static_cast<unsigned long long>(size));
    return {out.data(), static_cast<size_t>(n)};
}

void append_escaped_path(std::string_view path, std::pmr::string& out) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (char ch : path) {
        auto c = static_cast<unsigned char>(ch);
        bool raw = c > 0x20 && c < 0x7f && c != '"' && c != '#' && c != '%' && c != '?' && c != '<' &&
                   c != '>' && c != '\\' && c != '^' && c != '`' && c != '{' && c != '|' && c != '}';
        if (raw) {
            out.push_back(ch);
        } else {
            out.push_back('%');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
}

// ---- request helpers ----------------------------------------------------------

namespace {

// try_files found a file for an alias in a regex location: from then on
// that location's file is the alias followed by the URI (nginx's
// add_uri_to_alias). Tied to the URI and root it was made for, so that an
// internal redirect elsewhere does not inherit it.
struct StaticCtx {
    std::string_view uri;
    const DocRoot* root = nullptr;
};

// a + b, NUL-terminated, in the arena.
std::string_view arena_concat(Arena& arena, std::string_view a, std::string_view b = {}) {
    char* p = static_cast<char*>(arena.alloc(a.size() + b.size() + 1, 1));
    a.copy(p, a.size());
    b.copy(p + a.size(), b.size());
    p[a.size() + b.size()] = '\0';
    return {p, a.size() + b.size()};
}

// join_path() into r's arena.
std::optional<std::string_view> join_in_arena(Request& r, std::string_view base, std::string_view tail) {
    size_t n = base.size() + tail.size() + 1;
    return join_path(base, tail, {static_cast<char*>(r.arena().alloc(n, 1)), n});
}

// The root or alias value for r, absolute.
std::string_view eval_base(Request& r, const DocRoot* root) {
    if (!root) return r.main_conf<StaticMainConf>(static_module).default_root;
    std::string_view base = root->path.eval(r);
    if (!root->path.literal() && (base.empty() || base[0] != '/'))
        base = arena_concat(r.arena(), root->prefix, base);
    return base;
}

const StaticConf* static_conf(Request& r) {
    return r.loc_confs ? &r.loc_conf<StaticConf>(static_module) : nullptr;
}

bool log_not_found(Request& r) {
    return r.loc_confs ? r.loc_conf<LocConf>(http_core_module).log_not_found.value_or(true) : true;
}

}  // namespace

void log_for_request(Request& r, log::Level l, int err, std::string_view msg) {
    if (!log::effective().enabled(l)) return;
    log::Scope scope(&r.log_ctx);
    log::emit(l, err, "%.*s", static_cast<int>(msg.size()), msg.data());
}

std::string_view map_uri_to_path(Request& r, std::string_view uri, size_t* root_len) {
    const StaticConf* c = static_conf(r);
    if (!c) return {};
    const DocRoot* root = c->root;
    std::string_view base = eval_base(r, root);
    std::optional<std::string_view> tail;
    if (root == nullptr) {
        tail = uri;
    } else {
        tail = path_tail(root->kind, root->alias_len, uri);
        auto* sc = r.ctx<StaticCtx>(static_module);
        if (root->kind == RootKind::RegexAlias && sc && sc->root == root && sc->uri.data() == uri.data() &&
            sc->uri.size() == uri.size())
            tail = uri;
    }
    if (!tail) return {};
    auto path = join_in_arena(r, base, *tail);
    if (!path) return {};
    if (root_len) *root_len = base.size();
    return *path;
}

std::string_view content_type_for(Request& r, std::string_view exten) {
    const StaticConf* c = static_conf(r);
    if (!c) return "text/plain";
    std::string_view t = c->types ? c->types->find(exten) : builtin_mime_type(exten);
    if (!t.empty()) return t;
    return c->default_type ? std::string_view(*c->default_type) : std::string_view("text/plain");
}

bool sendfile_enabled(Request& r) {
    const StaticConf* c = static_conf(r);
    return c && c->sendfile.value_or(false);
}

Next respond_with_file(Request& r, int fd, const struct stat& st) {
    r.add_fd(fd);
    const StaticConf& c = r.loc_conf<StaticConf>(static_module);
    // Linux takes no size: the kernel's read-ahead window for a
    // sequential reader [nginx does the same].
    if (c.read_ahead.value_or(0) > 0) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    r.out.status = 200;
    r.out.content_length = static_cast<uint64_t>(st.st_size);
    r.out.last_modified = st.st_mtime;
    if (c.etag.value_or(true)) {
        char buf[kEtagMax];
        r.out.etag = r.arena().dup(format_etag(st.st_mtime, st.st_size, buf));
    }
    // A type already chosen (kept from an origin's X-Accel-Redirect
    // answer) stays, as in nginx.
    if (r.out.content_type.empty()) r.out.content_type = content_type_for(r, r.exten);
    r.out.accept_ranges = true;  // the range filter may cut this body

    Buf b = st.st_size > 0 ? Buf::file(fd, 0, st.st_size) : Buf();
    b.last_buf = true;
    r.use_sendfile = sendfile_enabled(r);
    r.body.push(std::move(b));
    return Next::Respond;
}

namespace {

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// ---- Content: serve a file -----------------------------------------------

Next redirect_to_dir(Request& r) {
    // nginx sends the URI as processed, plus "/", plus the arguments.
    std::pmr::string loc(r.mem());
    append_escaped_path(r.uri, loc);
    loc.push_back('/');
    if (!r.args.empty()) {
        loc.push_back('?');
        loc.append(r.args);
    }
    r.out.location = r.arena().dup(loc);
    return respond_status(r, 301);
}

Next serve_file(Request& r) {
    Method m = r.in.method;
    if (m != Method::Get && m != Method::Head && m != Method::Post) return respond_status(r, 405);

    std::string_view path = map_uri_to_path(r, r.uri);
    if (!r.uri.empty() && r.uri.back() == '/') {
        // The index module found no index file in this directory.
        log_for_request(r, log::Level::Error, 0,
                        "directory index of " + quoted(path.empty() ? r.uri : path) + " is forbidden");
        return respond_status(r, 403);
    }
    if (path.empty()) return respond_status(r, 404, "the URI does not map to a file under the root");

    int fd = open_file(path.data(), O_RDONLY | O_NONBLOCK, symlink_check(r));
    if (fd < 0) {
        int err = errno;
        int status = 500;
        log::Level level = log::Level::Crit;
        if (err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG) {
            status = 404;
            level = log::Level::Error;
            if (!log_not_found(r)) return respond_status(r, 404);
        } else if (err == EACCES || err == ELOOP || err == EMLINK) {
            // ELOOP: a link disable_symlinks refuses, or a loop of links.
            status = 403;
            level = log::Level::Error;
        }
        log_for_request(r, level, err, "open() " + quoted(path) + " failed");
        return respond_status(r, status);
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        log_for_request(r, log::Level::Crit, errno, "fstat() " + quoted(path) + " failed");
        ::close(fd);
        return respond_status(r, 500);
    }
    // Only a file that is sent stays open: the others close now, so that
    // error_page chains through directories cannot pile descriptors up.
    if (!S_ISREG(st.st_mode) || m == Method::Post) ::close(fd);
    if (S_ISDIR(st.st_mode)) return redirect_to_dir(r);
    if (!S_ISREG(st.st_mode)) {
        log_for_request(r, log::Level::Crit, 0, quoted(path) + " is not a regular file");
        return respond_status(r, 404);
    }
    if (m == Method::Post) return respond_status(r, 405);
    return respond_with_file(r, fd, st);
}

// ---- Precontent: try_files ---------------------------------------------

enum class Probe : uint8_t { Found, Missing };

Probe probe(Request& r, std::string_view path, bool want_dir) {
    struct stat st;
    if (stat_file(path.data(), &st, symlink_check(r)) != 0) {
        int err = errno;
        if (err != ENOENT && err != ENOTDIR && err != ENAMETOOLONG)
            log_for_request(r, log::Level::Crit, err, "stat() " + quoted(path) + " failed");
        return Probe::Missing;
    }
    return S_ISDIR(st.st_mode) == want_dir ? Probe::Found : Probe::Missing;
}

Next run_try_files(Request& r) {
    const StaticConf* c = static_conf(r);
    if (!c || !c->try_files) return Next::Decline;
    const TryFiles& tf = *c->try_files;
    const DocRoot* root = c->root;
    RootKind kind = root ? root->kind : RootKind::Root;
    // The location prefix an alias replaces, as it appears in the URI.
    std::string_view prefix;
    if (kind == RootKind::Alias) prefix = r.uri.substr(0, std::min(root->alias_len, r.uri.size()));

    for (const ComplexValue& f : tf.files) {
        std::string_view name = f.eval(r);
        // As written, not as evaluated [nginx]: "$uri" for "/dir/" wants a
        // file, and "$uri/" a directory.
        const bool want_dir = !f.text().empty() && f.text().back() == '/';
        // A name under the location prefix loses it for "alias", as the URI
        // would; other names are taken below the alias as they are.
        std::string_view tail = name;
        if (kind == RootKind::Alias && name.substr(0, prefix.size()) == prefix)
            tail = name.substr(prefix.size());
        auto path = join_in_arena(r, eval_base(r, root), tail);
        if (!path || probe(r, *path, want_dir) != Probe::Found) continue;

        // Found: the request goes on in this location with this URI; a
        // directory's without its last slash [nginx], so that a request
        // for "/dir" (try_files $uri $uri/) gets the 301 to "/dir/".
        if (want_dir && name.size() > 1 && name.back() == '/') {
            name.remove_suffix(1);
            if (tail.size() > 1 && tail.back() == '/') tail.remove_suffix(1);
        }
        if (kind == RootKind::Alias) {
            std::pmr::string uri(r.mem());
            uri.append(prefix);
            uri.append(tail);
            r.uri = r.arena().dup(uri);
        } else if (kind == RootKind::RegexAlias) {
            if (!want_dir) {
                r.uri = r.arena().dup(name);
                auto* sc = r.arena().make<StaticCtx>();
                sc->uri = r.uri;
                sc->root = root;
                r.set_ctx(static_module, sc);
            }
        } else {
            r.uri = r.arena().dup(name);
        }
        r.set_exten();
        return Next::Proceed;
    }

    if (tf.code != 0) return respond_status(r, tf.code);
    std::string_view target = tf.fallback.eval(r);
    if (!target.empty() && target[0] == '@') return named_redirect(r, target);
    // "uri?args" replaces the arguments; a URI without "?" keeps them.
    size_t q = target.find('?');
    if (q == std::string_view::npos) return internal_redirect(r, target, r.args);
    return internal_redirect(r, target.substr(0, q), target.substr(q + 1));
}

// ---- variables ----------------------------------------------------------

void var_document_root(Request& r, VarValue& v, uintptr_t) {
    const StaticConf* c = static_conf(r);
    if (!c) {
        v.not_found = true;
        return;
    }
    v.s = eval_base(r, c->root);
    v.valid = true;
}

void var_realpath_root(Request& r, VarValue& v, uintptr_t) {
    const StaticConf* c = static_conf(r);
    if (!c) {
        v.not_found = true;
        return;
    }
    std::string_view base = arena_concat(r.arena(), eval_base(r, c->root));
    char buf[PATH_MAX];
    if (::realpath(base.data(), buf) == nullptr) {
        log_for_request(r, log::Level::Crit, errno, "realpath() " + quoted(base) + " failed");
        v.not_found = true;
        return;
    }
    v.s = r.arena().dup(buf);
    v.valid = true;
}

void var_request_filename(Request& r, VarValue& v, uintptr_t) {
    std::string_view p = map_uri_to_path(r, r.uri);
    if (p.empty()) {
        v.not_found = true;
        return;
    }
    v.s = p;
    v.valid = true;
}

// ---- configuration -------------------------------------------------------

using conf::Ctx;
using conf::Node;

Status set_root(Ctx& cx, const Node& n, StaticConf& c) {
    bool alias = n.name == "alias";
    if (c.root) {
        bool was_alias = c.root->kind != RootKind::Root;
        if (was_alias == alias) return cx.duplicate(n);
        std::string earlier = was_alias ? "alias" : "root";
        return cx.error(n, "\"" + n.name + "\" directive is duplicate, \"" + earlier +
                               "\" directive was specified earlier");
    }
    std::string_view text = n.args[0].text;
    if (text.find("$document_root") != std::string_view::npos ||
        text.find("$realpath_root") != std::string_view::npos)
        return cx.error(n, "the $document_root and $realpath_root variables cannot be used in the \"" +
                               n.name + "\" directive");
    const auto* lc = cx.conf<LocConf>(http_core_module, conf::Level::Loc);
    if (alias && lc && lc->match == LocMatch::Named)
        return cx.error(n, "the \"alias\" directive cannot be used inside the named location");

    std::string path(text);
    // "root /data/" + "/x" would read "/data//x": same file, uglier logs.
    if (!alias && path.size() > 1 && path.back() == '/') path.pop_back();
    if (!path.empty() && path[0] != '/' && path[0] != '$') path = cx.full_path(path);
    auto cv = ComplexValue::compile(cx, n, path);
    if (!cv) return cv.error();

    auto* d = cx.arena().make<DocRoot>();
    d->kind = RootKind::Root;
    if (alias) {
        bool regex = lc && (lc->match == LocMatch::Regex || lc->match == LocMatch::RegexCaseless);
        d->kind = regex ? RootKind::RegexAlias : RootKind::Alias;
        d->alias_len = lc ? lc->name.size() : 0;
    }
    d->path = std::move(*cv);
    if (!d->path.literal()) d->prefix = cx.prefix();
    c.root = d;
    return {};
}

// "types { text/html html htm; ... }": each line is a type and its
// extensions, not a directive, so the block is read here, not walked.
Status set_types(Ctx& cx, const Node& n, StaticConf& c) {
    // A second block at the same level adds to the first, as in nginx.
    if (!c.types) c.types = cx.arena().make<MimeTypes>();
    for (const Node& line : n.children) {
        if (line.block) return cx.error(line, "unexpected \"{\"");
        for (const conf::Arg& ext : line.args) {
            if (auto old = c.types->add(ext.text, line.name))
                GH_LOG(Warn,
                       "duplicate extension \"%s\", content type: \"%s\", "
                       "previous content type: \"%s\" in %s",
                       ext.text.c_str(), line.name.c_str(), old->c_str(), line.where().c_str());
        }
    }
    return {};
}

Status set_if_modified_since(Ctx& cx, const Node& n, StaticConf& c) {
    if (c.if_modified_since) return cx.duplicate(n);
    std::string_view v = n.args[0].text;
    if (v == "off") c.if_modified_since = IfModifiedSince::Off;
    else if (v == "exact") c.if_modified_since = IfModifiedSince::Exact;
    else if (v == "before") c.if_modified_since = IfModifiedSince::Before;
    else
        return cx.error(n, "invalid value \"" + std::string(v) +
                               "\" in \"if_modified_since\" directive, "
                               "it must be \"off\", \"exact\" or \"before\"");
    return {};
}

Status set_try_files(Ctx& cx, const Node& n, StaticConf& c) {
    if (c.try_files) return cx.duplicate(n);
    auto* tf = cx.arena().make<TryFiles>();
    for (size_t i = 0; i + 1 < n.args.size(); ++i) {
        auto cv = ComplexValue::compile(cx, n, n.args[i].text);
        if (!cv) return cv.error();
        tf->files.push_back(std::move(*cv));
    }
    const std::string& last = n.args.back().text;
    if (!last.empty() && last[0] == '=') {
        auto code = conf::parse_number(std::string_view(last).substr(1), 999);
        if (!code || *code < 100) return cx.error(n, "invalid code \"" + last + "\"");
        tf->code = static_cast<int>(*code);
    } else {
        auto cv = ComplexValue::compile(cx, n, last);
        if (!cv) return cv.error();
        tf->fallback = std::move(*cv);
    }
    c.try_files = tf;
    return {};
}

void merge(const StaticConf& up, StaticConf& c) {
    if (!c.root) c.root = up.root;
    if (!c.types) c.types = up.types;
    conf::inherit(c.default_type, up.default_type, "text/plain");
    conf::inherit(c.sendfile, up.sendfile, false);
    conf::inherit(c.etag, up.etag, true);
    conf::inherit(c.if_modified_since, up.if_modified_since, IfModifiedSince::Exact);
    conf::inherit(c.max_ranges, up.max_ranges);
    conf::inherit(c.read_ahead, up.read_ahead, uint64_t{0});
    conf::inherit(c.types_hash_max_size, up.types_hash_max_size, 1024);
    conf::inherit(c.types_hash_bucket_size, up.types_hash_bucket_size, 64);
}

// nginx's file I/O tunings: aio, directio and the open_file_cache
// family. Files here are sent with sendfile() or read in
// output_buffers-sized pieces, and opened per request, so none of them would
// change what a client gets: each is checked as nginx checks it, so that
// a configuration written for nginx loads, and then has no effect. So is
// send_lowat, which nginx ignores on Linux too (SO_SNDLOWAT cannot be set
// there).
Status check_io_hint(Ctx& cx, const Node& n) {
    const std::string& d = n.name;
    const std::string& a = n.args[0].text;
    auto bad = [&](const std::string& v) { return cx.error(n, "invalid value \"" + v + "\""); };
    if (d == "aio") {
        if (a != "on" && a != "off" && a != "threads" && !a.starts_with("threads=")) return bad(a);
    } else if (d == "aio_write" || d == "open_file_cache_errors" || d == "open_file_cache_events") {
        if (!conf::parse_flag(a)) return bad(a);
    } else if (d == "directio") {
        if (a != "off" && !conf::parse_size(a)) return bad(a);
    } else if (d == "directio_alignment" || d == "send_lowat") {
        if (!conf::parse_size(a)) return bad(a);
    } else if (d == "open_file_cache") {
        if (a == "off") return n.args.size() == 1 ? Status{} : bad(n.args[1].text);
        for (const conf::Arg& x : n.args) {
            const std::string& t = x.text;
            if (t.starts_with("max=")) {
                if (!conf::parse_number(std::string_view(t).substr(4))) return bad(t);
            } else if (t.starts_with("inactive=")) {
                if (!conf::parse_duration(std::string_view(t).substr(9))) return bad(t);
            } else {
                return bad(t);
            }
        }
        if (!a.starts_with("max=")) return cx.error(n, "\"open_file_cache\" must have the \"max\" parameter");
    } else if (d == "open_file_cache_valid") {
        if (!conf::parse_duration(a)) return bad(a);
    } else if (d == "open_file_cache_min_uses") {
        if (!conf::parse_number(a)) return bad(a);
    }
    return {};
}

Status postconfiguration(Ctx& cx) {
    auto* mc = cx.conf<StaticMainConf>(static_module, conf::Level::Main);
    if (mc) mc->default_root = cx.full_path("html");
    return {};
}

constexpr conf::Directive kDirectives[] = {
    {"root", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::custom<set_root>()},
    {"alias", conf::kLocation, conf::Take1, conf::custom<set_root>()},
    {"types", conf::kHttpSrvLoc, conf::Block, conf::custom<set_types>()},
    {"default_type", conf::kHttpSrvLoc, conf::Take1, conf::string<&StaticConf::default_type>()},
    {"sendfile", conf::kHttpSrvLoc | conf::kIf, conf::Take1, conf::flag<&StaticConf::sendfile>()},
    {"etag", conf::kHttpSrvLoc, conf::Take1, conf::flag<&StaticConf::etag>()},
    {"if_modified_since", conf::kHttpSrvLoc, conf::Take1, conf::custom<set_if_modified_since>()},
    {"max_ranges", conf::kHttpSrvLoc, conf::Take1, conf::number<&StaticConf::max_ranges>()},
    {"types_hash_max_size", conf::kHttpSrvLoc, conf::Take1, conf::size<&StaticConf::types_hash_max_size>()},
    {"types_hash_bucket_size", conf::kHttpSrvLoc, conf::Take1,
     conf::size<&StaticConf::types_hash_bucket_size>()},
    {"try_files", conf::kServer | conf::kLocation, conf::Take2More, conf::custom<set_try_files>()},
    {"aio", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"aio_write", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"directio", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"directio_alignment", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"open_file_cache", conf::kHttpSrvLoc, conf::Take12, conf::custom<check_io_hint>()},
    {"open_file_cache_valid", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"open_file_cache_min_uses", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"open_file_cache_errors", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"open_file_cache_events", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"send_lowat", conf::kHttpSrvLoc, conf::Take1, conf::custom<check_io_hint>()},
    {"read_ahead", conf::kHttpSrvLoc, conf::Take1, conf::size<&StaticConf::read_ahead>()},
};

bool try_files_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return static_cast<const StaticConf*>(loc[static_module.index])->try_files != nullptr;
}

constexpr PhaseHandler kPhases[] = {
    {Phase::Precontent, run_try_files, try_files_wanted},
    {Phase::Content, serve_file},
};

constexpr VariableDef kVariables[] = {
    {"document_root", var_document_root, 0, kVarNoCache},
    {"realpath_root", var_realpath_root, 0, kVarNoCache},
    {"request_filename", var_request_filename, 0, kVarNoCache},
};

constexpr ModuleHooks kHooks{.phases = kPhases, .variables = kVariables};

}  // namespace

extern const conf::Module static_module{
    .name = "static",
    .directives = kDirectives,
    .main = conf::level<StaticMainConf>(),
    .loc = conf::level<StaticConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
};

}  // namespace gatehouse::http
