"""sub_filter, sub_filter_once, sub_filter_types and sub_filter_last_modified
(sub_filter_module) as a client sees them: replaced text in static,
proxied and cached bodies over HTTP/1.1 and HTTP/2, a string split across
an origin's writes, the head (Content-Length, Last-Modified, ETag), an
origin's compressed body left alone, gzip compressing the replaced text,
and config errors."""

import gzip
import shutil
import socket
import subprocess
import threading

import pytest

from gh_server import dechunk, server  # noqa: F401  (server: the fixture)
from origins import response

CURL = shutil.which("curl")

FILES = {
    "a.html": "<p>Hello, World! hello world.</p>\n",
    "a.txt": "hello world\n",
    "a.css": "hello css\n",
    "big.html": "x" * 100000 + "<b>NEEDLE</b>" + "y" * 100000 + "needle\n",
}


def start(server, http, files=None):
    s = server(http, files, start=False)
    code, err = s.test_config()
    if 'unknown directive "sub_filter"' in err:
        pytest.skip("sub_filter module not built")
    assert code == 0, err
    return s.start()


def body_of(r):
    if (r.header("Transfer-Encoding") or "").lower() == "chunked":
        return dechunk(r.body)
    return r.body


def test_static_once_off_and_case(server):
    s = start(server, """
        types { text/html html; text/plain txt; text/css css; }
        server {
            listen 127.0.0.1:PORT;
            root html;
            sub_filter hello bye;
            location /all/ { alias html/; sub_filter_once off; }
            location /two/ {
                alias html/;
                sub_filter world earth;
                sub_filter "<p>" "<div>";
            }
            location /big/ { alias html/; sub_filter needle PIN; sub_filter_once off; }
        }
        """, FILES)
    # Once (the default): the first "hello", whatever its case.
    r = s.get("/a.html")
    assert r.status == 200
    assert body_of(r) == b"<p>bye, World! hello world.</p>\n"
    assert r.header("Content-Length") is None
    # Off: every one.
    assert body_of(s.get("/all/a.html")) == b"<p>bye, World! bye world.</p>\n"
    # A level with sub_filter of its own has none of the outer ones';
    # each of its strings is replaced once.
    assert body_of(s.get("/two/a.html")) == b"<div>Hello, earth! hello world.</p>\n"
    # A file larger than the filter's pieces and the stream's buffers.
    r = s.get("/big/big.html")
    assert body_of(r) == b"x" * 100000 + b"<b>PIN</b>" + b"y" * 100000 + b"PIN\n"


def test_types(server):
    s = start(server, """
        types { text/html html; text/plain txt; text/css css; }
        server {
            listen 127.0.0.1:PORT;
            root html;
            sub_filter hello bye;
            location /plain/ { alias html/; sub_filter_types text/plain; }
            location /any/ { alias html/; sub_filter_types *; }
        }
        """, FILES)
    # text/html only by default: other types keep their length and bytes.
    r = s.get("/a.txt")
    assert r.header("Content-Length") == "12" and r.body == b"hello world\n"
    # sub_filter_types adds to text/html.
    assert body_of(s.get("/plain/a.txt")) == b"bye world\n"
    assert body_of(s.get("/plain/a.html")).startswith(b"<p>bye,")
    assert s.get("/plain/a.css").body == b"hello css\n"
    # "*": any type.
    assert body_of(s.get("/any/a.css")) == b"bye css\n"


def test_variables_in_both_strings(server):
    s = start(server, """
        server {
            listen 127.0.0.1:PORT;
            default_type text/html;
            location / {
                sub_filter_once off;
                sub_filter "[$arg_from]" "<$arg_to:$request_method>";
                return 200 "a [x] b [X] c [y]";
            }
            location /long {
                sub_filter $arg_s "<q>";
                sub_filter y "<y>";
                return 200 "$arg_s and y";
            }
        }
        """)
    assert body_of(s.get("/?from=x&to=T")) == b"a <T:GET> b <T:GET> c [y]"
    assert body_of(s.get("/?from=y&to=")) == b"a [x] b [X] c <:GET>"
    # "[]" (no from) is not in the body.
    assert body_of(s.get("/?to=Z")) == b"a [x] b [X] c [y]"
    # Made longer than 1024 bytes by its variable: not looked for, said
    # in the error log; the other strings still are.
    long = "q" * 1100
    assert body_of(s.get(f"/long?s={long}")) == long.encode() + b" and <y>"
    assert 'the search string of "sub_filter" "$arg_s" is 1100 bytes long, more than 1024' in s.error_log()


