#!/usr/bin/python3
"""The added cost per request of limit_req_zone "sync=", for the issue
note; rerun with

    contrib/redis_figures.py [objs/gatehouse] [--seconds 5] [--rounds 3]

One master (two workers, reuseport) serves a small static file through
two locations that differ only in their zone: /local/ (limit_req_zone
without sync=) and /sync/ (the same zone with sync= to a redis-server
started on loopback). The rate is set far above what wrk can send, so
every request passes and both measure the decision's cost, not the
limit. The key is $arg_k: "one key" sends every request with k=1; "many
keys" draws k among 100,000, so that each batch carries up to
sync_batch keys. wrk runs the two locations alternately, `rounds`
times each; the medians are printed with the EVAL calls Redis counted.

Everything runs on loopback in a temporary prefix; redis-server and the
master are stopped by their pids at the end.

On a loaded machine wrk's figures are noise-bound; instruction counts
are not. The same configuration with "master_process off" under
valgrind --tool=callgrind, 3 s of wrk on /local/ then on /sync/ with
k cycling over 1000 keys, gave (December 2026):
  run_limit_req, inclusive, per request: 1022 Ir (local), 1044 Ir (sync):
      sync= adds about 22 instructions to the request path (the check
      sequence number and the "accepted since" count, under the lock
      the decision already holds), of about 13,200 for the whole request;
  worker 0's sync (ZoneSync::tick and the reply), per key sent: about
      3,200 Ir, once per key and interval whatever its request count:
      a hot key costs nothing per request, a key seen once per interval
      its 3,200.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONF = """\
daemon off;
master_process on;
worker_processes 2;
error_log logs/error.log warn;
pid logs/gatehouse.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    redis r {{ server 127.0.0.1:{redis}; timeout 1s; sync_interval 20ms; }}
    limit_req_zone $arg_k zone=local:32m rate=1000000r/s;
    limit_req_zone $arg_k zone=synced:32m rate=1000000r/s sync=r;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root html;
        location /local/ {{ limit_req zone=local burst=1000000 nodelay; }}
        location /sync/ {{ limit_req zone=synced burst=1000000 nodelay; }}
    }}
}}
"""

WRK_MANY = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "{path}?k=" .. math.random(100000))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def redis_cmd(port, *args):
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(out)
        time.sleep(0.05)
        return s.recv(1 << 20).decode("latin-1")


def eval_calls(port):
    m = re.search(r"cmdstat_eval:calls=(\d+)", redis_cmd(port, "INFO", "commandstats"))
    return int(m.group(1)) if m else 0


def wrk(port, path, seconds, many, tmp):
    args = ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency"]
    if many:
        script = os.path.join(tmp, "many.lua")
        with open(script, "w") as f:
            f.write(WRK_MANY.format(path=path))
        args += ["-s", script]
    url = f"http://127.0.0.1:{port}{path}" + ("" if many else "?k=1")
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms)", out)
    lat = float(p50.group(1)) * (1000 if p50.group(2) == "ms" else 1)
    return rps, lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, "objs", "gatehouse"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    tmp = tempfile.mkdtemp(prefix="gh-redis-figures-")
    os.chmod(tmp, 0o755)
    for d in ("conf", "logs", "html/local", "html/sync"):
        os.makedirs(os.path.join(tmp, d))
    for d in ("local", "sync"):
        with open(os.path.join(tmp, "html", d, "index.html"), "w") as f:
            f.write("ok\n")
    rport, port = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    conf = os.path.join(tmp, "conf", "gatehouse.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(redis=rport, port=port))
    gh = subprocess.Popen([a.binary, "-p", tmp + "/", "-c", conf], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_port(rport) or not wait_port(port):
            sys.exit("redis-server or gatehouse did not start")
        print(f"limit_req, 2 workers, wrk -t1 -c16, {a.seconds}s x {a.rounds} rounds, median")
        print(f"{'keys':10} {'location':8} {'req/s':>10} {'p50 us':>8} {'us/req':>8} {'EVAL/s':>8}")
        for many in (False, True):
            res = {"/local/": [], "/sync/": []}
            evals = []
            for _ in range(a.rounds):
                for path in ("/local/", "/sync/"):
                    before = eval_calls(rport)
                    t0 = time.monotonic()
                    res[path].append(wrk(port, path, a.seconds, many, tmp))
                    if path == "/sync/":
                        evals.append((eval_calls(rport) - before) / (time.monotonic() - t0))
            for path in ("/local/", "/sync/"):
                rps = statistics.median(r for r, _ in res[path])
                lat = statistics.median(p for _, p in res[path])
                ev = f"{statistics.median(evals):8.0f}" if path == "/sync/" else f"{'-':>8}"
                print(f"{'100000' if many else 'one':10} {path:8} {rps:10.0f} {lat:8.0f} {1e6 / rps:8.1f} {ev}")
    finally:
        try:
            os.killpg(gh.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        gh.wait(timeout=15)
        redis.terminate()
        redis.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
