// gatehouse: entry point. Reads the command line, then tests the config,
// signals a running master, or starts the server.

#include "objs/gh_config.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <pcre2.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>
#if GH_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "conf/module.h"
#include "conf/parser.h"
#include "core/log.h"
#include "process/cycle.h"
#include "process/master.h"
#include "process/options.h"
#include "process/proctitle.h"
#include "process/signals.h"

using namespace gatehouse;

namespace {

void out(FILE* f, const std::string& s) { fwrite(s.data(), 1, s.size(), f); }

void print_version(bool build_info) {
    std::string s = "gatehouse version: gatehouse/" GH_VERSION "\n";
    if (build_info) {
        s += "built by " GH_COMPILER "\n";
        s += "built with " OPENSSL_VERSION_TEXT " (running with ";
        s += OpenSSL_version(OPENSSL_VERSION);
        s += ")\n";
        char pcre[64] = {};
        pcre2_config(PCRE2_CONFIG_VERSION, pcre);
        s += "built with PCRE2 " + std::to_string(PCRE2_MAJOR) + "." + std::to_string(PCRE2_MINOR) +
             " (running with " + pcre + ")\n";
        s += "built with zlib " ZLIB_VERSION " (running with " + std::string(zlibVersion()) + ")\n";
#if GH_HAVE_JEMALLOC
        const char* jv = nullptr;
        size_t len = sizeof jv;
        if (mallctl("version", &jv, &len, nullptr, 0) == 0 && jv)
            s += std::string("built with jemalloc ") + JEMALLOC_VERSION + " (running with " + jv + ")\n";
#else
        s += "built without jemalloc\n";
#endif
#if GH_ASAN
        s += "built with AddressSanitizer and UndefinedBehaviorSanitizer\n";
#endif
#if GH_DEBUG
        s += "built with debug log\n";
#endif
        s += "configure arguments: " GH_CONFIGURE_ARGS "\n";
    }
    out(stderr, s);
}

int send_signal(const process::Cycle& c, const std::string& name) {
    const std::string& path = *c.core().pid;
    if (path.empty()) {
        GH_LOG(Error, "no pid file is configured (\"pid off\"), cannot send \"%s\"", name.c_str());
        return 1;
    }
    auto text = conf::read_file(path, 64);
    if (!text) {
        GH_LOG(Error, "%s", text.message().c_str());
        return 1;
    }
    std::string_view v = *text;
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
    pid_t pid = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), pid);
    if (ec != std::errc() || p != v.data() + v.size() || pid <= 0) {
        GH_LOG(Error, "invalid PID number \"%.*s\" in \"%s\"", static_cast<int>(v.size()), v.data(),
               path.c_str());
        return 1;
    }
    int sig = process::signal_for(name);
    if (::kill(pid, sig) != 0) {
        GH_LOG_ERRNO(Error, errno, "kill(%d, %d) failed", static_cast<int>(pid), sig);
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    init_modules();
    auto parsed = process::parse_options(argc, argv);
    if (!parsed) {
        fprintf(stderr, "gatehouse: %s\n", parsed.message().c_str());
        fputs(process::usage_text(), stderr);
        return 1;
    }
    process::Options o = std::move(*parsed);
    // Options has its own copy of the command line: the memory of argv
    // (and of the environment after it) may now hold process titles.
    process::init_proctitle(argc, argv);
    if (o.version) print_version(o.build_info);
    if (o.help) {
        if (!o.version) fputs("gatehouse version: gatehouse/" GH_VERSION "\n", stderr);
        fputs(process::usage_text(), stderr);
    }
    // As nginx's: with -t or -T too, the test follows the version.
    if ((o.version || o.help) && !o.test) return 0;
    process::resolve_paths(o);
    // OpenSSL reads its configuration file and loads its default provider
    // on first use. A configuration without TLS first uses it in a worker
    // (an auth_basic password's hash on the first request that checks one),
    // where each new worker would pay it, after every reload, under the
    // first request: done here once, the workers inherit it.
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, nullptr);
    // Likewise the first fetch of MD5 (the provider's algorithm tables);
    // what is fetched stays in the library's cache. Without MD5 (a
    // FIPS-only OpenSSL) this does nothing.
    EVP_MD_free(EVP_MD_fetch(nullptr, "MD5", nullptr));

    // Until a configuration is loaded, messages go to stderr and, with -e,
    // to that file as well.
    log::ErrorLog startup;
    startup.add("stderr", log::Level::Notice);
    startup.set_startup_form(true);
    if (!o.error_log.empty() && o.error_log != "stderr") {
        startup.add(o.error_log, log::Level::Notice);
        if (auto s = startup.open(); !s) {
            fprintf(stderr, "gatehouse: [alert] could not open error log file: %s\n",
                    s.message().c_str());
        }
    }
    log::set_error_log(&startup);

    process::LoadOptions lo{o.prefix, o.conf_file, o.globals, o.error_log};
    auto cycle = process::load_cycle(lo);
    if (!cycle) {
        GH_LOG(Emerg, "%s", cycle.message().c_str());
        if (o.test) fprintf(stderr, "gatehouse: configuration file %s test failed\n", o.conf_file.c_str());
        return 1;
    }
    if (o.test) {
        // nginx also checks that the logs can be opened.
        if (auto s = process::open_logs(**cycle); !s) {
            GH_LOG(Emerg, "%s", s.message().c_str());
            fprintf(stderr, "gatehouse: configuration file %s test failed\n", o.conf_file.c_str());
            return 1;
        }
        if (!o.quiet) {
            fprintf(stderr, "gatehouse: the configuration file %s syntax is ok\n", o.conf_file.c_str());
            fprintf(stderr, "gatehouse: configuration file %s test is successful\n", o.conf_file.c_str());
        }
        if (o.dump) {
            const auto& files = (*cycle)->tree.files;
            for (size_t i = 0; i < files.size(); ++i) {
                const auto& f = files[i];
                // A file included more than once, unchanged, is shown once
                // [nginx compares the name and the content].
                bool seen = false;
                for (size_t j = 0; j < i && !seen; ++j)
                    seen = files[j]->path == f->path && files[j]->content == f->content;
                if (seen) continue;
                out(stdout, "# configuration file " + f->path + ":\n");
                out(stdout, f->content);
                if (!f->content.empty() && f->content.back() != '\n') out(stdout, "\n");
                out(stdout, "\n");
            }
            fflush(stdout);
        }
        return 0;
    }
    if (!o.signal.empty()) return send_signal(**cycle, o.signal);

    return process::run(o, std::move(*cycle));
}
