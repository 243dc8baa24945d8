"""The master/worker process model under proxied load: reloads, a worker
killed, binary upgrades (completed and rolled back), log reopening, the
retirement of an old worker's keep-alive connections, and what is in
flight across a reload (a slow proxied response, WebSockets).

A real master with two workers proxies to three real origins (Python
threads on loopback, process_helpers.NamedOrigin) through an upstream
with a keep-alive pool, while a load client (threads, http.client;
keep-alive connections and one fresh connection per request, bounded in
time and count) runs, and the test signals the master. The two
configurations the reloads alternate differ in their upstreams (which
origins, weights, a second upstream) and their locations (a URI
replaced, a regular expression location with a rewrite): every response
names its origin and the URI the origin received, and must match the
generation that its X-Conf header names. When the binary has the
upstream "zone" directive, the upstreams keep their state in one, and
its mappings are counted too. Every failure is classified:
refused connects, resets, other failures (a wrong status, a body not
whole, a response mixing generations).

Nothing sleeps blindly: each step polls the error log (the master's
"start worker process" lines, the workers' "gracefully shutting down") or
/proc. The counts of each test are printed (pytest -s shows them) and
asserted.
"""

import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, free_port, process_state, wait_for
from process_helpers import (TRICKLE_SECONDS, TRICKLE_SHA256, TRICKLE_SIZE, NamedOrigin, WsClient,
                             parse_ordinary)

WORKERS = 2
ORIGIN_NAMES = ("o1", "o2", "o3")

# What the origins see for each path the load client asks, in each
# configuration: {(origin, target)}.
EXPECTED = {
    "A": {"/p/small": {("o1", "/p/small"), ("o2", "/p/small")},
          "/v": {("o1", "/version/A"), ("o2", "/version/A")}},
    "B": {"/p/small": {("o2", "/q/small"), ("o3", "/q/small")},
          "/v": {("o1", "/version/B")}},
}
# The most upstream connections a worker keeps idle, per configuration.
POOLED = {"A": 8, "B": 4 + 2}


_ZONES = {}  # binary -> whether it has the upstream "zone" directive


def zones_supported(binary):
    """Whether the binary has the upstream "zone" directive: then the
    upstreams keep their state in a shared memory zone, which reloads must
    neither leak nor multiply."""
    if binary not in _ZONES:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "logs").mkdir()
            conf = Path(d) / "zone.conf"
            conf.write_text("events {}\nhttp { upstream u { zone probe 64k; server 127.0.0.1:1; } }\n")
            r = subprocess.run([str(binary), "-p", d + "/", "-t", "-c", str(conf)], capture_output=True,
                               text=True, timeout=DEFAULT_TIMEOUT)
            _ZONES[binary] = r.returncode == 0
    return _ZONES[binary]


def conf_text(version, ports, origins, main_extra="", zone=False):
    """Two workers, the origins o1, o2, o3. A: upstream "pool" is o1 and
    o2, /p/ passes the URI as is, /v goes to the pool as /version/A. B:
    "pool" is o2 (weight 3) and o3, /p/ is replaced by /q/, /v is a regex
    location rewriting to /version/B on upstream "solo" (o1). Both: /ws/
    (WebSocket) and /slow/ to "pool", /pid answered by the worker itself;
    every response names its worker (X-Worker) and configuration (X-Conf).
    `ports[0]` is always served, the others only by this version. With
    `zone`, the upstreams share the zone "backends"."""
    o1, o2, o3 = (o.addr for o in origins)
    z1, z2 = ("zone backends 64k; ", "zone backends; ") if zone else ("", "")
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in ports)
    if version == "A":
        upstreams = f"""
    upstream pool {{ {z1}server {o1}; server {o2}; keepalive 8; }}"""
        locations = """
        location /p/ { proxy_pass http://pool; }
        location = /v { proxy_pass http://pool/version/A; }"""
    else:
        upstreams = f"""
    upstream pool {{ {z1}server {o2} weight=3; server {o3}; keepalive 4; }}
    upstream solo {{ {z2}server {o1}; keepalive 2; }}"""
        locations = """
        location /p/ { proxy_pass http://pool/q/; }
        location ~ ^/v$ { rewrite ^ /version/B break; proxy_pass http://solo; }"""
    return f"""
worker_processes {WORKERS};
error_log logs/error.log notice;
pid logs/gatehouse.pid;
{main_extra}
events {{ worker_connections 1024; }}
http {{
    access_log logs/access.log;
    keepalive_timeout 30s;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
{upstreams}
    server {{
{listens}
        add_header X-Worker $pid always;
        add_header X-Conf {version} always;
        location = /pid {{ return 200 "$pid"; }}
        location /slow/ {{ proxy_pass http://pool; }}
        location /ws/ {{
            proxy_pass http://pool;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 30s;
        }}
{locations}
    }}
}}
"""


