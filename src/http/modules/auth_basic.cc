// auth_basic_module: "auth_basic" and "auth_basic_user_file" [nginx
// ngx_http_auth_basic_module].
//
// Access phase, after allow/deny. A request without "Authorization:
// Basic" credentials, with a user the file does not have, or with a
// wrong password, is denied 401 with "WWW-Authenticate: Basic
// realm=...". The verdict goes through access_granted()/access_denied()
// (phases.h), so that "satisfy any" lets allow/deny grant instead.
//
// The user file is read for each request, as nginx does: a changed file
// counts at once, without a reload; only the line of the user is kept,
// whatever the file's size (see HtpasswdScanner). Its name may hold
// variables; a relative name is under the configuration's directory.
// A file that does not exist answers 403, one that cannot be read 500
// (nginx's statuses and log lines).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "core/log.h"
#include "http/basic_credentials.h"
#include "http/core_module.h"
#include "http/htpasswd.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module auth_basic_module;

namespace {

struct AuthBasicConf {
    // "auth_basic": the realm, null for "off". Owner: the generation arena.
    const ComplexValue* realm = nullptr;
    bool realm_set = false;
    // "auth_basic_user_file". Owner: the generation arena.
    const ComplexValue* user_file = nullptr;
    std::string conf_dir;  // a relative file name is under it (with '/')
};

// The file is read through this much at a time, on the stack.
constexpr size_t kReadChunk = 4096;

// RFC 9110 11.6.1 wants the realm as a quoted-string: '"' and '\' in it
// get a backslash, so that the field stays well formed whatever the
// configuration says. (nginx 1.22 sends them as they are.)
std::string_view challenge_value(Request& r, std::string_view realm) {
    std::pmr::string v(r.mem());
    v.reserve(realm.size() + 16);
    v.append("Basic realm=\"");
    for (char c : realm) {
        if (c == '"' || c == '\\') v.push_back('\\');
        v.push_back(c);
    }
    v.push_back('"');
    return r.arena().dup(v);
}

Next challenge(Request& r, std::string_view realm) {
    r.out.remove("WWW-Authenticate");
    r.out.headers.push_back({"WWW-Authenticate", challenge_value(r, realm)});
    return access_denied(r, 401);
}

// The user file's name for r, NUL-terminated in r's arena.
std::string_view file_name(Request& r, const AuthBasicConf& c) {
    std::string_view f = c.user_file->eval(r);
    std::string_view dir = f.empty() || f[0] != '/' ? std::string_view(c.conf_dir) : std::string_view();
    char* p = static_cast<char*>(r.arena().alloc(dir.size() + f.size() + 1, 1));
    dir.copy(p, dir.size());
    f.copy(p + dir.size(), f.size());
    p[dir.size() + f.size()] = '\0';
    return {p, dir.size() + f.size()};
}

Next run_auth_basic(Request& r) {
    const AuthBasicConf& c = r.loc_conf<AuthBasicConf>(auth_basic_module);
    if (!c.realm || !c.user_file) return Next::Decline;
    std::string_view realm = c.realm->eval(r);
    // A realm that evaluates to "off" turns the check off [nginx].
    if (realm == "off") return Next::Decline;

    std::optional<BasicCredentials> cred;
    if (const HeaderField* h = r.headers.find("authorization")) {
        char* buf = static_cast<char*>(r.arena().alloc(basic_credentials_buffer(h->value) + 1, 1));
        cred = parse_basic_credentials(h->value, buf);
    }
    if (!cred) {
        // A browser's first request: info, as nginx, not an error.
        GH_LOG(Info, "no user/password was provided for basic authentication");
        return challenge(r, realm);
    }

    std::string_view path = file_name(r, c);
    int fd = ::open(path.data(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT) {
            GH_LOG_ERRNO(Error, err, "open() \"%s\" failed", path.data());
            return access_denied(r, 403);
        }
        GH_LOG_ERRNO(Crit, err, "open() \"%s\" failed", path.data());
        return access_denied(r, 500);
    }
    r.add_fd(fd);

    HtpasswdScanner scan(cred->user);
    char chunk[kReadChunk];
    off_t offset = 0;
    bool found = false;
    for (;;) {
        ssize_t n = ::pread(fd, chunk, sizeof chunk, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            GH_LOG_ERRNO(Crit, errno, "pread() \"%s\" failed", path.data());
            return access_denied(r, 500);
        }
        if (n == 0) {
            found = scan.finish();
            break;
        }
        offset += n;
        if (scan.feed(std::string_view(chunk, static_cast<size_t>(n)))) {
            found = true;
            break;
        }
    }
    const int user_len = static_cast<int>(cred->user.size());
    if (!found) {
        GH_LOG(Error, "user \"%.*s\" was not found in \"%s\"", user_len, cred->user.data(), path.data());
        return challenge(r, realm);
    }
    if (scan.too_long() || !verify_password(cred->password, scan.password())) {
        GH_LOG(Error, "user \"%.*s\": password mismatch", user_len, cred->user.data());
        return challenge(r, realm);
    }
    return access_granted(r);
}

using conf::Ctx;
using conf::Node;

Status set_realm(Ctx& cx, const Node& n, AuthBasicConf& c) {
    if (c.realm_set) return cx.duplicate(n);
    c.realm_set = true;
    const std::string& v = n.args[0].text;
    if (v == "off") return {};
    auto cv = ComplexValue::compile(cx, n, v);
    if (!cv) return cv.error();
    c.realm = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

Status set_user_file(Ctx& cx, const Node& n, AuthBasicConf& c) {
    if (c.user_file) return cx.duplicate(n);
    auto cv = ComplexValue::compile(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    c.user_file = cx.arena().make<ComplexValue>(std::move(*cv));
    c.conf_dir = cx.conf_dir();
    return {};
}

void merge(const AuthBasicConf& up, AuthBasicConf& c) {
    if (!c.realm_set) {
        c.realm = up.realm;
        c.realm_set = up.realm_set;
    }
    if (!c.user_file) {
        c.user_file = up.user_file;
        c.conf_dir = up.conf_dir;
    }
}

constexpr uint32_t kContexts = conf::kHttpSrvLoc | conf::kLimitExcept;

constexpr conf::Directive kDirectives[] = {
    {"auth_basic", kContexts, conf::Take1, conf::custom<set_realm>()},
    {"auth_basic_user_file", kContexts, conf::Take1, conf::custom<set_user_file>()},
};

bool auth_basic_wanted(conf::ConfArray, conf::ConfArray, conf::ConfArray loc) {
    const auto& c = *static_cast<const AuthBasicConf*>(loc[auth_basic_module.index]);
    return c.realm && c.user_file;
}

constexpr PhaseHandler kPhases[] = {{Phase::Access, run_auth_basic, auth_basic_wanted}};

constexpr ModuleHooks kHooks{.phases = kPhases};

}  // namespace

extern const conf::Module auth_basic_module{
    .name = "auth_basic",
    .directives = kDirectives,
    .loc = conf::level<AuthBasicConf, merge>(),
    .http = &kHooks,
};

}  // namespace gatehouse::http
