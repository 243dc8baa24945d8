"""Upstream servers that follow DNS: "server NAME resolve" in an upstream
block with a zone, as a client and the origins see it.

A real DNS server answers on loopback (dnsmasq, the Dnsmasq helper of
test_resolver.py: a hosts file the test rewrites, then SIGHUP). Origins
are Python threads on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (loopback answers
on all of 127/8), on one port, each answering with its own address, so
that a name's addresses are told apart by what they answer. Two workers:
the change must be made once, and every worker must follow it.

Covers: traffic moving to a name's new address under load with no failed
request; a peer that stays keeps its state (a failed one stays out); a
name that does not resolve at start (502, then 200 once it does); a
reload keeps the resolved addresses; the notice lines naming the
addresses added and removed, once per change.
"""

import http.server
import os
import re
import signal
import socketserver
import threading
import time

import pytest

from gh_server import free_port, poll, server  # noqa: F401  (server: the fixture)
from test_resolver import dnsmasq  # noqa: F401  (the fixture)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (the library's name)
        if self.path == "/slow":
            time.sleep(self.server.slow)
        body = self.server.ip.encode()
        with self.server.lock:
            self.server.count += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HostOrigin:
    """An HTTP origin on ip:port answering 200 with its ip as the body."""

    def __init__(self, ip, port):
        self.srv = _Server((ip, port), _Handler)
        self.srv.ip = ip
        self.srv.slow = 0.0  # how long /slow takes
        self.srv.count = 0
        self.srv.lock = threading.Lock()
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def count(self):
        with self.srv.lock:
            return self.srv.count

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def origins():
    made = []

    def make(ips, port):
        got = [HostOrigin(ip, port) for ip in ips]
        made.extend(got)
        return got

    yield make
    for o in made:
        o.stop()


def start(server, http, workers=2):
    s = server(http, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", f"worker_processes {workers};"))
    code, err = s.test_config()
    if 'unknown directive "proxy_pass"' in err:
        pytest.skip("proxy module not built")
    assert code == 0, err
    return s.start()


def site(dns_port, port, params="", extra=""):
    return f"""
    resolver 127.0.0.1:{dns_port} valid=1s ipv6=off;
    upstream u {{
        zone u 64k;
        server app.test:{port} resolve {params};
        {extra}
    }}
    server {{
        listen 127.0.0.1:PORT reuseport;
        location / {{
            proxy_pass http://u;
            add_header X-Up $upstream_addr always;
        }}
    }}"""


def resolved_lines(s):
    return re.findall(r'\[notice\] \d+#\d+: upstream "u": server "app\.test:\d+" resolved: (.*)', s.error_log())


def test_name_change_under_load_has_no_failed_request(server, dnsmasq, origins):  # noqa: F811
    port = free_port()
    o2, o3, o4 = origins(["127.0.0.2", "127.0.0.3", "127.0.0.4"], port)
    d = dnsmasq({"app.test": ["127.0.0.2", "127.0.0.3"]})
    s = start(server, site(d.port, port))
    # Both addresses serve, round robin.
    assert poll(lambda: s.get("/").status == 200, 10)
    bodies = [s.get("/").body for _ in range(6)]
    assert sorted(set(bodies)) == [b"127.0.0.2", b"127.0.0.3"]

    results = []
    stop = threading.Event()

    def load():
        # Bounded: sequential requests until told to stop, at most 20000.
        while not stop.is_set() and len(results) < 20000:
            try:
                r = s.get("/")
                results.append((r.status, r.body))
            except OSError as e:
                results.append((0, repr(e).encode()))

    t = threading.Thread(target=load)
    t.start()
    try:
        assert poll(lambda: len(results) >= 20, 10)
        d.reload({"app.test": ["127.0.0.4"]})
        assert poll(lambda: o4.count > 0, 15)
        n = len(results)
        assert poll(lambda: len(results) >= n + 50, 15)
    finally:
        stop.set()
        t.join(timeout=30)
    failed = [r for r in results if r[0] != 200]
    switched = next(i for i, r in enumerate(results) if r[1] == b"127.0.0.4")
    print(f"\nswitch: {len(results)} requests, first to 127.0.0.4 at #{switched}; "
          f"127.0.0.2: {o2.count}, 127.0.0.3: {o3.count}, 127.0.0.4: {o4.count}")
    assert failed == []
    # After the switch, the old addresses get nothing more (both workers).
    assert all(b == b"127.0.0.4" for _, b in results[-20:])
    r = s.get("/")
    assert (r.status, r.body, r.header("X-Up")) == (200, b"127.0.0.4", f"127.0.0.4:{port}")
    # Made once, whichever worker saw the TTL expire: one line per change.
    lines = resolved_lines(s)
    assert lines == [f"added [127.0.0.2:{port}, 127.0.0.3:{port}], removed []",
                     f"added [127.0.0.4:{port}], removed [127.0.0.2:{port}, 127.0.0.3:{port}]"]


def test_peer_that_stays_keeps_its_state(server, dnsmasq, origins):  # noqa: F811
    port = free_port()
    (o2,) = origins(["127.0.0.2"], port)
    d = dnsmasq({"app.test": ["127.0.0.2", "127.0.0.3"]})
    s = start(server, site(d.port, port, "max_fails=1 fail_timeout=300s"))
    assert poll(lambda: len(resolved_lines(s)) == 1, 10)
    # 127.0.0.3 refuses: the request goes on to 127.0.0.2 and .3 is out
    # for fail_timeout, in every worker (the state is in the zone).
    for _ in range(4):
        r = s.get("/")
        assert (r.status, r.body) == (200, b"127.0.0.2")
    assert "upstream server temporarily disabled" in s.error_log()
    (o3,) = origins(["127.0.0.3"], port)
    # .2 leaves, .3 stays (with its failure), .4 is new.
    (o4,) = origins(["127.0.0.4"], port)
    d.reload({"app.test": ["127.0.0.3", "127.0.0.4"]})
    assert poll(lambda: len(resolved_lines(s)) == 2, 15)
    assert resolved_lines(s)[1] == f"added [127.0.0.4:{port}], removed [127.0.0.2:{port}]"
    bodies = [s.get("/").body for _ in range(10)]
    # .3 answers now, but is still within its fail_timeout: not offered.
    assert bodies == [b"127.0.0.4"] * 10
    assert o3.count == 0


def test_name_not_resolving_at_start_is_502_then_200(server, dnsmasq, origins):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2"], port)
    d = dnsmasq({"other.test": ["127.0.0.9"]})
    s = start(server, site(d.port, port))
    # Asked at worker start: NXDOMAIN, the server has no address.
    assert poll(lambda: 'could not be resolved (3: Host not found)' in s.error_log(), 10)
    r = s.get("/")
    assert (r.status, r.header("X-Up")) == (502, "u")
    assert "no live upstreams" in s.error_log()
    d.reload({"app.test": ["127.0.0.2"]})
    assert poll(lambda: s.get("/").status == 200, 15)
    r = s.get("/")
    assert (r.status, r.body, r.header("X-Up")) == (200, b"127.0.0.2", f"127.0.0.2:{port}")


def test_reload_starts_with_the_resolved_addresses(server, dnsmasq, origins):  # noqa: F811
    port = free_port()
    o2, o3 = origins(["127.0.0.2", "127.0.0.3"], port)
    d = dnsmasq({"app.test": ["127.0.0.2"]})
    s = start(server, site(d.port, port))
    assert poll(lambda: s.get("/").status == 200, 10)
    # The DNS server goes away, and the group changes (a new zone record):
    # the new workers can only have the addresses from the old record.
    d.stop()
    s.conf.write_text(s.conf.read_text().replace("resolve ;", "resolve max_fails=2;"))
    code, err = s.test_config()
    assert code == 0, err
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: s.error_log().count("start worker process") >= 4, timeout=10)
    assert poll(lambda: s.error_log().count("exited with code") >= 2, timeout=10)
    rs = [s.get("/") for _ in range(10)]
    assert [(r.status, r.body) for r in rs] == [(200, b"127.0.0.2")] * 10
    assert o3.count == 0


