#!/usr/bin/python3
"""What TLS to Redis costs a node, for the issue note; rerun with

    contrib/redis_tls_figures.py [objs/gatehouse] [--seconds 10] [--rate 1000]

One redis-server on loopback listens both plain (--port) and with TLS
(--tls-port, a certificate made here by the openssl command). The same
configuration, a limit_req zone with sync= and a rate far above the load
(every request passes, so both runs do the same work), is run with the
redis block plain and with "ssl on; ssl_verify on":

1. callgrind: "master_process off" under valgrind --tool=callgrind, wrk
   with $arg_k cycling over 1000 keys; the inclusive instructions per
   request of the request path (the HTTP/1 read handler, and
   run_limit_req within it), and per batch of the sync's own work
   (ZoneSync::tick, the Redis client's flush and read handlers; and its
   write handler, the connect and handshake, once), which runs from a
   timer, off the request path. Batches are Redis' EVAL count.
2. CPU: two workers, `rate` requests a second for `seconds` from a paced
   client (keys drawn among 100,000, so that each batch carries about
   rate x sync_interval keys); the workers' user+system CPU from
   /proc/PID/stat, in ms of CPU per second of load, with the zone not
   synced, synced plain and synced over TLS: the differences are the
   batch traffic's cost.

Everything runs in a temporary prefix; every process started is stopped
by its pid.
"""

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONF = """\
daemon off;
master_process {master};
worker_processes 2;
error_log logs/error.log warn;
pid logs/gatehouse.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    redis r {{ server 127.0.0.1:{redis}; timeout 1s; sync_interval 20ms; {ssl} }}
    limit_req_zone $arg_k zone=synced:32m rate=1000000r/s {sync};
    server {{
        listen 127.0.0.1:{port} reuseport;
        root html;
        location / {{ limit_req zone=synced burst=1000000 nodelay; }}
    }}
}}
"""

WRK_KEYS = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/?k=" .. (n % 1000))
end
"""

# Inclusive Ir of these, from callgrind_annotate; the event handlers are
# reached through their Callback thunks (Callback::to<&X::f>), which is
# where a handler inlined into its thunk is counted.
FUNCS = {
    "request path (HTTP/1 read handler)": r"v1::Connection::on_read\(\) \[",
    "  of which run_limit_req": r"run_limit_req\(",
    "sync: ZoneSync::tick (batch made)": r"Callback::to<&gatehouse::http::ZoneSync::tick,",
    "sync: RedisClient on_flush (written)": r"Callback::to<&gatehouse::upstream::RedisClient::on_flush,",
    "sync: RedisClient on_read (replies)": r"Callback::to<&gatehouse::upstream::RedisClient::on_read,",
    "sync: RedisClient on_write (connect)": r"Callback::to<&gatehouse::upstream::RedisClient::on_write,",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def make_pki(d):
    def o(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True, timeout=60)
    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
      "-out", "ca.crt", "-subj", "/CN=figures CA", "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE")
    o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "redis.key", "-out",
      "redis.csr", "-subj", "/CN=redis")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    o("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
      "-out", "redis.crt", "-extfile", "ext")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)


def write_conf(tmp, master, rport, port, ssl, sync="sync=r"):
    conf = os.path.join(tmp, "conf", "gatehouse.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(master=master, redis=rport, port=port, ssl=ssl, sync=sync))
    return conf


def stop(p, sig=signal.SIGTERM):
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        pass
    p.wait(timeout=60)


def eval_calls(port):
    """EVAL calls Redis counted (plain port: INFO over TCP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"INFO commandstats\r\n")
        time.sleep(0.1)
        m = re.search(rb"cmdstat_eval:calls=(\d+)", s.recv(1 << 20))
    return int(m.group(1)) if m else 0


def callgrind(a, tmp, rport, ssl, info_port):
    port = free_port()
    conf = write_conf(tmp, "off", rport, port, ssl)
    out = os.path.join(tmp, "callgrind.out")
    gh = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", a.binary, "-p",
                           tmp + "/", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, 60):
            sys.exit("gatehouse did not start under valgrind")
        time.sleep(1)  # connected to Redis
        script = os.path.join(tmp, "keys.lua")
        with open(script, "w") as f:
            f.write(WRK_KEYS)
        e0 = eval_calls(info_port)
        t0 = time.monotonic()
        r = subprocess.run(["wrk", "-t1", "-c4", f"-d{a.seconds}s", "-s", script, f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=a.seconds + 60).stdout
        took = time.monotonic() - t0
        n = int(re.search(r"(\d+) requests in", r).group(1))
    finally:
        stop(gh)
    batches = eval_calls(info_port) - e0
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out], capture_output=True,
                         text=True).stdout
    with open(os.path.join(tmp, "annotate.txt"), "w") as f:
        f.write(ann)
    res = {}
    for label, pat in FUNCS.items():
        for line in ann.splitlines():
            m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
            if m and re.search(pat, m.group(2)):
                res[label] = int(m.group(1).replace(",", ""))
                break
    os.unlink(out)
    return n, took, batches, res


