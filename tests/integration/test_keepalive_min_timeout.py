"""keepalive_min_timeout (nginx 1.27.4): a keep-alive connection idle for
less than it is neither taken back by a worker short of
worker_connections nor closed by a retiring worker (SIGQUIT, a reload),
so that a client sending its next request soon after a response is not
closed under it; keepalive_timeout still ends it as usual. HTTP/2 is not
concerned, as in nginx: a retiring worker's GOAWAY tells the client which
requests were not taken.

The real master and its worker on loopback (gh_server.Server), clients on
raw sockets. Nothing sleeps: each wait is a read with a deadline, which
either sees what the server did or proves the connection still open. A
retiring worker keeps any idle connection for a grace of one second
(kRetireGrace, see "Retiring workers" in gatehouse(8)); the timeouts here
are chosen well apart from it.
"""

import os
import signal
import socket
import time

import pytest

from gh_server import Response, poll, server  # noqa: F401  (fixture)

SITE = """
    {extra}
    server {{
        listen 127.0.0.1:PORT;
        location / {{ return 200 "$pid"; }}
    }}
"""

GRACE = 1.0  # a retiring worker's grace for any idle connection (kRetireGrace)


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def ask(c, path="/"):
    """One request on c; its response, read whole (a Content-Length body)."""
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(4096)
        assert d, f"closed before a response: {data!r}"
        data += d
    r = Response(data)
    n = int(r.header("Content-Length"))
    while len(r.body) < n:
        d = c.recv(4096)
        assert d, "closed in the middle of a body"
        r.body += d
    return r


def open_for(c, seconds):
    """True if c stays open, nothing arriving, for `seconds`."""
    c.settimeout(seconds)
    try:
        got = c.recv(100)
    except socket.timeout:
        return True
    finally:
        c.settimeout(10)
    raise AssertionError(f"the connection ended or sent {got!r}")


def closed_after(c, timeout=10):
    """Waits for the server's clean close (EOF, not a reset): when it came."""
    c.settimeout(timeout)
    assert c.recv(100) == b""
    return time.monotonic()


def start(server, extra, workers=1, connections=None):
    s = server(SITE.format(extra=extra), start=False)
    conf = s.conf.read_text().replace("worker_processes 1;", f"worker_processes {workers};")
    if connections:
        conf = conf.replace("worker_connections 128;", f"worker_connections {connections};")
    s.conf.write_text(conf)
    return s.start()


def kept_alive(s, n):
    """n connections that made one request each, now idle: [(socket, worker pid)]."""
    out = []
    for _ in range(n):
        c = connect(s.port)
        r = ask(c)
        assert r.status == 200 and r.header("Connection") == "keep-alive"
        out.append((c, int(r.body)))
    return out


def retiring(s, pid):
    """Once the worker logged that it is shutting down gracefully."""
    assert poll(lambda: f"{pid}#0: gracefully shutting down" in s.error_log(), timeout=10), s.error_log()


# ---- graceful shutdown and reload ----------------------------------------------


def test_an_idle_connection_outlives_sigquit_until_keepalive_min_timeout(server):
    s = start(server, "keepalive_min_timeout 4s; keepalive_timeout 60s;")
    (a, pid), (b, _) = kept_alive(s, 2)
    idle_since = time.monotonic()
    os.kill(s.master_pid(), signal.SIGQUIT)
    retiring(s, pid)
    quit_at = time.monotonic()
    # Past the grace any idle connection gets, both are still open; a
    # request on one is answered, "Connection: close", and it closes.
    assert open_for(a, GRACE + 0.5)
    r = ask(a)
    assert (r.status, int(r.body), r.header("Connection")) == (200, pid, "close")
    closed_after(a)
    # The other closes once its keepalive_min_timeout is over (counted
    # from its response), and the worker, then the master, exit.
    idle = closed_after(b) - idle_since
    assert 3.5 <= idle < 6, f"closed after {idle:.2f}s idle"
    assert s.proc.wait(timeout=10) == 0
    assert time.monotonic() - quit_at < 8


def test_without_it_an_idle_connection_closes_after_the_grace(server):
    s = start(server, "keepalive_timeout 60s;")
    (a, pid), = kept_alive(s, 1)
    os.kill(s.master_pid(), signal.SIGQUIT)
    retiring(s, pid)
    quit_at = time.monotonic()
    waited = closed_after(a) - quit_at
    assert waited < GRACE + 1, f"closed {waited:.2f}s after SIGQUIT"
    assert s.proc.wait(timeout=10) == 0


