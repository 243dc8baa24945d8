#include "http/modules/proxy_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "cache/entry.h"
#include "core/log.h"
#include "core/shm.h"
#include "core/str.h"
#include "event/worker.h"
#include "http/conditional.h"
#include "http/body.h"
#include "http/core_module.h"
#include "http/modules/proxy.h"
#include "http/output.h"
#include "http/phases.h"
#include "http/request.h"
#include "http/static_module.h"

namespace gatehouse::http {

using conf::Ctx;
using conf::Node;

namespace proxy_cache {

std::string_view status_name(CacheStatus s) {
    switch (s) {
        case CacheStatus::None: return {};
        case CacheStatus::Miss: return "MISS";
        case CacheStatus::Bypass: return "BYPASS";
        case CacheStatus::Expired: return "EXPIRED";
        case CacheStatus::Stale: return "STALE";
        case CacheStatus::Updating: return "UPDATING";
        case CacheStatus::Revalidated: return "REVALIDATED";
        case CacheStatus::Hit: return "HIT";
    }
    return {};
}

namespace {

// How often a request waiting for another's fill looks at the index:
// short, as the wait is for one response; nginx looks every 500 ms.
constexpr std::chrono::milliseconds kLockPoll{20};
// What a header read takes first: most entries' heads fit.
constexpr size_t kFirstRead = 4096;
// Files up to this size are read whole (see open_entry).
constexpr size_t kWholeRead = 16384;

time_t wall_now() { return static_cast<time_t>(event::worker_loop().wall().sec); }

// proxy_cache_bypass, proxy_no_cache, proxy_cache_purge: any value that
// is neither empty nor "0" says yes.
bool any_set(Request& r, const std::vector<ComplexValue>* list) {
    if (!list) return false;
    for (const ComplexValue& v : *list) {
        std::string_view s = v.eval(r);
        if (!s.empty() && s != "0") return true;
    }
    return false;
}

void remove_files(CachePath& cp, const std::vector<cache::Hash>& hs) {
    for (const cache::Hash& h : hs) {
        std::string p = cache::entry_path(cp.path, cp.levels, h);
        if (::unlink(p.c_str()) != 0 && errno != ENOENT)
            GH_LOG_ERRNO(Crit, errno, "unlink() \"%s\" failed", p.c_str());
    }
}

// The head an entry keeps: the status line and the origin's fields, in
// order, CRLF-separated, without the hop-by-hop ones (they were the
// origin connection's; the framing is redone from the body's length when
// served).
std::string stored_head(const OriginHead& h) {
    std::string out = "HTTP/1.1 " + std::to_string(h.status);
    out += ' ';
    out += h.reason.empty() ? reason_phrase(h.status) : h.reason;
    out += "\r\n";
    for (const auto& f : h.fields) {
        if (proxy::is_hop_by_hop_response(f.name)) continue;
        out += f.name;
        out += ": ";
        out += f.value;
        out += "\r\n";
    }
    out += "\r\n";
    return out;
}

std::string_view find_field(std::span<const upstream::TryLog::Field> fields, std::string_view name) {
    for (const auto& f : fields)
        if (iequals(f.name, name)) return f.value;
    return {};
}

bool status_listed(uint16_t use_stale, int status) {
    switch (status) {
        case 500: return use_stale & kStaleHttp500;
        case 502: return use_stale & kStaleHttp502;
        case 503: return use_stale & kStaleHttp503;
        case 504: return use_stale & kStaleHttp504;
        case 403: return use_stale & kStaleHttp403;
        case 404: return use_stale & kStaleHttp404;
        case 429: return use_stale & kStaleHttp429;
        default: return false;
    }
}

uint8_t cache_ignore_bits(const ProxyConf& pc) {
    const uint16_t p = pc.ignore_headers.value_or(0);
    uint8_t out = 0;
    if (p & proxy::kIgnoreXAccelExpires) out |= kIgnoreXAccelExpires;
    if (p & proxy::kIgnoreExpires) out |= kIgnoreExpires;
    if (p & proxy::kIgnoreCacheControl) out |= kIgnoreCacheControl;
    if (p & proxy::kIgnoreSetCookie) out |= kIgnoreSetCookie;
    if (p & proxy::kIgnoreVary) out |= kIgnoreVary;
    return out;
}

// The header of the entry file `fd` of `size` bytes, read into `buf`.
Result<cache::Entry> read_header(int fd, uint64_t size, std::string& buf) {
    buf.resize(std::min<size_t>(kFirstRead, static_cast<size_t>(size)));
    ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
    if (n <= 0) return make_error("cache file is cut short");
    std::span<const char> got(buf.data(), static_cast<size_t>(n));
    auto need = cache::header_length(got);
    if (need && *need > got.size() && *need <= size) {
        buf.resize(*need);
        n = ::pread(fd, buf.data(), buf.size(), 0);
        got = std::span<const char>(buf.data(), n < 0 ? 0 : static_cast<size_t>(n));
    }
    return cache::parse_header(got, size);
}

int open_read(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
    // O_NOATIME is refused for another user's file.
    if (fd < 0 && errno == EPERM) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    return fd;
}

// Every entry of the cache whose key starts with `prefix` is removed:
// true when there was one. It reads the header of every file in the
// directory, in this worker, once per such purge.
bool purge_prefix(CachePath& cp, std::string_view prefix) {
    bool any = false;
    std::vector<std::string> dirs{cp.path};
    std::string buf;
    while (!dirs.empty()) {
        std::string d = std::move(dirs.back());
        dirs.pop_back();
        DIR* dir = ::opendir(d.c_str());
        if (!dir) continue;
        while (dirent* de = ::readdir(dir)) {
            std::string_view name = de->d_name;
            if (name == "." || name == "..") continue;
            std::string p = d + "/" + std::string(name);
            if (de->d_type == DT_DIR) {
                dirs.push_back(std::move(p));
                continue;
            }
            cache::Hash h;
            if (!cache::parse_hex(name, h)) continue;
            int fd = open_read(p);
            if (fd < 0) continue;
            struct stat st;
            Result<cache::Entry> e = make_error("");
            if (::fstat(fd, &st) == 0) e = read_header(fd, static_cast<uint64_t>(st.st_size), buf);
            ::close(fd);
            if (!e || e->key.substr(0, prefix.size()) != prefix) continue;
            if (::unlink(p.c_str()) == 0) any = true;
            cp.index->forget(h);
        }
        ::closedir(dir);
    }
    return any;
}

std::string_view request_field(const Request& r, std::string_view name) {
    for (const HeaderField& f : r.headers)
        if (iequals(f.name, name)) return f.value;
    return {};
}

// The range filter may cut the answer; it announces "Accept-Ranges:
// bytes" itself (the origin's would be a second one).
void allow_ranges(Request& r) {
    r.out.remove("Accept-Ranges");
    r.out.accept_ranges = true;
}

// What the index keeps of an entry file's meta data.
cache::Stored stored_of(const cache::EntryMeta& m, uint64_t fs_size) {
    cache::Stored s;
    s.valid_until = m.valid_until;
    s.stale_while_revalidate = m.stale_while_revalidate;
    s.stale_if_error = m.stale_if_error;
    s.status = static_cast<uint16_t>(m.status);
    s.revalidate_always = m.flags & cache::kRevalidateAlways;
    s.fs_size = fs_size;
    return s;
}

// An entry's freshness from the policy's verdict at `now`.
void set_freshness(cache::EntryMeta& m, const CacheVerdict& v, time_t now) {
    m.valid_until = v.valid_until;
    m.stored_at = now;
    m.age = v.age;
    m.stale_while_revalidate = v.stale_while_revalidate;
    m.stale_if_error = v.stale_if_error;
    m.flags = v.revalidate_always ? uint32_t{cache::kRevalidateAlways} : 0;
}

// The policy's verdict (cache_policy.h) on the origin's fields for a
// response of `status`, by the location's settings.
CacheVerdict verdict_for(int status, std::span<const upstream::TryLog::Field> origin, time_t now, uint8_t ignore,
                         const CacheLocConf& cl, bool can_revalidate, std::pmr::memory_resource* mem) {
    std::pmr::vector<CacheField> fields(mem);
    fields.reserve(origin.size());
    for (const auto& x : origin) fields.push_back({x.name, x.value});
    CacheInput in;
    in.status = status;
    in.headers = fields;
    in.now = now;
    in.ignore = ignore;
    if (cl.valid) in.valid = *cl.valid;
    in.can_revalidate = can_revalidate;
    return cache_verdict(in);
}

// The request's values of the fields a Vary value names, as one hash: the
// variant a response with that Vary was stored for (names are compared
// without case; a field the request lacks counts as empty). Values are
// taken as comma-separated lists with whitespace around the elements and
// empty elements dropped, so "foo, bar", "foo,bar" and "foo,, ,bar , "
// are one variant, as RFC 9111 (4.1) allows and nginx does; the order of
// the elements still counts.
template <typename Fields>
cache::Hash variant_of(const Fields& fields, std::string_view vary) {
    std::string text;
    size_t i = 0;
    while (i < vary.size()) {
        size_t comma = vary.find(',', i);
        if (comma == std::string_view::npos) comma = vary.size();
        std::string_view name = trim_ows(vary.substr(i, comma - i));
        i = comma + 1;
        if (name.empty()) continue;
        for (char c : name) text += static_cast<char>(ascii_lower(c));
        text += ':';
        bool first = true;
        for (const HeaderField& f : fields) {
            if (!iequals(f.name, name)) continue;
            std::string_view v = f.value;
            for (size_t j = 0; j <= v.size();) {
                size_t end = v.find(',', j);
                if (end == std::string_view::npos) end = v.size();
                std::string_view element = trim_ows(v.substr(j, end - j));
                j = end + 1;
                if (element.empty()) continue;
                if (!first) text += ',';
                text += element;
                first = false;
            }
        }
        text += '\n';
    }
    return cache::hash_key(text);
}

cache::Hash variant_of(const Request& r, std::string_view vary) { return variant_of(r.headers, vary); }

// Parses an entry's stored head: its status, reason and fields (views
// into `head`) to `out`; false when it is not a whole, valid head.
template <class Out>
bool parse_stored_head(std::string_view head, Out&& out) {
    FieldStore<32> small;
    Limits lim;
    lim.max_start_line = lim.max_header_line = lim.max_head = cache::kMaxHead;
    ResponseParser p(lim, small.span());
    if (p.parse(head).state != ParseState::Done) return false;
    const StatusHead& h = p.head();
    out(h.status, h.reason, h.headers);
    return true;
}

// ---- the memory tier's copies ----
//
// A copy in the memory tier is the entry's file, then its stored head
// already parsed, so that a hit from memory does not parse it again
// (~2,900 of the ~21,000 instructions of a 1 KiB hit, callgrind):
//
//   the file's bytes
//   per field: name offset, name length, value offset, value length
//   status, reason offset, reason length, field count, "GHPH"
//
// each number a little-endian u32, offsets from the head's first byte.
// The tier is this server's own shared memory, not a file anyone could
// have written, but what is read back is still checked against the head.
constexpr char kIndexMagic[4] = {'G', 'H', 'P', 'H'};
constexpr size_t kIndexFooter = 20;

void put_u32(std::string& out, size_t v) {
    const auto x = static_cast<uint32_t>(v);
    out.append(reinterpret_cast<const char*>(&x), 4);
}

uint32_t get_u32(const char* p) {
    uint32_t x;
    std::memcpy(&x, p, 4);
    return x;
}

// The index of a stored head (the part after the file's bytes above),
// appended to `out`; false when the head does not parse (such an entry is
// not served anyway).
bool append_head_index(std::string& out, std::string_view stored_head) {
    const char* head = stored_head.data();
    return parse_stored_head(stored_head, [&](int status, std::string_view reason,
                                              std::span<const HeaderField> fields) {
        out.reserve(out.size() + fields.size() * 16 + kIndexFooter);
        for (const HeaderField& x : fields) {
            put_u32(out, static_cast<size_t>(x.name.data() - head));
            put_u32(out, x.name.size());
            put_u32(out, static_cast<size_t>(x.value.data() - head));
            put_u32(out, x.value.size());
        }
        put_u32(out, static_cast<size_t>(status));
        put_u32(out, reason.empty() ? 0 : static_cast<size_t>(reason.data() - head));
        put_u32(out, reason.size());
        put_u32(out, fields.size());
        out.append(kIndexMagic, 4);
    });
}

// The tier's copy of the entry file `file`, or empty when its head does
// not parse.
std::string memory_copy(std::string_view file) {
    Result<cache::Entry> e = cache::parse_header(std::span<const char>(file.data(), file.size()), file.size());
    if (!e) return {};
    std::string out(file);
    if (!append_head_index(out, e->head)) return {};
    return out;
}

// Splits a copy from the tier into the file's bytes and the index; false
// when it is not one memory_copy() made.
bool split_memory_copy(std::string_view copy, std::string_view& file, std::string_view& index) {
    if (copy.size() < kIndexFooter ||
        std::memcmp(copy.data() + copy.size() - 4, kIndexMagic, 4) != 0)
        return false;
    const uint64_t count = get_u32(copy.data() + copy.size() - 8);
    const uint64_t len = count * 16 + kIndexFooter;
    if (len > copy.size()) return false;
    file = copy.substr(0, copy.size() - len);
    index = copy.substr(copy.size() - len);
    return true;
}

void put_memory(CachePath& cp, const cache::Hash& h, std::string_view file) {
    std::string copy = memory_copy(file);
    if (!copy.empty()) cp.index->put_memory(h, copy);
}

// ---- small entries kept in the worker ----
//
// A hit from the disk costs three syscalls (recv, pread, send) where a
// hit from the memory tier costs two; a pread() of a small cache file is
// ~0.4 us of kernel on the project's VM, an open + fstat + close around
// it ~2.3 us more. So each worker keeps the bytes of the small entries
// it read whole (kWholeRead) in a small table, one slot per hash, with
// their stored head already indexed (memory_copy(): the memory tier's
// format), and serves the next hits from there while
//   - the index still describes the same file (NodeInfo::file_gen: a new
//     file, a purge or an eviction changes it, in any worker), and
//   - the second the file was read in has not passed: a file removed or
//     changed behind the cache's back is served as it was at most until
//     then, as nginx's open_file_cache_valid bounds what it keeps.
// At most kKeptEntries copies of at most kWholeRead bytes (~1 MiB) a
// worker; the table is the worker's, so it goes with the worker on reload
// or exit. Copies of earlier seconds are freed on the first lookup or keep
// of each new second (one pass of 64 slots a second under load), and all
// of them when the worker goes idle (Module::idle_worker). No descriptor
// is held, so an evicted entry's disk space is back at once.
// Where the memory tier takes an object (memory_max_object) the tier
// serves it instead, and only the tier keeps it.
constexpr size_t kKeptEntries = 64;

struct KeptEntry {
    const CachePath* cp = nullptr;
    cache::Hash hash{};
    uint32_t file_gen = 0;
    time_t read_at = 0;
    std::string copy;  // memory_copy() of the file; empty: none
};

KeptEntry g_kept[kKeptEntries];

time_t g_kept_swept = 0;  // the second of the last pass

// The slot for `h`, once the copies of earlier seconds are freed.
KeptEntry& kept_slot(const cache::Hash& h, time_t now) {
    if (now != g_kept_swept) {
        g_kept_swept = now;
        for (KeptEntry& k : g_kept)
            if (!k.copy.empty() && k.read_at != now) k = KeptEntry{};
    }
    return g_kept[h.head() % kKeptEntries];
}

// The copy kept of this entry's current file, or empty.
std::string_view kept_copy(const CachePath& cp, const cache::Hash& h, const cache::NodeInfo& n, time_t now) {
    KeptEntry& k = kept_slot(h, now);
    if (k.copy.empty() || k.cp != &cp || k.hash != h) return {};
    if (!n.exists || k.file_gen != n.file_gen) {
        k = KeptEntry{};
        return {};
    }
    return k.copy;
}

// Keeps the bytes `file` of the entry whose node is `n`, read this second.
void keep_copy(const CachePath& cp, const cache::Hash& h, const cache::NodeInfo& n, time_t now,
               std::string_view file) {
    KeptEntry& k = kept_slot(h, now);
    k = KeptEntry{&cp, h, n.file_gen, now, memory_copy(file)};
}

void forget_kept_copy(const cache::Hash& h) {
    KeptEntry& k = g_kept[h.head() % kKeptEntries];
    if (k.hash == h) k = KeptEntry{};
}

void free_kept_copies() {
    for (KeptEntry& k : g_kept) k = KeptEntry{};
}

}  // namespace

// ---- a fill --------------------------------------------------------------------------------

// The body of the origin's response goes to a temp file in the cache
// directory (the same file system: the rename that makes it the entry is
// atomic).
bool Fill::begin(CachePath& cp, const cache::Hash& hash, std::string_view key, time_t now, const OriginHead& h,
                 const CacheVerdict& v, std::string_view vary, const cache::Hash& variant) {
    static uint64_t counter = 0;
    drop();
    cp_ = &cp;
    hash_ = hash;
    now_ = now;
    const auto x = cache::hex(hash);
    tmp_path_ = cp.path + "/" + std::string(x.data(), x.size()) + "." + std::to_string(::getpid()) + "." +
                std::to_string(++counter) + ".tmp";
    cache::EntryMeta m;
    set_freshness(m, v, now);
    m.status = static_cast<int16_t>(h.status);
    std::string_view lm = find_field(h.fields, "Last-Modified");
    m.last_modified = lm.empty() ? -1 : parse_http_date(lm);
    std::string_view etag = find_field(h.fields, "ETag");
    if (etag.size() > cache::kMaxEtag) etag = {};
    std::string head = stored_head(h);
    if (head.size() > cache::kMaxHead || key.size() > cache::kMaxKey || vary.size() > cache::kMaxVary) return false;
    if (!vary.empty()) m.variant = variant;
    std::string bytes = cache::serialize_header(m, key, vary, etag, head);
    int fd = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        GH_LOG_ERRNO(Crit, errno, "open() \"%s\" failed", tmp_path_.c_str());
        return false;
    }
    fd_ = fd;
    if (!write_all(bytes.data(), bytes.size())) return false;
    mem_fill_ = cp.memory_max_object && bytes.size() <= cp.memory_max_object;
    if (mem_fill_) mem_copy_ = std::move(bytes);
    written_ = 0;
    pending_ = {};
    pending_.valid_until = m.valid_until;
    pending_.stale_while_revalidate = m.stale_while_revalidate;
    pending_.stale_if_error = m.stale_if_error;
    pending_.status = static_cast<uint16_t>(h.status);
    pending_.revalidate_always = v.revalidate_always;
    pending_.fs_size = mem_fill_ ? mem_copy_.size() : bytes.size();
    return true;
}

// Writes all of it, or drops the fill (a full disk only means the
// response is not stored).
bool Fill::write_all(const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd_, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            GH_LOG_ERRNO(Crit, errno, "write() \"%s\" failed", tmp_path_.c_str());
            drop();
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

// A piece of the proxy's temp file into the fill: copy_file_range()
// where the kernel can (same file system), else through a buffer.
bool Fill::copy_range(int from, off_t pos, off_t last) {
    bool plain = false;
    char buf[16384];
    while (pos < last) {
        ssize_t n;
        if (!plain) {
            n = ::copy_file_range(from, &pos, fd_, nullptr, static_cast<size_t>(last - pos), 0);
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                plain = true;
                continue;
            }
        } else {
            n = ::pread(from, buf, std::min<size_t>(sizeof buf, static_cast<size_t>(last - pos)), pos);
            if (n > 0) {
                if (!write_all(buf, static_cast<size_t>(n))) return false;
                pos += n;
            }
        }
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            GH_LOG_ERRNO(Crit, n < 0 ? errno : 0, "copy to \"%s\" failed", tmp_path_.c_str());
            drop();
            return false;
        }
    }
    return true;
}

