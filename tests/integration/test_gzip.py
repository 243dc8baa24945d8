"""Compression on the fly (gzip_filter_module): gzip, brotli and zstd as a
client sees them. Every compressed body is decoded with Python's gzip,
brotli and zstandard modules and compared with what was served.

Static files come from the server's html/ directory; origins are Python
threads (origins.py). The streaming tests use readiness checks (a decoder
that has produced the bytes; an origin that waits for the test's signal),
never timings."""

import gzip
import re
import socket
import threading
import zlib

import pytest

from gh_server import dechunk, poll, server  # noqa: F401  (server: the fixture)
from origins import Reader, response

brotli = pytest.importorskip("brotli")
zstandard = pytest.importorskip("zstandard")

TEXT = "".join(f"line {i} of a text that compresses well\n" for i in range(3000))


def start(server, http, files=None):
    s = server(http, files, start=False)
    code, err = s.test_config()
    if 'unknown directive "gzip"' in err:
        pytest.skip("gzip_filter module not built")
    assert code == 0, err
    return s.start()


def payload(r):
    """The body as sent, unframed."""
    if (r.header("Transfer-Encoding") or "").lower() == "chunked":
        return dechunk(r.body)
    return r.body


def decode(r):
    data = payload(r)
    ce = r.header("Content-Encoding")
    if ce == "gzip":
        return gzip.decompress(data)
    if ce == "br":
        return brotli.decompress(data)
    if ce == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert ce is None, ce
    return data


def server_block(loc, extra=""):
    return f"""
    {extra}
    types {{ text/html html; text/css css; text/plain txt; }}
    server {{
        listen 127.0.0.1:PORT;
        root html;
        {loc}
    }}"""


FILES = {"index.html": TEXT, "a.css": TEXT, "a.txt": TEXT, "small.html": "X" * 64}


def test_gzip_static_file(server):
    s = start(server, server_block("gzip on;"), FILES)
    r = s.get("/index.html", [("Accept-Encoding", "gzip")])
    assert r.status == 200
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Length") is None
    assert r.header("Accept-Ranges") is None
    assert r.header("ETag").startswith('W/"')
    assert decode(r) == TEXT.encode()
    # Without Accept-Encoding: the file as it is, with its strong tag.
    r = s.get("/index.html")
    assert r.header("Content-Encoding") is None
    assert r.header("Content-Length") == str(len(TEXT))
    assert r.header("ETag").startswith('"')
    assert r.body == TEXT.encode()


def test_types(server):
    s = start(server, server_block("gzip on; gzip_types text/css;"), FILES)
    h = [("Accept-Encoding", "gzip")]
    assert s.get("/a.css", h).header("Content-Encoding") == "gzip"
    assert s.get("/index.html", h).header("Content-Encoding") == "gzip"  # always listed
    r = s.get("/a.txt", h)
    assert r.header("Content-Encoding") is None and r.body == TEXT.encode()
    s2 = start(server, server_block("gzip on; gzip_types *;"), FILES)
    r = s2.get("/a.txt", h)
    assert r.header("Content-Encoding") == "gzip" and decode(r) == TEXT.encode()


def test_min_length(server):
    s = start(server, server_block("gzip on; gzip_min_length 100;"), FILES)
    h = [("Accept-Encoding", "gzip")]
    r = s.get("/small.html", h)
    assert r.header("Content-Encoding") is None and r.body == b"X" * 64
    assert s.get("/index.html", h).header("Content-Encoding") == "gzip"


@pytest.mark.parametrize("proxied, req, expect", [
    ("off", [], "gzip"),
    ("off", [("Via", "1.1 cdn")], None),
    ("any", [("Via", "1.1 cdn")], "gzip"),
    ("auth", [("Via", "1.1 cdn")], None),
    ("auth", [("Via", "1.1 cdn"), ("Authorization", "Basic eDp5")], "gzip"),
    ("no_etag", [("Via", "1.1 cdn")], None),  # the file has an ETag
    ("no-cache", [("Via", "1.1 cdn")], None),  # no Cache-Control at all
])
def test_proxied(server, proxied, req, expect):
    s = start(server, server_block(f"gzip on; gzip_proxied {proxied};"), FILES)
    r = s.get("/index.html", [("Accept-Encoding", "gzip")] + req)
    assert r.header("Content-Encoding") == expect
    assert decode(r) == TEXT.encode()


