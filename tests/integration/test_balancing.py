"""Load balancing and origin health, as a client and the origins see them:
upstream blocks with each method in front of real Python origins
(origins.py), counting at each origin where the requests went.

Covers: the shares of round robin, least_conn and random; ip_hash and
hash stickiness, an empty hash key (round robin); failover when an
origin dies under load (no client error for GET) and its return after
fail_timeout; active health checks taking a failing origin out before
any client request reaches it and bringing it back; least_time moving
load off a slow origin; all servers down (a fast 502); backups taking
over. Every loop is bounded in count and time; the origins are stopped
at teardown.
"""

import pathlib
import re
import socket
import threading
import time

import pytest

from gh_server import poll, server  # noqa: F401  (server: the fixture)
from origins import Reader, closed_port, ok_handler, response

ROOT = pathlib.Path(__file__).resolve().parents[2]


def start(server, http):
    s = server(http, start=False)
    code, err = s.test_config()
    if 'unknown directive "proxy_pass"' in err:
        pytest.skip("proxy module not built")
    assert code == 0, err
    return s.start()


class Client:
    """One keep-alive connection to gatehouse, optionally from a given
    loopback source address."""

    def __init__(self, port, source=None, timeout=10.0):
        self.port = port
        self.source = source
        self.timeout = timeout
        self.sock = None

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout,
                                             source_address=(self.source, 0) if self.source else None)
        self.reader = Reader(self.sock)

    def get(self, path):
        """(status, body); a connection the server closed is opened again
        once (a keep-alive race, not a failed request)."""
        for attempt in range(2):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: lb.test\r\n\r\n".encode())
                line = self.reader.line().decode("latin-1")
                status = int(line.split(" ", 2)[1])
                length = 0
                close = False
                while True:
                    h = self.reader.line()
                    if not h:
                        break
                    n, _, v = h.decode("latin-1").partition(":")
                    if n.lower() == "content-length":
                        length = int(v)
                    if n.lower() == "connection" and v.strip().lower() == "close":
                        close = True
                body = self.reader.exactly(length, keep_raw=False)
                if close:
                    self.close()
                return status, body
            except Exception:
                self.close()
                if attempt == 1:
                    raise
        raise AssertionError("not reached")

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def counts(origins, path_prefix="/"):
    return [sum(1 for r in o.requests if r.target.startswith(path_prefix)) for o in origins]


def check_shares(got, weights, tolerance=0.02):
    total = sum(got)
    wsum = sum(weights)
    shares = [g / total for g in got]
    for share, w in zip(shares, weights):
        assert abs(share - w / wsum) <= tolerance, (got, weights)
    return shares


def upstream_block(name, lines, extra=""):
    body = "\n".join(f"    server {line};" for line in lines)
    return f"upstream {name} {{\n{extra}\n{body}\n    keepalive 16;\n}}\n"


def site(upstreams, locations='location / { proxy_pass http://u; }'):
    return f"""
    {upstreams}
    server {{
        listen 127.0.0.1:PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        {locations}
    }}
"""


def run_load(port, n, threads=1, path="/x"):
    """n GETs over `threads` keep-alive connections; returns the statuses."""
    statuses = []
    lock = threading.Lock()
    per = n // threads

    def work(k):
        c = Client(port)
        got = []
        try:
            for i in range(per):
                got.append(c.get(f"{path}?{k}.{i}")[0])
        finally:
            c.close()
            with lock:
                statuses.extend(got)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    return statuses


# ---- shares --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,weights,n", [
    ("", [3, 2, 1], 3000),
    ("least_conn;", [2, 1, 1], 3000),
    ("random;", [1, 1], 6000),
])
def test_shares_follow_weights(server, origin, method, weights, n):
    os_ = [origin() for _ in weights]
    lines = [f"{o.addr} weight={w}" for o, w in zip(os_, weights)]
    s = start(server, site(upstream_block("u", lines, method + " zone lb 64k;")))
    t0 = time.monotonic()
    statuses = run_load(s.port, n)
    elapsed = time.monotonic() - t0
    assert statuses == [200] * n
    got = counts(os_)
    # Round robin and least_conn place each request; random draws, and a
    # fair coin's share over n requests strays by sqrt(0.25 / n) (0.0065 at
    # 6000): five of those, so that a correct balancer fails about once in
    # a million runs (0.02 failed about once in 500).
    tolerance = 5 * (0.25 / n) ** 0.5 if method == "random;" else 0.02
    shares = check_shares(got, weights, tolerance)
    print(f"{method or 'round robin'}: {n} requests in {elapsed:.1f}s, shares "
          + ", ".join(f"{x:.4f}" for x in shares))


