"""The upstream API ("api [write=on]"): the NGINX Plus REST API's
/api/9/http/upstreams part, as a client and the origins see it.

Origins are Python threads on 127.0.0.2 ... 127.0.0.5 (loopback answers
on all of 127/8), on one port, each answering with its own address, so
that the servers are told apart by what they answer. /slow waits until
the test releases it: a request in flight on a server while the server is
drained or removed. Two workers with reuseport: a change is made by one
worker, and every worker must follow it at once.

Covers: the GET shapes; POST, PATCH and DELETE seen by both workers at
the next request; add, drain and remove under load from keepalive
clients with no failed request (a drained server gets no new request and
finishes its own); the state file across a restart and a reload;
write=off (405); bad JSON, unknown fields and bad values (400 and NGINX
Plus's error object); a change that fails leaves the group as it was;
a reload keeps the changes of an unchanged group; allow/deny guard it.
"""

import http.client
import http.server
import json
import os
import signal
import socket
import socketserver
import threading

import pytest

from gh_server import Response, free_port, poll, server  # noqa: F401  (server: the fixture)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (the library's name)
        if self.path == "/slow":
            with self.server.lock:
                self.server.slow += 1
            self.server.release.wait(30)
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


class Origin:
    """An HTTP origin on ip:port answering 200 with its ip as the body."""

    def __init__(self, ip, port):
        self.ip = ip
        self.srv = _Server((ip, port), _Handler)
        self.srv.ip = ip
        self.srv.count = 0
        self.srv.slow = 0
        self.srv.lock = threading.Lock()
        self.srv.release = threading.Event()
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def count(self):
        with self.srv.lock:
            return self.srv.count

    @property
    def slow(self):
        with self.srv.lock:
            return self.srv.slow

    def stop(self):
        self.srv.release.set()
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def origins():
    made = []

    def make(ips, port):
        got = [Origin(ip, port) for ip in ips]
        made.extend(got)
        return got

    yield make
    for o in made:
        o.stop()