def test_across_a_reload_the_old_worker_answers_on_a_young_connection(server):
    s = start(server, "keepalive_min_timeout 4s; keepalive_timeout 60s;")
    (a, old), (b, _) = kept_alive(s, 2)
    s.conf.write_text(s.conf.read_text() + "\n# reloaded\n")
    os.kill(s.master_pid(), signal.SIGHUP)
    retiring(s, old)
    assert open_for(a, GRACE + 0.5)
    r = ask(a)
    assert (r.status, int(r.body), r.header("Connection")) == (200, old, "close")
    closed_after(a)
    # New connections reach the new worker meanwhile.
    c = connect(s.port)
    new = int(ask(c).body)
    c.close()
    assert new != old
    closed_after(b)
    assert poll(lambda: not os.path.exists(f"/proc/{old}"), timeout=10), "the old worker did not exit"


def test_keepalive_timeout_still_ends_a_young_connection(server):
    s = start(server, "keepalive_min_timeout 30s; keepalive_timeout 1s;")
    (a, _), = kept_alive(s, 1)
    since = time.monotonic()
    idle = closed_after(a) - since
    assert idle < 3, f"closed after {idle:.2f}s"
    # Retiring, too: the keepalive_timeout, not the minimum, is the bound.
    (b, pid), = kept_alive(s, 1)
    since = time.monotonic()
    os.kill(s.master_pid(), signal.SIGQUIT)
    retiring(s, pid)
    idle = closed_after(b) - since
    assert idle < 3, f"closed after {idle:.2f}s"
    assert s.proc.wait(timeout=10) == 0


# ---- a worker short of connections -------------------------------------------------


def full_worker(server, extra):
    """A worker of four slots, four idle keep-alive clients, and a fifth
    client that sent a request: (server, the idle [(socket, pid)], the
    fifth, when the first of the four became idle)."""
    s = start(server, extra + " keepalive_timeout 60s;", connections=4)
    idle = kept_alive(s, 4)
    first_idle = time.monotonic()
    fifth = connect(s.port)
    fifth.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return s, idle, fifth, first_idle


def served_in_a_slot_taken_back(s, idle, fifth, first_idle):
    """The fifth client's answer, in the slot of the client idle longest,
    which sees a clean close; the others are still open and served.
    Returns how long after first_idle the answer came."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = fifth.recv(4096)
        assert d, "the new client was closed"
        data += d
    waited = time.monotonic() - first_idle
    assert Response(data).status == 200
    closed_after(idle[0][0])
    for c, _ in idle[1:]:
        assert ask(c).status == 200
    assert "4 worker_connections are not enough, reusing connections" in s.error_log()
    for c, _ in idle:
        c.close()
    fifth.close()
    return waited


def test_a_full_worker_takes_back_an_idle_connection_at_once_without_it(server):
    waited = served_in_a_slot_taken_back(*full_worker(server, ""))
    assert waited < 1, f"served after {waited:.2f}s"


def test_a_full_worker_takes_back_an_idle_connection_once_it_is_old_enough(server):
    s, idle, fifth, first_idle = full_worker(server, "keepalive_min_timeout 2s;")
    # Waiting in the backlog meanwhile, not refused.
    assert open_for(fifth, 1)
    waited = served_in_a_slot_taken_back(s, idle, fifth, first_idle)
    assert 1.7 <= waited < 5, f"served after {waited:.2f}s"


# ---- HTTP/2 and the configuration ----------------------------------------------


def test_http2_connections_are_not_concerned(server):
    pytest.importorskip("h2")
    import h2.errors
    from test_http2 import H2Client

    s = start(server, "keepalive_min_timeout 30s; http2 on;")
    c = H2Client(s.port)
    try:
        sid = c.request("/")
        assert c.response(sid)[0] == 200
        os.kill(s.master_pid(), signal.SIGQUIT)
        # The one GOAWAY, naming the last stream taken, at once, and the
        # end of the connection, as without the directive [nginx].
        g = c.until(lambda evs: c.goaway(), timeout=10)
        assert (g.error_code, g.last_stream_id) == (h2.errors.ErrorCodes.NO_ERROR, sid)
        assert c.until(lambda evs: c.closed, timeout=GRACE + 2)
    finally:
        c.close()
    assert s.proc.wait(timeout=10) == 0


def test_the_directive_is_checked(server):
    good = server(SITE.format(extra="""keepalive_min_timeout 500ms;
        server { listen 127.0.0.1:PORT; server_name other; keepalive_min_timeout 0;
                 location /x { keepalive_min_timeout 1m; } }"""), start=False)
    code, err = good.test_config()
    assert code == 0, err
    for extra in ("keepalive_min_timeout soon;", "keepalive_min_timeout 1s 2s;"):
        code, err = server(SITE.format(extra=extra), start=False).test_config()
        assert code != 0 and '"keepalive_min_timeout"' in err, err