# ---- stickiness ----------------------------------------------------------------------------------


def test_ip_hash_sticks_to_a_client(server, origin):
    os_ = [origin() for _ in range(3)]
    s = start(server, site(upstream_block("u", [o.addr for o in os_], "ip_hash;")))
    seen = {}
    for net in range(1, 31):
        src = f"127.0.{net}.1"
        c = Client(s.port, source=src)
        before = counts(os_)
        for i in range(10):
            assert c.get(f"/ip/{i}")[0] == 200
        c.close()
        after = counts(os_)
        moved = [a - b for a, b in zip(after, before)]
        # Every request of this client went to one origin.
        assert sorted(moved) == [0, 0, 10], (src, moved)
        seen[src] = moved.index(10)
    # Different /24s are spread over the servers.
    assert len(set(seen.values())) >= 2


def nginx_ip_hash(ip, weights):
    """The server nginx's ip_hash gives a client when all are usable: its
    arithmetic over the first three octets, mapped onto the weights."""
    h = 89
    for octet in ip.split(".")[:3]:
        h = (h * 113 + int(octet)) % 6271
    w = h % sum(weights)
    for i, weight in enumerate(weights):
        if w < weight:
            return i
        w -= weight
    raise AssertionError("not reached")


@pytest.mark.parametrize("weights", [[1, 1], [1, 1, 1], [2, 1, 3]])
def test_ip_hash_picks_the_server_nginx_picks(server, origin, weights):
    # A client moved from nginx keeps its server (and so its session).
    os_ = [origin() for _ in weights]
    lines = [f"{o.addr} weight={w}" for o, w in zip(os_, weights)]
    s = start(server, site(upstream_block("u", lines, "ip_hash;")))
    for net in range(1, 31):
        src = f"127.0.{net}.2"
        c = Client(s.port, source=src)
        before = counts(os_)
        assert c.get("/n")[0] == 200
        c.close()
        moved = [a - b for a, b in zip(counts(os_), before)]
        assert moved.index(1) == nginx_ip_hash(src, weights), src


def test_hash_sticks_to_a_key(server, origin):
    os_ = [origin() for _ in range(3)]
    s = start(server, site(upstream_block("u", [o.addr for o in os_], "hash $request_uri consistent;")))
    c = Client(s.port)
    where = {}
    for rnd in range(3):
        for k in range(60):
            path = f"/obj/{k}"
            before = counts(os_)
            assert c.get(path)[0] == 200
            after = counts(os_)
            i = [a - b for a, b in zip(after, before)].index(1)
            assert where.setdefault(path, i) == i, path
    c.close()
    assert len(set(where.values())) == 3


@pytest.mark.parametrize("consistent", ["", " consistent"])
def test_hash_with_an_empty_key_is_round_robin(server, origin, consistent):
    # Requests without the key's argument spread evenly, as in nginx,
    # instead of all going to the server of the empty string.
    os_ = [origin() for _ in range(3)]
    s = start(server, site(upstream_block("u", [o.addr for o in os_], f"hash $arg_k{consistent};")))
    c = Client(s.port)
    for i in range(6):
        assert c.get(f"/nokey/{i}")[0] == 200
    assert counts(os_, "/nokey/") == [2, 2, 2]
    # With a key, requests stick again.
    for i in range(6):
        assert c.get(f"/key/{i}?k=one")[0] == 200
    c.close()
    assert sorted(counts(os_, "/key/")) == [0, 0, 6]


