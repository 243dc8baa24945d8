// log_module: "log_format", "access_log", "open_log_file_cache" and the
// Log-phase handler that writes one line per request [nginx log module].
//
// A format is compiled once into literal runs and variable indices; at log
// time each variable's value is escaped as the format says ("-" when it
// has no value, nothing with escape=json) and the line is written with one
// write(2), or appended to the file's "buffer=", which goes out when the
// next line does not fit, when "flush=" time has passed since its first
// line, on reopen (USR1) and when the generation or the worker ends; with
// "gzip" each buffer goes out as one gzip member. A "syslog:" destination
// gets each line as one datagram (core/syslog.h), unbuffered as in nginx.
// A path with variables is opened for each line, unbuffered, unless
// "open_log_file_cache" keeps its descriptor (core/log_file_cache.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "objs/gh_config.h"

#include "conf/module.h"
#include "conf/registry.h"
#include "conf/syslog.h"
#include "core/log.h"
#include "core/log_file_cache.h"
#include "core/syslog.h"
#include "event/loop.h"
#include "event/timer.h"
#include "event/worker.h"
#include "http/core_module.h"
#include "http/log_escape.h"
#include "http/request.h"
#include "http/static_module.h"
#include "http/variables.h"

namespace gatehouse::http {

extern const conf::Module log_module;

namespace {

using conf::Ctx;
using conf::Duration;
using conf::Level;
using conf::Node;

// nginx's predefined format, which every configuration has.
constexpr std::string_view kCombinedName = "combined";
constexpr std::string_view kCombined =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
    "\"$http_referer\" \"$http_user_agent\"";
// The default of "access_log": ./configure --http-log-path, relative to
// the prefix unless absolute.
constexpr std::string_view kDefaultPath = GH_HTTP_LOG_PATH;

std::string errno_text(int e) { return std::to_string(e) + ": " + strerror(e); }

// ---- formats ----------------------------------------------------------------

// A run of literal text, [pos, pos + len) of LogFormat::text, or a variable.
struct LogOp {
    uint32_t pos = 0;
    uint32_t len = 0;
    int var = -1;  // variable index; -1 for literal text
};

struct LogFormat {
    LogEscape escape = LogEscape::Default;
    std::string text;             // the literal runs, back to back
    std::vector<LogOp> ops;
    size_t nvars = 0;
};

// Appends one argument of "log_format" to f. Each argument is checked on
// its own so that an error names the one that is wrong.
Status compile_arg(Ctx& cx, const Node& n, VarTable& vars, std::string_view arg, LogFormat& f) {
    size_t i = 0;
    while (i < arg.size()) {
        if (arg[i] == '$') {
            std::string_view name;
            size_t k = parse_var_ref(arg.substr(i), &name);
            if (k == 0) return cx.error(n, "invalid parameter \"" + std::string(arg) + "\"");
            f.ops.push_back(LogOp{0, 0, vars.index(name, n)});
            ++f.nvars;
            i += k;
            continue;
        }
        size_t end = arg.find('$', i);
        if (end == std::string_view::npos) end = arg.size();
        if (!f.ops.empty() && f.ops.back().var < 0) {
            f.ops.back().len += static_cast<uint32_t>(end - i);  // text of the previous argument
        } else {
            f.ops.push_back(LogOp{static_cast<uint32_t>(f.text.size()), static_cast<uint32_t>(end - i), -1});
        }
        f.text.append(arg.substr(i, end - i));
        i = end;
    }
    return {};
}

// ---- files --------------------------------------------------------------------

// One open access log path of a generation, shared by every "access_log"
// naming it, with the "buffer=" its access_log directives asked for.
// Owned by LogMainConf (unique_ptr: the timer and the registry hold its
// address). Every live LogFile of the process is in one list, for reopen.
class LogFile {
public:
    LogFile(std::string path, int fd);
    LogFile(const LogFile&) = delete;
    LogFile& operator=(const LogFile&) = delete;
    // Flushes, closes the descriptor and leaves the process list.
    ~LogFile();

    const std::string& path() const { return path_; }
    size_t buffer_size() const { return size_; }
    Duration flush_time() const { return flush_; }
    int gzip_level() const { return gzip_; }
    // `gzip`: 0, or the compression level (1-9) of what goes out.
    void set_buffer(size_t size, Duration flush, int gzip) {
        size_ = size;
        flush_ = flush;
        gzip_ = gzip;
    }

