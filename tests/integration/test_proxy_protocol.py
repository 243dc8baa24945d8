"""listen ... proxy_protocol: the PROXY protocol header (v1 and v2) before
the request, and before the TLS handshake on an ssl listener.

Headers are built byte by byte here and written on raw sockets; each test
asserts what the client gets (the $proxy_protocol_* values echoed in
response fields, or a closed connection) and the error log line a broken
header leaves. Two workers share the port (reuseport).
"""

import shutil
import socket
import ssl
import struct
import subprocess

import pytest

from gh_server import Response, poll, server  # noqa: F401  (server: the fixture)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"

ECHO = """
    log_format pp '$remote_addr:$remote_port $proxy_protocol_addr:$proxy_protocol_port';
    server {
        listen 127.0.0.1:PORT proxy_protocol reuseport;
        access_log logs/pp.log pp;
        client_header_timeout 2s;
        location / {
            add_header X-PP "$proxy_protocol_addr!$proxy_protocol_port";
            add_header X-PPS "$proxy_protocol_server_addr!$proxy_protocol_server_port";
            add_header X-IP "$remote_addr";
            add_header X-TLV "$proxy_protocol_tlv_alpn|$proxy_protocol_tlv_0xe0|$proxy_protocol_tlv_ssl_cn|$proxy_protocol_tlv_ssl_verify";
            return 200 "ok\\n";
        }
    }
"""


def start(server, http, files=None):
    """Two workers, so that either may take a connection."""
    s = server(http, files, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    return s.start()


def v2(ver_cmd, fam, body):
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


def tlv(t, value):
    return bytes([t]) + struct.pack("!H", len(value)) + value


INET4 = bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 123, 5678)
INET6 = (socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
         + struct.pack("!HH", 123, 5678))
GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def exchange(s, data, family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect((host, s.port))
        c.sendall(data)
        chunks = []
        while True:
            b = c.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def wait_error(s, text):
    line = poll(lambda: next((ln for ln in s.error_log().splitlines() if text in ln), None))
    assert line is not None, s.error_log()
    return line


@pytest.mark.parametrize("header,pp,pps", [
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\n", "192.0.2.1!123", "192.0.2.2!5678"),
    (b"PROXY TCP6 2001:Db8::1 2001:db8::2 123 5678\r\n", "2001:db8::1!123", "2001:db8::2!5678"),
    (b"PROXY UNKNOWN\r\n", "!", "!"),
    (b"PROXY UNKNOWN 1 2 3 4 5 6\r\n", "!", "!"),
    (v2(0x21, 0x11, INET4), "192.0.2.1!123", "192.0.2.2!5678"),
    (v2(0x21, 0x21, INET6), "2001:db8::1!123", "2001:db8::2!5678"),
    (v2(0x21, 0x11, INET4 + bytes(9)), "192.0.2.1!123", "192.0.2.2!5678"),  # three empty TLVs
    (v2(0x20, 0x11, INET4), "!", "!"),         # LOCAL: the addresses are ignored
    (v2(0x21, 0x01, b""), "!", "!"),           # AF_UNSPEC
    (v2(0x21, 0x31, bytes(216)), "!", "!"),    # AF_UNIX
    (v2(0x21, 0x41, b"\x01\x02\x03\x04"), "!", "!"),  # an unknown family
], ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v1-unknown-args", "v2-tcp4", "v2-tcp6", "v2-empty-tlvs",
        "v2-local", "v2-unspec", "v2-unix", "v2-unknown-family"])
def test_header_then_request(server, header, pp, pps):
    s = start(server, ECHO)
    r = Response(exchange(s, header + GET))
    assert r.status == 200
    assert r.body == b"ok\n"
    assert r.header("X-PP") == pp
    assert r.header("X-PPS") == pps
    # The connection's address stays $remote_addr without realip.
    assert r.header("X-IP") == "127.0.0.1"


def test_access_log_keeps_both_addresses(server):
    s = start(server, ECHO)
    exchange(s, b"PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\n" + GET)
    line = s.wait_lines("pp.log", 1)[0].decode()
    assert line.startswith("127.0.0.1:")
    assert line.endswith(" 192.0.2.1:123\n")


def test_tlvs_as_variables(server):
    s = start(server, ECHO)
    ssl_tlv = b"\x01" + struct.pack("!I", 7) + tlv(0x22, b"example.com")
    header = v2(0x21, 0x11, INET4 + tlv(0x01, b"h2") + tlv(0xE0, b"custom") + tlv(0x20, ssl_tlv))
    r = Response(exchange(s, header + GET))
    assert r.status == 200
    assert r.header("X-TLV") == "h2|custom|example.com|7"
    assert r.header("X-PP") == "192.0.2.1!123"


def test_keepalive_requests_keep_the_header(server):
    s = start(server, ECHO)
    keep = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    raw = exchange(s, b"PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\n" + keep + GET)
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.count(b"X-PP: 192.0.2.1!123\r\n") == 2