def test_head_fields_and_last_modified(server):
    s = start(server, """
        types { text/html html; text/plain txt; }
        server {
            listen 127.0.0.1:PORT;
            root html;
            sub_filter hello bye;
            location /lm/ { alias html/; sub_filter_last_modified on; }
        }
        """, FILES)
    plain = s.get("/a.txt")  # not filtered: the file's validators
    etag = plain.header("ETag")
    assert etag and etag.startswith('"') and plain.header("Last-Modified")
    # Filtered: no length, no validators (the bytes are not the file's).
    r = s.get("/a.html")
    assert r.header("Content-Length") is None
    assert r.header("Last-Modified") is None and r.header("ETag") is None
    assert r.header("Transfer-Encoding") == "chunked"
    # sub_filter_last_modified on: Last-Modified stays, the tag is weak.
    r = s.get("/lm/a.html")
    assert r.header("Last-Modified") == plain.header("Last-Modified")
    assert r.header("ETag").startswith('W/"')
    assert r.header("Content-Length") is None
    # HEAD gets the same head.
    h = s.get("/a.html", method="HEAD")
    assert h.header("Content-Length") is None and h.header("ETag") is None and h.body == b""
    # A range request gets the whole replaced body.
    r = s.get("/a.html", headers=[("Range", "bytes=0-3")])
    assert r.status == 200 and body_of(r).startswith(b"<p>bye")


def test_proxied_and_cached(server, origin):
    hits = []

    def handler(conn, req):
        hits.append(req.target)
        body = b"<a href='http://origin.test/x'>origin.test</a>"
        conn.sendall(response(200, body, [("Content-Type", "text/html; charset=utf-8"),
                                          ("Cache-Control", "max-age=60"),
                                          ("ETag", '"v1"'),
                                          ("Last-Modified", "Mon, 07 Dec 2026 10:00:00 GMT")]))
        return True

    o = origin(handler)
    s = start(server, f"""
        proxy_cache_path cache keys_zone=z:1m;
        server {{
            listen 127.0.0.1:PORT;
            sub_filter_once off;
            sub_filter http://origin.test/ https://$host/;
            sub_filter origin.test "the site";
            location /p/ {{ proxy_pass http://{o.addr}; }}
            location /c/ {{
                proxy_pass http://{o.addr};
                proxy_cache z;
                sub_filter_last_modified on;
                add_header X-Cache $upstream_cache_status;
            }}
        }}
        """)
    want = b"<a href='https://localhost/x'>the site</a>"
    r = s.get("/p/1")
    assert body_of(r) == want
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert r.header("ETag") is None and r.header("Last-Modified") is None
    # A cached entry keeps the origin's bytes: every hit is replaced anew.
    r1 = s.get("/c/1")
    r2 = s.get("/c/1", host="other.test")
    assert r1.header("X-Cache") == "MISS" and r2.header("X-Cache") == "HIT"
    assert body_of(r1) == want
    assert body_of(r2) == b"<a href='https://other.test/x'>the site</a>"
    assert r2.header("ETag") == 'W/"v1"'
    assert r2.header("Last-Modified") == "Mon, 07 Dec 2026 10:00:00 GMT"
    assert hits == ["/p/1", "/c/1"]


def read_until(sock, buf, marker):
    while marker not in buf:
        data = sock.recv(65536)
        assert data, buf
        buf += data
    return buf


