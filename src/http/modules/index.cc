// index_module: "index file ...;" [nginx index module].
//
// Content phase, for URIs ending in "/": the first index file that exists
// in the directory the URI maps to wins, and the request is redirected
// internally to URI + name (so that its own location, types and filters
// apply). The last name may be an absolute URI ("/index.php"): it is
// redirected to without a check. When no file exists the handler declines
// and the static module answers 403; when the directory itself does not
// exist the answer is 404, logged as nginx does:
//     "/srv/www/nodir/index.html" is not found (2: No such file or directory)
#include <sys/stat.h>

#include <cerrno>
#include <string>
#include <vector>

#include "http/file_access.h"
#include "http/core_module.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module index_module;

namespace {

struct IndexConf {
    // "index"; every directive at one level adds to the list. Empty after
    // merging: "index.html". Owner of the values: the generation arena.
    std::vector<const ComplexValue*> names;
};

constexpr std::string_view kDefaultIndex = "index.html";

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string_view concat(Request& r, std::string_view a, std::string_view b) {
    char* p = static_cast<char*>(r.arena().alloc(a.size() + b.size() + 1, 1));
    a.copy(p, a.size());
    b.copy(p + a.size(), b.size());
    p[a.size() + b.size()] = '\0';
    return {p, a.size() + b.size()};
}

Next index_error(Request& r, std::string_view path, int err) {
    if (err == EACCES || err == ELOOP || err == EMLINK) {
        log_for_request(r, log::Level::Error, err, quoted(path) + " is forbidden");
        return respond_status(r, 403);
    }
    if (r.loc_conf<LocConf>(http_core_module).log_not_found.value_or(true))
        log_for_request(r, log::Level::Error, err, quoted(path) + " is not found");
    return respond_status(r, 404);
}

// The directory exists: Proceed means yes (the caller goes on); anything
// else is the response.
Next test_dir(Request& r, std::string_view dir, std::string_view index_path) {
    struct stat st;
    if (stat_file(dir.data(), &st, symlink_check(r)) != 0) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG || err == EACCES || err == ELOOP || err == EMLINK)
            return index_error(r, index_path, err);
        log_for_request(r, log::Level::Crit, err, "stat() " + quoted(dir) + " failed");
        return respond_status(r, 500);
    }
    if (!S_ISDIR(st.st_mode)) {
        log_for_request(r, log::Level::Alert, 0, quoted(dir) + " is not a directory");
        return respond_status(r, 500);
    }
    return Next::Proceed;
}

Next run_index(Request& r) {
    if (r.uri.empty() || r.uri.back() != '/' || !r.loc_confs) return Next::Decline;
    Method m = r.in.method;
    if (m != Method::Get && m != Method::Head && m != Method::Post) return Next::Decline;

    std::string_view dir = map_uri_to_path(r, r.uri);
    if (dir.empty()) return Next::Decline;  // unmappable: the static module answers
    // An alias without a trailing slash ("location /d/ { alias /srv/d; }")
    // maps "/d/" to "/srv/d": the names still go inside it.
    if (dir.back() != '/') dir = concat(r, dir, "/");

    const auto& names = r.loc_conf<IndexConf>(index_module).names;
    size_t count = names.empty() ? 1 : names.size();
    bool dir_tested = false;
    for (size_t i = 0; i < count; ++i) {
        std::string_view name = names.empty() ? kDefaultIndex : names[i]->eval(r);
        if (name.empty()) continue;
        if (name[0] == '/') return internal_redirect(r, name, r.args);

        std::string_view path = concat(r, dir, name);
        struct stat st;
        if (stat_file(path.data(), &st, symlink_check(r)) == 0)
            return internal_redirect(r, concat(r, r.uri, name), r.args);
        int err = errno;
        if (err == ENOTDIR || err == ENAMETOOLONG || err == EACCES || err == ELOOP || err == EMLINK)
            return index_error(r, path, err);
        if (!dir_tested) {
            if (Next n = test_dir(r, dir, path); n != Next::Proceed) return n;
            dir_tested = true;
        }
        if (err == ENOENT) continue;
        log_for_request(r, log::Level::Crit, err, "stat() " + quoted(path) + " failed");
        return respond_status(r, 500);
    }
    return Next::Decline;
}

using conf::Ctx;
using conf::Node;

Status set_index(Ctx& cx, const Node& n, IndexConf& c) {
    for (size_t i = 0; i < n.args.size(); ++i) {
        const std::string& v = n.args[i].text;
        if (v.empty()) return cx.error(n, "index \"\" in \"index\" directive is invalid");
        if (v[0] == '/' && i + 1 != n.args.size())
            return cx.error(n, "only the last index in \"index\" directive should be absolute");
        auto cv = ComplexValue::compile(cx, n, v);
        if (!cv) return cv.error();
        c.names.push_back(cx.arena().make<ComplexValue>(std::move(*cv)));
    }
    return {};
}

void merge(const IndexConf& up, IndexConf& c) {
    if (c.names.empty()) c.names = up.names;
}

constexpr conf::Directive kDirectives[] = {
    {"index", conf::kHttpSrvLoc, conf::Take1More, conf::custom<set_index>()},
};

constexpr PhaseHandler kPhases[] = {{Phase::Content, run_index}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module index_module{
    .name = "index",
    .directives = kDirectives,
    .loc = conf::level<IndexConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