    // Room for n bytes at the end of the buffer, after writing out what
    // it holds if they would not fit; commit() them once written. Null
    // when the file is unbuffered or n exceeds the whole buffer: then the
    // buffer is empty and the caller hands the line to write().
    char* reserve(size_t n);
    void commit(size_t n);
    // One write(2) of a whole line.
    void write(std::string_view line) { write_out(line.data(), line.size()); }
    void flush();
    // `owner`: see log::open_log_file().
    void reopen(std::optional<uid_t> owner);

    static LogFile* first() { return head_; }
    LogFile* next() const { return next_; }

private:
    void write_out(const char* p, size_t n);
    void write_raw(const char* p, size_t n);
    void on_flush_timer() { flush(); }

    static inline LogFile* head_ = nullptr;  // every live LogFile of this process

    std::string path_;
    int fd_;
    size_t size_ = 0;                // "buffer="; 0: unbuffered
    Duration flush_{0};              // "flush="; 0: only when full
    int gzip_ = 0;                   // "gzip=": the level; 0: plain text
    std::unique_ptr<char[]> buf_;    // made on first use, by the process that writes
    size_t used_ = 0;
    event::Timer timer_;             // armed while the buffer holds lines and flush_ > 0
    time_t error_time_ = 0;          // last write error logged
    LogFile* prev_ = nullptr;
    LogFile* next_ = nullptr;
};

LogFile::LogFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {
    timer_.cb = event::Callback::to<&LogFile::on_flush_timer>(this);
    next_ = head_;
    if (head_) head_->prev_ = this;
    head_ = this;
}

LogFile::~LogFile() {
    flush();
    if (fd_ >= 0) ::close(fd_);
    if (prev_) prev_->next_ = next_;
    else head_ = next_;
    if (next_) next_->prev_ = prev_;
}

char* LogFile::reserve(size_t n) {
    if (size_ == 0) return nullptr;
    if (n > size_ - used_) flush();
    if (n > size_) return nullptr;
    if (!buf_) buf_ = std::make_unique<char[]>(size_);
    return buf_.get() + used_;
}

void LogFile::commit(size_t n) {
    bool was_empty = used_ == 0;
    used_ += n;
    // nginx's "flush=": no line waits longer than that once buffered.
    if (was_empty && flush_.count() > 0 && !timer_.armed()) event::worker_loop().arm(timer_, flush_);
}

void LogFile::flush() {
    // An armed timer means a worker loop exists (a dying loop disarms).
    if (timer_.armed()) event::worker_loop().cancel(timer_);
    if (used_ == 0) return;
    write_out(buf_.get(), used_);
    used_ = 0;
}

// p[0, n) as one gzip member, as "gzip -c" would write it, in `out`.
// Members written one after another read back as one text: gunzip and
// zcat take a file of them (RFC 1952 2.2).
bool gzip_member(const char* p, size_t n, int level, std::unique_ptr<unsigned char[]>& out, size_t* out_len) {
    // A window larger than the input buys nothing; smaller ones take less
    // of the memory zlib allocates for each member.
    int wbits = MAX_WBITS, memlevel = 8;
    while (wbits > 9 && n + 262 < (size_t{1} << (wbits - 1))) {
        --wbits;
        if (memlevel > 1) --memlevel;
    }
    z_stream z{};
    // +16: a gzip header and trailer around the deflate data.
    if (int rc = deflateInit2(&z, level, Z_DEFLATED, wbits + 16, memlevel, Z_DEFAULT_STRATEGY); rc != Z_OK) {
        GH_LOG(Alert, "deflateInit2() failed: %d", rc);
        return false;
    }
    size_t bound = deflateBound(&z, static_cast<uLong>(n));
    out = std::make_unique<unsigned char[]>(bound);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(p));
    z.avail_in = static_cast<uInt>(n);
    z.next_out = out.get();
    z.avail_out = static_cast<uInt>(bound);
    int rc = deflate(&z, Z_FINISH);
    *out_len = bound - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        GH_LOG(Alert, "deflate(Z_FINISH) failed: %d", rc);
        return false;
    }
    return true;
}

void LogFile::write_out(const char* p, size_t n) {
    if (gzip_ == 0) return write_raw(p, n);
    std::unique_ptr<unsigned char[]> z;
    size_t zn = 0;
    // A failure is logged; the lines are lost rather than written plain
    // into a compressed file.
    if (gzip_member(p, n, gzip_, z, &zn)) write_raw(reinterpret_cast<const char*>(z.get()), zn);
}

