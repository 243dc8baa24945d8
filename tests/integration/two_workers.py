"""A gh_server.Server with two workers, for counters that must add up
over every worker (test_stub_status.py, test_metrics.py).

The workers share one listening socket and the kernel wakes one of them
per connection (EPOLLEXCLUSIVE): sequential connections from an idle
client tend to land on the same worker. spread() sends bursts of
simultaneous connections until both workers have answered, telling them
apart by the X-Pid header ($pid) the test's config adds."""

import os
import socket
import time

import pytest

from gh_server import Response, Server, poll, require_binary


class TwoWorkers(Server):
    def __init__(self, tmp_path, http, files=None):
        super().__init__(tmp_path, http, files)
        self.conf.write_text(self.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))

    def children(self):
        """The master's children (its workers), from /proc."""
        pids = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        return pids

    @staticmethod
    def state(pid):
        """The state letter of /proc/PID/stat ("S": sleeping), "" if gone."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return ""
        return stat[stat.rindex(")") + 2:][:1]

    def burst(self, path, n):
        """n connections opened together, then a request on each; the
        responses."""
        socks = [socket.create_connection(("127.0.0.1", self.port), timeout=10) for _ in range(n)]
        out = []
        try:
            for s in socks:
                s.sendall(self.request_bytes(path))
            for s in socks:
                chunks = []
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
                out.append(Response(b"".join(chunks)))
        finally:
            for s in socks:
                s.close()
        return out

    def spread(self, path="/", per_burst=8, seconds=20):
        """Bursts of requests to `path` (200 with X-Pid) until both workers
        answered, for at most `seconds` (a worker of a loaded machine may
        be slow to take its first connection); the number sent."""
        pids = set()
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for r in self.burst(path, per_burst):
                assert r.status == 200, r.raw
                pids.add(r.header("X-Pid"))
            sent += per_burst
            if len(pids) == 2:
                return sent
        pytest.fail(f"{sent} requests, all answered by one worker")


@pytest.fixture
def two_workers(tmp_path):
    """Makes and starts a TwoWorkers: two_workers(http_block, files)."""
    require_binary()
    started = []

    def make(http, files=None, settle=None):
        s = TwoWorkers(tmp_path / str(len(started)), http, files)
        started.append(s)
        s.start()
        # Two workers (and a cache manager, with a cache), each waiting in
        # its loop: a worker still starting would leave every connection
        # to the other.
        assert poll(lambda: len(s.children()) >= 2 and all(s.state(p) == "S" for p in s.children()),
                    timeout=20)
        if settle:
            settle(s)
        return s

    yield make
    for s in started:
        s.stop()
