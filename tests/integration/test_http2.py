"""HTTP/2 from clients (src/http/v2): listening (h2c with prior knowledge,
ALPN "h2" on TLS), requests and responses over streams on the
protocol-neutral request path, the http2_* settings, graceful retirement
and the bounds on the known HTTP/2 attacks.

Clients: curl (--http2-prior-knowledge, --http2), nghttp, h2load, and raw
frames written with Python's h2 library (python3-h2) where the test needs
to say exactly what goes on the wire (floods, resets, windows)."""
import base64
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from gh_server import Server, poll, server  # noqa: F401  (fixture)
from origins import Origin, answer_mid_request, listener, response

h2 = pytest.importorskip("h2")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
import hyperframe.frame as hf  # noqa: E402

CURL = shutil.which("curl")
NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")
OPENSSL = shutil.which("openssl")


def curl(*args):
    r = subprocess.run([CURL, "-sS", *args], capture_output=True, timeout=30)
    return r


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("h2pki")
    os.chmod(d, 0o755)
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem"), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    for f in ("k.pem", "c.pem"):
        os.chmod(d / f, 0o644)
    return d


class H2Client:
    """A raw HTTP/2 connection: frames out with h2, events back."""

    def __init__(self, port, settings=None, tls=False, validate=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate, normalize_outbound_headers=validate)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events = []
        self.closed = False
        self.auto_ack = True
        # python-h2 takes no frame after a GOAWAY; RFC 9113 6.8 has the
        # streams up to its last stream id answered after it. Its
        # connection state machine is told so: after a GOAWAY, everything
        # but a new request goes on.
        sm = self.conn.state_machine
        orig = sm.process_input
        closed = h2.connection.ConnectionState.CLOSED

        def process_input(input_):
            if sm.state == closed and input_ != h2.connection.ConnectionInputs.SEND_HEADERS:
                return []
            return orig(input_)
        sm.process_input = process_input

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def read(self):
        """Reads what arrives once; False at EOF."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            evs = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            evs = []
        for e in evs:
            # The client reads what comes: its windows open again.
            if isinstance(e, h2.events.DataReceived) and self.auto_ack:
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        self.events.extend(evs)
        try:
            self.flush()
        except OSError:
            # The server closed after what it sent (GOAWAY, then close on
            # a connection error): our answers to it (a SETTINGS ACK, a
            # WINDOW_UPDATE) meet a reset. What arrived is kept.
            self.closed = True
        return True

    def until(self, pred, timeout=10.0):
        """Reads until pred(events) is true (returns it) or EOF/timeout."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self.events)
            if v:
                return v
            if self.closed or time.monotonic() > deadline:
                return pred(self.events)
            try:
                if not self.read():
                    return pred(self.events)
            except socket.timeout:
                return pred(self.events)

    def request(self, path, method="GET", headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
        hdrs += list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def raw_headers(self, sid, path="/", method="GET", fields=None, end=True):
        """The bytes of a HEADERS frame (END_HEADERS; END_STREAM with
        `end`) built outside python-h2's stream states, encoded with its
        HPACK encoder: `fields`, else a request for `path`."""
        f = hf.HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM"] if end else ["END_HEADERS"])
        f.data = self.conn.encoder.encode(fields or [(":method", method), (":scheme", "http"),
                                                     (":authority", "x"), (":path", path)])
        return f.serialize()

    def response(self, sid, timeout=10.0):
        """(status, headers dict, body) of stream sid once it ended."""
        def done(evs):
            return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                       for e in evs)
        assert self.until(done, timeout), f"stream {sid} did not end: {self.events}"
        status, headers, body = None, {}, b""
        for e in self.events:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                headers = dict(e.headers)
                status = int(headers[":status"])
            elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                body += e.data
        return status, headers, body

    def send_body(self, sid, body, end=True):
        """Sends body as the stream's window allows, reading meanwhile."""
        sent = 0
        while sent < len(body):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(body) - sent)
            if room == 0:
                assert self.read(), "closed while sending a body"
                continue
            self.conn.send_data(sid, body[sent:sent + room], end_stream=end and sent + room == len(body))
            self.flush()
            sent += room

    def reset_of(self, sid):
        for e in self.events:
            if isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                return e.error_code
        return None

    def goaway(self):
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def access_lines(s, n):
    return [line.decode() for line in s.wait_lines("access.log", n)]


PLAIN = """
    log_format p '$request $status $body_bytes_sent $server_protocol h2=$http2 c=$connection';
    access_log logs/access.log p;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        root html;
        location /v { return 200 "proto=$server_protocol http2=$http2 host=$host scheme=$scheme\\n"; }
        location /cookie { return 200 "$http_cookie\\n"; }
        location /gone { return 301 /v; }
        location /err { error_page 404 =200 /v; return 404; }
        location /r { rewrite ^ /v last; }
    }
"""


# ---- listening ---------------------------------------------------------------------

@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_h2c_with_prior_knowledge_and_http1_on_the_same_address(server):
    s = server(PLAIN)
    r = curl("--http2-prior-knowledge", f"http://127.0.0.1:{s.port}/v", "-w", "%{http_version}")
    assert r.stdout == b"proto=HTTP/2.0 http2=h2c host=127.0.0.1 scheme=http\n2"
    # An HTTP/1.1 request on the address still works [nginx].
    r = curl(f"http://127.0.0.1:{s.port}/v", "-w", "%{http_version}")
    assert r.stdout == b"proto=HTTP/1.1 http2= host=127.0.0.1 scheme=http\n1.1"
    lines = access_lines(s, 2)
    assert lines[0].startswith("GET /v HTTP/2.0 200 52 HTTP/2.0 h2=h2c c=")
    assert lines[1].startswith("GET /v HTTP/1.1 200 49 HTTP/1.1 h2= c=")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_no_h2c_where_http2_is_off(server):
    s = server(PLAIN.replace("http2 on;", ""))
    # The preface is not a request HTTP/1.1 understands.
    raw = s.raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    r = curl("--http2", f"http://127.0.0.1:{s.port}/v", "-w", "%{http_version}")
    assert r.stdout.endswith(b"\n1.1")