Fill::Step Fill::body(const Chain& data) {
    if (fd_ < 0) return Step::Off;
    for (const Buf& b : data) {
        if (b.empty()) continue;
        if (b.in_file()) {
            if (!copy_range(b.fd, b.file_pos, b.file_last)) return Step::Off;
        } else if (!write_all(b.pos, b.size())) {
            return Step::Off;
        }
        written_ += b.size();
        if (mem_fill_) {
            // Small enough for the memory tier so far: kept as it goes.
            if (mem_copy_.size() + b.size() > cp_->memory_max_object) {
                mem_fill_ = false;
                std::string().swap(mem_copy_);
            } else if (b.in_file()) {
                const size_t at = mem_copy_.size();
                mem_copy_.resize(at + b.size());
                if (::pread(b.fd, mem_copy_.data() + at, b.size(), b.file_pos) != static_cast<ssize_t>(b.size())) {
                    mem_fill_ = false;
                    std::string().swap(mem_copy_);
                }
            } else {
                mem_copy_.append(b.pos, b.size());
            }
        }
    }
    if (data.last() || (expected && written_ == *expected)) return finish() ? Step::Stored : Step::Off;
    return Step::Going;
}

void Fill::drop() {
    mem_fill_ = false;
    std::string().swap(mem_copy_);
    if (fd_ >= 0) {
        ::close(fd_);
        ::unlink(tmp_path_.c_str());
        fd_ = -1;
    }
}

