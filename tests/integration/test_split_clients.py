"""split_clients: the same key lands in the same part as on nginx.

NGINX_PARTS was produced by nginx 1.22.1 (Debian 12) with the same
split_clients block, for the keys key0..key199; a different hash or other
boundaries would not give the same 200 letters.
"""

import socket

from gh_server import Server, server  # noqa: F401  (server: the fixture)

NGINX_PARTS = (
    "cdaccccdcdcddccdcddcdccdcccccddcccadcacdaccdadddcdaddddcccddacccdcdccccdacacccdcacacdccccdacddccddcacddaacc"
    "caccccccccacddaddccccdaddcdcddcacdccddcccdccdcdcaccdccccddccddccddccdcccdccddcddddcccccdcddcd"
)

SPLIT = """
    split_clients "${arg_k}salt" $v {
        12.34%  a;
        0.5%    b;
        50%     c;
        *       d;
    }
"""


def get_body(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = c.recv(4096)
            if not d:
                break
            data += d
    return data.partition(b"\r\n\r\n")[2].decode()


def test_keys_land_in_the_parts_nginx_puts_them_in(server):
    s = server(SPLIT + """
    server { listen 127.0.0.1:PORT; location / { return 200 "$v"; } }
    """)
    got = "".join(get_body(s.port, f"/?k=key{i}") for i in range(200))
    assert got == NGINX_PARTS


def test_without_a_star_the_rest_is_empty(server):
    s = server("""
    split_clients "$arg_k" $v { 50% x; }
    server { listen 127.0.0.1:PORT; location / { return 200 "[$v]"; } }
    """)
    seen = {get_body(s.port, f"/?k={i}") for i in range(40)}
    assert seen == {"[x]", "[]"}


def test_config_errors(tmp_path):
    cases = [
        ('split_clients $a $v { 60% x; 50% y; }', "percent total is greater than 100%"),
        ('split_clients $a $v { 1.234% x; }', 'invalid percent value "1.234%"'),
        ('split_clients $a $v { 10 x; }', 'invalid percent value "10"'),
        ('split_clients $a v { 10% x; }', 'invalid variable name "v"'),
    ]
    for i, (http, message) in enumerate(cases):
        bad = Server(tmp_path / str(i), "server { listen 127.0.0.1:PORT; }\n" + http)
        rc, err = bad.test_config()
        assert rc != 0 and message in err and "gatehouse.conf:" in err, (http, err)
