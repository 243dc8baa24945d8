#include "process/options.h"

#include <unistd.h>

#include <cstring>

namespace gatehouse::process {

const char* usage_text() {
    return "Usage: gatehouse [-?hvVtTq] [-s signal] [-p prefix]\n"
           "                 [-e filename] [-c filename] [-g directives]\n"
           "\n"
           "Options:\n"
           "  -?,-h         : this help\n"
           "  -v            : show version and exit\n"
           "  -V            : show version and build options and exit\n"
           "  -t            : test configuration and exit\n"
           "  -T            : test configuration, dump it and exit\n"
           "  -q            : suppress non-error messages during configuration testing\n"
           "  -s signal     : send signal to a master process: stop, quit, reopen, reload\n"
           "  -p prefix     : set prefix path (default: " GH_PREFIX ")\n"
           "  -e filename   : set error log file (default: " GH_ERROR_LOG_PATH ")\n"
           "  -c filename   : set configuration file (default: " GH_CONF_PATH ")\n"
           "  -g directives : set global directives out of configuration file\n";
}

Result<Options> parse_options(int argc, const char* const* argv) {
    Options o;
    o.argv.assign(argv, argv + argc);
    for (int i = 1; i < argc; ++i) {
        const char* p = argv[i];
        if (*p++ != '-' || *p == '\0')
            return make_error(std::string("invalid option: \"") + argv[i] + "\"");
        while (*p) {
            char f = *p++;
            std::string* value = nullptr;
            const char* what = nullptr;
            switch (f) {
                case '?': case 'h': o.help = true; continue;
                case 'v': o.version = true; continue;
                case 'V': o.version = o.build_info = true; continue;
                case 't': o.test = true; continue;
                case 'T': o.test = o.dump = true; continue;
                case 'q': o.quiet = true; continue;
                case 'p': value = &o.prefix; what = "-p"; break;
                case 'c': value = &o.conf_file; what = "-c"; break;
                case 'e': value = &o.error_log; what = "-e"; break;
                case 'g': value = &o.globals; what = "-g"; break;
                case 's': value = &o.signal; what = "-s"; break;
                default:
                    return make_error(std::string("invalid option: \"") + f + "\"");
            }
            if (*p) {
                *value = p;
            } else if (i + 1 < argc) {
                *value = argv[++i];
            } else {
                return make_error(std::string("option \"") + what + "\" requires " +
                                  (f == 'p'   ? "directory name"
                                   : f == 'g' ? "parameter"
                                   : f == 's' ? "parameter"
                                              : "file name"));
            }
            if (f == 's' && *value != "stop" && *value != "quit" && *value != "reopen" &&
                *value != "reload")
                return make_error("invalid option: \"-s " + *value + "\"");
            break;
        }
    }
    return o;
}

void resolve_paths(Options& o) {
    if (o.prefix.empty()) o.prefix = GH_PREFIX;
    if (o.prefix[0] != '/') {
        // Messages and the daemon (which changes directory) need absolute paths.
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd)) o.prefix = std::string(cwd) + "/" + o.prefix;
    }
    if (o.prefix.back() != '/') o.prefix += '/';
    if (o.conf_file.empty()) o.conf_file = GH_CONF_PATH;
    if (o.conf_file[0] != '/') o.conf_file = o.prefix + o.conf_file;
    if (!o.error_log.empty() && o.error_log != "stderr" && o.error_log[0] != '/')
        o.error_log = o.prefix + o.error_log;
}

}  // namespace gatehouse::process