// The body is complete: its length into the header, then the rename
// makes the file the entry, at once for every worker.
bool Fill::finish() {
    char len[8];
    cache::encode_u64(written_, len);
    if (::pwrite(fd_, len, 8, cache::kBodyLenOffset) != 8) {
        GH_LOG_ERRNO(Crit, errno, "pwrite() \"%s\" failed", tmp_path_.c_str());
        drop();
        return false;
    }
    ::close(fd_);
    fd_ = -1;
    std::string path = cache::entry_path(cp_->path, cp_->levels, hash_);
    if (::rename(tmp_path_.c_str(), path.c_str()) != 0) {
        if (errno != ENOENT || !make_level_dirs() || ::rename(tmp_path_.c_str(), path.c_str()) != 0) {
            GH_LOG_ERRNO(Crit, errno, "rename() \"%s\" to \"%s\" failed", tmp_path_.c_str(), path.c_str());
            ::unlink(tmp_path_.c_str());
            mem_fill_ = false;
            return false;
        }
    }
    pending_.fs_size += written_;
    std::vector<cache::Hash> ev;
    cp_->index->stored(hash_, pending_, now_, cp_->inactive, ev);
    if (mem_fill_) {
        // The same bytes as the file, its body length included.
        cache::encode_u64(written_, mem_copy_.data() + cache::kBodyLenOffset);
        put_memory(*cp_, hash_, mem_copy_);
    }
    mem_fill_ = false;
    std::string().swap(mem_copy_);
    remove_files(*cp_, ev);
    return true;
}

bool Fill::make_level_dirs() {
    std::string dirs = cache::level_dirs(cp_->levels, hash_);
    std::string p = cp_->path;
    size_t i = 0;
    while (i <= dirs.size()) {
        size_t slash = dirs.find('/', i);
        if (slash == std::string::npos) slash = dirs.size();
        p += '/';
        p.append(dirs, i, slash - i);
        if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) return false;
        i = slash + 1;
    }
    return true;
}

// ---- the steps ---------------------------------------------------------------------------

struct Front::Impl {
    // The entry of the node `n` describes: its copy in the memory tier, a
    // copy this worker kept of its file, or its file. On success the entry
    // is the Front's (meta_, the head..., and mem_ or fd_ for the body). A
    // file that is not a valid entry of this key is removed and forgotten;
    // another variant of the key (Vary) sends the lookup to that variant's
    // own entry.
    static bool open_entry(Front& f, const cache::NodeInfo& n) {
        f.file_gen_ = n.file_gen;
        if (n.in_memory) {
            const std::string_view copy =
                !n.memory_copy.empty() ? n.memory_copy : f.cp_.index->copy_memory(f.hash_, f.r_.arena());
            switch (from_copy(f, copy)) {
                case Copy::Taken: return true;
                case Copy::Moved: return open_moved(f);
                case Copy::Other: return false;
                case Copy::Unusable: break;  // gone meanwhile, or not this key: the file decides
            }
        }
        if (const std::string_view kept = kept_copy(f.cp_, f.hash_, n, f.now_); !kept.empty()) {
            // Copied: the slot may be taken by another entry while this
            // response is still being sent.
            switch (from_copy(f, f.r_.arena().dup(kept))) {
                case Copy::Taken: return true;
                case Copy::Moved: return open_moved(f);
                case Copy::Other: return false;
                case Copy::Unusable: forget_kept_copy(f.hash_); break;  // the file decides
            }
        }
        // The path only when the file is opened, logged or removed.
        std::string path;
        auto path_of = [&f, &path]() -> const std::string& {
            if (path.empty()) path = cache::entry_path(f.cp_.path, f.cp_.levels, f.hash_);
            return path;
        };
        const int fd = open_read(path_of());
        if (fd < 0) {
            if (errno != ENOENT) log_for_request(f.r_, log::Level::Crit, errno, "open() \"" + path + "\" failed");
            f.cp_.index->forget(f.hash_);
            return false;
        }
        struct stat st;
        if (::fstat(fd, &st) != 0) {
            ::close(fd);
            return false;
        }
        const auto size = static_cast<uint64_t>(st.st_size);
        // A small file is read whole at once and its body served from
        // memory: one read instead of two, and the head and body leave in
        // one write. One the memory tier may keep is read whole too, and
        // kept there for the next requests.
        const bool promote = f.cp_.memory_max_object && size <= f.cp_.memory_max_object && size > 0;
        const bool whole = promote || size <= kWholeRead;
        Arena& a = f.r_.arena();
        const size_t want = whole ? static_cast<size_t>(size) : std::min<size_t>(kFirstRead, size);
        char* buf = static_cast<char*>(a.alloc(std::max<size_t>(want, 1), 16));
        ssize_t got_n = ::pread(fd, buf, want, 0);
        Result<cache::Entry> e = make_error("cache file is cut short");
        if (got_n >= 0) {
            std::span<const char> got(buf, static_cast<size_t>(got_n));
            auto need = cache::header_length(got);
            if (need && *need > got.size() && *need <= size) {
                buf = static_cast<char*>(a.alloc(*need, 1));
                got_n = ::pread(fd, buf, *need, 0);
                got = std::span<const char>(buf, got_n < 0 ? 0 : static_cast<size_t>(got_n));
            }
            e = cache::parse_header(got, size);
        }
        if (!e || e->key != f.key_) {
            // Another key with the same hash (a collision) is a miss; a bad
            // file goes.
            if (!e) {
                log_for_request(f.r_, log::Level::Crit, 0, e.error().message + " \"" + path_of() + "\"");
                ::unlink(path_of().c_str());
            }
            ::close(fd);
            f.cp_.index->forget(f.hash_);
            return false;
        }
        switch (check_variant(f, *e)) {
            case Variant::Same: break;
            case Variant::Moved: ::close(fd); return open_moved(f);
            case Variant::Other: ::close(fd); return false;
        }
        take(f, *e, size);
        // A node the loader has not reached yet (or reset) learns of it.
        const cache::Stored s = stored_of(e->meta, size);
        std::vector<cache::Hash> ev;
        f.cp_.index->loaded(f.hash_, s, f.now_, f.cp_.inactive, ev);
        remove_files(f.cp_, ev);
        if (whole && static_cast<uint64_t>(got_n) == size) {
            ::close(fd);
            f.mem_ = {buf, static_cast<size_t>(size)};
            if (promote) put_memory(f.cp_, f.hash_, f.mem_);
            // Kept for the next hits of this second when the index knew
            // this file (its file_gen then names it).
            else if (n.exists) keep_copy(f.cp_, f.hash_, n, f.now_, f.mem_);
            return true;
        }
        f.fd_ = fd;
        f.r_.add_fd(fd);  // closed with the request, whatever happens
        return true;
    }

    static void take(Front& f, const cache::Entry& e, uint64_t size) {
        f.head_index_ = {};
        f.file_size_ = size;
        f.have_entry_ = true;
        f.meta_ = e.meta;
        f.entry_head_ = e.head;
        f.entry_etag_ = e.etag;
        f.entry_vary_ = e.vary;
        f.body_start_ = e.body_start;
    }

    enum class Copy : uint8_t { Taken, Moved, Other, Unusable };
    // Takes the entry from `copy` (memory_copy()'s format, in the
    // request's arena), as open_entry() does a file: Moved and Other as
    // check_variant() says; Unusable when it is no copy of this key's entry.
    static Copy from_copy(Front& f, std::string_view copy) {
        std::string_view bytes, index;
        if (!split_memory_copy(copy, bytes, index)) return Copy::Unusable;
        Result<cache::Entry> e = cache::parse_header(std::span<const char>(bytes.data(), bytes.size()), bytes.size());
        if (!e || e->key != f.key_) return Copy::Unusable;
        switch (check_variant(f, *e)) {
            case Variant::Same: break;
            case Variant::Moved: return Copy::Moved;
            case Variant::Other: return Copy::Other;
        }
        f.mem_ = bytes;
        take(f, *e, bytes.size());
        f.head_index_ = index;
        return Copy::Taken;
    }

