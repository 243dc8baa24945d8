"""Origins and WebSocket helpers for test_process.py: the master/worker
process model tested with the load going through proxy_pass.

A NamedOrigin is an origins.Origin (a Python thread per connection on a
loopback port) that answers every request with its own name and the
request-target it received, so that a client can tell which origin and
which generation of the configuration (by the URI the location sent)
served each response. It also counts the connections open right now, to
check that retired workers leave no upstream connection behind.

Paths it knows:

  /slow/...   a body of TRICKLE_SIZE bytes sent in TRICKLE_PIECES pieces
              over TRICKLE_SECONDS (Content-Length framing); its SHA-256
              is TRICKLE_SHA256
  a WebSocket handshake (Upgrade: websocket): 101, a "welcome" text
              frame, then every frame echoed until a close frame
  anything else: 200, body "<name> <target>\\n" + PAYLOAD, kept alive
              unless the request says "Connection: close"
"""

import base64
import hashlib
import os
import socket
import struct
import time

from origins import Closed, Origin, Reader, response

# 4 KiB after the first line of every ordinary response.
PAYLOAD = bytes(range(256)) * 16

TRICKLE_SECONDS = 5.0
TRICKLE_PIECES = 50
TRICKLE_PIECE = 16 * 1024
TRICKLE_SIZE = TRICKLE_PIECES * TRICKLE_PIECE


def trickle_piece(i):
    """Piece i of the slow body: distinct bytes in every piece, so that a
    piece lost, doubled or reordered changes the checksum."""
    seed = hashlib.sha256(b"trickle %d" % i).digest()
    return seed * (TRICKLE_PIECE // len(seed))


TRICKLE_SHA256 = hashlib.sha256(b"".join(trickle_piece(i) for i in range(TRICKLE_PIECES))).hexdigest()


def ordinary_body(name, target):
    return f"{name} {target}\n".encode() + PAYLOAD


def parse_ordinary(body):
    """(origin name, target) of an ordinary response, or None if the body
    is not one whole."""
    line, sep, rest = body.partition(b"\n")
    if not sep or rest != PAYLOAD:
        return None
    name, _, target = line.decode("latin-1").partition(" ")
    return name, target


# ---- WebSocket (RFC 6455, just enough) -------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(payload, opcode=1, mask=True):
    head = bytes([0x80 | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def ws_read(reader):
    """(opcode, payload) of the next frame."""
    b0, b1 = reader.exactly(2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack("!H", reader.exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.exactly(8))[0]
    key = reader.exactly(4) if b1 & 0x80 else None
    data = reader.exactly(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0f, data


def ws_echo(conn, req, name):
    key = req.header("Sec-WebSocket-Key") or ""
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" +
                 ws_frame(b"welcome from " + name.encode(), mask=False))
    reader = Reader(conn)
    while True:
        op, data = ws_read(reader)
        conn.sendall(ws_frame(data, opcode=op, mask=False))
        if op == 8:
            return False


class WsClient:
    """A WebSocket client connection through the proxy."""

    def __init__(self, port, path="/ws/chat", timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.reader = Reader(self.sock)
        self.status = self.reader.line()
        self.headers = {}
        while True:
            h = self.reader.line()
            if not h:
                break
            n, _, v = h.decode("latin-1").partition(":")
            self.headers[n.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert self.status.startswith(b"HTTP/1.1 101"), self.status
        assert self.headers.get("sec-websocket-accept") == want, self.headers
        op, self.welcome = ws_read(self.reader)
        assert op == 1 and self.welcome.startswith(b"welcome from "), (op, self.welcome)
        self.echoed = 0

    @property
    def worker(self):
        return int(self.headers["x-worker"])

    def echo(self, payload):
        self.sock.sendall(ws_frame(payload))
        assert ws_read(self.reader) == (1, payload)
        self.echoed += 1

    def close(self, code=b"\x03\xe8"):
        """The closing handshake; True if the proxy then closes cleanly."""
        self.sock.sendall(ws_frame(code, opcode=8))
        assert ws_read(self.reader) == (8, code)
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        finally:
            self.sock.close()

    def wait_cut(self, timeout):
        """Waits for the proxy to cut the connection: returns how (EOF or
        reset)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return "reset"
        finally:
            self.sock.close()
        assert data == b"", data
        return "eof"


# ---- the origins --------------------------------------------------------------------------

class NamedOrigin(Origin):
    def __init__(self, name, timeout=60.0):
        self.name = name
        self.open = 0  # connections open now (Origin counts those ever accepted)
        self.upgrades = 0
        self.trickles = 0
        super().__init__(self._handle, keep_body=False, timeout=timeout)

    def _serve(self, conn):
        with self.lock:
            self.open += 1
        try:
            super()._serve(conn)
        finally:
            with self.lock:
                self.open -= 1

    def _handle(self, conn, req):
        # The raw bytes are not kept (self.requests keeps every request,
        # and 50 reloads under load make thousands).
        req.raw = b""
        close = (req.header("Connection") or "").lower() == "close"
        if (req.header("Upgrade") or "").lower() == "websocket":
            with self.lock:
                self.upgrades += 1
            try:
                return ws_echo(conn, req, self.name)
            except Closed:
                return False
        if req.target.startswith("/slow/"):
            with self.lock:
                self.trickles += 1
            head = response(200, b"", [("X-Origin", self.name)], close=close, length=False)
            conn.sendall(head[:-2] + b"Content-Length: %d\r\n\r\n" % TRICKLE_SIZE)
            start = time.monotonic()
            for i in range(TRICKLE_PIECES):
                conn.sendall(trickle_piece(i))
                ahead = start + TRICKLE_SECONDS * (i + 1) / TRICKLE_PIECES - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            return not close
        conn.sendall(response(200, ordinary_body(self.name, req.target), [("X-Origin", self.name)], close=close))
        return not close
