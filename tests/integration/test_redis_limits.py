"""limit_req_zone and limit_conn_zone sync=: one limit for a fleet of
nodes, through Redis.

A real redis-server runs on a free loopback port (started by the test,
stopped by its pid); three gatehouse masters, two workers each, share it
through "redis r { }" and proxy what their limit lets through to one
origin, which counts it. A flood spread over the three nodes at ten times
the rate gives the origin the fleet's rate (not three times it); with
Redis killed the nodes keep serving under their own limits and nothing
fails for Redis' sake; with Redis back the fleet rate holds again. limit_conn counts the
requests every node holds.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from gh_server import Server, free_port, poll, require_binary
from origins import Origin, response

REDIS = shutil.which("redis-server")
RATE = 40  # r/s, the fleet's
FLOOD = 10 * RATE
# A burst keeps the bucket from emptying between two accepted requests
# under the flood: without one, the time from the bucket's emptying to
# the next arrival is lost each time (a few percent, as in nginx), and
# the test would measure the arrivals' jitter rather than the sync.
BURST = 5


class Redis:
    """redis-server on 127.0.0.1:port, no persistence, stopped by pid.
    test_redis_tls.py's TlsRedis changes how it listens and is reached."""

    def __init__(self, tmp_path, port=None):
        self.dir = tmp_path
        self.port = port or free_port()
        self.proc = None

    def listen_args(self):
        return ["--port", str(self.port)]

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, *self.listen_args(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert poll(self.ping, timeout=10), "redis-server did not start"
        return self

    def ping(self):
        return self.command("PING") == b"+PONG\r\n"

    def command(self, *args):
        """One command in RESP; the raw reply, or None if unreachable."""
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        try:
            with self.connect() as s:
                s.sendall(out)
                return s.recv(65536)
        except OSError:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def redis(tmp_path):
    if not REDIS:
        pytest.skip("redis-server is not installed")
    made = []

    def make(port=None):
        r = Redis(tmp_path, port)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.kill()


@pytest.fixture
def fleet(tmp_path):
    """fleet(http, n) starts n masters with two workers each on one
    config (PORT: each one's own port)."""
    require_binary()
    started = []

    def make(http, n=3):
        nodes = []
        for i in range(n):
            s = Server(tmp_path / f"node{i}", http)
            s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
            started.append(s)
            nodes.append(s.start())
        return nodes

    yield make
    for s in started:
        s.stop()


def limited_http(redis_port, origin, extra=""):
    return f"""
    redis r {{ server 127.0.0.1:{redis_port}; timeout 1s; connect_timeout 1s; sync_interval 20ms; }}
    limit_req_zone $binary_remote_addr zone=one:1m rate={RATE}r/s sync=r {extra};
    server {{
        listen 127.0.0.1:PORT reuseport;
        location / {{
            limit_req zone=one burst={BURST} nodelay;
            limit_req_status 429;
            proxy_pass http://{origin.addr};
        }}
    }}
    """


def flood(nodes, seconds, stop_at=None):
    """FLOOD r/s spread evenly over the nodes for `seconds` (keep-alive
    connections, one thread per node). Returns ({status: count} per node,
    the seconds it took). stop_at(elapsed) is called once per request of
    the first node, for a test acting mid-flood."""
    results = [dict() for _ in nodes]
    per_node = FLOOD / len(nodes)
    start = time.monotonic()

    def run(i, node):
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        n = 0
        while True:
            due = start + n / per_node
            now = time.monotonic()
            if due - start >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            if i == 0 and stop_at:
                stop_at(time.monotonic() - start)
            try:
                conn.request("GET", f"/r{n}")
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            except (OSError, http.client.HTTPException) as e:
                status = repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            results[i][status] = results[i].get(status, 0) + 1
            n += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(i, node)) for i, node in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.monotonic() - start


def total(results, status):
    return sum(r.get(status, 0) for r in results)


def synced(nodes):
    """Each node's worker 0 has sent a batch since the last outage: the
    zone's key is in Redis (checked by the caller), or the resume line."""
    return all("synchronizing with redis \"r\" again" in n.error_log() for n in nodes)