def test_header_split_across_writes(server):
    s = start(server, ECHO)
    header = v2(0x21, 0x11, INET4 + tlv(0x01, b"h2"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Part of the signature, alone on the wire for a moment (nothing on
        # the server's side can be polled for): it waits for the rest
        # instead of calling it broken, which would close at once.
        c.sendall(header[:5])
        c.settimeout(0.5)
        with pytest.raises(socket.timeout):
            c.recv(1)
        c.settimeout(10)
        for i in range(5, len(header), 7):
            c.sendall(header[i:i + 7])
        c.sendall(GET)
        raw = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            raw += b
    r = Response(raw)
    assert r.status == 200
    assert r.header("X-PP") == "192.0.2.1!123"
    assert r.header("X-TLV") == "h2|||"
    assert "broken header" not in s.error_log()


@pytest.mark.parametrize("data,message", [
    (GET, 'broken header: "GET / HTTP/1.1\\x0D\\x0AHost: localhost'),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 123\r\n" + GET, 'broken header: "PROXY TCP4 192.0.2.1 192.0.2.2 123\\x0D\\x0A'),
    (b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n" + GET, 'broken header: "PROXY TCP4 2001:db8::1'),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 123 99999\r\n" + GET, 'broken header: "PROXY TCP4'),
    (b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n" + GET, 'broken header: "PROXY UNKNOWN xxx'),
    (v2(0x11, 0x11, INET4) + GET, "unknown PROXY protocol version: 1 while reading PROXY protocol"),
    (v2(0x2F, 0x11, INET4) + GET, "unknown PROXY protocol command: 15 while reading PROXY protocol"),
    (v2(0x21, 0x11, INET4[:8]) + GET, 'broken header: "\\x0D\\x0A\\x0D\\x0A\\x00\\x0D\\x0AQUIT'),
    (v2(0x21, 0x11, INET4 + b"\x01\x00\x09ab") + GET, 'broken header: "\\x0D\\x0A'),
    (v2(0x21, 0x11, INET4 + tlv(0x04, bytes(2000))) + GET, "header is too large while reading PROXY protocol"),
], ids=["no-header", "v1-missing-field", "v1-wrong-family", "v1-bad-port", "v1-too-long", "v2-version",
        "v2-command", "v2-short-address", "v2-bad-tlv", "v2-too-large"])
def test_broken_header_closes_the_connection(server, data, message):
    s = start(server, ECHO)
    if len(data) > 1024:
        # More than client_header_buffer_size was sent and only that much
        # was read: closing over the rest resets the connection.
        with pytest.raises(ConnectionResetError):
            exchange(s, data)
    else:
        # What was read is taken before the close: an orderly one.
        assert exchange(s, data) == b""
    line = wait_error(s, message)
    assert "[error]" in line
    assert line.endswith(f"while reading PROXY protocol, client: 127.0.0.1, server: 127.0.0.1:{s.port}")


def test_header_counts_against_client_header_timeout(server):
    s = start(server, ECHO)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"PROXY TCP4 192.0.2.1")
        assert c.recv(1) == b""  # closed by the 2s client_header_timeout
    wait_error(s, "client timed out (110: Connection timed out) while reading PROXY protocol")


def test_listener_without_proxy_protocol(server):
    s = start(server, """
    server {
        listen 127.0.0.1:PORT;
        location / {
            add_header X-PP "[$proxy_protocol_addr][$proxy_protocol_port][$proxy_protocol_tlv_alpn]";
            return 200 "ok\\n";
        }
    }
    """)
    r = Response(exchange(s, GET))
    assert r.status == 200
    assert r.header("X-PP") == "[][][]"
    # A PROXY line on such a listener is a request line, and a bad one.
    r = Response(exchange(s, b"PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\n" + GET))
    assert r.status == 400


def test_ipv6_listener_and_realip(server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    s = start(server, """
    server {
        listen [::1]:PORT proxy_protocol reuseport;
        listen 127.0.0.1:PORT reuseport;  # for the fixture's readiness check
        set_real_ip_from ::1;
        real_ip_header proxy_protocol;
        location / {
            add_header X-PP "$proxy_protocol_addr!$proxy_protocol_port";
            add_header X-IP "$remote_addr!$remote_port!$realip_remote_addr";
            return 200 "ok\\n";
        }
    }
    """)
    r = Response(exchange(s, b"PROXY TCP4 192.0.2.1 192.0.2.2 123 5678\r\n" + GET, socket.AF_INET6, "::1"))
    assert r.status == 200
    assert r.header("X-PP") == "192.0.2.1!123"
    assert r.header("X-IP") == "192.0.2.1!123!::1"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("ppcert")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem"), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    (d / "k.pem").chmod(0o644)
    d.chmod(0o755)
    return d


def test_header_before_tls_handshake(server, cert):
    s = start(server, f"""
    server {{
        listen 127.0.0.1:PORT ssl proxy_protocol reuseport;
        ssl_certificate {cert}/c.pem;
        ssl_certificate_key {cert}/k.pem;
        location / {{
            add_header X-PP "$proxy_protocol_addr!$proxy_protocol_port";
            add_header X-Scheme "$scheme";
            return 200 "ok\\n";
        }}
    }}
    """)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
        raw.sendall(v2(0x21, 0x11, INET4))
        with ctx.wrap_socket(raw, server_hostname="localhost") as c:
            c.sendall(GET)
            data = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
    r = Response(data)
    assert r.status == 200
    assert r.header("X-PP") == "192.0.2.1!123"
    assert r.header("X-Scheme") == "https"
    # Without the header, the TLS hello itself is the broken header.
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                pass
    wait_error(s, 'broken header: "\\x16\\x03')
