// Tests that need a second process: a child that dies (a check that
// aborts), or one killed while it holds something (a lock in shared
// memory), as a crashing worker would. Readiness goes through a pipe;
// nothing sleeps.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

namespace gatehouse::test {

// Runs fn in a forked child with doctest's crash handler off and stderr
// closed (a check's message is not this test's output); returns the
// signal that ended the child, 0 when it exited.
template <typename Fn>
int dies_with(Fn fn) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::signal(SIGABRT, SIG_DFL);
        int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0) ::dup2(null, 2);
        fn();
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

// Runs fn in a forked child (it takes a lock, say), waits until fn has
// returned, then kills the child with SIGKILL and reaps it: what fn held
// is held by a dead process.
template <typename Fn>
void killed_after(Fn fn) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        fn();
        if (::write(ready[1], "x", 1) != 1) ::_exit(1);
        for (;;) ::pause();
    }
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);
    ::close(ready[1]);
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
}

}  // namespace gatehouse::test
