"""realip: the client's address as a trusted proxy reports it
(set_real_ip_from, real_ip_header, real_ip_recursive).

Each test sends requests as the "proxy" (from 127.0.0.1) and asserts the
address every later consumer sees: $remote_addr and $remote_port echoed in
a response field, the access log line, the X-Forwarded-For and X-Real-IP
a real origin receives; $realip_remote_addr keeps the connection's.
"""

import re
import socket

import pytest

from gh_server import Response, server  # noqa: F401  (server: the fixture)
from origins import Origin

# Static files, not "return": a location's own realip settings apply at
# Preaccess, after the rewrite phase where "return" answers (as in nginx).
ECHO = 'add_header X-IP "$remote_addr|$remote_port|$realip_remote_addr";'
FILES = {"index.html": "ok\n", "r/index.html": "ok\n", "cdn/index.html": "ok\n"}


def start(server, http, start=True):
    """Two workers, so that either may take a connection."""
    s = server(http, FILES, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    return s.start() if start else s


def ip(s, path="/", headers=(), raw_prefix=b""):
    r = Response(s.raw(raw_prefix + s.request_bytes(path, headers)))
    assert r.status == 200, r.raw
    addr, port, orig = r.header("X-IP").split("|")
    assert orig == "127.0.0.1"
    return addr, port


def test_x_real_ip_from_a_trusted_address(server):
    s = start(server, f"""
    server {{
        listen 127.0.0.1:PORT reuseport;
        set_real_ip_from 127.0.0.0/8;
        location / {{ {ECHO} }}
    }}""")
    assert ip(s, headers=[("X-Real-IP", "192.0.2.9")]) == ("192.0.2.9", "")
    assert ip(s, headers=[("X-Real-IP", "192.0.2.9:4567")]) == ("192.0.2.9", "4567")
    assert ip(s, headers=[("X-Real-IP", "[2001:DB8::9]:80")]) == ("2001:db8::9", "80")
    # Not an address, or no field: the connection's stays.
    addr, port = ip(s, headers=[("X-Real-IP", "unknown")])
    assert addr == "127.0.0.1" and port.isdigit()
    assert ip(s)[0] == "127.0.0.1"
    # X-Forwarded-For is not read unless named.
    assert ip(s, headers=[("X-Forwarded-For", "192.0.2.9")])[0] == "127.0.0.1"


def test_untrusted_address_changes_nothing(server):
    s = start(server, f"""
    server {{
        listen 127.0.0.1:PORT reuseport;
        set_real_ip_from 192.0.2.0/24;
        set_real_ip_from 2001:db8::/32;
        location / {{ {ECHO} }}
    }}""")
    assert ip(s, headers=[("X-Real-IP", "203.0.113.1")])[0] == "127.0.0.1"


def test_x_forwarded_for_recursive_and_not(server):
    s = start(server, f"""
    server {{
        listen 127.0.0.1:PORT reuseport;
        set_real_ip_from 127.0.0.0/8;
        set_real_ip_from 10.0.0.0/8;
        location / {{ real_ip_header X-Forwarded-For; {ECHO} }}
        location /r/ {{ real_ip_header X-Forwarded-For; real_ip_recursive on; {ECHO} }}
    }}""")
    xff = [("X-Forwarded-For", "198.51.100.1, 203.0.113.5, 10.1.1.1")]
    # Off: the last address, trusted or not.
    assert ip(s, "/", xff)[0] == "10.1.1.1"
    # On: the first from the right that is not a trusted proxy.
    assert ip(s, "/r/", xff)[0] == "203.0.113.5"
    # Every address trusted: the leftmost.
    assert ip(s, "/r/", [("X-Forwarded-For", "10.0.0.2,10.0.0.3")])[0] == "10.0.0.2"
    # Several fields are one list.
    two = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "10.9.9.9")]
    assert ip(s, "/r/", two)[0] == "198.51.100.1"
    assert ip(s, "/", two)[0] == "10.9.9.9"
    # A garbage element stops the walk at the last good address.
    assert ip(s, "/r/", [("X-Forwarded-For", "junk, 10.0.0.7")])[0] == "10.0.0.7"


def test_any_header_and_location_level_settings(server):
    s = start(server, f"""
    server {{
        listen 127.0.0.1:PORT reuseport;
        location / {{ {ECHO} }}
        location /cdn/ {{
            set_real_ip_from 127.0.0.1;
            real_ip_header CF-Connecting-IP;
            {ECHO}
        }}
    }}""")
    hdr = [("CF-Connecting-IP", "192.0.2.44"), ("X-Real-IP", "192.0.2.55")]
    # The server level trusts nobody; the location does (Preaccess).
    assert ip(s, "/", hdr)[0] == "127.0.0.1"
    assert ip(s, "/cdn/", hdr)[0] == "192.0.2.44"


