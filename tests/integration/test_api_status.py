"""The API's status endpoints (NGINX Plus API version 9 shapes):
/nginx, /connections, /ssl, /http/requests, /http/server_zones,
/http/location_zones and the counters of each upstream peer, checked
against known traffic across two workers, against the access log, and
against what the origin saw. Also: the listings, NGINX Plus's error
object for unknown paths, "fields=", and "generation" across a reload.

The API is served on a second port of its own server, so that asking it
does not count in the zones under test."""

import json
import re
import signal
import socket
import threading

import pytest

from gh_server import Response, free_port, poll
from origins import Origin, response
from two_workers import two_workers  # noqa: F401  (the fixture)

HREF = "https://nginx.org/en/docs/http/ngx_http_api_module.html"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Api:
    """GETs to the API's port: (status, JSON)."""

    def __init__(self, s, port):
        self.s = s
        self.port = port
        self.calls = 0

    def get(self, path, method="GET"):
        self.calls += 1
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
            c.sendall(self.s.request_bytes(path, method=method))
            chunks = []
            while True:
                b = c.recv(65536)
                if not b:
                    break
                chunks.append(b)
        r = Response(b"".join(chunks))
        assert r.header("Content-Type") == "application/json", r.raw
        return r.status, json.loads(r.body)


def err(status, code, text):
    return {"error": {"status": status, "text": text, "code": code}, "href": HREF}


def without_id(body):
    assert len(body.pop("request_id")) == 32
    return body


@pytest.fixture
def origin():
    """An origin that records the bytes of each response it sends."""
    sent = []
    lock = threading.Lock()
    release = threading.Event()

    def handler(conn, req):
        if req.target.endswith("/slow"):
            release.wait(10)
        body = f"{req.method} {req.target}\n".encode()
        data = response(200, body, [("Content-Type", "text/plain")])
        with lock:
            sent.append(len(data))
        conn.sendall(data)
        return True

    o = Origin(handler)
    o.sent = sent
    o.release = release
    yield o
    release.set()
    o.stop()


def site(origin_addr, api_port):
    return f"""
    log_format counted "$status $request_length $bytes_sent $pid $uri";
    access_log logs/access.log counted;
    upstream back {{
        zone back 64k;
        server {origin_addr};
    }}
    server {{
        listen 127.0.0.1:PORT reuseport;
        root html;
        status_zone site;
        location / {{ }}
        location /a/ {{ status_zone apages; add_header X-Pid $pid; }}
        location /up/ {{ status_zone proxied; proxy_pass http://back; }}
    }}
    server {{
        listen 127.0.0.1:{api_port} reuseport;
        location /api/ {{ api; }}
    }}
    """


FILES = {"index.html": "hello\n", "a/index.html": "A" * 3000}


def start(two_workers, origin):  # noqa: F811
    api_port = free_port()
    s = two_workers(site(origin.addr, api_port), FILES)
    return s, Api(s, api_port)


def settled(api, n):
    """/connections and /http/requests once every connection but the
    API's own has closed (a worker may still be closing the last one it
    served), with the API calls made up to each: (conns, calls, reqs,
    calls)."""
    def done():
        _, c = api.get("/api/9/connections")
        c_calls = api.calls
        _, r = api.get("/api/9/http/requests")
        ok = c["active"] == 1 and c["idle"] == 0 and r["total"] == n + api.calls
        return (c, c_calls, r, api.calls) if ok else None
    got = poll(done)
    assert got, api.get("/api/9/connections")
    return got


def test_known_traffic_gives_exact_counts(two_workers, origin):  # noqa: F811
    s, api = start(two_workers, origin)
    sent = s.spread("/a/")  # both workers answered
    for _ in range(5):
        assert s.get("/").status == 200
    for _ in range(3):
        assert s.get("/missing").status == 404
    for i in range(4):
        r = s.get(f"/up/{i}")
        assert (r.status, r.body) == (200, f"GET /up/{i}\n".encode())
    n = sent + 5 + 3 + 4
    lines = [ln.decode().split() for ln in s.wait_lines("access.log", n)]
    assert len({ln[3] for ln in lines}) == 2  # two workers served them

    # One connection per request, the readiness probe (accepted, no
    # request), and each API call (the last one is counted while it runs).
    conns, c_calls, reqs, r_calls = settled(api, n)
    assert conns == {"accepted": n + 1 + c_calls, "dropped": 0, "active": 1, "idle": 0}
    assert reqs == {"total": n + r_calls, "current": 1}

    def by_class(ls):
        d = {c: sum(1 for ln in ls if ln[0][0] == c[0]) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}
        d["total"] = len(ls)
        return d

    def zone(ls, server=False):
        z = {"requests": len(ls), "responses": by_class(ls), "discarded": 0,
             "received": sum(int(ln[1]) for ln in ls), "sent": sum(int(ln[2]) for ln in ls)}
        return {"processing": 0, **z} if server else z

    a_lines = [ln for ln in lines if ln[4].startswith("/a/")]
    up_lines = [ln for ln in lines if ln[4].startswith("/up/")]
    assert api.get("/api/9/http/server_zones") == (200, {"site": zone(lines, server=True)})
    assert api.get("/api/9/http/server_zones/site") == (200, zone(lines, server=True))
    assert api.get("/api/9/http/location_zones") == (200, {"apages": zone(a_lines), "proxied": zone(up_lines)})
    assert api.get("/api/9/http/location_zones/proxied") == (200, zone(up_lines))
    assert api.get("/api/9/ssl") == (200, {"handshakes": 0, "handshakes_failed": 0, "session_reuses": 0})

    status, group = api.get("/api/9/http/upstreams/back")
    assert status == 200
    peer = group["peers"][0]
    header_time, response_time = peer.pop("header_time"), peer.pop("response_time")
    assert isinstance(header_time, int) and isinstance(response_time, int) and response_time >= header_time
    assert peer == {
        "id": 0, "server": origin.addr, "name": origin.addr, "backup": False, "weight": 1, "state": "up",
        "active": 0, "requests": 4,
        "responses": {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 0, "5xx": 0, "total": 4},
        "sent": sum(len(r.raw) for r in origin.requests), "received": sum(origin.sent),
        "fails": 0, "unavail": 0, "health_checks": {"checks": 0, "fails": 0, "unhealthy": 0},
    }
    assert (group["keepalive"], group["zombies"], group["zone"]) == (0, 0, "back")


