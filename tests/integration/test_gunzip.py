"""gunzip: a gzip-encoded response inflated for a client that does not
accept gzip, from a proxied origin and from "gzip_static always".

Origins are threaded Python servers (origins.py) that send gzip made with
Python's gzip/zlib; what the client gets is compared with the original.
Corrupt and truncated bodies must be cut (the client sees no final chunk)
and logged; a gzip bomb must not grow the worker's memory.
"""

import gzip
import socket
import threading
import zlib

import pytest

from gh_server import poll, server  # noqa: F401  (server: the fixture)
from gh_server import Response
from origins import Reader, response
from test_proxy import sanitized

TEXT = b"".join(b"X%03dXXXXXX" % i for i in range(100)) * 20  # 20000 bytes
GZ = gzip.compress(TEXT)


def gz_handler(body, headers=(), status=200):
    def handler(conn, req):
        conn.sendall(response(status, body, [("Content-Encoding", "gzip"), *headers], close=True))
        return False
    return handler


def conf(o, extra=""):
    return f"""
server {{
    listen 127.0.0.1:PORT;
    server_name localhost;
    location / {{
        gunzip on;
        proxy_pass http://{o.addr};
        {extra}
    }}
    location /off/ {{
        proxy_pass http://{o.addr};
    }}
}}
"""


def dechunk(body):
    """The payload of a chunked body, and whether the last chunk came."""
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        n = int(size_line.split(b";")[0], 16)
        if n == 0:
            return out, True
        out += rest[:n]
        body = rest[n + 2:]
    return out, False


def test_inflated_for_a_client_without_gzip(server, origin):
    o = origin(gz_handler(GZ, [("ETag", '"abc"'), ("Content-Type", "text/plain"), ("Accept-Ranges", "bytes")]))
    s = server(conf(o))
    r = s.get("/t")
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.header("Content-Length") is None
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.header("ETag") == 'W/"abc"'
    assert r.header("Content-Type") == "text/plain"
    body, complete = dechunk(r.body)
    assert complete
    assert body == TEXT


def test_passed_for_a_gzip_client(server, origin):
    o = origin(gz_handler(GZ, [("ETag", '"abc"')]))
    s = server(conf(o))
    r = s.get("/t", [("Accept-Encoding", "gzip, deflate")])
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Length") == str(len(GZ))
    assert r.header("ETag") == '"abc"'
    assert gzip.decompress(r.body) == TEXT


@pytest.mark.parametrize("ae", ["gzip;q=0", "br, zstd", "identity"])
def test_refused_gzip_is_inflated(server, origin, ae):
    o = origin(gz_handler(GZ))
    s = server(conf(o))
    r = s.get("/t", [("Accept-Encoding", ae)])
    assert r.header("Content-Encoding") is None
    assert dechunk(r.body) == (TEXT, True)


def test_http10_and_via_are_inflated(server, origin):
    """nginx's defaults (gzip_http_version 1.1, gzip_proxied off): such a
    client gets the identity body even if it asks for gzip."""
    s = server(conf(origin(gz_handler(GZ))))
    raw = s.raw(b"GET /t HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n")
    r = Response(raw)
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT  # close-delimited for HTTP/1.0
    r = s.get("/t", [("Accept-Encoding", "gzip"), ("Via", "1.1 cache.example")])
    assert r.header("Content-Encoding") is None
    assert dechunk(r.body) == (TEXT, True)


def test_off_passes_gzip_through(server, origin):
    o = origin(gz_handler(GZ))
    s = server(conf(o))
    r = s.get("/off/t")
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == GZ


def test_other_encodings_untouched(server, origin):
    def handler(conn, req):
        conn.sendall(response(200, b"deflated?", [("Content-Encoding", "br")], close=True))
        return False
    s = server(conf(origin(handler)))
    r = s.get("/t")
    assert r.header("Content-Encoding") == "br"
    assert r.body == b"deflated?"


def test_error_status_is_inflated_too(server, origin):
    s = server(conf(origin(gz_handler(GZ, status=404))))
    r = s.get("/t")
    assert r.status == 404
    assert dechunk(r.body) == (TEXT, True)


def test_multiple_members_are_one_body(server, origin):
    s = server(conf(origin(gz_handler(GZ + gzip.compress(b"second member\n")))))
    r = s.get("/t")
    assert dechunk(r.body) == (TEXT + b"second member\n", True)


