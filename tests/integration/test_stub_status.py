"""stub_status: nginx's page, byte for byte, counted across the workers,
the $connections_* variables, and counts that survive a reload.

Servers run two workers on reuseport sockets: each connection lands on
either worker, so a count kept per worker would show as too small."""

import os
import re
import signal
import socket
import subprocess

import pytest

from gh_server import Server, poll, require_binary
from two_workers import two_workers  # noqa: F401  (the fixture)

PAGE = re.compile(
    rb"Active connections: (\d+) \n"
    rb"server accepts handled requests\n"
    rb" (\d+) (\d+) (\d+) \n"
    rb"Reading: (\d+) Writing: (\d+) Waiting: (\d+) \n\Z")

CONF = """
    server {
        listen 127.0.0.1:PORT reuseport;
        root html;
        location / {
            add_header X-Pid $pid;
            add_header X-Active $connections_active;
            add_header X-Reading $connections_reading;
            add_header X-Writing $connections_writing;
            add_header X-Waiting $connections_waiting;
        }
        location /rate { limit_rate 15; }
        location = /stub { stub_status; }
    }
"""

FILES = {"index.html": "", "rate": "x" * 200}


def status(s):
    r = s.get("/stub")
    assert r.status == 200, r.raw
    m = PAGE.match(r.body)
    assert m, r.body
    keys = ("active", "accepts", "handled", "requests", "reading", "writing", "waiting")
    return dict(zip(keys, map(int, m.groups())))


def settled(s):
    # start() made sure with a connection that sent nothing: once a
    # worker took it and saw it close, only the status request is open.
    assert poll(lambda: (lambda t: t["active"] == 1 and t["accepts"] == t["requests"] + 1)(status(s)))


@pytest.fixture
def server2(two_workers):
    return lambda: two_workers(CONF, FILES, settle=settled)


def test_page_is_nginx_format(server2):
    s = server2()
    base = status(s)
    r = s.get("/stub")
    assert r.status == 200
    assert r.header("Content-Type") == "text/plain"
    assert r.header("Content-Length") == str(len(r.body))
    # The status request itself: accepted, being written.
    a, n = base["accepts"] + 1, base["requests"] + 1
    assert r.body == (b"Active connections: 1 \nserver accepts handled requests\n"
                      b" %d %d %d \nReading: 0 Writing: 1 Waiting: 0 \n" % (a, a, n))


def test_counts_add_up_across_workers(server2):
    s = server2()
    base = status(s)
    n = s.spread()
    st = status(s)
    a, q = base["accepts"], base["requests"]
    assert st == {"active": 1, "accepts": a + n + 1, "handled": a + n + 1, "requests": q + n + 1,
                  "reading": 0, "writing": 1, "waiting": 0}
    # Pipelined requests on one connection: one accept, two requests.
    raw = s.raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    st = status(s)
    assert (st["accepts"], st["handled"], st["requests"]) == (a + n + 3, a + n + 3, q + n + 4)


def test_connection_states(server2):
    s = server2()
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        # Accepted, nothing sent: waiting.
        st = poll(lambda: (lambda t: t if t["active"] == 2 else None)(status(s)))
        assert (st["active"], st["reading"], st["writing"], st["waiting"]) == (2, 0, 1, 1)
        # Half a head: reading.
        c.sendall(b"GET /rate HTTP/1.0\r\n")
        st = poll(lambda: (lambda t: t if t["reading"] == 1 else None)(status(s)))
        assert (st["active"], st["reading"], st["writing"], st["waiting"]) == (2, 1, 1, 0)
        # The whole head: a response trickling out at 15 bytes/s, writing.
        c.sendall(b"Host: localhost\r\n\r\n")
        st = poll(lambda: (lambda t: t if t["writing"] == 2 else None)(status(s)))
        assert (st["active"], st["reading"], st["writing"], st["waiting"]) == (2, 0, 2, 0)
        # The response has started (its head is here) before the client
        # goes: a close before that is found by the first write instead.
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(4096)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    # The client went away: its close is read while the response is still
    # trickling out, and ends it there [nginx ngx_http_test_reading], not
    # at a later write.
    st = poll(lambda: (lambda t: t if t["active"] == 1 else None)(status(s)))
    assert (st["active"], st["reading"], st["writing"], st["waiting"]) == (1, 0, 1, 0)
    assert "client prematurely closed connection" in s.error_log()
    assert "closed connection while sending response" not in s.error_log()


def test_head_and_post(server2):
    s = server2()
    r = s.get("/stub", method="HEAD")
    assert r.status == 200
    assert r.body == b""
    assert int(r.header("Content-Length")) > 0
    r = s.get("/stub", method="POST")
    assert r.status == 405


def test_variables(server2):
    s = server2()
    r = s.get("/")
    assert r.status == 200
    assert [r.header(h) for h in ("X-Active", "X-Reading", "X-Writing", "X-Waiting")] == ["1", "0", "1", "0"]
    r = s.get("/", method="HEAD")
    assert [r.header(h) for h in ("X-Active", "X-Reading", "X-Writing", "X-Waiting")] == ["1", "0", "1", "0"]


def start_count(s):
    return s.error_log().count("start worker process")


def test_counts_survive_reload(server2):
    s = server2()
    base = status(s)
    n = s.spread()
    before = status(s)
    a, q = base["accepts"], base["requests"]
    assert before["accepts"] == a + n + 1
    old = set(s.children())
    starts = start_count(s)
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: start_count(s) >= starts + 2 and not (set(s.children()) & old), timeout=20), \
        s.error_log()
    m = s.spread()
    after = status(s)
    # Nothing lost, nothing counted twice: the new workers add to the old counts.
    assert after == {"active": 1, "accepts": a + n + m + 2, "handled": a + n + m + 2,
                     "requests": q + n + m + 2, "reading": 0, "writing": 1, "waiting": 0}


@pytest.mark.parametrize("conf, message", [
    ("stub_status;", '"stub_status" directive is not allowed here'),
    ("server { listen 127.0.0.1:PORT; location / { stub_status; stub_status; } }",
     '"stub_status" directive is duplicate'),
])
def test_config_errors(tmp_path, conf, message):
    require_binary()
    s = Server(tmp_path, conf)
    code, err = s.test_config()
    assert code == 1
    assert message in err


def test_http2_streams_count_as_requests(tmp_path):
    # One h2c connection, five streams on it (nghttp, prior knowledge):
    # one connection accepted and handled, five requests, and once it is
    # gone only the status request's connection is active.
    require_binary()
    s = Server(tmp_path, """
    server {
        listen 127.0.0.1:PORT http2;
        root html;
        location = /stub { stub_status; }
    }""", {f"{i}.html": str(i) for i in range(5)})
    s.start()
    try:
        before = status(s)
        urls = [f"http://127.0.0.1:{s.port}/{i}.html" for i in range(5)]
        subprocess.run(["nghttp", "-n"] + urls, capture_output=True, timeout=30, check=True)
        after = poll(lambda: (lambda t: t if t["active"] == 1 else None)(status(s)))
        assert after is not None
        assert after["accepts"] - before["accepts"] == 2  # nghttp's, and this status request's
        assert after["handled"] == after["accepts"]
        assert after["requests"] - before["requests"] == 6  # five streams and the status page
        assert (after["reading"], after["writing"], after["waiting"]) == (0, 1, 0)
    finally:
        s.stop()