void LogFile::write_raw(const char* p, size_t n) {
    ssize_t w = ::write(fd_, p, n);
    if (w == static_cast<ssize_t>(n)) return;
    int err = errno;
    // A full disk fails every line: say so once a minute, as nginx does.
    time_t now = ::time(nullptr);
    if (now - error_time_ < 60) return;
    error_time_ = now;
    if (w < 0) {
        GH_LOG_ERRNO(Alert, err, "write() to \"%s\" failed", path_.c_str());
    } else {
        GH_LOG(Alert, "write() to \"%s\" was incomplete: %zd of %zu", path_.c_str(), w, n);
    }
}

void LogFile::reopen(std::optional<uid_t> owner) {
    flush();
    int fd = log::open_log_file(path_, owner);
    if (fd < 0) {
        GH_LOG_ERRNO(Alert, errno, "open() \"%s\" failed", path_.c_str());
        return;
    }
    // The new file takes the old descriptor's number: dup3() swaps it in
    // atomically, and the number stays valid for whoever holds it.
    if (::dup3(fd, fd_, O_CLOEXEC) < 0)
        GH_LOG_ERRNO(Alert, errno, "dup3() \"%s\" failed", path_.c_str());
    ::close(fd);
}

// ---- configuration --------------------------------------------------------------

struct AccessLog {
    LogFile* file = nullptr;            // owner: the generation's LogMainConf; null for syslog
    log::SyslogPeer* syslog = nullptr;  // "syslog:..."; owner: the generation's LogMainConf
    std::optional<ComplexValue> path;   // a path with variables (then file and syslog are null)
    const LogFormat* format = nullptr;  // owner: the generation's LogMainConf
    std::optional<ComplexValue> cond;   // "if=": no line when "" or "0"
    // Paths with variables: the last failed write() logged (once a minute,
    // as for files); each process has its own copy.
    mutable time_t error_time = 0;
};

// Every "open_log_file_cache" of every live generation in this process,
// emptied on reopen (USR1) so that rotated files are let go.
std::vector<log::LogFileCache*>& live_caches() {
    static std::vector<log::LogFileCache*> v;
    return v;
}

// http main level.
struct LogMainConf {
    // "log_format"; "combined" is added when first used. A map: access
    // logs point at its values.
    std::map<std::string, LogFormat, std::less<>> formats;
    std::vector<std::unique_ptr<LogFile>> files;  // each path once
    // One per "access_log syslog:..." (nginx's peers are not shared either).
    std::vector<std::unique_ptr<log::SyslogPeer>> syslog_peers;
    // One per "open_log_file_cache" other than "off".
    std::vector<std::unique_ptr<log::LogFileCache>> caches;

    LogMainConf() = default;
    LogMainConf(const LogMainConf&) = delete;
    LogMainConf& operator=(const LogMainConf&) = delete;
    ~LogMainConf() {
        for (const auto& c : caches) std::erase(live_caches(), c.get());
    }
};

// Location level (also in "if" and "limit_except" blocks).
struct LogLocConf {
    std::vector<AccessLog> logs;  // "access_log" on this level
    bool set = false;             // "access_log" written on this level
    bool off = false;             // "access_log off": cancels every log of this level
    // The enclosing level, set by merge; owner: the generation arena. A
    // level without "access_log" logs as its nearest ancestor that has
    // one, found at log time so that the order in which levels are merged
    // does not matter.
    const LogLocConf* parent = nullptr;
    bool cache_set = false;       // "open_log_file_cache" written on this level
    log::LogFileCache* cache = nullptr;  // its cache; null for "off"; owner: LogMainConf
};

void merge_loc(const LogLocConf& up, LogLocConf& c) { c.parent = &up; }

const LogLocConf& effective(const LogLocConf* c) {
    while (!c->set && c->parent) c = c->parent;
    return *c;
}

// The "open_log_file_cache" for paths with variables logged at c: its
// own or its nearest ancestor's; null: none (or "off").
log::LogFileCache* effective_cache(const LogLocConf* c) {
    while (!c->cache_set && c->parent) c = c->parent;
    return c->cache;
}

LogMainConf& main_conf(Ctx& cx) { return *cx.conf<LogMainConf>(log_module, Level::Main); }

