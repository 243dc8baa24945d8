"""TLS termination: "listen ... ssl" and the ssl_* directives, as a client
sees them.

A module-wide PKI is made once with the openssl command: a CA, RSA and
ECDSA certificates for a.test, an RSA one for b.test, client certificates
(one from the CA, one self-signed) and an OCSP response for a.test's RSA
certificate. Clients are Python's ssl module and "openssl s_client"; each
test starts its own master on a free port and checks what comes back:
the certificate served, the protocol, the session reuse, the status and
the body (which prints the $ssl_* variables).
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, free_port, process_state, wait_for
from test_proxy import read_reply

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")

# What every test location answers: the TLS facts of the connection and
# the worker's pid.
VARS = ("$scheme|$https|$ssl_protocol|$ssl_cipher|$ssl_server_name|$ssl_session_reused|"
        "$ssl_alpn_protocol|$ssl_client_verify|$ssl_client_s_dn|$pid")


def openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"
    return r.stdout


class Pki:
    def __init__(self, d):
        self.d = Path(d)

    def __getattr__(self, name):
        # pki.ca_crt -> /dir/ca.crt; pki.passwords -> /dir/passwords
        stem, _, ext = name.rpartition("_")
        return str(self.d / (f"{stem}.{ext}" if stem else name))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    o = lambda *a: openssl(*a, cwd=d)  # noqa: E731
    o("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
      "-subj", "/CN=Gatehouse Test CA", "-days", "30",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, subj, serial, key_args):
        if key_args == "ec":
            o("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
            o("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
        else:
            o("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
              "-subj", subj)
        o("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", str(serial),
          "-days", "30", "-out", f"{name}.crt")

    leaf("a_rsa", "/CN=a.test/OU=rsa", 0x1001, "rsa")
    leaf("a_ec", "/CN=a.test/OU=ecdsa", 0x1002, "ec")
    leaf("b", "/CN=b.test", 0x1003, "ec")
    leaf("client", "/CN=client1/O=Gatehouse Tests", 0x1004, "ec")
    # A client certificate no configured CA vouches for.
    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "mallory.key",
      "-out", "mallory.crt", "-subj", "/CN=mallory", "-days", "30")
    # b.test's key, encrypted, and the file with its password.
    o("pkey", "-in", "b.key", "-aes256", "-passout", "pass:s3cret", "-out", "b_enc.key")
    (d / "passwords").write_text("wrong\ns3cret\n")
    # An OCSP response saying a.test's RSA certificate is good, signed by
    # the CA, and one signed by mallory.
    (d / "index.txt").write_text("V\t301231000000Z\t\t1001\tunknown\t/CN=a.test/OU=rsa\n")
    o("ocsp", "-issuer", "ca.crt", "-cert", "a_rsa.crt", "-no_nonce", "-reqout", "req.der")
    o("ocsp", "-index", "index.txt", "-rsigner", "ca.crt", "-rkey", "ca.key", "-CA", "ca.crt",
      "-reqin", "req.der", "-respout", "ocsp.der", "-ndays", "1")
    o("ocsp", "-index", "index.txt", "-rsigner", "mallory.crt", "-rkey", "mallory.key", "-CA", "ca.crt",
      "-reqin", "req.der", "-respout", "ocsp_bad.der", "-ndays", "1")
    # A client certificate the CA revoked, and the CRL saying so.
    leaf("revoked", "/CN=revoked/O=Gatehouse Tests", 0x1005, "ec")
    (d / "crl_index.txt").write_text("R\t301231000000Z\t240101000000Z\t1005\tunknown\t/CN=revoked\n")
    (d / "ca.cnf").write_text("[ca]\ndefault_ca = d\n[d]\ndatabase = crl_index.txt\ndefault_md = sha256\n"
                              "default_crl_days = 30\n")
    o("ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt", "-out", "ca.crl")
    # DH parameters of a named group: instant, unlike "openssl dhparam".
    o("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_param:ffdhe2048", "-out", "dh.pem")
    # X9.42 ones, as "openssl dhparam -dsaparam" writes (an RFC 5114 group: instant too).
    o("genpkey", "-genparam", "-algorithm", "DHX", "-pkeyopt", "dh_rfc5114:2", "-out", "dhx.pem")
    (d / "ticket80.key").write_bytes(os.urandom(80))
    (d / "ticket48.key").write_bytes(os.urandom(48))
    (d / "ticket_short.key").write_bytes(os.urandom(20))
    return Pki(d)


def conf(http, workers=1):
    return f"""
worker_processes {workers};
error_log logs/error.log info;
pid logs/gatehouse.pid;
events {{ worker_connections 256; }}
http {{
    access_log logs/access.log;
{http}
}}
"""


def two_servers(pki, port, extra_a="", extra_b="", http_extra=""):
    """a.test (RSA and ECDSA, the default server) and b.test on one port."""
    return f"""
    {http_extra}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name a.test;
        ssl_certificate {pki.a_rsa_crt};
        ssl_certificate_key {pki.a_rsa_key};
        ssl_certificate {pki.a_ec_crt};
        ssl_certificate_key {pki.a_ec_key};
        {extra_a}
        location / {{ return 200 "a|{VARS}"; }}
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name b.test;
        ssl_certificate {pki.b_crt};
        ssl_certificate_key {pki.b_key};
        {extra_b}
        location / {{ return 200 "b|{VARS}"; }}
    }}
"""


def client_ctx(pki=None, version=None, ciphers=None, alpn=None, cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if pki:
        ctx.load_verify_locations(pki.ca_crt)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if version == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


class Reply:
    def __init__(self, raw, tls):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.status_line = lines[0]
        self.headers = {}
        for line in lines[1:]:
            n, _, v = line.partition(":")
            self.headers[n.strip().lower()] = v.strip()
        self.text = self.body.decode("latin-1")
        self.fields = self.text.split("|")
        self.tls = tls

    def var(self, i):
        return self.fields[i]


def get(port, ctx, sni="a.test", path="/", host=None, session=None, request=None):
    """One request on a fresh TLS connection (Connection: close); the
    reply, with .tls holding what the handshake gave."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        # Without suppressing ragged EOFs, a close without close_notify
        # fails the read: the server must end TLS properly.
        with ctx.wrap_socket(raw, server_hostname=sni, session=session, suppress_ragged_eofs=False) as s:
            data = request or (f"GET {path} HTTP/1.1\r\nHost: {host or sni or 'x'}\r\n"
                               "Connection: close\r\n\r\n").encode()
            s.sendall(data)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
            info = {
                "version": s.version(),
                "cipher": s.cipher()[0],
                "cert": s.getpeercert() if ctx.verify_mode != ssl.CERT_NONE else None,
                "session": s.session,
                "reused": s.session_reused,
                "alpn": s.selected_alpn_protocol(),
            }
    return Reply(b"".join(chunks), info)


