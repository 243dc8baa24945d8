"""resolver, resolver_timeout and proxy_pass with variables resolved at
request time.

A real DNS server answers on loopback: dnsmasq, started by each test with
a hosts file the test writes (and rewrites, then SIGHUP), stopped by its
pid. The truncated-answer test runs a tiny DNS server of its own (UDP
answers with TC set, TCP answers in full). Origins are Python threads.
"""

import os
import pathlib
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from gh_server import free_port, poll, server  # noqa: F401  (server: the fixture)
from origins import Origin, ok_handler, response

DNSMASQ = "/usr/sbin/dnsmasq"


# ---- DNS on the wire, for readiness checks and the test's own server -------------


def dns_query(name, qtype, qid=0x4242):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", qtype, 1)


def ask(port, name, qtype=1, timeout=0.3):
    """The rcode and answer count of a UDP query, or None without a reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dns_query(name, qtype), ("127.0.0.1", port))
        try:
            r = s.recv(4096)
        except OSError:
            return None
    flags, _, an = struct.unpack(">HHH", r[2:8])
    return flags & 0xF, an


def answer_for(query, addrs, ttl=30, tc=False):
    """The answer to `query` (bytes as received): its question echoed, one
    A record per address."""
    qid = query[:2]
    flags = 0x8180 | (0x0200 if tc else 0)
    rrs = b""
    for a in addrs:
        rrs += struct.pack(">HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(a)
    head = qid + struct.pack(">HHHHH", flags, 1, 0 if tc else len(addrs), 0, 0)
    return head + query[12:] + (b"" if tc else rrs)


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port serving `hosts` (name -> [addresses]);
    names under .test that are not in the file are NXDOMAIN."""

    def __init__(self, tmp_path, hosts, ttl=1):
        self.dir = pathlib.Path(tmp_path) / "dns"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hosts_path = self.dir / "hosts"
        self.pid_path = self.dir / "dnsmasq.pid"
        self.write(hosts)
        self.port = free_port()
        self.log = open(self.dir / "dnsmasq.log", "wb")
        self.proc = subprocess.Popen(
            [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
             f"--addn-hosts={self.hosts_path}", "--listen-address=127.0.0.1",
             f"--port={self.port}", "--bind-interfaces", f"--pid-file={self.pid_path}",
             "--log-facility=-", "--log-queries", "--local=/test/", f"--local-ttl={ttl}",
             "--user=root", "--cache-size=0"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        up = poll(lambda: self.proc.poll() is not None or ask(self.port, "ready.test") is not None, 10)
        if self.proc.poll() is not None or not up:
            self.stop()
            pytest.fail("dnsmasq did not start: " + (self.dir / "dnsmasq.log").read_text(errors="replace"))

    def write(self, hosts):
        lines = [f"{a} {name}" for name, addrs in hosts.items() for a in addrs]
        tmp = self.hosts_path.with_suffix(".new")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hosts_path)

    def reload(self, hosts):
        """Rewrites the hosts file and makes dnsmasq read it again."""
        self.write(hosts)
        self.proc.send_signal(signal.SIGHUP)

    def queries(self):
        return (self.dir / "dnsmasq.log").read_text(errors="replace").count("query[")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def dnsmasq(tmp_path):
    if not os.access(DNSMASQ, os.X_OK):
        pytest.skip("dnsmasq is not installed")
    made = []

    def make(hosts, ttl=1):
        d = Dnsmasq(tmp_path / f"d{len(made)}", hosts, ttl)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


class Origin6:
    """An HTTP origin on [::1]:port answering 200 `body`."""

    def __init__(self, port, body):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::1", port))
        self.sock.listen(64)
        self.body = body
        self.stopping = False
        self.requests = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            c.sendall(response(200, self.body, close=True))
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


def body_handler(body):
    def handler(conn, req):
        conn.sendall(response(200, body, close=True))
        return False
    return handler


def start(server, http, workers=1):
    s = server(http, start=False)
    if workers != 1:
        s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", f"worker_processes {workers};"))
    code, err = s.test_config()
    if 'unknown directive "proxy_pass"' in err:
        pytest.skip("proxy module not built")
    assert code == 0, err
    return s.start()


def get(s, path, name):
    return s.get(path, headers=[("X-Origin", name)])


# ---- tests ------------------------------------------------------------------------


def test_name_resolved_at_request_time(server, dnsmasq, origin):
    o = origin()
    d = dnsmasq({"origin.test": ["127.0.0.1"]})
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{
                resolver 127.0.0.1:{d.port};
                proxy_pass http://$http_x_origin:{o.port};
                add_header X-Up $upstream_addr always;
            }}
        }}""")
    r = get(s, "/a?b=1", "origin.test")
    assert r.status == 200
    assert r.body == b"GET /a?b=1\n"
    assert r.header("X-Up") == f"127.0.0.1:{o.port}"
    assert o.wait_requests(1)[0].header("Host") == f"origin.test:{o.port}"


def test_answers_are_cached_per_worker_for_the_ttl(server, dnsmasq, origin):
    o = origin()
    d = dnsmasq({"cached.test": ["127.0.0.1"]}, ttl=60)
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{
                resolver 127.0.0.1:{d.port} ipv6=off;
                proxy_pass http://$http_x_origin:{o.port};
            }}
        }}""")
    before = d.queries()
    for _ in range(5):
        assert get(s, "/", "cached.test").status == 200
    # One worker, one lookup (A only: ipv6=off); the other four from the cache.
    assert poll(lambda: d.queries() - before >= 1, 5)
    assert d.queries() - before == 1


