"""Access control: allow/deny (IPv4, IPv6, mapped IPv4, unix:),
limit_except, and the error log lines nginx writes for each refusal.

Servers run two workers on reuseport sockets, so that requests reach both
and any per-worker state would show."""

import os
import socket

import pytest

from gh_server import Response, Server, require_binary

PAGES = {"index.html": "INDEX\n", "p/index.html": "P\n", "forbidden.html": "MY403\n",
         "auth.html": "MY401\n"}
for _name in ("v4", "v6", "net", "order", "open", "own", "inherit", "le", "lea", "m4", "m6",
              "ua", "ud", "da", "dd", "mapped", "any-allow", "any-deny", "all-allow",
              "all-deny", "any-only-deny", "inner", "realm", "var", "nofile", "dir",
              "log", "err"):
    PAGES[f"{_name}/index.html"] = f"{_name.upper()}\n"


class AccessServer(Server):
    """Two workers unless told; `htpasswd` is written as conf/htpasswd, readable by the
    workers (they run as nobody)."""

    def __init__(self, tmp_path, http, htpasswd=None, workers=2):
        super().__init__(tmp_path, http, PAGES)
        self.conf.write_text(self.conf.read_text().replace("worker_processes 1;",
                                                           f"worker_processes {workers};"))
        self.htpasswd = self.prefix / "conf" / "htpasswd"
        if htpasswd is not None:
            self.htpasswd.write_text(htpasswd)
            os.chmod(self.htpasswd, 0o644)

    def send(self, path, headers=(), method="GET", family=socket.AF_INET, unix_path=None):
        if unix_path is not None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = unix_path
        else:
            s = socket.socket(family, socket.SOCK_STREAM)
            addr = ("127.0.0.1" if family == socket.AF_INET else "::1", self.port)
        with s:
            s.settimeout(10)
            s.connect(addr)
            s.sendall(self.request_bytes(path, headers, method))
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return Response(b"".join(chunks))


@pytest.fixture
def access_server(tmp_path):
    require_binary()
    started = []

    def make(http, htpasswd=None, workers=2):
        s = AccessServer(tmp_path / str(len(started)), http, htpasswd, workers)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


def listen_both(extra=""):
    return f"""
        listen 127.0.0.1:PORT reuseport;
        listen [::1]:PORT reuseport;
        root html;
        {extra}
    """


def six(s, path, **kw):
    """The statuses of six requests, new connections that reuseport spreads
    over the workers."""
    return {s.send(path, **kw).status for _ in range(6)}


# ---- allow / deny ------------------------------------------------------------------


def test_rules_per_family_first_match_wins(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            location /v4/ {{ allow 127.0.0.1; deny all; }}
            location /v6/ {{ allow ::1; deny all; }}
            location /net/ {{ deny 127.0.0.0/8; allow all; }}
            location /order/ {{ allow 127.0.0.1; deny 127.0.0.1; deny ::/0; }}
            location /open/ {{ }}
        }}
    """)
    v6 = {"family": socket.AF_INET6}
    assert six(s, "/v4/") == {200}
    assert six(s, "/v4/", **v6) == {403}
    assert six(s, "/v6/") == {403}
    assert six(s, "/v6/", **v6) == {200}
    assert six(s, "/net/") == {403}
    assert six(s, "/net/", **v6) == {200}
    assert six(s, "/order/") == {200}
    assert six(s, "/order/", **v6) == {403}
    assert six(s, "/open/") == {200}
    r = s.send("/v6/")
    assert r.body.startswith(b"<html>") and b"403 Forbidden" in r.body
    assert s.send("/v4/").body == b"V4\n"
    log = s.error_log()
    assert '[error]' in log
    assert ('access forbidden by rule, client: 127.0.0.1, server: , request: "GET /v6/ HTTP/1.1", '
            'host: "localhost"') in log
    assert 'access forbidden by rule, client: ::1, server: , request: "GET /v4/ HTTP/1.1"' in log


def test_inheritance_and_limit_except(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            deny 127.0.0.1;
            location /own/ {{ allow all; }}
            location /inherit/ {{ }}
            location /le/ {{
                allow all;
                limit_except GET {{ deny 127.0.0.1; }}
            }}
        }}
    """)
    assert six(s, "/own/") == {200}
    assert six(s, "/inherit/") == {403}
    # ::1 has no rule of its family at the server level: not refused.
    assert six(s, "/inherit/", family=socket.AF_INET6) == {200}
    assert six(s, "/le/") == {200}
    assert six(s, "/le/", method="HEAD") == {200}
    assert six(s, "/le/", method="POST") == {403}
    # The limit_except block has rules: the location's "allow all" is not
    # inherited, and ::1 matches none of them; the static module then
    # refuses the method.
    assert six(s, "/le/", method="POST", family=socket.AF_INET6) == {405}


