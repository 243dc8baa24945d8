"""Process titles as nginx's, as ps(1) and /proc/PID/cmdline show them:
"gatehouse: master process <the command line as given>", "gatehouse:
worker process", and "gatehouse: worker process is shutting down" once a
worker was told to quit."""

import os
import signal
import socket
from pathlib import Path

from conftest import free_port, wait_for

CONF = """
worker_processes 2;
error_log logs/error.log info;
events {{ worker_connections 64; }}
http {{
    server {{
        listen 127.0.0.1:{port};
        client_header_timeout 30s;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def title(pid):
    """The process's title: /proc/PID/cmdline up to its padding."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
    return raw.decode(errors="replace")


def start(gatehouse, port):
    g = gatehouse.start(CONF.format(port=port), ports=[port])
    workers = g.wait_workers(2)
    return g, workers


def test_master_and_worker_titles(gatehouse):
    port = free_port()
    g, workers = start(gatehouse, port)
    assert title(g.pid) == "gatehouse: master process " + " ".join(g.argv)
    for w in workers:
        assert title(w) == "gatehouse: worker process"
    # ps shows the same.
    out = os.popen(f"ps -o args= -p {g.pid},{workers[0]}").read().splitlines()
    assert [ln.strip() for ln in out] == ["gatehouse: master process " + " ".join(g.argv),
                                          "gatehouse: worker process"]


def test_a_retiring_worker_says_so(gatehouse):
    port = free_port()
    g, workers = start(gatehouse, port)
    # A keep-alive connection (accepted: it was answered) with the next
    # request head half sent keeps its worker alive after QUIT.
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.recv(4096).startswith(b"HTTP/1.1 200")
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    g.signal(signal.SIGQUIT)

    def busy_worker():
        for w in workers:
            try:
                if title(w) == "gatehouse: worker process is shutting down":
                    return w
            except OSError:
                pass
        return None
    wait_for(busy_worker, what="a worker titled as shutting down")
    c.sendall(b"\r\n")
    assert c.recv(4096).startswith(b"HTTP/1.1 200")
    c.close()
    assert g.wait_exit() == 0