def subject(cert):
    return {k: v for rdn in cert["subject"] for k, v in rdn}


def start(gatehouse, text, port, workers=1):
    return gatehouse.start(text, ports=(port,), workers=workers)


# ---- handshakes, SNI, certificates -------------------------------------------------

@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_handshake_and_variables(gatehouse, pki, version):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    r = get(port, client_ctx(pki, version=version))
    assert r.status == 200
    assert r.tls["version"] == f"TLSv{version}"
    f = r.fields
    assert f[0] == "a"
    assert f[1:4] == ["https", "on", f"TLSv{version}"]
    assert f[4] == r.tls["cipher"]
    assert f[5] == "a.test"
    assert f[6] == "."            # a new session
    assert f[7] == ""             # no ALPN offered
    assert f[8] == "NONE"         # no client certificate
    assert f[9] == ""


def test_sni_chooses_the_certificate_and_host_the_server(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    ctx = client_ctx(pki)
    a = get(port, ctx, sni="a.test")
    b = get(port, ctx, sni="b.test")
    assert subject(a.tls["cert"])["commonName"] == "a.test"
    assert subject(b.tls["cert"])["commonName"] == "b.test"
    assert a.var(0) == "a" and b.var(0) == "b"
    assert b.var(5) == "b.test"
    # SNI chooses the certificate; the Host header, as ever, the server.
    mixed = get(port, ctx, sni="b.test", host="a.test")
    assert subject(mixed.tls["cert"])["commonName"] == "b.test"
    assert mixed.var(0) == "a"
    # SNI is matched as server_name is: case and a trailing dot do not count.
    assert subject(get(port, ctx, sni="B.Test.").tls["cert"])["commonName"] == "b.test"


def test_certificate_names_with_variables_are_evaluated_at_each_handshake(gatehouse, pki):
    # nginx 1.15.9: the files are found per handshake from the values of
    # the variables then (here the SNI name through a map), relative to
    # the configuration's directory; an encrypted key is tried with
    # ssl_password_file's passwords. The worker reads them: they must be
    # readable by its user.
    port = free_port()
    d = gatehouse.prefix.conf_dir
    for f in ("a_rsa.crt", "a_rsa.key", "b.crt", "b_enc.key"):
        shutil.copy(pki.d / f, d / f)
        os.chmod(d / f, 0o644)
    g = start(gatehouse, conf(f"""
        map $ssl_server_name $leaf {{ a.test a_rsa; b.test b; default missing; }}
        map $ssl_server_name $key {{ b.test b_enc; default $leaf; }}
        server {{
            listen 127.0.0.1:{port} ssl;
            server_name _;
            ssl_certificate $leaf.crt;
            ssl_certificate_key $key.key;
            ssl_password_file {pki.passwords};
            location / {{ return 200 "$ssl_server_name"; }}
        }}
    """), port)
    ctx = client_ctx(pki)
    a = get(port, ctx, sni="a.test")
    b = get(port, ctx, sni="b.test")
    assert subject(a.tls["cert"])["commonName"] == "a.test"
    assert subject(b.tls["cert"])["commonName"] == "b.test"
    assert (a.status, a.body, b.body) == (200, b"a.test", b"b.test")
    # No file for the name: the handshake fails and the log says why.
    with pytest.raises(ssl.SSLError):
        get(port, ctx, sni="c.test")
    log = g.prefix.path / "logs" / "error.log"
    line = wait_for(lambda: next((ln for ln in log.read_text().splitlines() if "missing.crt" in ln), None),
                    what="the missing certificate logged")
    assert f'cannot load certificate "{d}/missing.crt"' in line and "while SSL handshaking" in line, line


def test_no_sni_or_unknown_name_gets_the_default_server(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port, extra_b="")), port)
    ctx = client_ctx(pki)
    r = get(port, ctx, sni=None, host="whatever")
    assert subject(r.tls["cert"])["commonName"] == "a.test"
    assert r.var(0) == "a" and r.var(5) == ""
    r = get(port, ctx, sni="unknown.test")
    assert subject(r.tls["cert"])["commonName"] == "a.test"
    assert r.var(5) == "unknown.test"


def test_default_server_flag_decides_without_sni(gatehouse, pki):
    port = free_port()
    text = two_servers(pki, port).replace(f"listen 127.0.0.1:{port} ssl;\n        server_name b.test",
                                          f"listen 127.0.0.1:{port} ssl default_server;\n        server_name b.test")
    start(gatehouse, conf(text), port)
    r = get(port, client_ctx(pki), sni=None)
    assert subject(r.tls["cert"])["commonName"] == "b.test"


@pytest.mark.parametrize("cipher,ou", [("ECDHE-RSA-AES128-GCM-SHA256", "rsa"),
                                       ("ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa")])
def test_rsa_or_ecdsa_by_what_the_client_offers(gatehouse, pki, cipher, ou):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    r = get(port, client_ctx(pki, version="1.2", ciphers=cipher))
    assert r.status == 200
    assert subject(r.tls["cert"])["organizationalUnitName"] == ou
    assert r.var(4) == cipher


def test_protocols_and_ciphers(gatehouse, pki):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_protocols TLSv1.2; ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384; "
                                             "ssl_prefer_server_ciphers on; ssl_ecdh_curve secp384r1:prime256v1;")
    start(gatehouse, conf(http), port)
    r = get(port, client_ctx(pki))
    assert r.tls["version"] == "TLSv1.2"
    assert r.tls["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    with pytest.raises(ssl.SSLError):
        get(port, client_ctx(pki, version="1.3"))


def test_tls13_only(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port, http_extra="ssl_protocols TLSv1.3;")), port)
    assert get(port, client_ctx(pki)).tls["version"] == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        get(port, client_ctx(pki, version="1.2"))


def test_conf_command(gatehouse, pki):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256;")
    start(gatehouse, conf(http), port)
    assert get(port, client_ctx(pki, version="1.3")).tls["cipher"] == "TLS_CHACHA20_POLY1305_SHA256"


