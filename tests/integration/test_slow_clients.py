"""Slow and idle clients do not keep real ones out (issue 13, item 8).

Hundreds of slowloris connections (a head that never ends) and idle
keepalive connections are held across 2 workers while real clients are
served; the slow ones are cut by client_header_timeout with the 408 page.
The latency figure is measured by tests/load/slow_clients.py, not here.
"""

import resource
import socket

from gh_server import poll, server  # noqa: F401  (server: the fixture)

SLOW = 300
IDLE = 300


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = c.recv(4096)
            if not d:
                return data
            data += d


def test_slowloris_and_idle_clients_leave_room_for_real_ones(server):
    raise_fd_limit(SLOW + IDLE + 256)
    s = server("""
        client_header_timeout 3s;
        keepalive_timeout 60s;
        server {
            listen 127.0.0.1:PORT reuseport;
            location / { return 200 "ok\\n"; }
        }
    """, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;\nworker_rlimit_nofile 4096;")
                      .replace("worker_connections 128;", "worker_connections 1024;"))
    s.start()
    slow, idle = [], []
    try:
        for _ in range(SLOW):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            slow.append(c)
        for _ in range(IDLE):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"ok\n"):
                data += c.recv(4096)
            idle.append(c)
        # Real clients, each on a new connection, while all are held.
        answers = [get(s.port) for _ in range(200)]
        assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"ok\n") for a in answers)
        # The slow ones are cut with the 408 page once client_header_timeout
        # passed; the idle ones stay (keepalive_timeout is longer).
        for c in slow:
            data = b""
            while True:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            assert data.startswith(b"HTTP/1.1 408 "), s.error_log()[-3000:]
        c = idle[0]
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"ok\n"):
            d = c.recv(4096)
            assert d, "an idle keepalive connection was closed"
            data += d
        assert data.startswith(b"HTTP/1.1 200")
    finally:
        for c in slow + idle:
            c.close()
