// random_index_module: "random_index" [nginx random_index module].
//
// Content phase, before the index module, for GET, HEAD and POST of a
// URI ending in "/" where "random_index on": a regular file of the
// directory, chosen at random, becomes the request's URI (an internal
// redirect to URI + name, arguments kept), so that its own location,
// types and filters apply. Names starting with "." are skipped, and so
// is what is not a regular file once symbolic links are followed. A
// directory with no such file is left to the index module; one that
// cannot be opened is 404, 403 or 500, logged with the call and errno.
//
// One pass over the directory with one name kept (reservoir sampling:
// the k-th candidate replaces the choice with probability 1/k), so a
// directory of any size costs the same memory.
#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "core/random.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

extern const conf::Module random_index_module;

namespace {

struct RandomIndexConf {
    std::optional<bool> enabled;  // "random_index"
};

void merge(const RandomIndexConf& up, RandomIndexConf& c) { conf::inherit(c.enabled, up.enabled, false); }

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

Next open_error(Request& r, std::string_view dir, int err) {
    const bool missing = err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG;
    log_for_request(r, missing || err == EACCES ? log::Level::Error : log::Level::Crit, err,
                    "opendir() " + quoted(dir) + " failed");
    return respond_status(r, missing ? 404 : err == EACCES ? 403 : 500);
}

// Whether the entry `de` of directory `dir` (ending in "/") is a regular
// file, following a symbolic link; `path` is scratch space.
bool is_file(Request& r, const dirent* de, std::string_view dir, std::string& path) {
    if (de->d_type == DT_REG) return true;
    if (de->d_type != DT_LNK && de->d_type != DT_UNKNOWN) return false;
    path.assign(dir);
    path += de->d_name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
        // A broken link, or an entry gone since readdir(): not a candidate.
        if (errno != ENOENT) log_for_request(r, log::Level::Crit, errno, "stat() " + quoted(path) + " failed");
        return false;
    }
    return S_ISREG(st.st_mode);
}

Next run_random_index(Request& r) {
    if (r.uri.empty() || r.uri.back() != '/' || !r.loc_confs) return Next::Decline;
    if (!*r.loc_conf<RandomIndexConf>(random_index_module).enabled) return Next::Decline;
    const Method m = r.in.method;
    if (m != Method::Get && m != Method::Head && m != Method::Post) return Next::Decline;

    std::string_view mapped = map_uri_to_path(r, r.uri);
    if (mapped.empty()) return Next::Decline;  // unmappable: the static module answers
    std::string dir(mapped);
    if (dir.back() != '/') dir += '/';  // an alias without its slash
    DIR* d = ::opendir(dir.c_str());
    if (!d) return open_error(r, dir, errno);

    char chosen[NAME_MAX + 1];
    uint64_t candidates = 0;
    std::string scratch;
    for (;;) {
        errno = 0;
        const dirent* de = ::readdir(d);
        if (!de) {
            if (errno == 0) break;
            const int err = errno;
            ::closedir(d);
            log_for_request(r, log::Level::Crit, err, "readdir() " + quoted(dir) + " failed");
            return respond_status(r, 500);
        }
        if (de->d_name[0] == '.' || !is_file(r, de, dir, scratch)) continue;
        if (random64() % ++candidates == 0) {
            const size_t n = std::strlen(de->d_name);
            std::memcpy(chosen, de->d_name, n + 1);  // d_name holds at most NAME_MAX bytes
        }
    }
    ::closedir(d);
    if (candidates == 0) return Next::Decline;  // the index module's turn

    std::pmr::string uri(r.mem());
    uri.append(r.uri);
    uri.append(chosen);
    return internal_redirect(r, r.arena().dup(uri), r.args);
}

constexpr conf::Directive kDirectives[] = {
    {"random_index", conf::kLocation, conf::Take1, conf::flag<&RandomIndexConf::enabled>()},
};

bool random_index_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    return *static_cast<const RandomIndexConf*>(loc[random_index_module.index])->enabled;
}

constexpr PhaseHandler kPhases[] = {{Phase::Content, run_random_index, random_index_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module random_index_module{
    .name = "random_index",
    .directives = kDirectives,
    .loc = conf::level<RandomIndexConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
