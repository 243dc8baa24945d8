#include "conf/syslog.h"

#include <netdb.h>

#include <cstring>
#include <optional>
#include <string>

#include "conf/values.h"

namespace gatehouse::conf {

namespace {

// RFC 3164 4.1.1, codes 0 to 23 in this order; nginx's names.
constexpr std::string_view kFacilities[] = {"kern",   "user",   "mail",   "daemon", "auth",   "intern",
                                            "lpr",    "news",   "uucp",   "clock",  "authpriv", "ftp",
                                            "ntp",    "audit",  "alert",  "cron",   "local0", "local1",
                                            "local2", "local3", "local4", "local5", "local6", "local7"};
// Codes 0 to 7: the error_log level names.
constexpr std::string_view kSeverities[] = {"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"};

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

template <size_t N>
std::optional<int> code_of(const std::string_view (&names)[N], std::string_view v) {
    for (size_t i = 0; i < N; ++i)
        if (names[i] == v) return static_cast<int>(i);
    return std::nullopt;
}

// parse_address's reason, said of the syslog server as nginx says it
// ("invalid port in syslog server \"x:y\"").
Error server_error(const Error& e, std::string_view url) {
    std::string m = e.message;
    for (std::string suffix : {" in address " + quoted(url), " in " + quoted(url)})
        if (m.size() > suffix.size() && m.compare(m.size() - suffix.size(), suffix.size(), suffix) == 0) {
            m.resize(m.size() - suffix.size());
            break;
        }
    return make_error(m + " in syslog server " + quoted(url));
}

Status set_server(std::string_view url, log::SyslogTarget& t) {
    if (url.empty()) return make_error("no host in syslog server \"\"");
    AddressRules rules;
    rules.default_port = 514;
    auto a = parse_address(url, rules);
    if (!a) return server_error(a.error(), url);
    t.server = std::string(url);
    if (a->kind != Address::Kind::Name) {
        t.addr = a->sa;
        t.addr_len = a->sa_len;
        return {};
    }
    // The first address is used [nginx].
    const auto found = lookup_host(a->host, a->port, SOCK_DGRAM);
    if (found.empty()) return make_error("host not found in syslog server " + quoted(url));
    std::memcpy(&t.addr, &found[0].sa, std::min<size_t>(found[0].len, sizeof t.addr));
    t.addr_len = static_cast<socklen_t>(std::min<size_t>(found[0].len, sizeof t.addr));
    return {};
}

// RFC 3164 4.1.3: the tag is alphanumeric, at most 32 characters; nginx
// also allows "_".
bool valid_tag_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

}  // namespace

Result<log::SyslogTarget> parse_syslog(std::string_view arg) {
    log::SyslogTarget t;
    bool server = false, facility = false, severity = false, tag = false;
    std::string_view rest = arg.substr(7);
    for (;;) {
        size_t comma = rest.find(',');
        std::string_view p = rest.substr(0, comma);
        auto value_of = [&](std::string_view name) -> std::optional<std::string_view> {
            if (p.substr(0, name.size()) != name) return std::nullopt;
            return p.substr(name.size());
        };
        if (auto v = value_of("server=")) {
            if (server) return make_error("duplicate syslog \"server\"");
            server = true;
            if (auto s = set_server(*v, t); !s) return s.error();
        } else if (auto v = value_of("facility=")) {
            if (facility) return make_error("duplicate syslog \"facility\"");
            facility = true;
            auto code = code_of(kFacilities, *v);
            if (!code) return make_error("unknown syslog facility " + quoted(*v));
            t.facility = *code;
        } else if (auto v = value_of("severity=")) {
            if (severity) return make_error("duplicate syslog \"severity\"");
            severity = true;
            auto code = code_of(kSeverities, *v);
            if (!code) return make_error("unknown syslog severity " + quoted(*v));
            t.severity = *code;
        } else if (auto v = value_of("tag=")) {
            if (tag) return make_error("duplicate syslog \"tag\"");
            tag = true;
            if (v->size() > 32) return make_error("syslog tag length exceeds 32");
            for (char c : *v)
                if (!valid_tag_char(c))
                    return make_error("syslog \"tag\" only allows alphanumeric characters and underscore");
            t.tag = std::string(*v);
        } else if (p == "nohostname") {
            t.nohostname = true;
        } else {
            return make_error("unknown syslog parameter " + quoted(p));
        }
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    if (!server) return make_error("no syslog server specified");
    return t;
}

}  // namespace gatehouse::conf