def test_alpn(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    r = get(port, client_ctx(pki, alpn=["h2", "http/1.1"]))
    assert r.tls["alpn"] == "http/1.1"
    assert r.var(7) == "http/1.1"
    # Nothing this server speaks: refused (RFC 7301 3.2).
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        get(port, client_ctx(pki, alpn=["h2"]))


def test_keepalive_and_pipelining_over_tls(gatehouse, pki):
    # Four requests in one TLS record: the later ones wait in OpenSSL's
    # buffer, where no epoll event announces them.
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    req = b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n" * 3
    req += b"GET /4 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n"
    r = get(port, client_ctx(pki), request=req)
    assert r.raw.count(b"HTTP/1.1 200 OK\r\n") == 4
    assert r.raw.split(b"\r\n\r\n")[-1].startswith(b"b|https|on|")


def test_requests_in_separate_records_read_together_are_all_answered(gatehouse, pki):
    # Each request in its own TLS record, sent back to back: one read()
    # (read-ahead) may take them all, and the later records then wait in
    # OpenSSL's buffer with the socket drained.
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        with client_ctx(pki).wrap_socket(raw, server_hostname="a.test") as s:
            for i in range(1, 5):
                close = "Connection: close\r\n" if i == 4 else ""
                s.sendall(f"GET /{i} HTTP/1.1\r\nHost: a.test\r\n{close}\r\n".encode())
            data = b""
            while b := s.recv(65536):
                data += b
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 4


def worker_reads(pid):
    """read() calls the process has made (/proc/PID/io syscr)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr in /proc/PID/io")


def test_a_keepalive_request_over_tls_costs_one_read(gatehouse, pki):
    # Read-ahead takes a whole record in one read(), and a read that
    # comes back short tells the socket is drained, so no second read
    # is made only to hear EAGAIN: one read() per request, where OpenSSL
    # alone would make two (the record's header, then its body) and
    # nginx two (the record, then EAGAIN).
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    n = 100
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        with client_ctx(pki).wrap_socket(raw, server_hostname="a.test") as s:
            f = s.makefile("rb")

            def one():
                s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
                assert f.readline() == b"HTTP/1.1 200 OK\r\n"
                length = 0
                while (line := f.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                return Reply(b"HTTP/1.1 200 OK\r\n\r\n" + f.read(length), None)

            pid = int(one().var(-1))
            before = worker_reads(pid)
            for _ in range(n):
                one()
            reads = worker_reads(pid) - before
    assert n <= reads <= n + 5, reads


def test_large_file_over_tls_with_sendfile_on(gatehouse, prefix, pki):
    # sendfile cannot encrypt: the file goes through memory, in pieces, to
    # a client reading slowly enough that writes are retried.
    data = os.urandom(3 * 1024 * 1024 + 123)
    prefix.write("html/big.bin", "")
    (prefix.path / "html" / "big.bin").write_bytes(data)
    port = free_port()
    http = f"""
    sendfile on;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki.a_rsa_crt};
        ssl_certificate_key {pki.a_rsa_key};
        root html;
    }}
"""
    start(gatehouse, conf(http), port)
    ctx = client_ctx(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.test", suppress_ragged_eofs=False) as s:
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            # Not reading for a moment fills the socket buffers: the
            # server's writes stop half done and are retried later.
            time.sleep(0.3)
            got = bytearray()
            while True:
                b = s.recv(7000)
                if not b:
                    break
                got += b
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert f"Content-Length: {len(data)}".encode() in head
    assert body == data


def test_redirects_say_https(gatehouse, pki):
    port = free_port()
    http = f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki.a_rsa_crt};
        ssl_certificate_key {pki.a_rsa_key};
        location / {{ return 302 /elsewhere; }}
    }}
"""
    start(gatehouse, conf(http), port)
    r = get(port, client_ctx(pki), host="a.test")
    assert r.status == 302
    assert r.headers["location"] == f"https://a.test:{port}/elsewhere"