# ---- pools chosen per request -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["", "least_conn;", "random;", "least_time header;", "hash $arg_k;",
                                    "hash $arg_k consistent;", "ip_hash;"])
def test_pool_named_by_a_variable_keeps_its_method(server, origin, method):
    # "proxy_pass http://$pool" where a map names one of two upstream
    # blocks sharing a zone, served by two workers: each request reaches
    # only its pool, and the pool's method holds across the workers.
    eu = [origin(), origin()]
    us = [origin(), origin()]
    weights = [2, 1] if method in ("", "least_conn;") else [1, 1]
    blocks = "".join(
        upstream_block(name, [f"{o.addr} weight={w}" for o, w in zip(os_, weights)], method + " zone pools 64k;")
        for name, os_ in (("eu_pool", eu), ("us_pool", us)))
    s = server(site(blocks + "map $http_x_region $pool { default us_pool; eu eu_pool; }\n",
                    "location / { proxy_pass http://$pool; }"), start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;")
                      .replace("listen 127.0.0.1:PORT;", "listen 127.0.0.1:PORT reuseport;"))
    s.start()

    def get(path, region, source=None):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10,
                                      source_address=(source, 0) if source else None) as c:
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: lb.test\r\nX-Region: {region}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    n = 120
    for i in range(n):
        # New connections: the two workers take turns at random.
        assert get(f"/r{i}?k=key{i % 7}", "eu", source=f"127.0.{i % 5}.1") == 200
    assert get("/us", "us") == 200
    assert counts(us, "/r") == [0, 0]  # nothing of eu's went to us
    assert sum(counts(us, "/us")) == 1
    got = counts(eu, "/r")
    assert sum(got) == n
    if method in ("", "least_conn;"):
        # One smooth sequence for both workers: exactly the weights.
        assert got == [80, 40], got
    elif method == "random;":
        assert min(got) >= n // 6, got
    elif method == "least_time header;":
        # Where its draw goes depends on the origins' measured latencies;
        # what matters here is that every request stayed in its pool.
        pass
    else:
        # The same key (or client /24) always reaches the same origin.
        keyed = "k" if method.startswith("hash") else "src"
        where = {}
        for o_i, o in enumerate(eu):
            for r in o.requests:
                if not r.target.startswith("/r"):
                    continue
                i = int(r.target[2:].split("?")[0])
                key = f"key{i % 7}" if keyed == "k" else f"127.0.{i % 5}.1"
                assert where.setdefault(key, o_i) == o_i, (key, method)
        assert len(where) == (7 if keyed == "k" else 5)


# ---- failover ------------------------------------------------------------------------------------


def test_failover_under_load_and_return(server, origin):
    os_ = [origin() for _ in range(3)]
    lines = [f"{o.addr} max_fails=1 fail_timeout=2s" for o in os_]
    s = start(server, site(upstream_block("u", lines, "zone lb 64k;")))
    victim = os_[1]
    port = victim.port
    results = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(k):
        c = Client(s.port)
        i = 0
        while not stop.is_set() and i < 3000:
            try:
                status, _ = c.get(f"/load?{k}.{i}")
            except Exception as e:  # a client error: the test fails on it
                status = repr(e)
            with lock:
                results.append(status)
            i += 1
        c.close()

    ts = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    time.sleep(0.5)
    victim.stop()  # killed mid-load: its connections close under the proxy
    time.sleep(0.7)
    stop.set()
    for t in ts:
        t.join(timeout=30)
    bad = [r for r in results if r != 200]
    assert len(results) > 200
    assert bad == [], f"{len(bad)} client errors of {len(results)}: {bad[:5]}"
    assert poll(lambda: "temporarily disabled" in s.error_log(), timeout=3)
    assert re.search(r"\[warn\].*upstream server temporarily disabled.*" + re.escape(victim.addr), s.error_log())

    # The origin comes back on its port: after fail_timeout it is in the
    # rotation again.
    back = origin(port=port)
    time.sleep(2.2)
    c = Client(s.port)
    for i in range(30):
        assert c.get(f"/after/{i}")[0] == 200
    c.close()
    assert counts([back], "/after/")[0] >= 5
    assert "is available again" in s.error_log()