def test_fleet_rate_holds_across_three_nodes(redis, fleet, tmp_path):
    r = redis()
    origin = Origin()
    try:
        nodes = fleet(limited_http(r.port, origin))
        results, took = flood(nodes, 4.0)
        seen = len(origin.requests)
        # Every answer is the origin's 200 or the limit's 429; the origin
        # saw exactly the 200s.
        assert set().union(*[set(x) for x in results]) == {200, 429}, results
        assert total(results, 200) == seen
        # Every node took part: the fleet's share is not one node's.
        assert all(x.get(200, 0) > 0 for x in results), results
        expected = RATE * took + BURST + 1
        assert abs(seen - expected) <= 0.1 * expected, (seen, expected, results)
        # The fleet bucket is Redis' hash for the client's key.
        keys = r.command("KEYS", "gatehouse:lr:{one}:*")
        assert keys.startswith(b"*1\r\n"), keys
    finally:
        origin.stop()


def test_redis_lost_and_back(redis, fleet, tmp_path):
    r = redis()
    origin = Origin()
    try:
        nodes = fleet(limited_http(r.port, origin))
        killed = []

        def kill_mid(elapsed):
            if elapsed >= 1.0 and not killed:
                r.kill()
                killed.append(time.monotonic())

        results, took = flood(nodes, 4.0, stop_at=kill_mid)
        assert killed
        # Nothing failed for Redis' sake: only 200s and the limit's 429s,
        # and every node went on serving.
        assert set().union(*[set(x) for x in results]) == {200, 429}, results
        assert all(x.get(200, 0) > 0 for x in results), results
        for n in nodes:
            log = n.error_log()
            assert 'limit_req zone "one": redis "r" is unreachable, limiting per node until it is back' in log, log
        # Under local limits each node lets its own rate through: the
        # three seconds after the kill gave about three times the fleet
        # rate, so the flood's total is well above the fleet's.
        assert total(results, 200) > RATE * took * 1.3, results

        # Redis back on its port: every node resumes syncing, and the
        # fleet rate holds again.
        redis(r.port)
        assert poll(lambda: synced(nodes), timeout=10), [n.error_log() for n in nodes]
        before = len(origin.requests)
        results, took = flood(nodes, 3.0)
        seen = len(origin.requests) - before
        assert set().union(*[set(x) for x in results]) == {200, 429}, results
        # Redis lost its buckets with the restart: each key starts with
        # its burst again.
        expected = RATE * took + BURST + 1
        assert abs(seen - expected) <= 0.1 * expected, (seen, expected, results)
    finally:
        origin.stop()


def test_fail_closed_refuses_while_redis_is_away(redis, fleet, tmp_path):
    r = redis()
    origin = Origin()
    try:
        nodes = fleet(limited_http(r.port, origin, "fail=closed"), n=1)
        node = nodes[0]
        assert node.get("/a").status == 200
        r.kill()
        # Once the worker syncing the zone saw the loss, the zone refuses.
        assert poll(lambda: "is unreachable, limiting every request (fail=closed)" in node.error_log(), 10)
        resp = node.get("/b")
        assert resp.status == 429
        assert 'limiting requests, redis unreachable (fail=closed) by zone "one"' in node.error_log()
        redis(r.port)
        assert poll(lambda: synced(nodes), timeout=10)
        assert poll(lambda: node.get("/c").status == 200, timeout=5)
    finally:
        origin.stop()


def test_config_errors(tmp_path):
    require_binary()
    cases = [
        ("limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s sync=nope;",
         'unknown redis "nope"'),
        ("redis r { server 127.0.0.1:1; server 127.0.0.1:2; }",
         'only one "server" is allowed in redis "r"'),
        ("redis r { timeout 5ms; }", 'no "server" is defined in redis "r"'),
        ("redis r { server 127.0.0.1:1 user=u; }", '"user=" requires "password="'),
        ("redis r { server 127.0.0.1:1; bogus 1; }", 'unknown directive "bogus"'),
        ("redis r { server 127.0.0.1:1; }\n"
         "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s sync=r fail=maybe;",
         'invalid parameter "fail=maybe"'),
        ("limit_conn_zone $binary_remote_addr zone=c:1m sync=nope;", 'unknown redis "nope"'),
        ("limit_conn_zone $binary_remote_addr zone=c:1m bogus;", 'invalid parameter "bogus"'),
    ]
    for i, (http_block, message) in enumerate(cases):
        s = Server(tmp_path / f"c{i}", "server { listen 127.0.0.1:PORT; }\n" + http_block)
        rc, err = s.test_config()
        assert rc == 1, err
        assert message in err, err
        assert "gatehouse.conf:" in err, err


def held_origin():
    """An origin that answers /slow only once release is set, the rest
    at once; slow() is how many /slow it holds or held."""
    release = threading.Event()

    def handler(conn, req):
        if req.target.startswith("/slow"):
            release.wait(timeout=20)
        conn.sendall(response(200, b"done\n", close=True))
        return False

    o = Origin(handler)
    o.release = release
    o.slow = lambda: sum(1 for q in list(o.requests) if q.target.startswith("/slow"))
    return o


