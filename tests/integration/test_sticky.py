"""Session persistence, NGINX Plus's "sticky cookie", as a client sees
it: three origins on loopback that answer with their name; the first
response sets a cookie naming the origin that answered, and requests
carrying it go back there whatever the method would choose; a cookie
naming no server, or a server that is down, is rebalanced and replaced;
the attributes; two workers and a reload give the same ids; servers the
upstream API adds and "resolve" servers; config errors name file:line.
"""

import hashlib
import os
import re
import signal
import subprocess
import time

import pytest

from gh_server import BIN, free_port, poll, server  # noqa: F401  (server: the fixture)
from origins import Origin, response
from test_balancing import start
from test_resolver import dnsmasq  # noqa: F401  (the fixture)
from test_upstream_resolve import origins  # noqa: F401  (the fixture: origins by IP on one port)

ID = re.compile(r"^srv_id=([0-9a-f]{32})(;.*)?$")


def named(name):
    def handler(conn, req):
        close = (req.header("Connection") or "").lower() == "close"
        conn.sendall(response(200, name.encode(), [("Content-Type", "text/plain")], close=close))
        return not close
    return handler


@pytest.fixture
def trio():
    started = [Origin(named(n)) for n in "ABC"]
    yield started
    for o in started:
        o.stop()


def conf(origins, sticky="sticky cookie srv_id;", method="", extra_loc=""):
    servers = "\n".join(f"        server {o.addr} max_fails=1 fail_timeout=30s;" for o in origins)
    return f"""
    upstream u {{
        {method}
        {sticky}
{servers}
    }}
    server {{
        listen 127.0.0.1:PORT;
        location / {{ proxy_pass http://u; {extra_loc} }}
    }}
"""


def cookie_of(r):
    """The srv_id value the response sets, or None."""
    for v in r.all("Set-Cookie"):
        m = ID.match(v)
        if m:
            return m.group(1)
    return None


def md5_of(origin):
    return hashlib.md5(origin.addr.encode()).hexdigest()


def by_id(origins):
    return {md5_of(o): o for o in origins}


def test_first_response_sets_cookie_and_requests_stick(server, trio):
    s = start(server, conf(trio))
    r = s.get("/first")
    assert r.status == 200
    value = cookie_of(r)
    assert value is not None, r.raw
    # The id is the MD5 of the address that answered, as NGINX Plus's.
    assert by_id(trio)[value].port == trio["ABC".index(r.body.decode())].port
    who = r.body
    # Round robin would spread these over the three; the cookie keeps
    # them on one, and a bound client gets no new cookie.
    for i in range(12):
        r = s.get(f"/n/{i}", headers=[("Cookie", f"other=1; srv_id={value}; x=y")])
        assert r.status == 200 and r.body == who
        assert r.all("Set-Cookie") == []
    # Without the cookie: balanced as usual (every origin gets some).
    bodies = {s.get(f"/free/{i}").body for i in range(6)}
    assert bodies == {b"A", b"B", b"C"}


@pytest.mark.parametrize("method", ["least_conn;", "hash $request_uri;", "ip_hash;", "random;"])
def test_sticky_comes_before_the_method(server, trio, method):
    s = start(server, conf(trio, method=method))
    target = trio[2]
    for i in range(9):
        r = s.get(f"/m/{i}", headers=[("Cookie", f"srv_id={md5_of(target)}")])
        assert r.status == 200 and r.body == b"C"
        assert r.all("Set-Cookie") == []


@pytest.mark.parametrize("bad", ["junk", "0" * 32, "", "F" * 32])
def test_invalid_cookie_is_rebalanced_and_replaced(server, trio, bad):
    s = start(server, conf(trio))
    r = s.get("/", headers=[("Cookie", f"srv_id={bad}")])
    assert r.status == 200
    value = cookie_of(r)
    assert value in by_id(trio)
    assert by_id(trio)[value] is trio["ABC".index(r.body.decode())]


