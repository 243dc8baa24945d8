"""limit_rate, limit_rate_after, $limit_rate and X-Accel-Limit-Rate.

A limited response cannot arrive faster than its rate allows: after t
seconds at most after + rate * (t + 1) body bytes (nginx's allowance,
which starts with one second's worth). The tests assert that lower bound
on the time a whole body takes, never an upper one, and the body's bytes.
"""

import socket
import time

from gh_server import Response, Server, server  # noqa: F401  (server: the fixture)
from origins import Origin, response

DATA = bytes(range(256)) * 160  # 40960 bytes


def fetch(s, path, headers=(), timeout=20.0):
    """GET path; returns (Response, seconds the whole answer took)."""
    t0 = time.monotonic()
    r = Response(s.raw(s.request_bytes(path, headers), timeout=timeout))
    return r, time.monotonic() - t0


def least_seconds(size, rate, after=0):
    """The least time size body bytes can take at rate after after."""
    return max(0.0, (size - after - rate) / rate)


def conf(locations, extra=""):
    return f"""
    log_format rate '$uri $limit_rate';
    {extra}
    server {{
        listen 127.0.0.1:PORT;
        root html;
        access_log logs/rate.log rate;
        {locations}
    }}
"""


def test_static_body_is_paced_and_whole(server):
    s = server(conf("""
        location / { limit_rate 16k; limit_rate_after 4k; }
    """), files={"data": DATA})
    r, took = fetch(s, "/data")
    assert r.status == 200
    assert r.body == DATA
    assert took >= least_seconds(len(DATA), 16384, 4096) * 0.95
    s.wait_lines("rate.log", 1)
    assert s.read_log("rate.log").decode().split("\n")[0] == "/data 16384"


def test_first_second_carries_at_most_the_allowance(server):
    s = server(conf("location / { limit_rate 8k; }"), files={"data": DATA})
    # The clock starts before the connection is made: the server's own
    # allowance (counted from when it accepted the connection, or later)
    # can only have started later, so a slow machine makes the bound
    # below looser, never tighter.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(s.request_bytes("/data"))
        got = b""
        c.settimeout(0.2)
        while time.monotonic() - t0 < 0.5:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            got += chunk
            elapsed = time.monotonic() - t0
            body = got.partition(b"\r\n\r\n")[2]
            # At any moment: at most one second's allowance plus what the
            # time since the request adds, give or take the 2 ms by which
            # the server's millisecond clock may round the elapsed time up.
            assert len(body) <= 8192 * (1 + elapsed + 0.002) + 1, (len(body), elapsed)
    assert len(got.partition(b"\r\n\r\n")[2]) > 0


def test_limit_rate_after_the_body_size_does_not_limit(server):
    # The allowance starts past limit_rate_after: a body smaller than
    # that is not held, whatever the rate ($limit_rate still says it).
    s = server(conf("location / { limit_rate 1; limit_rate_after 64k; }"), files={"data": DATA})
    r, _ = fetch(s, "/data", timeout=10)
    assert r.body == DATA
    s.wait_lines("rate.log", 1)
    assert s.read_log("rate.log").decode().strip() == "/data 1"


def test_variables_set_and_directive_values(server):
    s = server(conf("""
        location /var { alias html/data; limit_rate $arg_l; limit_rate_after $arg_a; }
        location /set { alias html/data; limit_rate 1; set $limit_rate 20k; }
        location /zero { alias html/data; limit_rate 0; }
    """), files={"data": DATA})
    r, took = fetch(s, "/var?l=12k&a=1k")
    assert r.body == DATA
    assert took >= least_seconds(len(DATA), 12288, 1024) * 0.95
    r, took = fetch(s, "/set")
    assert r.body == DATA
    assert took >= least_seconds(len(DATA), 20480) * 0.95
    r, _ = fetch(s, "/var")
    assert r.body == DATA
    r, _ = fetch(s, "/zero")
    assert r.body == DATA
    s.wait_lines("rate.log", 4)
    assert s.read_log("rate.log").decode().split("\n")[:4] == ["/var 12288", "/set 20480", "/var 0", "/zero 0"]