def fields(r, key):
    """The node fields of a limit_conn key's hash in Redis (HKEYS)."""
    reply = r.command("HKEYS", key)
    return [line for line in reply.split(b"\r\n")[1:] if line and not line.startswith((b"$", b"*"))]


def test_limit_conn_counts_the_fleet(redis, fleet):
    r = redis()
    origin = held_origin()
    socks = []
    try:
        nodes = fleet(f"""
        redis r {{ server 127.0.0.1:{r.port}; timeout 1s; sync_interval 20ms; }}
        limit_conn_zone $http_x_user zone=conn:1m sync=r;
        server {{
            listen 127.0.0.1:PORT reuseport;
            location / {{ limit_conn conn 4; proxy_pass http://{origin.addr}; }}
        }}
        """, n=2)
        key = "gatehouse:lc:{conn}:alice"

        def hold(node):
            s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-User: alice\r\n\r\n")
            socks.append(s)

        for _ in range(3):
            hold(nodes[0])
        origin.wait_requests(3)
        assert poll(lambda: len(fields(r, key)) == 1)
        # Node 1 sees its own count only until its first batch answers:
        # the fourth request passes, the fifth finds the fleet at 4.
        hold(nodes[1])
        origin.wait_requests(4)
        assert poll(lambda: len(fields(r, key)) == 2)
        # Node 1 refuses once the answer to the batch that wrote its field
        # is in (a request that passes before it ends at once: /more
        # does not wait at the origin).
        assert poll(lambda: nodes[1].get("/more", headers=[("X-User", "alice")]).status == 503)
        assert 'limiting connections by zone "conn"' in nodes[1].error_log()
        origin.release.set()
        for s in socks:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        # Released everywhere: the fields go, and alice passes again.
        assert poll(lambda: fields(r, key) == [])
        assert poll(lambda: nodes[1].get("/again", headers=[("X-User", "alice")]).status == 200)
    finally:
        origin.release.set()
        for s in socks:
            s.close()
        origin.stop()


def test_sync_goes_on_after_a_reload(redis, fleet):
    r = redis()
    origin = Origin()
    try:
        http_block = limited_http(r.port, origin).replace("$binary_remote_addr", "$arg_k")
        node = fleet(http_block, n=1)[0]

        def in_redis(k):
            return r.command("EXISTS", f"gatehouse:lr:{{one}}:{k}") == b":1\r\n"

        assert node.get("/?k=before").status == 200
        assert poll(lambda: in_redis("before"))
        # The new generation's worker 0 takes the sync over; the zone,
        # kept, still has what the old one counted.
        os.kill(node.master_pid(), signal.SIGHUP)
        assert poll(lambda: node.error_log().count("start worker process") >= 4, timeout=10)
        assert poll(lambda: node.get("/?k=after").status == 200 and in_redis("after"), timeout=10)
        assert "[alert]" not in node.error_log()
        assert "[emerg]" not in node.error_log()
    finally:
        origin.stop()


def test_limit_conn_without_redis_limits_per_node(redis, fleet):
    r = redis()
    origin = held_origin()
    socks = []
    try:
        nodes = fleet(f"""
        redis r {{ server 127.0.0.1:{r.port}; timeout 1s; sync_interval 20ms; }}
        limit_conn_zone $http_x_user zone=conn:1m sync=r;
        server {{
            listen 127.0.0.1:PORT reuseport;
            location / {{ limit_conn conn 2; proxy_pass http://{origin.addr}; }}
        }}
        """, n=2)
        key = "gatehouse:lc:{conn}:bob"

        def hold(node):
            s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-User: bob\r\n\r\n")
            socks.append(s)

        hold(nodes[0])
        hold(nodes[0])
        assert poll(lambda: origin.slow() == 2)
        assert poll(lambda: len(fields(r, key)) == 1)
        # Node 1 learns the fleet is full once its first batch for bob
        # answered (the refused request marks the key).
        assert poll(lambda: nodes[1].get("/x", headers=[("X-User", "bob")]).status == 503)
        # Redis gone: node 1 limits on its own, where bob holds nothing.
        r.kill()
        assert poll(lambda: 'limit_conn zone "conn": redis "r" is unreachable' in nodes[1].error_log(), 10)
        hold(nodes[1])
        assert poll(lambda: origin.slow() == 3)
        origin.release.set()
        for s in socks:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        origin.release.set()
        for s in socks:
            s.close()
        origin.stop()