// The format called `name`; "combined" is compiled on its first use, so a
// configuration that never logs with it never needs its variables.
Result<const LogFormat*> find_format(Ctx& cx, const Node& n, std::string_view name) {
    LogMainConf& mc = main_conf(cx);
    if (auto it = mc.formats.find(name); it != mc.formats.end()) return &it->second;
    if (name != kCombinedName) return cx.error(n, "unknown log format \"" + std::string(name) + "\"");
    LogFormat f;
    if (auto s = compile_arg(cx, n, http_main(cx.level(Level::Main))->vars, kCombined, f); !s)
        return s.error();
    return &mc.formats.emplace(std::string(kCombinedName), std::move(f)).first->second;
}

Result<LogFile*> open_file(LogMainConf& mc, std::string path) {
    for (const auto& f : mc.files)
        if (f->path() == path) return f.get();
    int fd = log::open_log_file(path);
    if (fd < 0) return make_error("open() \"" + path + "\" failed (" + errno_text(errno) + ")");
    mc.files.push_back(std::make_unique<LogFile>(std::move(path), fd));
    return mc.files.back().get();
}

// log_format name [escape=default|json|none] string ...;
Status set_log_format(Ctx& cx, const Node& n, LogMainConf& mc) {
    const std::string& name = n.args[0].text;
    // "combined" is predefined even before it is compiled.
    if (name == kCombinedName || mc.formats.count(name))
        return cx.error(n, "duplicate \"log_format\" name \"" + name + "\"");
    LogFormat f;
    size_t first = 1;
    std::string_view a1 = n.args[1].text;
    if (a1.substr(0, 7) == "escape=") {
        auto e = parse_log_escape(a1.substr(7));
        if (!e) return cx.error(n, e.message());
        f.escape = *e;
        first = 2;
    }
    VarTable& vars = http_main(cx.level(Level::Main))->vars;
    for (size_t i = first; i < n.args.size(); ++i)
        if (auto s = compile_arg(cx, n, vars, n.args[i].text, f); !s) return s;
    mc.formats.emplace(name, std::move(f));
    return {};
}

// access_log path [format [buffer=size] [flush=time] [if=condition]] | off;
Status set_access_log(Ctx& cx, const Node& n, LogLocConf& lc) {
    const std::string& path = n.args[0].text;
    lc.set = true;
    if (path == "off") {
        if (n.args.size() > 1) return cx.error(n, "invalid parameter \"" + n.args[1].text + "\"");
        lc.off = true;
        return {};
    }
    std::optional<log::SyslogTarget> syslog;
    if (conf::is_syslog(path)) {
        auto t = conf::parse_syslog(path);
        if (!t) return cx.error(n, t.message());
        syslog = std::move(*t);
    }
    auto format = find_format(cx, n, n.args.size() > 1 ? std::string_view(n.args[1].text) : kCombinedName);
    if (!format) return format.error();
    AccessLog al;
    al.format = *format;
    if (!syslog && path.find('$') != std::string::npos) {
        // Relative to the prefix, as a path without variables.
        auto cv = ComplexValue::compile(cx, n, cx.full_path(path));
        if (!cv) return cv.error();
        if (!cv->literal()) al.path = std::move(*cv);
    }
    uint64_t buffer = 0;
    std::optional<Duration> flush;
    int gzip = 0;
    for (size_t i = 2; i < n.args.size(); ++i) {
        std::string_view a = n.args[i].text;
        if (a.substr(0, 7) == "buffer=") {
            auto v = conf::parse_size(a.substr(7));
            if (!v) return cx.error(n, "invalid buffer size \"" + std::string(a.substr(7)) + "\"");
            buffer = *v;
        } else if (a.substr(0, 6) == "flush=") {
            auto v = conf::parse_duration(a.substr(6));
            if (!v || v->count() == 0)
                return cx.error(n, "invalid flush time \"" + std::string(a.substr(6)) + "\"");
            flush = *v;
        } else if (a.substr(0, 3) == "if=") {
            auto cv = ComplexValue::compile(cx, n, a.substr(3));
            if (!cv) return cv.error();
            al.cond = std::move(*cv);
        } else if (a == "gzip" || a.substr(0, 5) == "gzip=") {
            gzip = Z_BEST_SPEED;
            if (a.size() > 4) {
                auto v = conf::parse_number(a.substr(5));
                if (!v || *v < 1 || *v > 9)
                    return cx.error(n, "invalid compression level \"" + std::string(a.substr(5)) + "\"");
                gzip = static_cast<int>(*v);
            }
        } else {
            return cx.error(n, "invalid parameter \"" + std::string(a) + "\"");
        }
    }
    // Compressing line by line would hardly compress: "gzip" buffers, 64k
    // unless "buffer=" says otherwise [nginx].
    if (gzip && buffer == 0) buffer = 64 * 1024;
    if (flush && buffer == 0) return cx.error(n, "no buffer is defined for access_log \"" + path + "\"");
    if (al.path) {
        if (buffer) return cx.error(n, "buffered logs cannot have variables in name");
        lc.logs.push_back(std::move(al));
        return {};
    }
    if (syslog) {
        if (buffer) return cx.error(n, "logs to syslog cannot be buffered");
        auto& peers = main_conf(cx).syslog_peers;
        peers.push_back(std::make_unique<log::SyslogPeer>(std::move(*syslog)));
        al.syslog = peers.back().get();
        lc.logs.push_back(std::move(al));
        return {};
    }
    auto file = open_file(main_conf(cx), cx.full_path(path));
    if (!file) return file.error();
    LogFile& f = **file;
    if (buffer) {
        // One buffer per file: every access_log of the path writes through
        // it, so lines stay in order.
        if (f.buffer_size() && (f.buffer_size() != buffer || f.flush_time() != flush.value_or(Duration{0}) ||
                                f.gzip_level() != gzip))
            return cx.error(n, "access_log \"" + path + "\" already defined with conflicting parameters");
        f.set_buffer(buffer, flush.value_or(Duration{0}), gzip);
    }
    al.file = &f;
    lc.logs.push_back(std::move(al));
    return {};
}

