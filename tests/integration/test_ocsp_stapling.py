"""OCSP stapling fetched from the responder: "ssl_stapling on" without
"ssl_stapling_file", as nginx's.

A module-wide PKI made with the openssl command: a CA and leaf
certificates whose Authority Information Access names an OCSP responder
on loopback, one of them revoked. Responders answer with what "openssl
ocsp" makes of each request (one signing with the CA, one with a key
nobody trusts). Clients are "openssl s_client
-status": the first handshake of a worker starts the fetch and goes
without a staple, later ones get it.
"""

import base64
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import free_port, wait_for
from test_resolver import dnsmasq  # noqa: F401  (the fixture)

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"
    return r.stdout


class Pki:
    def __init__(self, d, responder_port, dead_port):
        self.d = Path(d)
        self.responder_port = responder_port
        self.dead_port = dead_port
        self.mallory_port = None

    def __getattr__(self, name):
        stem, _, ext = name.rpartition("_")
        return str(self.d / (f"{stem}.{ext}" if stem else name))


class RawResponder:
    """A TCP server on loopback that reads a request head and then does
    what `behave(conn, head)` does; it records when each connection ended."""

    def __init__(self, behave, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behave = behave
        self.accepted = 0
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.behave(conn, data)

    def close(self):
        self.sock.close()


def request_of(head):
    """The DER request of an OCSP GET's head (base64 in the path's last
    segment, RFC 6960 A.1)."""
    target = head.split(b" ", 2)[1].decode()
    return base64.b64decode(urllib.parse.unquote(target.rsplit("/", 1)[1]))


def send_response(conn, der):
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(der) + der)


def Responder(d, port, signer, key):
    """An OCSP responder on 127.0.0.1:`port`: each GET's request (base64
    in the path, RFC 6960 A.1) goes to "openssl ocsp -reqin ... -respout"
    run as a responder of the CA's index, signing with `signer`, and its
    DER answer goes back. ("openssl ocsp -port" would serve it itself, but
    OpenSSL 3.0's listens on every address.)"""
    lock = threading.Lock()  # one openssl at a time on the same files

    def answer(conn, head):
        with lock:
            req, resp = d / f"req{signer}.der", d / f"resp{signer}.der"
            req.write_bytes(request_of(head))
            openssl("ocsp", "-index", "index.txt", "-rsigner", signer, "-rkey", key, "-CA", "ca.crt",
                    "-ndays", "1", "-reqin", req.name, "-respout", resp.name, cwd=d)
            body = resp.read_bytes()
        send_response(conn, body)

    return RawResponder(answer, port)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("ocsp")
    d.chmod(0o755)
    o = lambda *a: openssl(*a, cwd=d)  # noqa: E731
    port, dead = free_port(), free_port()
    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
      "-out", "ca.crt", "-subj", "/CN=OCSP Test CA", "-days", "30",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, serial, aia_port):
        (d / f"{name}.ext").write_text(f"authorityInfoAccess = OCSP;URI:http://127.0.0.1:{aia_port}\n")
        o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
          "-out", f"{name}.csr", "-subj", f"/CN={name}.test")
        o("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", str(serial),
          "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt")

    leaf("good", 0x2001, port)
    leaf("revoked", 0x2002, port)
    leaf("elsewhere", 0x2003, dead)   # its AIA names a port nothing listens on
    (d / "noaia.ext").write_text("basicConstraints = CA:FALSE\n")
    o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "noaia.key",
      "-out", "noaia.csr", "-subj", "/CN=noaia.test")
    o("x509", "-req", "-in", "noaia.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "8196",
      "-days", "30", "-extfile", "noaia.ext", "-out", "noaia.crt")
    (d / "good_chain.crt").write_text((d / "good.crt").read_text() + (d / "ca.crt").read_text())
    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
      "mallory.key", "-out", "mallory.crt", "-subj", "/CN=mallory", "-days", "30")
    (d / "index.txt").write_text(
        "V\t301231000000Z\t\t2001\tunknown\t/CN=good.test\n"
        "R\t301231000000Z\t240101000000Z\t2002\tunknown\t/CN=revoked.test\n"
        "V\t301231000000Z\t\t2003\tunknown\t/CN=elsewhere.test\n")
    p = Pki(d, port, dead)
    good = Responder(d, port, "ca.crt", "ca.key")
    p.mallory_port = free_port()
    bad = Responder(d, p.mallory_port, "mallory.crt", "mallory.key")
    yield p
    good.close()
    bad.close()


def conf(server, http_extra=""):
    return f"""
worker_processes 1;
error_log logs/error.log info;
pid logs/gatehouse.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {http_extra}
    {server}
}}
"""


def server(pki, port, name, extra=""):
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {name}.test;
        ssl_certificate {getattr(pki, name + '_crt')};
        ssl_certificate_key {getattr(pki, name + '_key')};
        ssl_stapling on;
        ssl_trusted_certificate {pki.ca_crt};
        {extra}
        location / {{ return 200 "ok\\n"; }}
    }}
