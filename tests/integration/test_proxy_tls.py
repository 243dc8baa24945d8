"""proxy_pass https://: TLS from the proxy to origins.

The origin is a Python TLS server (the ssl module) with a certificate made
by the openssl command for the test: it records, per connection, the SNI
name the proxy sent, whether the session was resumed and the client
certificate, then answers HTTP like origins.py's ok_handler (with the body
length and digest of what it received). Every socket has a timeout.
"""

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from gh_server import poll, server  # noqa: F401  (server: the fixture)
from origins import Closed, Reader, read_request, response
from test_proxy import error_lines, request, start

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    o = lambda *a: openssl(*a, cwd=d)  # noqa: E731
    for ca, cn in (("ca", "Gatehouse Origin CA"), ("other", "Some Other CA")):
        o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN={cn}", "-days", "30",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, cn, san=None):
        o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
          "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        args = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "30", "-out", f"{name}.crt"]
        if san:
            (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
            args += ["-extfile", f"{name}.ext"]
        o(*args)

    leaf("origin", "origin.test", "DNS:origin.test,IP:127.0.0.1")
    leaf("client", "client1")
    return Path(d)


class Conn:
    """What the origin saw of one TLS connection."""

    def __init__(self):
        self.sni = None
        self.reused = None
        self.peer_cn = None
        self.cipher = None


class TlsOrigin:
    def __init__(self, pki, client_ca=False, timeout=10.0):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(pki / "origin.crt"), str(pki / "origin.key"))
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(str(pki / "ca.crt"))
        self.ctx.sni_callback = self._sni
        self.timeout = timeout
        self.conns = []  # Conn, for each completed handshake
        self.handshakes_failed = 0
        self.requests = []
        self.lock = threading.Lock()
        self._snis = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.stopping = False
        self.socks = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _sni(self, sslobj, name, ctx):
        with self.lock:
            self._snis[id(sslobj)] = name

    def _accept(self):
        while not self.stopping:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            raw.settimeout(self.timeout)
            with self.lock:
                self.socks.append(raw)
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            with self.lock:
                self.threads.append(t)

    def _serve(self, raw):
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            with self.lock:
                self.handshakes_failed += 1
            raw.close()
            return
        with self.lock:
            self.socks.append(s)  # raw is detached now: stop() needs this one
        c = Conn()
        c.reused = s.session_reused
        c.cipher = s.cipher()[0]
        cert = s.getpeercert()
        if cert:
            c.peer_cn = dict(x[0] for x in cert["subject"]).get("commonName")
        with self.lock:
            # The callback is given the SSLSocket being handshaken.
            c.sni = self._snis.pop(id(s), None)
            self.conns.append(c)
        reader = Reader(s)
        try:
            while not self.stopping:
                req = read_request(reader)
                if req is None:
                    break
                with self.lock:
                    self.requests.append(req)
                body = (f"{req.method} {req.target} {len(req.body)} "
                        f"{hashlib.sha256(req.body).hexdigest()}\n").encode()
                close = (req.header("Connection") or "").lower() == "close"
                s.sendall(response(200, body, close=close))
                if close:
                    break
        except (Closed, OSError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in list(self.threads):
            t.join(5)


@pytest.fixture
def tls_origin(pki):
    made = []

    def make(**kw):
        o = TlsOrigin(pki, **kw)
        made.append(o)
        return o

    yield make
    for o in made:
        o.stop()


def proxied(server, location, pki, extra=""):
    """A server on PORT whose "location /" has `location`; paths in it may
    say PKI for the certificates' directory."""
    return start(server, f"""
    server {{
        listen 127.0.0.1:PORT;
        location / {{
            {location.replace("PKI", str(pki))}
        }}
    }}
    {extra}
    """)


def test_get_and_post_through_tls(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"proxy_pass https://127.0.0.1:{o.port};", pki)
    r = request(s.port, "/a?x=1")
    assert r.status == 200
    assert r.body.startswith(b"GET /a?x=1 0 ")
    # A body larger than client_body_buffer_size goes from a temp file.
    for body in (b"hello", bytes(range(256)) * 1000):
        r = request(s.port, "/up", method="POST", body=body)
        assert r.status == 200, s.error_log()
        digest = hashlib.sha256(body).hexdigest()
        assert r.body == f"POST /up {len(body)} {digest}\n".encode()
    assert o.requests[0].header("Host") == f"127.0.0.1:{o.port}"


def test_sni_only_when_proxy_ssl_server_name_on(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"proxy_pass https://127.0.0.1:{o.port};", pki, extra=f"""
    server {{
        listen 127.0.0.1:PORT;
        server_name sni.test;
        location / {{
            proxy_ssl_server_name on;
            proxy_ssl_name origin.test;
            proxy_pass https://127.0.0.1:{o.port};
        }}
    }}""")
    assert request(s.port, "/off").status == 200
    assert request(s.port, "/on", host="sni.test").status == 200
    assert poll(lambda: len(o.conns) == 2)
    assert [c.sni for c in o.conns] == [None, "origin.test"]


def test_default_sni_is_the_proxy_host_without_port(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, "proxy_ssl_server_name on; proxy_pass https://origin/;", pki, extra=f"""
    upstream origin {{ server 127.0.0.1:{o.port}; }}""")
    assert request(s.port, "/x").status == 200
    assert poll(lambda: len(o.conns) == 1)
    assert o.conns[0].sni == "origin"


def test_a_port_in_proxy_ssl_name_is_left_out(server, tls_origin, pki):
    # $http_host may carry a port; as in nginx, it is not part of the name.
    o = tls_origin()
    s = proxied(server, f"proxy_ssl_server_name on; proxy_ssl_name $http_host; "
                        f"proxy_pass https://127.0.0.1:{o.port};", pki)
    assert request(s.port, "/x", host="origin.test:8443").status == 200
    assert poll(lambda: len(o.conns) == 1)
    assert o.conns[0].sni == "origin.test"


def test_verify_with_the_right_ca_and_name(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"""
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate PKI/ca.crt;
        proxy_ssl_name origin.test;
        proxy_pass https://127.0.0.1:{o.port};""", pki)
    assert request(s.port, "/v").status == 200
    # The IP literal of $proxy_host is checked against the IP names.
    s2 = proxied(server, f"""
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate PKI/ca.crt;
        proxy_pass https://127.0.0.1:{o.port};""", pki)
    assert request(s2.port, "/v").status == 200


@pytest.mark.parametrize("settings", [
    "proxy_ssl_trusted_certificate PKI/ca.crt; proxy_ssl_name wrong.test;",
    "proxy_ssl_trusted_certificate PKI/other.crt; proxy_ssl_name origin.test;",
])
def test_verify_failure_is_a_502_with_the_reason(server, tls_origin, pki, settings):
    o = tls_origin()
    s = proxied(server, f"proxy_ssl_verify on; {settings} proxy_pass https://127.0.0.1:{o.port};", pki)
    r = request(s.port, "/v")
    assert r.status == 502
    lines = error_lines(s, r"SSL_do_handshake\(\) failed")
    assert lines, s.error_log()
    assert re.search(r"\[error\].*SSL_do_handshake\(\) failed \(SSL: .*certificate verify failed.*\) "
                     r"while SSL handshaking to upstream, .*upstream: \"https://127\.0\.0\.1:%d/v\"" % o.port,
                     lines[0]), lines[0]
    assert not o.requests


class PlainOrigin:
    """Answers every connection with plain HTTP at once: a TLS handshake
    with it fails."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            c.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def test_handshake_failure_goes_to_the_next_upstream(server, tls_origin, pki):
    plain = PlainOrigin()
    try:
        o = tls_origin()
        s = proxied(server, "proxy_pass https://both;", pki, extra=f"""
        upstream both {{ server {plain.addr}; server 127.0.0.1:{o.port}; }}
        log_format up "$upstream_addr $upstream_status";
        access_log logs/up.log up;""")
        r = request(s.port, "/n")
        assert r.status == 200
        assert r.body.startswith(b"GET /n ")
        line = s.wait_lines("up.log", 1)[0].decode()
        assert line.strip() == f"{plain.addr}, 127.0.0.1:{o.port} 502, 200"
        assert error_lines(s, r"while SSL handshaking to upstream"), s.error_log()
    finally:
        plain.stop()


def test_client_certificate(server, tls_origin, pki):
    o = tls_origin(client_ca=True)
    s = proxied(server, f"""
        proxy_ssl_certificate PKI/client.crt;
        proxy_ssl_certificate_key PKI/client.key;
        proxy_pass https://127.0.0.1:{o.port};""", pki)
    assert request(s.port, "/c").status == 200
    assert o.conns[0].peer_cn == "client1"
    # Without one, the origin refuses.
    s2 = proxied(server, f"proxy_pass https://127.0.0.1:{o.port};", pki)
    assert request(s2.port, "/c").status == 502
    assert len(o.requests) == 1


def test_client_certificate_chosen_per_request(server, tls_origin, pki, tmp_path):
    # "proxy_ssl_certificate $var" [nginx 1.21]: read for each connection;
    # an empty value sends none, "" cancels an inherited one, and a file
    # that cannot be read is the proxy's fault (500), not the origin's.
    o = tls_origin(client_ca=True)
    o.ctx.verify_mode = ssl.CERT_OPTIONAL
    # The workers read the files, as another user when the tests run as
    # root: a directory they may enter (tmp_path, conftest.py).
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o755)
    for name in ("client.crt", "client.key"):
        shutil.copy(pki / name, certs / name)
        os.chmod(certs / name, 0o644)
    s = proxied(server, f"""
        proxy_ssl_certificate {certs}/$arg_c.crt;
        proxy_ssl_certificate_key {certs}/$arg_c.key;
        proxy_pass https://127.0.0.1:{o.port};
        location /none/ {{
            proxy_ssl_certificate "";
            proxy_ssl_certificate_key "";
            proxy_pass https://127.0.0.1:{o.port};
        }}
        location /empty/ {{
            proxy_ssl_certificate $arg_c;
            proxy_ssl_certificate_key $arg_c;
            proxy_pass https://127.0.0.1:{o.port};
        }}""", pki)
    assert request(s.port, "/v?c=client").status == 200, s.error_log()
    assert request(s.port, "/none/x").status == 200
    assert request(s.port, "/empty/x").status == 200
    assert [c.peer_cn for c in o.conns] == ["client1", None, None]
    assert request(s.port, "/v?c=missing").status == 500
    assert len(o.requests) == 3
    assert 'missing.crt' in s.error_log()


