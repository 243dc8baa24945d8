#include "event/pipe.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <vector>

#include "core/assert.h"
#include "core/log.h"

namespace gatehouse::event::pipes {

namespace {

// Every pipe of the worker, taken or kept, by read end (fds are small
// numbers); `kept` lists the read ends of the empty ones on hold.
struct Table {
    std::vector<std::unique_ptr<Pipe>> by_rfd;
    std::vector<int> kept;
    size_t in_use = 0;
    size_t limit = kDefaultLimit;
    int last_errno = 0;  // pipe2()'s last failure, logged once
};

Table& table() {
    static Table t;
    return t;
}

void close_pipe(Table& t, int rfd) {
    std::unique_ptr<Pipe>& p = t.by_rfd[static_cast<size_t>(rfd)];
    ::close(p->rfd);
    ::close(p->wfd);
    p.reset();
}

}  // namespace

void set_limit(size_t n) { table().limit = n; }

Pipe* take() {
    Table& t = table();
    if (t.in_use >= t.limit) return nullptr;
    int rfd;
    if (!t.kept.empty()) {
        rfd = t.kept.back();
        t.kept.pop_back();
    } else {
        int fds[2];
        if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
            // EMFILE, ENFILE: the caller goes through memory instead.
            if (errno != t.last_errno) GH_LOG_ERRNO(Warn, errno, "pipe2() failed, splicing is off for now");
            t.last_errno = errno;
            return nullptr;
        }
        t.last_errno = 0;
        rfd = fds[0];
        const size_t i = static_cast<size_t>(rfd);
        if (t.by_rfd.size() <= i) t.by_rfd.resize(i + 1);
        t.by_rfd[i] = std::make_unique<Pipe>(Pipe{fds[0], fds[1], 0});
    }
    ++t.in_use;
    return t.by_rfd[static_cast<size_t>(rfd)].get();
}

void give(Pipe* p) {
    if (!p) return;
    Table& t = table();
    GH_ASSERT(static_cast<size_t>(p->rfd) < t.by_rfd.size() && t.by_rfd[static_cast<size_t>(p->rfd)].get() == p);
    --t.in_use;
    if (p->unsent == 0 && t.kept.size() < kMaxKept) {
        t.kept.push_back(p->rfd);
        return;
    }
    close_pipe(t, p->rfd);
}

void sent(int rfd, size_t n) {
    Table& t = table();
    const size_t i = static_cast<size_t>(rfd);
    GH_ASSERT(i < t.by_rfd.size() && t.by_rfd[i]);
    if (i >= t.by_rfd.size() || !t.by_rfd[i]) return;
    Pipe& p = *t.by_rfd[i];
    GH_ASSERT(p.unsent >= n);
    p.unsent -= std::min<uint64_t>(n, p.unsent);
}

void release_kept() {
    Table& t = table();
    for (int rfd : t.kept) close_pipe(t, rfd);
    t.kept.clear();
}

size_t in_use() { return table().in_use; }
size_t kept() { return table().kept.size(); }

}  // namespace gatehouse::event::pipes