def test_address_change_moves_traffic_with_no_failed_request(server, dnsmasq, origin):
    # The name moves from 127.0.0.1 to ::1 (only loopback addresses are
    # allowed here, so the two origins are told apart by family).
    o4 = origin(body_handler(b"four"))
    o6 = Origin6(o4.port, b"six")
    try:
        d = dnsmasq({"moving.test": ["127.0.0.1"]}, ttl=1)
        s = start(server, f"""
            server {{
                listen 127.0.0.1:PORT reuseport;
                location / {{
                    resolver 127.0.0.1:{d.port} valid=1s;
                    resolver_timeout 5s;
                    proxy_pass http://$http_x_origin:{o4.port};
                }}
            }}""", workers=2)
        results = []
        stop = threading.Event()

        def load():
            # Bounded load: sequential requests until told to stop, at most 20000.
            while not stop.is_set() and len(results) < 20000:
                try:
                    r = get(s, "/", "moving.test")
                    results.append((r.status, r.body))
                except OSError as e:
                    results.append((0, repr(e).encode()))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        assert poll(lambda: any(b == b"four" for _, b in results), 10)
        d.reload({"moving.test": ["::1"]})
        seen_six = poll(lambda: any(b == b"six" for _, b in list(results)), 15)
        # Past the switch for one more TTL, so that every worker moved.
        time.sleep(1.5)
        n = len(results)
        assert poll(lambda: len(results) >= n + 20, 10), (n, len(results), results[-3:])
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert seen_six
        switched = next(i for i, r in enumerate(results) if r[1] == b"six")
        print(f"\nswitch: {len(results)} requests, first to ::1 at #{switched}, "
              f"{sum(1 for r in results if r[1] == b'four')} to 127.0.0.1, "
              f"{sum(1 for r in results if r[1] == b'six')} to ::1")
        failed = [r for r in results if r[0] != 200]
        assert failed == []
        assert results[-1][1] == b"six"
        assert o6.requests > 0
    finally:
        o6.stop()