def test_sessions_are_resumed_on_new_connections(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"proxy_pass https://127.0.0.1:{o.port};", pki)
    for i in range(3):
        assert request(s.port, f"/{i}").status == 200
    assert poll(lambda: len(o.conns) == 3)
    assert [c.reused for c in o.conns] == [False, True, True]


def test_session_reuse_off(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"proxy_ssl_session_reuse off; proxy_pass https://127.0.0.1:{o.port};", pki)
    for i in range(2):
        assert request(s.port, f"/{i}").status == 200
    assert poll(lambda: len(o.conns) == 2)
    assert [c.reused for c in o.conns] == [False, False]


def test_keepalive_pools_the_tls_connection(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, """
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass https://pooled;""", pki, extra=f"""
    upstream pooled {{ server 127.0.0.1:{o.port}; keepalive 4; }}""")
    for i in range(4):
        r = request(s.port, f"/{i}")
        assert r.status == 200
        assert r.body.startswith(f"GET /{i} ".encode())
    assert len(o.conns) == 1
    assert len(o.requests) == 4


def test_protocols_and_ciphers(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"""
        proxy_ssl_protocols TLSv1.2;
        proxy_ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
        proxy_pass https://127.0.0.1:{o.port};""", pki)
    assert request(s.port, "/p").status == 200


