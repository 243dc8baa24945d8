// Tests of src/http/file_access.h: disable_symlinks's checks on a real
// directory tree, with links to files and directories, owned by this
// process or (as root) by another user.
#include "http/file_access.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>

#include "temp_dir.h"

using namespace gatehouse;
using namespace gatehouse::http;

namespace {

// The errno of a failed open, or 0 after closing what it opened.
int open_err(const std::string& path, const SymlinkCheck& c, int flags = O_RDONLY) {
    int fd = open_file(path.c_str(), flags, c);
    if (fd < 0) return errno;
    ::close(fd);
    return 0;
}

int stat_err(const std::string& path, const SymlinkCheck& c) {
    struct stat st;
    return stat_file(path.c_str(), &st, c) == 0 ? 0 : errno;
}

// A tree under a directory without links on its way from "/":
//   file, dir/inner, link -> file, dirlink -> dir, loop -> loop
struct Tree {
    test::TempDir tmp;
    std::string d;
    Tree() {
        tmp.write("file", "x");
        tmp.write("dir/inner", "y");
        d = std::filesystem::canonical(tmp.path()).string() + "/";
        REQUIRE(::symlink("file", (d + "link").c_str()) == 0);
        REQUIRE(::symlink("dir", (d + "dirlink").c_str()) == 0);
        REQUIRE(::symlink("loop", (d + "loop").c_str()) == 0);
    }
};

}  // namespace

TEST_CASE("file_access: off follows links, as open(2) does") {
    Tree t;
    SymlinkCheck off;
    CHECK(open_err(t.d + "link", off) == 0);
    CHECK(open_err(t.d + "dirlink/inner", off) == 0);
    CHECK(open_err(t.d + "loop", off) == ELOOP);
    CHECK(stat_err(t.d + "dirlink/", off) == 0);
}

TEST_CASE("file_access: on refuses a link anywhere in the path with ELOOP") {
    Tree t;
    SymlinkCheck on{Symlinks::Refuse, {}};
    CHECK(open_err(t.d + "file", on) == 0);
    CHECK(open_err(t.d + "dir/inner", on) == 0);
    CHECK(open_err(t.d + "./dir/../dir/./inner", on) == 0);
    CHECK(open_err(t.d + "link", on) == ELOOP);
    CHECK(open_err(t.d + "dirlink/inner", on) == ELOOP);
    CHECK(stat_err(t.d + "link", on) == ELOOP);
    CHECK(stat_err(t.d + "dirlink/", on) == ELOOP);
    CHECK(stat_err(t.d + "dir/", on) == 0);
    CHECK(stat_err(t.d + "missing", on) == ENOENT);
    CHECK(open_err(t.d + "file/", on) == ENOTDIR);
}

TEST_CASE("file_access: from= leaves its part unchecked, at a component boundary") {
    Tree t;
    // The link is in the part left alone.
    CHECK(open_err(t.d + "dirlink/inner", {Symlinks::Refuse, t.d + "dirlink"}) == 0);
    CHECK(open_err(t.d + "dirlink/inner", {Symlinks::Refuse, t.d + "dirlink/"}) == 0);
    // Not a prefix at a boundary: the whole path is checked.
    CHECK(open_err(t.d + "dirlink/inner", {Symlinks::Refuse, t.d + "dirl"}) == ELOOP);
    CHECK(open_err(t.d + "dirlink/inner", {Symlinks::Refuse, "/elsewhere"}) == ELOOP);
    // The whole path: nothing checked.
    CHECK(open_err(t.d + "link", {Symlinks::Refuse, t.d + "link"}) == 0);
    // Links after the part are still refused.
    CHECK(open_err(t.d + "link", {Symlinks::Refuse, t.d}) == ELOOP);
}

TEST_CASE("file_access: if_not_owner follows a link to its owner's file only") {
    Tree t;
    SymlinkCheck owner{Symlinks::RefuseIfNotOwner, {}};
    CHECK(open_err(t.d + "link", owner) == 0);
    CHECK(open_err(t.d + "dirlink/inner", owner) == 0);
    CHECK(stat_err(t.d + "dirlink/", owner) == 0);
    CHECK(stat_err(t.d + "dirlink", owner) == 0);
    CHECK(open_err(t.d + "link/", owner) == ENOTDIR);
    CHECK(open_err(t.d + "loop", owner) == ELOOP);
    CHECK(stat_err(t.d + "missing/x", owner) == ENOENT);
    if (::geteuid() != 0) return;
    // Another user's file and directory behind links of ours.
    t.tmp.write("theirs", "z");
    t.tmp.mkdir("theirdir");
    t.tmp.write("theirdir/f", "w");
    REQUIRE(::chown((t.d + "theirs").c_str(), 65534, 65534) == 0);
    REQUIRE(::chown((t.d + "theirdir").c_str(), 65534, 65534) == 0);
    REQUIRE(::symlink("theirs", (t.d + "tlink").c_str()) == 0);
    REQUIRE(::symlink("theirdir", (t.d + "tdirlink").c_str()) == 0);
    CHECK(open_err(t.d + "tlink", owner) == ELOOP);
    CHECK(stat_err(t.d + "tlink", owner) == ELOOP);
    CHECK(open_err(t.d + "tdirlink/f", owner) == ELOOP);
    // Not through a link: the owner does not matter.
    CHECK(open_err(t.d + "theirs", owner) == 0);
    CHECK(open_err(t.d + "theirdir/f", owner) == 0);
    // A link owned as its target is followed, whoever owns them.
    REQUIRE(::lchown((t.d + "tlink").c_str(), 65534, 65534) == 0);
    CHECK(open_err(t.d + "tlink", owner) == 0);
}
