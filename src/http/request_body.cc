// The request body for handlers (body.h): streaming through the Stream,
// reading whole into memory or a temp file, and the temp files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "conf/module.h"
#include "core/log.h"
#include "event/worker.h"
#include "http/body.h"
#include "http/core_module.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/request.h"

namespace gatehouse::http {

namespace {

// A streamed body passes through here to its reader; a copy is kept while
// it fits client_body_buffer_size (nginx has the body in its buffer then).
bool copying_sink(Request& r, Chain& piece) {
    RequestBody& b = *r.body_kept;
    if (!b.too_big) {
        const auto& lc = r.loc_conf<LocConf>(http_core_module);
        const uint64_t limit = *lc.client_body_buffer_size;
        for (const Buf& x : piece) {
            if (x.empty()) continue;
            GH_CHECK(!x.pipe);  // pipes only for a body too big to keep
            std::string_view d = x.view();
            if (b.mem_len + d.size() > limit) {
                b.too_big = true;
                b.mem = SlabRef();
                b.mem_len = 0;
                break;
            }
            if (!b.mem) {
                size_t cap = r.content_length ? static_cast<size_t>(*r.content_length) : static_cast<size_t>(limit);
                b.mem = SlabRef::adopt(Slab::make(std::max<size_t>(cap, 1)));
            }
            std::memcpy(b.mem.get()->data() + b.mem_len, d.data(), d.size());
            b.mem_len += d.size();
        }
    }
    b.size += piece.bytes();
    if (piece.last() && !b.too_big) {
        b.complete = true;
        if (b.mem_len > 0) b.bufs.push(Buf::in_slab(b.mem, b.mem_len));
        // A reader that wanted it whole after the streaming one left
        // (read_whole_body) is told from the loop.
        if (b.done) event::worker_loop().post(b.ev);
    }
    return b.streamed_to(r, piece);
}

// The streaming reader left (an internal redirect): the rest of the body
// is still read, for the copy, and not handed on.
bool drop_sink(Request&, Chain&) { return true; }

}  // namespace

bool read_body(Request& r, BodySink sink, bool takes_pipes) {
    // Read whole already: the stream says no (or hands an empty body over).
    if (r.body_kept) return r.stream().read_body(r, sink);
    auto* b = r.arena().make<RequestBody>(r.mem());
    b->streamed_to = sink;
    const auto& lc = r.loc_conf<LocConf>(http_core_module);
    b->too_big = r.content_length && *r.content_length > *lc.client_body_buffer_size;
    b->sink_takes_pipes = takes_pipes && b->too_big;
    r.body_kept = b;
    if (!r.stream().read_body(r, copying_sink)) {
        r.body_kept = nullptr;
        return false;
    }
    return true;
}

void resume_body(Request& r) { r.stream().resume_body(); }

// ---- temp files ---------------------------------------------------------------------------

namespace {

Error sys_error(const char* call, const std::string& path, int err) {
    return make_error(std::string(call) + " \"" + path + "\" failed (" + std::to_string(err) + ": " + strerror(err) +
                      ")");
}

// A new file with a name of its own in `dir`; errno when none could be
// made (ENOENT: no such directory).
int open_named(const std::string& dir, std::string* path) {
    static uint32_t seq = 0;
    for (int i = 0; i < 100; ++i) {
        *path = dir + "/" + std::to_string(getpid()) + "." + std::to_string(++seq);
        int fd = ::open(path->c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) return fd;
        if (errno != EEXIST) return -errno;
    }
    return -EEXIST;
}

}  // namespace

Result<int> open_temp_file(const std::string& dir, std::string* name) {
    const bool keep = name != nullptr;
    for (int attempt = 0; attempt < 2; ++attempt) {
        int err = 0;
        if (!keep) {
            int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
            if (fd >= 0) return fd;
            err = errno;
        }
        // No O_TMPFILE here (or a file to keep): a unique name, unlinked
        // at once unless kept.
        if (keep || err == EOPNOTSUPP || err == EISDIR || err == EINVAL) {
            std::string path;
            int fd = open_named(dir, &path);
            if (fd >= 0) {
                if (keep)
                    *name = std::move(path);
                else
                    ::unlink(path.c_str());
                return fd;
            }
            err = -fd;
            if (err != ENOENT) return sys_error("open()", path, err);
        }
        if (err != ENOENT || attempt > 0) return sys_error("open()", dir, err);
        // The directory is made on first use.
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir()", dir, errno);
    }
    return make_error("open() \"" + dir + "\" failed");
}

Status make_temp_dir(const std::string& dir, const std::optional<conf::WorkerUser>& owner) {
    auto failed = [&](const char* call) {
        int e = errno;
        return make_error(std::string(call) + " \"" + dir + "\" failed (" + std::to_string(e) + ": " + strerror(e) +
                          ")");
    };
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return failed("mkdir()");
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return failed("stat()");
    if (!S_ISDIR(st.st_mode)) return make_error("temp path \"" + dir + "\" is not a directory");
    // Someone else's directory is left as it is when we are not root: it
    // may well be writable for us through its group.
    const uid_t uid = owner ? owner->uid : ::geteuid();
    if (st.st_uid != uid) {
        if (!owner) return {};
        if (::chown(dir.c_str(), uid, static_cast<gid_t>(-1)) != 0) return failed("chown()");
    }
    if ((st.st_mode & S_IRWXU) != S_IRWXU && ::chmod(dir.c_str(), (st.st_mode & 07777) | S_IRWXU) != 0)
        return failed("chmod()");
    return {};
}

std::string temp_dir(Request& r, const std::optional<std::string>& path, std::string_view def) {
    if (path) return *path;
    const HttpMainConf* m = http_main(r.main_confs);
    return (m ? m->prefix : std::string()) + std::string(def);
}

RequestBody::~RequestBody() {
    if (remove_path && !path.empty()) ::unlink(path.data());
}

// ---- reading a body whole -----------------------------------------------------------------

namespace {

// Writes all of `data` at `off`; the errno on failure.
int pwrite_all(int fd, const char* data, size_t n, uint64_t off) {
    while (n > 0) {
        ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        data += w;
        n -= static_cast<size_t>(w);
        off += static_cast<uint64_t>(w);
    }
    return 0;
}

// From the loop, never under the stream's frame: the reader is told, or
// the client gets the 500 of a failed temp file.
void body_ready(Request* rp) {
    Request& r = *rp;
    log::Scope scope(&r.log_ctx);
    RequestBody& b = *r.body_kept;
    if (r.stream().closed()) return;
    if (b.failed) {
        continue_request(r, respond_status(r, 500));
        return;
    }
    if (b.done) b.done(r);
}

Status to_file(Request& r, RequestBody& b) {
    const auto& lc = r.loc_conf<LocConf>(http_core_module);
    // A file gets a name when someone may look for it: "client_body_in_file_only
    // on" keeps it for debugging, a $request_body_file in the config shows
    // it; else it has none from the start and nothing can leak.
    const HttpMainConf* m = http_main(r.main_confs);
    const bool named = *lc.client_body_in_file_only == 1 || (m && m->vars.find("request_body_file") >= 0);
    std::string name;
    auto fd = open_temp_file(temp_dir(r, lc.client_body_temp_path, kClientBodyTempDir), named ? &name : nullptr);
    if (!fd) return fd.error();
    b.fd = *fd;
    r.add_fd(b.fd);
    if (named) {
        char* p = static_cast<char*>(r.arena().alloc(name.size() + 1, 1));
        std::memcpy(p, name.c_str(), name.size() + 1);
        b.path = {p, name.size()};
        b.remove_path = *lc.client_body_in_file_only != 1;
    }
    if (b.mem_len > 0) {
        if (int err = pwrite_all(b.fd, b.mem.get()->data(), b.mem_len, 0))
            return make_error("pwrite() to a client body temporary file failed (" + std::to_string(err) + ": " +
                              strerror(err) + ")");
    }
    b.mem = SlabRef();
    b.mem_len = 0;
    return {};
}

// Memory up to client_body_buffer_size, then all of it in a temp file, as
// nginx keeps request bodies.
bool whole_sink(Request& r, Chain& piece) {
    RequestBody& b = *r.body_kept;
    if (b.failed) return false;
    const auto& lc = r.loc_conf<LocConf>(http_core_module);
    const uint64_t limit = *lc.client_body_buffer_size;
    // "client_body_in_file_only": always a file, even for a small body.
    const bool file_only = *lc.client_body_in_file_only != 0;
    for (Buf& x : piece) {
        if (x.empty()) continue;
        std::string_view d = x.view();
        bool fits = !file_only && b.fd < 0 && b.mem_len + d.size() <= limit &&
                    (!r.content_length || *r.content_length <= limit);
        if (fits) {
            if (!b.mem) {
                size_t cap = r.content_length ? static_cast<size_t>(*r.content_length) : static_cast<size_t>(limit);
                b.mem = SlabRef::adopt(Slab::make(std::max<size_t>(cap, 1)));
            }
            std::memcpy(b.mem.get()->data() + b.mem_len, d.data(), d.size());
            b.mem_len += d.size();
        } else {
            Status s = b.fd < 0 ? to_file(r, b) : Status{};
            int err = s ? pwrite_all(b.fd, d.data(), d.size(), b.size) : 0;
            if (!s || err) {
                std::string msg = s ? "pwrite() to a client body temporary file failed (" + std::to_string(err) +
                                          ": " + strerror(err) + ")"
                                    : s.message();
                GH_LOG(Crit, "%s", msg.c_str());
                b.failed = true;
                event::worker_loop().post(b.ev);
                return false;
            }
        }
        b.size += d.size();
    }
    if (piece.last()) {
        if (file_only && b.fd < 0) {
            // A body that came empty (an HTTP/2 stream whose only DATA
            // frame was empty, a chunked body of one last chunk) is still
            // a body: its file exists, empty, as nginx makes it.
            Status s = to_file(r, b);
            if (!s) {
                GH_LOG(Crit, "%s", s.message().c_str());
                b.failed = true;
                event::worker_loop().post(b.ev);
                return false;
            }
        }
        b.complete = true;
        if (b.fd >= 0 && b.size > 0) {
            b.bufs.push(Buf::file(b.fd, 0, static_cast<off_t>(b.size)));
        } else if (b.mem_len > 0) {
            b.bufs.push(Buf::in_slab(b.mem, b.mem_len));
        }
        event::worker_loop().post(b.ev);
        return false;
    }
    return true;
}

}  // namespace

bool read_whole_body(Request& r, void (*done)(Request& r)) {
    if (r.body_kept && r.body_kept->streamed_to && !r.body_kept->complete) {
        // Still streaming to a reader that is gone: an error_page (or
        // X-Accel-Redirect) after a proxy_pass with
        // "proxy_request_buffering off" answered before the body ended.
        // The rest is read and dropped [nginx discards it], so the client
        // is not held, and the reader is not called any more.
        RequestBody& b = *r.body_kept;
        b.streamed_to = drop_sink;
        b.sink_takes_pipes = false;  // read into memory and dropped
        resume_body(r);
        // Past client_body_buffer_size nothing was kept of what went: the
        // body cannot be had whole.
        if (b.too_big) return false;
        // Else the copy holds all that went; it is whole when the last
        // piece comes (copying_sink tells `done`).
        b.ev.cb = event::Callback::to<&body_ready>(&r);
        b.done = done;
        return true;
    }
    if (r.body_kept) {
        r.body_kept->done = done;
        if (r.body_kept->complete) done(r);
        // Else the first reader's read goes on and tells `done`.
        return true;
    }
    auto* b = r.arena().make<RequestBody>(r.mem());
    b->ev.cb = event::Callback::to<&body_ready>(&r);
    b->done = done;
    r.body_kept = b;
    if (!r.has_body) {
        // Nothing to read, but the stream has its part: "100 Continue" for
        // a client that awaits it even before an empty body.
        read_body(r, [](Request&, Chain&) { return true; });
        if (r.stream().closed()) return true;
        b->complete = true;
        done(r);
        return true;
    }
    if (!read_body(r, whole_sink)) {
        r.body_kept = nullptr;
        return false;
    }
    return true;
}

}  // namespace gatehouse::http