def test_failed_server_fails_over_and_cookie_follows(server, trio):
    s = start(server, conf(trio))
    gone = trio[0]
    gone.stop()
    for i in range(3):
        r = s.get(f"/f/{i}", headers=[("Cookie", f"srv_id={md5_of(gone)}")])
        # proxy_next_upstream (error) tries another; the cookie names it.
        assert r.status == 200 and r.body in (b"B", b"C")
        assert cookie_of(r) == md5_of(trio["ABC".index(r.body.decode())])


def test_down_server_is_not_chosen_by_cookie(server, trio):
    http = conf(trio).replace(f"server {trio[1].addr} ", f"server {trio[1].addr} down ")
    s = start(server, http)
    r = s.get("/", headers=[("Cookie", f"srv_id={md5_of(trio[1])}")])
    assert r.status == 200 and r.body in (b"A", b"C")
    assert cookie_of(r) == md5_of(trio["ABC".index(r.body.decode())])


def test_backup_holds_sessions_only_while_primaries_are_out(server, trio):
    http = conf(trio).replace(f"server {trio[2].addr} ", f"server {trio[2].addr} backup ")
    s = start(server, http)
    # The primaries are up: the backup's cookie is not honoured.
    r = s.get("/", headers=[("Cookie", f"srv_id={md5_of(trio[2])}")])
    assert r.body in (b"A", b"B")
    assert cookie_of(r) == md5_of(trio["ABC".index(r.body.decode())])


def test_attributes(server, trio):
    sticky = ("sticky cookie srv_id expires=1h domain=.example.com httponly samesite=lax secure path=/app;")
    s = start(server, conf(trio[:1], sticky=sticky))
    before = time.time()
    r = s.get("/")
    v = r.header("Set-Cookie")
    m = re.fullmatch(r"srv_id=([0-9a-f]{32}); expires=(\w{3}, \d\d-\w{3}-\d{4} \d\d:\d\d:\d\d GMT); max-age=3600; "
                     r"domain=\.example\.com; httponly; samesite=Lax; secure; path=/app", v)
    assert m, v
    assert m.group(1) == md5_of(trio[0])
    at = time.mktime(time.strptime(m.group(2), "%a, %d-%b-%Y %H:%M:%S GMT")) - time.timezone
    assert before + 3600 - 5 <= at <= time.time() + 3600 + 5


def test_expires_max_and_session_cookie(server, trio):
    s = start(server, conf(trio[:1], sticky="sticky cookie srv_id expires=max;"))
    assert s.get("/").header("Set-Cookie") == f"srv_id={md5_of(trio[0])}; expires=Thu, 31-Dec-2037 23:55:55 GMT"
    s2 = start(server, conf(trio[:1]))
    assert s2.get("/").header("Set-Cookie") == f"srv_id={md5_of(trio[0])}"


def test_samesite_variable(server, trio):
    s = start(server, conf(trio[:1], sticky="sticky cookie srv_id samesite=$http_x_ss;"))
    assert s.get("/", headers=[("X-SS", "none")]).header("Set-Cookie").endswith("; samesite=None")
    assert s.get("/", headers=[("X-SS", "bogus")]).header("Set-Cookie").endswith("; samesite=Strict")
    assert s.get("/").header("Set-Cookie") == f"srv_id={md5_of(trio[0])}"


def test_two_workers_and_reload_keep_ids(server, trio):
    s = server(conf(trio, extra_loc="add_header X-Pid $pid;"), start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    s.start()
    target = trio[1]
    cookie = [("Cookie", f"srv_id={md5_of(target)}")]
    pids = set()
    deadline = time.monotonic() + 20
    n = 0
    # New connections until both workers answered: every one sends the
    # cookie's requests to the same origin.
    while len(pids) < 2 and time.monotonic() < deadline:
        r = s.get(f"/w/{n}", headers=cookie)
        n += 1
        assert r.status == 200 and r.body == b"B"
        pids.add(r.header("X-Pid"))
    assert len(pids) == 2
    # A cookie one worker set is the one the other would set.
    values = {cookie_of(s.get(f"/new/{i}")) for i in range(6)}
    assert values == set(by_id(trio))
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: s.error_log().count("start worker process") >= 4, timeout=10)
    time.sleep(0.3)
    for i in range(6):
        r = s.get(f"/r/{i}", headers=cookie)
        assert r.status == 200 and r.body == b"B"
        assert r.all("Set-Cookie") == []


