// Tests of the temp directories of src/http/body.h: make_temp_dir(), which
// the master runs for every temp path before the workers start, and
// open_temp_file(), which a worker runs in them.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "conf/module.h"
#include "http/body.h"
#include "http/variables.h"
#include "temp_dir.h"
#include "test_stream.h"

using gatehouse::conf::WorkerUser;
using gatehouse::http::make_temp_dir;
using gatehouse::http::open_temp_file;
using gatehouse::test::TempDir;

namespace {

struct stat stat_of(const std::string& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st;
}

}  // namespace

TEST_CASE("http/body: make_temp_dir makes a private directory once, keeps one that exists") {
    TempDir t;
    const std::string dir = t / "client_body_temp";
    REQUIRE(make_temp_dir(dir, std::nullopt).ok());
    struct stat st = stat_of(dir);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 0700);
    CHECK(st.st_uid == ::geteuid());
    // Again: nothing to do.
    REQUIRE(make_temp_dir(dir, std::nullopt).ok());
    // Ours but closed to us: opened up for the owner, the rest kept.
    REQUIRE(::chmod(dir.c_str(), 0050) == 0);
    REQUIRE(make_temp_dir(dir, std::nullopt).ok());
    CHECK((stat_of(dir).st_mode & 07777) == 0750);
    auto fd = open_temp_file(dir);
    REQUIRE(fd.ok());
    ::close(*fd);
}

TEST_CASE("http/body: make_temp_dir errors name the call, the path and errno") {
    TempDir t;
    auto s = make_temp_dir(t / "no/such", std::nullopt);
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "mkdir() \"" + (t / "no/such") + "\" failed (2: No such file or directory)");
    const std::string file = t.write("plain", "x");
    s = make_temp_dir(file, std::nullopt);
    REQUIRE_FALSE(s.ok());
    CHECK(s.message() == "temp path \"" + file + "\" is not a directory");
}

TEST_CASE("http/body: make_temp_dir gives the directory to the workers' user (as root)") {
    if (::geteuid() != 0) return;  // chown() needs root
    TempDir t;
    const std::string dir = t / "proxy_temp";
    REQUIRE(make_temp_dir(dir, WorkerUser{65534, 65534}).ok());
    struct stat st = stat_of(dir);
    CHECK(st.st_uid == 65534u);
    CHECK((st.st_mode & 07777) == 0700);
    // One that root made before (an older gatehouse did) is handed over too.
    const std::string old = t / "old";
    REQUIRE(::mkdir(old.c_str(), 0700) == 0);
    REQUIRE(make_temp_dir(old, WorkerUser{65534, 65534}).ok());
    CHECK(stat_of(old).st_uid == 65534u);
}

TEST_CASE("http/body: $request_body is not found for a body of no bytes, as nginx's") {
    // The variable is indexed where the configuration uses it.
    gatehouse::test::Site site(
        "server { listen 127.0.0.1:8080; location / { add_header X-B $request_body; return 204; } }");
    const int var = site.main().vars.find("request_body");
    REQUIRE(var >= 0);
    auto read = [&](gatehouse::test::Exchange& x) {
        REQUIRE(gatehouse::http::read_whole_body(x.r(), [](gatehouse::http::Request&) {}));
        site.settle();
        REQUIRE(x.r().body_kept->complete);
        return gatehouse::http::get_var(x.r(), var);
    };
    {
        gatehouse::test::Exchange x(site, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        CHECK(read(x).not_found);
    }
    {
        gatehouse::test::Exchange x(site, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n");
        x.stream.request_body = "ab";
        const auto& v = read(x);
        CHECK_FALSE(v.not_found);
        CHECK(v.s == "ab");
    }
}
