"""X-Accel-Redirect: the origin names what the client gets.

The origin's answer is dropped but for the fields nginx keeps
(Content-Type, Set-Cookie, Content-Disposition, Cache-Control, Expires,
Accept-Ranges) and its X-Accel-Limit-Rate; the request goes on, as a GET, at the URI (decoded, no
"." or ".." segments) or in the named location the field gives.
"""

from gh_server import server  # noqa: F401  (server: the fixture)
from origins import Origin, response
from test_proxy import request


def xar_origin():
    def handler(conn, req):
        target = req.target.partition("xar=")[2]
        conn.sendall(response(200, b"origin body", [
            ("X-Accel-Redirect", target), ("Content-Type", "text/blah"), ("Set-Cookie", "s=1"),
            ("Content-Disposition", "attachment"), ("Cache-Control", "no-cache"), ("Expires", "fake"),
            ("X-Accel-Limit-Rate", "13000"), ("Something", "other")], close=True))
        return False
    return Origin(handler)


def test_redirect_to_a_file_a_location_and_a_named_one(server):
    o = xar_origin()
    try:
        s = server(f"""
            server {{
                listen 127.0.0.1:PORT;
                root html;
                location /app/ {{ proxy_pass http://{o.addr}; }}
                location /protected/ {{ internal; }}
                location /show {{ return 200 "uri=$uri args=$args method=$request_method xar=$upstream_http_x_accel_redirect rate=$limit_rate"; }}
                location @named {{ return 200 "named uri=$uri"; }}
                location /ignored/ {{ proxy_pass http://{o.addr}; proxy_ignore_headers X-Accel-Redirect; }}
            }}
        """, files={"protected/file.txt": "secret file\n"})
        r = request(s.port, "/app/x?xar=/protected/file.txt")
        assert (r.status, r.body) == (200, b"secret file\n")
        assert r.header("Content-Type") == "text/blah"
        assert r.all("Set-Cookie") == ["s=1"]
        assert r.header("Content-Disposition") == "attachment"
        assert r.header("Cache-Control") == "no-cache" and r.header("Expires") == "fake"
        assert r.header("Something") is None and r.header("X-Accel-Redirect") is None
        # The internal location is not reachable from outside.
        assert request(s.port, "/protected/file.txt").status == 404

        r = request(s.port, "/app/x?xar=/show%20me?a=1", method="POST", body=b"")
        assert r.body == b"uri=/show me args=a=1 method=GET xar=/show%20me?a=1 rate=13000"
        r = request(s.port, "/app/x?xar=@named")
        assert r.body == b"named uri=/app/x"
        for unsafe in ("..", "../show", "/show/..", "/x/.%2e", "/./show"):
            assert request(s.port, f"/app/x?xar={unsafe}").status == 404, unsafe
        assert 'unsafe URI "/x/.%2e" was detected' in s.error_log()
        r = request(s.port, "/ignored/x?xar=/show")
        assert (r.status, r.body) == (200, b"origin body")
    finally:
        o.stop()
