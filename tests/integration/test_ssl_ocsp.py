"""Client certificates checked with OCSP: "ssl_ocsp", "ssl_ocsp_responder"
and "ssl_ocsp_cache", as nginx's.

A module-wide PKI made with the openssl command: a root CA, an
intermediate CA and client certificates it issued, whose Authority
Information Access names an OCSP responder on loopback (one of them
revoked, one naming a dead port). The responders answer with what
"openssl ocsp" makes of each request and count what they were asked.
Clients are curl, over HTTP/1.1 and HTTP/2, showing $ssl_client_verify
in a response header.
"""

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port
from test_ocsp_stapling import RawResponder, openssl, request_of, send_response

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(OPENSSL is None or CURL is None, reason="openssl or curl is not installed")

INT_SERIAL, GOOD_SERIAL, REVOKED_SERIAL, ELSEWHERE_SERIAL = 0x4001, 0x4101, 0x4102, 0x4103


def Responder(d, port, index):
    """An OCSP responder on 127.0.0.1:`port` answering from `index` (the
    intermediate's status signed by the root, the others' by the
    intermediate); `asked` lists the serial numbers asked about."""
    lock = threading.Lock()  # one openssl at a time on the same files

    def answer(conn, head):
        with lock:
            req, resp = d / f"req-{index}.der", d / f"resp-{index}.der"
            req.write_bytes(request_of(head))
            text = openssl("ocsp", "-reqin", req.name, "-req_text", cwd=d)
            serial = int(text.split("Serial Number:")[1].split()[0], 16)
            r.asked.append(serial)
            ca = "root" if serial == INT_SERIAL else "int"
            openssl("ocsp", "-index", index, "-rsigner", f"{ca}.crt", "-rkey", f"{ca}.key",
                    "-CA", f"{ca}.crt", "-ndays", "1", "-reqin", req.name, "-respout", resp.name, cwd=d)
            body = resp.read_bytes()
        send_response(conn, body)

    r = RawResponder(answer, port)
    r.asked = []
    return r


class Pki:
    def __init__(self, d):
        self.d = Path(d)

    def __getattr__(self, name):
        stem, _, ext = name.rpartition("_")
        return str(self.d / f"{stem}.{ext}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("sslocsp")
    d.chmod(0o755)
    o = lambda *a: openssl(*a, cwd=d)  # noqa: E731
    port, dead, other = free_port(), free_port(), free_port()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    o("req", "-x509", *ec, "-keyout", "root.key", "-out", "root.crt", "-subj", "/CN=OCSP Root", "-days", "30",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(name, ca, serial, ext):
        (d / f"{name}.ext").write_text(ext)
        o("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        o("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-set_serial",
          str(serial), "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt")

    aia = f"authorityInfoAccess = OCSP;URI:http://127.0.0.1:{port}\n"
    issue("int", "root", INT_SERIAL, "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
          + aia)
    issue("good", "int", GOOD_SERIAL, aia)
    issue("revoked", "int", REVOKED_SERIAL, aia)
    issue("elsewhere", "int", ELSEWHERE_SERIAL, f"authorityInfoAccess = OCSP;URI:http://127.0.0.1:{dead}\n")
    for name in ("good", "revoked", "elsewhere"):
        # What the client sends: its certificate and the intermediate.
        (d / f"{name}_chain.crt").write_text((d / f"{name}.crt").read_text() + (d / "int.crt").read_text())
    ends = ("V\t301231000000Z\t\t%X\tunknown\t/CN=good\n" % GOOD_SERIAL
            + "R\t301231000000Z\t240101000000Z\t%X\tunknown\t/CN=revoked\n" % REVOKED_SERIAL
            + "V\t301231000000Z\t\t%X\tunknown\t/CN=elsewhere\n" % ELSEWHERE_SERIAL)
    # "other.txt" does not know the intermediate: its status is "unknown".
    (d / "index.txt").write_text("V\t301231000000Z\t\t%X\tunknown\t/CN=int\n" % INT_SERIAL + ends)
    (d / "other.txt").write_text(ends)
    p = Pki(d)
    p.port, p.dead, p.other = port, dead, other
    p.main = Responder(d, port, "index.txt")
    p.second = Responder(d, other, "other.txt")
    yield p
    p.main.close()
    p.second.close()


def conf(pki, servers, http_extra=""):
    return f"""
worker_processes 2;
error_log logs/error.log info;
pid logs/gatehouse.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    ssl_certificate {pki.good_crt};
    ssl_certificate_key {pki.good_key};
    ssl_client_certificate {pki.root_crt};
    ssl_verify_client on;
    ssl_verify_depth 2;
    add_header X-Verify "$ssl_client_verify" always;
    {http_extra}
    {servers}
}}
"""


def server(port, extra, http2=False):
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        {"http2 on;" if http2 else ""}
        server_name localhost;
        {extra}
        location / {{ return 200 "ok\\n"; }}
    }}