// open_log_file_cache max=N [inactive=time] [min_uses=N] [valid=time] | off;
// Descriptors of access log paths with variables, per worker.
Status set_open_log_file_cache(Ctx& cx, const Node& n, LogLocConf& lc) {
    if (lc.cache_set) return cx.duplicate(n);
    lc.cache_set = true;
    if (n.args[0].text == "off") {
        if (n.args.size() > 1) return cx.error(n, "invalid parameter \"" + n.args[1].text + "\"");
        return {};
    }
    log::LogFileCache::Limits lim;
    bool max = false;
    auto ms = [](Duration d) { return static_cast<uint64_t>(std::chrono::milliseconds(d).count()); };
    for (const auto& arg : n.args) {
        std::string_view a = arg.text;
        bool ok = false;
        if (a.substr(0, 4) == "max=") {
            auto v = conf::parse_number(a.substr(4));
            ok = max = v && *v > 0;
            if (ok) lim.max = *v;
        } else if (a.substr(0, 9) == "min_uses=") {
            auto v = conf::parse_number(a.substr(9));
            if ((ok = v.ok())) lim.min_uses = *v;
        } else if (a.substr(0, 9) == "inactive=") {
            auto v = conf::parse_duration(a.substr(9));
            if ((ok = v.ok())) lim.inactive_ms = ms(*v);
        } else if (a.substr(0, 6) == "valid=") {
            auto v = conf::parse_duration(a.substr(6));
            if ((ok = v.ok())) lim.valid_ms = ms(*v);
        }
        if (!ok) return cx.error(n, "invalid \"open_log_file_cache\" parameter \"" + arg.text + "\"");
    }
    if (!max) return cx.error(n, "\"open_log_file_cache\" must have \"max\" parameter");
    auto& caches = main_conf(cx).caches;
    caches.push_back(std::make_unique<log::LogFileCache>(lim));
    live_caches().push_back(caches.back().get());
    lc.cache = caches.back().get();
    return {};
}

// Does any block of the http tree log with the http level's logs while
// that level has no "access_log"? Then it gets nginx's default.
bool uses_top(const LogLocConf* top, conf::ConfArray locs) {
    return &effective(static_cast<const LogLocConf*>(locs[log_module.index])) == top;
}

bool uses_top(const LogLocConf* top, const std::vector<LocConf*>& locations) {
    for (const LocConf* l : locations)
        if (uses_top(top, l->loc_confs) || uses_top(top, l->locations)) return true;
    return false;
}

