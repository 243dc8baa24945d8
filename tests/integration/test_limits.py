"""limit_req and limit_conn: what a client sees, and the log lines.

Masters run two workers on a "reuseport" listener, so that connections
land on either worker and a limit kept per worker would show: each test
that counts asserts that both workers answered. Rates are per minute
where a test counts passes, so that no request leaks out of a bucket
while the test runs; the requests of one test take far less than the
second a 1r/m bucket needs to leak a thousandth.
"""

import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from gh_server import Response, poll, server  # noqa: F401  (server: the fixture)
from origins import Origin, response


def two_workers(s):
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    return s


def start(server, http, files=None):
    s = two_workers(server(http, files or {"index.html": "hello\n"}, start=False))
    code, err = s.test_config()
    if 'unknown directive "limit_req_zone"' in err or 'unknown directive "limit_conn_zone"' in err:
        pytest.skip("limit modules not built")
    assert code == 0, err
    s.start()
    wait_workers(s)
    return s


def children(pid):
    pids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return sorted(pids)


def sleeping(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] == "S"


def wait_workers(s, n=2):
    """The workers once each waits in its loop (so both take connections)."""
    def ready():
        c = children(s.master_pid())
        return c if len(c) == n and all(sleeping(p) for p in c) else None

    pids = poll(ready, timeout=20)
    assert pids, s.error_log()
    return pids


def get_many(s, path, n, host="localhost"):
    """n requests, one after the other, one connection each."""
    return [s.get(path, host=host) for _ in range(n)]


def get_together(s, path, n):
    """n requests at once, one connection each: the listener's wakeups
    then spread them over the workers (one by one, a single idle worker
    would take them all)."""
    out = [None] * n

    def one(i):
        out[i] = s.get(path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def log_lines(s, name, n):
    return [line.decode().rstrip("\n") for line in s.wait_lines(name, n)]


# ---- limit_req ---------------------------------------------------------------------------


def test_burst_nodelay_counts_once_for_all_workers(server):
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    server {
        listen 127.0.0.1:PORT reuseport;
        add_header X-Pid $pid always;
        location / { limit_req zone=one burst=3 nodelay; }
    }""")
    # Rounds of simultaneous requests until both workers have answered
    # some: per-worker buckets would let 4 through each.
    rs = []
    for _ in range(10):
        rs += get_together(s, "/", 10)
        if len({r.header("X-Pid") for r in rs}) == 2:
            break
    assert len({r.header("X-Pid") for r in rs}) == 2
    assert sorted(r.status for r in rs) == [200] * 4 + [503] * (len(rs) - 4)


def test_without_burst_only_one_per_period_and_status_code(server):
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    server {
        listen 127.0.0.1:PORT reuseport;
        limit_req_status 429;
        location / { limit_req zone=one; }
    }""")
    assert [r.status for r in get_many(s, "/", 3)] == [200, 429, 429]


def test_refused_requests_are_not_counted(server):
    # Two limits: a request refused by one is counted by neither.
    s = start(server, """
    limit_req_zone $arg_a zone=a:1m rate=1r/m;
    limit_req_zone $arg_b zone=b:1m rate=1r/m;
    log_format l "$args $status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / { limit_req zone=a nodelay; limit_req zone=b nodelay; }
    }""")
    statuses = [s.get(p).status for p in ("/?a=1", "/?a=1&b=1", "/?b=1", "/?b=1", "/?a=2&b=2", "/")]
    assert statuses == [200, 503, 200, 503, 200, 200]
    assert log_lines(s, "l.log", 6) == [
        "a=1 200 PASSED", "a=1&b=1 503 REJECTED", "b=1 200 PASSED", "b=1 503 REJECTED",
        "a=2&b=2 200 PASSED", " 200 -"]


def test_a_level_with_its_own_limits_inherits_none(server):
    s = start(server, """
    limit_req_zone $arg_a zone=a:1m rate=1r/m;
    limit_req_zone $arg_b zone=b:1m rate=1r/m;
    server {
        listen 127.0.0.1:PORT reuseport;
        limit_req zone=a;
        location / { }
        location /own { limit_req zone=b; }
    }""", {"index.html": "hello\n", "own": "own\n"})
    paths = ("/own?a=1", "/own?a=1", "/own?b=1", "/own?b=1", "/?a=2", "/?a=2", "/?b=2", "/?b=2")
    assert [s.get(p).status for p in paths] == [200, 200, 200, 503, 200, 503, 200, 200]