# ---- the error log -------------------------------------------------------------------

class ErrorLog:
    """The error log, read incrementally; lines are parsed into (pid, text)."""

    LINE = re.compile(r"^\S+ \S+ \[(\w+)\] (\d+)#\d+: (.*)$")

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.entries = []  # (level, pid, text)
        self.partial = b""

    def refresh(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.entries
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            m = self.LINE.match(line.decode("latin-1"))
            if m:
                self.entries.append((m.group(1), int(m.group(2)), m.group(3)))
        return self.entries

    def count(self, text, pid=None, not_pid=None, level=None):
        self.refresh()
        return sum(1 for lv, p, t in self.entries
                   if text in t and (pid is None or p == pid) and (not_pid is None or p != not_pid)
                   and (level is None or lv == level))

    def wait_count(self, n, text, what, timeout=DEFAULT_TIMEOUT, **kw):
        wait_for(lambda: self.count(text, **kw) >= n, timeout, what=what)

    def problems(self):
        """Lines at error level or worse."""
        self.refresh()
        return [(lv, p, t) for lv, p, t in self.entries if lv in ("error", "crit", "alert", "emerg")]


# ---- load --------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.sent = 0
        self.ok = 0
        self.refused = 0
        self.reset = 0
        self.failed = 0
        # (request start, kind, thread kind, worker pid that served the
        # connection before, or None for a new connection, repr)
        self.errors = []
        # (configuration, origin, target) of every good response
        self.served = Counter()

    @property
    def bad(self):
        return self.refused + self.reset + self.failed

    def by(self, index, value):
        return sum(n for key, n in self.served.items() if key[index] == value)

    def __repr__(self):
        return (f"sent={self.sent} ok={self.ok} failed={self.failed} resets={self.reset} "
                f"refused={self.refused}")


class LoadClient:
    """Requests through the proxy in a loop from several threads until
    stop() or a bound on time and count: `keepalive` threads each on one
    persistent connection (reconnecting when the server says "Connection:
    close"), `fresh` threads with one connection per request."""

    PATHS = ("/p/small", "/v")

    def __init__(self, port, keepalive=4, fresh=1, max_seconds=60.0, max_requests=200000):
        self.port = port
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.stats = Stats()
        self.threads = [threading.Thread(target=self._run, args=(True,), daemon=True)
                        for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self._run, args=(False,), daemon=True)
                         for _ in range(fresh)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.stats

    def sent(self):
        with self.lock:
            return self.stats.sent

    def wait_progress(self, n=5, timeout=DEFAULT_TIMEOUT):
        """Waits until n more requests have been answered."""
        start = self.sent()
        wait_for(lambda: self.sent() >= start + n, timeout, what=f"{n} more requests")

    @staticmethod
    def _check(path, status, conf, body):
        """(problem, key): what is wrong with the response, or the
        (configuration, origin, target) it shows."""
        if status != 200:
            return f"status {status}", None
        if conf not in EXPECTED:
            return f"X-Conf {conf!r}", None
        seen = parse_ordinary(body)
        if seen is None:
            return f"body of {len(body)} bytes: {body[:60]!r}", None
        if seen not in EXPECTED[conf][path]:
            return f"configuration {conf} but origin and URI {seen}", None
        return None, (conf,) + seen

    def _record(self, kind, keepalive, worker, detail, key=None, started=None):
        with self.lock:
            s = self.stats
            s.sent += 1
            if kind == "ok":
                s.ok += 1
                s.served[key] += 1
                return
            setattr(s, kind, getattr(s, kind) + 1)
            s.errors.append((started, kind, "keepalive" if keepalive else "fresh", worker, detail))

    def _run(self, keepalive):
        conn = None
        worker = None  # the pid of the worker that served the last response on conn
        i = 0
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.stats.sent >= self.max_requests:
                    break
            path = self.PATHS[i % len(self.PATHS)]
            i += 1
            if conn is None or conn.sock is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                worker = None
            headers = {} if keepalive else {"Connection": "close"}
            started = time.monotonic()
            try:
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                body = r.read()
                worker = r.getheader("X-Worker") if keepalive else None
                problem, key = self._check(path, r.status, r.getheader("X-Conf"), body)
                if problem:
                    self._record("failed", keepalive, worker, problem, started=started)
                    conn.close()
                else:
                    self._record("ok", keepalive, worker, None, key)
            except ConnectionRefusedError as e:
                self._record("refused", keepalive, worker, repr(e), started=started)
                conn.close()
            except (ConnectionResetError, BrokenPipeError) as e:
                self._record("reset", keepalive, worker, repr(e), started=started)
                conn.close()
            except (OSError, http.client.HTTPException) as e:
                self._record("failed", keepalive, worker, repr(e), started=started)
                conn.close()
            if not keepalive:
                conn.close()
        if conn:
            conn.close()


# ---- processes and descriptors -------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    """What a process's descriptors are: sockets counted, the others
    (files, pipes, epoll, eventfd...) by name, sorted."""
    sockets, others = 0, []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets += 1
        else:
            others.append(re.sub(r"\[\d+\]$", "", target))
    return sockets, sorted(others)


def shared_mappings(pid):
    """Shared anonymous mappings (shm zones) of a process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sum(1 for line in maps.splitlines() if "/dev/zero" in line or "SYSV" in line)


def alive(pid):
    """Running, not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] not in ("Z", "X", "")


def group_members(pgid):
    """Every process of a process group (the master started its own
    session): workers the master lost track of would still be here."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(d.name))
    return sorted(pids)


def read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def children_of(pid):
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


# ---- the server ----------------------------------------------------------------------

class Served:
    """A running master with its prefix, ports, origins and error log."""

    def __init__(self, gatehouse, prefix, origins, extra_ports=1, main_extra=""):
        self.prefix = prefix
        self.origins = origins
        self.port = free_port()
        self.extra = [free_port() for _ in range(extra_ports)]
        self.zone = zones_supported(gatehouse.binary)
        self.conf_a = conf_text("A", [self.port] + self.extra[:1], origins, main_extra, self.zone)
        self.conf_b = conf_text("B", [self.port] + self.extra[1:2], origins, main_extra, self.zone)
        self.g = gatehouse.start(self.conf_a, ports=[self.port], workers=WORKERS)
        self.log = ErrorLog(prefix.path / "logs" / "error.log")

    @property
    def pid(self):
        return self.g.pid

    def write_conf(self, text):
        self.prefix.write_conf(text)

    def workers(self):
        return self.g.children()

    def reload(self, text, valid=True):
        """Writes the config, sends HUP and waits until the reload is done:
        the new workers started and the old ones stopped accepting (or the
        [emerg] for an invalid config)."""
        self.write_conf(text)
        starts = self.log.count("start worker process", pid=self.pid)
        shutting = self.log.count("gracefully shutting down", not_pid=self.pid)
        emerg = self.log.count("", pid=self.pid, level="emerg")
        os.kill(self.pid, signal.SIGHUP)
        if valid:
            self.log.wait_count(starts + WORKERS, "start worker process", "new workers", pid=self.pid)
            self.log.wait_count(shutting + WORKERS, "gracefully shutting down", "old workers retiring",
                                not_pid=self.pid)
        else:
            self.log.wait_count(emerg + 1, "", "[emerg] of the invalid config", pid=self.pid, level="emerg")

    def settle(self, timeout=DEFAULT_TIMEOUT):
        """Waits until the master has WORKERS children, all idle, and
        returns them; on failure, says what the extra ones hold."""
        deadline = time.monotonic() + timeout
        while True:
            kids = self.g.children()
            if len(kids) == WORKERS and all(process_state(k) == "S" for k in kids):
                return kids
            if time.monotonic() > deadline:
                held = {k: fd_targets(k) for k in kids if alive(k)}
                pytest.fail(f"{len(kids)} workers {timeout}s after the load stopped, want {WORKERS}: "
                            f"(sockets, other descriptors) of each: {held}")
            time.sleep(0.01)

    def origin_open(self):
        return sum(o.open for o in self.origins)


@pytest.fixture
def origins():
    made = [NamedOrigin(name) for name in ORIGIN_NAMES]
    yield made
    for o in made:
        o.stop()


@pytest.fixture
def served(gatehouse, prefix, origins):
    made = []

    def make(**kw):
        s = Served(gatehouse, prefix, origins, **kw)
        made.append(s)
        return s

    yield make
    # A new binary outlives the test's own master: stop it by its pid file.
    for s in made:
        for name in ("gatehouse.pid", "gatehouse.pid.oldbin"):
            pid = read_pid(prefix.path / "logs" / name)
            if pid and pid != s.pid and alive(pid):
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda pid=pid: not alive(pid), what=f"new master {pid} to exit")