def start(server, http, workers=2):
    s = server(http, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", f"worker_processes {workers};"))
    code, err = s.test_config()
    if 'unknown directive "api"' in err:
        pytest.skip("api module not built")
    assert code == 0, err
    return s.start()


def site(port, servers, write="on", extra=""):
    return f"""
    upstream b {{
        zone b 64k;
        {servers}
        {extra}
    }}
    upstream s {{
        server 127.0.0.9:{port};
    }}
    server {{
        listen 127.0.0.1:PORT reuseport;
        location / {{
            proxy_pass http://b;
            add_header X-Pid $pid always;
        }}
        location /api/ {{
            api write={write};
        }}
    }}"""


def call(s, method, path, body=None):
    """An API call: (status, decoded JSON body)."""
    headers = [("Content-Type", "application/json")]
    data = b""
    if body is not None:
        data = (body if isinstance(body, (bytes, str)) else json.dumps(body))
        data = data.encode() if isinstance(data, str) else data
        headers.append(("Content-Length", str(len(data))))
    resp = Response(s.raw(s.request_bytes(path, headers, method) + data))
    assert resp.header("Content-Type") == "application/json"
    return resp.status, json.loads(resp.body)


def err(status, code, text):
    """NGINX Plus's error object, without request_id (checked apart)."""
    return {"error": {"status": status, "text": text, "code": code},
            "href": "https://nginx.org/en/docs/http/ngx_http_api_module.html"}


def without_id(body):
    assert len(body.pop("request_id")) == 32
    return body


def conf_server(id_, server, weight=1, backup=False, down=False, max_conns=0, max_fails=1,
                fail_timeout="10s", slow_start="0s", drain=False):
    d = {"id": id_, "server": server, "weight": weight, "max_conns": max_conns, "max_fails": max_fails,
         "fail_timeout": fail_timeout, "slow_start": slow_start, "route": "", "backup": backup, "down": down}
    if drain:
        d["drain"] = True
    return d


def test_get_shapes(server, origins):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2", "127.0.0.3"], port)
    s = start(server, site(port, f"server 127.0.0.2:{port} weight=2 max_conns=10; "
                                 f"server 127.0.0.3:{port} backup;"))
    assert call(s, "GET", "/api/") == (200, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert call(s, "GET", "/api/9") == (200, ["nginx", "connections", "http", "ssl"])
    assert call(s, "GET", "/api/9/http/") == (200, ["requests", "server_zones", "location_zones", "upstreams"])
    r = s.get("/")
    assert (r.status, r.body) == (200, b"127.0.0.2")

    def counts(n, sent=0, received=0):
        return {"requests": n, "responses": {"1xx": 0, "2xx": n, "3xx": 0, "4xx": 0, "5xx": 0, "total": n},
                "sent": sent, "received": received, "fails": 0, "unavail": 0,
                "health_checks": {"checks": 0, "fails": 0, "unhealthy": 0}}

    # The one try: the request as sent to the origin, the response as
    # the origin wrote it (http.server: its Server and Date fields).
    peer2 = {"id": 0, "server": f"127.0.0.2:{port}", "name": f"127.0.0.2:{port}", "backup": False,
             "weight": 2, "state": "up", "active": 0, "max_conns": 10}
    peer3 = {"id": 1, "server": f"127.0.0.3:{port}", "name": f"127.0.0.3:{port}", "backup": True,
             "weight": 1, "state": "up", "active": 0, **counts(0)}

    def shown(group):
        """The group with peer 0's averages and byte counts checked and
        taken out (their values depend on timing and the origin)."""
        p = group["peers"][0]
        assert p.pop("header_time") <= p.pop("response_time")
        assert p.pop("sent") > 0 and p.pop("received") > 0
        return group

    want = {"peers": [{**peer2, **{k: v for k, v in counts(1).items() if k not in ("sent", "received")}},
                      peer3], "keepalive": 0, "zombies": 0, "zone": "b"}
    # Only groups with a zone: "s" is static.
    status, groups = call(s, "GET", "/api/9/http/upstreams")
    assert (status, list(groups), shown(groups["b"])) == (200, ["b"], want)
    status, group = call(s, "GET", "/api/9/http/upstreams/b")
    assert (status, shown(group)) == (200, want)
    assert call(s, "GET", "/api/9/http/upstreams/b/servers/") == (
        200, [conf_server(0, f"127.0.0.2:{port}", weight=2, max_conns=10),
              conf_server(1, f"127.0.0.3:{port}", backup=True)])
    assert call(s, "GET", "/api/9/http/upstreams/b/servers/1") == (
        200, conf_server(1, f"127.0.0.3:{port}", backup=True))
    # Every version up to 9 answers alike.
    assert call(s, "GET", "/api/7/http/upstreams/b/servers/1")[1] == conf_server(1, f"127.0.0.3:{port}", backup=True)

    cases = [
        ("/api/9/http/upstreams/b/servers/7", err(404, "UpstreamServerNotFound", "server not found")),
        ("/api/9/http/upstreams/b/servers/x", err(400, "UpstreamBadServerId", "invalid server ID")),
        ("/api/9/http/upstreams/s", err(400, "UpstreamStatic", "upstream is static")),
        ("/api/9/http/upstreams/s/servers", err(400, "UpstreamStatic", "upstream is static")),
        ("/api/9/http/upstreams/nope", err(404, "UpstreamNotFound", "upstream not found")),
        ("/api/10/http/upstreams", err(404, "UnknownVersion", "unknown version")),
        ("/api/9/stream/upstreams", err(404, "PathNotFound", "path not found")),
        ("/api/9/nginx/version", err(404, "PathNotFound", "path not found")),
        ("/api/9/http/upstreams/b/peers", err(404, "PathNotFound", "path not found")),
    ]
    for path, want in cases:
        status, body = call(s, "GET", path)
        assert (status, without_id(body)) == (want["error"]["status"], want), path


def test_write_off_is_405(server, origins):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2"], port)
    s = start(server, site(port, f"server 127.0.0.2:{port};", write="off"), workers=1)
    for method, path, body in [("POST", "/api/9/http/upstreams/b/servers", {"server": "127.0.0.3:80"}),
                               ("PATCH", "/api/9/http/upstreams/b/servers/0", {"down": True}),
                               ("DELETE", "/api/9/http/upstreams/b/servers/0", None)]:
        status, got = call(s, method, path, body)
        assert (status, without_id(got)) == (405, err(405, "MethodDisabled", "method disabled")), method
    # A method no path has, whatever write= says.
    status, got = call(s, "PUT", "/api/9/http/upstreams/b/servers")
    assert (status, without_id(got)) == (405, err(405, "MethodNotSupported", "method not supported"))
    assert call(s, "GET", "/api/9/http/upstreams/b/servers") == (200, [conf_server(0, f"127.0.0.2:{port}")])


def batch(s, n=16):
    """n requests on connections opened together, so that both workers
    (one shared listening socket, whoever accepts first) take some: the
    (X-Pid, body) of each."""
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(n)]
    out = []
    try:
        for c in socks:
            c.sendall(s.request_bytes("/"))
        for c in socks:
            chunks = []
            while True:
                b = c.recv(65536)
                if not b:
                    break
                chunks.append(b)
            r = Response(b"".join(chunks))
            assert r.status == 200, r.raw
            out.append((r.header("X-Pid"), r.body))
    finally:
        for c in socks:
            c.close()
    return out


def every_worker_gets(s, body):
    """Batches until both workers answered: every answer, of each worker,
    is `body`. Returns the answers."""
    got = []

    def both():
        got.extend(batch(s))
        return len({p for p, _ in got}) == 2

    assert poll(both, 20), got
    assert {b for _, b in got} == {body}, got
    return got


def test_changes_reach_every_worker_at_once(server, origins):  # noqa: F811
    port = free_port()
    o2, o4 = origins(["127.0.0.2", "127.0.0.4"], port)
    s = start(server, site(port, f"server 127.0.0.2:{port};"))
    every_worker_gets(s, b"127.0.0.2")

    status, added = call(s, "POST", "/api/9/http/upstreams/b/servers",
                         {"server": f"127.0.0.4:{port}", "weight": 3, "max_fails": 2, "fail_timeout": "5s"})
    assert (status, added) == (201, conf_server(1, f"127.0.0.4:{port}", weight=3, max_fails=2, fail_timeout="5s"))
    # The configured server down: every request of every worker goes to
    # the new one from the next request on.
    status, changed = call(s, "PATCH", "/api/9/http/upstreams/b/servers/0", {"down": True})
    assert (status, changed) == (200, conf_server(0, f"127.0.0.2:{port}", down=True))
    every_worker_gets(s, b"127.0.0.4")
    assert call(s, "GET", "/api/9/http/upstreams/b")[1]["peers"][0]["state"] == "down"

    # Removed: no worker sends it anything more.
    status, left = call(s, "DELETE", "/api/9/http/upstreams/b/servers/1")
    assert (status, left) == (200, [conf_server(0, f"127.0.0.2:{port}", down=True)])
    status, _ = call(s, "PATCH", "/api/9/http/upstreams/b/servers/0", {"down": False})
    assert status == 200
    before = o4.count
    every_worker_gets(s, b"127.0.0.2")
    assert o4.count == before
    # A new server gets the next id, never a removed one's.
    status, again = call(s, "POST", "/api/9/http/upstreams/b/servers", {"server": f"127.0.0.4:{port}"})
    assert (status, again["id"]) == (201, 2)
    assert "upstream \"b\": server \"127.0.0.4:%d\" added (id 1)" % port in s.error_log()


def test_bad_requests_leave_the_group_as_it_was(server, origins):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2"], port)
    s = start(server, site(port, f"server 127.0.0.2:{port};"), workers=1)
    path = "/api/9/http/upstreams/b/servers"
    before = call(s, "GET", path)
    cases = [
        ("POST", path, b'{"server": "127.0.0.3:80",}',
         err(400, "JsonError", "invalid JSON: unexpected character '}' at offset 26")),
        ("POST", path, b'{"server": "127.0.0.3:80", "weight": 2, "wieght": 3}',
         err(400, "UpstreamConfFormatError", 'unknown parameter "wieght"')),
        ("POST", path, {"server": "127.0.0.3:80", "weight": 0},
         err(400, "UpstreamBadWeight", 'invalid "weight"')),
        ("POST", path, {"server": "127.0.0.3:80", "fail_timeout": "5 parsecs"},
         err(400, "UpstreamBadFailTimeout", 'invalid "fail_timeout"')),
        ("POST", path, {"server": "127.0.0.3:80", "down": "yes"},
         err(400, "UpstreamConfFormatError", 'invalid "down" value')),
        ("POST", path, {"server": "127.0.0.3:80", "weight": [1]},
         err(400, "UpstreamConfFormatError", "nested object or list")),
        ("POST", path, {"weight": 2}, err(400, "UpstreamConfFormatError", 'missing "server" argument')),
        ("POST", path, {"server": "app.test:80"},
         err(400, "UpstreamBadAddress", 'server "app.test:80" is not an address')),
        ("POST", path, {"server": f"127.0.0.2:{port}"},
         err(409, "EntryExists", f'server "127.0.0.2:{port}" exists in upstream "b"')),
        ("POST", path, b'[1, 2]', err(400, "UpstreamConfFormatError", "invalid JSON object")),
        ("PATCH", path + "/0", {"weight": 2, "server": "127.0.0.3:80"},
         err(400, "UpstreamServerImmutable", 'server "0" address is immutable')),
        ("PATCH", path + "/0", {"down": True, "id": 5}, err(400, "UpstreamBadServerId", "invalid server ID")),
        ("PATCH", path + "/9", {"down": True}, err(404, "UpstreamServerNotFound", "server not found")),
        ("DELETE", path + "/9", None, err(404, "UpstreamServerNotFound", "server not found")),
    ]
    for method, p, body, want in cases:
        status, got = call(s, method, p, body)
        assert (status, without_id(got)) == (want["error"]["status"], want), body
        assert call(s, "GET", path) == before
    # The log says why, for the operator.
    assert 'unknown parameter "wieght"' in s.error_log()

    # A 64k zone has 8 slots: the ninth server is refused, whole.
    for i in range(8):
        assert call(s, "POST", path, {"server": f"127.0.1.{i + 1}:80"})[0] == 201
    full = call(s, "GET", path)
    status, got = call(s, "POST", path, {"server": "127.0.1.9:80"})
    assert (status, without_id(got)) == (400, err(400, "UpstreamOutOfMemory", 'upstream "b" memory exhausted'))
    assert call(s, "GET", path) == full
    assert len(full[1]) == 9


class Load:
    """Keepalive clients sending GET / in a loop, each result tagged with
    the phase the test was in when the request started."""

    def __init__(self, port, clients=4):
        self.port = port
        self.phase = 0
        self.results = []  # (phase at start, status, body)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.inflight = 0
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        # Bounded: until told to stop, at most 20000 each.
        while not self.stop.is_set() and n < 20000:
            n += 1
            self.go.wait(timeout=30)
            if self.stop.is_set():
                break
            with self.lock:
                self.inflight += 1
            phase = self.phase
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                res = (phase, r.status, r.read())
            except (OSError, http.client.HTTPException) as e:
                res = (phase, 0, repr(e).encode())
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self.lock:
                self.results.append(res)
                self.inflight -= 1
        conn.close()

    def pause(self):
        """Holds every client before its next request; returns once none
        is in flight."""
        self.go.clear()
        return poll(lambda: self.inflight == 0, 10)

    def resume(self):
        self.go.set()

    def count(self, phase=None):
        with self.lock:
            return sum(1 for r in self.results if phase is None or r[0] >= phase)

    def done(self):
        self.stop.set()
        self.go.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.results


def test_add_drain_remove_under_load(server, origins):  # noqa: F811
    port = free_port()
    o2, o3, o4 = origins(["127.0.0.2", "127.0.0.3", "127.0.0.4"], port)
    s = start(server, site(port, f"server 127.0.0.2:{port}; server 127.0.0.3:{port};", extra="keepalive 8;"))
    path = "/api/9/http/upstreams/b/servers"
    load = Load(s.port)
    slow = []
    try:
        assert poll(lambda: load.count() >= 50, 10)
        # Added under load: it takes requests.
        assert call(s, "POST", path, {"server": f"127.0.0.4:{port}"})[0] == 201
        assert poll(lambda: o4.count > 0, 10)

        # Requests in flight on 127.0.0.3: /slow until released.
        def slow_get():
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
            c.request("GET", "/slow")
            r = c.getresponse()
            slow.append((r.status, r.read()))
            c.close()

        # With the load held, round robin takes the three peers in turn, so
        # three requests, each sent once the one before has arrived, reach
        # 127.0.0.3; under load which peer comes next is close to random and
        # the rotation can keep missing one peer.
        assert load.pause()
        threads = []
        while o3.slow == 0 and len(threads) < 6:
            t = threading.Thread(target=slow_get)
            t.start()
            threads.append(t)
            assert poll(lambda n=len(threads): o2.slow + o3.slow + o4.slow >= n, 10)
        load.resume()
        assert o3.slow >= 1
        # Drained: from now on, no new request goes to 127.0.0.3.
        status, got = call(s, "PATCH", path + "/1", {"drain": True})
        assert (status, got) == (200, conf_server(1, f"127.0.0.3:{port}", drain=True))
        load.phase = 1
        assert call(s, "GET", "/api/9/http/upstreams/b")[1]["peers"][1]["state"] == "draining"
        assert poll(lambda: load.count(1) >= 200, 15)
        # Removed while its requests still run: a zombie until they end.
        status, _ = call(s, "DELETE", path + "/1")
        assert status == 200
        assert call(s, "GET", "/api/9/http/upstreams/b")[1]["zombies"] == 1
        load.phase = 2
        assert poll(lambda: load.count(2) >= 200, 15)
        # Its own requests finish, with its answer.
        for o in (o2, o3, o4):
            o.srv.release.set()
        for t in threads:
            t.join(timeout=30)
        assert poll(lambda: call(s, "GET", "/api/9/http/upstreams/b")[1]["zombies"] == 0, 10)
    finally:
        results = load.done()
        for o in (o2, o3, o4):
            o.srv.release.set()
    failed = [r for r in results if r[1] != 200]
    print(f"\nload: {len(results)} requests; 127.0.0.2: {o2.count}, 127.0.0.3: {o3.count}, "
          f"127.0.0.4: {o4.count}; {len(slow)} slow")
    assert failed == []
    assert [r for r in results if r[0] >= 1 and r[2] == b"127.0.0.3"] == []
    assert {r[2] for r in results if r[0] >= 1} == {b"127.0.0.2", b"127.0.0.4"}
    assert len(slow) == len(threads)
    assert all(st == 200 for st, _ in slow)
    assert (200, b"127.0.0.3") in slow


def test_state_file_across_restart_and_reload(server, origins, tmp_path):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2", "127.0.0.3"], port)
    state = tmp_path / "b.state"
    s = start(server, site(port, "", extra=f"state {state};"))
    path = "/api/9/http/upstreams/b/servers"
    # A new state file: an empty group (made by the master, for the workers).
    assert call(s, "GET", path) == (200, [])
    assert s.get("/").status == 502
    assert state.read_text() == ""
    assert call(s, "POST", path, {"server": f"127.0.0.2:{port}", "weight": 2})[0] == 201
    assert call(s, "POST", path, {"server": f"127.0.0.3:{port}", "slow_start": "500ms", "max_conns": 7})[0] == 201
    assert call(s, "PATCH", path + "/1", {"down": True})[0] == 200
    lines = [f"server 127.0.0.2:{port} weight=2 max_conns=0 max_fails=1 fail_timeout=10s slow_start=0s;",
             f"server 127.0.0.3:{port} weight=1 max_conns=7 max_fails=1 fail_timeout=10s slow_start=500ms down;"]
    assert state.read_text() == "\n".join(lines) + "\n"
    want = [conf_server(0, f"127.0.0.2:{port}", weight=2),
            conf_server(1, f"127.0.0.3:{port}", max_conns=7, slow_start="500ms", down=True)]
    assert call(s, "GET", path) == (200, want)

    # A reload keeps them (and the file says the same).
    reload(s, 1)
    assert call(s, "GET", path) == (200, want)
    assert [s.get("/").body for _ in range(4)] == [b"127.0.0.2"] * 4
    assert state.read_text() == "\n".join(lines) + "\n"

    # A restart reads them back from the file.
    assert call(s, "DELETE", path + "/0")[0] == 200
    assert state.read_text() == lines[1] + "\n"
    assert call(s, "PATCH", path + "/1", {"down": False})[0] == 200
    s.stop()
    s.start()
    assert call(s, "GET", path) == (200, [conf_server(0, f"127.0.0.3:{port}", max_conns=7, slow_start="500ms")])
    r = s.get("/")
    assert (r.status, r.body) == (200, b"127.0.0.3")


def test_state_file_config_errors(server, tmp_path):  # noqa: F811
    state = tmp_path / "bad.state"
    state.write_text("server 127.0.0.2:80 weight=x;\n")
    s = server(site(80, "", extra=f"state {state};"), start=False)
    code, err_text = s.test_config()
    assert code == 1
    assert f'invalid parameter "weight=x" in {state}:1' in err_text
    s2 = server(site(80, "server 127.0.0.2:80;", extra=f"state {tmp_path / 'x.state'};"), start=False)
    code, err_text = s2.test_config()
    assert code == 1
    assert '"server" directives are not allowed with "state" in upstream "b"' in err_text


def reload(s, generation):
    """HUP, then wait for the new workers (2 per generation) and the old
    ones' exit."""
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: s.error_log().count("start worker process") >= 2 * (generation + 1), timeout=10)
    assert poll(lambda: s.error_log().count("exited with code") >= 2 * generation, timeout=10)