    enum class Variant : uint8_t { Same, Moved, Other };
    // Whether the entry is the request's variant. The first entry of a key
    // is found at the key's hash; the others at the hash of the key and
    // their variant [nginx's secondary keys]: Moved when the lookup goes
    // there now (key_ and hash_ changed), Other when already there.
    static Variant check_variant(Front& f, const cache::Entry& e) {
        if (e.vary.empty() || (cache_ignore_bits(*f.pc_) & kIgnoreVary)) return Variant::Same;
        const cache::Hash v = variant_of(f.r_, e.vary);
        if (v == e.meta.variant) return Variant::Same;
        if (f.secondary_) return Variant::Other;
        f.secondary_ = true;
        f.primary_key_ = f.key_;
        f.primary_hash_ = f.hash_;
        f.primary_vary_ = e.vary;
        const auto x = cache::hex(v);
        f.key_ = f.r_.arena().dup(std::string(f.key_) + "\n" + std::string(x.data(), x.size()));
        f.hash_ = cache::hash_key(f.key_);
        return Variant::Moved;
    }

    static bool open_moved(Front& f) {
        std::vector<cache::Hash> ev;
        cache::NodeInfo n = f.cp_.index->lookup(f.hash_, f.now_, f.cp_.inactive, ev, &f.r_.arena());
        remove_files(f.cp_, ev);
        return (n.exists || n.cold || !n.known) && open_entry(f, n);
    }

    // The stored head's status, reason and fields: from the index that
    // came with the entry (its memory tier copy, or its kept file), else
    // parsed.
    static bool read_head(Front& f, int& status, std::string_view& reason,
                          std::pmr::vector<upstream::TryLog::Field>& fields) {
        const std::string_view head = f.entry_head_;
        if (!f.head_index_.empty()) {
            const char* x = f.head_index_.data();
            const size_t count = (f.head_index_.size() - kIndexFooter) / 16;
            const char* foot = x + count * 16;
            auto view = [&](const char* at, std::string_view& out) {
                const uint64_t off = get_u32(at), len = get_u32(at + 4);
                if (off + len > head.size()) return false;
                out = head.substr(off, len);
                return true;
            };
            status = static_cast<int>(get_u32(foot));
            bool ok = status >= 100 && status <= 999 && view(foot + 4, reason);
            fields.resize(count);
            for (size_t i = 0; ok && i < count; ++i)
                ok = view(x + i * 16, fields[i].name) && view(x + i * 16 + 8, fields[i].value);
            if (ok) return true;
            fields.clear();
        }
        return parse_stored_head(head, [&](int st, std::string_view re, std::span<const HeaderField> hs) {
            status = st;
            reason = re;
            fields.reserve(hs.size());
            for (const HeaderField& h : hs) fields.push_back({h.name, h.value});
        });
    }

    // r.out and r.body from the entry, with `s` as $upstream_cache_status.
    // False when the stored head does not parse (the entry is removed).
    static bool serve(Front& f, CacheStatus s) {
        Request& r = f.r_;
        int status = 0;
        std::string_view reason;
        auto* fields = r.arena().make<std::pmr::vector<upstream::TryLog::Field>>(r.mem());
        if (!read_head(f, status, reason, *fields)) {
            log_for_request(r, log::Level::Crit, 0, "cache file of key \"" + std::string(f.key_) +
                                                        "\" has an invalid head: removed");
            drop_entry(f);
            return false;
        }
        Framing fr;
        fr.content_length = f.meta_.body_len;
        std::optional<bool> accel;
        proxy::copy_response_head(r, *f.pc_, *f.pass_, status, reason, *fields, fr, &accel);
        r.out.content_length = f.meta_.body_len;
        // Age: the time in the cache, and the origin's own (RFC 9111 4.2.3).
        const int64_t age = std::max<int64_t>(0, f.now_ - f.meta_.stored_at) + f.meta_.age;
        r.out.remove("Age");
        r.out.headers.push_back({"Age", r.arena().dup(std::to_string(age))});
        if (status == 200) allow_ranges(r);
        Buf b;
        if (f.meta_.body_len > 0 && !f.mem_.empty()) {
            // From memory (the request's copy of the tier's, or of the file).
            b.pos = f.mem_.data() + f.body_start_;
            b.last = b.pos + f.meta_.body_len;
        } else if (f.meta_.body_len > 0) {
            b = Buf::file(f.fd_, static_cast<off_t>(f.body_start_),
                          static_cast<off_t>(f.body_start_ + f.meta_.body_len));
        }
        b.last_buf = true;
        r.use_sendfile = sendfile_enabled(r);
        r.body.clear();
        r.body.push(std::move(b));
        f.status_ = s;
        return true;
    }

    // proxy_cache_purge: the entry of the key goes (every entry whose key
    // starts with it, for a key ending in "*"); 204, or 404 when there
    // was none.
    static Next purge(Front& f) {
        bool found;
        if (!f.key_.empty() && f.key_.back() == '*') {
            found = purge_prefix(f.cp_, f.key_.substr(0, f.key_.size() - 1));
        } else {
            std::string path = cache::entry_path(f.cp_.path, f.cp_.levels, f.hash_);
            // An entry with Vary has variants at other keys (the key, a
            // newline, their variant): they go too, else a variant
            // would outlive the purge. Only then is the directory walked.
            bool vary = false;
            if (int fd = open_read(path); fd >= 0) {
                struct stat st;
                std::string buf;
                if (::fstat(fd, &st) == 0)
                    if (auto e = read_header(fd, static_cast<uint64_t>(st.st_size), buf)) vary = !e->vary.empty();
                ::close(fd);
            }
            found = ::unlink(path.c_str()) == 0;
            f.cp_.index->forget(f.hash_);
            if (vary) found |= purge_prefix(f.cp_, std::string(f.key_) + "\n");
        }
        return respond_status(f.r_, found ? 204 : 404);
    }

    static void drop_entry(Front& f) {
        std::string path = cache::entry_path(f.cp_.path, f.cp_.levels, f.hash_);
        ::unlink(path.c_str());
        f.cp_.index->forget(f.hash_);
        f.have_entry_ = false;
    }

    // proxy_cache_lock: another request fills the entry. Looks at the
    // index until its file is there (served), the claim is gone or
    // lapsed (this request goes to the origin; it may store if it can
    // claim the fill), or proxy_cache_lock_timeout passed (to the origin,
    // not stored) [nginx].
    static void wait_tick(Front* fp) {
        Front& f = *fp;
        Request& r = f.r_;
        log::Scope scope(&r.log_ctx);
        f.now_ = wall_now();
        cache::NodeInfo n = f.cp_.index->peek(f.hash_);
        if (n.exists && open_entry(f, n)) {
            if (f.now_ <= f.meta_.valid_until && !(f.meta_.flags & cache::kRevalidateAlways) && serve(f, CacheStatus::Hit)) {
                f.resume_(r, Next::Respond);
                return;
            }
            f.have_entry_ = false;
        }
        const int64_t now_ms = event::worker_loop().now();
        if (!n.known || n.fill_until <= f.now_) {
            const time_t age = static_cast<time_t>(f.cl_.lock_age->count() / 1000);
            f.fill_claimed_ = f.cp_.index->claim_fill(f.hash_, f.now_, f.now_ + std::max<time_t>(age, 1));
            if (!f.fill_claimed_) f.store_allowed_ = false;
            f.resume_(r, Next::Proceed);
            return;
        }
        if (now_ms >= f.wait_until_) {
            f.store_allowed_ = false;
            f.resume_(r, Next::Proceed);
            return;
        }
        event::worker_loop().arm(f.wait_timer_, kLockPoll);
    }
};

Front::~Front() {
    event::worker_loop().cancel(wait_timer_);
    fill_.drop();
    if (fill_claimed_ || update_claimed_) cp_.index->release(hash_);
}

// ---- a background update ---------------------------------------------------------------------

// proxy_cache_background_update: a request for a fresh response, made
// apart from the client request that was answered with the stale entry
// [nginx's background subrequest]. It has an arena of its own with copies
// of what it needs (the request head, the request's fields for Vary), an
// upstream::Client to the same group with the same settings, and a Fill;
// it holds the entry's update claim until the new file is in place or
// the origin failed, then deletes itself (from a posted event, never
// under the Client's frames). Worker exit deletes those still running.
class Refresh final : public upstream::Hooks {
public:
    Refresh(CachePath& cp, const CacheLocConf& cl, uint8_t ignore, const cache::Hash& hash, std::string_view key,
            const Request& r, upstream::UpstreamConf& u, const upstream::ClientConf& cc, const RefreshRequest& rr)
        : cp_(cp),
          cl_(cl),
          ignore_(ignore),
          hash_(hash),
          log_(arena_.resource()),
          fields_(arena_.resource()),
          cc_(cc),
          client_(u, cc_, *this, log_, arena_.resource()) {
        key_ = arena_.dup(key);
        head_ = arena_.dup(rr.head);
        uri_ = arena_.dup(rr.uri);
        tls_name_ = arena_.dup(rr.tls_name);
        may_keep_ = rr.may_keep;
        for (const HeaderField& f : r.headers) fields_.push_back({arena_.dup(f.name), arena_.dup(f.value)});
        done_ev_.cb = event::Callback::to<&Refresh::destroy>(this);
        log_ctx_.describe = describe;
        log_ctx_.self = this;
        client_.picker().set_client(r.remote_sockaddr);
        if (!rr.hash_key.empty()) client_.picker().set_key(arena_.dup(rr.hash_key));
    }
    Refresh(const Refresh&) = delete;
    Refresh& operator=(const Refresh&) = delete;
    ~Refresh() {
        fill_.drop();
        if (!stored_) cp_.index->release(hash_);
    }

    // The worker's running updates own them.
    static std::vector<std::unique_ptr<Refresh>>& running() {
        static std::vector<std::unique_ptr<Refresh>> all;
        return all;
    }

    void start() { client_.start(); }

