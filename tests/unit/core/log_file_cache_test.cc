// Tests of src/core/log_file_cache.h: which descriptors are kept, for how
// long, and what happens when a kept file is renamed away.
#include "core/log_file_cache.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "temp_dir.h"

using gatehouse::log::LogFileCache;
using gatehouse::test::TempDir;

namespace {

// Opens `path` through `c` at `now` and writes `line`; whether the
// descriptor was kept.
bool log_line(LogFileCache& c, const std::string& path, uint64_t now, const std::string& line) {
    bool close_after = true;
    int fd = c.open(path, now, &close_after);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
    if (close_after) ::close(fd);
    return !close_after;
}

}  // namespace

TEST_CASE("core/log_file_cache: a descriptor is kept from min_uses on") {
    TempDir d;
    LogFileCache c({.max = 4, .inactive_ms = 10000, .min_uses = 2, .valid_ms = 60000});
    std::string p = d / "a.log";
    CHECK_FALSE(log_line(c, p, 0, "1\n"));
    CHECK_FALSE(c.holds(p));
    CHECK(log_line(c, p, 100, "2\n"));
    CHECK(c.holds(p));
    CHECK(log_line(c, p, 200, "3\n"));
    CHECK(d.read("a.log") == "1\n2\n3\n");
}

TEST_CASE("core/log_file_cache: at most max paths, the least recently used goes") {
    TempDir d;
    LogFileCache c({.max = 2, .inactive_ms = 10000, .min_uses = 1, .valid_ms = 60000});
    log_line(c, d / "a.log", 0, "a\n");
    log_line(c, d / "b.log", 1, "b\n");
    log_line(c, d / "a.log", 2, "a\n");  // b is now the least recently used
    log_line(c, d / "c.log", 3, "c\n");
    CHECK(c.size() == 2);
    CHECK(c.holds(d / "a.log"));
    CHECK_FALSE(c.holds(d / "b.log"));
    CHECK(c.holds(d / "c.log"));
}

TEST_CASE("core/log_file_cache: uses further apart than inactive start over") {
    TempDir d;
    LogFileCache c({.max = 4, .inactive_ms = 1000, .min_uses = 2, .valid_ms = 60000});
    std::string p = d / "a.log";
    CHECK_FALSE(log_line(c, p, 0, "1\n"));
    CHECK_FALSE(log_line(c, p, 1001, "2\n"));  // the first use was forgotten
    CHECK(log_line(c, p, 1500, "3\n"));
    // A kept descriptor not used within inactive is closed.
    log_line(c, d / "b.log", 3000, "b\n");
    CHECK_FALSE(c.holds(p));
    CHECK(c.size() == 1);
}

TEST_CASE("core/log_file_cache: a renamed file is let go once valid has passed") {
    TempDir d;
    LogFileCache c({.max = 4, .inactive_ms = 100000, .min_uses = 1, .valid_ms = 1000});
    std::string p = d / "a.log";
    CHECK(log_line(c, p, 0, "1\n"));
    REQUIRE(std::rename(p.c_str(), (d / "a.log.1").c_str()) == 0);
    // Within valid the kept descriptor is trusted: the line follows the file.
    CHECK(log_line(c, p, 500, "2\n"));
    CHECK(log_line(c, p, 1500, "3\n"));
    CHECK(d.read("a.log.1") == "1\n2\n");
    CHECK(d.read("a.log") == "3\n");
}

TEST_CASE("core/log_file_cache: clear() closes everything; a failed open is not remembered") {
    TempDir d;
    LogFileCache c({.max = 4, .inactive_ms = 10000, .min_uses = 1, .valid_ms = 60000});
    log_line(c, d / "a.log", 0, "a\n");
    c.clear();
    CHECK(c.size() == 0);
    CHECK_FALSE(c.holds(d / "a.log"));
    bool close_after = false;
    CHECK(c.open(d / "no/such/dir.log", 1, &close_after) == -1);
    CHECK(c.size() == 0);
}
