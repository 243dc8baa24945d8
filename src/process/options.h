// The command line, as nginx reads it.
#pragma once

#include <string>
#include <vector>

#include "core/result.h"

namespace gatehouse::process {

struct Options {
    bool help = false;        // -h, -?
    bool version = false;     // -v
    bool build_info = false;  // -V
    bool test = false;        // -t
    bool dump = false;        // -T (implies -t)
    bool quiet = false;       // -q
    std::string prefix;       // -p, with a trailing slash once resolved
    std::string conf_file;    // -c
    std::string error_log;    // -e: "stderr" or a path
    std::string globals;      // -g
    std::string signal;       // -s stop|quit|reopen|reload
    // The command line as given, argv[0] first: a binary upgrade (USR2)
    // runs it again.
    std::vector<std::string> argv;
};

// Parses argv. Options may be grouped ("-tq") and take their value either
// attached ("-cfile") or as the next argument ("-c file"). The error says
// what was wrong ("invalid option: \"x\"").
Result<Options> parse_options(int argc, const char* const* argv);

// Resolves the prefix (default: the configured one), the config path
// (relative to the prefix) and the startup error log path.
void resolve_paths(Options& o);

const char* usage_text();

}  // namespace gatehouse::process