def test_empty_body(server, origin):
    s = server(conf(origin(gz_handler(b""))))
    r = s.get("/t")
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert dechunk(r.body) == (b"", True)


def test_head_loses_the_encoding(server, origin):
    s = server(conf(origin(gz_handler(GZ))))
    raw = s.raw(s.request_bytes("/t", method="HEAD"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Encoding" not in head
    assert b"Content-Length" not in head
    assert body == b""


def cut_reply(s):
    """What a client gets for a body the filter must cut: nothing, or a
    200 head and a chunked body without its last chunk. Returns the
    inflated bytes it got."""
    raw = s.raw(s.request_bytes("/t"))
    if not raw:
        return b""  # cut before the head left: the head and body were one read
    r = Response(raw)
    assert r.status == 200
    body, complete = dechunk(r.body)
    assert not complete
    return body


def test_corrupt_body_is_cut_and_logged(server, origin):
    bad = bytearray(GZ)
    bad[len(bad) // 2] ^= 0xFF
    bad[len(bad) // 2 + 1] ^= 0xFF
    s = server(conf(origin(gz_handler(bytes(bad)))))
    assert TEXT.startswith(cut_reply(s))
    assert poll(lambda: "inflate() failed" in s.error_log())


def test_truncated_body_is_cut_and_logged(server, origin):
    s = server(conf(origin(gz_handler(GZ[:len(GZ) // 2]))))
    assert TEXT.startswith(cut_reply(s))
    assert poll(lambda: "inflate() returned on response end" in s.error_log())


def test_trailing_garbage_is_cut(server, origin):
    s = server(conf(origin(gz_handler(GZ + b"garbage after the member"))))
    assert TEXT.startswith(cut_reply(s))
    assert poll(lambda: "inflate() failed" in s.error_log())


def test_pausing_origin_is_not_held_back(server, origin):
    """The origin sends one sync-flushed piece and waits until the client
    got it decoded: a gunzip that held output would deadlock the test
    (bounded by the socket timeouts), not slow it down."""
    got_first = threading.Event()

    def handler(conn, req):
        z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = z.compress(b"first piece\n") + z.flush(zlib.Z_SYNC_FLUSH)
        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        got_first.wait(10)
        piece = z.compress(b"second piece\n") + z.flush()
        conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(piece), piece))
        return False

    s = server(conf(origin(handler), "proxy_buffering off;"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(s.request_bytes("/t"))
        reader = Reader(c)
        while b"first piece\n" not in reader.buf:
            reader._fill()
        got_first.set()
        while not reader.buf.endswith(b"0\r\n\r\n"):
            reader._fill()
    body, complete = dechunk(reader.buf.partition(b"\r\n\r\n")[2])
    assert complete
    assert body == b"first piece\nsecond piece\n"


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def worker_pid(master):
    def first_child():
        pids = open(f"/proc/{master}/task/{master}/children").read().split()
        return int(pids[0]) if pids else None
    return poll(first_child)


def worker_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_gzip_bomb_is_paced_by_the_client(server, origin):
    """256 MiB of zeros in ~256 KiB of gzip: the worker inflates no faster
    than the client reads, so its memory stays bounded by gunzip_buffers
    and the stream's queue, not by the inflated size."""
    size = 256 * 1024 * 1024
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zero = bytes(1 << 20)
    bomb = b"".join(z.compress(zero) for _ in range(size >> 20)) + z.flush()
    o = origin(gz_handler(bomb))
    s = server(conf(o, "gunzip_buffers 4 16k;"))
    pid = worker_pid(s.master_pid())
    before = rss_kib(pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.sendall(s.request_bytes("/t"))
        first = c.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        # The client stops reading. The worker must go to sleep waiting for
        # it (state S, three times in a row with the same RSS) rather than
        # inflate on: a worker that inflated everything would sleep too,
        # but 256 MiB later.
        seen = []

        def quiet():
            seen.append((worker_state(pid), rss_kib(pid)))
            return len(seen) >= 3 and len(set(seen[-3:])) == 1 and seen[-1][0] == "S"

        assert poll(quiet, timeout=20)
        grown = seen[-1][1] - before
        # An AddressSanitizer build keeps freed memory in quarantine.
        if not sanitized():
            assert grown < 16 * 1024, f"worker RSS grew by {grown} KiB"
        received = len(first)
        tail = first[-5:]
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            received += len(b)
            tail = (tail + b)[-5:]
    assert tail == b"0\r\n\r\n"
    assert received > size


def test_gzip_static_always_with_gunzip(server):
    http = """
server {
    listen 127.0.0.1:PORT;
    server_name localhost;
    location / {
        gunzip on;
        gzip_static always;
        gunzip_buffers 2 1k;
    }
}
"""
    s = server(http, {"t1.gz": GZ, "t2.gz": GZ + GZ, "t3": "not compressed"})
    r = s.get("/t1")
    assert r.header("Content-Encoding") is None
    assert dechunk(r.body) == (TEXT, True)
    r = s.get("/t1", [("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == GZ
    r = s.get("/t2")
    assert dechunk(r.body) == (TEXT + TEXT, True)
    r = s.get("/t3")
    assert r.body == b"not compressed"
    raw = s.raw(s.request_bytes("/t1", method="HEAD"))
    assert b"Content-Encoding" not in raw
    assert raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("value,message", [
    ("0 4k", 'invalid value "0"'),
    ("4 0", 'invalid value "0"'),
    ("x 4k", 'invalid value "x"'),
])
def test_bad_buffers_are_emerg(server, value, message):
    s = server(f"server {{ listen 127.0.0.1:PORT; gunzip_buffers {value}; }}", start=False)
    rc, err = s.test_config()
    assert rc == 1
    assert message in err


def test_gzip_vary_on_a_gzip_body(server, origin):
    """nginx's r->gzip_vary: gunzip marks any gzip body it sees, inflated or
    passed; once, even when the gzip filter is on too or the origin sent one."""
    s = server(conf(origin(gz_handler(GZ)), "gzip_vary on; gzip on;"))
    r = s.get("/t")
    assert r.header("Content-Encoding") is None
    assert r.all("Vary") == ["Accept-Encoding"]
    assert dechunk(r.body) == (TEXT, True)
    r = s.get("/t", [("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert r.all("Vary") == ["Accept-Encoding"]
    assert r.body == GZ


def test_gzip_vary_not_doubled_with_the_origins(server, origin):
    s = server(conf(origin(gz_handler(GZ, [("Vary", "Accept-Encoding")])), "gzip_vary on;"))
    r = s.get("/t")
    assert r.all("Vary") == ["Accept-Encoding"]
    assert dechunk(r.body) == (TEXT, True)


def test_no_vary_without_gzip_vary_or_gzip_body(server, origin):
    s = server(conf(origin(gz_handler(GZ))))
    assert s.get("/t").all("Vary") == []

    def plain(conn, req):
        conn.sendall(response(200, TEXT, [], close=True))
        return False
    s2 = server(conf(origin(plain), "gzip_vary on;"))
    assert s2.get("/t").all("Vary") == []


def test_gzip_http_version_10_passes_gzip(server, origin):
    s = server(conf(origin(gz_handler(GZ)), "gzip_http_version 1.0;"))
    raw = s.raw(b"GET /t HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n")
    r = Response(raw)
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == GZ


@pytest.mark.parametrize("proxied, inflated", [("any", False), ("off", True)])
def test_gzip_proxied_with_via(server, origin, proxied, inflated):
    s = server(conf(origin(gz_handler(GZ)), f"gzip_proxied {proxied};"))
    r = s.get("/t", [("Accept-Encoding", "gzip"), ("Via", "1.1 cache.example")])
    if inflated:
        assert r.header("Content-Encoding") is None
        assert dechunk(r.body) == (TEXT, True)
    else:
        assert r.header("Content-Encoding") == "gzip"
        assert r.body == GZ


def test_gzip_disable_inflates(server, origin):
    s = server(conf(origin(gz_handler(GZ)), 'gzip_disable "^curl/";'))
    r = s.get("/t", [("Accept-Encoding", "gzip"), ("User-Agent", "curl/8.0")])
    assert r.header("Content-Encoding") is None
    assert dechunk(r.body) == (TEXT, True)
    r = s.get("/t", [("Accept-Encoding", "gzip"), ("User-Agent", "Mozilla/5.0")])
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == GZ