def report(name, **counts):
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in counts.items()))


def assert_clean(stats):
    assert stats.bad == 0, f"{stats}: {stats.errors[:10]}"
    assert stats.ok == stats.sent > 0


def get(port, path, close=True):
    """One request on a new connection: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        raw_request(c, path, close=close)
        return read_response(c)


# ---- reloads -----------------------------------------------------------------------

def test_fifty_reloads_under_load(served):
    """50 HUPs: the two configurations alternating (B adds one listening
    address and drops another: bound and closed each time; it changes the
    upstreams and the locations), one invalid config in the middle;
    keep-alive and fresh clients through the proxy meanwhile. Zero
    failures, resets or refused connects, every response consistent with
    one generation; afterwards the process group holds the master and its
    workers only, the master as many fds and shared mappings as before,
    the new workers the same descriptors as the first ones, and the
    origins no more connections than the new workers may keep."""
    s = served(extra_ports=2)
    fds_before = fd_count(s.pid)
    shm_before = shared_mappings(s.pid)
    first = s.g.wait_workers(WORKERS)
    assert sorted(s.workers()) == sorted(first)
    worker_fds_before = fd_targets(first[0])
    reloads = invalid = 0
    with LoadClient(s.port, keepalive=6, fresh=2) as load:
        load.wait_progress(20)
        for i in range(50):
            if i == 25:
                s.reload("worker_processes 2;\nhttp { server { listen 1.2.3.4.5; } }\n", valid=False)
                invalid += 1
            else:
                s.reload(s.conf_b if reloads % 2 == 0 else s.conf_a)
                reloads += 1
            # Every generation serves some of the load.
            load.wait_progress(10)
        load.wait_progress(20)
        stats = load.stop()
    stopped = time.monotonic()
    upstream_conns = sum(o.connections for o in s.origins)
    report("reloads", requests=stats.sent, failed=stats.failed, resets=stats.reset,
           refused=stats.refused, reloads=reloads, invalid=invalid,
           conf_A=stats.by(0, "A"), conf_B=stats.by(0, "B"),
           **{name: stats.by(1, name) for name in ORIGIN_NAMES}, upstream_connections=upstream_conns)
    current, other = (s.extra[1], s.extra[0]) if reloads % 2 else (s.extra[0], s.extra[1])
    # Old workers leave once their connections are retired (a 1s grace).
    workers = s.settle()
    settled = time.monotonic() - stopped
    group = group_members(s.pid)
    fds_after = fd_count(s.pid)
    # A worker keeps emptied pipes for the next spliced body (proxy_splice)
    # and closes them once idle (200 ms): compare it idle.
    pipes_before = worker_fds_before[1].count("pipe:")

    def idle_fds():
        now = [fd_targets(w) for w in workers]
        return now if all(others.count("pipe:") <= pipes_before for _, others in now) else None

    worker_fds_after = wait_for(idle_fds, what="the workers' kept pipes closed once idle")
    wait_for(lambda: s.origin_open() <= WORKERS * POOLED["B"], what="the old workers' upstream connections closed")
    report("after the reloads", origin_open=s.origin_open(),
           old_workers_gone_after=f"{settled:.2f}s", master_fds=f"{fds_before}->{fds_after}",
           worker_sockets=f"{worker_fds_before[0]}->{[w[0] for w in worker_fds_after]}",
           worker_other_fds=f"{len(worker_fds_before[1])}->{[len(w[1]) for w in worker_fds_after]}",
           workers=len(workers),
           shm=f"{shm_before}->{shared_mappings(s.pid)}", zone=s.zone)
    assert_clean(stats)
    assert reloads == 49 and invalid == 1
    assert s.log.count("signal 1 (SIGHUP) received, reconfiguring", pid=s.pid) == 50
    emerg = [t for lv, p, t in s.log.entries if lv == "emerg"]
    assert len(emerg) == 1 and "gatehouse.conf:2" in emerg[0]
    # Both configurations served, through every origin and location.
    for conf, paths in EXPECTED.items():
        for pairs in paths.values():
            for origin, target in pairs:
                assert stats.served[(conf, origin, target)] > 0, (conf, origin, target, stats.served)
    # The upstream keep-alive pools were used: fewer connections to the
    # origins than requests; and now that the pools are warm, 20 more
    # requests open at most one connection per worker and origin.
    assert upstream_conns < stats.sent
    before = sum(o.connections for o in s.origins)
    for _ in range(20):
        status, headers, body = get(s.port, "/p/small")
        assert (status, headers["x-conf"]) == (200, "B") and parse_ordinary(body) in EXPECTED["B"]["/p/small"]
    assert sum(o.connections for o in s.origins) - before <= WORKERS * 2
    # No process, descriptor or mapping left behind.
    assert len(workers) == WORKERS
    assert group == sorted([s.pid] + workers), group
    assert fds_after == fds_before
    assert shared_mappings(s.pid) == shm_before
    for w, (sockets, others) in zip(workers, worker_fds_after):
        extra = Counter(others) - Counter(worker_fds_before[1])
        assert others == worker_fds_before[1], f"worker {w}: descriptors the first workers had not: {extra}"
        # Two listening sockets, at most the pooled upstream connections.
        assert sockets <= 2 + POOLED["B"], (w, sockets)
        assert shared_mappings(w) == shm_before
    assert all(o.errors == [] for o in s.origins), [o.errors[:3] for o in s.origins]
    # The added address is served, the dropped one closed.
    with socket.create_connection(("127.0.0.1", current), timeout=2):
        pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=2)
    assert s.log.problems() == emerg_entries(s.log), s.log.problems()[:10]


def emerg_entries(log):
    return [(lv, p, t) for lv, p, t in log.entries if lv == "emerg"]


def raw_request(sock, path="/pid", close=False):
    req = f"GET {path} HTTP/1.1\r\nHost: t\r\n"
    if close:
        req += "Connection: close\r\n"
    sock.sendall((req + "\r\n").encode())


def read_head(sock, data=b""):
    """(status, headers, the body bytes read with the head)."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def read_response(sock):
    """One response with a Content-Length body: (status, headers, body)."""
    status, headers, body = read_head(sock)
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    assert len(body) == length, "more than the body"
    return status, headers, body