def test_nginx_and_generation_across_reload(two_workers, origin):  # noqa: F811
    s, api = start(two_workers, origin)
    status, n = api.get("/api/9/nginx")
    assert status == 200
    assert sorted(n) == ["address", "build", "generation", "load_timestamp", "pid", "ppid", "timestamp",
                         "version"]
    assert (n["version"], n["address"], n["generation"], n["ppid"]) == ("0.1.0", "127.0.0.1", 0, s.master_pid())
    assert n["pid"] in s.children()
    assert ISO.match(n["load_timestamp"]) and ISO.match(n["timestamp"])
    assert n["timestamp"] >= n["load_timestamp"]
    before = set(s.children())
    s.proc.send_signal(signal.SIGHUP)

    def reloaded():
        status, m = api.get("/api/9/nginx")
        return m if m["generation"] == 1 and m["pid"] not in before else None
    m = poll(reloaded, timeout=20)
    assert m, "no worker of the new generation answered"
    assert m["load_timestamp"] >= n["load_timestamp"]
    assert m["ppid"] == s.master_pid()


def test_listings_fields_and_errors(two_workers, origin):  # noqa: F811
    s, api = start(two_workers, origin)
    assert api.get("/api/") == (200, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert api.get("/api/9/") == (200, ["nginx", "connections", "http", "ssl"])
    assert api.get("/api/9/http") == (200, ["requests", "server_zones", "location_zones", "upstreams"])
    assert s.get("/").status == 200
    # fields= keeps those of the object, or of each entry of a collection.
    status, n = api.get("/api/9/nginx?fields=version,ppid")
    assert (status, n) == (200, {"version": "0.1.0", "ppid": s.master_pid()})
    assert api.get("/api/9/http/server_zones?fields=requests") == (200, {"site": {"requests": 1}})
    assert api.get("/api/9/http/upstreams?fields=zone,zombies") == (200, {"back": {"zombies": 0, "zone": "back"}})
    assert api.get("/api/9/connections?fields=dropped") == (200, {"dropped": 0})
    cases = [
        ("GET", "/api/9/nope", err(404, "PathNotFound", "path not found")),
        ("GET", "/api/9/nginx/x", err(404, "PathNotFound", "path not found")),
        ("GET", "/api/9/http/caches", err(404, "PathNotFound", "path not found")),
        ("GET", "/api/9/http/server_zones/nope", err(404, "ServerZoneNotFound", "server zone not found")),
        ("GET", "/api/9/http/location_zones/site", err(404, "LocationZoneNotFound", "location zone not found")),
        ("GET", "/api/0/nginx", err(404, "UnknownVersion", "unknown version")),
        ("GET", "/api/10/", err(404, "UnknownVersion", "unknown version")),
        ("DELETE", "/api/9/connections", err(405, "MethodDisabled", "method disabled")),
        ("PUT", "/api/9/nginx", err(405, "MethodNotSupported", "method not supported")),
    ]
    for method, path, want in cases:
        status, body = api.get(path, method)
        assert (status, without_id(body)) == (want["error"]["status"], want), path


def test_processing_counts_requests_in_flight(two_workers, origin):  # noqa: F811
    s, api = start(two_workers, origin)
    got = []
    t = threading.Thread(target=lambda: got.append(s.get("/up/slow")))
    t.start()
    try:
        assert poll(lambda: api.get("/api/9/http/server_zones/site")[1]["processing"] == 1)
        # Not counted as done before it is.
        assert api.get("/api/9/http/server_zones/site?fields=requests") == (200, {"requests": 0})
    finally:
        origin.release.set()
        t.join(10)
    assert got[0].status == 200
    assert poll(lambda: api.get("/api/9/http/server_zones/site?fields=processing,requests")[1] ==
                {"processing": 0, "requests": 1})
