"""Fixtures for gatehouse integration tests (pytest, Debian's /usr/bin/python3).

What a test gets:

  gatehouse_bin   the binary: $GATEHOUSE_BIN, else objs/gatehouse in the repo
  prefix          a fresh prefix directory with conf/ and logs/ (a Prefix)
  cli             runs the binary once against that prefix (a Cli)
  gatehouse       starts real masters in the foreground and always stops
                  them at teardown (a GatehouseFactory)
  free_port()     a TCP port on 127.0.0.1 that was free a moment ago
  wait_for()      polls a condition until it holds or a deadline passes

Nothing sleeps a fixed time to synchronise: readiness, exits and log lines
are polled for, with a deadline, and every process started here is stopped
by its pid (TERM, then KILL after a bounded wait).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Upper bound for anything a test waits for; generous for slow CI machines
# and sanitizer builds, never reached when things work.
# A bound on waits, never a sleep: generous, so that a sanitizer build on a
# busy 2-core machine (workers start several times slower) still passes.
DEFAULT_TIMEOUT = 30.0


def wait_for(condition, timeout=DEFAULT_TIMEOUT, interval=0.01, what="condition"):
    """Polls `condition()` until it returns a true value, which is returned.

    Fails the test with `what` in the message if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on when asked."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def process_state(pid):
    """The state letter of /proc/PID/stat ("R", "S", "Z"...), or "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:][:1]


class Prefix:
    """A gatehouse prefix directory: conf/ for configs, logs/ for logs."""

    def __init__(self, path):
        self.path = Path(path)
        self.conf_dir = self.path / "conf"
        self.logs_dir = self.path / "logs"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, rel):
        return self.path / rel

    def write(self, rel, text):
        """Writes `text` to `rel` under the prefix; returns the path."""
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def write_conf(self, text, name="gatehouse.conf"):
        """Writes conf/`name`; returns its absolute path."""
        return self.write(Path("conf") / name, text)

    def read(self, rel):
        """The text of `rel` under the prefix, or "" if it does not exist."""
        p = self.path / rel
        return p.read_text(errors="replace") if p.exists() else ""

    @property
    def pid_file(self):
        """Where a config without "pid" has the master write its pid."""
        return self.logs_dir / "gatehouse.pid"


class Result:
    """What one run of the binary did."""

    def __init__(self, args, returncode, stdout, stderr):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self):
        return (f"Result(args={self.args!r}, returncode={self.returncode}, "
                f"stdout={self.stdout!r}, stderr={self.stderr!r})")


def run_binary(binary, args, timeout=DEFAULT_TIMEOUT, cwd=None, env=None):
    """Runs `binary args` to completion, capturing stdout and stderr."""
    argv = [str(binary)] + [str(a) for a in args]
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                       errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(argv, p.returncode, p.stdout, p.stderr)


class Cli:
    """Runs the binary once, with `-p PREFIX` unless told not to."""

    def __init__(self, binary, prefix):
        self.binary = binary
        self.prefix = prefix

    def run(self, *args, with_prefix=True, timeout=DEFAULT_TIMEOUT, cwd=None):
        argv = (["-p", str(self.prefix.path)] if with_prefix else []) + list(args)
        return run_binary(self.binary, argv, timeout=timeout, cwd=cwd)

    def test_conf(self, text, *args, name="gatehouse.conf"):
        """Writes conf/`name` and runs `-t -c conf/name` on it."""
        self.prefix.write_conf(text, name)
        return self.run("-t", "-c", f"conf/{name}", *args)


class Gatehouse:
    """A master started in the foreground (-g "daemon off;").

    Its stdout and stderr go to files in the prefix (out.txt, err.txt), so
    a chatty process never blocks on a full pipe. It runs in a session of
    its own: if it has to be killed, its workers go with it.
    """

    def __init__(self, binary, prefix, conf="conf/gatehouse.conf", args=(),
                 globals_="daemon off;"):
        self.binary = binary
        self.prefix = prefix
        self.conf = conf
        self.stdout_path = prefix.path / "out.txt"
        self.stderr_path = prefix.path / "err.txt"
        argv = [str(binary), "-p", str(prefix.path), "-c", conf]
        if globals_:
            argv += ["-g", globals_]
        argv += [str(a) for a in args]
        self.argv = argv
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)
        self.pid = self.proc.pid

    def running(self):
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll()

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stdout(self):
        return self.stdout_path.read_text(errors="replace")

    def _alive_or_fail(self, what):
        if not self.running():
            pytest.fail(f"gatehouse exited with {self.proc.returncode} while waiting for "
                        f"{what}; stderr:\n{self.stderr()}")

    def wait_ready(self, ports=(), pid_file=None, workers=None, timeout=DEFAULT_TIMEOUT):
        """Polls until every port in `ports` accepts connections, or, when
        none is given, until `pid_file` (default logs/gatehouse.pid) holds
        this process's pid; then, if `workers` is given, until the master
        has that many children, all idle (see wait_workers). Fails early if
        the process exits."""
        if ports:
            for port in ports:
                def up(port=port):
                    self._alive_or_fail(f"port {port}")
                    return port_open(port)
                wait_for(up, timeout, what=f"gatehouse to listen on port {port}")
        else:
            path = Path(pid_file) if pid_file else self.prefix.pid_file

            def pid_written():
                self._alive_or_fail(f"pid file {path}")
                try:
                    return path.read_text().strip() == str(self.pid)
                except OSError:
                    return False
            wait_for(pid_written, timeout, what=f"pid {self.pid} in {path}")
        if workers is not None:
            self.wait_workers(workers, timeout)
        return self

    def children(self):
        """The pids of the master's child processes (its workers)."""
        pids = []
        try:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
        return pids

    def wait_workers(self, count, timeout=DEFAULT_TIMEOUT):
        """Polls until the master has `count` children and each one sleeps,
        that is, has finished starting and waits in its event loop.

        The pid file is written before the workers are forked; a test that
        signals the master right after it would race the workers' start.
        """
        def idle():
            self._alive_or_fail(f"{count} idle workers")
            kids = self.children()
            return len(kids) == count and all(process_state(k) == "S" for k in kids)
        wait_for(idle, timeout, what=f"{count} idle worker processes of {self.pid}")
        return self.children()

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        """Waits for the process to exit by itself; returns its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gatehouse (pid {self.pid}) did not exit within {timeout}s")

    def signal(self, sig):
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """TERM, then KILL (the whole session) if it has not exited in time."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        try:
            os.kill(self.pid, signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            return self.proc.wait()
        except subprocess.TimeoutExpired:
            # start_new_session made the master its session's group leader,
            # so the group's id is its pid: this reaches its workers only.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return self.proc.wait()


class GatehouseFactory:
    """Starts masters for one test and stops every one of them at teardown."""

    def __init__(self, binary, prefix):
        self.binary = binary
        self.prefix = prefix
        self.started = []

    def start(self, conf_text=None, conf="conf/gatehouse.conf", args=(),
              globals_="daemon off;", ports=(), pid_file=None, workers=None, wait=True):
        """Writes `conf_text` to `conf` if given, starts the master and, with
        `wait`, waits until it is ready (see Gatehouse.wait_ready)."""
        if conf_text is not None:
            self.prefix.write(conf, conf_text)
        g = Gatehouse(self.binary, self.prefix, conf=conf, args=args, globals_=globals_)
        self.started.append(g)
        if wait:
            g.wait_ready(ports=ports, pid_file=pid_file, workers=workers)
        return g

    def stop_all(self):
        for g in reversed(self.started):
            g.stop()


@pytest.fixture(scope="session")
def gatehouse_bin():
    p = Path(os.environ.get("GATEHOUSE_BIN", REPO_ROOT / "objs" / "gatehouse"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    if not os.access(p, os.X_OK):
        pytest.fail(f"gatehouse binary not found at {p}: run make, or set GATEHOUSE_BIN")
    return p


@pytest.fixture
def tmp_path(tmp_path):
    """pytest's tmp_path, unless the tests run as root: the workers then
    run as nobody (gatehouse's default, as nginx's), and pytest's temporary
    directories (mode 0700 under /tmp/pytest-of-root) are closed to them.
    As root, a test gets a directory of its own that others may traverse,
    as a real document root must be, removed after the test."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="gatehouse-test-"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def prefix(tmp_path):
    return Prefix(tmp_path / "prefix")


@pytest.fixture
def cli(gatehouse_bin, prefix):
    return Cli(gatehouse_bin, prefix)


@pytest.fixture
def gatehouse(gatehouse_bin, prefix):
    factory = GatehouseFactory(gatehouse_bin, prefix)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def version_text(gatehouse_bin):
    """The -V output (stderr), for skipping tests of modules not built."""
    return run_binary(gatehouse_bin, ["-V"]).stderr


@pytest.fixture
def origin():
    """origin(handler=ok_handler, **kw) starts an Origin (origins.py);
    every one made is stopped at teardown."""
    from origins import Origin, ok_handler

    made = []

    def make(handler=ok_handler, **kw):
        o = Origin(handler, **kw)
        made.append(o)
        return o

    yield make
    for o in made:
        o.stop()