def test_reload_keeps_the_changes_of_an_unchanged_group(server, origins):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2", "127.0.0.3"], port)
    s = start(server, site(port, f"server 127.0.0.2:{port};"))
    path = "/api/9/http/upstreams/b/servers"
    assert call(s, "POST", path, {"server": f"127.0.0.3:{port}"})[0] == 201
    assert call(s, "PATCH", path + "/0", {"weight": 4})[0] == 200
    want = [conf_server(0, f"127.0.0.2:{port}", weight=4), conf_server(1, f"127.0.0.3:{port}")]
    reload(s, 1)
    assert call(s, "GET", path) == (200, want)
    # The group's configuration changed: it starts from it again.
    s.conf.write_text(s.conf.read_text().replace(f"server 127.0.0.2:{port};", f"server 127.0.0.2:{port} max_fails=2;"))
    reload(s, 2)
    assert call(s, "GET", path) == (200, [conf_server(0, f"127.0.0.2:{port}", max_fails=2)])



def test_allow_and_deny_guard_the_api(server, origins):  # noqa: F811
    port = free_port()
    origins(["127.0.0.2"], port)
    s = start(server, f"""
    upstream b {{
        zone b 64k;
        server 127.0.0.2:{port};
    }}
    server {{
        listen 127.0.0.1:PORT;
        location /api/ {{
            api write=on;
            allow 127.0.0.1;
            deny all;
        }}
        location /locked/ {{
            api write=on;
            deny all;
        }}
    }}""", workers=1)
    r = s.get("/locked/9/http/upstreams/b/servers")
    assert r.status == 403
    r = s.raw(s.request_bytes("/locked/9/http/upstreams/b/servers/0", [("Content-Length", "14")], "PATCH")
              + b'{"down": true}')
    assert Response(r).status == 403
    assert call(s, "GET", "/api/9/http/upstreams/b/servers") == (200, [conf_server(0, f"127.0.0.2:{port}")])