def test_a_host_whose_server_has_http2_off_gets_421(server):
    # The connection was made for a server speaking HTTP/2; a request on it
    # for a server with "http2 off" is sent elsewhere with 421, so that the
    # client asks again on a connection of its own [nginx 1.25].
    s = server(PLAIN + """
        server {
            listen 127.0.0.1:PORT;
            server_name off.test;
            http2 off;
            location / { return 200 "off\\n"; }
        }
    """)
    c = H2Client(s.port)
    try:
        sid = c.request("/v")
        status, _, body = c.response(sid)
        assert (status, body) == (200, b"proto=HTTP/2.0 http2=h2c host=localhost scheme=http\n")
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "off.test"),
                                  (":path", "/")], end_stream=True)
        c.flush()
        status, _, _ = c.response(sid)
        assert status == 421
    finally:
        c.close()
    assert 'client attempted to request the server name "off.test" with HTTP/2 disabled' in s.error_log()
    # Over HTTP/1.1 the same server answers.
    assert s.get("/", host="off.test").body == b"off\n"


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_alpn_h2_then_http11_on_tls(server, cert):
    conf = f"""
    log_format p '$request $status $server_protocol h2=$http2 $ssl_alpn_protocol';
    access_log logs/access.log p;
    server {{
        listen 127.0.0.1:PORT ssl;
        http2 on;
        ssl_certificate {cert}/c.pem;
        ssl_certificate_key {cert}/k.pem;
        location / {{ return 200 "$server_protocol $http2 $https\\n"; }}
    }}
    """
    s = server(conf)
    r = curl("-k", "--http2", f"https://127.0.0.1:{s.port}/", "-w", "%{http_version}")
    assert r.stdout == b"HTTP/2.0 h2 on\n2"
    r = curl("-k", "--http1.1", f"https://127.0.0.1:{s.port}/", "-w", "%{http_version}")
    assert r.stdout == b"HTTP/1.1  on\n1.1"
    lines = access_lines(s, 2)
    assert lines == ["GET / HTTP/2.0 200 HTTP/2.0 h2=h2 h2\n", "GET / HTTP/1.1 200 HTTP/1.1 h2= http/1.1\n"]


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_listen_http2_the_nginx_1_22_way(tmp_path, cert):
    conf = f"""
    server {{
        listen 127.0.0.1:PORT ssl http2;
        ssl_certificate {cert}/c.pem;
        ssl_certificate_key {cert}/k.pem;
        location / {{ return 200 "$http2\\n"; }}
    }}
    """
    s = Server(tmp_path, conf)
    code, err = s.test_config()
    assert code == 0
    assert 'the "listen ... http2" directive is deprecated, use the "http2" directive instead in ' in err
    s.start()
    try:
        r = curl("-k", "--http2", f"https://127.0.0.1:{s.port}/")
        assert r.stdout == b"h2\n"
    finally:
        s.stop()


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_obsolete_http2_directives_load_with_nginxs_warnings(tmp_path, cert):
    # An nginx 1.18 configuration: the directives 1.19.7 and 1.25.1 made
    # obsolete are taken with nginx's warnings and change nothing.
    conf = f"""
    http2_recv_timeout 30s;
    http2_max_field_size 8k;
    server {{
        listen 127.0.0.1:PORT ssl;
        http2 on;
        http2_idle_timeout 5m;
        http2_max_requests 1000;
        http2_max_header_size 32k;
        http2_max_concurrent_pushes 10;
        ssl_certificate {cert}/c.pem;
        ssl_certificate_key {cert}/k.pem;
        location / {{ http2_push /style.css; http2_push_preload on; return 200 "$http2\n"; }}
    }}
    """
    s = Server(tmp_path, conf)
    code, err = s.test_config()
    assert code == 0, err
    for name, instead in [("http2_recv_timeout", "client_header_timeout"),
                          ("http2_max_field_size", "large_client_header_buffers"),
                          ("http2_idle_timeout", "keepalive_timeout"),
                          ("http2_max_requests", "keepalive_requests"),
                          ("http2_max_header_size", "large_client_header_buffers")]:
        assert f'[warn] the "{name}" directive is obsolete, use the "{instead}" directive instead in ' in err
    for name in ("http2_max_concurrent_pushes", "http2_push", "http2_push_preload"):
        assert f'[warn] the "{name}" directive is obsolete, ignored in ' in err
    s.start()
    try:
        r = curl("-k", "--http2", f"https://127.0.0.1:{s.port}/")
        assert r.stdout == b"h2\n"
    finally:
        s.stop()


@pytest.mark.parametrize("directive,message", [
    ("http2 maybe;", 'invalid value "maybe", it must be "on" or "off" in "http2" directive'),
    ("http2_chunk_size 0;", "the http2 chunk size cannot be zero"),
    ("http2_body_preread_size 3g;", "the maximum body preread buffer size is 2147483647"),
    ("http2_recv_buffer_size 16;", "value is too small"),
])
def test_config_errors(tmp_path, directive, message):
    s = Server(tmp_path, f"""
    {directive}
    server {{ listen 127.0.0.1:PORT; }}
    """)
    code, err = s.test_config()
    assert code != 0
    assert message in err
    assert "[emerg]" in err


# ---- requests and responses ---------------------------------------------------------

def test_return_redirect_error_page_rewrite_cookies(server):
    s = server(PLAIN)
    c = H2Client(s.port)
    try:
        a = c.request("/v")
        b = c.request("/gone")
        e = c.request("/err")
        w = c.request("/r")
        k = c.request("/cookie", headers=[("cookie", "a=1"), ("cookie", "b=2")])
        st, h, body = c.response(a)
        assert (st, body) == (200, b"proto=HTTP/2.0 http2=h2c host=localhost scheme=http\n")
        assert h["content-type"] == "text/plain"
        assert h["content-length"] == str(len(body))
        assert "connection" not in h
        st, h, _ = c.response(b)
        assert st == 301
        assert h["location"] == f"http://localhost:{s.port}/v"
        st, _, body = c.response(e)
        assert (st, body) == (200, b"proto=HTTP/2.0 http2=h2c host=localhost scheme=http\n")
        st, _, body = c.response(w)
        assert (st, body) == (200, b"proto=HTTP/2.0 http2=h2c host=localhost scheme=http\n")
        st, _, body = c.response(k)
        assert (st, body) == (200, b"a=1; b=2\n")
    finally:
        c.close()
    lines = access_lines(s, 5)
    # One line per stream, all on the same connection.
    conns = {line.rsplit("c=", 1)[1] for line in lines}
    assert len(conns) == 1
    assert sorted(line.split(" ")[1] for line in lines) == ["/cookie", "/err", "/gone", "/r", "/v"]


def test_static_file_larger_than_every_window(server):
    big = os.urandom(3 * 1024 * 1024 + 7)
    s = server(PLAIN, files={"big.bin": big})
    c = H2Client(s.port)
    try:
        sid = c.request("/big.bin")
        st, h, body = c.response(sid, timeout=30)
    finally:
        c.close()
    assert st == 200
    assert h["content-length"] == str(len(big))
    assert hashlib.sha256(body).digest() == hashlib.sha256(big).digest()
    line = access_lines(s, 1)[0]
    assert line.startswith(f"GET /big.bin HTTP/2.0 200 {len(big)} HTTP/2.0 h2=h2c")


@pytest.mark.parametrize("max_frame, chunk, want", [(None, "64k", 16384), (32768, "64k", 32768),
                                                     (32768, "8k", 8192)])
def test_data_frames_are_as_large_as_the_client_allows_up_to_http2_chunk_size(server, max_frame, chunk, want):
    s = server(PLAIN.replace("http2 on;", f"http2 on; http2_chunk_size {chunk};"),
               files={"big.bin": b"a" * 200000})
    c = H2Client(s.port, settings={h2.settings.SettingCodes.MAX_FRAME_SIZE: max_frame} if max_frame else None)
    try:
        # Windows wide open: only the frame size bounds a DATA frame.
        c.until(lambda evs: any(isinstance(e, h2.events.SettingsAcknowledged) for e in evs))
        c.conn.increment_flow_control_window(2**20)
        sid = c.request("/big.bin")
        c.conn.increment_flow_control_window(2**20, sid)
        c.flush()
        c.until(lambda evs: any(isinstance(e, h2.events.StreamEnded) for e in evs), timeout=10)
        sizes = [e.flow_controlled_length for e in c.events if isinstance(e, h2.events.DataReceived)]
    finally:
        c.close()
    assert sum(sizes) == 200000
    assert max(sizes) == want and sizes[0] == want


def test_a_client_without_settings_gets_no_ack_and_push_promise_is_a_connection_error(server):
    s = server(PLAIN)
    # The preface, then no SETTINGS of the client's: nothing to acknowledge
    # (a SETTINGS frame stands in for it, unseen) [nginx].
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        raw = RawFrames(sock)
        assert raw.read_until(lambda: any(isinstance(f, hf.WindowUpdateFrame) for f in raw.frames), 10)
        sock.sendall(hf.SettingsFrame(0, flags=["ACK"]).serialize())
        ping = hf.PingFrame(0)
        ping.opaque_data = b"SEE-THIS"
        sock.sendall(ping.serialize())
        assert raw.read_until(lambda: any(isinstance(f, hf.PingFrame) for f in raw.frames), 10)
        assert [f.flags for f in raw.frames if isinstance(f, hf.SettingsFrame)] == [set()]
        # A client cannot push (RFC 9113 8.4): GOAWAY PROTOCOL_ERROR on the
        # frame header, its payload never sent.
        sock.sendall(b"\x00\x00\x04\x05\x00\x00\x00\x00\x01")
        assert raw.read_until(lambda: raw.goaway(), 10)
        assert raw.goaway().error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert "client sent PUSH_PROMISE frame" in s.error_log()


