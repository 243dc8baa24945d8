// Tests of src/process/listening.h: the GATEHOUSE variable of a binary
// upgrade, written by listening_env() and read by inherit_listening(),
// which adopts only listening stream sockets.
#include "process/listening.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "core/log.h"

using gatehouse::process::inherit_listening;
using gatehouse::process::Listening;
using gatehouse::process::listening_env;

namespace {

// A socket listening on 127.0.0.1, any port, without FD_CLOEXEC (as an
// old master passes it).
int listener(uint16_t* port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

// Messages of inherit_listening go nowhere.
struct QuietLog {
    gatehouse::log::ErrorLog log;
    QuietLog() { gatehouse::log::set_error_log(&log); }
    ~QuietLog() { gatehouse::log::set_error_log(nullptr); }
};

}  // namespace

TEST_CASE("process/listening: the GATEHOUSE value lists the fds, each with ';'") {
    std::vector<Listening> ls(2);
    ls[0].fd = 5;
    ls[1].fd = 12;
    CHECK(listening_env(ls) == "5;12;");
    CHECK(listening_env({}) == "");
}

TEST_CASE("process/listening: inherited sockets are adopted with their address") {
    QuietLog quiet;
    uint16_t p1 = 0, p2 = 0;
    int a = listener(&p1), b = listener(&p2);
    auto ls = inherit_listening(std::to_string(a) + ";" + std::to_string(b) + ";");
    REQUIRE(ls.size() == 2);
    CHECK(ls[0].fd == a);
    CHECK(ls[0].text == "127.0.0.1:" + std::to_string(p1));
    CHECK(ls[1].text == "127.0.0.1:" + std::to_string(p2));
    CHECK(ls[0].spec == nullptr);
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ls[0].addr);
    CHECK(ls[0].addr.ss_family == AF_INET);
    CHECK(ntohs(sin->sin_port) == p1);
    // Close-on-exec again: the next upgrade chooses what to pass.
    CHECK((::fcntl(a, F_GETFD) & FD_CLOEXEC) != 0);
    ::close(a);
    ::close(b);
}

TEST_CASE("process/listening: what is not a listening socket is skipped") {
    QuietLog quiet;
    uint16_t port = 0;
    int l = listener(&port);
    int unbound = ::socket(AF_INET, SOCK_STREAM, 0);
    int pipefd[2];
    REQUIRE(::pipe(pipefd) == 0);
    auto ls = inherit_listening(std::to_string(unbound) + ";" + std::to_string(pipefd[0]) + ";999;" +
                                std::to_string(l));  // the last ';' is optional
    REQUIRE(ls.size() == 1);
    CHECK(ls[0].fd == l);
    // An invalid number ends the list.
    CHECK(inherit_listening("x;" + std::to_string(l) + ";").empty());
    CHECK(inherit_listening("-1;").empty());
    CHECK(inherit_listening("").empty());
    ::close(l);
    ::close(unbound);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
}

TEST_CASE("process/listening: open_listening binds each spec, or takes over a socket of `reuse`") {
    QuietLog quiet;
    // A port that was free a moment ago.
    uint16_t free_port = 0;
    ::close(listener(&free_port));
    std::vector<gatehouse::event::ListenSpec> specs(1);
    auto a = gatehouse::conf::parse_address("127.0.0.1:" + std::to_string(free_port), {});
    REQUIRE(a);
    specs[0].addr = *a;
    auto ls = gatehouse::process::open_listening(specs, nullptr);
    REQUIRE(ls);
    REQUIRE(ls->size() == 1);
    CHECK((*ls)[0].spec == &specs[0]);
    CHECK((*ls)[0].fd >= 0);
    uint16_t port = ntohs(reinterpret_cast<const sockaddr_in*>(&(*ls)[0].addr)->sin_port);
    CHECK(port == free_port);

    // A reload asking for the same address keeps the very socket.
    auto b = gatehouse::conf::parse_address("127.0.0.1:" + std::to_string(port), {});
    REQUIRE(b);
    std::vector<gatehouse::event::ListenSpec> next(1);
    next[0].addr = *b;
    std::vector<Listening> reuse = *ls;
    auto again = gatehouse::process::open_listening(next, &reuse);
    REQUIRE(again);
    REQUIRE(again->size() == 1);
    CHECK((*again)[0].fd == (*ls)[0].fd);
    CHECK((*again)[0].spec == &next[0]);
    CHECK(reuse.empty());
    gatehouse::process::close_listening(*again);
}