Status postconfiguration(Ctx& cx) {
    HttpMainConf* hm = http_main(cx.level(Level::Main));
    if (!hm) return {};
    auto* top = static_cast<LogLocConf*>(hm->loc_confs[log_module.index]);
    if (top->set) return {};
    bool used = false;
    for (const SrvConf* s : hm->servers) {
        const auto& srv_loc = *static_cast<const LocConf*>(s->loc_confs[http_core_module.index]);
        used = used || uses_top(top, s->loc_confs) || uses_top(top, srv_loc.locations) ||
               uses_top(top, s->named);
    }
    if (!used) return {};
    // As nginx: "access_log logs/access.log combined" at the http level,
    // opened only when some block logs with it. Messages about the format
    // name it, as there is no line of the file to point at.
    static const conf::SourceFile kBuiltin{"the built-in \"combined\" log format", ""};
    Node where;
    where.name = "access_log";
    where.file = &kBuiltin;
    auto format = find_format(cx, where, kCombinedName);
    if (!format) return format.error();
    // The core checked the variables before this module compiled these.
    if (auto s = hm->vars.check(); !s) return s;
    auto file = open_file(main_conf(cx), cx.full_path(kDefaultPath));
    if (!file) return file.error();
    AccessLog al;
    al.file = *file;
    al.format = *format;
    top->logs.push_back(std::move(al));
    top->set = true;
    return {};
}

// ---- the Log phase ------------------------------------------------------------

// Is `p`, a path with variables as the request made it, one to write to?
// Not with a NUL (it would end the name early) or a ".." segment (a value
// from the request could climb out of the directory meant).
bool safe_log_path(std::string_view p) {
    if (p.find('\0') != std::string_view::npos) return false;
    for (size_t i = 0; (i = p.find("..", i)) != std::string_view::npos; i += 2) {
        bool starts = i == 0 || p[i - 1] == '/';
        bool ends = i + 2 == p.size() || p[i + 2] == '/';
        if (starts && ends) return false;
    }
    return true;
}

// One line to a path with variables. As nginx: nothing is logged while the
// request's root directory does not exist (so that a site removed with
// its logs' directory does not have them created anew).
void write_to_path(Request& r, const AccessLog& al, const LogLocConf& at, std::string_view line) {
    size_t root_len = 0;
    std::string_view mapped = map_uri_to_path(r, r.uri, &root_len);
    if (mapped.empty()) return;
    std::string root(mapped.substr(0, root_len));
    struct stat st;
    int rc = ::stat(root.c_str(), &st);
    if (rc != 0 || !S_ISDIR(st.st_mode)) {
        GH_LOG_ERRNO(Error, rc != 0 ? errno : ENOTDIR, "testing \"%s\" existence failed", root.c_str());
        return;
    }
    std::string path(al.path->eval(r));
    if (!safe_log_path(path)) {
        GH_LOG(Error, "access log path \"%s\" has a \"..\" segment or a NUL byte, not written to", path.c_str());
        return;
    }
    bool close_after = true;
    log::LogFileCache* cache = effective_cache(&at);
    int fd = cache ? cache->open(path, event::worker_loop().now(), &close_after) : log::open_log_file(path);
    if (fd < 0) {
        GH_LOG_ERRNO(Crit, errno, "open() \"%s\" failed", path.c_str());
        return;
    }
    ssize_t w = ::write(fd, line.data(), line.size());
    int err = errno;
    if (close_after) ::close(fd);
    if (w == static_cast<ssize_t>(line.size())) return;
    time_t now = ::time(nullptr);
    if (now - al.error_time < 60) return;
    al.error_time = now;
    if (w < 0) GH_LOG_ERRNO(Alert, err, "write() to \"%s\" failed", path.c_str());
    else GH_LOG(Alert, "write() to \"%s\" was incomplete: %zd of %zu", path.c_str(), w, line.size());
}

