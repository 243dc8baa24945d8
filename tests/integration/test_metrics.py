"""metrics: the Prometheus page (text format 0.0.4, checked by promtool),
status_zone counters checked against the access log of known traffic,
upstream peers, limit_req outcomes; counted across two workers and across
a reload.

Servers run two workers on reuseport sockets, so that requests reach both
and a count kept per worker would show as too small."""

import gzip
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess

import pytest

from gh_server import Server, free_port, poll, require_binary
from origins import closed_port, response
from two_workers import two_workers  # noqa: F401  (the fixture)

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of a text-format page; checks
    that every family has HELP and TYPE before its samples."""
    samples = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, line
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"no TYPE before {line}"
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in samples, f"sample twice: {line}"
        samples[key] = float(value)
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def metrics(s):
    """The page; s.scrapes counts the requests for it, which are logged
    and counted like any other."""
    s.scrapes = getattr(s, "scrapes", 0) + 1
    r = s.get("/metrics")
    assert r.status == 200, r.raw
    assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    return r.body.decode()


def settled(s):
    """After start(): the readiness probe (a connection that sent
    nothing) was accepted and closed."""
    def done():
        page = parse(metrics(s))
        return (value(page, "gatehouse_connections_active") == 1 and
                value(page, "gatehouse_connections_accepted_total") ==
                value(page, "gatehouse_http_requests_total") + 1)
    assert poll(done)


def log_lines(s, n):
    """The access log's lines once it has the n requests sent and every
    scrape of the page so far."""
    n += getattr(s, "scrapes", 0)
    return [line.decode().split() for line in s.wait_lines("access.log", n)]


ZONES = """
    log_format counted "$status $request_length $bytes_sent $pid $uri";
    access_log logs/access.log counted;
    server {
        listen 127.0.0.1:PORT reuseport;
        root html;
        status_zone site;
        location / { }
        location /a/ { status_zone apages; add_header X-Pid $pid; }
        location = /metrics { metrics; }
    }
