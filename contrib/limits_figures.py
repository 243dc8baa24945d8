#!/usr/bin/python3
"""Figures of limit_req and limit_conn for the issue note; rerun with

    contrib/limits_figures.py [objs/gatehouse] [--seconds 10] [--rate 20]

1. A flood from 127.0.0.1 at 50 times the limit_req rate ("burst=5
   nodelay") through two workers on a reuseport listener: the requests
   the origin sees per second against the configured rate. (Without a
   burst the bucket empties between two accepted requests and the time
   to the next arrival is lost, as in nginx: a flood of jittery arrivals
   then gets a few percent less than the rate.)
2. limit_conn N through two workers, 4N clients at once on an origin that
   holds its responses: how many reached the origin, how many got 503.
3. 2000 requests delayed at once by limit_req (1000r/s, burst 2000):
   all answered, in about 2 s, by timers in the workers.
4. The unit benchmark of one limit_req decision (objs/unit_tests).

Everything runs on loopback in a temporary prefix; the master is stopped
by its pid at the end.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIDS_LOCK = threading.Lock()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONF = """\
daemon off;
master_process on;
worker_processes 2;
error_log logs/error.log warn;
pid logs/gatehouse.pid;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    limit_req_zone $binary_remote_addr zone=flood:10m rate={rate}r/s;
    limit_conn_zone $binary_remote_addr zone=conn:10m;
    limit_req_zone $binary_remote_addr zone=many:10m rate=1000r/s;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        add_header X-Pid $pid always;
        location /flood {{
            limit_req zone=flood burst={burst} nodelay;
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /many {{
            root {prefix}/html;
            limit_req zone=many burst={many};
        }}
        location /conn {{
            limit_conn conn {conn};
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Origin:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        origin = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with origin.lock:
                    origin.count += 1
                if self.path.startswith("/conn"):
                    origin.hold.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.hold.set()
        self.server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(f, pids):
    """Status of one keepalive response read from a socket file; counts
    the worker that answered in `pids`."""
    line = f.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "x-pid":
            with PIDS_LOCK:
                pids[value.strip()] = pids.get(value.strip(), 0) + 1
    f.read(length)
    return status


def flood(port, total_rate, seconds, threads=16):
    """Paced GETs from `threads` keepalive connections; (sent, statuses)."""
    counts = {}
    pids = {}
    lock = threading.Lock()
    per_thread = total_rate / threads
    start = time.monotonic() + 0.2

    def run():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        f = s.makefile("rb")
        req = b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n"
        n = 0
        while True:
            due = start + n / per_thread
            if due - start >= seconds:
                break
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if n and n % 20 == 0:
                # New connections now and then, so that both workers take
                # some (an idle worker takes a whole burst of accepts).
                s.close()
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                f = s.makefile("rb")
            try:
                s.sendall(req)
                st = read_response(f, pids)
            except (OSError, ConnectionError):
                s.close()
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                f = s.makefile("rb")
                continue
            with lock:
                counts[st] = counts.get(st, 0) + 1
            n += 1
        s.close()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts, pids, time.monotonic() - t0 - 0.2


def conn_burst(port, n_clients):
    """n_clients connections made at once (from threads, so that both
    workers accept some), each with a request."""
    socks = [None] * n_clients

    def one(i):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /conn HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        socks[i] = s

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n_clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return socks


def many_delayed(port, n):
    """n requests on n connections at once, read with one selector;
    {status: count}."""
    import resource
    import selectors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    sel = selectors.DefaultSelector()
    bufs = {}
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /many HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    statuses = {}
    deadline = time.monotonic() + 60
    while bufs and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                bufs[s] += data
                continue
            st = bufs.pop(s)[9:12].decode() or "closed"
            statuses[st] = statuses.get(st, 0) + 1
            sel.unregister(s)
            s.close()
    for s in bufs:
        s.close()
    if bufs:
        statuses["unanswered"] = len(bufs)
    return statuses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, "objs", "gatehouse"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=20)
    ap.add_argument("--burst", type=int, default=5)
    ap.add_argument("--conn", type=int, default=10)
    ap.add_argument("--many", type=int, default=2000)
    a = ap.parse_args()

    origin = Origin()
    prefix = tempfile.mkdtemp(prefix="gh-limits-")
    os.chmod(prefix, 0o755)
    os.makedirs(os.path.join(prefix, "logs"))
    os.makedirs(os.path.join(prefix, "conf"))
    os.makedirs(os.path.join(prefix, "html"))
    with open(os.path.join(prefix, "html", "many"), "w") as f:
        f.write("ok\n")
    port = free_port()
    conf = os.path.join(prefix, "conf", "gatehouse.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(rate=a.rate, burst=a.burst, origin=origin.port, port=port, conn=a.conn,
                            prefix=prefix, many=a.many))
    proc = subprocess.Popen([a.binary, "-p", prefix + "/", "-c", conf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("gatehouse did not start")
                time.sleep(0.05)

        # 1. The flood. The bucket starts empty: the first request and the
        # burst pass at once, then the rate.
        total = a.rate * 50
        before = origin.count
        counts, pids, took = flood(port, total, a.seconds)
        seen = origin.count - before
        sent = sum(counts.values())
        got = (seen - 1 - a.burst) / took
        print(f"flood: {sent} requests in {took:.1f} s ({sent / took:.0f}/s, 50x {a.rate}r/s), "
              f"statuses {dict(sorted(counts.items()))}, answers per worker {sorted(pids.values())}")
        print(f"flood: origin saw {seen} = {got:.2f}/s after the first {1 + a.burst}, "
              f"limit {a.rate}/s, deviation {100 * (got - a.rate) / a.rate:+.2f} %")

        # 2. limit_conn across workers.
        origin.hold.clear()
        before = origin.count
        socks = conn_burst(port, 4 * a.conn)
        refused = 0
        refusers = set()
        # The refused ones answer at once; the held ones after release.
        for s in socks:
            s.settimeout(0.5)
        deadline = time.monotonic() + 10
        pending = list(socks)
        while time.monotonic() < deadline and len(pending) > a.conn:
            for s in list(pending):
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if data.startswith(b"HTTP/1.1 503"):
                    refused += 1
                    m = re.search(rb"X-Pid: (\d+)", data)
                    if m:
                        refusers.add(m.group(1))
                pending.remove(s)
        reached = origin.count - before
        origin.hold.set()
        for s in socks:
            s.settimeout(10)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            s.close()
        print(f"limit_conn {a.conn}: {4 * a.conn} clients at once through 2 workers: "
              f"{reached} reached the origin, {refused} got 503 (from {len(refusers)} workers)")

        # 3. Many requests delayed at once (1000r/s, burst=many): each
        # waits its turn on a timer; the workers keep serving.
        t0 = time.monotonic()
        statuses = many_delayed(port, a.many)
        took = time.monotonic() - t0
        print(f"delayed at once: {a.many} requests at 1000r/s, burst {a.many}: {statuses} in {took:.2f} s "
              f"(the last waited about {a.many / 1000:.1f} s)")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        origin.stop()
        shutil.rmtree(prefix, ignore_errors=True)

    # 4. The unit benchmark.
    tests = os.path.join(os.path.dirname(a.binary), "unit_tests")
    if os.path.exists(tests):
        out = subprocess.run([tests, "-tc=*benchmark of one decision*"], capture_output=True, text=True).stdout
        m = re.search(r"limit_req decision: .*", out)
        print(m.group(0) if m else out)


if __name__ == "__main__":
    main()
