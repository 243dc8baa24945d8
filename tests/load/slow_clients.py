#!/usr/bin/python3
"""Slow and idle clients against real ones: the figure of issue 13, item 8.

Starts gatehouse (2 workers) on 127.0.0.1, opens SLOW slowloris
connections (a request head sent one byte every --interval seconds) and
IDLE keepalive connections (one request answered, then silence), then
measures real clients while they are held: wrk (if installed) with
--latency, and a plain client that opens a new connection per request,
which counts refusals and resets. Prints the latencies and the counts.

    tests/load/slow_clients.py objs/gatehouse [--slow 1000] [--idle 1000]
        [--duration 20] [--interval 10]

Everything runs on loopback, is bounded in time and stops what it started.
"""

import argparse
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CONF = """
worker_processes 2;
worker_rlimit_nofile 16384;
error_log logs/error.log warn;
pid logs/gatehouse.pid;
events { worker_connections 8192; }
http {
    access_log off;
    client_header_timeout 60s;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:%d reuseport;
        location / { return 200 "ok\\n"; }
    }
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("gatehouse did not start")


def hold_slow(port, n, interval, stop, counts):
    """n connections that send a request head one byte per interval."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        socks.append([s, 0])
    counts["slow_open"] = len(socks)
    while not stop.wait(interval):
        for entry in socks:
            s, pos = entry
            if s is None:
                continue
            try:
                s.send(head[pos:pos + 1])
                entry[1] = (pos + 1) % len(head)
            except OSError:
                counts["slow_closed"] += 1
                s.close()
                entry[0] = None
    for s, _ in socks:
        if s is not None:
            s.close()


def hold_idle(port, n, counts):
    """n keepalive connections, each after one answered request."""
    socks = []
    sel = selectors.DefaultSelector()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\nok\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        socks.append(s)
    counts["idle_open"] = len(socks)
    return socks


def plain_clients(port, seconds, latencies, counts):
    """A new connection per request for `seconds`; counts failures."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                latencies.append(time.monotonic() - t0)
            else:
                counts["bad"] += 1
        except OSError:
            counts["refused"] += 1


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))] * 1000 if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--interval", type=float, default=10)
    a = ap.parse_args()
    want = a.slow + a.idle + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    prefix = tempfile.mkdtemp(prefix="gh-slow-")
    os.makedirs(prefix + "/logs")
    os.makedirs(prefix + "/conf")
    port = free_port()
    with open(prefix + "/conf/gatehouse.conf", "w") as f:
        f.write(CONF % port)
    master = subprocess.Popen([os.path.abspath(a.binary), "-p", prefix + "/", "-c", "conf/gatehouse.conf",
                               "-g", "daemon off;"])
    stop = threading.Event()
    counts = {"slow_open": 0, "slow_closed": 0, "idle_open": 0, "refused": 0, "bad": 0}
    try:
        wait_port(port)
        slow = threading.Thread(target=hold_slow, args=(port, a.slow, a.interval, stop, counts))
        slow.start()
        idle = hold_idle(port, a.idle, counts)
        while counts["slow_open"] < a.slow:
            time.sleep(0.1)
        print(f"held: {counts['slow_open']} slowloris, {counts['idle_open']} idle keepalive")
        latencies = []
        wrk = shutil.which("wrk")
        if wrk:
            out = subprocess.run([wrk, "-t2", "-c50", f"-d{a.duration}s", "--latency",
                                  f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                                 timeout=a.duration + 30).stdout
            print("wrk -t2 -c50 (keepalive):")
            print("\n".join("  " + line for line in out.splitlines() if line.strip()))
        plain_clients(port, a.duration, latencies, counts)
        print(f"new connection per request: {len(latencies)} answered, {counts['refused']} refused or reset, "
              f"{counts['bad']} bad; latency p50 {pct(latencies, 0.5):.2f} ms, p99 {pct(latencies, 0.99):.2f} ms, "
              f"max {max(latencies) * 1000 if latencies else float('nan'):.2f} ms, "
              f"mean {statistics.mean(latencies) * 1000 if latencies else float('nan'):.2f} ms")
        print(f"slowloris connections closed by the server meanwhile: {counts['slow_closed']}")
        for s in idle:
            s.close()
    finally:
        stop.set()
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(timeout=20)
        except subprocess.TimeoutExpired:
            master.kill()
        shutil.rmtree(prefix, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