    // ---- upstream::Hooks ----
    void prepare(upstream::Client& c) override {
        c.out.head = head_;
        c.out.uri = uri_;
        c.out.idempotent = true;
        c.out.may_keep = may_keep_;
        if (!tls_name_.empty()) c.out.tls_name = tls_name_;
    }
    bool start_body(upstream::Client&) override { return true; }
    void resume_body(upstream::Client&) override {}
    Head on_head(upstream::Client&, const StatusHead& h) override {
        const time_t now = wall_now();
        OriginHead oh{h.status, h.reason, log_.headers};
        CacheVerdict v = verdict_for(h.status, oh.fields, now, ignore_, cl_, *cl_.revalidate, arena_.resource());
        std::string_view vary;
        if (!(ignore_ & kIgnoreVary)) vary = find_field(oh.fields, "Vary");
        const cache::Hash variant = vary.empty() ? cache::Hash{} : variant_of(fields_, vary);
        if (!v.store || h.status == 206 || !fill_.begin(cp_, hash_, key_, now, oh, v, vary, variant)) {
            finish();
            return Head::Stop;
        }
        fill_.expected = h.framing.content_length;
        return Head::Body;
    }
    bool on_body(upstream::Client&, Chain& data) override {
        const Fill::Step st = fill_.body(data);
        const bool last = data.last();
        data.clear();
        if (st == Fill::Step::Stored) stored_ = true;
        if (st != Fill::Step::Going || last) {
            finish();
            return false;
        }
        return true;
    }
    size_t downstream_pending() override { return 0; }
    bool gone() override { return done_; }
    void on_error(upstream::Client&, int) override { finish(); }
    void on_truncated(upstream::Client&) override { finish(); }
    event::Duplex& open_tunnel(upstream::Client&, event::Callback, std::string_view*) override {
        GH_CHECK(false && "a background update never asks for an upgrade");
        __builtin_unreachable();
    }
    void on_tunnel_end(upstream::Client&) override {}
    const log::Context* log_context() override { return &log_ctx_; }
    Result<int> temp_file() override { return make_error("a background update keeps no temp file"); }

private:
    void finish() {
        if (done_) return;
        done_ = true;
        fill_.drop();
        event::worker_loop().post(done_ev_);
    }
    static void destroy(Refresh* self) {
        auto& all = running();
        for (auto it = all.begin(); it != all.end(); ++it)
            if (it->get() == self) {
                all.erase(it);
                return;
            }
    }
    static void describe(const void* self, FixedWriter& out) {
        const auto* r = static_cast<const Refresh*>(self);
        out.put(", background update of \"");
        out.put(r->key_);
        out.put("\"");
    }

    Arena arena_{4096};
    CachePath& cp_;
    const CacheLocConf& cl_;
    uint8_t ignore_;
    cache::Hash hash_;
    std::string_view key_, head_, uri_, tls_name_;
    bool may_keep_ = false;
    upstream::TryLog log_;
    std::pmr::vector<HeaderField> fields_;
    upstream::ClientConf cc_;
    upstream::Client client_;
    Fill fill_;
    event::Event done_ev_;
    log::Context log_ctx_;
    bool done_ = false;
    bool stored_ = false;
};

void Front::start_refresh(upstream::UpstreamConf& u, const upstream::ClientConf& cc, const RefreshRequest& rr) {
    refresh_ = false;
    refreshing_ = true;
    upstream::ClientConf c = cc;
    // Nobody reads it but the fill: unbuffered, no temp file.
    c.buffering = false;
    c.max_temp_file_size = 0;
    auto& all = Refresh::running();
    all.push_back(std::make_unique<Refresh>(cp_, cl_, cache_ignore_bits(*pc_), hash_, key_, r_, u, c, rr));
    // The claim is the update's now: the request's end must not release it.
    update_claimed_ = fill_claimed_ = false;
    all.back()->start();
}

void delete_refreshes() {
    // Moved out first: a destructor must not find the vector changing.
    auto all = std::move(Refresh::running());
    all.clear();
}

// ---- begin -------------------------------------------------------------------------------

namespace {

// The cache of the request; `unknown` when a variable named none.
CachePath* path_for(Request& r, const CacheLocConf& cl, bool* unknown) {
    if (!cl.path_value) return cl.path ? *cl.path : nullptr;
    std::string_view name = cl.path_value->eval(r);
    if (name.empty() || name == "off") return nullptr;
    *unknown = true;
    const auto& mc = r.main_conf<CacheMainConf>(proxy_cache_module);
    for (CachePath* p : mc.paths)
        if (p->zone_name == name) return p;
    log_for_request(r, log::Level::Error, 0, "cache \"" + std::string(name) + "\" not found");
    return nullptr;
}

std::string_view default_key(Request& r, std::string_view proxy_host) {
    // $scheme$proxy_host$request_uri, written once into the arena.
    const std::string_view scheme = r.stream().tls() ? "https" : "http";
    const size_t n = scheme.size() + proxy_host.size() + r.unparsed_uri.size();
    char* const out = static_cast<char*>(r.arena().alloc(n, 1));
    FixedWriter w{out, out + n};
    w.put(scheme);
    w.put(proxy_host);
    w.put(r.unparsed_uri);
    return {out, n};
}

}  // namespace

Next Front::begin(Request& r, const ProxyConf& pc, const proxy::Pass& pass, std::string_view proxy_host,
                  void (*resume)(Request&, Next), Front** out) {
    const auto& cl = r.loc_conf<CacheLocConf>(proxy_cache_module);
    *out = nullptr;
    if (!cl.enabled.value_or(false)) return Next::Decline;
    bool unknown = false;
    CachePath* cp = path_for(r, cl, &unknown);
    if (!cp && unknown) return respond_status(r, 500);
    if (!cp || !cp->index) return Next::Decline;
    const bool purge = cl.purge && [&] {
        std::string_view v = cl.purge->eval(r);
        return !v.empty() && v != "0";
    }();
    const uint32_t bit = method_bit(r.method);
    if (!purge && (!bit || !(*cl.methods & bit))) return Next::Decline;
    if (!purge && *cl.max_range_offset != UINT64_MAX) {
        // A range far into the response is not worth the whole of it
        // first: proxied as asked, without the cache.
        std::string_view range = request_field(r, "Range");
        if (range.size() > 6 && range.substr(0, 6) == "bytes=") {
            auto off = conf::parse_number(trim_ows(range.substr(6, range.find('-') - 6)));
            if (off && *off > *cl.max_range_offset) return Next::Decline;
        }
    }

    Front* f = r.arena().make<Front>(r, *cp, cl);
    f->pc_ = &pc;
    f->pass_ = &pass;
    f->resume_ = resume;
    f->wait_timer_.cb = event::Callback::to<&Impl::wait_tick>(f);
    f->now_ = wall_now();
    f->key_ = cl.key ? cl.key->eval(r) : default_key(r, proxy_host);
    f->hash_ = cache::hash_key(f->key_);
    f->store_allowed_ = !any_set(r, cl.no_cache);
    f->convert_head_ = *cl.convert_head && r.method == "HEAD";
    *out = f;
    r.set_ctx(proxy_cache_module, f);
    if (purge) return Impl::purge(*f);

    if (any_set(r, cl.bypass)) {
        f->status_ = CacheStatus::Bypass;
        return Next::Proceed;
    }
    std::vector<cache::Hash> evicted;
    cache::NodeInfo n;
    for (int look = 0;; ++look) {
        n = cp->index->lookup(f->hash_, f->now_, cp->inactive, evicted, &r.arena());
        remove_files(*cp, evicted);
        evicted.clear();
        if (n.error && f->now_ <= n.valid_until) {
            // A cached intercepted error: its error_page again.
            f->status_ = CacheStatus::Hit;
            return respond_status(r, n.error);
        }
        if (!((n.exists || n.cold || !n.known) && Impl::open_entry(*f, n))) break;
        const bool fresh = f->now_ <= f->meta_.valid_until && !(f->meta_.flags & cache::kRevalidateAlways);
        if (fresh && Impl::serve(*f, CacheStatus::Hit)) return Next::Respond;
        if (!f->have_entry_) break;
        // Stale. While another request refreshes it, serve it as it is
        // when allowed: "updating", or the origin's
        // stale-while-revalidate.
        const bool swr = f->meta_.stale_while_revalidate > 0 &&
                         f->now_ <= f->meta_.valid_until + static_cast<time_t>(f->meta_.stale_while_revalidate);
        const bool may_serve_updating = (*cl.use_stale & kStaleUpdating) || swr;
        const time_t until = f->now_ + std::max<time_t>(static_cast<time_t>(cl.lock_age->count() / 1000), 1);
        const auto claim = cp->index->claim_update(f->hash_, f->now_, until, f->file_gen_);
        if (claim == cache::Index::Claim::Changed && look == 0 && !f->secondary_) {
            // An update stored a new file since this one was read: that
            // one is looked at, not refreshed again (once; a variant's
            // lookup is not started over).
            f->have_entry_ = false;
            f->mem_ = {};
            f->fd_ = -1;  // closed with the request (add_fd)
            continue;
        }
        f->update_claimed_ = claim == cache::Index::Claim::Taken;
        if (f->update_claimed_ && *cl.background_update && may_serve_updating &&
            Impl::serve(*f, CacheStatus::Stale)) {
            // This request gets the stale entry too; the update runs
            // apart (see Refresh).
            f->refresh_ = true;
            return Next::Respond;
        }
        if (!f->update_claimed_ && may_serve_updating && Impl::serve(*f, CacheStatus::Updating))
            return Next::Respond;
        f->status_ = CacheStatus::Expired;
        // Conditional requests only for a stored 200 [nginx].
        if (*cl.revalidate && f->meta_.status == 200 && (!f->entry_etag_.empty() || f->meta_.last_modified >= 0))
            f->revalidating_ = true;
        return Next::Proceed;
    }
    f->status_ = CacheStatus::Miss;
    if (n.uses < *cl.min_uses) {
        f->store_allowed_ = false;
        f->scarce_ = true;
        return Next::Proceed;
    }
    const time_t age = std::max<time_t>(static_cast<time_t>(cl.lock_age->count() / 1000), 1);
    if (f->store_allowed_ && r.method == "GET" && request_field(r, "Range").size() > 0 &&
        cp->index->claim_fill(f->hash_, f->now_, f->now_ + age)) {
        // A range of an entry the cache does not have: the client's
        // request goes to the origin as it is (its range), and the whole
        // response is fetched apart to fill the entry (a background
        // update's machinery), which other requests may wait for.
        f->fill_claimed_ = true;
        f->refresh_ = true;
        f->store_allowed_ = false;
        return Next::Proceed;
    }
    if (!*cl.lock) return Next::Proceed;
    f->fill_claimed_ = cp->index->claim_fill(f->hash_, f->now_, f->now_ + age);
    if (f->fill_claimed_) return Next::Proceed;
    f->wait_until_ = event::worker_loop().now() + static_cast<int64_t>(cl.lock_timeout->count());
    event::worker_loop().arm(f->wait_timer_, kLockPoll);
    return Next::Suspend;
}