def test_proxied_cache_control_and_expires(server):
    s = start(server, server_block("""
        gzip on; gzip_proxied no-store expired;
        location /ns/ { alias html/; add_header Cache-Control "no-store"; }
        location /ex/ { alias html/; expires -1h; }
        location /fut/ { alias html/; expires 1h; }"""), FILES)
    h = [("Accept-Encoding", "gzip"), ("Via", "1.1 cdn")]
    assert s.get("/ns/index.html", h).header("Content-Encoding") == "gzip"
    assert s.get("/ex/index.html", h).header("Content-Encoding") == "gzip"
    assert s.get("/fut/index.html", h).header("Content-Encoding") is None


@pytest.mark.parametrize("fields, expect", [
    ([("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")], "gzip"),  # before now
    ([("Expires", "0")], None),  # unparsable: nginx declines
    ([("Date", "Mon, 01 Jan 2001 00:00:10 GMT"), ("Expires", "Mon, 01 Jan 2001 00:00:09 GMT")], "gzip"),
    ([("Date", "Mon, 01 Jan 2001 00:00:10 GMT"), ("Expires", "Mon, 01 Jan 2001 00:00:10 GMT")], None),
    ([("Date", "yesterday"), ("Expires", "Mon, 01 Jan 2001 00:00:10 GMT")], None),
])
def test_proxied_expired_against_the_origins_date(server, origin, fields, expect):
    # The origin's Date, passed on, is what Expires is compared with
    # (else the current time), as nginx's gzip_proxied expired.
    o = origin(lambda conn, req: conn.sendall(response(200, TEXT.encode(), fields + [
        ("Content-Type", "text/html")])))
    s = start(server, server_block(f"""gzip on; gzip_proxied expired;
        location / {{ proxy_pass http://{o.addr}; proxy_pass_header Date; }}"""))
    r = s.get("/", [("Accept-Encoding", "gzip"), ("Via", "1.1 cdn")])
    assert r.status == 200
    assert r.header("Content-Encoding") == expect
    assert decode(r) == TEXT.encode()


def test_vary(server):
    s = start(server, server_block("gzip on; gzip_vary on;"), FILES)
    r = s.get("/index.html", [("Accept-Encoding", "gzip")])
    assert r.all("Vary") == ["Accept-Encoding"] and r.header("Content-Encoding") == "gzip"
    # The representation varies even for a client that did not ask.
    r = s.get("/index.html")
    assert r.all("Vary") == ["Accept-Encoding"] and r.header("Content-Encoding") is None
    # Not for a type that is never compressed.
    assert s.get("/a.txt", [("Accept-Encoding", "gzip")]).all("Vary") == []


def test_disable_and_msie6(server):
    s = start(server, server_block('gzip on; gzip_disable "^curl/" msie6;'), FILES)
    h = [("Accept-Encoding", "gzip")]
    assert s.get("/index.html", h + [("User-Agent", "CURL/8.0")]).header("Content-Encoding") is None
    assert s.get("/index.html", h + [("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)")]) \
        .header("Content-Encoding") is None
    assert s.get("/index.html", h + [("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)")]) \
        .header("Content-Encoding") == "gzip"
    assert s.get("/index.html", h + [("User-Agent", "Mozilla/5.0")]).header("Content-Encoding") == "gzip"


def test_http_version(server):
    s = start(server, server_block("gzip on; location /ten/ { alias html/; gzip_http_version 1.0; }"), FILES)
    req = b"GET /index.html HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n"
    from gh_server import Response
    r = Response(s.raw(req))
    assert r.header("Content-Encoding") is None and r.body == TEXT.encode()
    r = Response(s.raw(req.replace(b"/index.html", b"/ten/index.html")))
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == TEXT.encode()  # HTTP/1.0: the close ends it


def test_gzip_ratio_logged(server):
    s = start(server, server_block("gzip on; access_log logs/ratio.log ratio;",
                                   "log_format ratio '$uri $gzip_ratio';"), FILES)
    r = s.get("/index.html", [("Accept-Encoding", "gzip")])
    s.get("/index.html")
    lines = s.wait_lines("ratio.log", 2)
    ratio = len(TEXT) / len(payload(r))
    m = re.fullmatch(rb"/index.html (\d+\.\d\d)\n", lines[0])
    assert m, lines[0]
    assert abs(float(m.group(1)) - ratio) < 0.01
    assert lines[1] == b"/index.html -\n"


ALL_ON = "gzip on; brotli on; zstd on;"