def test_empty_key_is_not_limited(server):
    s = start(server, """
    limit_req_zone $http_x_client zone=one:1m rate=1r/m;
    log_format l "$status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / { limit_req zone=one; }
    }""")
    assert [r.status for r in get_many(s, "/", 4)] == [200] * 4
    assert log_lines(s, "l.log", 4) == ["200 -"] * 4
    assert s.get("/", headers=[("X-Client", "x")]).status == 200
    assert s.get("/", headers=[("X-Client", "x")]).status == 503


def test_dry_run_logs_and_lets_through(server):
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    log_format l "$uri $status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        limit_req_dry_run on;
        location /d { limit_req zone=one burst=1; }
        location /r { limit_req zone=one; }
    }""", {"d": "d\n", "r": "r\n"})
    assert [s.get(p).status for p in ("/d", "/d", "/r")] == [200, 200, 200]
    assert log_lines(s, "l.log", 3) == ["/d 200 PASSED", "/d 200 DELAYED_DRY_RUN", "/r 200 REJECTED_DRY_RUN"]
    err = s.error_log()
    # Delays are logged one level below refusals (error: warn).
    assert re.search(r'\[warn\] .*delaying request, dry run, excess: \d\.\d{3}, by zone "one", client: 127\.0\.0\.1',
                     err), err
    assert re.search(r'\[error\] .*limiting requests, dry run, excess: \d\.\d{3} by zone "one", client: 127\.0\.0\.1',
                     err), err


def test_log_level_and_delay_ends_when_the_client_leaves(server):
    # 1r/m with burst: the second request waits a minute on a timer; the
    # client leaves meanwhile and the request ends (499), worker unharmed.
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    log_format l "$uri $status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        limit_req_log_level notice;
        location / { limit_req zone=one burst=1; }
        location /free { return 200 "free\\n"; }
    }""")
    assert s.get("/").status == 200
    c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    c.sendall(s.request_bytes("/"))
    assert poll(lambda: "delaying request" in s.error_log(), timeout=10), s.error_log()
    # 1r/m leaks a thousandth every 60 ms: the excess is about 1.
    # Others are served while it waits.
    assert s.get("/free").body == b"free\n"
    c.close()
    lines = log_lines(s, "l.log", 3)
    # ("return" answers in the rewrite phase, before any limit.)
    assert lines == ["/index.html 200 PASSED", "/free 200 -", "/ 499 DELAYED"]
    # A third is refused (the delayed one was counted), at notice.
    assert s.get("/").status == 503
    assert re.search(r'\[notice\] .*limiting requests, excess: [12]\.\d{3} by zone "one"', s.error_log())
    assert re.search(r'\[info\] .*delaying request, excess: [01]\.\d{3}, by zone "one"', s.error_log())


def test_delayed_requests_are_answered_in_turn(server):
    # 20r/s, burst 30: 20 simultaneous requests each wait their turn (up
    # to a second) on timers, without holding the worker.
    s = start(server, """
    limit_req_zone $server_name zone=one:1m rate=20r/s;
    log_format l "$status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        server_name x;
        access_log logs/l.log l;
        location / { limit_req zone=one burst=30; }
    }""")
    results = [None] * 20

    def one(i):
        results[i] = s.get("/")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [r.status for r in results] == [200] * 20
    # Which ones wait depends on when each arrives (a request finding the
    # bucket drained passes): every one is either, and some waited.
    lines = log_lines(s, "l.log", 20)
    assert set(lines) <= {"200 PASSED", "200 DELAYED"}
    assert "200 DELAYED" in lines


