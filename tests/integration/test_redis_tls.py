"""TLS to Redis: "ssl on" and the ssl_* lines of a redis block.

A real redis-server listens with TLS only (--port 0 --tls-port P) with a
certificate made by the openssl command for the test, from a CA of the
test; some tests make it require client certificates
(--tls-auth-clients yes). Two gatehouse masters, two workers each, sync
a limit_req zone through it (test_redis_limits' helpers); every process
is stopped by its pid.
"""

import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from gh_server import Server, poll, require_binary
from origins import Origin
from test_redis_limits import BURST, RATE, Redis, fleet, flood, synced, total  # noqa: F401  (fleet: the fixture)

REDIS = shutil.which("redis-server")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(REDIS is None or OPENSSL is None,
                                reason="redis-server or the openssl command is not installed")


def openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca.crt (signs redis.crt and client.crt) and other.crt, a CA that
    signed nothing here. The files are world-readable: workers run as
    nobody, and they read nothing but what the master loaded."""
    d = tmp_path_factory.mktemp("pki")
    o = lambda *a: openssl(*a, cwd=d)  # noqa: E731
    for ca, cn in (("ca", "Gatehouse Redis CA"), ("other", "Some Other CA")):
        o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN={cn}", "-days", "30",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, cn, ext):
        o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
          "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        (d / f"{name}.ext").write_text(ext)
        o("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
          "-days", "30", "-out", f"{name}.crt", "-extfile", f"{name}.ext")

    leaf("redis", "redis.test", "subjectAltName=DNS:redis.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    leaf("client", "gatehouse", "extendedKeyUsage=clientAuth\n")
    for f in d.iterdir():
        f.chmod(0o644)
    return Path(d)


class TlsRedis(Redis):
    """redis-server speaking TLS only on 127.0.0.1:port, stopped by pid."""

    def __init__(self, tmp_path, pki, port=None, auth_clients="no"):
        super().__init__(tmp_path, port)
        self.pki = pki
        self.auth_clients = auth_clients
        # The test's own client: trusts the CA, shows the client
        # certificate (which --tls-auth-clients no ignores).
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))

    def listen_args(self):
        p = self.pki
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(p / "redis.crt"), "--tls-key-file", str(p / "redis.key"),
                "--tls-ca-cert-file", str(p / "ca.crt"), "--tls-auth-clients", self.auth_clients]

    def connect(self):
        return self.ctx.wrap_socket(super().connect())


@pytest.fixture
def tls_redis(tmp_path, pki):
    made = []

    def make(port=None, auth_clients="no"):
        r = TlsRedis(tmp_path, pki, port, auth_clients)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.kill()


def tls_http(r, origin, pki, ssl_lines):
    return f"""
    redis r {{
        server 127.0.0.1:{r.port};
        timeout 1s; connect_timeout 1s; sync_interval 20ms;
        ssl on;
        {ssl_lines}
    }}
    limit_req_zone $binary_remote_addr zone=one:1m rate={RATE}r/s sync=r;
    server {{
        listen 127.0.0.1:PORT reuseport;
        location / {{
            limit_req zone=one burst={BURST} nodelay;
            limit_req_status 429;
            proxy_pass http://{origin.addr};
        }}
    }}
    """


def verified(pki):
    return f"ssl_verify on; ssl_trusted_certificate {pki / 'ca.crt'};"


def with_cert(pki):
    return f"ssl_certificate {pki / 'client.crt'}; ssl_certificate_key {pki / 'client.key'};"


def in_redis(r):
    """The zone's key for the test client (127.0.0.1) is in Redis. A
    request made before the worker's first connection is ready (the TLS
    handshake and a PING over TLS) is counted locally and not sent
    (limit_sync.h): callers poll with a request each time."""
    reply = r.command("KEYS", "gatehouse:lr:{one}:*")
    return reply is not None and reply.startswith(b"*1\r\n")


def trouble(log):
    """The client's warn and error lines (a loss, a refusal)."""
    return [x for x in log.splitlines() if 'redis "r" at' in x and ("[warn]" in x or "[error]" in x)]