def test_nxdomain_is_502_with_nginx_log_line(server, dnsmasq):
    d = dnsmasq({"origin.test": ["127.0.0.1"]})
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{
                resolver 127.0.0.1:{d.port};
                proxy_pass http://$http_x_origin:8080;
            }}
        }}""")
    r = get(s, "/", "nx.test")
    assert r.status == 502
    assert poll(lambda: "nx.test could not be resolved (3: Host not found)" in s.error_log())
    assert "[error]" in [line for line in s.error_log().splitlines() if "could not be resolved" in line][0]


def test_dead_resolver_times_out_with_502(server):
    # A UDP port nothing listens on: the query is refused by ICMP or goes
    # unanswered; resolver_timeout ends the request as nginx does (502).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        port = hole.getsockname()[1]
        s = start(server, f"""
            server {{
                listen 127.0.0.1:PORT;
                location / {{
                    resolver 127.0.0.1:{port};
                    resolver_timeout 1s;
                    proxy_pass http://$http_x_origin:8080;
                }}
            }}""")
        r = get(s, "/", "silent.test")
        assert r.status == 502
        assert poll(lambda: "silent.test could not be resolved (110: Operation timed out)" in s.error_log())


def test_client_leaving_while_its_name_resolves_is_499_and_cancels(server):
    # The name server never answers; the client gives up first. Its query
    # is cancelled with the request (logged 499 at once, not after
    # resolver_timeout), and the worker serves the next request as usual.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        port = hole.getsockname()[1]
        s = start(server, f"""
            log_format st '$status $request_uri';
            server {{
                listen 127.0.0.1:PORT;
                access_log logs/st.log st;
                resolver 127.0.0.1:{port};
                resolver_timeout 30s;
                location / {{ proxy_pass http://$http_x_origin:8080; }}
                location = /ok {{ return 200 "ok"; }}
            }}""")
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(s.request_bytes("/gone", headers=[("X-Origin", "slow.test")]))
            hole.settimeout(5)
            hole.recvfrom(512)  # the query went out: the request waits on it
        assert s.wait_lines("st.log", 1, timeout=10) == [b"499 /gone\n"]
        r = s.get("/ok")
        assert r.status == 200
        assert r.body == b"ok"
        assert "[alert]" not in s.error_log()


def test_ipv6_answer_connects_to_v6_origin(server, dnsmasq):
    port = free_port()
    o6 = Origin6(port, b"over six")
    try:
        d = dnsmasq({"six.test": ["::1"]})
        s = start(server, f"""
            server {{
                listen 127.0.0.1:PORT;
                location / {{
                    resolver 127.0.0.1:{d.port} ipv4=off;
                    proxy_pass http://$http_x_origin:{port};
                    add_header X-Up $upstream_addr always;
                }}
            }}""")
        r = get(s, "/", "six.test")
        assert r.status == 200
        assert r.body == b"over six"
        assert r.header("X-Up") == f"[::1]:{port}"
    finally:
        o6.stop()


def test_next_address_tried_when_one_refuses(server, dnsmasq, origin):
    # Two addresses: ::1 (nothing listens there on this port) and
    # 127.0.0.1; whichever comes first, the request ends at the live one.
    o = origin(body_handler(b"alive"))
    d = dnsmasq({"two.test": ["127.0.0.1", "::1"]})
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{
                resolver 127.0.0.1:{d.port};
                proxy_pass http://$http_x_origin:{o.port};
            }}
        }}""")
    for _ in range(4):
        r = get(s, "/", "two.test")
        assert r.status == 200
        assert r.body == b"alive"


class TruncatingDns:
    """UDP: answers every query with TC set and no records; TCP: answers
    in full with 127.0.0.1."""

    def __init__(self):
        # The same port number for UDP and TCP: a free UDP port may be
        # taken for TCP by another test's connection, so try again then.
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
        else:
            raise AssertionError("no port free for both UDP and TCP")
        self.tcp.listen(8)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.tcp_queries = 0
        self.stopping = False
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._udp, self._tcp)]
        for t in self.threads:
            t.start()

    def _udp(self):
        while not self.stopping:
            try:
                q, peer = self.udp.recvfrom(512)
            except OSError:
                continue
            self.udp.sendto(answer_for(q, [], tc=True), peer)

    def _tcp(self):
        while not self.stopping:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                continue
            with c:
                c.settimeout(2)
                try:
                    data = b""
                    while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
                        chunk = c.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    q = data[2:]
                    qtype = struct.unpack(">H", q[-4:-2])[0]
                    a = answer_for(q, ["127.0.0.1"] if qtype == 1 else [])
                    self.tcp_queries += 1
                    c.sendall(struct.pack(">H", len(a)) + a)
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(timeout=5)
        self.udp.close()
        self.tcp.close()


def test_truncated_answer_is_asked_again_over_tcp(server, origin):
    o = origin(body_handler(b"via tcp"))
    dns = TruncatingDns()
    try:
        s = start(server, f"""
            server {{
                listen 127.0.0.1:PORT;
                location / {{
                    resolver 127.0.0.1:{dns.port};
                    resolver_timeout 5s;
                    proxy_pass http://$http_x_origin:{o.port};
                }}
            }}""")
        r = get(s, "/", "big.test")
        assert r.status == 200
        assert r.body == b"via tcp"
        assert dns.tcp_queries == 2  # A and AAAA
    finally:
        dns.stop()


def test_no_resolver_still_refuses_names(server):
    s = start(server, """
        server {
            listen 127.0.0.1:PORT;
            location / { proxy_pass http://$http_x_origin:8080; }
        }""")
    r = get(s, "/", "origin.test")
    assert r.status == 502
    assert poll(lambda: 'no resolver defined to resolve "origin.test:8080"' in s.error_log())


@pytest.mark.parametrize("line, message", [
    ("resolver 127.0.0.1 ipv4=off ipv6=off;", '"ipv4" and "ipv6" cannot both be "off"'),
    ("resolver 127.0.0.1 valid=soon;", 'invalid parameter "valid=soon"'),
    ("resolver 127.0.0.1 ipv6=maybe;", 'invalid parameter "ipv6=maybe"'),
    ("resolver no-such-host.invalid;", 'host not found in resolver "no-such-host.invalid"'),
    ("resolver 127.0.0.1; resolver 127.0.0.2;", '"resolver" directive is duplicate'),
    ("resolver_timeout never;", 'invalid time "never" in "resolver_timeout" directive'),
])
def test_directive_errors(server, line, message):
    s = server(f"{line}\n server {{ listen 127.0.0.1:PORT; }}", start=False)
    code, err = s.test_config()
    assert code != 0
    assert f"[emerg] {message}" in err
    assert "gatehouse.conf:" in err


def test_directives_accepted_everywhere(server):
    s = server("""
        resolver 127.0.0.1 [::1]:5353 valid=30s ipv4=on ipv6=off status_zone=dns;
        resolver_timeout 5s;
        server {
            listen 127.0.0.1:PORT;
            resolver 127.0.0.1:5353;
            location / { resolver 127.0.0.1 valid=1s; resolver_timeout 1s; return 204; }
        }""", start=False)
    code, err = s.test_config()
    assert code == 0, err