def test_origin_x_accel_limit_rate(server):
    body = b"z" * 30000

    def handler(conn, req):
        rate = req.target.partition("r=")[2]
        conn.sendall(response(200, body, [("X-Accel-Limit-Rate", rate)], close=True))
        return False

    o = Origin(handler)
    try:
        s = server(conf(f"""
            location / {{ proxy_pass http://{o.addr}; }}
            location /ignored/ {{
                proxy_pass http://{o.addr};
                proxy_ignore_headers X-Accel-Limit-Rate;
            }}
            location /outranked/ {{ proxy_pass http://{o.addr}; limit_rate 1; }}
        """))
        r, took = fetch(s, "/a?r=10000")
        assert r.status == 200 and r.body == body
        assert r.header("X-Accel-Limit-Rate") is None
        assert took >= least_seconds(len(body), 10000) * 0.95
        r, _ = fetch(s, "/ignored/b?r=10000")
        assert r.body == body
        # The origin's "off" lifts the location's own limit.
        r, _ = fetch(s, "/outranked/c?r=off")
        assert r.body == body
        s.wait_lines("rate.log", 3)
        assert s.read_log("rate.log").decode().split("\n")[:3] == ["/a 10000", "/ignored/b 0", "/outranked/c 0"]
    finally:
        o.stop()


def test_head_and_not_modified_are_not_held(server):
    s = server(conf("location / { limit_rate 1; }"), files={"data": DATA})
    r = Response(s.raw(s.request_bytes("/data", method="HEAD"), timeout=5))
    assert r.status == 200 and r.body == b""
    lm = s.get("/data", headers=[("Range", "bytes=0-0")])
    assert lm.status == 206 and lm.body == DATA[:1]


def test_invalid_value_is_a_config_error(tmp_path):
    bad = Server(tmp_path, "server { listen 127.0.0.1:PORT; limit_rate fast; }\n")
    rc, err = bad.test_config()
    assert rc != 0
    assert 'in "limit_rate" directive in ' in err and '"fast"' in err, err


def test_proxy_limit_rate_paces_reading_from_the_origin(server):
    # proxy_limit_rate holds the reads from the origin (nginx: only while
    # buffering), so neither the client nor $upstream_response_time can
    # see the body sooner than the allowance lets it in.
    def handler(conn, req):
        rate = req.target.partition("r=")[2] or "0"
        conn.sendall(response(200, DATA, [("X-Rate", rate)], close=True))
        return False

    o = Origin(handler)
    try:
        s = server(f"""
            log_format up '$uri $upstream_response_time';
            server {{
                listen 127.0.0.1:PORT;
                access_log logs/up.log up;
                location / {{ proxy_pass http://{o.addr}; proxy_limit_rate 16k; }}
                location /var/ {{ proxy_pass http://{o.addr}; proxy_limit_rate $arg_r; }}
                location /origin/ {{ proxy_pass http://{o.addr}; proxy_limit_rate $upstream_http_x_rate; }}
                location /unbuffered/ {{
                    proxy_pass http://{o.addr};
                    proxy_limit_rate 1;
                    proxy_buffering off;
                }}
            }}
        """)
        r, took = fetch(s, "/a")
        assert r.status == 200 and r.body == DATA
        bound = least_seconds(len(DATA), 16384)
        assert took >= bound * 0.95
        r, took = fetch(s, "/var/b?r=20k")
        assert r.body == DATA
        assert took >= least_seconds(len(DATA), 20480) * 0.95
        # At one byte a second this would not end within the timeout.
        r, _ = fetch(s, "/unbuffered/c", timeout=10)
        assert r.body == DATA
        # The value may use the origin's own fields: read as the body starts.
        r, took = fetch(s, "/origin/d?r=20480")
        assert r.body == DATA
        assert took >= least_seconds(len(DATA), 20480) * 0.95
        s.wait_lines("up.log", 4)
        lines = [line.split() for line in s.read_log("up.log").decode().splitlines()]
        assert [uri for uri, _ in lines] == ["/a", "/var/b", "/unbuffered/c", "/origin/d"]
        assert float(lines[0][1]) >= bound * 0.95
    finally:
        o.stop()


def test_proxy_limit_rate_invalid_value_is_a_config_error(tmp_path):
    bad = Server(tmp_path, "server { listen 127.0.0.1:PORT; location / { proxy_limit_rate 1q; } }\n")
    rc, err = bad.test_config()
    assert rc != 0
    assert 'in "proxy_limit_rate" directive in ' in err and '"1q"' in err, err
