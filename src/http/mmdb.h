// MaxMind DB files (.mmdb: GeoLite2, GeoIP2, DB-IP, IPinfo...) read with
// libmaxminddb, for the geoip2 module (modules/geoip2.cc).
//
// An MmdbFile is one opened file, mapped read-only (MMDB_MODE_MMAP): the
// pages are the page cache's, shared by every worker. An MmdbSource is
// the database a "geoip2" block names: the file in use and, with
// "auto_reload", the check that swaps it for a changed file without a
// reload of the configuration.
#pragma once

#include <maxminddb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/arena.h"
#include "core/result.h"
#include "event/fwd.h"

namespace gatehouse::http {

// One opened .mmdb file. Shared (std::shared_ptr) by the MmdbSource that
// opened it and by every request whose cached lookup refers to it: a
// lookup result (MMDB_entry_s) points at the MMDB_s and into the mapping,
// so a swap by auto_reload must not unmap a file that a request in
// flight will read again for its next variable. The last owner closes it.
class MmdbFile {
public:
    // Opens and maps `path`. The error is nginx-style, naming the call,
    // the path and libmaxminddb's reason (with errno's for I/O errors):
    //   MMDB_open() "/x.mmdb" failed (Error opening the specified MaxMind
    //   DB file: No such file or directory)
    static Result<std::shared_ptr<MmdbFile>> open(const std::string& path);

    MmdbFile() = default;
    MmdbFile(const MmdbFile&) = delete;
    MmdbFile& operator=(const MmdbFile&) = delete;
    ~MmdbFile();

    const MMDB_s& db() const { return db_; }
    uint64_t build_epoch() const { return db_.metadata.build_epoch; }
    // The record of `sa` (AF_INET or AF_INET6): MMDB_lookup_sockaddr,
    // counted in mmdb_lookup_count(). `*mmdb_error` is libmaxminddb's
    // status (an IPv6 address in an IPv4 database is an error).
    MMDB_lookup_result_s lookup(const sockaddr* sa, int* mmdb_error) const;

private:
    MMDB_s db_{};
    bool open_ = false;
};

// The lookups (tree walks) this process made: how the tests show that a
// request walks a database's tree once, whatever the number of its
// variables it reads.
uint64_t mmdb_lookup_count();

// What tells one version of a file from another: replacing a file by
// rename() changes the inode, rewriting it in place the size or mtime.
struct FileStamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    int64_t mtime_ns = -1;
    bool operator==(const FileStamp&) const = default;
};
FileStamp file_stamp(const struct stat& st);

// The database of one "geoip2" block. Owner: the configuration
// generation; each worker has its own copy after fork (the generation's
// memory), so the swap state below is per worker and needs no lock.
class MmdbSource {
public:
    // `interval`: auto_reload in milliseconds, 0 for none.
    MmdbSource(std::string path, event::Msec interval) : path_(std::move(path)), interval_(interval) {}

    // Opens the file at configuration time; `wall_sec` is now, for the
    // metadata variables. The error is MmdbFile::open's.
    Status load(int64_t wall_sec);

    // Called by a worker before each use of the database ("on use", so an
    // idle worker does nothing): with auto_reload, at most one stat() per
    // interval; a file whose identity (FileStamp) changed is opened and
    // replaces the one in use. A file that fails to open is logged at
    // "error" once per version and the file in use is kept. The open is a
    // short blocking call in the worker (open, fstat, mmap and a read of
    // the metadata), as in the third-party module.
    void check(event::Msec now, int64_t wall_sec);

    const std::string& path() const { return path_; }
    event::Msec interval() const { return interval_; }
    // The file in use; never null after load() succeeded.
    const std::shared_ptr<MmdbFile>& current() const { return current_; }
    // Wall-clock seconds of the last stat() (the load before the first)
    // and of the last swap (the load before any): $var metadata
    // last_check / last_change.
    int64_t last_check() const { return last_check_; }
    int64_t last_change() const { return last_change_; }

private:
    std::string path_;
    event::Msec interval_ = 0;
    std::shared_ptr<MmdbFile> current_;
    FileStamp loaded_;               // the file current_ came from
    FileStamp failed_;               // a version that did not open: not retried
    bool checked_ = false;           // a worker's first use stats at once
    event::Msec next_check_ = 0;     // monotonic: no stat() before
    int64_t last_check_ = 0;
    int64_t last_change_ = 0;
};

// A value of the record as the third-party module renders it: strings and
// bytes as they are, booleans "1"/"0", unsigned and signed integers in
// decimal, float and double with five decimals ("51.50740"), uint128 as
// "0x" and 32 hex digits. Maps, arrays and empty data have no text:
// false. The text is copied into `a`, never a view of the mapping: the
// request may outlive the file's turn as the one in use.
bool render_entry(const MMDB_entry_data_s& d, Arena& a, std::string_view* out);

}  // namespace gatehouse::http