def closed_cleanly(sock, timeout):
    """True if the peer closes (EOF, not a reset) within timeout."""
    sock.settimeout(timeout)
    return sock.recv(1) == b""


def test_retiring_worker_keeps_keepalive_clients(served):
    """After a reload, an old worker's keep-alive connections are not
    closed under their clients: a request sent on one within the grace is
    answered (by the worker itself or through the proxy), with
    "Connection: close"; a connection in the middle of a request head gets
    its answer; two pipelined requests get the first answer whole (with
    "Connection: close") and a clean close, not a reset; an idle one is
    closed cleanly after the grace (1s); then the old worker exits."""
    s = served()
    conns = []
    for _ in range(8):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        raw_request(c)
        status, headers, body = read_response(c)
        assert status == 200 and headers["connection"] == "keep-alive"
        conns.append((c, int(body)))
    busy, idle, partial, pipelined = conns[0:2], conns[2:4], conns[4:6], conns[6:8]
    for c, _ in partial:
        c.sendall(b"GET /p/small HTTP/1.1\r\nHo")
    old = {pid for _, pid in conns}
    s.reload(s.conf_b)
    for (c, pid), path in zip(busy, ("/pid", "/p/small")):
        raw_request(c, path)
        status, headers, body = read_response(c)
        assert status == 200 and int(headers["x-worker"]) == pid and headers["x-conf"] == "A"
        assert path == "/pid" or parse_ordinary(body) in EXPECTED["A"][path]
        assert headers["connection"] == "close"
        assert closed_cleanly(c, 2)
        c.close()
    for c, pid in partial:
        c.sendall(b"st: t\r\n\r\n")
        status, headers, body = read_response(c)
        assert status == 200 and int(headers["x-worker"]) == pid and headers["connection"] == "close"
        assert parse_ordinary(body) in EXPECTED["A"]["/p/small"]
        assert closed_cleanly(c, 2)
        c.close()
    for c, pid in pipelined:
        c.sendall(b"GET /p/small HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(c)
        assert status == 200 and int(headers["x-worker"]) == pid and headers["connection"] == "close"
        assert parse_ordinary(body) in EXPECTED["A"]["/p/small"]
        # The second request is never answered: the connection closes
        # after lingering (until the client closes, here).
        assert closed_cleanly(c, 2)
        c.close()
    start = time.monotonic()
    for c, _ in idle:
        assert closed_cleanly(c, 5)
        c.close()
    waited = time.monotonic() - start
    assert waited < 3, f"idle connections closed after {waited:.1f}s"
    for pid in old:
        wait_for(lambda pid=pid: not alive(pid), what=f"old worker {pid} to exit")
    exited = time.monotonic() - start
    report("keepalive retirement", busy=len(busy), partial=len(partial), pipelined=len(pipelined),
           idle=len(idle), idle_closed_after=f"{waited:.2f}s", old_workers_gone_after=f"{exited:.2f}s")
    assert exited < 3, f"old workers exited {exited:.1f}s after their last connection"


def test_slow_proxied_response_across_reload(served):
    """A response that the origin trickles over 5 s, started before a
    reload, arrives whole (its SHA-256 checked) while the old worker
    proxies it to the end; that worker then answers one more request on
    the connection with "Connection: close" and exits. The origin was
    asked once: nothing was retried."""
    s = served()
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    start = time.monotonic()
    raw_request(c, "/slow/x")
    status, headers, body = read_head(c)
    assert status == 200 and headers["connection"] == "keep-alive"
    assert int(headers["content-length"]) == TRICKLE_SIZE
    worker = int(headers["x-worker"])
    h = hashlib.sha256(body)
    got = len(body)
    reloaded = False
    while got < TRICKLE_SIZE:
        if not reloaded and got >= TRICKLE_SIZE // 10:
            s.reload(s.conf_b)
            reloaded = True
            at_reload = got
        chunk = c.recv(min(65536, TRICKLE_SIZE - got))
        assert chunk, f"connection closed after {got} bytes"
        h.update(chunk)
        got += len(chunk)
        if got < TRICKLE_SIZE:
            assert alive(worker), "the old worker exited in the middle of a response"
    elapsed = time.monotonic() - start
    assert h.hexdigest() == TRICKLE_SHA256
    assert at_reload < TRICKLE_SIZE // 2, "the reload came after most of the response"
    assert elapsed >= TRICKLE_SECONDS * 0.9
    # The response said keep-alive: the next request is still answered.
    raw_request(c, "/p/small")
    status, headers, body = read_response(c)
    assert status == 200 and int(headers["x-worker"]) == worker and headers["connection"] == "close"
    assert parse_ordinary(body) in EXPECTED["A"]["/p/small"]
    assert closed_cleanly(c, 2)
    c.close()
    done = time.monotonic()
    wait_for(lambda: not alive(worker), what=f"old worker {worker} to exit")
    gone = time.monotonic() - done
    assert sum(o.trickles for o in s.origins) == 1
    assert gone < 2, f"the old worker exited {gone:.1f}s after its last connection"
    report("slow response", bytes=got, seconds=f"{elapsed:.1f}", bytes_before_reload=at_reload,
           worker=worker, worker_gone_after=f"{gone:.2f}s")


def test_websocket_across_reloads(served):
    """A WebSocket through the proxy, opened before three reloads, keeps
    echoing after each and for longer than the keep-alive retirement grace
    after the last; its old worker lives until the closing handshake, which
    ends cleanly, and then exits. A WebSocket opened after the reloads is
    served by a new worker and the last configuration's upstream."""
    s = served()
    ws = WsClient(s.port)
    assert ws.welcome in (b"welcome from o1", b"welcome from o2")
    worker = ws.worker
    ws.echo(b"before")
    for i, conf in enumerate((s.conf_b, s.conf_a, s.conf_b)):
        s.reload(conf)
        ws.echo(b"after reload %d" % i)
    last = time.monotonic()
    # Past the 1s grace an idle keep-alive connection would get.
    while time.monotonic() < last + 1.5:
        ws.echo(os.urandom(16).hex().encode() * 100)
        time.sleep(0.05)
    assert alive(worker)
    new = WsClient(s.port)
    assert new.worker != worker and new.worker in s.workers()
    assert new.welcome in (b"welcome from o2", b"welcome from o3")
    new.echo(b"new")
    assert new.close()
    assert ws.close(), "the proxy did not close cleanly after the closing handshake"
    closed = time.monotonic()
    wait_for(lambda: not alive(worker), what=f"old worker {worker} to exit")
    gone = time.monotonic() - closed
    assert sum(o.upgrades for o in s.origins) == 2
    assert gone < 2, f"the old worker exited {gone:.1f}s after its last connection"
    report("websocket across reloads", echoed=ws.echoed, reloads=3,
           open_after_last_reload=f"{closed - last:.1f}s", worker_gone_after=f"{gone:.2f}s")


def test_websocket_cut_at_worker_shutdown_timeout(served):
    """With worker_shutdown_timeout 1s, a WebSocket on an old worker keeps
    echoing after the reload, and is cut about a second later, when that
    worker exits."""
    s = served(main_extra="worker_shutdown_timeout 1s;")
    ws = WsClient(s.port)
    worker = ws.worker
    ws.echo(b"before")
    s.reload(s.conf_b)
    reloaded = time.monotonic()
    ws.echo(b"after")
    time.sleep(0.3)
    ws.echo(b"still")
    how = ws.wait_cut(5)
    cut = time.monotonic() - reloaded
    wait_for(lambda: not alive(worker), what=f"old worker {worker} to exit")
    report("websocket at worker_shutdown_timeout", echoed=ws.echoed, cut_after=f"{cut:.2f}s", how=how)
    assert 0.7 <= cut <= 2.5, cut


# ---- a worker killed -------------------------------------------------------------------

def test_kill_worker_under_load(served):
    """kill -9 of one worker under proxied load: it is replaced at once
    (logged at alert with the signal), and clients of the other worker see
    no error. Requests that can have been on the killed worker may fail
    and are counted apart: those on a connection it served, and those on a
    new connection (not known to be served yet) that started before its
    exit was logged, as the killed worker may have accepted it."""
    s = served()
    with LoadClient(s.port, keepalive=6, fresh=2) as load:
        load.wait_progress(50)
        # Started and idle before the load (Served); under it, both asleep
        # at once (wait_workers) can take long to see, with ASan above 30 s.
        victim, survivor = s.g.children()
        os.kill(victim, signal.SIGKILL)
        s.log.wait_count(1, f"worker process {victim} exited on signal 9", "the alert", level="alert")
        replaced_at = time.monotonic()

        # The survivor is busy with the load: the new worker in its loop
        # once is what says it started.
        def replaced():
            kids = s.g.children()
            new = [k for k in kids if k != survivor]
            return (len(kids) == WORKERS and victim not in kids and survivor in kids
                    and process_state(new[0]) == "S" and kids)
        workers = wait_for(replaced, what="the killed worker's replacement in its loop")
        load.wait_progress(100)
        stats = load.stop()
    assert victim not in workers and survivor in workers
    excused = [e for e in stats.errors
               if e[3] == str(victim) or (e[3] is None and e[0] <= replaced_at)]
    others = [e for e in stats.errors if e not in excused]
    report("kill -9", requests=stats.sent, failed_others=len(others),
           failed_on_killed_worker=len(excused), replaced_by=sorted(set(workers) - {survivor}))
    assert others == [], others[:10]
    assert stats.sent > 150
    assert group_members(s.pid) == sorted([s.pid] + workers)


# ---- binary upgrade -------------------------------------------------------------------

def start_upgrade(s):
    """USR2, then waits for the new master: its pid in the pid file, ours in
    .oldbin, its workers up. Returns the new master's pid."""
    logs = s.prefix.path / "logs"
    os.kill(s.pid, signal.SIGUSR2)
    wait_for(lambda: read_pid(logs / "gatehouse.pid.oldbin") == s.pid, what="gatehouse.pid.oldbin")
    new = wait_for(lambda: (p := read_pid(logs / "gatehouse.pid")) and p != s.pid and p, what="new pid file")
    s.log.wait_count(WORKERS, "start worker process", "the new binary's workers", pid=new)
    wait_for(lambda: len(children_of(new)) == WORKERS, what="the new binary's workers")
    assert new in s.g.children()
    return new


def test_binary_upgrade_rollback_under_load(served):
    """USR2, WINCH to the old master (its workers leave), HUP to it (they
    come back without the config being read), QUIT to the new master: the
    old master gets its pid file back and serves. Zero failed requests
    through the proxy."""
    s = served()
    logs = s.prefix.path / "logs"
    old_workers = set(s.g.children())
    with LoadClient(s.port) as load:
        load.wait_progress(20)
        new = start_upgrade(s)
        load.wait_progress(20)
        os.kill(s.pid, signal.SIGWINCH)
        wait_for(lambda: s.g.children() == [new], what="the old workers to exit")
        load.wait_progress(20)
        reads = s.log.count("reconfiguring", pid=s.pid)
        os.kill(s.pid, signal.SIGHUP)
        wait_for(lambda: len(s.g.children()) == WORKERS + 1, what="the old binary's workers again")
        assert s.log.count("reconfiguring", pid=s.pid) == reads
        load.wait_progress(20)
        os.kill(new, signal.SIGQUIT)
        wait_for(lambda: read_pid(logs / "gatehouse.pid") == s.pid, what="the pid file back")
        wait_for(lambda: not alive(new), what="the new master to exit")
        assert not (logs / "gatehouse.pid.oldbin").exists()
        load.wait_progress(20)
        stats = load.stop()
    restarted = s.g.wait_workers(WORKERS)
    assert not set(restarted) & old_workers
    report("upgrade rollback", requests=stats.sent, failed=stats.bad, new_master=new)
    assert_clean(stats)
    assert group_members(s.pid) == sorted([s.pid] + restarted)


def test_binary_upgrade_completed_under_load(served):
    """USR2, WINCH and QUIT to the old master: the new binary (the same
    objs/gatehouse) serves alone on the sockets it inherited, without
    binding them again. Zero failed requests through the proxy."""
    s = served()
    logs = s.prefix.path / "logs"
    with LoadClient(s.port) as load:
        load.wait_progress(20)
        new = start_upgrade(s)
        load.wait_progress(20)
        os.kill(s.pid, signal.SIGWINCH)
        wait_for(lambda: s.g.children() == [new], what="the old workers to exit")
        load.wait_progress(20)
        os.kill(s.pid, signal.SIGQUIT)
        assert s.g.wait_exit() == 0
        load.wait_progress(50)
        stats = load.stop()
    assert read_pid(logs / "gatehouse.pid") == new
    assert not (logs / "gatehouse.pid.oldbin").exists()
    assert len(children_of(new)) == WORKERS
    assert s.log.count("using inherited sockets from", pid=new) == 1
    report("upgrade completed", requests=stats.sent, failed=stats.bad, new_master=new)
    assert_clean(stats)
    os.kill(new, signal.SIGQUIT)
    wait_for(lambda: not alive(new), what="the new master to exit")
    assert not (logs / "gatehouse.pid").exists()


def test_second_usr2_is_ignored(served):
    """While a new binary runs, USR2 to either master is refused."""
    s = served()
    new = start_upgrade(s)
    os.kill(s.pid, signal.SIGUSR2)
    os.kill(new, signal.SIGUSR2)
    s.log.wait_count(2, "(SIGUSR2) received, ignoring", "both refusals")
    assert len(s.g.children()) == WORKERS + 1
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: read_pid(s.prefix.path / "logs" / "gatehouse.pid") == s.pid, what="pid file back")


