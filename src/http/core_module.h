// The http core: the "http", "server" and "location" blocks and the
// directives every request needs (listen, server_name, root, limits).
//
// Conf tree, as nginx's: the http block has one struct per module at each
// of three levels (main, server, location); a server block has fresh server
// and location structs, a location block fresh location structs. After the
// http block, every server's structs are merged with the http block's and
// every location's with its parent's, so each block sees the inherited
// value of whatever it did not set. Each block keeps its arrays, so that a
// request, once its server and location are chosen, reaches every module's
// struct with one index.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "conf/module.h"
#include "conf/registry.h"

namespace gatehouse::http {

struct ListenConf {
    conf::Address addr;
    bool default_server = false;
    bool reuseport = false;
    bool deferred = false;
    bool ssl = false;
    int backlog = 511;  // "backlog=", nginx's default on Linux
    std::optional<bool> ipv6only;
    std::optional<bool> so_keepalive;
    std::string where;  // file:line, for messages
};

enum class LocMatch : uint8_t { Prefix, Exact, PrefixNoRegex, Regex, RegexCaseless, Named };

struct LocConf;

// http_core_module's server-level struct.
struct SrvConf {
    std::vector<ListenConf> listens;           // "listen"
    std::vector<std::string> server_names;     // "server_name"
    conf::ConfArray srv_confs = nullptr;       // owner: the generation arena
    conf::ConfArray loc_confs = nullptr;       // the server's location level
    std::string where;
};

// http_core_module's location-level struct. One exists for the http block
// and for each server too (their location-level defaults).
struct LocConf {
    LocMatch match = LocMatch::Prefix;
    std::string name;                      // the URI, regex or @name
    conf::ConfArray loc_confs = nullptr;   // owner: the generation arena
    std::vector<LocConf*> locations;       // nested, in config order
    LocConf* parent = nullptr;             // null for http and server level
    std::string where;

    std::optional<std::string> root;       // "root"
};

// http_core_module's main-level struct.
struct HttpMainConf {
    std::vector<SrvConf*> servers;          // owner: the generation arena
    conf::ConfArray main_confs = nullptr;
    conf::ConfArray srv_confs = nullptr;    // the http block's own levels
    conf::ConfArray loc_confs = nullptr;
};

extern const conf::Module http_core_module;

}  // namespace gatehouse::http