def application_record_sizes(port, ctx, path, sni="a.test"):
    """The lengths of the TLS records carrying the response to `path`,
    read off the wire (outer headers) under a MemoryBIO TLS client."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname=sni)
    wire = b""
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        def pump():
            nonlocal wire
            if out.pending:
                raw.sendall(out.read())
            data = raw.recv(65536)
            wire += data
            inc.write(data) if data else inc.write_eof()
            return data
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
        raw.sendall(out.read())
        start = len(wire)
        tls.write(f"GET {path} HTTP/1.0\r\nHost: {sni}\r\n\r\n".encode())
        raw.sendall(out.read())
        while pump():
            pass
    sizes, i, rest = [], 0, wire[start:]
    while i + 5 <= len(rest):
        n = int.from_bytes(rest[i + 3:i + 5], "big")
        if rest[i] == 23:  # application_data
            sizes.append(n)
        i += 5 + n
    return sizes


def test_ssl_buffer_size_bounds_the_records(gatehouse, pki):
    # 1k: records of at most 1024 bytes of data (TLS 1.3 adds a type byte
    # and a 16-byte tag); the default 16k fills records to TLS's maximum.
    port = free_port()
    big = "x" * 6000
    text = two_servers(pki, port, extra_a="location = /big { return 200 " + big + "; }",
                       extra_b="").replace("server_name a.test;", "server_name a.test; ssl_buffer_size 1k;", 1)
    start(gatehouse, conf(text), port)
    sizes = application_record_sizes(port, client_ctx(pki, version="1.3"), "/big")
    assert sum(sizes) > 6000 and max(sizes) <= 1024 + 17, sizes
    # The server SNI chose says, not the port's default server.
    port2 = free_port()
    text = two_servers(pki, port2, extra_a="location = /big { return 200 " + big + "; }",
                       extra_b="ssl_buffer_size 512; location = /big { return 200 " + big + "; }")
    start(gatehouse, conf(text), port2)
    sizes = application_record_sizes(port2, client_ctx(pki, version="1.3"), "/big")
    assert max(sizes) > 6000, sizes
    sizes = application_record_sizes(port2, client_ctx(pki, version="1.3"), "/big", sni="b.test")
    assert sum(sizes) > 6000 and max(sizes) <= 512 + 17, sizes


@pytest.mark.parametrize("params", ["dh_pem", "dhx_pem"])
def test_dhparam_enables_dhe(gatehouse, pki, params):
    # PKCS#3 and X9.42 ("BEGIN X9.42 DH PARAMETERS") files alike [nginx].
    port = free_port()
    dhe = "DHE-RSA-AES128-GCM-SHA256"
    start(gatehouse, conf(two_servers(pki, port, http_extra=f"ssl_dhparam {getattr(pki, params)};")), port)
    assert get(port, client_ctx(pki, version="1.2", ciphers=dhe)).tls["cipher"] == dhe


def test_no_dhe_without_dhparam(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    with pytest.raises(ssl.SSLError):
        get(port, client_ctx(pki, version="1.2", ciphers="DHE-RSA-AES128-GCM-SHA256"))


def test_handshake_timeout_is_client_header_timeout(gatehouse, pki):
    port = free_port()
    g = start(gatehouse, conf(two_servers(pki, port, http_extra="client_header_timeout 300ms;")), port)
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as s:
        s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        assert s.recv(100) == b""     # closed by the server
    log = g.prefix.path / "logs" / "error.log"
    wait_for(lambda: "client timed out (110: Connection timed out) while SSL handshaking" in log.read_text(),
             what="the timeout logged")


def raw_exchange(port, data, wait_close=True):
    """Sends `data` on a plain TCP connection; reads until the server
    closes it, or closes it at once (a client giving up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as s:
        s.sendall(data)
        if not wait_close:
            return
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass


# What scanners and broken clients do to a TLS port, and the reason each
# must be logged with.
HANDSHAKE_FAILURES = [
    ("garbage record", lambda port, pki: raw_exchange(port, b"\x16\x03\x01\x00\x20" + b"Z" * 32),
     "(SSL: error:0A0000F4:SSL routines::unexpected message) while SSL handshaking"),
    ("garbage sslv2", lambda port, pki: raw_exchange(port, b"\x80\x80garbage-garbage-garbage"),
     "SSL routines::wrong version number) while SSL handshaking"),
    ("abort", lambda port, pki: raw_exchange(port, b"\x16\x03\x01\x02\x00\x01", wait_close=False),
     "peer closed connection in SSL handshake while SSL handshaking"),
    ("version", lambda port, pki: get(port, client_ctx(version="1.3")),
     "SSL routines::unsupported protocol) while SSL handshaking"),
    ("cipher", lambda port, pki: get(port, client_ctx(version="1.2", ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")),
     "SSL routines::no shared cipher) while SSL handshaking"),
    # The client refuses our certificate: its alert is the reason.
    ("alert", lambda port, pki: get(port, ssl.create_default_context()),
     "SSL routines::tlsv1 alert unknown ca:SSL alert number 48) while SSL handshaking"),
    ("stall", lambda port, pki: raw_exchange(port, b"\x16\x03\x01"),
     "client timed out (110: Connection timed out) while SSL handshaking"),
]


@pytest.mark.parametrize("level", ["info", "error"])
def test_handshake_failures_are_info_with_client_and_reason(gatehouse, pki, level):
    port = free_port()
    extra = "ssl_protocols TLSv1.2; ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256; client_header_timeout 300ms;"
    text = conf(two_servers(pki, port, http_extra=extra)).replace("error_log logs/error.log info;",
                                                                   f"error_log logs/error.log {level};")
    g = start(gatehouse, text, port)
    for name, act, _ in HANDSHAKE_FAILURES:
        if name in ("version", "cipher", "alert"):
            with pytest.raises(ssl.SSLError):
                act(port, pki)
        else:
            act(port, pki)
    log = g.prefix.path / "logs" / "error.log"
    if level == "info":
        for name, _, reason in HANDSHAKE_FAILURES:
            line = wait_for(lambda: next((ln for ln in log.read_text().splitlines() if reason in ln), None),
                            what=f"the {name} failure logged")
            # nginx's context of a connection without a request yet: the
            # client and the listening address.
            assert " [info] " in line and line.endswith(f", client: 127.0.0.1, server: 127.0.0.1:{port}"), line
    else:
        # The stall comes last and the server closed it: every failure
        # before it has been logged, or skipped, by now.
        text = log.read_text()
        assert "client: " not in text and "SSL" not in text, text


def test_renewed_certificate_takes_effect_on_hup_without_failed_handshakes(gatehouse, pki, tmp_path):
    o = lambda *a: openssl(*a, cwd=tmp_path)  # noqa: E731

    def issue(name, serial):
        o("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        o("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=a.test")
        o("x509", "-req", "-in", f"{name}.csr", "-CA", pki.ca_crt, "-CAkey", pki.ca_key,
          "-set_serial", str(serial), "-days", "30", "-out", f"{name}.crt")

    issue("site", 0x2001)
    issue("renewed", 0x2002)  # a new key too, as a renewal usually has
    crt, key = tmp_path / "site.crt", tmp_path / "site.key"
    port = free_port()
    g = start(gatehouse, conf(f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{ return 200 "ok"; }}
    }}""", workers=2), port, workers=2)
    ctx = client_ctx(pki)
    serials, failures, stop = [], [], threading.Event()

    def load():
        # Full handshakes only: nothing is resumed.
        while not stop.is_set():
            try:
                serials.append(get(port, ctx).tls["cert"]["serialNumber"])
            except (OSError, ssl.SSLError) as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(serials) >= 20, what="handshakes before the renewal")
        before = set(g.children())
        # Key first, then the certificate, each replaced atomically; the
        # master reads both only on HUP.
        os.replace(tmp_path / "renewed.key", key)
        os.replace(tmp_path / "renewed.crt", crt)
        g.signal(signal.SIGHUP)
        wait_for(lambda: (lambda now: len(now) == 2 and not (now & before))(set(g.children())),
                 what="new workers after HUP")
        mark = len(serials)
        wait_for(lambda: len(serials) >= mark + 20, what="handshakes after the renewal")
    finally:
        stop.set()
        for t in threads:
            t.join(DEFAULT_TIMEOUT)
    assert failures == []
    assert "2001" in serials[:20]
    assert serials[-20:] == ["2002"] * 20
    assert get(port, ctx).tls["cert"]["serialNumber"] == "2002"


# ---- plain HTTP on a TLS port ----------------------------------------------------------

def test_plain_http_to_tls_port_gets_400(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"<title>400 The plain HTTP request was sent to HTTPS port</title>" in raw
    assert b"<center>The plain HTTP request was sent to HTTPS port</center>" in raw
    log = (gatehouse.prefix.path / "logs" / "access.log")
    wait_for(lambda: log.exists() and b'"GET /x HTTP/1.1" 400' in log.read_bytes(), what="the 400 logged")


def test_plain_http_error_page_497_redirects(gatehouse, pki):
    port = free_port()
    extra = "error_page 497 =301 https://$host:$server_port$request_uri;"
    start(gatehouse, conf(two_servers(pki, port, extra_a=extra)), port)
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as s:
        s.sendall(b"GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
    assert raw.startswith(b"HTTP/1.1 301")
    assert f"Location: https://a.test:{port}/p?q=1\r\n".encode() in raw


# ---- session resumption --------------------------------------------------------------------

def resume_twice(port, ctx):
    first = get(port, ctx)
    assert not first.tls["reused"] and first.var(6) == "."
    again = get(port, ctx, session=first.tls["session"])
    return first, again


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_builtin_session_cache(gatehouse, pki, version):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache builtin:1000; ssl_session_tickets off;")
    start(gatehouse, conf(http), port)
    first, again = resume_twice(port, client_ctx(pki, version=version))
    assert again.tls["reused"] and again.var(6) == "r"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_resumption_on_a_server_chosen_by_sni(gatehouse, pki, version):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    ctx = client_ctx(pki, version=version)
    first = get(port, ctx, sni="b.test")
    again = get(port, ctx, sni="b.test", session=first.tls["session"])
    assert again.tls["reused"] and again.var(0) == "b"
    assert subject(again.tls["cert"])["commonName"] == "b.test"


def test_no_cache_and_no_tickets_means_no_resumption(gatehouse, pki):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache off; ssl_session_tickets off;")
    start(gatehouse, conf(http), port)
    first, again = resume_twice(port, client_ctx(pki, version="1.2"))
    assert not again.tls["reused"] and again.var(6) == "."


def on_another_worker(port, ctx, first):
    """Resumes `first`'s session on a worker other than the one that made
    it: that worker is stopped (SIGSTOP) meanwhile, so the other accepts."""
    made_by = int(first.var(10))
    os.kill(made_by, signal.SIGSTOP)
    # Stopped, it has left epoll_wait: the listening socket wakes the other.
    wait_for(lambda: process_state(made_by) == "T", what=f"worker {made_by} stopped")
    try:
        r = get(port, ctx, session=first.tls["session"])
    finally:
        os.kill(made_by, signal.SIGCONT)
    assert int(r.var(10)) != made_by
    return r


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_shared_session_cache_resumes_across_workers(gatehouse, pki, version):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache shared:SSL:1m; ssl_session_tickets off;")
    start(gatehouse, conf(http, workers=2), port, workers=2)
    ctx = client_ctx(pki, version=version)
    first = get(port, ctx)
    r = on_another_worker(port, ctx, first)
    assert r.tls["reused"] and r.var(6) == "r"
    # A reload keeps the zone, and the sessions in it.
    g = gatehouse.started[-1]
    before = set(g.children())
    g.signal(signal.SIGHUP)
    wait_for(lambda: (lambda now: len(now) == 2 and not (now & before))(set(g.children())),
             what="new workers after HUP")
    assert get(port, ctx, session=first.tls["session"]).tls["reused"]


def test_builtin_session_cache_is_per_worker(gatehouse, pki):
    # The control for the test above: the same, without sharing.
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache builtin; ssl_session_tickets off;")
    start(gatehouse, conf(http, workers=2), port, workers=2)
    ctx = client_ctx(pki, version="1.2")
    r = on_another_worker(port, ctx, get(port, ctx))
    assert not r.tls["reused"] and r.var(6) == "."


def test_stateless_tls13_sessions_stay_out_of_the_shared_cache(gatehouse, pki):
    # With tickets on, a TLS 1.3 session travels in its ticket and is never
    # looked up by id, so it is not stored (as nginx). Seen through a small
    # zone: a TLS 1.2 session without a ticket (looked up by id) must
    # survive many more TLS 1.3 handshakes than the zone could hold.
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache shared:SSL:32k;")
    start(gatehouse, conf(http), port)
    old = client_ctx(pki, version="1.2")
    old.options |= ssl.OP_NO_TICKET
    first = get(port, old)
    new = client_ctx(pki, version="1.3")
    for _ in range(300):  # a 32k zone holds well under 100 such sessions
        r = get(port, new)
    # The TLS 1.3 ones still resume, from their tickets.
    assert get(port, new, session=r.tls["session"]).tls["reused"]
    again = get(port, old, session=first.tls["session"])
    assert again.tls["reused"] and again.var(6) == "r"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tickets_with_a_key_file_survive_a_restart(gatehouse, pki, version):
    port = free_port()
    http = two_servers(pki, port, http_extra=f"ssl_session_cache off; ssl_session_ticket_key {pki.ticket80_key};"
                                             f"ssl_session_ticket_key {pki.ticket48_key};")
    g = start(gatehouse, conf(http), port)
    ctx = client_ctx(pki, version=version)
    first = get(port, ctx)
    g.stop()
    start(gatehouse, None, port)
    again = get(port, ctx, session=first.tls["session"])
    assert again.tls["reused"] and again.var(6) == "r"


def test_tickets_made_with_an_older_key_still_resume(gatehouse, pki):
    port = free_port()
    old = two_servers(pki, port, http_extra=f"ssl_session_ticket_key {pki.ticket48_key};")
    g = start(gatehouse, conf(old), port)
    ctx = client_ctx(pki, version="1.2")
    first = get(port, ctx)
    g.stop()
    new = two_servers(pki, port, http_extra=f"ssl_session_ticket_key {pki.ticket80_key}; "
                                            f"ssl_session_ticket_key {pki.ticket48_key};")
    start(gatehouse, conf(new), port)
    assert get(port, ctx, session=first.tls["session"]).tls["reused"]


def test_random_ticket_key_is_kept_across_workers_and_reloads(gatehouse, pki):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache off;")
    g = start(gatehouse, conf(http, workers=2), port, workers=2)
    ctx = client_ctx(pki, version="1.3")
    first = get(port, ctx)
    assert on_another_worker(port, ctx, first).tls["reused"]
    before = set(g.children())
    g.signal(signal.SIGHUP)
    wait_for(lambda: (lambda now: now and not (now & before))(set(g.children())), what="new workers after HUP")
    again = get(port, ctx, session=first.tls["session"])
    assert again.tls["reused"] and again.var(6) == "r"
    # A new master has a key of its own: the old ticket is refused.
    g.stop()
    start(gatehouse, None, port, workers=2)
    assert not get(port, ctx, session=first.tls["session"]).tls["reused"]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_random_ticket_keys_rotate_and_older_tickets_still_resume(gatehouse, pki, version):
    # Keys rotate every ssl_session_timeout (2s). Tickets about 0.75s old
    # are resumed, on either worker, until at least 12 resumptions have
    # been checked over at least 5s, so across two or more rotations
    # however slowly the server runs (ASan): a single key replaced at each
    # rotation would fail about a third of them. (Dropping keys older than
    # the ring is the unit tests' part: such tickets have expired anyway.)
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache off; ssl_session_timeout 2s;")
    start(gatehouse, conf(http, workers=2), port, workers=2)
    ctx = client_ctx(pki, version=version)
    made = []  # (when, session), oldest first
    checked, refused = 0, []
    began = time.monotonic()
    while checked < 12 or time.monotonic() - began < 5:
        made.append((time.monotonic(), get(port, ctx).tls["session"]))
        # The newest ticket 0.75s to 1.75s old, whatever the pace: made a
        # good part of a period ago, and still 0.25s from its expiry.
        old = [s for when, s in made if 0.75 <= made[-1][0] - when < 1.75]
        if old:
            r = get(port, ctx, session=old[-1])
            checked += 1
            if not (r.tls["reused"] and r.var(6) == "r"):
                refused.append(checked)
        time.sleep(0.25)  # pacing, not waiting for anything
    assert refused == []


def test_tickets_off(gatehouse, pki):
    port = free_port()
    http = two_servers(pki, port, http_extra="ssl_session_cache off; ssl_session_tickets off;")
    start(gatehouse, conf(http), port)
    first, again = resume_twice(port, client_ctx(pki, version="1.3"))
    assert not again.tls["reused"]


def test_tls13_resumption_hands_out_a_new_ticket(gatehouse, pki):
    # A TLS 1.3 ticket is meant to be used once (RFC 8446 C.4): each
    # resumption gives the client a fresh one, as nginx does, so that it
    # can resume again without reusing a ticket.
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port, http_extra="ssl_session_cache off;")), port)
    ctx = client_ctx(pki, version="1.3")
    first, again = resume_twice(port, ctx)
    assert again.tls["reused"] and again.var(6) == "r"
    # OpenSSL names a client session after its ticket's hash.
    assert again.tls["session"].id != first.tls["session"].id
    third = get(port, ctx, session=again.tls["session"])
    assert third.tls["reused"] and third.var(6) == "r"


# ---- client certificates -----------------------------------------------------------------

def mtls(pki, port, mode):
    return two_servers(pki, port, extra_a=f"ssl_verify_client {mode}; ssl_client_certificate {pki.ca_crt};")


def test_client_certificate_required(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(mtls(pki, port, "on")), port)
    none = get(port, client_ctx(pki))
    assert none.status_line == "HTTP/1.1 400 Bad Request"
    assert "<title>400 No required SSL certificate was sent</title>" in none.text
    assert "<center>No required SSL certificate was sent</center>" in none.text

    bad = get(port, client_ctx(pki, cert=(pki.mallory_crt, pki.mallory_key)))
    assert bad.status == 400
    assert "<title>400 The SSL certificate error</title>" in bad.text

    good = get(port, client_ctx(pki, cert=(pki.client_crt, pki.client_key)))
    assert good.status == 200
    assert good.var(8) == "SUCCESS"
    assert good.var(9) == "O=Gatehouse Tests,CN=client1"
    log = gatehouse.prefix.path / "logs" / "error.log"
    text = log.read_text()
    assert "client sent no required SSL certificate while reading client request headers" in text
    assert "client SSL certificate verify error: (18:self-signed certificate)" in text or \
        "client SSL certificate verify error: (18:self signed certificate)" in text


def test_client_certificate_optional(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(mtls(pki, port, "optional")), port)
    assert get(port, client_ctx(pki)).var(8) == "NONE"
    assert get(port, client_ctx(pki, cert=(pki.client_crt, pki.client_key))).var(8) == "SUCCESS"
    assert get(port, client_ctx(pki, cert=(pki.mallory_crt, pki.mallory_key))).status == 400


def test_client_certificate_optional_no_ca(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port, extra_a="ssl_verify_client optional_no_ca;")), port)
    r = get(port, client_ctx(pki, cert=(pki.mallory_crt, pki.mallory_key)))
    assert r.status == 200
    assert r.var(8).startswith("FAILED:self")
    assert r.var(9) == "CN=mallory"


CERT_VARS = ("$ssl_client_s_dn_legacy|$ssl_client_i_dn_legacy|$ssl_client_serial|$ssl_client_fingerprint|"
             "$ssl_client_v_start|$ssl_client_v_end|$ssl_client_v_remain|$ssl_client_escaped_cert|$ssl_curve")


def test_client_certificate_variables(gatehouse, pki):
    port = free_port()
    extra = (f"ssl_verify_client optional; ssl_client_certificate {pki.ca_crt}; ssl_ecdh_curve prime256v1;"
             f'location /v {{ return 200 "{CERT_VARS}"; }}')
    start(gatehouse, conf(two_servers(pki, port, extra_a=extra)), port)
    before = int(time.time())
    r = get(port, client_ctx(pki, cert=(pki.client_crt, pki.client_key)), path="/v")
    after = int(time.time())
    assert r.status == 200
    pem = Path(pki.client_crt).read_text()
    info = ssl._ssl._test_decode_cert(pki.client_crt)
    legacy_s, legacy_i, serial, fingerprint, start_, end, remain, escaped, curve = r.fields
    assert legacy_s == "/CN=client1/O=Gatehouse Tests"
    assert legacy_i == "/CN=Gatehouse Test CA"
    assert serial == "1004" == info["serialNumber"]
    assert fingerprint == hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    # As OpenSSL prints times ("Jan  5 10:00:00 2027 GMT"), as Python does.
    assert (start_, end) == (info["notBefore"], info["notAfter"])
    # Whole days left, in whole seconds.
    assert int(remain) in {(ssl.cert_time_to_seconds(end) - t) // 86400 for t in (before, after)}
    # $ssl_client_raw_cert, percent-encoded but for RFC 3986's unreserved.
    assert escaped == urllib.parse.quote(pem.strip(), safe="")
    assert curve == "prime256v1"
    # Without a client certificate they are empty; the curve is known.
    r = get(port, client_ctx(pki), path="/v")
    assert r.fields == [""] * 8 + ["prime256v1"]


def test_revoked_client_certificate(gatehouse, pki):
    port = free_port()
    http = mtls(pki, port, "on").replace("ssl_verify_client on;", f"ssl_verify_client on; ssl_crl {pki.ca_crl};")
    g = start(gatehouse, conf(http), port)
    r = get(port, client_ctx(pki, cert=(pki.revoked_crt, pki.revoked_key)))
    assert r.status == 400 and "The SSL certificate error" in r.text
    assert "(23:certificate revoked)" in (g.prefix.path / "logs" / "error.log").read_text()
    assert get(port, client_ctx(pki, cert=(pki.client_crt, pki.client_key))).status == 200


def test_client_verification_is_not_bypassed_by_host(gatehouse, pki):
    # The handshake for b.test asks for no certificate; a request for
    # a.test, which requires one, on that connection is refused.
    port = free_port()
    start(gatehouse, conf(mtls(pki, port, "on")), port)
    r = get(port, client_ctx(pki), sni="b.test", host="a.test")
    assert r.status == 421


def test_client_certificate_session_resumes_with_its_verdict(gatehouse, pki):
    port = free_port()
    http = mtls(pki, port, "on").replace("ssl_verify_client on;",
                                         "ssl_verify_client on; ssl_session_cache builtin; ssl_session_tickets off;")
    start(gatehouse, conf(http), port)
    ctx = client_ctx(pki, version="1.2", cert=(pki.client_crt, pki.client_key))
    first = get(port, ctx)
    again = get(port, ctx, session=first.tls["session"])
    assert again.tls["reused"] and again.status == 200 and again.var(8) == "SUCCESS"


# ---- OCSP stapling ---------------------------------------------------------------------------

def s_client_status(port):
    r = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.test",
                        "-status", "-tls1_2"], input="", capture_output=True, text=True, timeout=30)
    return r.stdout


def stapling_server(pki, port, extra):
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name a.test;
        ssl_certificate {pki.a_rsa_crt};
        ssl_certificate_key {pki.a_rsa_key};
        {extra}
        location / {{ return 200 ok; }}
    }}
"""


def test_ocsp_stapling_from_a_file(gatehouse, pki):
    port = free_port()
    extra = (f"ssl_stapling on; ssl_stapling_file {pki.ocsp_der}; ssl_stapling_verify on; "
             f"ssl_trusted_certificate {pki.ca_crt};")
    start(gatehouse, conf(stapling_server(pki, port, extra)), port)
    out = s_client_status(port)
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out


def test_no_stapling_without_the_directive(gatehouse, pki):
    port = free_port()
    start(gatehouse, conf(stapling_server(pki, port, "")), port)
    assert "OCSP response: no response sent" in s_client_status(port)


def test_ocsp_response_from_an_unknown_signer_is_refused(cli, pki):
    port = free_port()
    extra = (f"ssl_stapling on;\n        ssl_stapling_file {pki.ocsp_bad_der};\n        ssl_stapling_verify on;\n"
             f"        ssl_trusted_certificate {pki.ca_crt};")
    r = cli.test_conf(conf(stapling_server(pki, port, extra)))
    assert r.returncode != 0
    assert re.search(r"cannot staple the OCSP response in \".*ocsp_bad.der\": OCSP_basic_verify\(\) failed.*"
                     r" in .*gatehouse.conf:\d+", r.stderr), r.stderr


# ---- configuration errors ---------------------------------------------------------------------

def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_missing_certificate_file(cli, pki):
    port = free_port()
    text = conf(two_servers(pki, port).replace(pki.b_crt, "/nonexistent/b.crt"))
    r = cli.test_conf(text)
    assert r.returncode != 0
    assert 'cannot load certificate "/nonexistent/b.crt": BIO_new_file() failed' in r.stderr
    assert f"gatehouse.conf:{line_of(text, '/nonexistent/b.crt')}" in r.stderr


def test_mismatched_key(cli, pki):
    port = free_port()
    text = conf(two_servers(pki, port).replace(f"ssl_certificate_key {pki.b_key}",
                                               f"ssl_certificate_key {pki.client_key}"))
    r = cli.test_conf(text)
    assert r.returncode != 0
    assert f'certificate "{pki.b_crt}" and key "{pki.client_key}" do not match' in r.stderr
    assert "key values mismatch" in r.stderr
    assert f"gatehouse.conf:{line_of(text, pki.client_key)}" in r.stderr


def test_listen_ssl_without_certificate(cli, pki):
    port = free_port()
    text = conf(f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        location / {{ return 200; }}
    }}
""")
    r = cli.test_conf(text)
    assert r.returncode != 0
    assert 'no "ssl_certificate" is defined for the "listen ... ssl" directive in' in r.stderr
    assert f"gatehouse.conf:{line_of(text, 'listen')}" in r.stderr


def test_the_same_certificate_given_twice_is_loaded_once(gatehouse, pki):
    port = free_port()
    twice = f"ssl_certificate {pki.b_crt}; ssl_certificate_key {pki.b_key};"
    start(gatehouse, conf(two_servers(pki, port, extra_b=twice)), port)
    r = get(port, client_ctx(pki), sni="b.test")
    assert r.status == 200 and r.var(0) == "b"
    assert subject(r.tls["cert"])["commonName"] == "b.test"


def test_a_second_certificate_of_one_key_type_is_refused(cli, pki):
    port = free_port()
    other = f"ssl_certificate {pki.client_crt}; ssl_certificate_key {pki.client_key};"
    text = conf(two_servers(pki, port, extra_b=other))
    r = cli.test_conf(text)
    assert r.returncode != 0
    assert f'certificate "{pki.client_crt}" has the key type of an earlier certificate' in r.stderr
    assert f"gatehouse.conf:{line_of(text, pki.client_key)}" in r.stderr


def test_a_server_without_certificate_answers_with_the_default_servers(gatehouse, pki):
    port = free_port()
    c = f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name c.test;
        location / {{ return 200 "c|{VARS}"; }}
    }}
"""
    start(gatehouse, conf(two_servers(pki, port) + c), port)
    r = get(port, client_ctx(pki), sni="c.test")
    assert r.status == 200 and r.var(0) == "c" and r.var(5) == "c.test"
    assert subject(r.tls["cert"])["commonName"] == "a.test"


def test_a_default_server_refusing_handshakes_needs_certificates_in_the_others(cli, pki):
    port = free_port()
    text = conf(f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_reject_handshake on;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name c.test;
    }}
""")
    r = cli.test_conf(text)
    assert r.returncode != 0
    assert 'no "ssl_certificate" is defined for the "listen ... ssl" directive in' in r.stderr
    # c.test's own "listen" is named.
    listens = [i for i, line in enumerate(text.splitlines(), 1) if "listen" in line]
    assert f"gatehouse.conf:{listens[1]}" in r.stderr
    # With one of its own, c.test is served.
    ok = cli.test_conf(text.replace("server_name c.test;", f"server_name c.test; ssl_certificate {pki.b_crt}; "
                                                           f"ssl_certificate_key {pki.b_key};"))
    assert ok.returncode == 0, ok.stderr


def test_encrypted_key_needs_its_password(cli, pki):
    port = free_port()
    base = two_servers(pki, port).replace(f"ssl_certificate_key {pki.b_key}", f"ssl_certificate_key {pki.b_enc_key}")
    r = cli.test_conf(conf(base))
    assert r.returncode != 0
    assert f'cannot load certificate key "{pki.b_enc_key}": PEM_read_bio_PrivateKey() failed' in r.stderr
    ok = cli.test_conf(conf(base.replace("server_name b.test;",
                                         f"server_name b.test; ssl_password_file {pki.passwords};")))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("directive,message", [
    ("ssl_protocols TLSv1.4;", 'invalid value "TLSv1.4" in "ssl_protocols" directive'),
    ("ssl_session_cache shared:SSL;", 'invalid session cache "shared:SSL" in "ssl_session_cache" directive'),
    ("ssl_session_cache builtin:x;", 'invalid session cache "builtin:x"'),
    ("ssl_verify_client maybe;", 'invalid value "maybe", it must be'),
    ("ssl_ciphers NOTACIPHER;", 'SSL_CTX_set_cipher_list("NOTACIPHER") failed'),
    ("ssl_ecdh_curve nocurve;", 'SSL_CTX_set1_groups_list("nocurve") failed'),
    ("ssl_conf_command NoSuchCommand x;", 'SSL_CONF_cmd("NoSuchCommand", "x") failed'),
    ("ssl_verify_client on;", "no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client"),
    ("ssl_dhparam /nonexistent/dh.pem;", 'BIO_new_file("/nonexistent/dh.pem") failed'),
])
def test_invalid_values_name_the_line(cli, pki, directive, message):
    port = free_port()
    text = conf(two_servers(pki, port, extra_b=directive))
    r = cli.test_conf(text)
    assert r.returncode != 0, r.stderr
    assert message in r.stderr
    assert f"gatehouse.conf:{line_of(text, directive)}" in r.stderr


def test_ticket_key_file_size(cli, pki):
    port = free_port()
    text = conf(two_servers(pki, port, extra_b=f"ssl_session_ticket_key {pki.ticket_short_key};"))
    r = cli.test_conf(text)
    assert r.returncode != 0
    assert "has 20 bytes, it must be 80 or 48" in r.stderr
    assert f"gatehouse.conf:{line_of(text, 'ticket_short')}" in r.stderr


# ---- refused handshakes and more variables (nginx compatibility) ------------------------------


def handshake_error(port, sni):
    """The SSLError a handshake with `sni` gets (None when it succeeds)."""
    ctx = client_ctx()
    with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=sni):
                return None
        except ssl.SSLError as e:
            return str(e)


def test_reject_handshake(gatehouse, pki):
    # As nginx's ssl_reject_handshake.t: a default server without a
    # certificate refuses unknown names and clients without SNI; a named
    # server with a certificate is reached; a named server can refuse too.
    port1, port2 = free_port(), free_port()
    http = f"""
    server {{ listen 127.0.0.1:{port1} ssl; server_name a.test; ssl_reject_handshake on; }}
    server {{ listen 127.0.0.1:{port1}; server_name b.test;
        ssl_certificate {pki.b_crt}; ssl_certificate_key {pki.b_key};
        location / {{ return 200 "b|$ssl_server_name"; }} }}
    server {{ listen 127.0.0.1:{port2} ssl; server_name a.test;
        ssl_certificate {pki.a_ec_crt}; ssl_certificate_key {pki.a_ec_key};
        location / {{ return 200 "a|$ssl_server_name"; }} }}
    server {{ listen 127.0.0.1:{port2}; server_name c.test; ssl_reject_handshake on; }}
"""
    gatehouse.start(conf(http), ports=(port1, port2))
    assert "UNRECOGNIZED_NAME" in (handshake_error(port1, "a.test") or "")
    assert "UNRECOGNIZED_NAME" in (handshake_error(port1, None) or "")
    assert "UNRECOGNIZED_NAME" in (handshake_error(port1, "unknown.test") or "")
    assert get(port1, client_ctx(), sni="b.test").text == "b|b.test"
    assert get(port2, client_ctx(), sni="a.test").text == "a|a.test"
    assert get(port2, client_ctx(), sni=None, host="a.test").text == "a|"
    assert "UNRECOGNIZED_NAME" in (handshake_error(port2, "c.test") or "")


def test_client_certificate_and_offer_variables(gatehouse, pki):
    port = free_port()
    vars_ = "[$ssl_client_raw_cert]|[$ssl_client_cert]|$ssl_ciphers|$ssl_curves"
    http = two_servers(pki, port, extra_a=f"ssl_verify_client optional; ssl_client_certificate {pki.ca_crt};")
    http = http.replace('location / { return 200 "a|', 'location /v { return 200 "' + vars_ + '"; }\n'
                        '        location / { return 200 "a|', 1)
    start(gatehouse, conf(http), port)
    ctx = client_ctx(pki, version="1.2", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
                     cert=(pki.client_crt, pki.client_key))
    ctx.set_ecdh_curve("prime256v1")
    r = get(port, ctx, path="/v")
    raw, tabbed, ciphers, curves = r.text.split("|")
    pem = Path(pki.client_crt).read_text().strip()
    assert raw == f"[{pem}]"
    assert tabbed == "[" + pem.replace("\n", "\n\t") + "]"
    assert ciphers.split(":")[:2] == ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
    assert "prime256v1" in curves.split(":")
    # Without a client certificate the certificate variables are empty.
    r = get(port, client_ctx(pki), path="/v")
    assert r.text.startswith("[]|[]|")


def test_a_body_still_arriving_over_tls_is_dropped_and_the_connection_kept(gatehouse, pki):
    # As over plain HTTP (test_hardening.py): the location answers without
    # the body, the client sends the rest after the response, and the
    # connection serves its next request; the rest goes through TLS
    # records the server must decrypt to drop.
    port = free_port()
    start(gatehouse, conf(two_servers(pki, port)), port)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with client_ctx(pki).wrap_socket(raw, server_hostname="a.test") as c:
        c.sendall(b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 300000\r\n\r\n" + b"a" * 1000)
        r = read_reply(c)
        assert (r.status, r.header("Connection")) == (200, "keep-alive")
        c.sendall(b"b" * 200000)
        c.sendall(b"c" * 99000 + b"GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = read_reply(c)
        assert r.status == 200 and r.body.startswith(b"a|")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_key_log_has_the_secrets_the_client_has(gatehouse, pki, tmp_path, version):
    # The client (Python's ssl, keylog_filename) and the server write the
    # same SSLKEYLOGFILE lines for one connection: what Wireshark needs.
    # Inherited from http, per server, in the workers' shared file.
    port = free_port()
    server_log = tmp_path / "keys.log"
    start(gatehouse, conf(two_servers(pki, port, http_extra=f"ssl_key_log {server_log};"), workers=2), port, workers=2)
    ctx = client_ctx(pki, version=version)
    client_log = tmp_path / f"client-{version}.log"
    ctx.keylog_filename = str(client_log)
    assert get(port, ctx).status == 200
    assert get(port, ctx, sni="b.test").status == 200
    theirs = [line for line in client_log.read_text().splitlines() if line and not line.startswith("#")]
    ours = server_log.read_text().splitlines()
    label = "CLIENT_RANDOM" if version == "1.2" else "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
    assert sum(line.startswith(label) for line in theirs) == 2
    assert sorted(ours) == sorted(theirs)
    assert (server_log.stat().st_mode & 0o777) == 0o600


def test_key_log_that_cannot_be_opened_is_refused(cli, pki, tmp_path):
    port = free_port()
    r = cli.test_conf(conf(two_servers(pki, port, extra_b=f"ssl_key_log {tmp_path}/no/such/dir/k.log;")))
    assert r.returncode != 0
    assert f'open() "{tmp_path}/no/such/dir/k.log" failed (2: No such file or directory)' in r.stderr
    assert "gatehouse.conf:" in r.stderr


def test_ssl_early_data_loads_with_nginxs_warning_and_no_early_data(gatehouse, cli, pki):
    # nginx's own warning where its TLS library has no 0-RTT: the
    # configuration loads, and no request is taken before the handshake
    # ends, so $ssl_early_data stays empty.
    port = free_port()
    text = conf(two_servers(pki, port, http_extra='ssl_early_data on;',
                            extra_b='location /e { return 200 "[$ssl_early_data]"; }'))
    r = cli.test_conf(text)
    assert r.returncode == 0, r.stderr
    assert '[warn] "ssl_early_data" is not supported, ignored in ' in r.stderr
    start(gatehouse, text, port)
    for version in ("1.2", "1.3"):
        assert get(port, client_ctx(pki, version=version), sni="b.test", path="/e").body == b"[]"
    bad = cli.test_conf(conf(two_servers(pki, port, http_extra="ssl_early_data maybe;")))
    assert bad.returncode != 0 and '"ssl_early_data" directive' in bad.stderr