def test_health_checks_follow_the_new_addresses(server, dnsmasq, origins):  # noqa: F811
    port = free_port()
    o2, o3 = origins(["127.0.0.2", "127.0.0.3"], port)
    d = dnsmasq({"app.test": ["127.0.0.2"]})
    s = start(server, site(d.port, port, extra="health_check interval=100ms uri=/hc;"))
    passed = 'upstream server "127.0.0.{}:%d" of upstream "u" passed its first health check' % port
    assert poll(lambda: passed.format(2) in s.error_log(), 10)
    d.reload({"app.test": ["127.0.0.3"]})
    assert poll(lambda: passed.format(3) in s.error_log(), 15)
    # The checks went to the new address, and stopped going to the old one.
    n2 = o2.count
    assert poll(lambda: o3.count >= 3, 10)
    assert o2.count <= n2 + 1
    r = s.get("/")
    assert (r.status, r.body) == (200, b"127.0.0.3")


def test_a_check_in_flight_when_the_address_changes_does_not_judge_the_new_one(server, dnsmasq, origins):  # noqa: F811
    # The old address answers its checks slowly, so one is under way when
    # the slot changes address; the worker that resolves may be another
    # than the one that checks. Its verdict is about the old address: the
    # new one must still get its own first check.
    port = free_port()
    o2, o3 = origins(["127.0.0.2", "127.0.0.3"], port)
    o2.srv.slow = 0.4
    d = dnsmasq({"app.test": ["127.0.0.2"]})
    s = start(server, site(d.port, port, extra="health_check interval=100ms uri=/slow;"))
    passed = 'upstream server "127.0.0.{}:%d" of upstream "u" passed its first health check' % port
    assert poll(lambda: passed.format(2) in s.error_log(), 10)
    for _ in range(3):
        n = s.error_log().count(passed.format(3))
        d.reload({"app.test": ["127.0.0.3"]})
        assert poll(lambda: s.error_log().count(passed.format(3)) > n, 15)
        n = s.error_log().count(passed.format(2))
        d.reload({"app.test": ["127.0.0.2"]})
        assert poll(lambda: s.error_log().count(passed.format(2)) > n, 15)
