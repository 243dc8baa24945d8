#include "http/file_access.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "http/core_module.h"
#include "http/request.h"

namespace gatehouse::http {

namespace {

// A descriptor of the walk, closed when replaced or at the end.
class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

int fail(int err) {
    errno = err;
    return -1;
}

// The checked walk of `rest` (relative, NUL-terminated) from directory
// `dir`: each component looked at without following it; a link refused
// (Refuse) or followed when its target has its owner (RefuseIfNotOwner).
// The result is opened with `flags`.
int walk(Fd& dir, std::string_view rest, int flags, Symlinks mode) {
    const bool want_dir = !rest.empty() && rest.back() == '/';
    std::string comp;
    size_t pos = 0;
    for (;;) {
        while (pos < rest.size() && rest[pos] == '/') ++pos;
        if (pos == rest.size()) break;
        size_t end = rest.find('/', pos);
        if (end == std::string_view::npos) end = rest.size();
        comp.assign(rest.substr(pos, end - pos));
        pos = end;
        size_t next = pos;
        while (next < rest.size() && rest[next] == '/') ++next;
        // The last component of a path without a trailing slash is the
        // file itself; every other one must be a directory.
        const bool last = next == rest.size() && !want_dir;
        struct stat link;
        if (::fstatat(dir.get(), comp.c_str(), &link, AT_SYMLINK_NOFOLLOW) != 0) return -1;
        if (S_ISLNK(link.st_mode)) {
            if (mode == Symlinks::Refuse) return fail(ELOOP);
            // What the link points to, opened (the link followed), must
            // have the link's owner: compared on what was opened.
            Fd target(::openat(dir.get(), comp.c_str(), (last ? flags : O_PATH | O_DIRECTORY) | O_CLOEXEC));
            if (target.get() < 0) return -1;
            struct stat st;
            if (::fstat(target.get(), &st) != 0) return -1;
            if (st.st_uid != link.st_uid) return fail(ELOOP);
            if (last) return target.release();
            dir.reset(target.release());
            continue;
        }
        if (last) {
            Fd f(::openat(dir.get(), comp.c_str(), flags | O_NOFOLLOW | O_CLOEXEC));
            if (f.get() < 0) return -1;
            // O_PATH with O_NOFOLLOW opens a link itself: one that took
            // this component's place since fstatat().
            struct stat st;
            if ((flags & O_PATH) && (::fstat(f.get(), &st) != 0 || S_ISLNK(st.st_mode))) return fail(ELOOP);
            return f.release();
        }
        Fd sub(::openat(dir.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub.get() < 0) return -1;
        dir.reset(sub.release());
    }
    // The path named a directory ("/", "x/", "x/."): the last one reached.
    return ::openat(dir.get(), ".", flags | O_CLOEXEC);
}

int resolve(const char* path, int flags, const SymlinkCheck& c) {
    std::string_view p(path);
    if (c.mode == Symlinks::Follow || p.empty() || p[0] != '/') return ::open(path, flags | O_CLOEXEC);
    // The part left unchecked: `from` when it begins the path at a
    // component boundary.
    std::string_view from = c.from;
    while (from.size() > 1 && from.back() == '/') from.remove_suffix(1);
    size_t skip = 0;
    if (from.size() > 1 && p.starts_with(from)) {
        if (p.size() == from.size()) return ::open(path, flags | O_CLOEXEC);
        if (p[from.size()] == '/') skip = from.size();
    }
    Fd base(skip ? ::open(std::string(p.substr(0, skip)).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)
                 : ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (base.get() < 0) return -1;
    std::string_view rest = p.substr(skip);
    while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    if (rest.empty()) return ::openat(base.get(), ".", flags | O_CLOEXEC);
    if (c.mode == Symlinks::Refuse) {
        // One call where the kernel has it (Linux 5.6): no component may
        // be a link. `rest` ends where `path` does, at its NUL.
        open_how how{};
        how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
        how.resolve = RESOLVE_NO_SYMLINKS;
        long fd = ::syscall(SYS_openat2, base.get(), rest.data(), &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
    }
    return walk(base, rest, flags, c.mode);
}

}  // namespace

int open_file(const char* path, int flags, const SymlinkCheck& check) { return resolve(path, flags, check); }

int stat_file(const char* path, struct stat* st, const SymlinkCheck& check) {
    if (check.mode == Symlinks::Follow) return ::stat(path, st);
    int fd = resolve(path, O_PATH, check);
    if (fd < 0) return -1;
    int rc = ::fstat(fd, st);
    int err = errno;
    ::close(fd);
    errno = err;
    return rc;
}

SymlinkCheck symlink_check(Request& r) {
    SymlinkCheck c;
    if (!r.loc_confs) return c;
    const LocConf& lc = r.loc_conf<LocConf>(http_core_module);
    c.mode = lc.disable_symlinks.value_or(Symlinks::Follow);
    if (c.mode != Symlinks::Follow && lc.symlinks_from) c.from = lc.symlinks_from->eval(r);
    return c;
}

}  // namespace gatehouse::http
