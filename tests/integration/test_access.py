"""Access control: allow/deny (IPv4, IPv6, mapped IPv4, unix:), satisfy
all|any, auth_basic with every htpasswd format, limit_except, error_page
on 401/403, and the error log lines nginx writes for each refusal.

Servers run two workers on reuseport sockets, so that requests reach both
and any per-worker state would show."""

import base64
import hashlib
import os
import socket
import subprocess
import warnings

import pytest

from gh_server import Response, Server, require_binary

PAGES = {"index.html": "INDEX\n", "p/index.html": "P\n", "forbidden.html": "MY403\n",
         "auth.html": "MY401\n", "e500.html": "E500\n"}
for _name in ("v4", "v6", "net", "order", "open", "own", "inherit", "le", "lea", "m4", "m6",
              "ua", "ud", "da", "dd", "mapped", "any-allow", "any-deny", "all-allow",
              "all-deny", "any-only-deny", "inner", "realm", "var", "nofile", "dir",
              "log", "err"):
    PAGES[f"{_name}/index.html"] = f"{_name.upper()}\n"


def basic(user, password):
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


def htpasswd_lines():
    """user -> (stored field, password) for every format, hashes made here."""
    def openssl(*args):
        return subprocess.run(["openssl", "passwd", *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    salt = b"s4lt"
    users = {
        "plain": ("{PLAIN}pw-plain", "pw-plain"),
        "sha": ("{SHA}" + base64.b64encode(hashlib.sha1(b"pw-sha").digest()).decode(), "pw-sha"),
        "ssha": ("{SSHA}" + base64.b64encode(hashlib.sha1(b"pw-ssha" + salt).digest() + salt).decode(),
                 "pw-ssha"),
        "apr1": (openssl("-apr1", "-salt", "abcdefgh", "pw-apr1"), "pw-apr1"),
        "md5": (openssl("-1", "-salt", "saltsalt", "pw-md5"), "pw-md5"),
        "sha256": (openssl("-5", "-salt", "saltsalt", "pw-sha256"), "pw-sha256"),
        "sha512": (openssl("-6", "-salt", "saltsalt", "pw-sha512"), "pw-sha512"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # Debian 12's python3.11 still has it
        except ImportError:
            crypt = None
    if crypt is not None:
        users["des"] = (crypt.crypt("pw-des", "ab"), "pw-des")
        # bcrypt at cost 4: its slowness is by design, not worth waiting for.
        users["bcrypt"] = (crypt.crypt("pw-bcrypt", "$2b$04$abcdefghijklmnopqrstuu"), "pw-bcrypt")
        users["bcrypt2y"] = (crypt.crypt("pw-bcrypt", "$2y$04$abcdefghijklmnopqrstuu"), "pw-bcrypt")
    return users


USERS = htpasswd_lines()


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


# ---- auth_basic ------------------------------------------------------------------


def htpasswd_text():
    return "# users of every format\n" + "".join(f"{u}:{h}\n" for u, (h, _) in USERS.items())


def test_every_password_format(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            auth_basic "closed site";
            auth_basic_user_file htpasswd;
        }}
    """, htpasswd_text())
    assert {"plain", "sha", "ssha", "apr1", "md5", "sha256", "sha512"} <= set(USERS)
    for user, (_, password) in USERS.items():
        for family in (socket.AF_INET, socket.AF_INET6):
            r = s.send("/", [basic(user, password)], family=family)
            assert (r.status, r.body) == (200, b"INDEX\n"), user
        r = s.send("/", [basic(user, password + "x")])
        assert r.status == 401, user
        assert r.header("WWW-Authenticate") == 'Basic realm="closed site"'
        assert f'user "{user}": password mismatch, client: 127.0.0.1' in s.error_log()


def test_refusals_statuses_and_log_lines(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            auth_basic "closed site";
            auth_basic_user_file htpasswd;
            location /inner/ {{ auth_basic off; }}
            location /realm/ {{ auth_basic "say \\"hi\\" to $host"; }}
            location /var/ {{ auth_basic_user_file $arg_f; }}
            location /nofile/ {{ auth_basic_user_file htpasswd-missing; }}
            location /dir/ {{ auth_basic_user_file /; }}
        }}
    """, "u:{PLAIN}p\nlast:{PLAIN}no-newline")
    r = s.send("/")
    assert r.status == 401
    assert r.header("WWW-Authenticate") == 'Basic realm="closed site"'
    assert b"401 Authorization Required" in r.body
    assert "[info]" in s.error_log()
    assert 'no user/password was provided for basic authentication, client: 127.0.0.1' in s.error_log()
    assert s.send("/", [basic("u", "p")]).status == 200
    assert s.send("/", [basic("last", "no-newline")]).status == 200
    assert s.send("/", [("Authorization", "Bearer abc")]).status == 401
    assert s.send("/", [("Authorization", "Basic " + base64.b64encode(b":p").decode())]).status == 401

    r = s.send("/", [basic("nobody", "p")])
    assert r.status == 401
    assert f'user "nobody" was not found in "{s.htpasswd}", client: 127.0.0.1' in s.error_log()

    assert s.send("/inner/").status == 200
    r = s.send("/realm/")
    assert r.header("WWW-Authenticate") == 'Basic realm="say \\"hi\\" to localhost"'

    assert s.send("/var/?f=htpasswd", [basic("u", "p")]).status == 200
    r = s.send("/var/?f=nx", [basic("u", "p")])
    assert r.status == 403
    assert (f'[error]' in s.error_log() and
            f'open() "{s.prefix}/conf/nx" failed (2: No such file or directory)' in s.error_log())

    r = s.send("/nofile/", [basic("u", "p")])
    assert r.status == 403
    assert f'open() "{s.prefix}/conf/htpasswd-missing" failed (2: No such file or directory)' in s.error_log()
    r = s.send("/dir/", [basic("u", "p")])
    assert r.status == 500
    assert '[crit]' in s.error_log() and 'pread() "/" failed (21: Is a directory)' in s.error_log()


def test_the_file_is_read_per_request(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            auth_basic "x";
            auth_basic_user_file htpasswd;
        }}
    """, "u:{PLAIN}old\n")
    assert six(s, "/", headers=[basic("u", "old")]) == {200}
    s.htpasswd.write_text("u:{PLAIN}new\n")
    assert six(s, "/", headers=[basic("u", "old")]) == {401}
    assert six(s, "/", headers=[basic("u", "new")]) == {200}


def test_remote_user_with_and_without_auth_basic(access_server):
    s = access_server(f"""
        log_format u "$remote_user $status";
        server {{
            {listen_both()}
            access_log logs/u.log u;
            location /log/ {{ auth_basic "x"; auth_basic_user_file htpasswd; }}
        }}
    """, "u:{PLAIN}p\n")
    s.send("/log/", [basic("u", "p")])
    s.send("/log/", [basic("u", "bad")])
    s.send("/", [basic("who", "ever")])
    s.send("/")
    assert s.wait_lines("u.log", 4) == [b"u 200\n", b"u 401\n", b"who 200\n", b"- 200\n"]


# ---- satisfy ------------------------------------------------------------------------


def test_satisfy_all_and_any_with_every_verdict(access_server):
    auth = 'auth_basic "r"; auth_basic_user_file htpasswd;'
    s = access_server(f"""
        server {{
            {listen_both()}
            location /all-allow/ {{ allow 127.0.0.1; deny all; {auth} }}
            location /all-deny/ {{ deny 127.0.0.1; {auth} }}
            location /any-allow/ {{ satisfy any; allow 127.0.0.1; deny all; {auth} }}
            location /any-deny/ {{ satisfy any; deny 127.0.0.1; {auth} }}
            location /any-only-deny/ {{ satisfy any; deny all; }}
        }}
    """, "u:{PLAIN}p\n")
    good, bad = [basic("u", "p")], [basic("u", "x")]
    # satisfy all: both checks must grant.
    assert six(s, "/all-allow/") == {401}
    assert six(s, "/all-allow/", headers=bad) == {401}
    assert six(s, "/all-allow/", headers=good) == {200}
    assert six(s, "/all-deny/") == {403}
    assert six(s, "/all-deny/", headers=good) == {403}
    # satisfy any: one grant is enough; refused, 401 wins over 403.
    r = s.send("/any-allow/")
    assert (r.status, r.header("WWW-Authenticate")) == (200, None)
    assert six(s, "/any-allow/", headers=bad) == {200}
    r = s.send("/any-deny/")
    assert (r.status, r.header("WWW-Authenticate")) == (401, 'Basic realm="r"')
    assert six(s, "/any-deny/", headers=bad) == {401}
    assert six(s, "/any-deny/", headers=good) == {200}
    assert six(s, "/any-only-deny/") == {403}
    # A deny is logged only when it decides (satisfy all).
    log = s.error_log()
    assert 'access forbidden by rule, client: 127.0.0.1, server: , request: "GET /all-deny/' in log
    assert 'access forbidden by rule, client: 127.0.0.1, server: , request: "GET /any-deny/' not in log
    # ::1 meets no rule of its family: auth_basic decides alone.
    assert six(s, "/all-deny/", family=socket.AF_INET6) == {401}
    assert six(s, "/any-allow/", family=socket.AF_INET6, headers=good) == {200}
    assert six(s, "/any-allow/", family=socket.AF_INET6) == {401}


def test_limit_except_with_auth_basic(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            location /lea/ {{
                limit_except GET {{ auth_basic "writers"; auth_basic_user_file htpasswd; }}
            }}
        }}
    """, "u:{PLAIN}p\n")
    assert six(s, "/lea/") == {200}
    r = s.send("/lea/", method="POST")
    assert (r.status, r.header("WWW-Authenticate")) == (401, 'Basic realm="writers"')
    # Authenticated, the POST reaches the static module, which refuses it.
    assert s.send("/lea/", [basic("u", "p")], method="POST").status == 405