# ---- log rotation --------------------------------------------------------------------

def postrotate_script(prefix):
    """The postrotate commands of contrib/logrotate, with the paths "make
    install" writes in for this prefix (the default layout)."""
    text = (Path(__file__).resolve().parents[2] / "contrib" / "logrotate").read_text()
    script = text[text.index("postrotate") + len("postrotate"):text.index("endscript")]
    return (script.replace("@SBIN_PATH@", str(prefix / "sbin" / "gatehouse"))
            .replace("@PID_PATH@", str(prefix / "logs" / "gatehouse.pid")))


def test_reopen_after_rename_under_load(served):
    """logrotate's way, with the postrotate commands of contrib/logrotate:
    rename the logs, then USR1, under proxied load. Lines go on in the new
    files, and old plus new access logs hold one line per request."""
    s = served()
    logs = s.prefix.path / "logs"
    script = postrotate_script(s.prefix.path)
    with LoadClient(s.port) as load:
        load.wait_progress(50)
        os.rename(logs / "access.log", logs / "access.log.1")
        os.rename(logs / "error.log", logs / "error.log.1")
        subprocess.run(["/bin/sh", "-c", script], check=True, timeout=DEFAULT_TIMEOUT)
        wait_for(lambda: (logs / "access.log").exists() and (logs / "access.log").stat().st_size > 0,
                 what="lines in the new access.log")
        load.wait_progress(50)
        stats = load.stop()
    os.kill(s.pid, signal.SIGHUP)  # something for the new error.log
    wait_for(lambda: "reconfiguring" in (logs / "error.log").read_text(), what="the new error.log")

    def lines(name):
        p = logs / name
        return p.read_bytes().count(b"\n") if p.exists() else 0

    wait_for(lambda: lines("access.log.1") + lines("access.log") == stats.sent,
             what=f"{stats.sent} access log lines")
    old_lines, new_lines = lines("access.log.1"), lines("access.log")
    report("USR1", requests=stats.sent, lines_old=old_lines, lines_new=new_lines)
    assert_clean(stats)
    assert old_lines > 0 and new_lines > 0
    assert "reopening logs" in (logs / "error.log.1").read_text()