def test_delay_threshold_lets_the_first_ones_through(server):
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    log_format l "$status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / { limit_req zone=one burst=5 delay=2; }
    }""")
    assert [r.status for r in get_many(s, "/", 3)] == [200] * 3
    assert log_lines(s, "l.log", 3) == ["200 PASSED"] * 3
    c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    c.sendall(s.request_bytes("/"))
    assert poll(lambda: re.search(r"delaying request, excess: [23]\.\d{3}, by zone", s.error_log()), timeout=10), \
        s.error_log()
    c.close()


def test_a_full_zone_forgets_the_least_recently_used_keys(server):
    # 32k holds a few hundred records: 2000 keys push the first ones out
    # (they pass again), the last ones are still limited.
    s = start(server, """
    limit_req_zone $arg_k zone=small:32k rate=1r/m;
    server {
        listen 127.0.0.1:PORT reuseport;
        location / { limit_req zone=small; }
    }""")
    for start_at in range(0, 2000, 500):
        # 500 a connection (keepalive_requests allows 1000).
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            f = c.makefile("rb")
            for i in range(start_at, start_at + 500):
                c.sendall(f"GET /?k={i:0>40} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status = int(f.readline().split()[1])
                assert status == 200, i
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                f.read(length)
    assert s.get(f"/?k={1999:0>40}").status == 503
    assert s.get(f"/?k={0:0>40}").status == 200


def test_limited_once_across_an_internal_redirect(server):
    # "/" goes to /index.html internally, in the same location: a second
    # check would refuse it (1r/m, no burst).
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    log_format l "$uri $status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / { limit_req zone=one; }
    }""")
    r = s.get("/")
    assert (r.status, r.body) == (200, b"hello\n")
    assert log_lines(s, "l.log", 1) == ["/index.html 200 PASSED"]


def test_ipv6_client_key(server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    log_format l "$remote_addr $status $limit_req_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        listen [::1]:PORT reuseport;
        access_log logs/l.log l;
        location / { limit_req zone=one; }
    }""")

    def get6():
        with socket.create_connection(("::1", s.port), timeout=5) as c:
            c.sendall(s.request_bytes("/"))
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        return Response(data).status

    assert [get6(), get6(), s.get("/").status, s.get("/").status] == [200, 503, 200, 503]
    assert log_lines(s, "l.log", 4) == [
        "::1 200 PASSED", "::1 503 REJECTED", "127.0.0.1 200 PASSED", "127.0.0.1 503 REJECTED"]


def test_reload_keeps_the_zone_and_a_resize_empties_it(server):
    http = """
    limit_req_zone $binary_remote_addr zone=one:SIZE rate=1r/m;
    server {
        listen 127.0.0.1:PORT reuseport;
        location / { limit_req zone=one; }
    }"""
    s = start(server, http.replace("SIZE", "1m"))
    first = wait_workers(s)
    assert s.get("/").status == 200
    assert s.get("/").status == 503

    def reload(text):
        before = children(s.master_pid())
        s.conf.write_text(s.conf.read_text().replace("zone=one:1m", text))
        s.proc.send_signal(signal.SIGHUP)
        assert poll(lambda: (lambda c: c if len(c) == 2 and not set(c) & set(before) else None)(
            children(s.master_pid())), timeout=20), s.error_log()

    reload("zone=one:1m")
    assert children(s.master_pid()) != first
    assert s.get("/").status == 503
    reload("zone=one:2m")
    assert s.get("/").status == 200
    assert s.get("/").status == 503


def test_reload_with_another_key_is_refused(server):
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
    server {
        listen 127.0.0.1:PORT reuseport;
        location / { limit_req zone=one; }
    }""")
    wait_workers(s)
    s.conf.write_text(s.conf.read_text().replace("$binary_remote_addr", "$remote_addr"))
    s.proc.send_signal(signal.SIGHUP)
    assert poll(lambda: 'limit_req "one" uses the "$remote_addr" key while previously it used the '
                        '"$binary_remote_addr" key' in s.error_log(), timeout=10), s.error_log()
    # The old configuration serves on, its zone intact.
    assert s.get("/").status == 200
    assert s.get("/").status == 503