@pytest.mark.parametrize("line, message", [
    ("sticky cookie srv_id bogus;", 'invalid parameter "bogus"'),
    ("sticky cookie srv_id expires=soon;", 'invalid expires value "soon"'),
    ("sticky cookie srv_id samesite=maybe;", 'invalid samesite value "maybe"'),
    ("sticky route $a;", 'invalid parameter "route"'),
    ("sticky cookie;", "invalid number of arguments"),
    ("sticky cookie a;\n        sticky cookie b;", '"sticky" directive is duplicate'),
])
def test_config_errors(server, trio, line, message):
    s = server(conf(trio[:1], sticky=line), start=False)
    p = subprocess.run([str(BIN), "-p", str(s.prefix) + "/", "-c", str(s.conf), "-t"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "[emerg]" in p.stderr and message in p.stderr, p.stderr
    assert re.search(r"gatehouse\.conf:\d+", p.stderr), p.stderr


def test_server_added_by_the_api(server, trio):
    """A server the upstream API adds (a zone slot) has its address's id
    too, in every worker."""
    import http.client
    import json
    http_block = f"""
    upstream u {{
        zone u 64k;
        sticky cookie srv_id;
        server {trio[0].addr};
    }}
    server {{
        listen 127.0.0.1:PORT;
        location / {{ proxy_pass http://u; }}
        location /api/ {{ api write=on; }}
    }}
"""
    s = server(http_block, start=False)
    code, err = s.test_config()
    if 'unknown directive "api"' in err:
        pytest.skip("api module not built")
    assert code == 0, err
    s.start()
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("POST", "/api/9/http/upstreams/u/servers", body=json.dumps({"server": trio[2].addr}),
              headers={"Content-Type": "application/json"})
    assert c.getresponse().status == 201
    c.close()
    for i in range(6):
        r = s.get(f"/api-added/{i}", headers=[("Cookie", f"srv_id={md5_of(trio[2])}")])
        assert r.status == 200 and r.body == b"C"
        assert r.all("Set-Cookie") == []
    assert {cookie_of(s.get(f"/x/{i}")) for i in range(4)} == {md5_of(trio[0]), md5_of(trio[2])}


def test_resolve_servers(server, dnsmasq, origins):  # noqa: F811
    """"server NAME resolve": each address has its id; one the name no
    longer has is rebalanced and its cookie replaced."""
    from test_upstream_resolve import site as resolve_site, start as resolve_start
    port = free_port()
    origins(["127.0.0.2", "127.0.0.3"], port)
    d = dnsmasq({"app.test": ["127.0.0.2", "127.0.0.3"]})
    s = resolve_start(server, resolve_site(d.port, port, extra="sticky cookie srv_id;"))
    three = hashlib.md5(f"127.0.0.3:{port}".encode()).hexdigest()
    assert poll(lambda: {s.get(f"/p/{i}").body for i in range(4)} == {b"127.0.0.2", b"127.0.0.3"}, 10)
    for i in range(6):
        r = s.get(f"/s/{i}", headers=[("Cookie", f"srv_id={three}")])
        assert (r.status, r.body, r.all("Set-Cookie")) == (200, b"127.0.0.3", [])
    d.reload({"app.test": ["127.0.0.2"]})
    assert poll(lambda: s.get("/", headers=[("Cookie", f"srv_id={three}")]).body == b"127.0.0.2", 15)
    r = s.get("/", headers=[("Cookie", f"srv_id={three}")])
    assert cookie_of(r) == hashlib.md5(f"127.0.0.2:{port}".encode()).hexdigest()