std::string_view Front::method(std::string_view m) const { return convert_head_ ? std::string_view("GET") : m; }

std::string_view Front::if_none_match() const { return revalidating_ ? entry_etag_ : std::string_view(); }

std::string_view Front::if_modified_since() const {
    if (!revalidating_ || meta_.last_modified < 0) return {};
    char buf[kHttpDateMax];
    return r_.arena().dup(format_http_date(meta_.last_modified, buf));
}

Front::Verdict Front::on_head(const OriginHead& h) {
    now_ = wall_now();
    if (revalidating_ && h.status == 304 && have_entry_) {
        // Still valid: the 304's freshness fields renew the entry's
        // (RFC 9111 4.3.4); the stored head and body are served.
        CacheVerdict v = verdict_for(meta_.status, h.fields, now_, cache_ignore_bits(*pc_), cl_, true, r_.mem());
        if (v.store) {
            set_freshness(meta_, v, now_);
            refresh_meta();
        }
        if (Impl::serve(*this, CacheStatus::Revalidated)) return Verdict::FromCache;
        return Verdict::Pass;
    }
    if (have_entry_ && status_listed(*cl_.use_stale, h.status) && Impl::serve(*this, CacheStatus::Stale))
        return Verdict::Stale;
    if (!store_allowed_ || h.status == 304) return Verdict::Pass;
    CacheVerdict v = verdict_for(h.status, h.fields, now_, cache_ignore_bits(*pc_), cl_, *cl_.revalidate, r_.mem());
    if (v.store) start_fill(h, v);
    return Verdict::Pass;
}

void Front::refresh_meta() {
    // In place: the header's fixed part, the lengths unchanged.
    std::string path = cache::entry_path(cp_.path, cp_.levels, hash_);
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    std::string h = cache::serialize_header(meta_, key_, entry_vary_, entry_etag_, entry_head_);
    // Only the fixed part: the rest is what the file has.
    if (::pwrite(fd, h.data(), cache::kHeaderSize, 0) != static_cast<ssize_t>(cache::kHeaderSize))
        log_for_request(r_, log::Level::Crit, errno, "pwrite() \"" + path + "\" failed");
    ::close(fd);
    const cache::Stored s = stored_of(meta_, file_size_);
    std::vector<cache::Hash> ev;
    cp_.index->stored(hash_, s, now_, cp_.inactive, ev);
    fill_claimed_ = update_claimed_ = false;
    remove_files(cp_, ev);
}

void Front::on_intercept(const OriginHead& h) {
    now_ = wall_now();
    if (!store_allowed_) return;
    CacheVerdict v = verdict_for(h.status, h.fields, now_, cache_ignore_bits(*pc_), cl_, false, r_.mem());
    if (!v.store || v.revalidate_always) return;
    std::vector<cache::Hash> ev;
    cp_.index->stored_error(hash_, static_cast<uint16_t>(h.status), v.valid_until, now_, cp_.inactive, ev);
    fill_claimed_ = update_claimed_ = false;
    remove_files(cp_, ev);
}

void Front::after_head() {
    // The client's Range did not go to the origin (drops()): a whole
    // response is cut here, stored or not (below min_uses, bypassed).
    if (r_.out.status == 200 && r_.out.content_length) allow_ranges(r_);
    // With a length the fill is complete with its last byte: the client's
    // answer (a range) may be over before the origin's end is seen.
    fill_.expected = r_.out.content_length;
}

void Front::on_body(const Chain& data) {
    if (fill_.body(data) == Fill::Step::Stored) fill_claimed_ = update_claimed_ = false;
    r_.outlive_client = fill_.active();
}

void Front::start_fill(const OriginHead& h, const CacheVerdict& v) {
    std::string_view vary;
    if (!(cache_ignore_bits(*pc_) & kIgnoreVary)) vary = find_field(h.fields, "Vary");
    const cache::Hash variant = vary.empty() ? cache::Hash{} : variant_of(r_, vary);
    if (secondary_ && vary != primary_vary_) {
        // The origin varies on other fields now (or not at all): the
        // response replaces the key's first entry, whose Vary the next
        // lookups use; variants found by the old one are left to expire
        // [nginx replaces the main entry so].
        if (fill_claimed_ || update_claimed_) cp_.index->release(hash_);
        fill_claimed_ = update_claimed_ = false;
        key_ = primary_key_;
        hash_ = primary_hash_;
        secondary_ = false;
    }
    fill_.begin(cp_, hash_, key_, now_, h, v, vary, variant);
    // A client that leaves now does not end the fill: others may wait
    // for it, and the origin's work is not wasted [nginx reads a
    // cacheable response to its end after the client's write error].
    r_.outlive_client = fill_.active();
}

bool Front::on_error(int status, bool timeout) {
    fill_.drop();
    r_.outlive_client = false;
    if (!have_entry_) return false;
    const uint16_t us = *cl_.use_stale;
    const bool listed = timeout ? (us & kStaleTimeout) : (us & (kStaleError | kStaleInvalidHeader));
    // stale-if-error: the origin allows it for that long past freshness.
    const bool sie = meta_.stale_if_error > 0 && now_ <= meta_.valid_until + static_cast<time_t>(meta_.stale_if_error);
    if (!listed && !sie && !status_listed(us, status)) return false;
    return Impl::serve(*this, CacheStatus::Stale);
}

void Front::on_truncated() {
    fill_.drop();
    r_.outlive_client = false;
}

}  // namespace proxy_cache
}  // namespace gatehouse::http

// ---- configuration ---------------------------------------------------------------------

