// A temporary directory for tests that read files (configs, logs); removed
// with everything in it when the object dies.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace gatehouse::test {

class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "gh-test-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path_ = tmpl + "/";
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    // The directory, with a trailing slash.
    const std::string& path() const { return path_; }
    std::string operator/(std::string_view rel) const { return path_ + std::string(rel); }

    // Writes `content` to `rel` (parent directories made); returns the path.
    std::string write(std::string_view rel, std::string_view content) const {
        std::string p = *this / rel;
        std::filesystem::create_directories(std::filesystem::path(p).parent_path());
        std::ofstream f(p, std::ios::binary | std::ios::trunc);
        REQUIRE(f.good());
        f.write(content.data(), static_cast<std::streamsize>(content.size()));
        REQUIRE(f.good());
        return p;
    }

    std::string mkdir(std::string_view rel) const {
        std::string p = *this / rel;
        std::filesystem::create_directories(p);
        return p;
    }

    // The whole content of `rel` (a relative path) or of an absolute path.
    std::string read(std::string_view p) const {
        std::string full = !p.empty() && p[0] == '/' ? std::string(p) : *this / p;
        std::ifstream f(full, std::ios::binary);
        return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    }

private:
    std::string path_;
};

// Whether file permissions stop this process (they do not stop root).
inline bool permissions_apply() { return ::geteuid() != 0; }

}  // namespace gatehouse::test
