"""Hiding the origin: what a client can learn about the servers behind.

The origin's software (Server, X-Powered-By and the like) is dropped or
replaced, and neither a response nor an error page names an origin
address.
"""

from gh_server import server  # noqa: F401  (server: the fixture)
from origins import Origin, closed_port, response
from test_proxy import request


def test_server_replaced_and_software_hidden(server):
    def handler(conn, req):
        conn.sendall(response(200, b"hi", [
            ("Server", "Apache/2.4.1 (Unix)"), ("X-Powered-By", "PHP/8.1"),
            ("X-AspNet-Version", "4.0"), ("Content-Type", "text/plain")], close=True))
        return False

    o = Origin(handler)
    try:
        s = server(f"""
            server {{
                listen 127.0.0.1:PORT;
                server_tokens off;
                proxy_hide_header X-Powered-By;
                proxy_hide_header X-AspNet-Version;
                location / {{ proxy_pass http://{o.addr}; }}
                location /edge/ {{
                    proxy_pass http://{o.addr};
                    proxy_hide_header Server;
                    proxy_hide_header X-Powered-By;
                    add_header Server "edge" always;
                }}
            }}
        """)
        r = request(s.port, "/")
        assert r.status == 200 and r.body == b"hi"
        # Ours, not the origin's (proxy_hide_header Server is the default).
        assert r.all("Server") == ["gatehouse"]
        assert r.header("X-Powered-By") is None and r.header("X-AspNet-Version") is None
        r = request(s.port, "/edge/")
        assert r.status == 200
        assert r.all("Server") == ["edge"]
        assert r.header("X-Powered-By") is None
        assert not any("Apache" in v or "PHP" in v for _, v in r.headers)
    finally:
        o.stop()


def test_error_pages_do_not_name_the_origin(server):
    dead = closed_port()
    s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://127.0.0.1:{dead}; }}
        }}
    """)
    r = request(s.port, "/secret")
    assert r.status == 502
    text = r.body.decode("latin-1") + "".join(f"{n}: {v}" for n, v in r.headers)
    assert str(dead) not in text and "127.0.0.1" not in text
    assert "<center><h1>502 Bad Gateway</h1></center>" in text
    # The operator's log has it.
    assert f"127.0.0.1:{dead}" in s.error_log()