namespace gatehouse::http {
namespace {

using namespace proxy_cache;
using conf::Level;

CacheMainConf& main_of(Ctx& cx) {
    auto* m = cx.conf<CacheMainConf>(proxy_cache_module, Level::Main);
    GH_CHECK(m != nullptr);
    return *m;
}

// "name=value" of proxy_cache_path: the value when `a` has that name.
std::optional<std::string_view> param(std::string_view a, std::string_view name) {
    if (a.size() <= name.size() || a.substr(0, name.size()) != name || a[name.size()] != '=') return std::nullopt;
    return a.substr(name.size() + 1);
}

// proxy_cache_path path [levels=1:2] keys_zone=name:size [inactive=10m]
//   [max_size=N] [min_free=N] [use_temp_path=on|off] [manager_files=N]
//   [manager_threshold=T] [manager_sleep=T] [loader_files=N]
//   [loader_threshold=T] [loader_sleep=T]
Status set_cache_path(Ctx& cx, const Node& n, CacheMainConf& m) {
    auto* cp = cx.arena().make<CachePath>();
    cp->node = &n;
    cp->path = cx.full_path(n.args[0].text);
    while (cp->path.size() > 1 && cp->path.back() == '/') cp->path.pop_back();
    uint64_t zone_size = 0;
    auto bad = [&](std::string_view a) { return cx.error(n, "invalid parameter \"" + std::string(a) + "\""); };
    auto duration = [&](std::string_view a, std::string_view v, std::chrono::milliseconds& out) -> Status {
        auto d = conf::parse_duration(v);
        if (!d) return bad(a);
        out = *d;
        return {};
    };
    auto count = [&](std::string_view a, std::string_view v, uint64_t& out) -> Status {
        auto x = conf::parse_number(v);
        if (!x || *x == 0) return bad(a);
        out = *x;
        return {};
    };
    for (size_t i = 1; i < n.args.size(); ++i) {
        std::string_view a = n.args[i].text;
        if (auto v = param(a, "levels")) {
            auto l = cache::parse_levels(*v);
            if (!l) return bad(a);
            cp->levels = *l;
        } else if (auto v = param(a, "keys_zone")) {
            size_t colon = v->rfind(':');
            if (colon == std::string_view::npos || colon == 0) return bad(a);
            cp->zone_name = std::string(v->substr(0, colon));
            auto s = conf::parse_size(v->substr(colon + 1));
            if (!s) return bad(a);
            if (*s < 8192) return cx.error(n, "zone \"" + cp->zone_name + "\" is too small");
            zone_size = *s;
        } else if (auto v = param(a, "inactive")) {
            auto d = conf::parse_duration(*v);
            if (!d) return bad(a);
            cp->inactive = std::max<int64_t>(1, d->count() / 1000);
        } else if (auto v = param(a, "max_size")) {
            auto s = conf::parse_size(*v);
            if (!s) return bad(a);
            cp->max_size = *s;
        } else if (auto v = param(a, "min_free")) {
            auto s = conf::parse_size(*v);
            if (!s) return bad(a);
            cp->min_free = *s;
        } else if (auto v = param(a, "memory")) {
            auto sz = conf::parse_size(*v);
            if (!sz || *sz < 8192) return bad(a);
            cp->memory = *sz;
        } else if (auto v = param(a, "memory_max_object")) {
            auto sz = conf::parse_size(*v);
            if (!sz || *sz == 0) return bad(a);
            cp->memory_max_object = *sz;
        } else if (auto v = param(a, "use_temp_path")) {
            auto f = conf::parse_flag(*v);
            if (!f) return bad(a);
            cp->use_temp_path = *f;
        } else if (auto v = param(a, "manager_files")) {
            if (auto s = count(a, *v, cp->manager_files); !s) return s;
        } else if (auto v = param(a, "manager_threshold")) {
            if (auto s = duration(a, *v, cp->manager_threshold); !s) return s;
        } else if (auto v = param(a, "manager_sleep")) {
            if (auto s = duration(a, *v, cp->manager_sleep); !s) return s;
        } else if (auto v = param(a, "loader_files")) {
            if (auto s = count(a, *v, cp->loader_files); !s) return s;
        } else if (auto v = param(a, "loader_threshold")) {
            if (auto s = duration(a, *v, cp->loader_threshold); !s) return s;
        } else if (auto v = param(a, "loader_sleep")) {
            if (auto s = duration(a, *v, cp->loader_sleep); !s) return s;
        } else {
            return bad(a);
        }
    }
    if (cp->zone_name.empty()) return cx.error(n, "\"proxy_cache_path\" must have \"keys_zone\" parameter");
    for (const CachePath* o : m.paths) {
        if (o->zone_name == cp->zone_name)
            return cx.error(n, "duplicate zone \"" + cp->zone_name + "\"");
        if (o->path == cp->path) return cx.error(n, "duplicate path \"" + cp->path + "\"");
    }
    if (!cx.zones()) return cx.error(n, "shared memory zones are not available here");
    auto z = cx.zones()->add(cp->zone_name, static_cast<size_t>(zone_size), &proxy_cache_module);
    if (!z) return cx.error(n, z.message());
    cp->zone = z->zone;
    shm::Zone* mem = nullptr;
    if (cp->memory) {
        // A zone of its own, "NAME@memory", kept across reloads as the
        // index's is.
        auto mz = cx.zones()->add(cp->zone_name + "@memory", static_cast<size_t>(cp->memory), &proxy_cache_module);
        if (!mz) return cx.error(n, mz.message());
        mem = mz->zone;
        // An object takes at most an eighth of the tier by default.
        if (!cp->memory_max_object) cp->memory_max_object = std::min<uint64_t>(cp->memory / 8, 1 << 20);
    } else if (cp->memory_max_object) {
        return cx.error(n, "\"memory_max_object\" needs \"memory\"");
    }
    auto idx = cache::Index::attach(*cp->zone, mem);
    if (!idx) return cx.error(n, idx.message());
    cp->index.emplace(std::move(*idx));
    m.paths.push_back(cp);
    return {};
}

bool has_variables(std::string_view s) { return s.find('$') != std::string_view::npos; }

Status set_cache(Ctx& cx, const Node& n, CacheLocConf& cl) {
    if (cl.enabled) return cx.duplicate(n);
    std::string_view v = n.args[0].text;
    if (v == "off") {
        cl.enabled = false;
        return {};
    }
    cl.enabled = true;
    if (has_variables(v)) {
        auto cv = ComplexValue::compile(cx, n, v);
        if (!cv) return cv.error();
        cl.path_value = cx.arena().make<ComplexValue>(std::move(*cv));
        return {};
    }
    // The zone may be declared further down: looked up once the http
    // block is read (postconfiguration).
    cl.path = cx.arena().make<CachePath*>(nullptr);
    main_of(cx).pending.push_back({cl.path, &n});
    return {};
}

// proxy_cache_key, proxy_cache_purge: one value with variables.
template <const ComplexValue* CacheLocConf::*Member>
Status set_value(Ctx& cx, const Node& n, CacheLocConf& cl) {
    if (cl.*Member) return cx.duplicate(n);
    auto cv = ComplexValue::compile(cx, n, n.args[0].text);
    if (!cv) return cv.error();
    cl.*Member = cx.arena().make<ComplexValue>(std::move(*cv));
    return {};
}

// proxy_cache_valid [code ...] time: a time alone is for 200, 301, 302.
Status set_valid(Ctx& cx, const Node& n, CacheLocConf& cl) {
    auto d = conf::parse_duration(n.args.back().text);
    if (!d) return cx.error(n, "invalid time value \"" + n.args.back().text + "\"");
    if (!cl.valid) cl.valid = cx.arena().make<std::vector<CacheValid>>();
    const int64_t secs = d->count() / 1000;
    if (n.args.size() == 1) {
        for (uint16_t s : {200, 301, 302}) cl.valid->push_back({s, secs});
        return {};
    }
    for (size_t i = 0; i + 1 < n.args.size(); ++i) {
        std::string_view a = n.args[i].text;
        if (a == "any") {
            cl.valid->push_back({0, secs});
            continue;
        }
        auto code = conf::parse_number(a, 599);
        if (!code || *code < 100) return cx.error(n, "invalid status \"" + std::string(a) + "\"");
        cl.valid->push_back({static_cast<uint16_t>(*code), secs});
    }
    return {};
}

Status set_methods(Ctx& cx, const Node& n, CacheLocConf& cl) {
    if (cl.methods) return cx.duplicate(n);
    uint32_t bits = method_bit("GET") | method_bit("HEAD");
    for (const conf::Arg& a : n.args) {
        const uint32_t b = method_bit(a.text);
        if (!b) return cx.error(n, "invalid value \"" + a.text + "\"");
        bits |= b;
    }
    cl.methods = bits;
    return {};
}

Status add_values(Ctx& cx, const Node& n, std::vector<ComplexValue>*& list) {
    if (!list) list = cx.arena().make<std::vector<ComplexValue>>();
    for (const conf::Arg& a : n.args) {
        auto cv = ComplexValue::compile(cx, n, a.text);
        if (!cv) return cv.error();
        list->push_back(std::move(*cv));
    }
    return {};
}
Status set_bypass(Ctx& cx, const Node& n, CacheLocConf& cl) { return add_values(cx, n, cl.bypass); }
Status set_no_cache(Ctx& cx, const Node& n, CacheLocConf& cl) { return add_values(cx, n, cl.no_cache); }

Status set_use_stale(Ctx& cx, const Node& n, CacheLocConf& cl) {
    if (cl.use_stale) return cx.duplicate(n);
    static constexpr std::pair<std::string_view, uint16_t> kNames[] = {
        {"error", kStaleError},     {"timeout", kStaleTimeout}, {"invalid_header", kStaleInvalidHeader},
        {"updating", kStaleUpdating}, {"http_500", kStaleHttp500}, {"http_502", kStaleHttp502},
        {"http_503", kStaleHttp503}, {"http_504", kStaleHttp504}, {"http_403", kStaleHttp403},
        {"http_404", kStaleHttp404}, {"http_429", kStaleHttp429}};
    uint16_t bits = 0;
    bool off = false;
    for (const conf::Arg& a : n.args) {
        if (a.text == "off") {
            off = true;
            continue;
        }
        bool found = false;
        for (const auto& [name, bit] : kNames)
            if (a.text == name) {
                bits |= bit;
                found = true;
            }
        if (!found) return cx.error(n, "invalid value \"" + a.text + "\"");
    }
    if (off && n.args.size() > 1) return cx.error(n, "\"off\" cannot be combined with other values");
    cl.use_stale = bits;
    return {};
}

Status postconfiguration(Ctx& cx) {
    auto* m = cx.conf<CacheMainConf>(proxy_cache_module, Level::Main);
    if (!m) return {};
    for (auto& [slot, n] : m->pending) {
        std::string_view name = n->args[0].text;
        for (CachePath* p : m->paths)
            if (p->zone_name == name) *slot = p;
        if (!*slot) return cx.error(*n, "\"proxy_cache\" zone \"" + std::string(name) + "\" is unknown");
    }
    m->pending.clear();
    return {};
}

void merge(const CacheLocConf& up, CacheLocConf& c) {
    using namespace std::chrono_literals;
    if (!c.enabled) {
        c.enabled = up.enabled;
        c.path = up.path;
        c.path_value = up.path_value;
    }
    if (!c.key) c.key = up.key;
    if (!c.valid) c.valid = up.valid;
    conf::inherit(c.methods, up.methods, method_bit("GET") | method_bit("HEAD"));
    conf::inherit(c.min_uses, up.min_uses, 1);
    if (!c.bypass) c.bypass = up.bypass;
    if (!c.no_cache) c.no_cache = up.no_cache;
    conf::inherit(c.lock, up.lock, false);
    conf::inherit(c.lock_timeout, up.lock_timeout, 5s);
    conf::inherit(c.lock_age, up.lock_age, 5s);
    conf::inherit(c.use_stale, up.use_stale, 0);
    conf::inherit(c.background_update, up.background_update, false);
    conf::inherit(c.revalidate, up.revalidate, false);
    conf::inherit(c.convert_head, up.convert_head, true);
    conf::inherit(c.max_range_offset, up.max_range_offset, UINT64_MAX);
    if (!c.purge) c.purge = up.purge;
}

// ---- the master: directories, the manager and the loader -----------------------------

CacheMainConf* main_of(const conf::Roots& g) {
    conf::ConfArray a = g[static_cast<int>(Level::Main)];
    return a ? static_cast<CacheMainConf*>(a[proxy_cache_module.index]) : nullptr;
}

// The cache directory and its parents, made by the master (a worker that
// is no longer root could not); the directory itself the workers'.
Status init_master(const conf::Roots& g, const std::optional<conf::WorkerUser>& workers) {
    CacheMainConf* m = main_of(g);
    if (!m) return {};
    for (CachePath* cp : m->paths) {
        for (size_t i = 1; i < cp->path.size(); ++i)
            if (cp->path[i] == '/') {
                std::string parent = cp->path.substr(0, i);
                if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST)
                    return make_error("mkdir() \"" + parent + "\" failed (" + std::to_string(errno) + ": " +
                                      strerror(errno) + ")");
            }
        if (auto s = make_temp_dir(cp->path, workers); !s) return s;
    }
    return {};
}

int64_t mono_ms() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// The cache manager [nginx's]: in each step, for each cache, removes the
// entries unused for "inactive", then the least recently used while the
// cache is over max_size or its file system has less than min_free, at
// most manager_files at a time and for at most manager_threshold; rests
// manager_sleep when there is more to do, a second otherwise.
std::chrono::milliseconds manager_step(void* data) {
    auto& m = *static_cast<CacheMainConf*>(data);
    bool more = false;
    std::chrono::milliseconds rest{1000};
    const time_t now = ::time(nullptr);
    for (CachePath* cp : m.paths) {
        const int64_t until = mono_ms() + cp->manager_threshold.count();
        for (;;) {
            uint64_t limit = cp->max_size;
            if (cp->min_free) {
                struct statvfs fs;
                if (::statvfs(cp->path.c_str(), &fs) == 0) {
                    const uint64_t avail = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
                    if (avail < cp->min_free) {
                        const uint64_t size = cp->index->stats().size;
                        const uint64_t need = cp->min_free - avail;
                        limit = std::min(limit, size > need ? size - need : 0);
                    }
                }
            }
            std::vector<cache::Hash> victims;
            cp->index->evict(now, limit, static_cast<size_t>(cp->manager_files), victims);
            remove_files(*cp, victims);
            if (victims.size() < cp->manager_files) break;
            if (mono_ms() >= until) {
                more = true;
                rest = std::min(rest, cp->manager_sleep);
                break;
            }
        }
    }
    (void)more;
    return rest;
}

// The cache loader: walks each cache directory once, telling the index of
// every entry file it finds (its header read, not its body) and removing
// what is not an entry: temp files their writer left (the writer's pid
// is in the name: one still alive is left alone) and files that do not
// parse. loader_files files per step, for at most loader_threshold, then
// loader_sleep of rest. An index that a previous generation already
// loaded (a reload) is left as it is.
}  // namespace