def paced(port, rate, seconds):
    """`rate` r/s over 4 keep-alive connections; returns the failures."""
    fails = []
    start = time.monotonic()

    def run(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        per = rate / 4
        n = 0
        while True:
            due = start + n / per
            if due - start >= seconds:
                break
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            try:
                conn.request("GET", f"/?k={random.randrange(100000)}")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    fails.append(resp.status)
            except (OSError, http.client.HTTPException) as e:
                fails.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            n += 1
        conn.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return fails


def workers_cpu(master):
    """{pid: utime+stime in clock ticks} of the master's children."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            out[int(p)] = int(fields[11]) + int(fields[12])
    return out


def cpu(a, tmp, rport, ssl, sync):
    port = free_port()
    conf = write_conf(tmp, "on", rport, port, ssl, sync)
    gh = subprocess.Popen([a.binary, "-p", tmp + "/", "-c", conf], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port):
            sys.exit("gatehouse did not start")
        time.sleep(1)
        before = workers_cpu(gh.pid)
        t0 = time.monotonic()
        fails = paced(port, a.rate, a.seconds)
        took = time.monotonic() - t0
        after = workers_cpu(gh.pid)
    finally:
        stop(gh, signal.SIGQUIT)
    ticks = sum(after.get(p, 0) - before.get(p, 0) for p in before)
    return ticks * 1000 / os.sysconf("SC_CLK_TCK") / took, fails


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, "objs", "gatehouse"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    for tool in ("wrk", "redis-server", "valgrind", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    tmp = tempfile.mkdtemp(prefix="gh-redis-tls-figures-")
    os.chmod(tmp, 0o755)
    for d in ("conf", "logs", "html", "pki"):
        os.makedirs(os.path.join(tmp, d))
        os.chmod(os.path.join(tmp, d), 0o755)
    with open(os.path.join(tmp, "html", "index.html"), "w") as f:
        f.write("ok\n")
    pki = os.path.join(tmp, "pki")
    make_pki(pki)
    plain, tls = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(plain), "--tls-port", str(tls), "--bind", "127.0.0.1",
                              "--tls-cert-file", f"{pki}/redis.crt", "--tls-key-file", f"{pki}/redis.key",
                              "--tls-ca-cert-file", f"{pki}/ca.crt", "--tls-auth-clients", "no", "--save", "",
                              "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    modes = {"plain": (plain, ""),
             "TLS": (tls, f"ssl on; ssl_verify on; ssl_trusted_certificate {pki}/ca.crt;")}
    try:
        if not wait_port(plain) or not wait_port(tls):
            sys.exit("redis-server did not start")
        print(f"callgrind, master_process off, wrk -t1 -c4 -d{a.seconds}s, 1000 keys")
        for mode, (rport, ssl) in modes.items():
            n, took, batches, res = callgrind(a, tmp, rport, ssl, plain)
            print(f"  {mode}: {n} requests, {batches} batches (EVAL) in {took:.1f}s")
            for label in FUNCS:
                v = res.get(label)
                if v is None:
                    print(f"    {label:40} -")
                elif label.startswith("sync"):
                    print(f"    {label:40} {v / max(batches, 1):12.0f} Ir/batch")
                else:
                    print(f"    {label:40} {v / n:12.0f} Ir/request")
        print(f"worker CPU, 2 workers, {a.rate} r/s for {a.seconds}s, 100,000 keys, {a.rounds} rounds")
        runs = {"no sync": (plain, "", ""), **{m: (p, s, "sync=r") for m, (p, s) in modes.items()}}
        for r in range(a.rounds):
            for mode, (rport, ssl, sync) in runs.items():
                ms, fails = cpu(a, tmp, rport, ssl, sync)
                print(f"  round {r + 1} {mode:7}: {ms:6.1f} ms CPU per s of load, {len(fails)} failed")
    finally:
        stop(redis)
        if os.environ.get("KEEP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