# ---- active health checks -----------------------------------------------------------------------


def health_handler(state):
    """200 for requests, `state["health"]` for /health."""
    def handle(conn, req):
        code = state["health"] if req.target == "/health" else 200
        conn.sendall(response(code, b"ok\n"))
        return True
    return handle


def test_active_check_removes_a_failing_server_before_any_request(server, origin):
    good = origin(health_handler({"health": 200}))
    bad_state = {"health": 500}
    bad = origin(health_handler(bad_state))
    ups = upstream_block("u", [good.addr, bad.addr],
                         "zone lb 64k;\n    health_check interval=300ms passes=2 uri=/health mandatory;")
    s = start(server, site(ups))
    # From the first moment: "mandatory" keeps unchecked servers out, so
    # nothing reaches bad, and good serves once checked.
    statuses = run_load(s.port, 100, path="/early")
    assert counts([bad], "/early")[0] == 0
    # 502 until good's first check passes (how soon depends on the
    # machine's load), 200 from then on.
    ok = statuses.index(200) if 200 in statuses else len(statuses)
    assert statuses == [502] * ok + [200] * (len(statuses) - ok), statuses
    assert poll(lambda: run_load(s.port, 1, path="/early") == [200], timeout=10)
    assert counts([bad], "/early")[0] == 0
    assert re.search(r"\[warn\] .*upstream server \"%s\" of upstream \"u\" is unhealthy: health check of "
                     r"\"/health\" failed: status 500" % re.escape(bad.addr), s.error_log())
    # bad is healthy again after 2 passes: back in rotation.
    bad_state["health"] = 200
    assert poll(lambda: "is healthy again: 2 health checks passed" in s.error_log(), timeout=5)
    statuses = run_load(s.port, 40, path="/later")
    assert statuses == [200] * 40
    assert counts([bad], "/later")[0] == 20
    # And out again once it fails.
    bad_state["health"] = 503
    assert poll(lambda: s.error_log().count("is unhealthy") >= 2, timeout=5)
    statuses = run_load(s.port, 40, path="/again")
    assert statuses == [200] * 40
    assert counts([bad], "/again")[0] == 0


def test_active_check_match_block(server, origin):
    def handler(conn, req):
        if req.target == "/status":
            body = b"maintenance mode" if conn.getsockname()[1] == maint.port else b"all good"
            conn.sendall(response(200, body, [("X-Role", "app")]))
        else:
            conn.sendall(response(200, b"ok\n"))
        return True

    fine = origin(handler)
    maint = origin(handler)
    ups = upstream_block("u", [fine.addr, maint.addr],
                         "zone lb 64k;\n    health_check interval=300ms uri=/status match=app_ok;")
    http = site(ups) + """
    match app_ok {
        status 200-299;
        header X-Role = app;
        body !~ "maintenance";
    }
"""
    s = start(server, http)
    assert poll(lambda: "is unhealthy" in s.error_log(), timeout=5)
    assert 'body matches "maintenance"' in s.error_log()
    statuses = run_load(s.port, 30, path="/m")
    assert statuses == [200] * 30
    assert counts([maint], "/m")[0] == 0