"""
FILES = {"index.html": "hello\n", "a/index.html": "A" * 3000}


def traffic(s, n_root, n_missing):
    """Bursts to /a/ until both workers answered, then n_root requests to
    / and n_missing to /missing; returns how many were sent."""
    sent = s.spread("/a/")
    for _ in range(n_root):
        assert s.get("/").status == 200
    for _ in range(n_missing):
        assert s.get("/missing").status == 404
    return sent + n_root + n_missing


def check_zones(s, lines):
    """The page against the access log's lines (status, request_length,
    bytes_sent, pid, uri) of every request before it."""
    page = parse(metrics(s))
    site = {"zone": "site", "level": "server"}
    apages = {"zone": "apages", "level": "location"}
    assert value(page, "gatehouse_zone_requests_total", **site) == len(lines)
    for cls in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        want = sum(1 for ln in lines if ln[0][0] == cls[0])
        assert value(page, "gatehouse_zone_responses_total", code=cls, **site) == want, cls
    assert value(page, "gatehouse_zone_received_bytes_total", **site) == sum(int(ln[1]) for ln in lines)
    assert value(page, "gatehouse_zone_sent_bytes_total", **site) == sum(int(ln[2]) for ln in lines)
    # The location zone counts /a/ only.
    a_lines = [ln for ln in lines if ln[4].startswith("/a/")]
    assert value(page, "gatehouse_zone_requests_total", **apages) == len(a_lines)
    assert value(page, "gatehouse_zone_sent_bytes_total", **apages) == sum(int(ln[2]) for ln in a_lines)
    # The histogram: cumulative, +Inf is the count, which is the requests.
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in page.items()
                      if k[0] == "gatehouse_zone_request_duration_seconds_bucket"
                      and dict(k[1])["zone"] == "site"), key=lambda b: b[0])
    assert [b[0] for b in buckets][-1] == float("inf")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert buckets[-1][1] == len(lines)
    assert value(page, "gatehouse_zone_request_duration_seconds_count", **site) == len(lines)
    return page


def test_status_zones_count_across_workers(two_workers):
    s = two_workers(ZONES, FILES, settle=settled)
    n = traffic(s, 5, 3)
    lines = log_lines(s, n)
    assert len({ln[3] for ln in lines}) == 2, "both workers should have served"
    page = check_zones(s, lines)
    # Every request had a connection of its own; one more, start()'s
    # probe, sent nothing.
    assert value(page, "gatehouse_http_requests_total") == len(lines) + 1
    assert value(page, "gatehouse_connections_accepted_total") == len(lines) + 2
    assert value(page, "gatehouse_connections_active") == 1
    assert value(page, "gatehouse_connections_writing") == 1


def test_counters_survive_reload(two_workers):
    s = two_workers(ZONES, FILES, settle=settled)
    n = traffic(s, 4, 2)
    check_zones(s, log_lines(s, n))
    old = set(s.children())
    starts = s.error_log().count("start worker process")
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: s.error_log().count("start worker process") >= starts + 2
                and not (set(s.children()) & old), timeout=20), s.error_log()
    m = traffic(s, 2, 1)
    lines = log_lines(s, n + m)
    page = check_zones(s, lines)
    # Nothing lost, nothing counted twice.
    assert value(page, "gatehouse_http_requests_total") == len(lines) + 1
    assert value(page, "gatehouse_connections_accepted_total") == len(lines) + 2


def test_promtool_accepts_the_page(two_workers, origin, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is needed: contrib/install-deps.sh"
    o = origin()
    s = two_workers(f"""
        limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;
        upstream backend {{
            zone backends 64k;
            server {o.addr};
        }}
        server {{
            listen 127.0.0.1:PORT reuseport;
            root html;
            status_zone "we\\"ird\\\\zone";
            location / {{ }}
            location /lim {{ limit_req zone=one; status_zone lim; }}
            location /p/ {{ proxy_pass http://backend; }}
            location = /metrics {{ metrics; }}
        }}
    """, FILES)
    assert s.get("/").status == 200
    assert s.get("/p/x").status == 200
    assert s.get("/lim").status == 404
    assert s.get("/lim").status == 503
    text = metrics(s)
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr + text
    assert p.stdout + p.stderr == ""
    page = parse(text)
    assert value(page, "gatehouse_zone_requests_total", zone='we\\"ird\\\\zone', level="server") == 4
    assert value(page, "gatehouse_limit_req_total", result="PASSED") == 1
    assert value(page, "gatehouse_limit_req_total", result="REJECTED") == 1
    assert value(page, "gatehouse_upstream_peer_requests_total", upstream="backend", peer=o.addr) == 1


def test_upstream_peers(two_workers, origin):
    def failing(conn, req):
        conn.sendall(response(503, b"busy\n", close=True))
        return False

    good, busy = origin(), origin(failing)
    dead = closed_port()
    s = two_workers(f"""
        upstream back {{
            zone backends 64k;
            server {good.addr} weight=3;
            server {busy.addr};
            server 127.0.0.1:{dead} max_fails=1 fail_timeout=60s;
            server 127.0.0.1:1 down;
        }}
        server {{
            listen 127.0.0.1:PORT reuseport;
            location / {{ proxy_pass http://back; proxy_next_upstream error; }}
            location = /metrics {{ metrics; }}
        }}
    """)
    statuses = [s.get(f"/r{i}").status for i in range(10)]
    page = parse(metrics(s))

    def v(name, peer, **kw):
        return value(page, name, upstream="back", peer=peer, **kw)

    assert statuses.count(503) == len(busy.requests)
    assert statuses.count(200) == len(good.requests)
    assert v("gatehouse_upstream_peer_requests_total", good.addr) == len(good.requests)
    assert v("gatehouse_upstream_peer_responses_total", good.addr, code="2xx") == len(good.requests)
    assert v("gatehouse_upstream_peer_responses_total", busy.addr, code="5xx") == len(busy.requests)
    assert v("gatehouse_upstream_peer_weight", good.addr) == 3
    # The closed port: one try failed (502 for it), then it rested.
    d = f"127.0.0.1:{dead}"
    assert v("gatehouse_upstream_peer_fails_total", d) == 1
    assert v("gatehouse_upstream_peer_unavailable_total", d) == 1
    assert v("gatehouse_upstream_peer_responses_total", d, code="5xx") == 1
    assert v("gatehouse_upstream_peer_state", d, state="unavailable") == 1
    assert v("gatehouse_upstream_peer_state", d, state="up") == 0
    assert v("gatehouse_upstream_peer_state", good.addr, state="up") == 1
    assert v("gatehouse_upstream_peer_state", "127.0.0.1:1", state="down") == 1
    assert v("gatehouse_upstream_peer_response_time_seconds_count", good.addr) == len(good.requests)
    assert v("gatehouse_upstream_peer_active_connections", good.addr) == 0


def test_upstream_without_zone_is_not_shown(two_workers, origin):
    o = origin()
    s = two_workers(f"""
        upstream plain {{ server {o.addr}; }}
        server {{
            listen 127.0.0.1:PORT reuseport;
            location / {{ proxy_pass http://plain; }}
            location = /metrics {{ metrics; }}
        }}
    """)
    assert s.get("/").status == 200
    assert "gatehouse_upstream_peer" not in metrics(s)


def test_head_and_post(two_workers):
    s = two_workers(ZONES, FILES, settle=settled)
    r = s.get("/metrics", method="HEAD")
    assert r.status == 200
    assert r.body == b""
    assert s.get("/metrics", method="POST").status == 405


@pytest.mark.parametrize("conf, message", [
    ("metrics;", '"metrics" directive is not allowed here'),
    ("status_zone x;", '"status_zone" directive is not allowed here'),
    ("server { listen 127.0.0.1:PORT; status_zone a; status_zone b; }", '"status_zone" directive is duplicate'),
    ("server { listen 127.0.0.1:PORT; status_zone " + "z" * 64 + "; }", "is too long"),
    ("status_zones_max 0;", "value must be between 1 and 16384"),
    ("status_zones_max 16385;", "value must be between 1 and 16384"),
    ("status_zones_max 2; status_zones_max 2;", '"status_zones_max" directive is duplicate'),
    ("status_peers_max 65537;", "value must be between 1 and 65536"),
    ("status_peers_max x;", 'invalid number "x" in "status_peers_max" directive'),
    ("server { listen 127.0.0.1:PORT; status_zones_max 2; }", '"status_zones_max" directive is not allowed here'),
])
def test_config_errors(tmp_path, conf, message):
    require_binary()
    s = Server(tmp_path, conf)
    code, err = s.test_config()
    assert code == 1
    assert message in err


def test_tls_handshakes(two_workers, tmp_path):
    openssl = shutil.which("openssl")
    assert openssl
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"),
                    "-subj", "/CN=localhost", "-days", "2"], check=True, capture_output=True, timeout=30)
    for f in ("k.pem", "c.pem"):
        os.chmod(tmp_path / f, 0o644)
    tls_port = free_port()
    s = two_workers(f"""
        ssl_session_cache shared:SSL:1m;
        server {{
            listen 127.0.0.1:PORT;
            listen 127.0.0.1:{tls_port} ssl;
            ssl_certificate {tmp_path}/c.pem;
            ssl_certificate_key {tmp_path}/k.pem;
            location / {{ return 200 "ok\\n"; }}
            location = /metrics {{ metrics; }}
        }}
    """)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # a session id to resume, no ticket timing

    def get(session=None):
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as c:
                c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    data += b
                assert data.startswith(b"HTTP/1.1 200")
                return c.session, c.session_reused

    session, reused = get()
    assert not reused
    _, reused_again = get(session)
    # A client hello that is no hello: a failed handshake.
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as bad:
        bad.sendall(b"\x16\x03\x01\x00\x05hello")
        assert bad.recv(65536) is not None
    page = poll(lambda: (lambda p: p if value(p, "gatehouse_tls_handshakes_failed_total") == 1 else None)(
        parse(metrics(s))))
    assert page, "the failed handshake was not counted"
    assert value(page, "gatehouse_tls_handshakes_total") == 2
    assert reused_again
    assert value(page, "gatehouse_tls_session_reuses_total") == 1


def test_cache_outcomes(two_workers, origin, tmp_path):
    def cacheable(conn, req):
        conn.sendall(response(200, b"cached body\n", [("Cache-Control", "max-age=600")]))
        return True

    o = origin(cacheable)
    s = two_workers(f"""
        proxy_cache_path {tmp_path}/cache levels=1:2 keys_zone=one:1m;
        server {{
            listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; proxy_cache one; add_header X-Cache $upstream_cache_status; }}
            location = /metrics {{ metrics; }}
        }}
    """)
    got = [s.get("/c").header("X-Cache") for _ in range(3)]
    assert got == ["MISS", "HIT", "HIT"]
    page = parse(metrics(s))
    assert value(page, "gatehouse_cache_responses_total", status="MISS") == 1
    assert value(page, "gatehouse_cache_responses_total", status="HIT") == 2
    assert value(page, "gatehouse_cache_responses_total", status="BYPASS") == 0
    assert len(o.requests) == 1


def test_compression_bytes(two_workers):
    s = two_workers("""
        server {
            listen 127.0.0.1:PORT;
            root html;
            gzip on;
            gzip_types text/plain;
            gzip_min_length 1;
            gzip_http_version 1.0;
            location = /metrics { metrics; gzip off; }
        }
    """, {"t.txt": "compress me " * 250})
    raw = s.raw(b"GET /t.txt HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert gzip.decompress(body) == b"compress me " * 250
    page = parse(metrics(s))
    assert value(page, "gatehouse_compression_in_bytes_total", coding="gzip") == 3000
    assert value(page, "gatehouse_compression_out_bytes_total", coding="gzip") == len(body)
    assert value(page, "gatehouse_compression_in_bytes_total", coding="br") == 0


def test_health_checks(two_workers, origin):
    def handler(state):
        def handle(conn, req):
            code = state["health"] if req.target == "/health" else 200
            conn.sendall(response(code, b"ok\n"))
            return True
        return handle

    good, bad = origin(handler({"health": 200})), origin(handler({"health": 500}))
    s = two_workers(f"""
        upstream u {{
            zone lb 64k;
            server {good.addr};
            server {bad.addr};
            health_check interval=300ms uri=/health;
        }}
        server {{
            listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://u; }}
            location = /metrics {{ metrics; }}
        }}
    """)

    def checked():
        page = parse(metrics(s))
        v = lambda peer, result: value(page, "gatehouse_upstream_peer_health_checks_total",  # noqa: E731
                                       upstream="u", peer=peer, result=result)
        return page if v(good.addr, "passed") >= 2 and v(bad.addr, "failed") >= 2 else None

    page = poll(checked, timeout=10)
    assert page, "no health checks counted"

    def v(name, peer, **kw):
        return value(page, name, upstream="u", peer=peer, **kw)

    assert v("gatehouse_upstream_peer_health_checks_total", good.addr, result="failed") == 0
    assert v("gatehouse_upstream_peer_health_checks_total", bad.addr, result="passed") == 0
    assert v("gatehouse_upstream_peer_state", good.addr, state="up") == 1
    assert v("gatehouse_upstream_peer_state", bad.addr, state="unhealthy") == 1
    assert v("gatehouse_upstream_peer_state", bad.addr, state="up") == 0


def line_of(s, text):
    """The config file's line holding `text`, as "path:line"."""
    lines = s.conf.read_text().splitlines()
    return f"{s.conf}:{next(i + 1 for i, ln in enumerate(lines) if text in ln)}"


def test_status_zones_max_is_the_limit(tmp_path):
    """status_zones_max N: N zones work, the zone after them is refused
    at its own line, as the 129th was with the default."""
    require_binary()
    zones = "\n".join(f"location /z{i}/ {{ status_zone z{i}; }}" for i in range(3))
    conf = f"""
        status_zones_max 3;
        server {{ listen 127.0.0.1:PORT; {zones}
        location /z3/ {{ status_zone z3; }} }}
    """
    s = Server(tmp_path / "four", conf)
    code, err = s.test_config()
    assert code == 1
    assert ('[emerg] too many status zones (at most 3 since the last restart, see "status_zones_max") in '
            + line_of(s, "status_zone z3;")) in err
    # Without the fourth, the three are counted.
    s3 = Server(tmp_path / "three", conf.replace("location /z3/ { status_zone z3; }", "location = /metrics { metrics; }"))
    code, err = s3.test_config()
    assert code == 0, err
    s3.start()
    try:
        for i in range(3):
            assert s3.get(f"/z{i}/").status == 404
        page = parse(metrics(s3))
        for i in range(3):
            assert value(page, "gatehouse_zone_requests_total", zone=f"z{i}", level="location") == 1
    finally:
        s3.stop()
    # The default is 128: the 129th is refused.
    many = "\n".join(f"location /z{i}/ {{ status_zone z{i}; }}" for i in range(129))
    s129 = Server(tmp_path / "many", f"server {{ listen 127.0.0.1:PORT; {many} }}")
    code, err = s129.test_config()
    assert code == 1
    assert "too many status zones (at most 128 since the last restart" in err
    assert line_of(s129, "status_zone z128;") in err


def test_status_peers_max_is_the_limit(two_workers, origin):
    """status_peers_max N: the peers after the N-th are proxied to but not
    counted, and the log says so once, as with the default 1024."""
    a, b, c = origin(), origin(), origin()
    s = two_workers(f"""
        status_peers_max 2;
        upstream back {{
            zone backends 64k;
            server {a.addr};
            server {b.addr};
            server {c.addr};
        }}
        server {{
            listen 127.0.0.1:PORT reuseport;
            location / {{ proxy_pass http://back; }}
            location = /metrics {{ metrics; }}
        }}
    """)
    for i in range(6):
        assert s.get(f"/r{i}").status == 200
    assert (len(a.requests), len(b.requests), len(c.requests)) == (2, 2, 2)
    page = parse(metrics(s))
    got = [value(page, "gatehouse_upstream_peer_responses_total", upstream="back", peer=o.addr, code="2xx")
           for o in (a, b, c)]
    assert got == [2, 2, 0]
    # Said while the configuration loads, before the error log is open:
    # on stderr.
    said = s.err_path.read_text() + s.error_log()
    assert said.count('[warn] more than 2 upstream peers since the last restart ("status_peers_max"): '
                      "the metrics count no more of them") == 1, said