"""


def get(pki, port, cert="good", http2=False):
    """(status, $ssl_client_verify, HTTP version) of a GET / with `cert`."""
    r = subprocess.run([CURL, "-sk", "-i", "--max-time", "20", "--http2" if http2 else "--http1.1",
                        "--cert", getattr(pki, cert + "_chain_crt"), "--key", getattr(pki, cert + "_key"),
                        f"https://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=30)
    head = r.stdout.split("\n\n", 1)[0].splitlines()  # text mode: CRLF read as LF
    assert head and head[0].startswith("HTTP/"), r.stdout + r.stderr
    verify = next((h.split(":", 1)[1].strip() for h in head if h.lower().startswith("x-verify:")), None)
    return int(head[0].split()[1]), verify, head[0].split()[0]


def start(gatehouse, text, *ports):
    return gatehouse.start(text, ports=ports, workers=2)


def error_log(prefix):
    p = Path(prefix / "logs" / "error.log")
    return p.read_text(errors="replace") if p.exists() else ""


# ---- the verdicts -----------------------------------------------------------------------------

@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_good_and_revoked(gatehouse, prefix, pki, http2):
    port = free_port()
    start(gatehouse, conf(pki, server(port, "ssl_ocsp leaf;", http2)), port)
    status, verify, version = get(pki, port, "good", http2)
    assert (status, verify) == (200, "SUCCESS")
    assert version == ("HTTP/2" if http2 else "HTTP/1.1")
    status, verify, _ = get(pki, port, "revoked", http2)
    assert (status, verify) == (400, "FAILED:certificate revoked")
    assert "client SSL certificate verify error: certificate revoked" in error_log(prefix)
    assert "[crit]" not in error_log(prefix)


def test_leaf_asks_about_the_client_only_and_on_about_the_chain(gatehouse, pki):
    leaf, chain = free_port(), free_port()
    start(gatehouse, conf(pki, server(leaf, "ssl_ocsp leaf;") + server(chain, "ssl_ocsp on;")), leaf, chain)
    before = len(pki.main.asked)
    assert get(pki, leaf)[:2] == (200, "SUCCESS")
    assert pki.main.asked[before:] == [GOOD_SERIAL]
    before = len(pki.main.asked)
    assert get(pki, chain)[:2] == (200, "SUCCESS")
    assert pki.main.asked[before:] == [GOOD_SERIAL, INT_SERIAL]


def test_responder_override_and_the_intermediates_status(gatehouse, pki):
    leaf, chain, dead = free_port(), free_port(), free_port()
    responder = f"ssl_ocsp_responder http://127.0.0.1:{pki.other}/ocsp;"
    start(gatehouse, conf(pki, server(leaf, "ssl_ocsp leaf; " + responder)
                          + server(chain, "ssl_ocsp on; " + responder)
                          + server(dead, f"ssl_ocsp leaf; ssl_ocsp_responder http://127.0.0.1:{pki.port};")),
          leaf, chain, dead)
    before = len(pki.second.asked)
    assert get(pki, leaf)[:2] == (200, "SUCCESS")
    assert pki.second.asked[before:] == [GOOD_SERIAL]
    # The second responder does not know the intermediate.
    assert get(pki, chain)[:2] == (400, "FAILED:certificate status unknown")
    # The AIA names a dead port; the directive a live responder.
    assert get(pki, dead, "elsewhere")[:2] == (200, "SUCCESS")


def test_a_dead_responder_fails_the_certificate(gatehouse, prefix, pki):
    port = free_port()
    start(gatehouse, conf(pki, server(port, "ssl_ocsp leaf;")), port)
    assert get(pki, port, "elsewhere")[:2] == (400, "FAILED:certificate status request failed")
    # The line names the client, though the loop writes it outside the
    # connection's context.
    assert re.search(rf"connect\(\) to 127\.0\.0\.1:{pki.dead} failed \(111: Connection refused\) while requesting "
                     r"certificate status, .*client: 127\.0\.0\.1, client certificate: ", error_log(prefix))


def test_no_check_without_the_directive_or_a_certificate(gatehouse, pki):
    plain, optional = free_port(), free_port()
    start(gatehouse, conf(pki, server(plain, "") + server(optional, "ssl_ocsp on; ssl_verify_client optional;")),
          plain, optional)
    before = len(pki.main.asked)
    assert get(pki, plain, "revoked")[:2] == (200, "SUCCESS")
    r = subprocess.run([CURL, "-sk", "-i", f"https://127.0.0.1:{optional}/"], capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.startswith("HTTP/1.1 200") and "X-Verify: NONE" in r.stdout, r.stdout
    assert pki.main.asked[before:] == []


# ---- the cache --------------------------------------------------------------------------------

@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_the_cache_spares_the_responder(gatehouse, pki, http2):
    cached, uncached = free_port(), free_port()
    start(gatehouse, conf(pki, server(cached, "ssl_ocsp on; ssl_ocsp_cache shared:OCSP:1m;", http2)
                          + server(uncached, "ssl_ocsp leaf;", http2)), cached, uncached)
    before = len(pki.main.asked)
    assert get(pki, cached, http2=http2)[:2] == (200, "SUCCESS")
    assert len(pki.main.asked) == before + 2
    # Later connections (to either worker): from the cache.
    for _ in range(4):
        assert get(pki, cached, http2=http2)[:2] == (200, "SUCCESS")
    assert len(pki.main.asked) == before + 2
    # A revoked status is kept too.
    assert get(pki, cached, "revoked", http2)[:2] == (400, "FAILED:certificate revoked")
    asked = len(pki.main.asked)
    assert get(pki, cached, "revoked", http2)[:2] == (400, "FAILED:certificate revoked")
    assert len(pki.main.asked) == asked
    # Without a cache, each connection asks.
    before = len(pki.main.asked)
    get(pki, uncached)
    get(pki, uncached)
    assert len(pki.main.asked) == before + 2


# ---- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("directive,why", [
    ("ssl_ocsp maybe;", r'invalid value "maybe"'),
    ("ssl_ocsp_responder https://ocsp.example.com/;", r'invalid URL prefix in OCSP responder'),
    ("ssl_ocsp_cache shared:OCSP;", r'invalid OCSP cache "shared:OCSP"'),
    ("ssl_ocsp_cache shared:OCSP:1k;", r'OCSP cache "OCSP" is too small'),
    ("ssl_ocsp on; ssl_verify_client optional_no_ca;", r'"ssl_ocsp" is incompatible with "ssl_verify_client '
                                                       r'optional_no_ca"'),
])
def test_bad_settings_are_refused(cli, pki, directive, why):
    r = cli.test_conf(conf(pki, server(free_port(), directive)))
    assert r.returncode != 0
    assert why in r.stderr or __import__("re").search(why, r.stderr), r.stderr


# ---- waiting --------------------------------------------------------------------------------

def test_a_hanging_responder_holds_only_its_connection(gatehouse, prefix, pki):
    """The check waits on the loop: other connections are served
    meanwhile, and client_header_timeout ends the waiting one."""
    hang = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepted by the kernel, never answered
    try:
        waiting, other = free_port(), free_port()
        text = conf(pki, server(waiting, f"ssl_ocsp leaf; ssl_ocsp_responder http://127.0.0.1:"
                                         f"{hang.getsockname()[1]}; client_header_timeout 2s;")
                    + server(other, "ssl_ocsp leaf;")).replace("worker_processes 2;", "worker_processes 1;")
        gatehouse.start(text, ports=(waiting, other), workers=1)
        t0 = time.monotonic()
        slow = subprocess.Popen([CURL, "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                                 "--cert", pki.good_chain_crt, "--key", pki.good_key, f"https://127.0.0.1:{waiting}/"],
                                stdout=subprocess.PIPE, text=True)
        # One worker: this is answered while the other connection waits.
        assert get(pki, other)[:2] == (200, "SUCCESS")
        out, _ = slow.communicate(timeout=30)
        assert out == "000"  # closed without a response
        assert 1.5 < time.monotonic() - t0 < 15
        assert "[crit]" not in error_log(prefix)
    finally:
        hang.close()