def test_active_check_refused_and_chunked_answers(server, origin):
    # The checks go through the proxy's upstream client: a refused
    # connection is logged as a failed try is, and a chunked answer (which
    # the HTTP/1.0 request does not ask for, but origins send) is read
    # whole before the body test.
    def chunked(conn, req):
        if req.target == "/status":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         b"4\r\nall \r\n4\r\ngood\r\n0\r\n\r\n")
            return False
        conn.sendall(response(200, b"ok\n"))
        return True

    fine = origin(chunked)
    dead = closed_port()
    ups = upstream_block("u", [fine.addr, f"127.0.0.1:{dead}"],
                         "zone lb 64k;\n    health_check interval=300ms uri=/status match=good;")
    http = site(ups) + """
    match good {
        body ~ "all good";
    }
"""
    s = start(server, http)
    assert poll(lambda: "is unhealthy" in s.error_log(), timeout=5)
    log = s.error_log()
    assert re.search(r'\[warn\] .*upstream server "127\.0\.0\.1:%d" of upstream "u" is unhealthy: health check '
                     r'of "/status" failed: connect\(\) failed \(111: Connection refused\)' % dead, log), log
    assert re.search(r'\[error\] .*connect\(\) failed \(111: Connection refused\) while connecting to upstream, '
                     r'health check "/status" of peer "127\.0\.0\.1:%d" in upstream "u"' % dead, log), log
    assert poll(lambda: 'upstream server "%s" of upstream "u" passed its first health check' % fine.addr
                in s.error_log(), timeout=5)
    assert 'upstream server "%s" of upstream "u" is unhealthy' % fine.addr not in s.error_log()
    statuses = run_load(s.port, 20, path="/c")
    assert statuses == [200] * 20


# ---- latency ------------------------------------------------------------------------------------


def test_least_time_moves_load_off_a_slow_origin(server, origin):
    def slow(conn, req):
        time.sleep(0.05)
        return ok_handler(conn, req)

    fast_o = origin()
    slow_o = origin(slow)
    s = start(server, site(upstream_block("u", [fast_o.addr, slow_o.addr], "least_time last_byte; zone lb 64k;")))
    t0 = time.monotonic()
    statuses = run_load(s.port, 600, threads=4)
    elapsed = time.monotonic() - t0
    assert statuses == [200] * 600
    fast_n, slow_n = counts([fast_o, slow_o])
    print(f"least_time: fast {fast_n}, slow (+50 ms) {slow_n} in {elapsed:.1f}s")
    # Round robin would give each half.
    assert slow_n < 0.1 * (fast_n + slow_n)


# ---- all down, backups --------------------------------------------------------------------------


def test_all_down_is_a_fast_502(server, origin):
    dead = [closed_port() for _ in range(3)]
    lines = [f"127.0.0.1:{p}" for p in dead]
    s = start(server, site(upstream_block("u", lines)))
    for i in range(5):
        t0 = time.monotonic()
        r = s.get(f"/down/{i}")
        assert r.status == 502
        assert time.monotonic() - t0 < 1.0
    # All disabled by now: "no live upstreams", still at once.
    assert "no live upstreams" in s.error_log()


def test_backup_takes_over(server, origin):
    primary = origin()
    backup = origin()
    lines = [f"{primary.addr} max_fails=1 fail_timeout=30s", f"127.0.0.1:{closed_port()} max_fails=1",
             f"{backup.addr} backup"]
    s = start(server, site(upstream_block("u", lines, "least_conn;")))
    statuses = run_load(s.port, 20, path="/p")
    assert statuses == [200] * 20
    assert counts([backup], "/p")[0] == 0
    primary.stop()
    statuses = run_load(s.port, 20, path="/b")
    assert statuses == [200] * 20
    assert counts([backup], "/b")[0] == 20


# ---- the zone: workers agree, a reload keeps the state ---------------------------------------------


def test_zone_shared_by_workers_and_kept_by_reload(server, origin):
    import os
    import signal
    good = [origin(), origin()]
    dead = closed_port()
    lines = [good[0].addr, good[1].addr, f"127.0.0.1:{dead} max_fails=1 fail_timeout=60s"]
    s = server(site(upstream_block("u", lines, "zone lb 64k;")), start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    s.start()
    refused = f"127.0.0.1:{dead}"

    def failures():
        return len(re.findall(r"connect\(\) failed .* upstream: \"http://%s" % re.escape(refused), s.error_log()))

    # New connections each time: both workers take requests. The dead
    # server is tried once in all, whichever worker met it first.
    for i in range(40):
        assert s.get(f"/a/{i}").status == 200
    assert failures() == 1
    # A reload with the same upstream: the new workers know it is down.
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: s.error_log().count("start worker process") >= 4, timeout=5)
    time.sleep(0.3)
    for i in range(40):
        assert s.get(f"/b/{i}").status == 200
    assert failures() == 1