@pytest.mark.parametrize("conf,message", [
    ("proxy_ssl_verify on; proxy_pass https://127.0.0.1:1;",
     "no proxy_ssl_trusted_certificate for proxy_ssl_verify"),
    ("proxy_ssl_certificate PKI/client.crt; proxy_pass https://127.0.0.1:1;",
     'no "proxy_ssl_certificate_key" is defined'),
    ("proxy_ssl_protocols TLSv1.4; proxy_pass https://127.0.0.1:1;", 'invalid value "TLSv1.4"'),
    ("proxy_ssl_ciphers NO-SUCH-CIPHER; proxy_pass https://127.0.0.1:1;", "SSL_CTX_set_cipher_list"),
    ("proxy_ssl_verify on; proxy_ssl_trusted_certificate PKI/none.crt; proxy_pass https://127.0.0.1:1;",
     "none.crt"),
])
def test_config_errors(server, pki, conf, message):
    s = server("server {\n listen 127.0.0.1:PORT;\n location / {\n" + conf.replace("PKI", str(pki)) + "\n}\n}\n",
               start=False)
    code, err = s.test_config()
    assert code != 0
    assert message in err, err
    assert re.search(r"gatehouse\.conf:\d+", err), err


# ---- more proxy_ssl_* (nginx compatibility) -------------------------------------------------