def test_hostname_and_unix_in_set_real_ip_from(server, tmp_path):
    sock = tmp_path / "s.sock"
    s = start(server, f"""
    server {{
        listen 127.0.0.1:PORT reuseport;
        listen unix:{sock};
        set_real_ip_from localhost;
        set_real_ip_from unix:;
        location / {{ add_header X-IP "$remote_addr|$realip_remote_addr"; }}
    }}""")
    r = s.get("/", [("X-Real-IP", "192.0.2.1")])
    assert r.header("X-IP") == "192.0.2.1|127.0.0.1"
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(str(sock))
        c.sendall(s.request_bytes("/", [("X-Real-IP", "192.0.2.2")]))
        raw = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            raw += b
    assert Response(raw).header("X-IP") == "192.0.2.2|unix:"


def test_proxy_protocol_as_the_source(server):
    s = start(server, f"""
    log_format real '$remote_addr:$remote_port $realip_remote_addr';
    server {{
        listen 127.0.0.1:PORT proxy_protocol reuseport;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        access_log logs/real.log real;
        location / {{ {ECHO} }}
    }}""")
    pp = b"PROXY TCP6 2001:db8::1 2001:db8::2 123 5678\r\n"
    assert ip(s, headers=[("X-Real-IP", "192.0.2.1")], raw_prefix=pp) == ("2001:db8::1", "123")
    assert s.wait_lines("real.log", 1)[0] == b"2001:db8::1:123 127.0.0.1\n"
    # UNKNOWN: nothing to take.
    assert ip(s, raw_prefix=b"PROXY UNKNOWN\r\n")[0] == "127.0.0.1"


def test_real_address_reaches_the_log_and_the_origin(server):
    o = Origin()
    try:
        s = start(server, f"""
        log_format real '$remote_addr $realip_remote_addr';
        server {{
            listen 127.0.0.1:PORT reuseport;
            set_real_ip_from 127.0.0.1;
            real_ip_header X-Forwarded-For;
            access_log logs/real.log real;
            location / {{
                proxy_pass http://{o.addr};
                proxy_set_header X-Real-IP $remote_addr;
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            }}
        }}""", start=False)
        code, err = s.test_config()
        if 'unknown directive "proxy_pass"' in err:
            pytest.skip("proxy module not built")
        s.start()
        r = s.get("/x", [("X-Forwarded-For", "203.0.113.7")])
        assert r.status == 200
        q = o.wait_requests(1)[0]
        assert q.header("X-Real-IP") == "203.0.113.7"
        assert q.header("X-Forwarded-For") == "203.0.113.7, 203.0.113.7"
        assert s.wait_lines("real.log", 1)[0] == b"203.0.113.7 127.0.0.1\n"
    finally:
        o.stop()


def test_error_log_names_the_real_client(server):
    s = start(server, """
    server {
        listen 127.0.0.1:PORT reuseport;
        set_real_ip_from 127.0.0.1;
        location / { root html; }
    }""")
    r = s.get("/missing", [("X-Real-IP", "192.0.2.77")])
    assert r.status == 404
    assert re.search(r'open\(\) ".*/missing" failed .*client: 192\.0\.2\.77, server: ', s.error_log()), s.error_log()


@pytest.mark.parametrize("conf,message", [
    # Not a range, so a host name, as nginx reads it.
    ("set_real_ip_from 192.0.2.0/33;", 'host not found in set_real_ip_from "192.0.2.0/33"'),
    ("set_real_ip_from no-such-host.invalid;", 'host not found in set_real_ip_from "no-such-host.invalid"'),
    ("real_ip_recursive maybe;", "real_ip_recursive"),
    ("real_ip_header X-Real-IP; real_ip_header X-Forwarded-For;", '"real_ip_header" directive is duplicate'),
    ("set_real_ip_from;", 'invalid number of arguments in "set_real_ip_from"'),
])
def test_config_errors(server, conf, message):
    s = server(f"server {{\n listen 127.0.0.1:PORT;\n {conf}\n}}\n", start=False)
    code, err = s.test_config()
    assert code != 0
    assert message in err, err
    assert re.search(r"\[emerg\].*gatehouse\.conf:\d+", err), err


def test_low_bits_warning(server):
    s = server("server {\n listen 127.0.0.1:PORT;\n set_real_ip_from 192.0.2.1/24;\n}\n", start=False)
    code, err = s.test_config()
    assert code == 0, err
    assert re.search(r"\[warn\] low address bits of 192\.0\.2\.1/24 are meaningless in .*gatehouse\.conf:\d+", err), err
