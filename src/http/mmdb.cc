#include "http/mmdb.h"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "core/log.h"

namespace gatehouse::http {

Result<std::shared_ptr<MmdbFile>> MmdbFile::open(const std::string& path) {
    auto f = std::make_shared<MmdbFile>();
    errno = 0;
    const int rc = MMDB_open(path.c_str(), MMDB_MODE_MMAP, &f->db_);
    if (rc != MMDB_SUCCESS) {
        const int err = errno;
        std::string msg = "MMDB_open() \"" + path + "\" failed (" + MMDB_strerror(rc);
        // libmaxminddb's own text does not say why the system refused.
        if ((rc == MMDB_FILE_OPEN_ERROR || rc == MMDB_IO_ERROR) && err != 0) {
            msg += ": ";
            msg += std::strerror(err);
        }
        msg += ")";
        return make_error(std::move(msg));
    }
    f->open_ = true;
    return f;
}

namespace {
uint64_t g_lookups = 0;  // per process: workers are single-threaded
}  // namespace

uint64_t mmdb_lookup_count() { return g_lookups; }

MMDB_lookup_result_s MmdbFile::lookup(const sockaddr* sa, int* mmdb_error) const {
    ++g_lookups;
    return MMDB_lookup_sockaddr(&db_, sa, mmdb_error);
}

MmdbFile::~MmdbFile() {
    if (open_) MMDB_close(&db_);
}

FileStamp file_stamp(const struct stat& st) {
    return FileStamp{st.st_dev, st.st_ino, st.st_size,
                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

Status MmdbSource::load(int64_t wall_sec) {
    // The stamp first: a file replaced between the two calls is then seen
    // as changed at the first check, never the other way round.
    struct stat st;
    if (::stat(path_.c_str(), &st) == 0) loaded_ = file_stamp(st);
    auto f = MmdbFile::open(path_);
    if (!f) return f.error();
    current_ = std::move(*f);
    last_check_ = last_change_ = wall_sec;
    return {};
}

void MmdbSource::check(event::Msec now, int64_t wall_sec) {
    if (interval_ == 0) return;
    if (checked_ && now < next_check_) return;
    checked_ = true;
    next_check_ = now + interval_;
    last_check_ = wall_sec;
    struct stat st;
    if (::stat(path_.c_str(), &st) != 0) {
        // Gone for the moment (being replaced): keep the file in use.
        GH_LOG_ERRNO(Error, errno, "stat() \"%s\" failed", path_.c_str());
        return;
    }
    const FileStamp s = file_stamp(st);
    if (s == loaded_ || s == failed_) return;
    auto f = MmdbFile::open(path_);
    if (!f) {
        failed_ = s;
        GH_LOG(Error, "%s, the database loaded before stays in use", f.message().c_str());
        return;
    }
    current_ = std::move(*f);
    loaded_ = s;
    last_change_ = wall_sec;
    GH_LOG(Info, "geoip2 database \"%s\" reloaded", path_.c_str());
}

namespace {

std::string_view copy(Arena& a, std::string_view s) {
    // An empty string is a value, not a missing one: keep a non-null view.
    if (s.empty()) return std::string_view("", 0);
    return a.dup(s);
}

template <typename T>
std::string_view decimal(Arena& a, T v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return a.dup(std::string_view(buf, static_cast<size_t>(end - buf)));
}

std::string_view fixed5(Arena& a, double v) {
    char buf[64];
    const int n = std::snprintf(buf, sizeof buf, "%.5f", v);
    if (n <= 0) return std::string_view("", 0);
    return a.dup(std::string_view(buf, std::min(static_cast<size_t>(n), sizeof buf - 1)));
}

}  // namespace

bool render_entry(const MMDB_entry_data_s& d, Arena& a, std::string_view* out) {
    if (!d.has_data) return false;
    switch (d.type) {
        case MMDB_DATA_TYPE_UTF8_STRING:
            *out = copy(a, std::string_view(d.utf8_string, d.data_size));
            return true;
        case MMDB_DATA_TYPE_BYTES:
            *out = copy(a, std::string_view(reinterpret_cast<const char*>(d.bytes), d.data_size));
            return true;
        case MMDB_DATA_TYPE_BOOLEAN:
            *out = d.boolean ? "1" : "0";
            return true;
        case MMDB_DATA_TYPE_UINT16:
            *out = decimal(a, d.uint16);
            return true;
        case MMDB_DATA_TYPE_UINT32:
            *out = decimal(a, d.uint32);
            return true;
        case MMDB_DATA_TYPE_INT32:
            *out = decimal(a, d.int32);
            return true;
        case MMDB_DATA_TYPE_UINT64:
            *out = decimal(a, d.uint64);
            return true;
        case MMDB_DATA_TYPE_UINT128: {
            char buf[2 + 32];
            buf[0] = '0';
            buf[1] = 'x';
#if MMDB_UINT128_IS_BYTE_ARRAY
            const uint8_t* bytes = d.uint128;
            for (int i = 0; i < 16; ++i) {
                buf[2 + 2 * i] = "0123456789abcdef"[bytes[i] >> 4];
                buf[3 + 2 * i] = "0123456789abcdef"[bytes[i] & 15];
            }
#else
            mmdb_uint128_t v = d.uint128;
            for (int i = 31; i >= 0; --i) {
                buf[2 + i] = "0123456789abcdef"[static_cast<unsigned>(v & 15)];
                v >>= 4;
            }
#endif
            *out = a.dup(std::string_view(buf, sizeof buf));
            return true;
        }
        case MMDB_DATA_TYPE_FLOAT:
            *out = fixed5(a, static_cast<double>(d.float_value));
            return true;
        case MMDB_DATA_TYPE_DOUBLE:
            *out = fixed5(a, d.double_value);
            return true;
        default:  // map, array: a path that stops short of a value
            return false;
    }
}

}  // namespace gatehouse::http