struct proxy_cache::LoaderState {
    size_t path = 0;
    std::vector<std::pair<DIR*, std::string>> dirs;  // the walk's stack
    bool started = false;
};

namespace {

bool writer_alive(std::string_view name) {
    // <hash>.<pid>.<n>.tmp
    size_t a = name.find('.');
    size_t b = a == std::string_view::npos ? a : name.find('.', a + 1);
    if (b == std::string_view::npos) return false;
    auto pid = conf::parse_number(name.substr(a + 1, b - a - 1), INT32_MAX);
    if (!pid || *pid == 0) return false;
    return ::kill(static_cast<pid_t>(*pid), 0) == 0 || errno == EPERM;
}

void load_file(CachePath& cp, const std::string& path, std::string_view name, time_t now) {
    if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
        if (!writer_alive(name)) ::unlink(path.c_str());
        return;
    }
    cache::Hash h;
    if (!cache::parse_hex(name, h)) return;  // not ours: left alone
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    std::string buf(kFirstRead, '\0');
    Result<cache::Entry> e = make_error("cache file is cut short");
    if (::fstat(fd, &st) == 0) {
        ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
        if (n > 0) {
            std::span<const char> got(buf.data(), static_cast<size_t>(n));
            auto need = cache::header_length(got);
            if (need && *need > got.size() && *need <= static_cast<size_t>(st.st_size)) {
                buf.resize(*need);
                n = ::pread(fd, buf.data(), buf.size(), 0);
                got = std::span<const char>(buf.data(), n < 0 ? 0 : static_cast<size_t>(n));
            }
            e = cache::parse_header(got, static_cast<uint64_t>(st.st_size));
        }
    }
    ::close(fd);
    if (!e || cache::hash_key(e->key) != h) {
        GH_LOG(Crit, "%s in cache file \"%s\": removed", e ? "another key" : e.error().message.c_str(),
               path.c_str());
        ::unlink(path.c_str());
        return;
    }
    const cache::Stored s = stored_of(e->meta, static_cast<uint64_t>(st.st_size));
    std::vector<cache::Hash> ev;
    cp.index->loaded(h, s, now, cp.inactive, ev);
    remove_files(cp, ev);
}

std::chrono::milliseconds loader_step(void* data) {
    auto& m = *static_cast<CacheMainConf*>(data);
    auto& st = *m.loader;
    while (st.path < m.paths.size()) {
        CachePath& cp = *m.paths[st.path];
        if (!st.started) {
            st.started = true;
            if (cp.index->stats().loaded) {
                ++st.path;
                st.started = false;
                continue;
            }
            DIR* d = ::opendir(cp.path.c_str());
            if (d) st.dirs.emplace_back(d, cp.path);
        }
        const int64_t until = mono_ms() + cp.loader_threshold.count();
        const time_t now = ::time(nullptr);
        uint64_t files = 0;
        while (!st.dirs.empty()) {
            auto& [dir, dpath] = st.dirs.back();
            errno = 0;
            dirent* de = ::readdir(dir);
            if (!de) {
                ::closedir(dir);
                st.dirs.pop_back();
                continue;
            }
            std::string_view name = de->d_name;
            if (name == "." || name == "..") continue;
            std::string p = dpath + "/" + std::string(name);
            if (de->d_type == DT_DIR) {
                DIR* sub = ::opendir(p.c_str());
                if (sub) st.dirs.emplace_back(sub, std::move(p));
                continue;
            }
            load_file(cp, p, name, now);
            if (++files >= cp.loader_files || mono_ms() >= until) return cp.loader_sleep;
        }
        cp.index->set_loaded();
        auto stats = cp.index->stats();
        GH_LOG(Notice, "http file cache: %s %.3fM, bsize: 4096", cp.path.c_str(),
               static_cast<double>(stats.size) / 1048576.0);
        ++st.path;
        st.started = false;
    }
    GH_LOG(Notice, "cache loader done");
    return std::chrono::milliseconds(-1);
}

void processes(const conf::Roots& g, std::vector<conf::ProcessSpec>& out) {
    CacheMainConf* m = main_of(g);
    if (!m || m->paths.empty()) return;
    if (!m->loader) m->loader = std::make_shared<LoaderState>();
    out.push_back({"cache manager process", manager_step, m, true});
    out.push_back({"cache loader process", loader_step, m, true});
}

// ---- variables --------------------------------------------------------------------

void v_cache_status(Request& r, VarValue& v, uintptr_t) {
    auto* f = r.ctx<Front>(proxy_cache_module);
    std::string_view s = f ? status_name(f->status()) : std::string_view();
    if (s.empty()) {
        v.not_found = true;
        return;
    }
    v.s = s;
}

// $cache_key: the key this request is (or would be) cached under, so
// that a tier of nodes can shard its cache by it: "upstream peers { hash
// $cache_key consistent; }" on a node that routes without caching, with
// the same proxy_cache_key as the owners'. Once the cache looked the
// request up, its key; before, or in a location without proxy_cache,
// the location's proxy_cache_key when set. The default key names the
// proxy_pass host, known only at the lookup: not found then.
void v_cache_key(Request& r, VarValue& v, uintptr_t) {
    if (auto* f = r.ctx<Front>(proxy_cache_module)) {
        v.s = f->key();
        return;
    }
    const auto& cl = r.loc_conf<CacheLocConf>(proxy_cache_module);
    if (!cl.key) {
        v.not_found = true;
        return;
    }
    v.s = cl.key->eval(r);
}

constexpr VariableDef kVariables[] = {
    {"upstream_cache_status", v_cache_status, 0, kVarNoCache},
    {"cache_key", v_cache_key, 0, kVarNoCache},
};

constexpr uint32_t kLoc = conf::kHttpSrvLoc;

constexpr conf::Directive kDirectives[] = {
    {"proxy_cache_path", conf::kHttp, conf::Arity{2, 255, false}, conf::custom<set_cache_path>()},
    {"proxy_cache", kLoc, conf::Take1, conf::custom<set_cache>()},
    {"proxy_cache_key", kLoc, conf::Take1, conf::custom<set_value<&CacheLocConf::key>>()},
    {"proxy_cache_valid", kLoc, conf::Take1More, conf::custom<set_valid>()},
    {"proxy_cache_methods", kLoc, conf::Take1More, conf::custom<set_methods>()},
    {"proxy_cache_min_uses", kLoc, conf::Take1, conf::number<&CacheLocConf::min_uses>()},
    {"proxy_cache_bypass", kLoc, conf::Take1More, conf::custom<set_bypass>()},
    {"proxy_no_cache", kLoc, conf::Take1More, conf::custom<set_no_cache>()},
    {"proxy_cache_lock", kLoc, conf::Take1, conf::flag<&CacheLocConf::lock>()},
    {"proxy_cache_lock_timeout", kLoc, conf::Take1, conf::duration<&CacheLocConf::lock_timeout>()},
    {"proxy_cache_lock_age", kLoc, conf::Take1, conf::duration<&CacheLocConf::lock_age>()},
    {"proxy_cache_use_stale", kLoc, conf::Take1More, conf::custom<set_use_stale>()},
    {"proxy_cache_background_update", kLoc, conf::Take1, conf::flag<&CacheLocConf::background_update>()},
    {"proxy_cache_revalidate", kLoc, conf::Take1, conf::flag<&CacheLocConf::revalidate>()},
    {"proxy_cache_convert_head", kLoc, conf::Take1, conf::flag<&CacheLocConf::convert_head>()},
    {"proxy_cache_max_range_offset", kLoc, conf::Take1, conf::size<&CacheLocConf::max_range_offset>()},
    {"proxy_cache_purge", kLoc, conf::Take1, conf::custom<set_value<&CacheLocConf::purge>>()},
};

constexpr ModuleHooks kHooks{.variables = kVariables};

}  // namespace

extern const conf::Module proxy_cache_module{
    .name = "proxy_cache",
    .directives = kDirectives,
    .main = conf::level<CacheMainConf>(),
    .loc = conf::level<CacheLocConf, merge>(),
    .postconfiguration = postconfiguration,
    .http = &kHooks,
    .processes = processes,
    .init_master = init_master,
    .idle_worker = free_kept_copies,
    .exit_worker = proxy_cache::delete_refreshes,
};

}  // namespace gatehouse::http