@pytest.mark.parametrize("buffering", ["on", "off"])
def test_string_split_across_origin_writes(server, origin, buffering):
    # The origin writes the body in pieces that cut the search string, and
    # waits for the client to have received the text before the cut: the
    # filter sends what it may and holds back only the start of a
    # possible match.
    go = [threading.Event() for _ in range(3)]
    pieces = [b"one <ne", b"edle> two <NEE", b"DLE> three <nee", b"dl"]

    def handler(conn, req):
        conn.sendall(response(200, b"", [("Content-Type", "text/html")], length=False, close=True))
        for i, p in enumerate(pieces):
            conn.sendall(p)
            if i < len(go):
                go[i].wait(10)
        return False

    o = origin(handler)
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{
                proxy_pass http://{o.addr};
                proxy_buffering {buffering};
                sub_filter <needle> [pin];
                sub_filter_once off;
            }}
        }}
        """)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(s.request_bytes("/"))
        buf = read_until(c, b"", b"\r\n\r\n")
        buf = read_until(c, buf, b"one ")
        assert b"<ne" not in buf  # held: it may be the start of "<needle>"
        go[0].set()
        buf = read_until(c, buf, b"[pin] two ")
        assert b"<NEE" not in buf
        go[1].set()
        buf = read_until(c, buf, b"[pin] three ")
        go[2].set()
        while True:
            data = c.recv(65536)
            if not data:
                break
            buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    # The end gives back what was held: "<needl" never completed.
    assert dechunk(body) == b"one [pin] two [pin] three <needl"


def test_compressed_origin_and_gzip_output(server, origin):
    text = b"<html>" + b"replace me, " * 2000 + b"</html>"
    packed = gzip.compress(text)

    def handler(conn, req):
        if req.target.startswith("/gz"):
            conn.sendall(response(200, packed, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")]))
        else:
            conn.sendall(response(200, text, [("Content-Type", "text/html")]))
        return True

    o = origin(handler)
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            sub_filter "replace me" done;
            sub_filter_once off;
            location / {{ proxy_pass http://{o.addr}; gzip on; gzip_min_length 1; }}
            location /inflate/ {{ proxy_pass http://{o.addr}/; gunzip on; }}
        }}
        """)
    want = b"<html>" + b"done, " * 2000 + b"</html>"
    # An origin's compressed body goes as it came: not searched, length kept.
    r = s.get("/gz", headers=[("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Length") == str(len(packed))
    assert r.body == packed
    # gunzip inflates it for a client without gzip; then it is replaced.
    r = s.get("/inflate/gz")
    assert r.header("Content-Encoding") is None
    assert body_of(r) == want
    # gzip compresses the replaced text.
    r = s.get("/plain", headers=[("Accept-Encoding", "gzip")])
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(body_of(r)) == want
    # Without gzip from the client: the replaced text as it is.
    assert body_of(s.get("/plain")) == want


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_http2(server, origin):
    def handler(conn, req):
        conn.sendall(response(200, b"<i>hello</i> " * 5000, [("Content-Type", "text/html")]))
        return True

    o = origin(handler)
    s = start(server, f"""
        types {{ text/html html; }}
        server {{
            listen 127.0.0.1:PORT;
            http2 on;
            root html;
            sub_filter_once off;
            sub_filter hello bye;
            location /p/ {{ proxy_pass http://{o.addr}; }}
        }}
        """, FILES)
    for path, want in [("/a.html", b"<p>bye, World! bye world.</p>\n"), ("/p/x", b"<i>bye</i> " * 5000)]:
        r = subprocess.run([CURL, "-sS", "--http2-prior-knowledge", "-D", "-", f"http://127.0.0.1:{s.port}{path}"],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/2 200")
        assert b"content-length" not in head.lower()
        assert body == want


@pytest.mark.parametrize("line, message", [
    ('sub_filter "" x;', "empty search pattern"),
    ("sub_filter " + "a" * 1025 + " x;", 'the search string of "sub_filter" is longer than 1024 bytes'),
    ("sub_filter a;", 'invalid number of arguments in "sub_filter"'),
    ("sub_filter_once maybe;", 'invalid value "maybe", it must be "on" or "off" in "sub_filter_once"'),
    ("sub_filter_types text/html; sub_filter_types text/css;", '"sub_filter_types" directive is duplicate'),
], ids=["empty", "too-long", "arity", "flag", "duplicate"])
def test_config_errors(server, line, message):
    s = server("server {\n listen 127.0.0.1:PORT;\n location / { " + line + " }\n}", start=False)
    code, err = s.test_config()
    if 'unknown directive "sub_filter' in err:
        pytest.skip("sub_filter module not built")
    assert code != 0 and message in err, err
    # The file and line of the directive.
    text = (s.prefix / "conf" / "gatehouse.conf").read_text()
    line_no = next(i for i, t in enumerate(text.splitlines(), 1) if line.split()[0] in t)
    assert "[emerg]" in err and f"gatehouse.conf:{line_no}" in err, err