@pytest.mark.parametrize("ae, expect", [
    ("gzip, br, zstd", "zstd"),  # ties: zstd, br, gzip
    ("gzip, br", "br"),
    ("gzip", "gzip"),
    ("gzip;q=1, br;q=0.5, zstd;q=0.8", "gzip"),
    ("gzip;q=0.5, br;q=0.9", "br"),
    ("br;q=0, gzip", "gzip"),
    ("*", "zstd"),
    ("*;q=0.5, gzip", "gzip"),
    ("gzip;q=0, br;q=0, zstd;q=0", None),
    ("identity;q=0", None),  # nothing acceptable: identity anyway
    ("identity", None),
    ("deflate", None),
])
def test_preference(server, ae, expect):
    s = start(server, server_block(ALL_ON), FILES)
    r = s.get("/index.html", [("Accept-Encoding", ae)])
    assert r.status == 200
    assert r.header("Content-Encoding") == expect
    assert decode(r) == TEXT.encode()


@pytest.mark.parametrize("order, ae, expect", [
    ("gzip br zstd", "gzip, br, zstd", "gzip"),
    ("gzip br zstd", "*", "gzip"),
    ("br", "gzip, br, zstd", "br"),  # the unnamed follow: zstd, gzip
    ("br", "gzip, zstd", "zstd"),
    ("gzip", "gzip;q=0.5, br", "br"),  # q-values first, the order breaks ties only
])
def test_compression_order(server, order, ae, expect):
    s = start(server, server_block(ALL_ON + f" compression_order {order};"), FILES)
    r = s.get("/index.html", [("Accept-Encoding", ae)])
    assert r.status == 200
    assert r.header("Content-Encoding") == expect
    assert decode(r) == TEXT.encode()


def test_compression_order_per_location(server):
    s = start(server, server_block(ALL_ON + " compression_order gzip;"
                                   " location /z/ { alias html/; compression_order zstd gzip; }"
                                   " location / { }"), FILES)
    h = [("Accept-Encoding", "gzip, br, zstd")]
    assert s.get("/index.html", h).header("Content-Encoding") == "gzip"
    assert s.get("/z/index.html", h).header("Content-Encoding") == "zstd"