def crl(pki, name, revoked_serial=None):
    """A CRL of the origin CA, revoking the certificate with that serial."""
    line = f"R\t301231000000Z\t240101000000Z\t{revoked_serial}\tunknown\t/CN=x\n" if revoked_serial else ""
    (pki / f"{name}.idx").write_text(line)
    (pki / f"{name}.cnf").write_text(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {name}.idx\ndefault_md = sha256\n"
                                     "default_crl_days = 30\n")
    openssl("ca", "-gencrl", "-config", f"{name}.cnf", "-keyfile", "ca.key", "-cert", "ca.crt",
            "-out", f"{name}.crl", cwd=pki)
    return pki / f"{name}.crl"


def test_crl_refuses_a_revoked_origin(server, tls_origin, pki):
    o = tls_origin()
    serial = subprocess.run([OPENSSL, "x509", "-in", str(pki / "origin.crt"), "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout.strip().split("=")[1]
    revoking, clean = crl(pki, "revoking", serial), crl(pki, "clean")
    base = f"""proxy_ssl_verify on; proxy_ssl_trusted_certificate PKI/ca.crt; proxy_ssl_name origin.test;
        proxy_pass https://127.0.0.1:{o.port};"""
    s = proxied(server, base + f" proxy_ssl_crl {clean};", pki)
    assert request(s.port, "/ok").status == 200
    s2 = proxied(server, base + f" proxy_ssl_crl {revoking};", pki)
    r = request(s2.port, "/revoked")
    assert r.status == 502
    assert error_lines(s2, r"certificate revoked")


def test_encrypted_client_key_with_a_password_file(server, tls_origin, pki):
    o = tls_origin(client_ca=True)
    openssl("pkey", "-in", "client.key", "-aes256", "-passout", "pass:p4ss", "-out", "client_enc.key", cwd=pki)
    (pki / "client.pass").write_text("nope\np4ss\n")
    s = proxied(server, f"""
        proxy_ssl_certificate PKI/client.crt;
        proxy_ssl_certificate_key PKI/client_enc.key;
        proxy_ssl_password_file PKI/client.pass;
        proxy_pass https://127.0.0.1:{o.port};""", pki)
    assert request(s.port, "/c").status == 200
    assert o.conns[0].peer_cn == "client1"


def test_conf_command_to_origins(server, tls_origin, pki):
    o = tls_origin()
    s = proxied(server, f"""
        proxy_ssl_protocols TLSv1.3;
        proxy_ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256;
        proxy_pass https://127.0.0.1:{o.port};""", pki)
    assert request(s.port, "/c").status == 200
    assert poll(lambda: o.conns)
    assert o.conns[0].cipher == "TLS_CHACHA20_POLY1305_SHA256"


def test_key_log_to_origins_matches_the_origins_own(server, tls_origin, pki, tmp_path):
    # The origin (Python's ssl, keylog_filename) and the proxy log the same
    # secrets for the connection between them.
    o = tls_origin()
    origin_log = tmp_path / "origin-keys.log"
    o.ctx.keylog_filename = str(origin_log)
    ours = tmp_path / "proxy-keys.log"
    s = proxied(server, f"proxy_pass https://127.0.0.1:{o.port}; proxy_ssl_key_log {ours};", pki)
    assert request(s.port, "/k").status == 200
    theirs = [line for line in origin_log.read_text().splitlines() if line and not line.startswith("#")]
    assert theirs and sorted(ours.read_text().splitlines()) == sorted(theirs)