"""


def s_client(port, name="good"):
    """One handshake asking for a status and one request: what the client saw."""
    r = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", f"{name}.test",
                        "-status", "-ign_eof"],
                       input=f"GET / HTTP/1.0\r\nHost: {name}.test\r\n\r\n", capture_output=True, text=True,
                       timeout=30)
    return r.stdout


def stapled(port, name="good"):
    out = s_client(port, name)
    assert "HTTP/1.1 200" in out, out          # every handshake works, staple or not
    if "OCSP response: no response sent" in out:
        return None
    assert "OCSP Response Status: successful" in out, out
    return out


def error_log(gatehouse_prefix):
    p = Path(gatehouse_prefix / "logs" / "error.log")
    return p.read_text(errors="replace") if p.exists() else ""


def start(gatehouse, text, port):
    return gatehouse.start(text, ports=(port,), workers=1)


def wait_log(prefix, pattern, what):
    return wait_for(lambda: re.search(pattern, error_log(prefix)), what=what)


def wait_stapled(prefix, port, name="good"):
    """A handshake with a staple, once a fetch that an earlier one started
    is done; None if none comes in time (the error log is printed)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = stapled(port, name)
        if out:
            return out
        time.sleep(0.05)
    print(error_log(prefix))
    return None


# ---- stapled ----------------------------------------------------------------------------------

@pytest.mark.parametrize("verify", ["off", "on"])
def test_later_handshakes_get_the_responders_answer(gatehouse, prefix, pki, verify):
    port = free_port()
    start(gatehouse, conf(server(pki, port, "good", f"ssl_stapling_verify {verify};")), port)
    # The first handshake starts the fetch; a later one gets the staple.
    out = wait_stapled(prefix, port)
    assert "Cert Status: good" in out
    assert re.search(r"Next Update: ", out)
    assert "[crit]" not in error_log(prefix) and "[error]" not in error_log(prefix)


def test_issuer_from_the_chain_and_tls12(gatehouse, prefix, pki):
    port = free_port()
    text = server(pki, port, "good").replace(f"ssl_certificate {pki.good_crt};",
                                             f"ssl_certificate {pki.good_chain_crt};")
    text = text.replace(f"ssl_trusted_certificate {pki.ca_crt};", "")
    start(gatehouse, conf(text), port)

    def tls12():
        r = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "good.test",
                            "-status", "-tls1_2"], input="", capture_output=True, text=True, timeout=30)
        return "Cert Status: good" in r.stdout

    wait_for(tls12, what="a stapled response over TLS 1.2")


def test_responder_directive_overrides_the_aia(gatehouse, prefix, pki):
    port = free_port()
    # elsewhere.crt's AIA names a dead port; the directive names the live one.
    extra = f"ssl_stapling_responder http://127.0.0.1:{pki.responder_port}/;"
    start(gatehouse, conf(server(pki, port, "elsewhere", extra)), port)
    out = wait_stapled(prefix, port, "elsewhere")
    assert "Cert Status: good" in out


# ---- not stapled --------------------------------------------------------------------------------

def test_a_revoked_certificate_is_not_stapled(gatehouse, prefix, pki):
    port = free_port()
    start(gatehouse, conf(server(pki, port, "revoked")), port)
    assert stapled(port, "revoked") is None
    line = wait_log(prefix, r'\[error\] .*certificate status "revoked" in the OCSP response while requesting '
                            r'certificate status, responder: 127\.0\.0\.1, peer: 127\.0\.0\.1:\d+, '
                            r'certificate: ".*revoked\.crt"', "the revoked status logged")
    assert line
    # Handshakes go on without a staple (the next fetch is in 5 minutes).
    for _ in range(3):
        assert stapled(port, "revoked") is None


def test_an_untrusted_signer_is_refused_with_verify_only(gatehouse, prefix, pki):
    port, port2 = free_port(), free_port()
    responder = f"ssl_stapling_responder http://127.0.0.1:{pki.mallory_port};"
    text = conf(server(pki, port, "good", responder + " ssl_stapling_verify on;")
                + server(pki, port2, "good", responder + " ssl_stapling_verify off;").replace(
                    "server_name good.test;", "server_name good.test;"))
    gatehouse.start(text, ports=(port, port2), workers=1)
    assert stapled(port) is None
    wait_log(prefix, r"\[error\] .*OCSP_basic_verify\(\) failed", "the verification failure")
    assert stapled(port) is None
    # Without verify, the signature is checked, not who made it [nginx].
    out = wait_stapled(prefix, port2)
    assert "Cert Status: good" in out