def test_only_enabled_codings_and_levels(server):
    s = start(server, server_block("brotli on; brotli_comp_level 5; zstd on; zstd_comp_level 6;"
                                   " zstd_types text/plain; zstd_min_length 100;"), FILES)
    h = [("Accept-Encoding", "gzip, br, zstd")]
    r = s.get("/index.html", h)
    assert r.header("Content-Encoding") == "zstd" and decode(r) == TEXT.encode()
    r = s.get("/a.txt", h)  # text/plain: zstd only
    assert r.header("Content-Encoding") == "zstd" and decode(r) == TEXT.encode()
    r = s.get("/small.html", h)  # below zstd's min length, not brotli's (20)
    assert r.header("Content-Encoding") == "br" and decode(r) == b"X" * 64
    r = s.get("/index.html", [("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") is None


def test_head_range_304(server):
    s = start(server, server_block("gzip on;"), FILES)
    h = [("Accept-Encoding", "gzip")]
    r = s.get("/index.html", h, method="HEAD")
    assert r.header("Content-Encoding") == "gzip" and r.header("Content-Length") is None
    assert r.body == b""
    # A Range request for a compressible response: the whole compressed
    # 200 (as nginx does), never a 206 of compressed bytes.
    r = s.get("/index.html", h + [("Range", "bytes=0-9")])
    assert r.status == 200 and r.header("Content-Encoding") == "gzip"
    assert decode(r) == TEXT.encode()
    # Without gzip the range applies.
    r = s.get("/index.html", [("Range", "bytes=0-9")])
    assert r.status == 206 and r.body == TEXT.encode()[:10]
    etag = s.get("/index.html").header("ETag")
    r = s.get("/index.html", h + [("If-None-Match", etag)])
    assert r.status == 304 and r.header("Content-Encoding") is None and r.body == b""
    r = s.get("/index.html", h + [("If-None-Match", "W/" + etag)])
    assert r.status == 304 and r.header("Content-Encoding") is None


def proxy_block(port, loc_extra="", extra=""):
    return server_block(f"""
        gzip on; gzip_types text/plain application/json;
        location / {{ proxy_pass http://127.0.0.1:{port}; {loc_extra} }}""", extra)


def test_proxied_bodies(server, origin):
    def handler(conn, req):
        if req.target == "/encoded":
            body = brotli.compress(TEXT.encode())
            conn.sendall(response(200, body, [("Content-Type", "text/plain"), ("Content-Encoding", "br")], close=True))
        elif req.target == "/partial":
            conn.sendall(response(206, TEXT[:100].encode(), [("Content-Type", "text/plain"),
                                                            ("Content-Range", f"bytes 0-99/{len(TEXT)}")],
                                  close=True))
        elif req.target == "/204":
            conn.sendall(response(204, b"", [("Content-Type", "text/plain")], close=True, length=False))
        elif req.target == "/500":
            conn.sendall(response(500, TEXT.encode(), [("Content-Type", "text/plain")], close=True))
        else:
            conn.sendall(response(200, TEXT.encode(), [("Content-Type", "text/plain; charset=utf-8"),
                                                       ("ETag", '"abc"'), ("Accept-Ranges", "bytes")],
                                  close=True))
        return False

    o = origin(handler)
    s = start(server, proxy_block(o.port))
    h = [("Accept-Encoding", "gzip, br")]
    r = s.get("/plain", h)
    assert r.header("Content-Encoding") == "gzip" and r.header("ETag") == 'W/"abc"'
    assert r.header("Accept-Ranges") is None
    assert decode(r) == TEXT.encode()
    r = s.get("/encoded", h)  # already encoded: untouched
    assert r.all("Content-Encoding") == ["br"] and brotli.decompress(r.body) == TEXT.encode()
    r = s.get("/partial", h)
    assert r.status == 206 and r.header("Content-Encoding") is None and r.body == TEXT[:100].encode()
    r = s.get("/204", h)
    assert r.status == 204 and r.header("Content-Encoding") is None
    r = s.get("/500", h)
    assert r.status == 500 and r.header("Content-Encoding") is None


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_paused_stream_is_flushed(server, origin, coding):
    """The origin sends a piece and waits; the client must be able to
    decode that piece before the origin goes on."""
    go_on = threading.Event()

    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        first = b"data: first event\n\n"
        conn.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        go_on.wait(10)
        rest = b"data: second event\n\n"
        conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        return False

    o = origin(handler)
    s = start(server, server_block(f"""
        gzip on; brotli on; zstd on; gzip_types text/event-stream;
        brotli_types text/event-stream; zstd_types text/event-stream;
        location / {{ proxy_pass http://127.0.0.1:{o.port}; }}"""))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(s.request_bytes("/events", [("Accept-Encoding", coding)]))
        reader = Reader(c)
        assert reader.line().startswith(b"HTTP/1.1 200")
        headers = {}
        while True:
            line = reader.line()
            if not line:
                break
            n, _, v = line.decode().partition(":")
            headers[n.lower()] = v.strip()
        assert headers["content-encoding"] == coding
        if coding == "gzip":
            dec = zlib.decompressobj(31)
        elif coding == "br":
            dec = brotli.Decompressor()
        else:
            dec = zstandard.ZstdDecompressor().decompressobj()
        got = b""
        while b"first event\n\n" not in got:  # readiness: what was decoded
            size = int(reader.line(), 16)
            assert size, "the body ended early"
            chunk = reader.exactly(size)
            reader.line()
            got += dec.decompress(chunk) if coding != "br" else dec.process(chunk)
        assert got == b"data: first event\n\n"
        go_on.set()
        while True:
            size = int(reader.line(), 16)
            if size == 0:
                break
            chunk = reader.exactly(size)
            reader.line()
            got += dec.decompress(chunk) if coding != "br" else dec.process(chunk)
        assert got == b"data: first event\n\ndata: second event\n\n"


def test_many_tiny_chunks(server, origin):
    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        conn.sendall(b"".join(b"1\r\n%c\r\n" % TEXT.encode()[i] for i in range(20000)) + b"0\r\n\r\n")
        return False

    o = origin(handler)
    s = start(server, proxy_block(o.port))
    r = s.get("/tiny", [("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert decode(r) == TEXT.encode()[:20000]


def vm_rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def worker_pid(s):
    master = s.master_pid()

    def find():
        try:
            kids = open(f"/proc/{master}/task/{master}/children").read().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None
    pid = poll(find, 5)
    assert pid, "no worker process"
    return pid


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_large_file_slow_client_memory_is_bounded(server, tmp_path, coding):
    """A 96 MiB file to a client that reads a little and stops: the worker
    holds the configured buffers, not the file."""
    size = 96 << 20
    block = TEXT.encode()
    s = start(server, server_block("gzip on; brotli on; brotli_comp_level 4; zstd on; zstd_comp_level 4;"
                                   " gzip_types *; brotli_types *; zstd_types *;"))
    with open(s.prefix / "html" / "big.txt", "wb") as f:
        written = 0
        while written < size:
            f.write(block)
            written += len(block)
    size = written
    pid = worker_pid(s)
    before = vm_rss_kib(pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        c.sendall(s.request_bytes("/big.txt", [("Accept-Encoding", coding)]))
        first = c.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and f"Content-Encoding: {coding}".encode() in first
        # The worker has filled the socket and stopped: its RSS stays put
        # while the client does not read (three equal samples in a row).
        samples = []

        def settled():
            samples.append(vm_rss_kib(pid))
            return len(samples) >= 3 and samples[-1] == samples[-2] == samples[-3]
        poll(settled, timeout=10, step=0.2)
        held = samples[-1] - before
        assert held < 24 << 10, f"worker grew by {held} KiB"
        # Then everything arrives and decodes to the file.
        reader = Reader(c)
        reader.buf = first.partition(b"\r\n\r\n")[2]
        if coding == "gzip":
            dec = zlib.decompressobj(31)
        elif coding == "br":
            dec = brotli.Decompressor()
        else:
            dec = zstandard.ZstdDecompressor().decompressobj()
        total = 0
        while True:
            n = int(reader.line(), 16)
            if n == 0:
                break
            chunk = reader.exactly(n, keep_raw=False)
            reader.line()
            total += len(dec.decompress(chunk) if coding != "br" else dec.process(chunk))
        assert total == size


CACHE_HTTP = """
    proxy_cache_path CACHE keys_zone=z:1m;
    server {{
        listen 127.0.0.1:PORT;
        gzip on; gzip_types text/plain; {vary}
        location / {{
            proxy_pass http://127.0.0.1:{port};
            proxy_cache z; proxy_cache_valid 200 10m;
            add_header X-Cache $upstream_cache_status always;
        }}
    }}"""


@pytest.mark.parametrize("origin_vary", [True, False])
def test_cache_keeps_variants(server, origin, tmp_path, origin_vary):
    """The cache stores the origin's identity body (the filter runs after
    it); with the origin's Vary: Accept-Encoding each Accept-Encoding value
    is a variant of its own; without it one entry serves every client,
    compressed or not by the filter on each hit."""
    def handler(conn, req):
        h = [("Content-Type", "text/plain")]
        if origin_vary:
            h.append(("Vary", "Accept-Encoding"))
        conn.sendall(response(200, TEXT.encode(), h, close=True))
        return False

    o = origin(handler)
    http = CACHE_HTTP.format(port=o.port, vary="" if origin_vary else "gzip_vary on;") \
        .replace("CACHE", str(tmp_path / "cache"))
    s = start(server, http)
    gz = [("Accept-Encoding", "gzip")]
    r = s.get("/doc", gz)
    assert (r.header("X-Cache"), r.header("Content-Encoding")) == ("MISS", "gzip")
    assert r.all("Vary") == ["Accept-Encoding"] and decode(r) == TEXT.encode()
    r = s.get("/doc")
    assert r.header("X-Cache") == ("MISS" if origin_vary else "HIT")
    assert r.header("Content-Encoding") is None and r.body == TEXT.encode()
    r = s.get("/doc", gz)
    assert (r.header("X-Cache"), r.header("Content-Encoding")) == ("HIT", "gzip")
    assert r.all("Vary") == ["Accept-Encoding"] and decode(r) == TEXT.encode()
    assert len(o.requests) == (2 if origin_vary else 1)


@pytest.mark.parametrize("line, message", [
    ("gzip_comp_level 10;", "value must be between 1 and 9"),
    ("brotli_comp_level 12;", "value must be between 0 and 11"),
    ("zstd_comp_level 0;", "value must be between 1 and 22"),
    ("gzip_proxied sometimes;", 'invalid value "sometimes"'),
    ("gzip_http_version 2.0;", 'invalid value "2.0"'),
    ("gzip_buffers 0 4k;", 'invalid value "0 4k"'),
    ("brotli_window 3k;", 'invalid value "3k"'),
    ('gzip_disable "(";', "pcre2_compile() failed"),
    ("compression_order gzip deflate;", 'invalid value "deflate"'),
    ("compression_order gzip x-gzip;", 'invalid value "x-gzip"'),
    ("compression_order br gzip br;", 'duplicate value "br"'),
    ("compression_order gzip; compression_order br;", '"compression_order" directive is duplicate'),
    ("compression_order a b c d;", 'invalid number of arguments in "compression_order" directive'),
])
def test_config_errors(server, line, message):
    s = server(server_block(line), start=False)
    code, err = s.test_config()
    assert code != 0
    assert message in err and "gatehouse.conf:" in err, err