def test_header_and_body_timeouts_reset_the_stream_and_the_connection_goes_on(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        client_header_timeout 1s;
        client_body_timeout 1s;
        error_log logs/error.log info;
        location / { return 200 "x"; }
        location /buffered { proxy_pass http://127.0.0.1:9; }
    }
    """)
    c = H2Client(s.port)
    try:
        c.until(lambda evs: any(isinstance(e, h2.events.SettingsAcknowledged) for e in evs))
        raw = RawFrames(c.sock)
        # Half of a HEADERS frame, the rest after client_header_timeout:
        # the stream is reset with PROTOCOL_ERROR [nginx]...
        frame = c.raw_headers(1)
        c.send_raw(frame[:12])
        assert raw.read_until(lambda: any(isinstance(f, hf.RstStreamFrame) for f in raw.frames), 10)
        # ...and the connection goes on: the rest of the frame is taken,
        # then a PING is answered and a new stream served.
        c.send_raw(frame[12:])
        ping = hf.PingFrame(0)
        ping.opaque_data = b"SEE-THIS"
        c.send_raw(ping.serialize())
        c.send_raw(c.raw_headers(3))
        assert raw.read_until(lambda: any(isinstance(f, hf.DataFrame) and f.stream_id == 3 for f in raw.frames), 10)
        assert any(isinstance(f, hf.PingFrame) and "ACK" in f.flags for f in raw.frames)
        # A body that stops coming: 408, and the stream reset with
        # PROTOCOL_ERROR [nginx].
        c.send_raw(c.raw_headers(5, "/buffered", method="POST", end=False))
        d = hf.DataFrame(5)
        d.data = b"TEST"
        c.send_raw(d.serialize())
        assert raw.read_until(lambda: any(isinstance(f, hf.RstStreamFrame) and f.stream_id == 5
                                          for f in raw.frames), 10)
    finally:
        c.close()
    assert [(f.stream_id, f.error_code) for f in raw.frames if isinstance(f, hf.RstStreamFrame)] == [(1, 1), (5, 1)]
    assert raw.goaway() is None
    assert "while reading client request headers" in s.error_log()
    assert "while reading client request body" in s.error_log()


@pytest.mark.parametrize("second", ["same", "backward"])
def test_headers_on_a_used_stream_id_is_a_connection_error(server, second):
    # RFC 9113 5.1.1: ids go up; a HEADERS frame on a closed stream, or
    # on one below the highest that was skipped, ends the connection with
    # PROTOCOL_ERROR, naming the last stream taken [nginx].
    s = server(PLAIN, files={"f.txt": "x"})
    c = H2Client(s.port)
    try:
        first = 3 if second == "backward" else 1
        c.until(lambda evs: any(isinstance(e, h2.events.SettingsAcknowledged) for e in evs))
        raw = RawFrames(c.sock)
        c.send_raw(c.raw_headers(first, "/f.txt"))
        assert raw.read_until(lambda: any(isinstance(f, hf.DataFrame) and "END_STREAM" in f.flags
                                          for f in raw.frames), 10)
        c.send_raw(c.raw_headers(1, "/f.txt"))
        assert raw.read_until(lambda: raw.goaway(), 10)
        g = raw.goaway()
        assert (g.error_code, g.last_stream_id) == (h2.errors.ErrorCodes.PROTOCOL_ERROR, first)
    finally:
        c.close()
    assert "client sent HEADERS frame with incorrect identifier 1" in s.error_log()


def test_trailers_after_an_early_response_are_not_an_error(server):
    # The response (and our RST_STREAM NO_ERROR) went before the client
    # had sent its body: its DATA and trailers on the stream, already on
    # their way, are dropped, and the connection goes on.
    s = server(PLAIN)
    c = H2Client(s.port)
    try:
        sid = c.request("/v", method="POST", end=False)
        assert c.until(lambda evs: c.reset_of(sid) is not None)
        d = hf.DataFrame(sid)
        d.data = b"body"
        c.send_raw(d.serialize())
        c.send_raw(c.raw_headers(sid, fields=[("x-trailer", "1")]))
        c.send_raw(c.raw_headers(sid + 2, "/v"))
        raw = RawFrames(c.sock)
        assert raw.read_until(lambda: any(isinstance(f, hf.DataFrame) and f.stream_id == sid + 2
                                          for f in raw.frames), 10)
        assert raw.goaway() is None
    finally:
        c.close()


def test_head_and_304_end_with_headers(server):
    s = server(PLAIN, files={"f.txt": "0123456789"})
    c = H2Client(s.port)
    try:
        a = c.request("/f.txt", method="HEAD")
        st, h, body = c.response(a)
        assert (st, h["content-length"], body) == (200, "10", b"")
        etag = h["etag"]
        b = c.request("/f.txt", headers=[("if-none-match", etag)])
        st, h, body = c.response(b)
        assert (st, body) == (304, b"")
    finally:
        c.close()


def test_response_header_block_larger_than_a_frame_goes_in_continuations(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        large_client_header_buffers 2 64k;
        location / {
            add_header X-Long $arg_h;
            add_header X-Long $arg_h;
            add_header X-Long $arg_h;
            return 200 "body\\n";
        }
        location /none {
            add_header X-Long $arg_h;
            add_header X-Long $arg_h;
            add_header X-Long $arg_h;
            return 204;
        }
    }
    """)
    c = H2Client(s.port)
    c.conn.decoder.max_header_list_size = 2**20  # python-h2's own bound: 64 KiB
    try:
        # 96 KiB of fields: past nghttp2's default cap on a header block
        # (64 KiB) and six times the client's SETTINGS_MAX_FRAME_SIZE
        # (16384, python-h2's default, which fails the connection on any
        # frame larger): HEADERS, then CONTINUATION frames.
        v = "x" * 2**15
        for path, status, body in ((f"/?h={v}", 200, b"body\n"), (f"/none?h={v}", 204, b"")):
            sid = c.request(path)
            st, _, got = c.response(sid)
            assert (st, got) == (status, body)
            heads = [e.headers for e in c.events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid]
            assert [value for name, value in heads[0] if name == "x-long"] == [v, v, v]
    finally:
        c.close()


@pytest.mark.skipif(NGHTTP is None, reason="nghttp is not installed")
def test_many_streams_on_one_connection_with_nghttp(server):
    files = {f"f{i}.txt": f"file {i}\n" * (i + 1) for i in range(20)}
    s = server(PLAIN, files=files)
    urls = [f"http://127.0.0.1:{s.port}/f{i}.txt" for i in range(20)]
    r = subprocess.run([NGHTTP, "-n", "-s", *urls], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = access_lines(s, 20)
    assert all(" 200 " in line for line in lines)
    assert len({line.rsplit("c=", 1)[1] for line in lines}) == 1


def test_request_body_proxied_to_an_http11_origin(server):
    origin = Origin()
    try:
        s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            client_max_body_size 10m;
            location / {{ proxy_pass http://{origin.addr}; }}
        }}
        """)
        body = os.urandom(1024 * 1024 + 3)
        c = H2Client(s.port)
        try:
            # More than the stream's window (64k): it opens as the proxy
            # takes the bytes.
            sid = c.request("/up", method="POST", headers=[("content-length", str(len(body)))], end=False)
            c.send_body(sid, body)
            st, _, got = c.response(sid)
            assert (st, got) == (200, b"POST /up\n")
            # Without a length: the proxy sends it chunked.
            sid = c.request("/up2", method="POST", end=False)
            c.send_body(sid, b"x" * 100000)
            st, _, got = c.response(sid)
            assert (st, got) == (200, b"POST /up2\n")
        finally:
            c.close()
        reqs = origin.wait_requests(2)
        assert reqs[0].body == body
        assert reqs[0].header("Content-Length") == str(len(body))
        assert reqs[1].body == b"x" * 100000
    finally:
        origin.stop()


def test_error_page_to_a_proxy_before_the_unbuffered_body_ended(server):
    # As over HTTP/1 (test_proxy.py): the first origin answers 502 on half
    # the body; error_page proxies again, the rest of the stream's body is
    # still read, and the second origin gets all of it.
    lsock, port = listener()
    origin = Origin(lambda conn, req: conn.sendall(response(200, b"got " + req.body)) or False)
    try:
        s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            location / {{
                proxy_request_buffering off;
                proxy_pass http://127.0.0.1:{port};
                proxy_intercept_errors on;
                error_page 502 = /pass;
            }}
            location /pass {{ proxy_pass http://{origin.addr}; }}
        }}
        """)
        c = H2Client(s.port)
        try:
            sid = c.request("/", method="POST", body=b"SEE-", end=False)
            answer_mid_request(lsock, b"SEE-", response(502, b"bad"))  # sent chunked: no length
            c.conn.send_data(sid, b"THIS", end_stream=True)
            c.flush()
            st, _, body = c.response(sid)
            assert (st, body) == (200, b"got SEE-THIS")
        finally:
            c.close()
        assert origin.wait_requests(1)[0].header("Transfer-Encoding") is None
    finally:
        origin.stop()
        lsock.close()