def test_mapped_ipv4_client_is_checked_as_ipv4(access_server):
    s = access_server("""
        server {
            listen [::ffff:127.0.0.1]:PORT ipv6only=off reuseport;
            root html;
            location /m4/ { allow 127.0.0.1; deny all; }
            location /m6/ { allow ::ffff:127.0.0.1; deny all; }
            location /mapped/ { allow ::ffff:127.0.0.0/104; deny ::/0; }
            location = /addr { return 200 "$remote_addr"; }
        }
    """)
    assert s.send("/addr").body == b"::ffff:127.0.0.1"
    assert six(s, "/m4/") == {200}
    # "deny all" makes IPv4 rules: the client is checked against those.
    assert six(s, "/m6/") == {403}
    # No IPv4 rule: the address is checked as the IPv6 address it is.
    assert six(s, "/mapped/") == {200}


def test_unix_socket_rules(access_server, tmp_path):
    sock = tmp_path / "gh.sock"
    s = access_server(f"""
        server {{
            listen 127.0.0.1:PORT reuseport;
            listen unix:{sock};
            root html;
            location /ua/ {{ allow unix:; deny all; }}
            location /ud/ {{ deny unix:; }}
            location /da/ {{ deny all; }}
            location /v4/ {{ allow 127.0.0.1; }}
        }}
    """)
    u = {"unix_path": str(sock)}
    assert six(s, "/ua/", **u) == {200}
    assert six(s, "/ua/") == {403}
    assert six(s, "/ud/", **u) == {403}
    assert six(s, "/ud/") == {200}
    assert six(s, "/da/", **u) == {403}
    assert six(s, "/v4/", **u) == {200}
    assert 'access forbidden by rule, client: unix:, server: , request: "GET /ud/ HTTP/1.1"' in s.error_log()


def test_bad_rules_and_low_address_bits(tmp_path):
    require_binary()
    for i, (arg, msg) in enumerate([
        ("10.0.0.0/33", 'invalid parameter "10.0.0.0/33"'),
        ("localhost", 'invalid parameter "localhost"'),
        ("::1/129", 'invalid parameter "::1/129"'),
        ("unix:/x", 'invalid parameter "unix:/x"'),
    ]):
        bad = Server(tmp_path / f"b{i}", f"server {{ listen 127.0.0.1:PORT; allow {arg}; }}")
        rc, err = bad.test_config()
        assert rc == 1
        assert f"[emerg] {msg} in {bad.conf}:8" in err
    warn = Server(tmp_path / "w", "server { listen 127.0.0.1:PORT; deny 10.1.2.3/8; allow ::1/64; }")
    rc, err = warn.test_config()
    assert rc == 0
    assert f"[warn] low address bits of 10.1.2.3/8 are meaningless in {warn.conf}:8" in err
    assert f"[warn] low address bits of ::1/64 are meaningless in {warn.conf}:8" in err
    bad = Server(tmp_path / "c", "server { listen 127.0.0.1:PORT; location / { if ($uri) { deny all; } } }")
    rc, err = bad.test_config()
    assert rc == 1
    assert f'"deny" directive is not allowed here in {bad.conf}:8' in err