def test_api_servers_max_is_the_room_for_added_servers(server, origins):  # noqa: F811
    """api_servers_max N: the API adds N servers to a group, and refuses the
    next as it refused the 9th in a 64k zone before; in a block it wins
    over http's; a zone too small for the slots asked is refused."""
    port = free_port()
    origins(["127.0.0.2"], port)
    http = "api_servers_max 2;\n" + site(port, f"server 127.0.0.2:{port};")
    s = start(server, http, workers=1)
    path = "/api/9/http/upstreams/b/servers"
    for i in (3, 4):
        assert call(s, "POST", path, {"server": f"127.0.0.{i}:{port}"})[0] == 201
    status, body = call(s, "POST", path, {"server": f"127.0.0.5:{port}"})
    assert (status, without_id(body)) == (400, err(400, "UpstreamOutOfMemory", 'upstream "b" memory exhausted'))
    # Without the directive, 64k gives 8.
    s8 = start(server, site(port, f"server 127.0.0.2:{port};"), workers=1)
    for i in range(8):
        assert call(s8, "POST", path, {"server": f"127.0.1.{i}:{port}"})[0] == 201
    assert call(s8, "POST", path, {"server": f"127.0.1.8:{port}"})[0] == 400
    # The block's own wins; 0 is no room at all.
    s0 = start(server, "api_servers_max 5;\n" + site(port, f"server 127.0.0.2:{port};", extra="api_servers_max 0;"),
               workers=1)
    status, body = call(s0, "POST", path, {"server": f"127.0.0.3:{port}"})
    assert (status, body["error"]["code"]) == (400, "UpstreamOutOfMemory")
    # More slots than 64k holds: the zone is too small, said at the block.
    big = server(site(port, f"server 127.0.0.2:{port};", extra="api_servers_max 4096;"), start=False)
    code, text = big.test_config()
    assert code == 1
    assert '[emerg] zone "b" is too small' in text, text
    for conf, message in [("api_servers_max 4097;", "value must be between 0 and 4096"),
                          ("api_servers_max -1;", 'invalid number "-1" in "api_servers_max" directive')]:
        bad = server(conf + site(port, f"server 127.0.0.2:{port};"), start=False)
        code, text = bad.test_config()
        assert (code, message in text) == (1, True), text