def test_an_empty_body_still_gets_its_file_with_client_body_in_file_only(server):
    origin = Origin()
    try:
        s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            location / {{
                client_body_in_file_only on;
                add_header X-Body-File $request_body_file;
                proxy_pass http://{origin.addr};
            }}
        }}
        """)
        c = H2Client(s.port)
        try:
            # HEADERS without END_STREAM, then one empty DATA frame that
            # ends the stream: a body of no bytes, which nginx keeps in an
            # (empty) file as any other with client_body_in_file_only on.
            sid = c.request("/up", method="POST", body=b"")
            st, h, got = c.response(sid)
            assert (st, got) == (200, b"POST /up\n")
            path = h["x-body-file"]
            assert path.startswith(str(s.prefix))
            assert os.path.getsize(path) == 0
        finally:
            c.close()
        assert origin.wait_requests(1)[0].body == b""
    finally:
        origin.stop()


def test_body_preread_size_is_the_initial_window_and_unread_bodies_are_bounded(server):
    s = server("""
    http2_body_preread_size 8k;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "no reader\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        def settings(evs):
            for e in evs:
                if isinstance(e, h2.events.RemoteSettingsChanged):
                    return e.changed_settings
        ch = c.until(settings)
        assert ch[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value == 8192
        assert ch[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 128
        sid = c.request("/", method="POST", end=False)
        c.conn.send_data(sid, b"a" * 8192)
        c.flush()
        st, _, body = c.response(sid)
        assert (st, body) == (200, b"no reader\n")
        # The body nobody reads is cut off (RST_STREAM NO_ERROR), and its
        # window never opened beyond what was preread.
        assert c.until(lambda evs: c.reset_of(sid) is not None) is True or c.reset_of(sid) == 0
        assert c.conn.local_flow_control_window(sid) == 0 if sid in c.conn.streams else True
    finally:
        c.close()


def test_a_body_before_our_settings_are_acknowledged_is_refused_if_preread_is_small(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        http2_body_preread_size 10;
        location / { return 200 "ok\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        # Sent before the client read (so acknowledged) our SETTINGS: its
        # window is still the default 65535, more than the 10 bytes a
        # stream may preread here. Retried once the client knows.
        early = c.request("/", method="POST", body=b"TEST")
        no_body = c.request("/")
        assert c.until(lambda evs: c.reset_of(early) is not None) is True
        assert c.reset_of(early) == h2.errors.ErrorCodes.REFUSED_STREAM
        assert c.response(no_body)[0] == 200
        st, _, body = c.response(c.request("/", method="POST", body=b"TEST"))
        assert (st, body) == (200, b"ok\n")
    finally:
        c.close()
    # With the default preread (64k, more than the default window), a
    # body sent at once is taken: test_request_body_proxied_to_an_http11_origin.


def test_client_max_body_size(server):
    origin = Origin()
    try:
        s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            client_max_body_size 1k;
            location / {{ proxy_pass http://{origin.addr}; }}
        }}
        """)
        c = H2Client(s.port)
        try:
            sid = c.request("/", method="POST", headers=[("content-length", "2000")], end=False)
            st, _, _ = c.response(sid)
            assert st == 413
            # No length said: found out as the bytes come.
            sid = c.request("/", method="POST", body=b"y" * 2000)
            st, _, _ = c.response(sid)
            assert st == 413
        finally:
            c.close()
        assert "client intended to send too large body: 2000 bytes" in s.error_log()
        assert origin.requests == []
    finally:
        origin.stop()


# ---- settings -------------------------------------------------------------------------

def test_keepalive_requests_ends_the_connection_with_goaway(server):
    s = server("""
    keepalive_requests 2;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        a = c.request("/")
        b = c.request("/")
        assert c.response(a)[0] == 200
        assert c.response(b)[0] == 200
        g = c.until(lambda evs: c.goaway())
        assert g.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert g.last_stream_id == 3
        assert c.until(lambda evs: c.closed)
    finally:
        c.close()


def test_idle_connection_closes_after_keepalive_timeout(server):
    s = server("""
    keepalive_timeout 1s;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        assert c.response(c.request("/"))[0] == 200
        g = c.until(lambda evs: c.goaway(), timeout=10)
        assert g.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert c.until(lambda evs: c.closed, timeout=10)
    finally:
        c.close()



def test_keepalive_timeout_0_serves_one_stream_then_goaway(server):
    s = server("""
    keepalive_timeout 0;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        # The first stream is served (the connection waited for it with
        # client_header_timeout), then GOAWAY names it as the last.
        sid = c.request("/")
        assert c.response(sid)[:3:2] == (200, b"ok\n")
        g = c.until(lambda evs: c.goaway(), timeout=10)
        assert (g.error_code, g.last_stream_id) == (h2.errors.ErrorCodes.NO_ERROR, sid)
    finally:
        c.close()


def test_keepalive_time_ends_the_connection_after_the_stream_that_passes_it(server):
    s = server("""
    keepalive_time 1s;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "$connection_requests\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        assert c.response(c.request("/"))[:3:2] == (200, b"1\n")
        assert c.goaway() is None
        time.sleep(1.1)  # past keepalive_time: no event says so
        sid = c.request("/")
        assert c.response(sid)[:3:2] == (200, b"2\n")
        g = c.until(lambda evs: c.goaway(), timeout=10)
        assert (g.error_code, g.last_stream_id) == (h2.errors.ErrorCodes.NO_ERROR, sid)
    finally:
        c.close()

def test_concurrent_streams_past_the_limit_are_refused(server):
    # An origin that takes connections and never answers: the streams stay.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    try:
        s = server(f"""
        http2_max_concurrent_streams 2;
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            location / {{ proxy_pass http://127.0.0.1:{lsock.getsockname()[1]}; proxy_read_timeout 30s; }}
        }}
        """)
        c = H2Client(s.port)
        try:
            # Sent before our SETTINGS are known to the client library.
            c.conn.local_settings  # noqa: B018
            c.conn.remote_settings.max_concurrent_streams = 100
            ids = [c.request(f"/{i}") for i in range(3)]
            code = c.until(lambda evs: c.reset_of(ids[2]))
            assert code == h2.errors.ErrorCodes.REFUSED_STREAM
            assert c.reset_of(ids[0]) is None and c.reset_of(ids[1]) is None
        finally:
            c.close()
    finally:
        lsock.close()


def test_a_zero_window_held_forever_is_cut_by_send_timeout(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        send_timeout 1s;
        root html;
    }
    """, files={"big.bin": b"z" * 200000})
    c = H2Client(s.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    try:
        sid = c.request("/big.bin")
        code = c.until(lambda evs: c.reset_of(sid), timeout=15)
        assert code == h2.errors.ErrorCodes.INTERNAL_ERROR
    finally:
        c.close()
    assert "client timed out (110: Connection timed out) while sending response to client" in s.error_log()


# ---- reload and shutdown ------------------------------------------------------------------

class RetryingLoad:
    """Requests on one HTTP/2 connection after another, `depth` streams in
    flight, as RFC 9113 6.8 lets a client do: after a GOAWAY, the streams
    above its last stream id were not processed and go again on a new
    connection; those at or below it must be answered. Anything else (a
    reset stream, a connection closed under a stream the server took, a
    status other than 200) is a lost request."""

    def __init__(self, port, depth=10):
        self.port = port
        self.depth = depth
        self.ok = 0
        self.retried = 0
        self.connections = 0
        self.lost = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            try:
                self.one_connection()
            except OSError as e:
                self.lost.append(f"connect: {e!r}")
                return

    def one_connection(self):
        c = H2Client(self.port)
        self.connections += 1
        inflight = {}
        last_ok = None
        try:
            while True:
                while last_ok is None and not self.stop and len(inflight) < self.depth:
                    inflight[c.request("/")] = True
                if self.stop and not inflight:
                    return
                if not c.read():
                    break
                for e in c.events:
                    if isinstance(e, h2.events.StreamEnded) and e.stream_id in inflight:
                        del inflight[e.stream_id]
                        self.ok += 1
                    elif isinstance(e, h2.events.ResponseReceived):
                        if dict(e.headers)[":status"] != "200":
                            self.lost.append(f"status {dict(e.headers)[':status']}")
                    elif isinstance(e, h2.events.StreamReset) and e.stream_id in inflight:
                        del inflight[e.stream_id]
                        if e.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                            self.retried += 1
                        else:
                            self.lost.append(f"reset {e.error_code}")
                    elif isinstance(e, h2.events.ConnectionTerminated):
                        last_ok = e.last_stream_id
                c.events.clear()
                if last_ok is not None:
                    # Not taken: sent again on the next connection.
                    for sid in [s for s in inflight if s > last_ok]:
                        del inflight[sid]
                        self.retried += 1
                    if not inflight:
                        return
        finally:
            c.close()
        # Closed: what the server took and did not answer is lost.
        for sid in inflight:
            if last_ok is None or sid <= last_ok:
                self.lost.append(f"stream {sid} closed unanswered")
            else:
                self.retried += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=30)


def test_no_request_lost_across_reloads(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT reuseport;
        http2 on;
        location / { return 200 "ok\\n"; }
    }
    """, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    s.start()
    with RetryingLoad(s.port) as load:
        assert poll(lambda: load.ok > 200, timeout=10)
        for i in range(5):
            conns = load.connections
            os.kill(s.master_pid(), signal.SIGHUP)
            # The retiring worker's GOAWAY moves the client to a new
            # connection (a new worker), where requests go on.
            assert poll(lambda: load.connections > conns, timeout=20), f"no GOAWAY after reload {i}"
            seen = load.ok
            assert poll(lambda: load.ok > seen + 100, timeout=20), f"no progress after reload {i}"
    print(f"\n[h2 reloads] ok={load.ok} retried={load.retried} connections={load.connections}")
    assert load.lost == []
    assert load.connections >= 6


def test_a_reload_sends_an_idle_connection_one_goaway_and_a_busy_one_two(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
        # The body is read whole before the origin is asked: one that has
        # not ended keeps its stream open.
        location /buffered { proxy_pass http://127.0.0.1:9; }
    }
    """)
    idle, busy = H2Client(s.port), H2Client(s.port)
    # Nagle would hold the open stream's HEADERS in the client's kernel
    # (behind an unacknowledged WINDOW_UPDATE) past the reload.
    busy.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sid = idle.request("/")
        assert idle.response(sid)[0] == 200
        assert busy.response(busy.request("/"))[0] == 200
        open_sid = busy.request("/buffered", method="POST", end=False)
        os.kill(s.master_pid(), signal.SIGHUP)
        # Idle: the GOAWAY names the last stream taken at once, and the
        # connection ends [nginx].
        g = idle.until(lambda evs: idle.goaway(), timeout=10)
        assert (g.error_code, g.last_stream_id) == (h2.errors.ErrorCodes.NO_ERROR, sid)
        assert idle.until(lambda evs: idle.closed, timeout=10)
        # Busy: first the notice with the largest id, so that requests on
        # their way are taken; after the grace, the last stream id.
        goaways = lambda: [e for e in busy.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert busy.until(lambda evs: len(goaways()) == 2, timeout=10)
        assert [g.last_stream_id for g in goaways()] == [2**31 - 1, open_sid]
    finally:
        idle.close()
        busy.close()


# ---- attacks, each with its bound ----------------------------------------------------------

ATTACK = """
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
        # The request body is read whole before the origin is asked
        # (proxy_request_buffering on): a body that never ends keeps its
        # stream open, whatever the machine's timing.
        location /buffered { proxy_pass http://127.0.0.1:9; }
    }
"""


def calm(c, timeout=20):
    """The GOAWAY the server sent, once the connection closed."""
    c.until(lambda evs: c.closed, timeout=timeout)
    return c.goaway()


def still_serves(port):
    c = H2Client(port)
    try:
        return c.response(c.request("/"))[0] == 200
    finally:
        c.close()


def test_rapid_reset_is_bounded(server):
    s = server(ATTACK)
    c = H2Client(s.port)
    try:
        hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", "/")]
        sent = 0
        for batch in range(40):
            for _ in range(100):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, hdrs)
                c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                sent += 1
            try:
                c.flush()
            except OSError:
                break
        g = calm(c)
    finally:
        c.close()
    assert g is not None
    assert g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert "client sent too many stream resets, closing connection" in s.error_log()
    # The work done was bounded: at most the budget of requests ran.
    lines = s.read_log("access.log").count(b"\n")
    assert lines <= 1001
    assert still_serves(s.port)


def test_continuation_flood_is_bounded(server):
    s = server(ATTACK)
    c = H2Client(s.port)
    try:
        block = c.conn.encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                                       (":path", "/")])
        f = hf.HeadersFrame(1)
        f.data = block
        c.send_raw(f.serialize())
        for _ in range(100):
            k = hf.ContinuationFrame(1)
            k.data = b"\x40\x01a\x01b"  # one more literal field, never the end
            try:
                c.send_raw(k.serialize())
            except OSError:
                break
        g = calm(c)
    finally:
        c.close()
    assert g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert "client sent too many CONTINUATION frames, closing connection" in s.error_log()


def test_hpack_bomb_past_the_header_list_limit(server):
    s = server("""
    large_client_header_buffers 2 4k;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        # 3000 bytes once in the dynamic table, then referenced by a byte
        # each: 200 of them decode to 600k.
        big = [("x-bomb", "b" * 3000)] * 200
        sid = c.request("/", headers=big)
        st, _, _ = c.response(sid)
        assert st == 431
        # The connection goes on.
        assert c.response(c.request("/"))[0] == 200
    finally:
        c.close()
    assert "client sent too large request" in s.error_log()


def test_a_field_longer_than_a_header_buffer_is_431(server):
    s = server("""
    large_client_header_buffers 4 512;
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "ok\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        # The list (2k) would take them; one field may not pass a buffer,
        # as an HTTP/1 header line may not [nginx].
        for name, value, status in (("x-v", "v" * 512, 200), ("x-v", "v" * 513, 431), ("n" * 513, "v", 431)):
            st, _, _ = c.response(c.request("/", headers=[(name, value)]))
            assert (len(name), len(value), st) == (len(name), len(value), status)
        assert c.response(c.request("/"))[0] == 200
    finally:
        c.close()
    assert "client sent too large request" in s.error_log()


@pytest.mark.parametrize("what,frame", [
    ("PING", lambda i: hf.PingFrame(0, opaque_data=i.to_bytes(8, "big"))),
    ("SETTINGS", lambda i: hf.SettingsFrame(0, settings={4: 65535})),
    ("PRIORITY", lambda i: hf.PriorityFrame(1, depends_on=0, stream_weight=16)),
    ("WINDOW_UPDATE", lambda i: hf.WindowUpdateFrame(0, window_increment=1)),
])
def test_control_frame_floods_are_bounded(server, what, frame):
    s = server(ATTACK)
    c = H2Client(s.port)
    try:
        sent = 0
        chunk = b"".join(frame(i).serialize() for i in range(500))
        while sent < 40000:
            try:
                c.send_raw(chunk)
            except OSError:
                break
            sent += 500
            # Read the answers (ACKs): this is a flood, not a client that
            # does not read.
            c.sock.setblocking(False)
            try:
                while c.read():
                    pass
            except OSError:
                pass
            c.sock.setblocking(True)
            if c.closed:
                break
        c.sock.settimeout(10)
        g = calm(c)
    finally:
        c.close()
    assert g is not None, f"no GOAWAY after {what} flood"
    assert g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert "client sent too many" in s.error_log()
    assert still_serves(s.port)


def flood_empty_data(s, c, sid):
    """20,000 empty DATA frames on stream sid; the GOAWAY that ends it."""
    try:
        chunk = b"".join(hf.DataFrame(sid).serialize() for _ in range(500))
        for _ in range(40):
            try:
                c.send_raw(chunk)
            except OSError:
                break
        g = calm(c)
    finally:
        c.close()
    assert poll(lambda: "client sent too many empty DATA frames, closing connection" in s.error_log())
    # The connection lingers after its GOAWAY (the flood is read and
    # dropped), so the client reads why.
    assert g is not None
    assert g.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert still_serves(s.port)


def test_empty_data_flood_is_bounded(server):
    s = server(ATTACK)
    c = H2Client(s.port)
    # On a stream that stays open: an answer before the flood would close
    # it (the test below floods a closed one).
    flood_empty_data(s, c, c.request("/buffered", method="POST", end=False))


def test_empty_data_flood_on_a_closed_stream_is_bounded(server):
    s = server(ATTACK)
    c = H2Client(s.port)
    # The stream is answered and closed on both sides: nghttp2 drops the
    # frames that still come for it without telling us, yet they count as
    # those to an open stream do.
    sid = c.request("/")
    assert c.response(sid)[0] == 200
    flood_empty_data(s, c, sid)


@pytest.mark.parametrize("headers", [
    [("connection", "keep-alive")],
    [("transfer-encoding", "chunked")],
    [(":bogus", "1")],
    [("te", "gzip")],
])
def test_invalid_and_connection_specific_fields_reset_the_stream(server, headers):
    s = server(ATTACK)
    c = H2Client(s.port, validate=False)
    try:
        sid = c.request("/", headers=headers)
        code = c.until(lambda evs: c.reset_of(sid))
        assert code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        # A stream error: the connection serves on.
        assert c.response(c.request("/"))[0] == 200
    finally:
        c.close()


@pytest.mark.parametrize("headers,status,echo", [
    # What an HTTP/1 hop could not carry as it is: 400, as nginx answers.
    ([("x-foo", "x-bar\r\nreferer: see-this")], 400, None),
    ([("x:foo", "1")], 400, None),
    ([("x foo", "1")], 400, None),
    ([("foo\x02", "1")], 400, None),
    ([("host", "other.example")], 400, None),
    # nghttp2 would drop these; nginx keeps the value, ignores the name.
    ([("x-foo", "a\x01b")], 200, "a\x01b|"),
    ([("x.foo", "1"), ("x-foo", "2")], 200, "2|"),
    ([("x_foo", "1")], 200, "|"),
])
def test_fields_nghttp2_would_drop_are_judged_as_nginx_does(server, headers, status, echo):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { return 200 "$http_x_foo|"; }
    }
    """)
    c = H2Client(s.port, validate=False)
    try:
        st, _, body = c.response(c.request("/", headers=headers))
        assert st == status
        if echo is not None:
            assert body == echo.encode()
        # A stream answered, not reset: the connection serves on.
        assert c.response(c.request("/"))[0] == 200
    finally:
        c.close()


def test_missing_pseudo_header_resets_the_stream(server):
    s = server(ATTACK)
    c = H2Client(s.port, validate=False)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "x")], end_stream=True)
        c.flush()
        assert c.until(lambda evs: c.reset_of(sid)) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    finally:
        c.close()


def test_a_client_that_never_reads_is_cut_by_send_timeout(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        send_timeout 1s;
        root html;
        location = / { return 200 "ok\\n"; }
    }
    """, files={"big.bin": b"r" * (4 << 20)})
    c = H2Client(s.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        ids = [c.request("/big.bin") for _ in range(20)]
        assert ids
        # Not reading: the server stops, then gives up on the connection.
        closed = poll(lambda: "client timed out (110: Connection timed out) while sending response to client"
                      in s.error_log(), timeout=15)
        assert closed
    finally:
        c.close()
    assert still_serves(s.port)


def test_trailers_end_the_stream(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        location / { add_trailer X-Trailer "t-$status"; return 200 "body\\n"; }
    }
    """)
    c = H2Client(s.port)
    try:
        sid = c.request("/", headers=[("te", "trailers")])
        st, _, body = c.response(sid)
        assert (st, body) == (200, b"body\n")
        trailers = [dict(e.headers) for e in c.events if isinstance(e, h2.events.TrailersReceived)]
        assert trailers == [{"x-trailer": "t-200"}]
    finally:
        c.close()


def h2_through_proxy(server, answer, location_extra):
    """Proxies one HTTP/2 GET to an origin that sends `answer` (bytes) as
    it is; returns (status, body, the client's h2 events)."""
    def handler(conn, req):
        conn.sendall(answer)
        return False
    o = Origin(handler)
    try:
        s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            location / {{ proxy_pass http://{o.addr}; {location_extra} }}
        }}
        """)
        c = H2Client(s.port)
        try:
            sid = c.request("/", headers=[("te", "trailers")])
            st, _, got = c.response(sid)
            return st, got, list(c.events)
        finally:
            c.close()
    finally:
        o.stop()


def test_proxied_trailers_end_the_stream(server):
    # proxy_pass_trailers: an HTTP/1.1 origin's trailer section becomes the
    # stream's trailing HEADERS, with END_STREAM.
    st, body, events = h2_through_proxy(
        server, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
                b"4\r\nbody\r\n0\r\ngrpc-status: 0\r\nx-detail: ok\r\n\r\n", "proxy_pass_trailers on;")
    assert (st, body) == (200, b"body")
    trailers = [dict(e.headers) for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers == [{"grpc-status": "0", "x-detail": "ok"}]


def test_proxied_early_hints_come_before_the_response(server):
    # An origin's 103, where "early_hints" lets it through, is a HEADERS
    # frame without END_STREAM ahead of the response's.
    st, body, events = h2_through_proxy(
        server, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "early_hints $http2;")
    assert (st, body) == (200, b"ok")
    hints = [dict(e.headers) for e in events if isinstance(e, h2.events.InformationalResponseReceived)]
    assert hints == [{":status": "103", "link": "</s.css>; rel=preload"}]


# ---- WebSocket over HTTP/2 (RFC 8441) -------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsOrigin(Origin):
    """An HTTP/1.1 WebSocket origin: /ws/echo answers 101 and echoes every
    byte until the proxy closes its half (then closes its own), /ws/bye
    answers 101, says "bye" and closes, /ws/refuse answers 403. What each
    tunnel saw ends up in self.ends: "eof" (the proxy closed its half) or
    "reset"."""

    def __init__(self):
        self.ends = []
        super().__init__(handler=self.handle, timeout=15)

    def handle(self, conn, req):
        path = req.target.partition("?")[0]
        if path == "/ws/refuse":
            conn.sendall(response(403, b"no websockets here\n", [("Content-Type", "text/plain")], reason="Forbidden"))
            return False
        key = req.header("Sec-WebSocket-Key") or ""
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n")
        if req.header("Sec-WebSocket-Protocol"):
            head += "Sec-WebSocket-Protocol: chat\r\n"
        conn.sendall((head + "\r\n").encode())
        if path == "/ws/bye":
            conn.sendall(b"bye")
            conn.shutdown(socket.SHUT_WR)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    self.ends.append("eof")
                    break
                if path == "/ws/echo":
                    conn.sendall(data)
        except (ConnectionResetError, socket.timeout):
            self.ends.append("reset")
        return False

    def wait_ends(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.ends) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.ends)


WS_CONF = """
    log_format p '$request $status $http2';
    access_log logs/access.log p;
    server {{
        listen 127.0.0.1:PORT;
        http2 on;
        http2_body_preread_size 4k;
        location /ws/ {{
            proxy_pass http://{origin};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1s;
        }}
        location /static/ {{ return 200 "not a tunnel\\n"; }}
    }}
"""


def lines(s, n):
    return [line.rstrip("\n") for line in access_lines(s, n)]


def ws_client(port, window=None):
    """A raw client that waited for the server's SETTINGS (RFC 8441 3:
    no extended CONNECT before SETTINGS_ENABLE_CONNECT_PROTOCOL)."""
    settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window} if window else None
    c = H2Client(port, settings=settings)
    c.until(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    return c


def ws_open(c, path, protocol="websocket", extra=()):
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                              (":authority", "localhost"), (":path", path),
                              ("sec-websocket-version", "13"), *extra])
    c.flush()
    return sid


def ws_head(c, sid):
    def got(evs):
        for e in evs:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                return dict(e.headers)
        return None
    h = c.until(got)
    assert h is not None, c.events
    return h


def ws_data(c, sid):
    return b"".join(e.data for e in c.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)


def ws_ended(c, sid):
    return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in c.events)


@pytest.fixture
def ws_server(server):
    """A WsOrigin and a server proxying to it (WS_CONF): (origin, server);
    the origin is stopped after the test."""
    origin = WsOrigin()
    try:
        yield origin, server(WS_CONF.format(origin=origin.addr))
    finally:
        origin.stop()


def test_websocket_over_h2_is_proxied_to_an_http11_origin(ws_server):
    origin, s = ws_server
    c = ws_client(s.port)
    try:
        assert c.conn.remote_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        sid = ws_open(c, "/ws/echo?room=1", extra=[("sec-websocket-protocol", "chat")])
        h = ws_head(c, sid)
        # RFC 8441 5: the origin's 101 is a 200 that leaves the stream open.
        assert h[":status"] == "200"
        assert h["sec-websocket-protocol"] == "chat"
        assert "content-length" not in h and "sec-websocket-accept" not in h
        c.conn.send_data(sid, b"hello over h2")
        c.flush()
        assert c.until(lambda evs: ws_data(c, sid) == b"hello over h2")
        # The client closes its half: the origin sees EOF, closes its
        # own, and the stream ends both ways.
        c.conn.end_stream(sid)
        c.flush()
        assert c.until(lambda evs: ws_ended(c, sid))
        assert c.reset_of(sid) is None
        # The connection serves on.
        st, _, body = c.response(c.request("/static/x"))
        assert (st, body) == (200, b"not a tunnel\n")
    finally:
        c.close()
    assert origin.wait_ends(1) == ["eof"]
    req = origin.requests[0]
    # What an HTTP/1.1 client opening a WebSocket sends (RFC 6455 4.1).
    assert (req.method, req.target, req.version) == ("GET", "/ws/echo?room=1", "HTTP/1.1")
    assert req.header("Upgrade") == "websocket"
    assert req.header("Connection") == "upgrade"
    assert req.header("Host") == origin.addr  # $proxy_host, as for HTTP/1.1
    assert req.header("Sec-WebSocket-Version") == "13"
    assert req.header("Sec-WebSocket-Protocol") == "chat"
    assert len(base64.b64decode(req.header("Sec-WebSocket-Key"), validate=True)) == 16
    assert req.header("Content-Length") is None and req.header("Transfer-Encoding") is None
    assert lines(s, 2) == ["GET /ws/echo?room=1 HTTP/2.0 200 h2c", "GET /static/x HTTP/2.0 200 h2c"]


def test_websocket_over_h2_a_fresh_key_for_each_tunnel(ws_server):
    origin, s = ws_server
    c = ws_client(s.port)
    try:
        a = ws_open(c, "/ws/echo", extra=[("sec-websocket-key", "c2VudCBieSB0aGUgY2xpZW50")])
        b = ws_open(c, "/ws/echo")
        assert ws_head(c, a)[":status"] == "200" and ws_head(c, b)[":status"] == "200"
        for sid in (a, b):
            c.conn.end_stream(sid)
        c.flush()
        assert c.until(lambda evs: ws_ended(c, a) and ws_ended(c, b))
    finally:
        c.close()
    keys = [r.header("Sec-WebSocket-Key") for r in origin.wait_requests(2)]
    assert keys[0] != keys[1]
    assert "c2VudCBieSB0aGUgY2xpZW50" not in keys


def test_websocket_over_h2_large_messages_under_small_windows(ws_server):
    origin, s = ws_server
    # 4k windows both ways (http2_body_preread_size, the client's
    # SETTINGS): a megabyte each way goes as the windows open.
    c = ws_client(s.port, window=4096)
    try:
        sid = ws_open(c, "/ws/echo")
        assert ws_head(c, sid)[":status"] == "200"
        msg = os.urandom(1024 * 1024)
        c.send_body(sid, msg, end=False)
        assert c.until(lambda evs: len(ws_data(c, sid)) >= len(msg), timeout=30)
        assert ws_data(c, sid) == msg
        c.conn.end_stream(sid)
        c.flush()
        assert c.until(lambda evs: ws_ended(c, sid))
    finally:
        c.close()


def test_websocket_over_h2_the_origin_closes_first(ws_server):
    origin, s = ws_server
    c = ws_client(s.port)
    try:
        sid = ws_open(c, "/ws/bye")
        assert ws_head(c, sid)[":status"] == "200"
        # The origin's close is our END_STREAM; the client's half stays
        # open until it closes it.
        assert c.until(lambda evs: ws_ended(c, sid))
        assert ws_data(c, sid) == b"bye"
        c.conn.end_stream(sid)
        c.flush()
        assert origin.wait_ends(1) == ["eof"]
        assert c.reset_of(sid) is None
    finally:
        c.close()
    assert lines(s, 1) == ["GET /ws/bye HTTP/2.0 200 h2c"]


def test_websocket_over_h2_a_reset_from_the_client_closes_the_origin(ws_server):
    origin, s = ws_server
    c = ws_client(s.port)
    try:
        sid = ws_open(c, "/ws/echo")
        assert ws_head(c, sid)[":status"] == "200"
        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        assert origin.wait_ends(1) == ["eof"]
    finally:
        c.close()
    assert lines(s, 1) == ["GET /ws/echo HTTP/2.0 200 h2c"]


def test_websocket_over_h2_an_idle_tunnel_is_cut_by_proxy_read_timeout(ws_server):
    origin, s = ws_server
    c = ws_client(s.port)
    try:
        sid = ws_open(c, "/ws/echo")
        assert ws_head(c, sid)[":status"] == "200"
        # Nothing either way for proxy_read_timeout (1s): the tunnel is
        # broken off, and the client told so with RST_STREAM(CANCEL).
        assert c.until(lambda evs: c.reset_of(sid) is not None, timeout=10)
        assert c.reset_of(sid) == h2.errors.ErrorCodes.CANCEL
    finally:
        c.close()
    assert origin.wait_ends(1) == ["eof"]


def test_websocket_over_h2_refusals(ws_server):
    origin, s = ws_server
    c = ws_client(s.port)
    try:
        # The origin's own answer goes as it is, and the stream ends.
        st, h, body = c.response(ws_open(c, "/ws/refuse"))
        assert (st, body) == (403, b"no websockets here\n")
        # A protocol this server does not tunnel: 501.
        st, _, _ = c.response(ws_open(c, "/ws/echo", protocol="connect-udp"))
        assert st == 501
        # A location that answers without tunnelling: 501, not its 200
        # (the client would take that for an open WebSocket).
        st, h, body = c.response(ws_open(c, "/static/x"))
        assert (st, body) == (501, b"")
    finally:
        c.close()
    assert [r.target for r in origin.wait_requests(1)] == ["/ws/refuse"]
    assert lines(s, 3) == ["GET /ws/refuse HTTP/2.0 403 h2c",
                           "CONNECT /ws/echo HTTP/2.0 501 h2c",
                           "GET /static/x HTTP/2.0 501 h2c"]



def test_websocket_over_h2_outlives_a_reload_until_worker_shutdown_timeout(server):
    origin = WsOrigin()
    try:
        s = server(WS_CONF.format(origin=origin.addr).replace("proxy_read_timeout 1s;", "proxy_read_timeout 60s;"),
                   start=False)
        s.conf.write_text(s.conf.read_text().replace("worker_processes 1;",
                                                     "worker_processes 1;\nworker_shutdown_timeout 3s;"))
        s.start()
        c = ws_client(s.port)
        try:
            sid = ws_open(c, "/ws/echo")
            assert ws_head(c, sid)[":status"] == "200"
            os.kill(s.master_pid(), signal.SIGHUP)
            # The retiring worker's GOAWAY names the tunnel's stream as
            # taken: it goes on...
            assert c.until(lambda evs: any(isinstance(e, h2.events.ConnectionTerminated) and
                                           e.last_stream_id == sid for e in evs), timeout=15)
            c.conn.send_data(sid, b"after the reload")
            c.flush()
            assert c.until(lambda evs: ws_data(c, sid) == b"after the reload")
            # ...until worker_shutdown_timeout ends the worker, and it.
            assert c.until(lambda evs: c.closed, timeout=20)
        finally:
            c.close()
        assert origin.wait_ends(1) == ["eof"]
    finally:
        origin.stop()

def test_requests_running_at_worker_shutdown_timeout_are_logged(server):
    # A graceful stop that worker_shutdown_timeout cuts short ends the
    # requests still waiting on their origin as a client's going away
    # would: a log line each, 499 [nginx logs them too].
    lsock, port = listener(backlog=8)
    try:
        s = server(f"""
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            location / {{ proxy_pass http://127.0.0.1:{port}; proxy_read_timeout 30s; }}
        }}
        """, start=False)
        s.conf.write_text(s.conf.read_text().replace("worker_processes 1;",
                                                     "worker_processes 1;\nworker_shutdown_timeout 200ms;"))
        s.start()
        c = H2Client(s.port)
        h1 = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        try:
            c.request("/h2")
            h1.sendall(b"GET /h1 HTTP/1.1\r\nHost: x\r\n\r\n")
            held = [lsock.accept()[0] for _ in range(2)]  # both wait on the origin
            os.kill(s.master_pid(), signal.SIGQUIT)
            s.proc.wait(timeout=20)
            for conn in held:
                conn.close()
        finally:
            c.close()
            h1.close()
        lines = sorted(s.read_log("access.log").decode().splitlines())
        assert len(lines) == 2, lines
        assert '"GET /h1 HTTP/1.1" 499 ' in lines[0] and '"GET /h2 HTTP/2.0" 499 ' in lines[1], lines
    finally:
        lsock.close()


# ---- client_header_timeout for a header block that never ends --------------------------------

@pytest.mark.parametrize("trickle", [0, 40])
def test_a_header_block_that_never_ends_is_cut_by_client_header_timeout(server, trickle):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        http2 on;
        client_header_timeout 1s;
        keepalive_timeout 4s;
        error_log logs/error.log info;
        location / { return 200 "x"; }
    }
    """)
    c = H2Client(s.port)
    try:
        # Our SETTINGS acknowledged first: no frame of the client's may
        # come between the header block's frames.
        c.until(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
        block = c.conn.encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                                       (":path", "/")])
        f = hf.HeadersFrame(1)  # no END_HEADERS
        f.data = block
        c.send_raw(f.serialize())
        # The stream is reset when client_header_timeout ends [nginx]; the
        # connection, idle then, ends at keepalive_timeout, which
        # CONTINUATIONs trickled (never the last) do not extend.
        raw = RawFrames(c.sock)
        sent = 0
        while sent < trickle and not raw.goaway():
            k = hf.ContinuationFrame(1)
            k.data = b"\x40\x01a\x01b"
            c.send_raw(k.serialize())
            sent += 1
            raw.read(0.25)
        assert raw.read_until(lambda: raw.goaway(), 10)
        assert [(f.stream_id, f.error_code) for f in raw.frames if isinstance(f, hf.RstStreamFrame)] == [(1, 1)]
        # Trickled: past nghttp2's 8 CONTINUATIONs per block the client is
        # told to calm down; else keepalive_timeout ends the idle connection.
        assert raw.goaway().error_code == (11 if trickle else 0), s.error_log()
    finally:
        c.close()
    if trickle:
        assert sent < trickle
    assert "client timed out (110: Connection timed out) while reading client request headers" in s.error_log()


