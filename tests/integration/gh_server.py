"""A gatehouse master on loopback for one test, and raw HTTP to talk to it.

Used by test_access_log.py and test_headers.py. Each Server gets its own
prefix (conf/, logs/, html/) under the test's tmp_path, a free port, and
runs in the foreground (daemon off) as a child of the test, which stops it
by its pid. Requests are written byte for byte on a socket, so that tests
control exactly what the log line will show.
"""

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("GATEHOUSE_BIN", ROOT / "objs" / "gatehouse"))

MAIN_CONF = """\
daemon off;
master_process on;
worker_processes 1;
error_log logs/error.log info;
pid logs/gatehouse.pid;
events {{ worker_connections 128; }}
http {{
{http}
}}
"""


def require_binary():
    if not BIN.exists():
        pytest.skip(f"{BIN} is not built")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate, timeout=5.0, step=0.02):
    """Calls predicate until it returns something true; returns that, or
    None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


class Response:
    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1])
        self.headers = []  # (name, value) in order, as sent
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name, value.strip()))

    def header(self, name):
        """The value of the first header called name (any case), or None."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Server:
    """A prefix with a config, started by start(), stopped by stop()."""

    def __init__(self, tmp_path, http, files=None):
        self.prefix = pathlib.Path(tmp_path) / "gh"
        for d in ("conf", "logs", "html"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            p = self.prefix / "html" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.port = free_port()
        self.conf = self.prefix / "conf" / "gatehouse.conf"
        self.conf.write_text(MAIN_CONF.format(http=http.replace("PORT", str(self.port))))
        self.proc = None

    def cmd(self, *args):
        return [str(BIN), "-p", str(self.prefix) + "/", "-c", str(self.conf), *args]

    def test_config(self):
        """Runs "gatehouse -t"; returns (exit code, stderr)."""
        p = subprocess.run(self.cmd("-t"), capture_output=True, text=True, timeout=30)
        return p.returncode, p.stderr

    def start(self):
        # stderr goes to a file, so that a chatty process never blocks on a
        # full pipe; a session of its own lets stop() reach the workers.
        self.err_path = self.prefix / "err.txt"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return "up"
            except OSError:
                return None

        state = poll(up, timeout=10)
        if state != "up":
            self.stop()
            err = self.err_path.read_text(errors="replace")
            pytest.fail(f"gatehouse did not start ({state}): {err}{self.error_log()}")
        return self

    def stop(self):
        """TERM to the master, then KILL to its session after 10s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.proc = None

    def master_pid(self):
        return self.proc.pid

    # ---- HTTP ---------------------------------------------------------------

    def raw(self, data, timeout=5.0):
        """Sends bytes, returns every byte received until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks)

    @staticmethod
    def request_bytes(path, headers=(), method="GET", host="localhost"):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{n}: {v}" for n, v in headers]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def get(self, path, headers=(), method="GET", host="localhost"):
        return Response(self.raw(self.request_bytes(path, headers, method, host)))

    # ---- files -------------------------------------------------------------

    def log_path(self, name):
        return self.prefix / "logs" / name

    def read_log(self, name):
        p = self.log_path(name)
        return p.read_bytes() if p.exists() else b""

    def wait_lines(self, name, n, timeout=5.0):
        """The first n lines of logs/name once it has them (a log line is
        written after the response went out, so it may trail the reply)."""
        def enough():
            lines = self.read_log(name).splitlines(keepends=True)
            return lines if len(lines) >= n else None

        lines = poll(enough, timeout)
        assert lines is not None, f"{name}: fewer than {n} lines: {self.read_log(name)!r}"
        return lines[:n]

    def error_log(self):
        return self.read_log("error.log").decode("latin-1", "replace")


@pytest.fixture
def server(tmp_path):
    """Makes and starts a Server: server(http_block, files={...}). The
    http block may say PORT where the listening port goes."""
    require_binary()
    started = []

    def make(http, files=None, start=True):
        s = Server(tmp_path / str(len(started)), http, files)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()


def dechunk(body):
    """The data of a chunked body (bytes, as received); linear in its
    size, for bodies of many megabytes in many chunks."""
    out, pos = bytearray(), 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
