#include "process/proctitle.h"

#include <unistd.h>

#include <cstring>
#include <memory>

#include "core/str.h"

namespace gatehouse::process {

namespace {

// [g_start, g_end): the argument strings and the environment strings that
// followed them, contiguous as exec laid them out.
char* g_start = nullptr;
char* g_end = nullptr;
char** g_argv = nullptr;
// The environment strings' new home, for the life of the process.
std::unique_ptr<char[]> g_environ_copy;

}  // namespace

void init_proctitle(int argc, char** argv) {
    if (g_start || argc < 1 || !argv[0]) return;
    char* end = argv[0];
    for (int i = 0; i < argc && argv[i] == end; ++i) end += std::strlen(argv[i]) + 1;
    char* env_start = end;
    size_t n = 0;
    for (; environ[n] && environ[n] == end; ++n) end += std::strlen(environ[n]) + 1;
    if (n > 0) {
        g_environ_copy = std::make_unique<char[]>(static_cast<size_t>(end - env_start));
        std::memcpy(g_environ_copy.get(), env_start, static_cast<size_t>(end - env_start));
        for (size_t i = 0; i < n; ++i) environ[i] = g_environ_copy.get() + (environ[i] - env_start);
    }
    g_start = argv[0];
    g_end = end;
    g_argv = argv;
}

void set_proctitle(std::string_view title) {
    if (!g_start || g_end - g_start < 2) return;
    // The last byte stays NUL: the kernel reads up to it.
    FixedWriter w{g_start, g_end - 1};
    w.put("gatehouse: ");
    w.put(title);
    std::memset(w.p, 0, static_cast<size_t>(g_end - w.p));
    // Whoever walks argv finds the title alone.
    g_argv[1] = nullptr;
}

}  // namespace gatehouse::process