@pytest.mark.parametrize("directive,message", [
    ("limit_req_zone $uri zone=one:1k rate=1r/s;", 'zone "zone=one:1k" is too small'),
    ("limit_req_zone $uri zone=one rate=1r/s;", 'invalid zone size "zone=one"'),
    ("limit_req_zone $uri zone=one:1m rate=0r/s;", 'invalid rate "rate=0r/s"'),
    ("limit_req_zone $uri rate=1r/s rate=2r/s;", '"limit_req_zone" must have "zone" parameter'),
    ("limit_req zone=nope;", 'unknown limit_req_zone "nope"'),
    ("limit_req_zone $uri zone=one:1m rate=1r/s; limit_req zone=one burst=0;", 'invalid burst value "burst=0"'),
    ("limit_req_zone $uri zone=one:1m rate=1r/s; limit_req zone=one delay=x;", 'invalid delay value "delay=x"'),
    ("limit_req_status 200;", '"limit_req_status" directive value must be between 400 and 599'),
    ("limit_req_log_level debug;", 'invalid value "debug" in "limit_req_log_level" directive'),
    ("limit_conn_zone $uri zone=c:1m; limit_conn c 0;", 'invalid number of connections "0"'),
    ("limit_conn c 1;", 'unknown limit_conn_zone "c"'),
    ("limit_conn_zone $uri zone=c:1m; limit_req_zone $uri zone=c:1m rate=1r/s;",
     'shared memory zone "c" is already used by another module'),
])
def test_configuration_errors(server, directive, message):
    s = two_workers(server("%s\nserver { listen 127.0.0.1:PORT; }" % directive, start=False))
    code, err = s.test_config()
    if 'unknown directive "limit_' in err:
        pytest.skip("limit modules not built")
    assert code == 1
    assert "[emerg] " + message + " in " in err, err


def test_sync_is_accepted_with_a_warning(server):
    # NGINX Plus's "sync" shares a zone between nodes; there is no such
    # synchronization yet, and the operator is told the limit is per node.
    s = two_workers(server("limit_req_zone $uri zone=one:1m rate=1r/s sync;\n"
                           "server { listen 127.0.0.1:PORT; location / { limit_req zone=one; return 204; } }",
                           start=False))
    code, err = s.test_config()
    assert code == 0, err
    assert ('[warn] "sync" of limit_req_zone: zones are not synchronized between nodes, '
            'the limit applies per node in ') in err, err


# ---- limit_conn -------------------------------------------------------------------------


class Gate:
    """An origin that holds every response until release()."""

    def __init__(self):
        self.open = threading.Event()
        self.origin = Origin(self.handle)

    def handle(self, conn, req):
        self.open.wait(20)
        conn.sendall(response(200, b"held\n", close=True))
        return False

    def release(self):
        self.open.set()


@pytest.fixture
def gate():
    made = []

    def make():
        g = Gate()
        made.append(g)
        return g

    yield make
    for g in made:
        g.release()
        g.origin.stop()


def send(port, path):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path).encode())
    return c


def read_all(c):
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    return Response(data)


def test_limit_conn_exactly_n_across_workers(server, gate):
    g = gate()
    s = start(server, f"""
    limit_conn_zone $binary_remote_addr zone=addr:1m;
    log_format l "$status $limit_conn_status $pid";
    server {{
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / {{ limit_conn addr 3; proxy_pass http://{g.origin.addr}; }}
    }}""")
    held = [send(s.port, f"/h{i}") for i in range(3)]
    g.origin.wait_requests(3)
    # More, at once, until both workers have refused some: each finds the
    # count at 3 whichever worker holds the three.
    refused = []
    for _ in range(10):
        refused += [r.status for r in get_together(s, "/r", 8)]
        lines = log_lines(s, "l.log", len(refused))
        if len({line.split()[2] for line in lines}) == 2:
            break
    assert refused == [503] * len(refused)
    g.release()
    assert [read_all(c).status for c in held] == [200] * 3
    lines = log_lines(s, "l.log", len(refused) + 3)
    assert sorted(line.split()[1] for line in lines) == ["PASSED"] * 3 + ["REJECTED"] * len(refused)
    assert len({line.split()[2] for line in lines}) == 2
    # Every count goes back (as each request is freed, after its log line).
    assert poll(lambda: read_all(send(s.port, "/again")).status == 200, timeout=10)