def test_fleet_rate_over_tls(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        nodes = fleet(tls_http(r, origin, pki, verified(pki)), n=2)
        results, took = flood(nodes, 4.0)
        seen = len(origin.requests)
        assert set().union(*[set(x) for x in results]) == {200, 429}, results
        assert total(results, 200) == seen
        assert all(x.get(200, 0) > 0 for x in results), results
        # Two nodes, one fleet rate: the buckets met in Redis over TLS.
        expected = RATE * took + BURST + 1
        assert abs(seen - expected) <= 0.1 * expected, (seen, expected, results)
        assert in_redis(r)
        for n in nodes:
            assert trouble(n.error_log()) == []
            assert "is unreachable" not in n.error_log()
    finally:
        origin.stop()


def test_wrong_ca_fails_the_handshake_and_limits_locally(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        lines = f"ssl_verify on; ssl_trusted_certificate {pki / 'other.crt'};"
        node = fleet(tls_http(r, origin, pki, lines), n=1)[0]
        # Every request is served under the node's own limit meanwhile.
        assert node.get("/a").status == 200
        assert poll(lambda: "is unreachable, limiting per node" in node.error_log(), 10)
        log = node.error_log()
        line = trouble(log)
        assert len(line) == 1, log  # once, however many retries
        assert "[error]" in line[0], line
        assert ": SSL_do_handshake() failed (SSL: error:0A000086:SSL routines::certificate verify failed" in line[0]
        # Which check failed, as for origins (Redis sends the CA along, or not).
        assert re.search(r"upstream SSL certificate verify error: \(\d+:[^)]+\), falling back until it is "
                         r"reachable again$", line[0]), line
        assert node.get("/b").status == 200
        assert not in_redis(r)
    finally:
        origin.stop()


def test_wrong_name_fails_verification(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        node = fleet(tls_http(r, origin, pki, verified(pki) + " ssl_name other.test;"), n=1)[0]
        assert node.get("/a").status == 200
        assert poll(lambda: "is unreachable, limiting per node" in node.error_log(), 10)
        assert "(62:hostname mismatch)" in node.error_log(), node.error_log()
        assert not in_redis(r)
    finally:
        origin.stop()


def test_verified_by_name_with_sni(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        node = fleet(tls_http(r, origin, pki, verified(pki) + " ssl_name redis.test; ssl_server_name on;"),
                     n=1)[0]
        assert poll(lambda: node.get("/a").status == 200 and in_redis(r), 10), node.error_log()
        assert trouble(node.error_log()) == []
    finally:
        origin.stop()


def test_client_certificate_required(tls_redis, fleet, pki, tmp_path):
    r = tls_redis(auth_clients="yes")
    origin = Origin()
    without = None
    try:
        with_c = fleet(tls_http(r, origin, pki, verified(pki) + " " + with_cert(pki)), n=1)[0]
        assert poll(lambda: with_c.get("/a").status == 200 and in_redis(r), 10), with_c.error_log()
        assert trouble(with_c.error_log()) == []

        http_block = tls_http(r, origin, pki, verified(pki)).replace("$binary_remote_addr", "$arg_k")
        without = Server(tmp_path / "without", http_block).start()
        assert without.get("/?k=x").status == 200
        assert poll(lambda: "is unreachable, limiting per node" in without.error_log(), 10)
        line = trouble(without.error_log())
        assert len(line) == 1, without.error_log()
        # TLS 1.3: Redis refuses the certificate after the client's
        # handshake; whether the alert (logged at error) or a reset (at
        # warn) comes first is timing.
        assert line[0].endswith(" after the SSL handshake, before the first reply (a client certificate "
                                "refused?), falling back until it is reachable again"), line
        assert r.command("EXISTS", "gatehouse:lr:{one}:x") == b":0\r\n"
    finally:
        if without:
            without.stop()
        origin.stop()


def test_reconnects_over_tls_after_a_restart(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        http_block = tls_http(r, origin, pki, verified(pki)).replace("$binary_remote_addr", "$arg_k")
        nodes = fleet(http_block, n=2)

        def key(k):
            return r.command("EXISTS", f"gatehouse:lr:{{one}}:{k}") == b":1\r\n"

        assert poll(lambda: nodes[0].get("/?k=before").status == 200 and key("before"), 10)
        r.kill()
        for n in nodes:
            assert n.get("/?k=away").status == 200
        assert poll(lambda: all("is unreachable, limiting per node" in n.error_log() for n in nodes), 10)
        tls_redis(r.port)
        assert poll(lambda: synced(nodes), timeout=10), [n.error_log() for n in nodes]
        for i, n in enumerate(nodes):
            assert poll(lambda: n.get(f"/?k=after{i}").status == 200 and key(f"after{i}"), 10)
            assert [x for x in trouble(n.error_log()) if "[error]" in x] == []
    finally:
        origin.stop()


def test_session_reused_after_a_reconnection(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        node = fleet(tls_http(r, origin, pki, verified(pki)), n=1)[0]
        line = f'redis "r" at 127.0.0.1:{r.port}: TLSv1.3, SSL session'
        assert poll(lambda: f"{line} new" in node.error_log(), 10), node.error_log()
        # Redis closes the connection (as on its timeout): the worker
        # reconnects after the backoff and offers the session it got.
        assert poll(lambda: node.get("/a").status == 200 and in_redis(r), 10)
        assert r.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").startswith(b":")
        assert poll(lambda: f"{line} reused" in node.error_log(), 10), node.error_log()
        assert poll(lambda: node.get("/b").status == 200 and synced([node]), 10)
    finally:
        origin.stop()


def test_session_not_reused_when_off(tls_redis, fleet, pki):
    r = tls_redis()
    origin = Origin()
    try:
        node = fleet(tls_http(r, origin, pki, verified(pki) + " ssl_session_reuse off;"), n=1)[0]
        line = f'redis "r" at 127.0.0.1:{r.port}: TLSv1.3, SSL session'
        assert poll(lambda: f"{line} new" in node.error_log(), 10), node.error_log()
        assert r.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").startswith(b":")
        assert poll(lambda: node.error_log().count(f"{line} new") == 2, 10), node.error_log()
        assert f"{line} reused" not in node.error_log()
    finally:
        origin.stop()


def test_config_errors(tmp_path, pki):
    require_binary()
    base = "server 127.0.0.1:1; ssl on;"
    cases = [
        (f"{base} ssl_verify on;", "no ssl_trusted_certificate for ssl_verify"),
        (f"{base} ssl_certificate {pki / 'client.crt'};",
         f'no "ssl_certificate_key" is defined for certificate "{pki / "client.crt"}"'),
        (f"{base} ssl_certificate {pki / 'nope.crt'}; ssl_certificate_key {pki / 'client.key'};",
         "nope.crt"),
        (f"{base} ssl_protocols TLSv1.4;", 'invalid value "TLSv1.4" in "ssl_protocols" directive'),
        (f"{base} ssl_verify maybe;", 'invalid value "maybe", it must be "on" or "off" in "ssl_verify" directive'),
        (f"{base} ssl_verify off; ssl_verify on;", '"ssl_verify" directive is duplicate'),
        (f"{base} ssl_verify_depth x;", 'in "ssl_verify_depth" directive'),
        (f"{base} ssl_ciphers NO-SUCH-CIPHER;", "SSL_CTX_set_cipher_list"),
        (f"{base} ssl_bogus 1;", 'unknown directive "ssl_bogus"'),
    ]
    for i, (block, message) in enumerate(cases):
        s = Server(tmp_path / f"c{i}", "server { listen 127.0.0.1:PORT; }\nredis r {\n" + block + "\n}")
        rc, err = s.test_config()
        assert rc == 1, err
        assert message in err, err
        assert "gatehouse.conf:" in err, err