def test_a_dead_responder_leaves_handshakes_working(gatehouse, prefix, pki):
    port = free_port()
    start(gatehouse, conf(server(pki, port, "elsewhere")), port)
    assert stapled(port, "elsewhere") is None
    wait_log(prefix, rf"\[error\] .*connect\(\) to 127\.0\.0\.1:{pki.dead_port} failed \(111: Connection refused\)"
                     r" while requesting certificate status", "the refused connection")
    for _ in range(3):
        assert stapled(port, "elsewhere") is None


def test_a_responder_answering_an_error_status(gatehouse, prefix, pki):
    # The responder URL is gatehouse's own plain port, which answers 404.
    port, plain = free_port(), free_port()
    text = conf(server(pki, port, "good", f"ssl_stapling_responder http://127.0.0.1:{plain}/ocsp;") + f"""
    server {{
        listen 127.0.0.1:{plain};
        location / {{ return 404; }}
    }}""")
    gatehouse.start(text, ports=(port, plain), workers=1)
    assert stapled(port) is None
    wait_log(prefix, r"\[error\] .*OCSP responder sent status 404 while requesting certificate status",
             "the 404 logged")
    assert stapled(port) is None


def test_a_name_without_a_resolver(gatehouse, prefix, pki):
    port = free_port()
    start(gatehouse, conf(server(pki, port, "good", "ssl_stapling_responder http://ocsp.invalid:8080;")), port)
    assert stapled(port) is None
    wait_log(prefix, r"\[error\] .*no resolver defined to resolve ocsp\.invalid while requesting certificate status",
             "the missing resolver")


def test_no_responder_url_is_a_warning(gatehouse, prefix, pki):
    port = free_port()
    g = start(gatehouse, conf(server(pki, port, "noaia")), port)
    # Said while the configuration is read, before the error log is open.
    assert re.search(r'\[warn\] "ssl_stapling" ignored, no OCSP responder URL in the certificate ".*noaia\.crt"',
                     g.stderr()), g.stderr()
    assert stapled(port, "noaia") is None


# ---- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("url,why", [
    ("https://ocsp.example.com/", "invalid URL prefix"),
    ("ocsp.example.com", "invalid URL prefix"),
    ("http://", "invalid URL prefix"),
    ("http:///path", "empty host"),
    ("http://ocsp.example.com:99999/", "invalid port"),
])
def test_bad_responder_urls_are_refused(cli, pki, url, why):
    port = free_port()
    text = conf(server(pki, port, "good", f"ssl_stapling_responder {url};"))
    r = cli.test_conf(text)
    assert r.returncode != 0
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "ssl_stapling_responder" in s)
    assert re.search(rf"\[emerg\] .*{re.escape(why)}.* in OCSP responder \"{re.escape(url)}\" in "
                     rf".*gatehouse\.conf:{line}", r.stderr), r.stderr


# ---- the exchange ---------------------------------------------------------------------------------

def test_a_responder_name_through_the_resolver(gatehouse, prefix, pki, dnsmasq):
    dns = dnsmasq({"ocsp.test": ["127.0.0.1"]})
    port = free_port()
    extra = f"ssl_stapling_responder http://ocsp.test:{pki.responder_port}/;"
    start(gatehouse, conf(server(pki, port, "good", extra), f"resolver 127.0.0.1:{dns.port};"), port)
    out = wait_stapled(prefix, port)
    assert out and "Cert Status: good" in out
    assert dns.queries() >= 1


def test_a_too_big_reply_is_refused(gatehouse, prefix, pki):
    def big(conn, head):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\n" + b"x" * 40000)

    r = RawResponder(big)
    try:
        port = free_port()
        start(gatehouse, conf(server(pki, port, "good", f"ssl_stapling_responder http://127.0.0.1:{r.port};")), port)
        assert stapled(port) is None
        wait_log(prefix, r"\[error\] .*OCSP responder sent too big response while requesting certificate status",
                 "the too big reply")
        assert stapled(port) is None
    finally:
        r.close()


def test_a_fetch_under_way_does_not_hold_a_retiring_worker(gatehouse, prefix, pki):
    """A responder that never answers: the fetch would wait 60 s, but a
    reload's graceful shutdown of the old worker ends it at once."""
    def hang(conn, head):
        try:
            conn.settimeout(60)
            if not conn.recv(1):
                r.closed_by_peer.set()
        except OSError:
            pass

    r = RawResponder(hang)
    try:
        port = free_port()
        g = start(gatehouse, conf(server(pki, port, "good", f"ssl_stapling_responder http://127.0.0.1:{r.port};")),
                  port)
        old = set(g.children())
        assert stapled(port) is None
        wait_for(lambda: r.accepted >= 1, what="the fetch's connection")
        t0 = time.monotonic()
        g.signal(signal.SIGHUP)
        assert r.closed_by_peer.wait(20), "the old worker kept its fetch"
        wait_for(lambda: not (old & set(g.children())), timeout=20, what="the old worker's exit")
        assert time.monotonic() - t0 < 20
    finally:
        r.close()