def test_limit_conn_counts_come_back_from_aborted_requests(server, gate):
    g = gate()
    s = start(server, f"""
    limit_conn_zone $binary_remote_addr zone=addr:1m;
    log_format l "$uri $status $limit_conn_status";
    server {{
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / {{ limit_conn addr 1; proxy_pass http://{g.origin.addr}; }}
        location /q {{ limit_conn addr 1; }}
    }}""", {"q": "q\n"})
    def aborted():
        return [line for line in s.read_log("l.log").decode().splitlines() if line.startswith("/a")]

    for i in range(5):
        c = send(s.port, f"/a{i}")
        g.origin.wait_requests(i + 1)
        c.close()
        # The worker sees the client go and ends the request (499); its
        # count goes back as the request is freed, right after its log
        # line: /q answers 200 once it has.
        assert poll(lambda: aborted() == [f"/a{j} 499 PASSED" for j in range(i + 1)], timeout=10), aborted()
        assert poll(lambda: s.get("/q").status == 200, timeout=10)
    # Exactly one at a time still: nothing leaked, nothing went negative.
    c = send(s.port, "/b")
    g.origin.wait_requests(6)
    assert s.get("/q").status == 503
    g.release()
    assert read_all(c).status == 200


def test_limit_conn_zone_full_refuses_and_says_so(server, gate):
    # Long keys take a 512-byte page each: a 32k zone holds a few dozen
    # counts at once; the requests beyond get 503 and an alert.
    g = gate()
    s = start(server, f"""
    limit_conn_zone $arg_k zone=small:32k;
    server {{
        listen 127.0.0.1:PORT reuseport;
        location / {{ limit_conn small 1; proxy_pass http://{g.origin.addr}; }}
    }}""")
    key = "x" * 250
    socks = [send(s.port, f"/?k={key}{i:03}") for i in range(100)]
    # Each is either at the origin or refused (and logged) at once.
    def refused():
        return s.error_log().count('could not allocate node in limit_conn zone "small"')

    assert poll(lambda: len(g.origin.requests) + refused() == 100, timeout=20), (len(g.origin.requests), refused())
    at_origin = len(g.origin.requests)
    g.release()
    statuses = sorted(read_all(c).status for c in socks)
    assert statuses.count(503) == 100 - at_origin
    assert 20 <= at_origin < 100
    assert re.search(r'\[alert\] .*could not allocate node in limit_conn zone "small"', s.error_log())
    # Every count went back: the zone has room again.
    assert poll(lambda: read_all(send(s.port, f"/?k={key}new")).status == 200, timeout=10)


def test_limit_conn_status_log_level_and_dry_run(server, gate):
    g = gate()
    s = start(server, f"""
    limit_conn_zone $binary_remote_addr zone=addr:1m;
    log_format l "$uri $status $limit_conn_status";
    server {{
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        limit_conn_log_level warn;
        location /p {{ limit_conn addr 1; proxy_pass http://{g.origin.addr}; }}
        location /s {{ limit_conn addr 1; limit_conn_status 429; }}
        location /d {{ limit_conn addr 1; limit_conn_dry_run on; }}
        location /n {{ }}
    }}""", {"s": "s\n", "d": "d\n", "n": "n\n"})
    held = send(s.port, "/p")
    g.origin.wait_requests(1)
    assert [s.get(p).status for p in ("/s", "/d", "/n")] == [429, 200, 200]
    g.release()
    assert read_all(held).status == 200
    assert log_lines(s, "l.log", 4) == ["/s 429 REJECTED", "/d 200 REJECTED_DRY_RUN", "/n 200 -", "/p 200 PASSED"]
    err = s.error_log()
    assert re.search(r'\[warn\] .*limiting connections by zone "addr", client: 127\.0\.0\.1', err), err
    assert re.search(r'\[warn\] .*limiting connections, dry run, by zone "addr"', err), err


def test_limit_req_and_limit_conn_together(server):
    # A request refused by limit_req never takes a limit_conn count.
    s = start(server, """
    limit_req_zone $binary_remote_addr zone=r:1m rate=1r/m;
    limit_conn_zone $binary_remote_addr zone=c:1m;
    log_format l "$status $limit_req_status $limit_conn_status";
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/l.log l;
        location / { limit_req zone=r; limit_conn c 1; }
    }""")
    assert [r.status for r in get_many(s, "/", 2)] == [200, 503]
    assert log_lines(s, "l.log", 2) == ["200 PASSED PASSED", "503 REJECTED -"]