void write_entry(Request& r, const AccessLog& al, const LogLocConf& at) {
    const LogFormat& f = *al.format;
    // Each value once: a NoCache variable ($msec) must not change between
    // sizing the line and writing it.
    auto* vals = static_cast<std::string_view*>(
        r.arena().alloc(sizeof(std::string_view) * (f.nvars ? f.nvars : 1), alignof(std::string_view)));
    // nginx writes "-" for a variable without a value only in the default
    // escaping; json and none write nothing.
    const std::string_view missing = f.escape == LogEscape::Default ? "-" : std::string_view();
    size_t len = 1;  // "\n"
    size_t k = 0;
    for (const LogOp& op : f.ops) {
        if (op.var < 0) {
            len += op.len;
            continue;
        }
        const VarValue& v = get_var(r, op.var);
        std::string_view s = v.not_found ? missing : v.s;
        vals[k++] = s;
        len += escaped_size(f.escape, s);
    }
    // The line (len bytes with its newline) into `line`.
    auto print = [&](char* line) {
        char* p = line;
        size_t i = 0;
        for (const LogOp& op : f.ops) {
            if (op.var < 0) {
                std::memcpy(p, f.text.data() + op.pos, op.len);
                p += op.len;
            } else {
                p = escape_to(f.escape, vals[i++], p);
            }
        }
        *p = '\n';
    };
    if (al.syslog) {
        // One datagram, without the newline; the header goes in front.
        char* line = static_cast<char*>(r.arena().alloc(len, 1));
        print(line);
        log::SyslogPeer& peer = *al.syslog;
        if (!peer.send(peer.target().severity, {line, len - 1}) && peer.report_due(::time(nullptr)))
            GH_LOG(Alert, "%s", peer.failure().c_str());
        return;
    }
    if (al.path) {
        char* line = static_cast<char*>(r.arena().alloc(len, 1));
        print(line);
        return write_to_path(r, al, at, {line, len});
    }
    char* in_buffer = al.file->reserve(len);
    char* line = in_buffer ? in_buffer : static_cast<char*>(r.arena().alloc(len, 1));
    print(line);
    if (in_buffer) al.file->commit(len);
    else al.file->write({line, len});
}

// Logs in the location where processing ended [nginx]; a request refused
// before one was chosen logs with its server's.
Next log_request(Request& r) {
    conf::ConfArray locs = r.loc_confs;
    if (!locs && r.srv_confs) locs = static_cast<SrvConf*>(r.srv_confs[http_core_module.index])->loc_confs;
    if (!locs) return Next::Decline;
    const auto* here = static_cast<const LogLocConf*>(locs[log_module.index]);
    const LogLocConf& lc = effective(here);
    if (lc.off) return Next::Decline;
    for (const AccessLog& al : lc.logs) {
        if (al.cond) {
            std::string_view v = al.cond->eval(r);
            if (v.empty() || v == "0") continue;
        }
        write_entry(r, al, *here);
    }
    // Decline: the Log phase runs every module's handler.
    return Next::Decline;
}

constexpr PhaseHandler kLogPhases[] = {{Phase::Log, log_request}};
constexpr ModuleHooks kHooks{.phases = kLogPhases};

constexpr conf::Directive kDirectives[] = {
    {"log_format", conf::kHttp, conf::Take2More, conf::custom<set_log_format>()},
    {"access_log", conf::kHttpSrvLoc | conf::kIf | conf::kLimitExcept, conf::Take1More,
     conf::custom<set_access_log>()},
    {"open_log_file_cache", conf::kHttpSrvLoc, conf::Arity{1, 4, false},
     conf::custom<set_open_log_file_cache>()},
};

// USR1: writes what the buffers hold to the old files, then reopens every
// access log path of every live generation in this process in place: the
// descriptor number stays the same, so nothing holding it needs telling.
// A path that cannot be opened keeps writing to its old file; the error is
// logged at alert, naming the call, the path and errno. Each process
// (master, every worker) holds its own copies of the descriptors and its
// own "buffer=" memory, so each does this for itself.
void reopen_access_logs(const std::optional<conf::WorkerUser>& workers) {
    std::optional<uid_t> owner;
    if (workers) owner = workers->uid;
    for (LogFile* f = LogFile::first(); f; f = f->next()) f->reopen(owner);
    for (log::LogFileCache* c : live_caches()) c->clear();
}

// A worker that exits writes what every "buffer=" holds (nginx flushes on
// shutdown too). Destroying a generation does it as well.
void flush_access_logs() {
    for (LogFile* f = LogFile::first(); f; f = f->next()) f->flush();
}

}  // namespace

extern const conf::Module log_module{
    .name = "log",
    .directives = kDirectives,
    .main = conf::level<LogMainConf>(),
    .loc = conf::level<LogLocConf, merge_loc>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .exit_worker = flush_access_logs,
    .reopen_logs = reopen_access_logs,
};

}  // namespace gatehouse::http