# ---- worker_cpu_affinity ---------------------------------------------------------------

def allowed_cpus(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return re.search(r"Cpus_allowed_list:\s*(\S+)", status).group(1)


def test_worker_cpu_affinity(gatehouse, prefix, cli, origins):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    port = free_port()
    mask0 = format(1 << cpus[0], "b")
    mask1 = format(1 << cpus[1], "b")
    text = conf_text("A", [port], origins, f"worker_cpu_affinity {mask0} {mask1};")
    g = gatehouse.start(text, ports=[port], workers=WORKERS)
    log = ErrorLog(prefix.path / "logs" / "error.log")
    log.wait_count(2, "sched_setaffinity(): using cpu #", "both workers bound")
    got = sorted(allowed_cpus(w) for w in g.children())
    assert got == sorted([str(cpus[0]), str(cpus[1])])
    for bad, message in (("0x1", 'invalid character "x" in "worker_cpu_affinity"'),
                         ("0000", 'mask "0000" of "worker_cpu_affinity" selects no CPU'),
                         ("auto 01 10", 'invalid number of arguments in "worker_cpu_affinity"')):
        r = cli.test_conf(f"worker_cpu_affinity {bad};\nevents {{}}\n", name="bad.conf")
        assert r.returncode == 1 and message in r.stderr, r