class RawFrames:
    """Frames from the server, parsed without python-h2's state machine
    (which refuses frames for a stream it did not open itself)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.frames = []

    def read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return True
        if not data:
            return False
        self.buf += data
        while len(self.buf) >= 9:
            f, n = hf.Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + n:
                break
            f.parse_body(memoryview(self.buf[9:9 + n]))
            self.frames.append(f)
            self.buf = self.buf[9 + n:]
        return True

    def read_until(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline:
            if not self.read(0.25):
                break
        return pred()

    def goaway(self):
        return next((f for f in self.frames if isinstance(f, hf.GoAwayFrame)), None)


# ---- an orphaned cache fill outlives its connection ---------------------------------------------

def test_a_fill_others_wait_for_outlives_the_h2_connection_that_asked(server, tmp_path):
    # As over HTTP/1 (test_cache.py): the client whose request fills the
    # cache closes its whole connection; the fill goes on, and the request
    # waiting on the lock gets the response without a second origin request.
    gone = threading.Event()

    def handler(conn, req):
        conn.sendall(response(200, b"", [("Cache-Control", "max-age=60"), ("Content-Length", "100000")],
                              length=False))
        conn.sendall(b"a" * 1000)
        gone.wait(10)
        conn.sendall(b"a" * 99000)
        return False

    origin = Origin(handler)
    try:
        s = server(f"""
        log_format c '$request $status $upstream_cache_status';
        access_log logs/access.log c;
        proxy_cache_path {{CACHE}} levels=1:2 keys_zone=one:1m;
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            error_log logs/error.log info;
            location / {{
                proxy_pass http://{origin.addr};
                proxy_cache one;
                proxy_cache_lock on;
                proxy_cache_lock_timeout 20s;
                add_header X-Cache $upstream_cache_status always;
            }}
        }}
        """.replace("{CACHE}", str(tmp_path / "cache_h2")))
        a = H2Client(s.port)
        sid = a.request("/w")
        assert a.until(lambda evs: any(isinstance(e, h2.events.DataReceived) and e.stream_id == sid for e in evs))
        waiter = []
        b = H2Client(s.port)
        try:
            t = threading.Thread(target=lambda: waiter.append(b.response(b.request("/w"), timeout=20)))
            t.start()
            # The waiter is (most likely) on the lock by now; the outcome is
            # the same if it came after the filling client went.
            time.sleep(0.3)
            a.close()
            assert poll(lambda: "client closed stream; the response goes on for the cache" in s.error_log())
            gone.set()
            t.join(20)
            st, _, body = waiter[0]
            assert (st, body) == (200, b"a" * 100000)
            st, h, body = b.response(b.request("/w"))
            assert (st, h["x-cache"], body) == (200, "HIT", b"a" * 100000)
        finally:
            b.close()
        assert len(origin.requests) == 1
        assert sorted(lines(s, 3)) == ["GET /w HTTP/2.0 200 HIT", "GET /w HTTP/2.0 200 HIT", "GET /w HTTP/2.0 200 MISS"]
    finally:
        origin.stop()
