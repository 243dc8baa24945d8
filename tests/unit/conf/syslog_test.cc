// Tests of src/conf/syslog.h: every parameter, and a row per error
// message (nginx's wording).
#include "conf/syslog.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>

using gatehouse::conf::is_syslog;
using gatehouse::conf::parse_syslog;
using gatehouse::log::SyslogTarget;

namespace {

std::string error_of(std::string_view arg) {
    auto r = parse_syslog(arg);
    REQUIRE_FALSE(r.ok());
    return r.message();
}

SyslogTarget target(std::string_view arg) {
    auto r = parse_syslog(arg);
    REQUIRE_MESSAGE(r.ok(), r.message());
    return *r;
}

uint16_t port_of(const SyslogTarget& t) {
    if (t.addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&t.addr)->sin6_port);
    return ntohs(reinterpret_cast<const sockaddr_in*>(&t.addr)->sin_port);
}

}  // namespace

TEST_CASE("conf/syslog: is_syslog") {
    CHECK(is_syslog("syslog:server=127.0.0.1"));
    CHECK(is_syslog("syslog:"));
    CHECK_FALSE(is_syslog("syslog"));
    CHECK_FALSE(is_syslog("/var/log/syslog:x"));
}

TEST_CASE("conf/syslog: the defaults are nginx's") {
    SyslogTarget t = target("syslog:server=127.0.0.1");
    CHECK(t.addr.ss_family == AF_INET);
    CHECK(t.addr_len == sizeof(sockaddr_in));
    CHECK(port_of(t) == 514);
    CHECK(t.server == "127.0.0.1");
    CHECK(t.facility == 23);
    CHECK(t.severity == 6);
    CHECK(t.tag == "nginx");
    CHECK_FALSE(t.nohostname);
}

TEST_CASE("conf/syslog: server addresses") {
    SyslogTarget t = target("syslog:server=127.0.0.1:5514");
    CHECK(port_of(t) == 5514);
    CHECK(t.server == "127.0.0.1:5514");
    t = target("syslog:server=[::1]:12345");
    CHECK(t.addr.ss_family == AF_INET6);
    CHECK(port_of(t) == 12345);
    t = target("syslog:server=[::1]");
    CHECK(port_of(t) == 514);
    t = target("syslog:server=unix:/dev/log");
    CHECK(t.addr.ss_family == AF_UNIX);
    CHECK(std::string(reinterpret_cast<const sockaddr_un*>(&t.addr)->sun_path) == "/dev/log");
    CHECK(t.server == "unix:/dev/log");
    t = target("syslog:server=localhost:600");
    CHECK((t.addr.ss_family == AF_INET || t.addr.ss_family == AF_INET6));
    CHECK(port_of(t) == 600);
}

TEST_CASE("conf/syslog: every facility and severity, in any order") {
    const char* facilities[] = {"kern",   "user",   "mail",   "daemon", "auth",   "intern", "lpr",    "news",
                                "uucp",   "clock",  "authpriv", "ftp",  "ntp",    "audit",  "alert",  "cron",
                                "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"};
    for (int i = 0; i < 24; ++i)
        CHECK(target(std::string("syslog:server=127.0.0.1,facility=") + facilities[i]).facility == i);
    const char* severities[] = {"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"};
    for (int i = 0; i < 8; ++i)
        CHECK(target(std::string("syslog:severity=") + severities[i] + ",server=127.0.0.1").severity == i);
    SyslogTarget t = target("syslog:tag=web_1,nohostname,facility=user,server=unix:/x,severity=alert");
    CHECK(t.tag == "web_1");
    CHECK(t.nohostname);
    CHECK(t.facility == 1);
    CHECK(t.severity == 1);
    CHECK(target("syslog:server=127.0.0.1,tag=" + std::string(32, 'a')).tag.size() == 32);
}

TEST_CASE("conf/syslog: error: each message") {
    CHECK(error_of("syslog:") == "unknown syslog parameter \"\"");
    CHECK(error_of("syslog:facility=user") == "no syslog server specified");
    CHECK(error_of("syslog:server=127.0.0.1,") == "unknown syslog parameter \"\"");
    CHECK(error_of("syslog:server=127.0.0.1,port=1") == "unknown syslog parameter \"port=1\"");
    CHECK(error_of("syslog:server=127.0.0.1,nohostname=on") == "unknown syslog parameter \"nohostname=on\"");
    CHECK(error_of("syslog:server=127.0.0.1,server=127.0.0.2") == "duplicate syslog \"server\"");
    CHECK(error_of("syslog:server=127.0.0.1,facility=user,facility=kern") == "duplicate syslog \"facility\"");
    CHECK(error_of("syslog:server=127.0.0.1,severity=info,severity=info") == "duplicate syslog \"severity\"");
    CHECK(error_of("syslog:server=127.0.0.1,tag=a,tag=b") == "duplicate syslog \"tag\"");
    CHECK(error_of("syslog:server=127.0.0.1,facility=local8") == "unknown syslog facility \"local8\"");
    CHECK(error_of("syslog:server=127.0.0.1,facility=") == "unknown syslog facility \"\"");
    CHECK(error_of("syslog:server=127.0.0.1,severity=warning") == "unknown syslog severity \"warning\"");
    CHECK(error_of("syslog:server=127.0.0.1,tag=" + std::string(33, 'a')) == "syslog tag length exceeds 32");
    CHECK(error_of("syslog:server=127.0.0.1,tag=a-b") ==
          "syslog \"tag\" only allows alphanumeric characters and underscore");
    CHECK(error_of("syslog:server=127.0.0.1,tag=a b") ==
          "syslog \"tag\" only allows alphanumeric characters and underscore");
    CHECK(error_of("syslog:server=") == "no host in syslog server \"\"");
    CHECK(error_of("syslog:server=127.0.0.1:x") == "invalid port in syslog server \"127.0.0.1:x\"");
    CHECK(error_of("syslog:server=127.0.0.1:0") == "invalid port in syslog server \"127.0.0.1:0\"");
    CHECK(error_of("syslog:server=127.0.0.1:70000") == "invalid port in syslog server \"127.0.0.1:70000\"");
    CHECK(error_of("syslog:server=bad/host") == "invalid host in syslog server \"bad/host\"");
    CHECK(error_of("syslog:server=::1") == "IPv6 addresses must be in brackets in syslog server \"::1\"");
    CHECK(error_of("syslog:server=[::1") == "missing \"]\" in syslog server \"[::1\"");
    CHECK(error_of("syslog:server=unix:log") == "unix socket path must be absolute in syslog server \"unix:log\"");
    CHECK(error_of("syslog:server=unix:/" + std::string(200, 'x')) ==
          "unix socket path is too long in syslog server \"unix:/" + std::string(200, 'x') + "\"");
}
