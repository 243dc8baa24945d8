"""Origin servers for proxy tests: real sockets in Python threads.

An Origin listens on a free loopback port and serves each connection in a
thread of its own with a handler: handler(conn, req) is called for each
request read from the connection and either answers (returning True to
keep the connection for another request, False to close it) or does
whatever the test needs with the raw socket. Every request is recorded
(method, target, header fields in order, body bytes, raw bytes) and so is
the number of connections accepted, so tests assert what the origin saw.

Everything is bounded in time: sockets have timeouts, stop() closes the
listening socket and every connection and joins the threads.
"""

import os
import socket
import threading
import time


class Request:
    def __init__(self, method, target, version, headers, body, raw):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [(name, value)] as received
        self.body = body  # decoded
        self.raw = raw  # the bytes of the head and body as received

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def names(self):
        return [n.lower() for n, _ in self.headers]


class Closed(Exception):
    pass


class Reader:
    """Buffered reads from a socket."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""
        self.raw = b""

    def _fill(self):
        data = self.conn.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        self.raw += line + b"\r\n"
        return line

    def exactly(self, n, keep_raw=True):
        parts = []
        while n > 0:
            if not self.buf:
                self._fill()
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            n -= len(take)
            parts.append(take)
        data = b"".join(parts)
        if keep_raw:
            self.raw += data
        return data


def read_request(reader, keep_body=True):
    """The next request on the connection, or None when the peer closed
    before one started."""
    reader.raw = b""
    try:
        line = reader.line()
    except Closed:
        return None
    method, target, version = line.decode("latin-1").split(" ", 2)
    headers = []
    while True:
        h = reader.line()
        if not h:
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers.append((name, value.strip()))
    req = Request(method, target, version, headers, b"", b"")
    te = req.header("Transfer-Encoding")
    cl = req.header("Content-Length")
    body = []
    if te and "chunked" in te.lower():
        while True:
            size = int(reader.line().split(b";")[0], 16)
            if size == 0:
                while reader.line():
                    pass
                break
            chunk = reader.exactly(size, keep_raw=keep_body)
            if keep_body:
                body.append(chunk)
            else:
                req.body_len = getattr(req, "body_len", 0) + size
            reader.line()
    elif cl is not None:
        n = int(cl)
        if keep_body:
            body.append(reader.exactly(n))
        else:
            # Large bodies: count them without keeping them.
            left = n
            while left:
                chunk = reader.exactly(min(left, 1 << 20), keep_raw=False)
                left -= len(chunk)
            req.body_len = n
    req.body = b"".join(body)
    req.raw = reader.raw
    return req


def response(status=200, body=b"", headers=(), reason="OK", close=False, length=True):
    """Bytes of a simple response."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{n}: {v}" for n, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def ok_handler(conn, req):
    """200 with a body naming the request; keeps the connection when the
    request allows it."""
    body = f"{req.method} {req.target}\n".encode()
    close = (req.header("Connection") or "").lower() == "close"
    conn.sendall(response(200, body, [("Content-Type", "text/plain")], close=close))
    return not close


class Origin:
    def __init__(self, handler=ok_handler, keep_body=True, timeout=10.0, unix_path=None, port=0):
        self.handler = handler
        self.keep_body = keep_body
        self.timeout = timeout
        self.requests = []
        self.connections = 0
        self.errors = []
        self.lock = threading.Lock()
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(unix_path))
            # Connecting takes write permission on the socket: the workers
            # may be another user (nobody, when the tests run as root), as
            # for a real application server's socket.
            os.chmod(unix_path, 0o666)
            self.port = None
            self.addr = f"unix:{unix_path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # port: a given one, to start an origin again where it was.
            self.sock.bind(("127.0.0.1", port))
            self.port = self.sock.getsockname()[1]
            self.addr = f"127.0.0.1:{self.port}"
        self.sock.listen(128)
        self.conns = []
        self.threads = []
        self.stopping = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(self.timeout)
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            with self.lock:
                self.threads.append(t)

    def _serve(self, conn):
        reader = Reader(conn)
        try:
            while not self.stopping:
                req = read_request(reader, self.keep_body)
                if req is None:
                    break
                with self.lock:
                    self.requests.append(req)
                if not self.handler(conn, req):
                    break
        except (OSError, Closed, ValueError) as e:
            if not self.stopping:
                self.errors.append(repr(e))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def wait_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= n:
                return self.requests[:n]
            time.sleep(0.01)
        raise AssertionError(f"origin got {len(self.requests)} requests, wanted {n}")

    def stop(self):
        self.stopping = True
        try:
            # shutdown() wakes the thread blocked in accept(); close() would not.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
            threads = list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for t in threads:
            t.join(timeout=5)


class GatedRecorder:
    """An origin that records each request and answers `reply` (bytes) at
    once, or, for a target containing `gated`, once `gate` is set: what a
    background request (a mirror, a post action) brings, and a way to keep
    one running."""

    def __init__(self, reply, gated):
        self.gate = threading.Event()
        self.reply = reply
        self.gated = gated
        self.origin = Origin(self.handle)
        self.port = self.origin.port

    def handle(self, conn, req):
        if self.gated in req.target:
            self.gate.wait(20)
        conn.sendall(self.reply)
        return True

    @property
    def requests(self):
        return self.origin.requests

    def wait(self, n):
        return self.origin.wait_requests(n)

    def stop(self):
        self.gate.set()
        self.origin.stop()


def closed_port():
    """A loopback port nothing listens on (connect: refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listener(backlog=1, timeout=10.0):
    """A bare listening socket on 127.0.0.1 and its port, for a test that
    plays the origin by hand (the caller closes it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.settimeout(timeout)
    return sock, sock.getsockname()[1]


def answer_mid_request(lsock, seen, reply):
    """Accepts one connection, reads until `seen` came, sends `reply`, then
    reads until the proxy closes its end (it took the reply)."""
    conn, _ = lsock.accept()
    with conn:
        conn.settimeout(10)
        got = b""
        while seen not in got:
            data = conn.recv(65536)
            if not data:
                raise AssertionError(f"closed before {seen!r}; got {got!r}")
            got += data
        conn.sendall(reply)
        while conn.recv(65536):
            pass