def test_error_page_for_403_and_401(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            error_page 403 /forbidden.html;
            error_page 401 /auth.html;
            location = /forbidden.html {{ }}
            location = /auth.html {{ }}
            location /da/ {{ deny all; }}
            location /err/ {{ auth_basic "r"; auth_basic_user_file htpasswd; }}
        }}
    """, "u:{PLAIN}p\n")
    r = s.send("/da/")
    assert (r.status, r.body) == (403, b"MY403\n")
    r = s.send("/err/")
    assert (r.status, r.body, r.header("WWW-Authenticate")) == (401, b"MY401\n", 'Basic realm="r"')
    assert s.send("/err/", [basic("u", "p")]).body == b"ERR\n"


def test_a_failed_check_under_satisfy_any_answers_at_once(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            error_page 500 /e500.html;
            location = /e500.html {{ }}
            location /dir/ {{
                satisfy any;
                deny all;
                auth_basic "r";
                auth_basic_user_file /;
            }}
        }}
    """, "u:{PLAIN}p\n")
    # The deny is remembered, then the unreadable file is a 500 at once;
    # its error page is served without the remembered 403.
    r = s.send("/dir/", [basic("u", "p")])
    assert (r.status, r.body) == (500, b"E500\n")


# ---- auth_delay ------------------------------------------------------------------


