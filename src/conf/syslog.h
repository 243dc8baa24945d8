// The "syslog:" destination of "error_log" and "access_log", read as nginx
// reads it:
//
//     syslog:server=ADDR[,facility=F][,severity=S][,tag=T][,nohostname]
//
// in any order. ADDR is "host[:port]" (UDP, port 514 by default; a name
// is resolved now, at configuration time, and its first address used),
// "[ipv6][:port]" or "unix:/path" (a unix datagram socket). Defaults:
// facility local7, severity info, tag "nginx" (nginx's: log filters keyed
// on it, and nginx's test suite, keep working; "tag=" changes it).
#pragma once

#include <string_view>

#include "core/result.h"
#include "core/syslog.h"

namespace gatehouse::conf {

// True when `arg` names a syslog destination ("syslog:...").
constexpr bool is_syslog(std::string_view arg) { return arg.substr(0, 7) == "syslog:"; }

// Parses `arg` ("syslog:..."). The error is nginx's message, without the
// directive and file:line the registry adds ("unknown syslog facility
// \"x\"", "no syslog server specified", ...).
Result<log::SyslogTarget> parse_syslog(std::string_view arg);

}  // namespace gatehouse::conf
