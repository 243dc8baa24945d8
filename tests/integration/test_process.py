"""The master/worker process model under load: reloads, a worker killed,
binary upgrades (completed and rolled back), log reopening, and the
retirement of an old worker's keep-alive connections.

A real master with two workers serves `return 200` and static files on
loopback while a load client (threads, http.client; keep-alive connections
and one fresh connection per request) runs, and the test signals the
master. Every request is checked (status, body), and every failure is
classified: refused connects, resets, other failures. Nothing sleeps
blindly: each step polls the error log (the master's "start worker
process" lines, the workers' "gracefully shutting down") or /proc.

The counts of each test are printed (pytest -s shows them) and asserted.
The load never goes through the proxy module; LoadClient takes any port,
so the same tests can later run against a proxied origin.
"""

import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, free_port, wait_for

WORKERS = 2

# ~20 MiB: far more than the socket buffers hold, so that a slow reader
# keeps the response in flight for seconds.
BIG_SIZE = 20 * 1024 * 1024
SMALL = bytes(range(256)) * 16  # 4 KiB, served from html/small.bin


def conf_text(ports, version, extra=""):
    """Two workers; `ports[0]` is always served, the others only by this
    version. /v answers the version, /pid the worker's pid; every response
    names its worker in X-Worker."""
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in ports)
    return f"""
worker_processes {WORKERS};
error_log logs/error.log notice;
pid logs/gatehouse.pid;
events {{ worker_connections 1024; }}
http {{
    access_log logs/access.log;
    keepalive_timeout 30s;
    server {{
{listens}
        root html;
        add_header X-Worker $pid always;
        location = /v {{ return 200 "{version}"; }}
        location = /pid {{ return 200 "$pid"; }}
        {extra}
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
        self.bodies = {}

    @property
    def bad(self):
        return self.refused + self.reset + self.failed

    def __repr__(self):
        return (f"sent={self.sent} ok={self.ok} failed={self.failed} resets={self.reset} "
                f"refused={self.refused}")


class LoadClient:
    """Requests in a loop from several threads until stop() or a bound on
    time and count: `keepalive` threads each on one persistent connection
    (reconnecting when the server says "Connection: close"), `fresh`
    threads with one connection per request."""

    PATHS = ("/small.bin", "/v", "/pid")

    def __init__(self, port, keepalive=3, fresh=1, max_seconds=60.0, max_requests=500000):
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

    def _check(self, path, status, body):
        if status != 200:
            return f"status {status}"
        if path == "/small.bin" and body != SMALL:
            return f"body of {len(body)} bytes"
        if path == "/v" and body not in (b"A", b"B"):
            return f"body {body!r}"
        if path == "/pid" and not body.isdigit():
            return f"body {body!r}"
        return None

    def _record(self, kind, keepalive, worker, detail, body=None, started=None):
        with self.lock:
            s = self.stats
            s.sent += 1
            if kind == "ok":
                s.ok += 1
                if body is not None:
                    s.bodies[body] = s.bodies.get(body, 0) + 1
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
                    return
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
                problem = self._check(path, r.status, body)
                if problem:
                    self._record("failed", keepalive, worker, problem, started=started)
                else:
                    self._record("ok", keepalive, worker, None, body if path == "/v" else None)
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


# ---- the server ----------------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


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


def read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


class Served:
    """A running master with its prefix, ports and error log."""

    def __init__(self, gatehouse, prefix, extra_ports=1, big=False):
        self.prefix = prefix
        self.port = free_port()
        self.extra = [free_port() for _ in range(extra_ports)]
        html = prefix.path / "html"
        html.mkdir(exist_ok=True)
        (html / "small.bin").write_bytes(SMALL)
        if big:
            block = hashlib.sha256(b"gatehouse").digest() * 2048  # 64 KiB
            (html / "big.bin").write_bytes(block * (BIG_SIZE // len(block)))
        self.conf_a = conf_text([self.port] + self.extra[:1], "A")
        self.conf_b = conf_text([self.port] + self.extra[1:2], "B")
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


def children_of(pid):
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


@pytest.fixture
def served(gatehouse, prefix):
    made = []

    def make(**kw):
        s = Served(gatehouse, prefix, **kw)
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


# ---- reloads -----------------------------------------------------------------------

def test_fifty_reloads_under_load(served):
    """50 HUPs: valid configs alternating (B adds one listening address and
    drops another: bound and closed each time), one invalid config in the
    middle; keep-alive and fresh clients meanwhile. Zero failures, resets
    or refused connects; afterwards the master has as many children, fds
    and shared mappings as before."""
    s = served(extra_ports=2)
    fds_before = fd_count(s.pid)
    shm_before = shared_mappings(s.pid)
    assert sorted(s.workers()) == sorted(s.g.wait_workers(WORKERS))
    reloads = invalid = 0
    with LoadClient(s.port, keepalive=3, fresh=1) as load:
        load.wait_progress(20)
        for i in range(50):
            if i == 25:
                s.reload("worker_processes 2;\nhttp { server { listen 1.2.3.4.5; } }\n", valid=False)
                invalid += 1
            else:
                s.reload(s.conf_b if reloads % 2 == 0 else s.conf_a)
                reloads += 1
            load.wait_progress(5)
        load.wait_progress(20)
        stats = load.stop()
    current, other = (s.extra[1], s.extra[0]) if reloads % 2 else (s.extra[0], s.extra[1])
    # Old workers leave once their connections are retired.
    workers = s.g.wait_workers(WORKERS)
    fds_after = fd_count(s.pid)
    report("reloads", requests=stats.sent, failed=stats.failed, resets=stats.reset,
           refused=stats.refused, reloads=reloads, invalid=invalid,
           fds=f"{fds_before}->{fds_after}", workers=len(workers))
    assert_clean(stats)
    assert reloads == 49 and invalid == 1
    assert s.log.count("signal 1 (SIGHUP) received, reconfiguring", pid=s.pid) == 50
    emerg = [t for lv, p, t in s.log.entries if lv == "emerg"]
    assert len(emerg) == 1 and "gatehouse.conf:2" in emerg[0]
    # Both configurations served.
    assert stats.bodies.get(b"A") and stats.bodies.get(b"B")
    assert fds_after == fds_before
    assert shared_mappings(s.pid) == shm_before
    assert len(workers) == WORKERS
    # The added address is served, the dropped one closed.
    with socket.create_connection(("127.0.0.1", current), timeout=2):
        pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=2)
    assert s.log.count("", level="alert") == 0


def raw_request(sock, path="/pid", close=False):
    req = f"GET {path} HTTP/1.1\r\nHost: t\r\n"
    if close:
        req += "Connection: close\r\n"
    sock.sendall((req + "\r\n").encode())


def read_response(sock):
    """One response with a Content-Length body: (status, headers, body)."""
    data = b""
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
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_cleanly(sock, timeout):
    """True if the peer closes (EOF, not a reset) within timeout."""
    sock.settimeout(timeout)
    return sock.recv(1) == b""


def test_retiring_worker_keeps_keepalive_clients(served):
    """After a reload, an old worker's keep-alive connections are not
    closed under their clients: a request sent on one within the grace is
    answered, with "Connection: close"; a connection in the middle of a
    request head gets its answer; two pipelined requests get the first
    answer whole (with "Connection: close") and a clean close, not a
    reset; an idle one is closed cleanly after the grace (1s); then the
    old worker exits."""
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
        c.sendall(b"GET /pid HTTP/1.1\r\nHo")
    old = {pid for _, pid in conns}
    s.reload(s.conf_b)
    for c, pid in busy:
        raw_request(c)
        status, headers, body = read_response(c)
        assert status == 200 and int(body) == pid
        assert headers["connection"] == "close"
        assert closed_cleanly(c, 2)
    for c, pid in partial:
        c.sendall(b"st: t\r\n\r\n")
        status, headers, body = read_response(c)
        assert status == 200 and int(body) == pid and headers["connection"] == "close"
        assert closed_cleanly(c, 2)
    for c, pid in pipelined:
        c.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /small.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(c)
        assert status == 200 and int(body) == pid and headers["connection"] == "close"
        assert closed_cleanly(c, 2)
    start = time.monotonic()
    for c, _ in idle:
        assert closed_cleanly(c, 5)
    waited = time.monotonic() - start
    assert waited < 3, f"idle connections closed after {waited:.1f}s"
    for pid in old:
        wait_for(lambda pid=pid: not alive(pid), what=f"old worker {pid} to exit")
    report("keepalive retirement", busy=len(busy), partial=len(partial), pipelined=len(pipelined),
           idle=len(idle),
           idle_closed_after=f"{waited:.2f}s")
    for c, _ in conns:
        c.close()


def test_long_response_across_reload(served):
    """A 20 MiB file read slowly (~5 s) by a client that started before a
    reload arrives whole; the old worker then answers one more request on
    that connection with "Connection: close" and exits."""
    s = served(big=True)
    expected = hashlib.sha256((s.prefix.path / "html" / "big.bin").read_bytes()).hexdigest()
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.settimeout(10)
    c.connect(("127.0.0.1", s.port))
    start = time.monotonic()
    raw_request(c, "/big.bin")
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    worker = int(re.search(rb"X-Worker: (\d+)", head).group(1))
    assert b"Connection: keep-alive" in head
    s.reload(s.conf_b)
    assert alive(worker)
    h = hashlib.sha256(body)
    got = len(body)
    duration = 5.0
    while got < BIG_SIZE:
        chunk = c.recv(min(128 * 1024, BIG_SIZE - got))
        assert chunk, f"connection closed after {got} bytes"
        h.update(chunk)
        got += len(chunk)
        # Pace the reading so that the whole body takes `duration`.
        ahead = start + duration * got / BIG_SIZE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        if got > BIG_SIZE // 2:
            assert alive(worker), "the old worker exited in the middle of a response"
    elapsed = time.monotonic() - start
    assert h.hexdigest() == expected
    assert elapsed >= duration
    # The response said keep-alive: the next request is still answered.
    raw_request(c, "/pid")
    status, headers, body = read_response(c)
    assert status == 200 and int(body) == worker and headers["connection"] == "close"
    assert closed_cleanly(c, 2)
    c.close()
    wait_for(lambda: not alive(worker), what=f"old worker {worker} to exit")
    report("long response", bytes=got, seconds=f"{elapsed:.1f}", worker=worker)


# ---- a worker killed -------------------------------------------------------------------

def test_kill_worker_under_load(served):
    """kill -9 of one worker under load: it is replaced at once (logged at
    alert with the signal), and clients of the other worker see no error.
    Requests that can have been on the killed worker may fail and are
    counted apart: those on a connection it served, and those on a new
    connection (not known to be served yet) that started before its exit
    was logged, as the killed worker may have accepted it."""
    s = served()
    with LoadClient(s.port, keepalive=4, fresh=1) as load:
        load.wait_progress(50)
        victim, survivor = s.g.wait_workers(WORKERS)
        os.kill(victim, signal.SIGKILL)
        s.log.wait_count(1, f"worker process {victim} exited on signal 9", "the alert", level="alert")
        replaced_at = time.monotonic()
        workers = s.g.wait_workers(WORKERS)
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
    old master gets its pid file back and serves. Zero failed requests."""
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


def test_binary_upgrade_completed_under_load(served):
    """USR2, WINCH and QUIT to the old master: the new binary (the same
    objs/gatehouse) serves alone on the sockets it inherited, without
    binding them again. Zero failed requests."""
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
    # The listening socket is the same one: no second bind happened.
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
    """The postrotate commands of contrib/logrotate, for this prefix."""
    text = (Path(__file__).resolve().parents[2] / "contrib" / "logrotate").read_text()
    script = text[text.index("postrotate") + len("postrotate"):text.index("endscript")]
    return script.replace("/usr/local/gatehouse", str(prefix))


def test_reopen_after_rename_under_load(served):
    """logrotate's way, with the postrotate commands of contrib/logrotate:
    rename the logs, then USR1. Lines go on in the new files, and old plus
    new access logs hold one line per request."""
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


def test_worker_cpu_affinity(gatehouse, prefix, cli):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    port = free_port()
    mask0 = format(1 << cpus[0], "b")
    mask1 = format(1 << cpus[1], "b")
    text = conf_text([port], "A").replace("worker_processes 2;",
                                          f"worker_processes 2;\nworker_cpu_affinity {mask0} {mask1};")
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