def test_auth_delay_holds_the_401_not_the_worker(access_server):
    s = access_server(f"""
        server {{
            {listen_both()}
            auth_delay 4s;
            auth_basic "r";
            auth_basic_user_file htpasswd;
            location /da/ {{ auth_basic off; deny all; }}
        }}
    """, "u:{PLAIN}p\n", workers=1)
    gone = socket.create_connection(("127.0.0.1", s.port))
    gone.sendall(s.request_bytes("/", [basic("u", "bad")]))
    waiting = socket.create_connection(("127.0.0.1", s.port))
    with waiting:
        waiting.sendall(s.request_bytes("/", [basic("u", "bad")]))
        # A client that leaves during its delay takes its timer with it.
        gone.close()
        # The worker answers others while the 401 waits: a grant and a
        # 403 are not delayed.
        assert s.send("/", [basic("u", "p")]).status == 200
        assert s.send("/da/").status == 403
        waiting.setblocking(False)
        with pytest.raises(BlockingIOError):
            waiting.recv(1)
        waiting.setblocking(True)
        waiting.settimeout(10)
        chunks = []
        while True:
            b = waiting.recv(65536)
            if not b:
                break
            chunks.append(b)
    r = Response(b"".join(chunks))
    assert (r.status, r.header("WWW-Authenticate")) == (401, 'Basic realm="r"')
