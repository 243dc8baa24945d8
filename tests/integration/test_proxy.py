"""proxy_pass: what a client and an origin see through the reverse proxy.

Origins are Python threads on raw sockets (origins.py): each test asserts
what the origin received (request line, fields, body bytes, connections)
and what the client got (status, fields, body, and whether the body was
complete). Every socket has a timeout and every origin is stopped at
teardown.
"""

import base64
import hashlib
import os
import re
import socket
import struct
import threading
import time

import pytest

from gh_server import dechunk, poll, server  # noqa: F401  (server: the fixture)
from origins import Reader, answer_mid_request, closed_port, listener, response
from process_helpers import ws_frame, ws_read


def need_proxy(s):
    """Skips when the binary has no proxy module."""
    code, err = s.test_config()
    if 'unknown directive "proxy_pass"' in err:
        pytest.skip("proxy module not built")
    assert code == 0, err


def start(server, http, files=None):
    s = server(http, files, start=False)
    need_proxy(s)
    return s.start()


# ---- a client that tells a complete body from a cut one ------------------------------


class Reply:
    def __init__(self):
        self.status = 0
        self.reason = ""
        self.headers = []
        self.body = b""
        self.complete = False  # the framing said the body ended
        self.closed = False  # the server closed the connection after it

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]


def read_reply(sock, head_request=False, sink=None):
    """Reads one response. sink(bytes) receives the body instead of
    keeping it (for large bodies)."""
    r = Reply()
    reader = Reader(sock)
    try:
        line = reader.line().decode("latin-1")
    except Exception:
        r.closed = True
        return r
    parts = line.split(" ", 2)
    r.status = int(parts[1])
    r.reason = parts[2] if len(parts) > 2 else ""
    while True:
        h = reader.line()
        if not h:
            break
        n, _, v = h.decode("latin-1").partition(":")
        r.headers.append((n, v.strip()))
    body = []

    def put(data):
        if sink:
            sink(data)
        else:
            body.append(data)

    te = (r.header("Transfer-Encoding") or "").lower()
    cl = r.header("Content-Length")
    try:
        if head_request or r.status in (204, 304) or r.status < 200:
            r.complete = True
        elif "chunked" in te:
            while True:
                size = int(reader.line().split(b";")[0], 16)
                if size == 0:
                    while reader.line():
                        pass
                    r.complete = True
                    break
                put(reader.exactly(size, keep_raw=False))
                reader.line()
        elif cl is not None:
            left = int(cl)
            while left:
                if not reader.buf:
                    reader._fill()
                chunk, reader.buf = reader.buf[:left], reader.buf[left:]
                left -= len(chunk)
                put(chunk)
            r.complete = True
        else:
            while True:
                if reader.buf:
                    put(reader.buf)
                    reader.buf = b""
                d = sock.recv(1 << 20)
                if not d:
                    break
                put(d)
            r.complete = True
            r.closed = True
    except Exception:
        if reader.buf:
            put(reader.buf)
        r.closed = True
    r.body = b"".join(body)
    r.rest = reader.buf
    return r


def request(port, path="/", method="GET", headers=(), body=None, host="localhost", close=True,
            timeout=10.0, chunked=False):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request_bytes(path, method, headers, body, host, close, chunked))
        r = read_reply(s, head_request=method == "HEAD")
        if close and not r.closed:
            try:
                r.closed = s.recv(1) == b""
            except OSError:
                r.closed = True
        return r


def request_bytes(path="/", method="GET", headers=(), body=None, host="localhost", close=True, chunked=False):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{n}: {v}" for n, v in headers]
    if close:
        lines.append("Connection: close")
    if body is not None and not chunked:
        lines.append(f"Content-Length: {len(body)}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        if chunked:
            for i in range(0, len(body), 7):
                piece = body[i:i + 7]
                data += b"%x\r\n" % len(piece) + piece + b"\r\n"
            data += b"0\r\n\r\n"
        else:
            data += body
    return data


def error_lines(s, pattern, timeout=5.0):
    """Lines of the error log matching the regex (waited for)."""
    def found():
        return [line for line in s.error_log().splitlines() if re.search(pattern, line)]
    return poll(found, timeout) or []


# ---- proxy_pass and the URI sent ---------------------------------------------------------


URI_CASES = [
    # location, proxy_pass suffix (after the origin address), request, origin sees
    ("location / {}", "", "/a/b?x=1", "/a/b?x=1"),
    ("location /one/ {}", "/two/", "/one/x?y=2", "/two/x?y=2"),
    ("location /o2/ {}", "/", "/o2/x", "/x"),
    ("location /p {}", "/q", "/p/x", "/q/x"),
    # Without a URI part the request-target goes as the client sent it.
    ("location /raw/ {}", "", "/raw/a%20b/%2e%2e/c?q=%41", "/raw/a%20b/%2e%2e/c?q=%41"),
    # With one, the normalised URI is escaped again.
    ("location /enc/ {}", "/dec/", "/enc/a%20b/./c", "/dec/a%20b/c"),
    ("location ~ ^/re/ {}", "", "/re/x?a=1", "/re/x?a=1"),
    ("location = /exact {}", "/other", "/exact?k=v", "/other?k=v"),
]


def test_uri_rules(server, origin):
    o = origin()
    locations = "\n".join(
        loc.replace("{}", "{ proxy_pass http://%s%s; }" % (o.addr, suffix)) for loc, suffix, _, _ in URI_CASES)
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            {locations}
            location /rw/ {{
                rewrite ^/rw/(.*)$ /new/$1 break;
                proxy_pass http://{o.addr}/ignored/;
            }}
            location /rwb/ {{
                rewrite ^/rwb/(.*)$ /newb/$1;
                break;
                proxy_pass http://{o.addr}/ignored/;
            }}
            location /old/ {{ rewrite ^/old/(.*)$ /one/$1 last; }}
            location /v/ {{ proxy_pass http://{o.addr}/fixed$is_args$args; }}
            location /vv/ {{ proxy_pass http://$arg_to; }}
        }}
    """)
    expected = []
    for _, _, path, seen in URI_CASES:
        r = request(s.port, path)
        assert r.status == 200, (path, r.status, s.error_log())
        expected.append(seen)
    # "rewrite ... break": the changed URI goes whole, the URI part ignored.
    assert request(s.port, "/rw/z?q=1").status == 200
    expected.append("/new/z?q=1")
    # So too a rewrite followed by the "break" directive.
    assert request(s.port, "/rwb/z").status == 200
    expected.append("/newb/z")
    # "rewrite ... last" into a location with a URI part: replaced there.
    assert request(s.port, "/old/k").status == 200
    expected.append("/two/k")
    # With variables, a URI part is the whole URI.
    assert request(s.port, "/v/anything?a=b").status == 200
    expected.append("/fixed?a=b")
    # An address from a variable: no resolver needed.
    assert request(s.port, f"/vv/p?to={o.addr}").status == 200
    expected.append(f"/vv/p?to={o.addr}")
    assert [q.target for q in o.wait_requests(len(expected))] == expected


def test_host_name_needs_a_resolver_at_run_time(server):
    s = start(server, """
        server { listen 127.0.0.1:PORT; location / { proxy_pass http://$arg_to; } }
    """)
    assert request(s.port, "/?to=no-such-host.invalid").status == 502
    assert error_lines(s, r'no resolver defined to resolve "no-such-host.invalid"')


def test_variable_host_of_another_proxy_pass(server, origin):
    # A host name at run time needs no resolver when another proxy_pass
    # names the same host and port: its addresses from load are used.
    o = origin()
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location /fixed/ {{ proxy_pass http://localhost:{o.port}; }}
            location /var/ {{ proxy_pass http://$arg_to; }}
        }}
    """)
    r = request(s.port, f"/var/a?to=localhost:{o.port}")
    assert (r.status, r.body) == (200, f"GET /var/a?to=localhost:{o.port}\n".encode())
    r = request(s.port, f"/var/b?to=LOCALHOST:{o.port}")
    assert r.status == 200
    # Another port of that host is not known: no resolver.
    r = request(s.port, f"/var/c?to=localhost:{closed_port()}")
    assert r.status == 502
    assert error_lines(s, r"no resolver defined to resolve \"localhost:")


def test_a_variable_may_complete_the_scheme(server, origin):
    # "http:/$uri": the URI's slash completes "http://", naming the
    # upstream block [nginx's test of max_conns routes so].
    o = origin()
    s = start(server, f"""
        upstream pool_a {{ server {o.addr}; }}
        server {{ listen 127.0.0.1:PORT; location /pool_a {{ proxy_pass http:/$uri; }} }}
    """)
    r = request(s.port, "/pool_a")
    assert (r.status, r.body) == (200, b"GET /pool_a\n")


def test_unix_socket_origin(server, origin, tmp_path):
    path = tmp_path / "o.sock"
    o = origin(unix_path=path)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location /u/ {{ proxy_pass http://unix:{path}:/in/; }}
            location / {{ proxy_pass http://unix:{path}; }}
        }}
    """)
    r = request(s.port, "/u/x")
    assert r.status == 200 and r.body == b"GET /in/x\n"
    assert request(s.port, "/plain").body == b"GET /plain\n"
    assert o.requests[0].header("Host") == "localhost"


@pytest.mark.parametrize("conf,message", [
    ("location ~ ^/x { proxy_pass http://127.0.0.1:1/uri; }",
     '"proxy_pass" cannot have URI part in location given by regular expression'),
    ("location / { proxy_pass ftp://127.0.0.1; }", 'invalid URL prefix in "ftp://127.0.0.1"'),
    ("location / { proxy_pass ftp:/$uri; }", 'invalid URL prefix in "ftp:/$uri"'),
    ("location / { proxy_cookie_path on; }", 'invalid parameter "on"'),
    ("location / { proxy_cookie_domain off; proxy_cookie_domain off; }", '"proxy_cookie_domain" directive is duplicate'),
    ("location / { proxy_cookie_path ~( /; }", "pcre2_compile() failed"),
    ("location / { proxy_cookie_flags a secure samesite=always; }", 'invalid parameter "samesite=always"'),
    ("location / { proxy_cookie_flags off; proxy_cookie_flags off; }", '"proxy_cookie_flags" directive is duplicate'),
    ("location / { proxy_bind 127.0.0.1 opaque; }", 'invalid parameter "opaque"'),
    ("location / { proxy_bind localhost; }", 'invalid address "localhost"'),
    ("location / { proxy_bind unix:/tmp/x; }", 'invalid address "unix:/tmp/x"'),
    ("location / { proxy_pass http:x$uri; }", 'invalid URL prefix in "http:x$uri"'),
    ("location / { proxy_pass https://$host; }", "https protocol requires SSL support"),
    ("location / { proxy_ssl_verify on; proxy_pass https://127.0.0.1; }",
     "no proxy_ssl_trusted_certificate for proxy_ssl_verify"),
    ("location / { proxy_pass http://127.0.0.1:99999; }", "invalid port"),
    ("location / { proxy_pass http://no-such-host.invalid; }", "no-such-host.invalid"),
    ("location / { proxy_pass http://127.0.0.1:1; proxy_pass http://127.0.0.1:2; }", "is duplicate"),
    ("location / { proxy_set_header Content-Length 5; proxy_pass http://127.0.0.1:1; }",
     'cannot set "Content-Length"'),
    ("location / { proxy_next_upstream error bogus; proxy_pass http://127.0.0.1:1; }", 'invalid value "bogus"'),
    ("location / { proxy_buffers 1 4k; proxy_pass http://127.0.0.1:1; }", "at least 2"),
    ("location / { proxy_http_version 2; proxy_pass http://127.0.0.1:1; }", 'invalid value "2"'),
])
def test_config_errors_name_file_and_line(server, conf, message):
    s = server("server {\n listen 127.0.0.1:PORT;\n" + conf + "\n}\n", start=False)
    code, err = s.test_config()
    if 'unknown directive "proxy_pass"' in err:
        pytest.skip("proxy module not built")
    assert code != 0
    assert message in err, err
    assert re.search(r"gatehouse\.conf:\d+", err), err


# ---- the request to the origin -------------------------------------------------------------


def test_fields_sent_to_origin(server, origin):
    o = origin()
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            proxy_set_header X-Server-Level yes;
            location / {{
                proxy_pass http://{o.addr};
                proxy_set_header X-Real-IP $remote_addr;
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                proxy_set_header Accept-Encoding "";
                proxy_set_header X-Proxy "$proxy_host|$proxy_port";
            }}
            location /host/ {{
                proxy_pass http://{o.addr};
                proxy_set_header Host $host:8080;
                proxy_http_version 1.0;
                proxy_method POST;
            }}
            location /nohdr/ {{
                proxy_pass http://{o.addr};
                proxy_pass_request_headers off;
            }}
        }}
    """)
    r = request(s.port, "/a", headers=[
        ("User-Agent", "ua/1"), ("X-Forwarded-For", "10.0.0.1"), ("Accept-Encoding", "gzip"),
        ("Keep-Alive", "300"), ("TE", "trailers"), ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic eA=="), ("Trailer", "X-T"), ("X-Hop", "1"),
        ("Connection", "X-Hop"), ("X-Keep", "kept"), ("Expect", "something")])
    assert r.status == 200
    q = o.wait_requests(1)[0]
    assert q.version == "HTTP/1.1"
    assert q.header("Host") == o.addr
    assert q.all("Connection") == ["close"]
    assert q.header("X-Real-IP") == "127.0.0.1"
    assert q.header("X-Forwarded-For") == "10.0.0.1, 127.0.0.1"
    assert q.header("X-Proxy") == f"{o.addr}|{o.port}"
    assert q.header("User-Agent") == "ua/1" and q.header("X-Keep") == "kept"
    for name in ("accept-encoding", "keep-alive", "te", "upgrade", "proxy-connection", "proxy-authorization",
                 "trailer", "x-hop", "expect", "x-server-level"):
        assert name not in q.names(), (name, q.headers)

    assert request(s.port, "/host/x", headers=[("X-C", "c")]).status == 200
    q = o.wait_requests(2)[1]
    assert (q.method, q.version) == ("POST", "HTTP/1.0")
    assert q.header("Host") == "localhost:8080"
    # A level with proxy_set_header of its own inherits none.
    assert q.header("X-Server-Level") is None

    assert request(s.port, "/nohdr/", headers=[("X-C", "c")]).status == 200
    q = o.wait_requests(3)[2]
    # No proxy_set_header here: the server level's are inherited.
    assert q.names() == ["x-server-level", "host", "connection"]


def test_request_body_forwarded_exactly(server, origin):
    o = origin()
    s = start(server, f"""
        server {{
            listen 127.0.0.1:PORT;
            client_max_body_size 10m;
            client_body_buffer_size 16k;
            location / {{ proxy_pass http://{o.addr}; }}
            location /stream/ {{ proxy_pass http://{o.addr}; proxy_request_buffering off; }}
            location /nobody/ {{ proxy_pass http://{o.addr}; proxy_pass_request_body off; }}
        }}
    """)
    body = bytes(range(256)) * 40  # 10 KiB: in memory
    big = os.urandom(300 * 1024)  # over client_body_buffer_size: a temp file
    cases = [
        ("/", body, False, ("Content-Length", str(len(body)))),
        ("/", big, False, ("Content-Length", str(len(big)))),
        # Buffered chunked bodies are sent with their length.
        ("/", body, True, ("Content-Length", str(len(body)))),
        ("/", big, True, ("Content-Length", str(len(big)))),
        ("/stream/", body, False, ("Content-Length", str(len(body)))),
        # Unbuffered with no length: re-chunked.
        ("/stream/", big, True, ("Transfer-Encoding", "chunked")),
        ("/", b"", False, ("Content-Length", "0")),
    ]
    for i, (path, data, chunked, framing) in enumerate(cases):
        r = request(s.port, path, method="POST", body=data, chunked=chunked)
        assert r.status == 200, (i, r.status, s.error_log())
        q = o.wait_requests(i + 1)[i]
        assert q.body == data, i
        assert q.header(framing[0]) == framing[1], (i, q.headers)
        other = "Transfer-Encoding" if framing[0] == "Content-Length" else "Content-Length"
        assert q.header(other) is None, (i, q.headers)

    r = request(s.port, "/nobody/", method="POST", body=b"secret")
    assert r.status == 200
    q = o.wait_requests(len(cases) + 1)[-1]
    assert q.body == b"" and q.header("Content-Length") is None


def test_unbuffered_preread_body_goes_with_the_head(server):
    # proxy_request_buffering off: the body bytes that came with the
    # client's head are written together with the request head, so the
    # origin's first read has both [nginx]; the rest follows as it comes.
    lsock, port = listener()
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            proxy_request_buffering off;
            location / {{ proxy_pass http://127.0.0.1:{port}; }}
        }}
    """)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(request_bytes("/up", "POST", [("Content-Length", "10")]) + b"01234")
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(10)
            first = b""
            while b"\r\n\r\n" not in first:
                first += conn.recv(65536)
            assert first.endswith(b"\r\n\r\n01234"), first
            c.sendall(b"56789")
            rest = b""
            while len(rest) < 5:
                rest += conn.recv(65536)
            assert rest == b"56789"
            conn.sendall(response(200, b"done", close=True))
        r = read_reply(c)
        assert (r.status, r.body) == (200, b"done")
    lsock.close()


def test_unbuffered_body_is_kept_when_small(server, origin):
    # proxy_request_buffering off streams the body to the origin; one that
    # fits client_body_buffer_size is still $request_body afterwards, and
    # an error_page's handler gets it [nginx].
    def handler(conn, req):
        if req.target.startswith("/missing"):
            conn.sendall(response(404, b"no"))
        else:
            conn.sendall(response(200, b"got " + req.body))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            proxy_request_buffering off;
            client_body_buffer_size 1k;
            location / {{
                add_header X-Body "$request_body";
                proxy_pass http://{o.addr};
            }}
            location /missing {{
                proxy_pass http://{o.addr};
                proxy_intercept_errors on;
                error_page 404 /echo;
            }}
            location = /echo {{ return 200 "echo $request_body"; }}
        }}
    """)
    r = request(s.port, "/small", method="POST", body=b"0123456789")
    assert (r.status, r.body, r.header("X-Body")) == (200, b"got 0123456789", "0123456789")
    r = request(s.port, "/chunked", method="POST", body=b"abcdefghij" * 10, chunked=True)
    assert (r.status, r.header("X-Body")) == (200, "abcdefghij" * 10)
    # Larger than the buffer: streamed and gone.
    big = b"x" * 2048
    r = request(s.port, "/big", method="POST", body=big)
    assert (r.status, r.body) == (200, b"got " + big) and r.header("X-Body") in (None, "")
    r = request(s.port, "/missing", method="POST", body=b"payload")
    assert (r.status, r.body) == (404, b"echo payload")


@pytest.mark.parametrize("second", ["buffered", "unbuffered", "too-big"])
def test_error_page_to_a_proxy_before_the_unbuffered_body_ended(server, origin, second):
    # proxy_request_buffering off: the first origin answers 502 on the
    # body's first half, and error_page 502 proxies the request again. The
    # rest of the body is still read [nginx discards it]; kept whole (it
    # fits client_body_buffer_size) it goes to the second origin whatever
    # that location's buffering. Past the buffer, what went is gone: 500.
    lsock, port = listener()
    o = origin(lambda conn, req: conn.sendall(response(200, b"got " + req.body)) or False)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            client_body_buffer_size {"4" if second == "too-big" else "1k"};
            location / {{
                proxy_request_buffering off;
                proxy_pass http://127.0.0.1:{port};
                proxy_intercept_errors on;
                error_page 502 = /pass;
            }}
            location /pass {{
                proxy_request_buffering {"off" if second == "unbuffered" else "on"};
                proxy_pass http://{o.addr};
            }}
        }}
    """)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(request_bytes("/up", "POST", [("Content-Length", "8")]) + b"SEE-")
        # Once the proxy closed that connection, the 502 was taken and the
        # error_page runs, before the rest of the body comes.
        answer_mid_request(lsock, b"SEE-", response(502, b"bad"))
        c.sendall(b"THIS")
        r = read_reply(c)
    if second == "too-big":
        assert r.status == 500
        assert "client request body was already read and cannot be sent again" in s.error_log()
        assert o.requests == []
    else:
        assert (r.status, r.body) == (200, b"got SEE-THIS")
        assert o.wait_requests(1)[0].header("Content-Length") == "8"
    lsock.close()


def test_proxy_set_body_replaces_the_body(server, origin):
    o = origin()
    s = start(server, f"""
        proxy_set_header X-Blah blah;
        server {{ listen 127.0.0.1:PORT;
            location /set/ {{ proxy_pass http://{o.addr}; proxy_set_body "name=$arg_n"; }}
            location /wrap/ {{ proxy_pass http://{o.addr}; proxy_set_body "[$request_body]"; }}
            location /empty/ {{ proxy_pass http://{o.addr}; proxy_set_body ""; }}
        }}
    """)
    # The client's body (chunked here) is replaced, with a length.
    assert request(s.port, "/set/a?n=x", method="POST", body=b"ignored" * 3, chunked=True).status == 200
    assert request(s.port, "/set/b?n=yz").status == 200
    # Evaluated after the client's body was read.
    assert request(s.port, "/wrap/c", method="PUT", body=b"orig").status == 200
    assert request(s.port, "/empty/d", method="POST", body=b"gone").status == 200
    got = o.wait_requests(4)
    assert [(q.method, q.body, q.header("Content-Length"), q.header("Transfer-Encoding")) for q in got] == [
        ("POST", b"name=x", "6", None), ("GET", b"name=yz", "7", None), ("PUT", b"[orig]", "6", None),
        ("POST", b"", "0", None)]
    # proxy_set_header of the http block still applies.
    assert all(q.header("X-Blah") == "blah" for q in got)
    s2 = server("""
        server { listen 127.0.0.1:PORT;
            location / { proxy_pass http://127.0.0.1:1; proxy_set_body a; proxy_set_body b; }
        }
    """, start=False)
    code, err = s2.test_config()
    assert code != 0 and '"proxy_set_body" directive is duplicate' in err, err


def test_never_more_than_the_client_sent(server, origin):
    """A pipelined request after a body is a request, not body bytes."""
    o = origin()
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(request_bytes("/first", "POST", body=b"hello", close=False) +
                  b"GET /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        r1 = read_reply(c)
        assert (r1.status, r1.body) == (200, b"POST /first\n")
        r2 = read_reply_from(c, r1.rest, None)
        assert (r2.status, r2.body) == (200, b"GET /second\n")
    reqs = o.wait_requests(2)
    assert reqs[0].body == b"hello" and reqs[0].header("Content-Length") == "5"
    assert reqs[1].target == "/second" and reqs[1].body == b"abc"


# ---- the response from the origin -------------------------------------------------------------


def raw_handler(data, wait_close=True):
    """Sends `data` as the whole response, then waits until the proxy
    drops the connection (or a timeout); records whether it did."""
    def handler(conn, req):
        conn.sendall(data)
        if wait_close:
            conn.settimeout(5)
            try:
                handler.dropped.append(conn.recv(1) == b"")
            except OSError:
                handler.dropped.append(True)
        return False
    handler.dropped = []
    return handler


@pytest.mark.parametrize("data,reason", [
    (b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "upstream sent invalid status line"),
    (b"garbage\r\n\r\n", "upstream sent invalid status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     'upstream sent duplicate "Content-Length" header'),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     'upstream sent "Content-Length" and "Transfer-Encoding" headers'),
    (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "upstream sent invalid header line"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 8000 + b"\r\n\r\n", "upstream sent too big header"),
])
def test_malformed_response_is_502_and_dropped(server, origin, data, reason):
    h = raw_handler(data)
    o = origin(h)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    r = request(s.port, "/")
    assert r.status == 502
    assert poll(lambda: h.dropped, 5) == [True]
    assert error_lines(s, re.escape(reason) + r".* while reading response header from upstream")


def test_origin_headers_filtered(server, origin):
    def handler(conn, req):
        conn.sendall(response(200, b"hi", [
            ("Server", "Origin/9.9"), ("Date", "Mon, 01 Jan 2001 00:00:00 GMT"), ("X-Pad", "p"),
            ("X-Accel-Anything", "a"), ("X-Powered-By", "php"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
            ("Keep-Alive", "timeout=5"), ("X-Listed", "1"), ("Connection", "X-Listed"),
            ("Content-Type", "text/x-origin"), ("ETag", '"e1"'),
            ("Last-Modified", "Tue, 02 Jan 2001 00:00:00 GMT"), ("X-Secret", "s")]))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; proxy_hide_header X-Secret; }}
            location /off/ {{ proxy_pass http://{o.addr}; server_tokens off; }}
            location /pass/ {{ proxy_pass http://{o.addr}; proxy_pass_header Server; proxy_pass_header X-Pad; }}
        }}
    """)
    r = request(s.port, "/")
    assert r.status == 200 and r.body == b"hi"
    assert r.all("Server") == ["gatehouse/0.1.0"] or r.header("Server").startswith("gatehouse/")
    assert len(r.all("Server")) == 1 and len(r.all("Date")) == 1
    assert "2001" not in r.header("Date")
    for name in ("X-Pad", "X-Accel-Anything", "Keep-Alive", "X-Listed", "X-Secret"):
        assert r.header(name) is None, name
    assert r.header("X-Powered-By") == "php"
    assert r.all("Set-Cookie") == ["a=1", "b=2"]
    assert r.header("Content-Type") == "text/x-origin"
    assert r.header("ETag") == '"e1"'
    assert r.header("Last-Modified") == "Tue, 02 Jan 2001 00:00:00 GMT"
    assert r.header("Connection") == "close"

    assert request(s.port, "/off/").all("Server") == ["gatehouse"]
    r = request(s.port, "/pass/")
    assert r.all("Server") == ["Origin/9.9"] and r.header("X-Pad") == "p"


def test_the_origins_upgrade_field_is_dropped_but_after_101(server, origin):
    # Named by the origin's Connection, Upgrade is hop-by-hop (RFC 9110
    # 7.6.1: an intermediary MUST remove it). nginx passes it on, and
    # Apache's "Upgrade: h2,h2c" then breaks Safari over TLS; here it goes,
    # as it would without Connection naming it.
    def handler(conn, req):
        status, reason = (426, "Upgrade Required") if req.target == "/426" else (200, "OK")
        fields = [("Upgrade", "websocket")]
        if req.target != "/bare":
            fields.insert(0, ("Connection", "Upgrade"))
        conn.sendall(response(status, b"", fields, reason=reason))
        return False
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    for path, status in (("/200", 200), ("/426", 426), ("/bare", 200)):
        r = request(s.port, path)
        assert (r.status, r.all("Upgrade")) == (status, []), path


def test_an_uncached_origin_answers_the_conditionals_itself(server, origin):
    # The client's If-* fields go to the origin, and its answer goes back
    # as it is: no 304 or 412 made here from its validators [nginx]. A
    # response the cache stores is checked here, as a hit is.
    lm = "Tue, 02 Jan 2001 00:00:00 GMT"
    def handler(conn, req):
        if req.header("If-None-Match") == '"mine"':
            conn.sendall(response(304, b"", [("ETag", '"mine"')], reason="Not Modified", length=False))
        else:
            conn.sendall(response(200, b"body", [("ETag", '"e1"'), ("Last-Modified", lm),
                                                 ("Cache-Control", "max-age=60")]))
        return False
    o = origin(handler)
    s = start(server, f"""
        proxy_cache_path cache keys_zone=c:1m;
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; }}
            location /cached/ {{ proxy_pass http://{o.addr}; proxy_cache c; }}
        }}
    """)
    for conditional in (("If-None-Match", '"e1"'), ("If-Modified-Since", lm),
                        ("If-Match", '"other"'), ("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")):
        r = request(s.port, "/t", headers=[conditional])
        assert (r.status, r.body) == (200, b"body"), conditional
        assert o.requests[-1].header(conditional[0]) == conditional[1]
    r = request(s.port, "/t", headers=[("If-None-Match", '"mine"')])
    assert (r.status, r.header("ETag"), r.body) == (304, '"mine"', b"")
    # A miss that fills the cache, then a hit.
    assert request(s.port, "/cached/t", headers=[("If-None-Match", '"e1"')]).status == 304
    assert request(s.port, "/cached/t", headers=[("If-Modified-Since", lm)]).status == 304
    assert len(o.requests) == 6


def test_proxy_cookie_domain_and_path_rewrite_set_cookie(server, origin):
    # The Domain and Path attributes of each Set-Cookie, by the first rule
    # that matches [nginx]; the cookie's own "name=value" is never one.
    cookies = ["path=/app/x; Path=/app/x; Domain=.Backend.Internal; HttpOnly",
               "b=2; domain=api.backend.internal; PATH=/App/y",
               "c=3; Path=/other/; Domain=elsewhere.org"]
    def handler(conn, req):
        conn.sendall(response(200, b"", [("Set-Cookie", c) for c in cookies]))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{
                proxy_pass http://{o.addr};
                proxy_cookie_domain backend.internal $host;
                proxy_cookie_domain ~^(.+)\\.backend\\.internal$ $1.example.com;
                proxy_cookie_path /app/ /;
                proxy_cookie_path ~*^/app/(.*)$ /ci/$1;
                location /off/ {{ proxy_pass http://{o.addr}; proxy_cookie_domain off; }}
            }}
        }}
    """)
    r = request(s.port, "/", host="site.test")
    assert r.all("Set-Cookie") == ["path=/app/x; Path=/x; Domain=.site.test; HttpOnly",
                                   "b=2; domain=api.example.com; PATH=/ci/y",
                                   "c=3; Path=/other/; Domain=elsewhere.org"]
    # "off" stops the domain rules there; the path rules are inherited.
    r = request(s.port, "/off/", host="site.test")
    assert r.all("Set-Cookie") == ["path=/app/x; Path=/x; Domain=.Backend.Internal; HttpOnly",
                                   "b=2; domain=api.backend.internal; PATH=/ci/y",
                                   "c=3; Path=/other/; Domain=elsewhere.org"]


def test_proxy_cookie_flags_set_and_remove_attributes(server, origin):
    # The first rule naming a cookie (without case; "~": a caseless regex)
    # removes the Secure, HttpOnly and SameSite attributes it names and
    # appends those it sets [nginx]; other cookies are sent as they came.
    cookies = ["sid=1; Path=/;samesite=lax", "Pref=2; secure; HttpOnly; Max-Age=60",
               "trackerX=3", "other=4;secure"]
    def handler(conn, req):
        conn.sendall(response(200, b"", [("Set-Cookie", c) for c in cookies]))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{
                proxy_pass http://{o.addr};
                proxy_cookie_flags sid secure httponly samesite=strict;
                proxy_cookie_flags pref nosecure nohttponly nosamesite;
                proxy_cookie_flags ~^tracker samesite=none secure;
                proxy_cookie_flags ~^tracker httponly;
                location /off/ {{ proxy_pass http://{o.addr}; proxy_cookie_flags off; }}
                location /var/ {{ proxy_pass http://{o.addr}; proxy_cookie_flags $arg_c $arg_f; }}
            }}
        }}
    """)
    assert request(s.port, "/").all("Set-Cookie") == [
        "sid=1; Path=/; Secure; HttpOnly; SameSite=Strict",
        "Pref=2; Max-Age=60",
        "trackerX=3; Secure; SameSite=None",
        "other=4;secure"]
    assert request(s.port, "/off/").all("Set-Cookie") == cookies
    # Flags with variables are read per response; a value that is no flag
    # (here: none given) changes nothing.
    assert request(s.port, "/var/?c=other&f=nosecure").all("Set-Cookie")[3] == "other=4"
    assert request(s.port, "/var/?c=other").all("Set-Cookie") == cookies


def test_proxy_bind_chooses_the_local_address(server, origin):
    # The origin answers with the address and port the connection came
    # from. A literal is parsed at load, a value with variables per
    # request (empty: the kernel's choice; invalid: logged, the same).
    def handler(conn, req):
        host, port = conn.getpeername()[:2]
        conn.sendall(response(200, f"{host} {port}".encode()))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            proxy_bind 127.0.0.2;
            location / {{ proxy_pass http://{o.addr}; }}
            location /own/ {{ proxy_bind 127.0.0.3; proxy_pass http://{o.addr}; }}
            location /off/ {{ proxy_bind off; proxy_pass http://{o.addr}; }}
            location /var/ {{ proxy_bind $arg_b; proxy_pass http://{o.addr}; }}
            location /port/ {{ proxy_bind 127.0.0.4:$arg_p; proxy_pass http://{o.addr}; }}
            location /foreign/ {{ proxy_bind 192.0.2.1; proxy_pass http://{o.addr}; }}
        }}
    """)
    def seen(path):
        r = request(s.port, path)
        assert r.status == 200, (path, r.status)
        host, port = r.body.decode().split()
        return host, int(port)
    assert seen("/")[0] == "127.0.0.2"
    assert seen("/own/")[0] == "127.0.0.3"
    assert seen("/off/")[0] == "127.0.0.1"
    assert seen("/var/?b=127.0.0.5")[0] == "127.0.0.5"
    assert seen("/var/")[0] == "127.0.0.1"
    assert seen("/var/?b=no.such.address")[0] == "127.0.0.1"
    assert 'invalid local address "no.such.address"' in s.error_log()
    with socket.socket() as probe:
        probe.bind(("127.0.0.4", 0))
        free = probe.getsockname()[1]
    assert seen(f"/port/?p={free}") == ("127.0.0.4", free)
    # An address this host does not have: bind() fails, which is ours to
    # fix, not the origin's: 500, logged at crit [nginx].
    before = len(o.requests)
    assert request(s.port, "/foreign/").status == 500
    assert len(o.requests) == before
    assert re.search(r"\[crit\].*bind\(192\.0\.2\.1\) failed \(99: ", s.error_log())


def raw_get(port, path, version="1.1"):
    """A GET with Connection: close; every byte of the answer, as sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


TRAILING = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, X-Count\r\n"
            b"Connection: close\r\n\r\n4\r\nbody\r\n0\r\nX-Sum:  abc \r\nX-Count: 2\r\n"
            b"Content-Length: 9\r\n\r\n")


def test_proxy_pass_trailers_passes_an_origins_trailer_fields(server, origin):
    # Off (nginx's default), the origin's trailer section and its Trailer
    # field are dropped; on, they reach an HTTP/1.1 client after the last
    # chunk, framing fields left out, and join add_trailer's.
    def handler(conn, req):
        conn.sendall(TRAILING)
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; }}
            location /on/ {{ proxy_pass http://{o.addr}; proxy_pass_trailers on; }}
            location /both/ {{ proxy_pass http://{o.addr}; proxy_pass_trailers on; add_trailer X-Ours 1; }}
            location /unbuffered/ {{ proxy_pass http://{o.addr}; proxy_pass_trailers on; proxy_buffering off; }}
        }}
    """)
    def raw(path, version="1.1"):
        return raw_get(s.port, path, version).partition(b"\r\n\r\n")
    head, _, body = raw("/")
    assert b"Trailer:" not in head and body == b"4\r\nbody\r\n0\r\n\r\n"
    for path in ("/on/", "/unbuffered/"):
        head, _, body = raw(path)
        assert b"\r\nTrailer: X-Sum, X-Count\r\n" in head + b"\r\n", path
        assert body == b"4\r\nbody\r\n0\r\nX-Sum: abc\r\nX-Count: 2\r\n\r\n", path
    head, _, body = raw("/both/")
    assert body == b"4\r\nbody\r\n0\r\nX-Sum: abc\r\nX-Count: 2\r\nX-Ours: 1\r\n\r\n"
    # HTTP/1.0: no trailers, the body alone.
    head, _, body = raw("/on/", "1.0")
    assert body == b"body"


HINTED = (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nConnection: keep-alive\r\n\r\n"
          b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def test_early_hints_pass_an_origins_103_when_asked(server, origin):
    # "early_hints": the origin's 103 reaches the client ahead of the final
    # answer when a value is neither empty nor "0" [nginx 1.29]; otherwise,
    # and for HTTP/1.0 clients, only the final answer does.
    def handler(conn, req):
        conn.sendall(HINTED)
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; early_hints $arg_hints; }}
            location /never/ {{ proxy_pass http://{o.addr}; }}
        }}
    """)
    def raw(path, version="1.1"):
        return raw_get(s.port, path, version)
    hinted = raw("/?hints=1")
    assert hinted.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert hinted.endswith(b"\r\n\r\nok")
    for path in ("/?hints=0", "/", "/never/?hints=1"):
        assert raw(path).startswith(b"HTTP/1.1 200 OK\r\n"), path
    assert raw("/?hints=1", "1.0").startswith(b"HTTP/1.1 200 OK\r\n")


def test_proxy_force_ranges_cuts_an_origins_whole_answer(server, origin):
    # An origin that ignores Range (and says "Accept-Ranges: none"): with
    # proxy_force_ranges the proxy cuts its 200 [nginx]; without, the 200
    # goes as it is.
    def handler(conn, req):
        conn.sendall(response(200, b"0123456789", [("Accept-Ranges", "none"), ("ETag", '"e"')]))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; }}
            location /f/ {{ proxy_pass http://{o.addr}; proxy_force_ranges on; }}
        }}
    """)
    r = request(s.port, "/f/x", headers=[("Range", "bytes=2-4")])
    assert (r.status, r.header("Content-Range"), r.body) == (206, "bytes 2-4/10", b"234")
    r = request(s.port, "/f/x", headers=[("Range", "bytes=2-4"), ("If-Range", '"other"')])
    assert (r.status, r.body) == (200, b"0123456789")
    r = request(s.port, "/f/x")
    assert r.all("Accept-Ranges") == ["bytes"]
    r = request(s.port, "/x", headers=[("Range", "bytes=2-4")])
    assert (r.status, r.body, r.all("Accept-Ranges")) == (200, b"0123456789", ["none"])


def test_passed_server_and_date_absent_at_the_origin(server, origin):
    # proxy_pass_header Server / Date: the origin's fields stand instead
    # of ours, and so does their absence [nginx].
    o = origin(lambda conn, req: conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nbare") or False)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; }}
            location /pass/ {{
                proxy_pass http://{o.addr};
                proxy_pass_header Date;
                proxy_pass_header Server;
                location /pass/nested/ {{ proxy_pass http://{o.addr}; }}
            }}
            location /lost/ {{ proxy_pass http://127.0.0.1:{closed_port()}; proxy_pass_header Server; }}
        }}
    """)
    r = request(s.port, "/plain")
    assert (r.status, r.body) == (200, b"bare")
    assert r.header("Server").startswith("gatehouse") and r.header("Date")
    for path in ("/pass/x", "/pass/nested/y"):
        r = request(s.port, path)
        assert (r.status, r.body, r.header("Server"), r.header("Date")) == (200, b"bare", None, None), path
    # An answer of our own (no origin response) has ours.
    r = request(s.port, "/lost/z")
    assert r.status == 502 and r.header("Server").startswith("gatehouse")


def test_status_line_reason_passes(server, origin):
    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 299 Custom Thing\r\nContent-Length: 0\r\n\r\n")
        return False
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    r = request(s.port, "/")
    assert (r.status, r.reason) == (299, "Custom Thing")


def test_interim_responses_are_skipped(server, origin):
    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
                     response(200, b"final"))
        return False
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    r = request(s.port, "/")
    assert (r.status, r.body) == (200, b"final")


def test_head_and_no_body_statuses(server, origin):
    def handler(conn, req):
        if req.target == "/204":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == "/304":
            conn.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
        else:
            # HEAD: a length, no body.
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        return True
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    r = request(s.port, "/h", method="HEAD")
    assert r.status == 200 and r.header("Content-Length") == "1234" and r.body == b""
    assert request(s.port, "/204").status == 204
    r = request(s.port, "/304")
    assert r.status == 304 and r.header("ETag") == '"x"'


def test_proxy_redirect(server, origin):
    def handler(conn, req):
        loc = req.target.split("loc=", 1)[1] if "loc=" in req.target else "/"
        conn.sendall(response(302, b"", [("Location", loc), ("Refresh", "5; url=" + loc)]))
        return False
    o = origin(handler)
    base = f"http://{o.addr}"
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; server_name localhost;
            location /one/ {{ proxy_pass {base}/two/; }}
            location /plain/ {{ proxy_pass {base}; }}
            location /off/ {{ proxy_pass {base}/two/; proxy_redirect off; }}
            location /pair/ {{ proxy_pass {base}/; proxy_redirect http://elsewhere/old/ http://frontend/new/; }}
            location /re/ {{ proxy_pass {base}/; proxy_redirect ~^http://[^/]+/user/(\\w+)$ http://$1.example.com/; }}
            location /many/ {{
                proxy_pass {base}/two/;
                proxy_redirect http://nomatch/ /x/;
                proxy_redirect default;
            }}
        }}
    """)
    host = f"http://localhost:{s.port}"
    cases = [
        ("/one/a?loc=" + base + "/two/x/y", host + "/one/x/y"),
        ("/plain/b?loc=" + base + "/p/q", host + "/p/q"),
        ("/off/c?loc=" + base + "/two/x", base + "/two/x"),
        ("/pair/d?loc=http://elsewhere/old/z", "http://frontend/new/z"),
        ("/re/e?loc=http://origin/user/bob", "http://bob.example.com/"),
        ("/many/f?loc=" + base + "/two/m", host + "/many/m"),
        ("/one/g?loc=http://unrelated/x", "http://unrelated/x"),
    ]
    for path, want in cases:
        r = request(s.port, path)
        assert r.status == 302
        assert r.header("Location") == want, (path, r.headers)
    r = request(s.port, "/one/a?loc=" + base + "/two/r")
    assert r.header("Refresh") == "5; url=/one/r"


def test_intercept_errors(server, origin, tmp_path):
    def handler(conn, req):
        conn.sendall(response(404, b"origin says no", [("X-Origin", "1")]))
        return False
    o = origin(handler)
    s = start(server, f"""
        log_format up '$status $upstream_status $upstream_addr';
        access_log logs/up.log up;
        server {{ listen 127.0.0.1:PORT;
            error_page 404 /err.html;
            location = /err.html {{ root html; }}
            location /i/ {{ proxy_pass http://{o.addr}; proxy_intercept_errors on; }}
            location /p/ {{ proxy_pass http://{o.addr}; }}
        }}
    """, files={"err.html": "local error page\n"})
    r = request(s.port, "/i/x")
    assert r.status == 404 and r.body == b"local error page\n" and r.header("X-Origin") is None
    r = request(s.port, "/p/x")
    assert r.status == 404 and r.body == b"origin says no" and r.header("X-Origin") == "1"
    lines = s.wait_lines("up.log", 2)
    assert lines[0].decode().strip() == f"404 404 {o.addr}"


# ---- streaming and memory --------------------------------------------------------------------------


MIB = 1 << 20
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def test_intercepted_401_keeps_its_challenges(server, origin):
    # The error page replaces the origin's 401, but not the
    # WWW-Authenticate fields the client needs to log in (all of them).
    def handler(conn, req):
        conn.sendall(response(401, b"origin", [("WWW-Authenticate", 'Basic realm="a"'),
                                               ("WWW-Authenticate", "Bearer"), ("X-Origin", "1")]))
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{
                proxy_pass http://{o.addr};
                proxy_intercept_errors on;
                error_page 401 /denied;
            }}
            location = /denied {{ return 200 "denied"; }}
        }}
    """)
    r = request(s.port, "/private")
    assert (r.status, r.body) == (401, b"denied")
    assert r.all("WWW-Authenticate") == ['Basic realm="a"', "Bearer"]
    assert r.header("X-Origin") is None


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


def sanitized():
    """An AddressSanitizer build keeps freed memory in quarantine: RSS
    says nothing about what the worker holds there."""
    import subprocess
    from gh_server import BIN
    out = subprocess.run([str(BIN), "-V"], capture_output=True, text=True, timeout=10)
    return "AddressSanitizer" in out.stdout + out.stderr


def assert_rss_bound(grown_kib, what):
    if sanitized():
        return
    assert grown_kib < 8 * 1024, f"worker RSS grew by {grown_kib} KiB {what}"


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def big_handler(size, chunked=False):
    """Sends `size` bytes of PATTERN; the request says which size if it
    has "?n=" (bytes). `sent` is set once a request without "?n=" has
    been sent whole: set by a warm-up request's thread, it could come
    after the test had cleared it."""
    def handler(conn, req):
        n = size
        m = re.search(r"n=(\d+)", req.target)
        if m:
            n = int(m.group(1))
        if chunked:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
        left = n
        while left:
            piece = PATTERN[:min(left, len(PATTERN))]
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
            left -= len(piece)
        if chunked:
            conn.sendall(b"0\r\n\r\n")
        if not m:
            handler.sent.set()
        return False
    handler.sent = threading.Event()
    return handler


class Checker:
    """Counts body bytes and checks them against PATTERN."""

    def __init__(self):
        self.n = 0
        self.bad = False

    def __call__(self, data):
        off = self.n % len(PATTERN)
        want = (PATTERN[off:] + PATTERN * (1 + len(data) // len(PATTERN)))[:len(data)]
        if data != want:
            self.bad = True
        self.n += len(data)


def download(port, path, timeout=60):
    check = Checker()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(request_bytes(path))
        r = read_reply(c, sink=check)
    return r, check


@pytest.mark.parametrize("mode", ["buffering", "temp-off", "unbuffered", "chunked"])
def test_slow_client_keeps_memory_bounded(server, origin, mode):
    size = 64 * MIB
    h = big_handler(size, chunked=mode == "chunked")
    o = origin(h, timeout=60)
    extra = {"buffering": "", "chunked": "", "temp-off": "proxy_max_temp_file_size 0;",
             "unbuffered": "proxy_buffering off;"}[mode]
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; send_timeout 60s;
            location / {{ proxy_pass http://{o.addr}; proxy_buffers 8 16k; {extra} }}
        }}
    """)
    pid = worker_pid(s)
    r, check = download(s.port, "/warm?n=1000000")
    assert r.complete and check.n == 1000000
    before = rss_kib(pid)
    check = Checker()
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(request_bytes("/big"))
        # Read a little, then stop: the origin keeps sending.
        first = c.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(2.0)
        during = rss_kib(pid)
        # With a temp file the origin is done meanwhile; without one it
        # waits for the client.
        assert h.sent.is_set() == (mode in ("buffering", "chunked")), mode
        c.settimeout(60)
        r = read_reply_from(c, first, check)
    assert r.complete and check.n == size and not check.bad
    assert_rss_bound(during - before, "while the client did not read")


def read_reply_from(sock, first, sink):
    """read_reply() for a socket whose first bytes were already read."""
    class Pre:
        def __init__(self, s, data):
            self.s = s
            self.data = data

        def recv(self, n):
            if self.data:
                d, self.data = self.data, b""
                return d
            return self.s.recv(n)
    return read_reply(Pre(sock, first), sink=sink)


def stream_sizes():
    sizes = [64 * MIB]
    # One pass of 1 GiB each way: 1-3 s each where measured (a 4-core VM);
    # GH_SKIP_BIG=1 leaves them out.
    if not os.environ.get("GH_SKIP_BIG"):
        sizes.append(1 << 30)
    return sizes


@pytest.mark.parametrize("size", stream_sizes(), ids=lambda n: f"{n // MIB}MiB")
def test_large_download_rss_flat(server, origin, size):
    o = origin(big_handler(size), timeout=120)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    pid = worker_pid(s)
    download(s.port, "/warm?n=100000")
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.05)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        r, check = download(s.port, "/big", timeout=120)
    finally:
        done.set()
        t.join(5)
    assert r.complete and check.n == size and not check.bad
    assert_rss_bound(peak[0] - before, "during the download")


UPLOADS = [(64 * MIB, "on"), (64 * MIB, "off")] + [(n, "off") for n in stream_sizes() if n > 64 * MIB]


# Buffered uploads go to a temp file past client_body_buffer_size: 64 MiB
# of disk is enough to show it; the 1 GiB pass streams.
@pytest.mark.parametrize("size,buffering", UPLOADS, ids=lambda v: f"{v // MIB}MiB" if isinstance(v, int) else v)
def test_large_upload_rss_flat(server, origin, size, buffering):
    received = []

    def handler(conn, req):
        received.append(getattr(req, "body_len", len(req.body)))
        conn.sendall(response(200, b"got it"))
        return False
    o = origin(handler, keep_body=False, timeout=120)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; client_max_body_size 0; client_body_timeout 60s;
            location / {{ proxy_pass http://{o.addr}; proxy_request_buffering {buffering}; }}
        }}
    """)
    pid = worker_pid(s)
    assert request(s.port, "/warm", method="POST", body=b"x" * 100000).status == 200
    before = rss_kib(pid)
    peak = [before]
    with socket.create_connection(("127.0.0.1", s.port), timeout=120) as c:
        c.sendall(f"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
        sent = 0
        while sent < size:
            c.sendall(PATTERN)
            sent += len(PATTERN)
            if sent % (16 * MIB) == 0:
                peak[0] = max(peak[0], rss_kib(pid))
        r = read_reply(c)
    assert r.status == 200 and r.body == b"got it"
    assert received[-1] == size
    assert_rss_bound(peak[0] - before, "during the upload")


@pytest.mark.parametrize("buffering", ["on", "off"])
def test_million_one_byte_chunks_bounded(server, origin, buffering):
    # A body of a million one-byte chunks used to cost one buffer per chunk
    # in the request arena: about 124 MB per connection. Memory is that of
    # the configured buffers now, whatever the chunk sizes.
    received = []

    def handler(conn, req):
        received.append(req.body)
        conn.sendall(response(200, b"got it"))
        return False
    o = origin(handler, timeout=120)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; client_max_body_size 0; client_body_timeout 60s;
            location / {{ proxy_pass http://{o.addr}; proxy_request_buffering {buffering}; }}
        }}
    """)
    pid = worker_pid(s)
    assert request(s.port, "/warm", method="POST", body=b"x" * 1000, chunked=True).status == 200
    before = rss_kib(pid)
    peak = [before]
    n = 1_000_000
    body = bytes(ord("a") + i % 26 for i in range(26))
    with socket.create_connection(("127.0.0.1", s.port), timeout=120) as c:
        c.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        block = b"".join(b"1\r\n" + body[i % 26:i % 26 + 1] + b"\r\n" for i in range(26 * 1000))
        sent = 0
        while sent < n:
            c.sendall(block)
            sent += 26 * 1000
            if sent % (26 * 20000) == 0:
                peak[0] = max(peak[0], rss_kib(pid))
        c.sendall(b"0\r\n\r\n")
        r = read_reply(c)
    peak[0] = max(peak[0], rss_kib(pid))
    assert r.status == 200 and r.body == b"got it"
    assert len(received[-1]) == sent
    assert received[-1] == body * (sent // 26)
    assert_rss_bound(peak[0] - before, "while reading a million one-byte chunks")


def test_x_accel_buffering_no_streams_at_once(server, origin):
    release = threading.Event()

    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n\r\n"
                     b"5\r\nfirst\r\n")
        release.wait(5)
        conn.sendall(b"4\r\nlast\r\n0\r\n\r\n")
        return False
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(request_bytes("/"))
        got = b""
        while b"first" not in got:
            d = c.recv(4096)
            assert d, got
            got += d
        assert b"X-Accel-Buffering" not in got
        release.set()
        r = read_reply_from(c, got, None)
    assert r.complete and r.body == b"firstlast"


# ---- failures ----------------------------------------------------------------------------------------


def test_connect_refused_is_502_with_nginx_log_line(server):
    port = closed_port()
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; server_name example;
            location / {{ proxy_pass http://127.0.0.1:{port}; }} }}
    """)
    r = request(s.port, "/x?y", host="h.test")
    assert r.status == 502
    lines = error_lines(s, r"\[error\]")
    assert lines, s.error_log()
    line = lines[0]
    assert "(111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: example, " \
           'request: "GET /x?y HTTP/1.1", upstream: "http://127.0.0.1:%d/x?y", host: "h.test"' % port in line, line
    assert "connect()" in line


def test_origin_stalls_is_504(server, origin):
    def handler(conn, req):
        time.sleep(3)
        return False
    o = origin(handler)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; proxy_read_timeout 500ms; }} }}
    """)
    t0 = time.monotonic()
    r = request(s.port, "/")
    assert r.status == 504
    assert time.monotonic() - t0 < 2.5
    assert error_lines(s, r"upstream timed out \(110: Connection timed out\) while reading response header "
                          r"from upstream")


def test_origin_stops_reading_body_is_504(server):
    # An origin that never accepts: the connection completes in the
    # backlog, the body fills the kernel buffers, then nothing moves.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    try:
        s = start(server, f"""
            server {{ listen 127.0.0.1:PORT; client_max_body_size 0;
                location / {{ proxy_pass http://127.0.0.1:{port}; proxy_send_timeout 500ms; }} }}
        """)
        r = request(s.port, "/", method="POST", body=b"z" * (16 * MIB), timeout=20)
        assert r.status == 504
        assert error_lines(s, r"upstream timed out .* while sending request to upstream")
    finally:
        lsock.close()


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_origin_dies_mid_body_truncates(server, origin, how, framing):
    def handler(conn, req):
        if framing == "length":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 5000)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"a" * 5000 + b"\r\n")
        time.sleep(0.3)
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(request_bytes("/", close=False))
        r = read_reply(c)
    assert r.status == 200
    assert not r.complete and r.closed
    assert r.body == b"a" * 5000
    if framing == "chunked":
        assert r.header("Transfer-Encoding") == "chunked"
    assert error_lines(s, r"while reading upstream")


# ---- splice (proxy_splice) -------------------------------------------------------------------------


def pipe_fds(pid):
    """How many pipe ends the process has open (two a pipe)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return n


@pytest.mark.parametrize("mode", ["splice", "splice-off", "limit-rate", "worker-pipes-0"])
def test_a_spliced_body_waits_in_a_pipe_for_a_slow_client(server, origin, mode):
    # A slow client: the body went into a pipe and out to the client's
    # socket until that was full; what the pipe still holds waits there,
    # and the rest of the body goes to the buffers and the temp file, so
    # the origin is done as without splicing (proxy_buffering). Without
    # splicing (proxy_splice off, worker_pipes 0), or with a filter on the
    # body (a rate limit), no pipe is ever made. Either way the client gets
    # every byte, and the access log counts them.
    size = 16 * MIB
    h = big_handler(size)
    o = origin(h, timeout=60)
    extra = {"splice": "", "splice-off": "proxy_splice off;", "limit-rate": "limit_rate 1g;",
             "worker-pipes-0": ""}[mode]
    s = server(f"""
        log_format sent '$status $body_bytes_sent';
        access_log logs/sent.log sent;
        server {{ listen 127.0.0.1:PORT; send_timeout 60s;
            location / {{ proxy_pass http://{o.addr}; {extra} }}
        }}
    """, start=False)
    if mode == "worker-pipes-0":
        s.conf.write_text(s.conf.read_text().replace("worker_connections 128;", "worker_connections 128; worker_pipes 0;"))
    need_proxy(s)
    s.start()
    pid = worker_pid(s)
    pipes_before = pipe_fds(pid)
    check = Checker()
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(request_bytes("/big", close=False))
        first = c.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert h.sent.wait(30), "the origin was not read to its end while the client waited"
        held = pipe_fds(pid) - pipes_before
        assert held == (2 if mode == "splice" else 0), mode  # one pipe, both ends
        r = read_reply_from(c, first, check)
        assert r.complete and check.n == size and not check.bad
        # The connection goes on, and so does splicing.
        c.sendall(request_bytes("/again?n=3000000", close=False))
        check = Checker()
        r = read_reply(c, sink=check)
        assert r.status == 200 and r.complete and check.n == 3000000 and not check.bad
    assert [line.decode().strip() for line in s.wait_lines("sent.log", 2)] == [f"200 {size}", "200 3000000"]
    assert not re.search(r"\[(error|crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


def test_a_close_delimited_body_is_spliced_and_sent_chunked(server, origin):
    # No length: the body ends when the origin closes; an HTTP/1.1 client
    # gets it chunked, the chunks framing the pipe's pieces.
    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for i in range(8):
            conn.sendall(PATTERN[i * 100000:(i + 1) * 100000])
        return False
    o = origin(handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    r = request(s.port, "/")
    assert r.status == 200 and r.complete
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.body == PATTERN[:800000]


def test_bytes_past_a_spliced_length_are_not_forwarded(server, origin):
    # The origin sends more than its Content-Length: the client gets the
    # length and no more, and the connection, left with bytes nobody
    # asked for, is not used again.
    body = PATTERN[:300000]

    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        conn.sendall(body[:100000])
        time.sleep(0.05)
        conn.sendall(body[100000:] + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
        return True
    o = origin(handler)
    s = start_keepalive_proxy(server, o)
    for i in range(2):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(request_bytes(f"/{i}", close=False))
            r = read_reply(c)
            assert r.status == 200 and r.complete and r.body == body
            # Nothing follows the body on the client's connection.
            c.settimeout(0.3)
            with pytest.raises(socket.timeout):
                c.recv(1)
    assert o.connections == 2


def test_a_client_gone_mid_splice_leaves_nothing_for_the_next(server, origin):
    # The client goes away with bytes still in the pipe: that pipe is
    # closed, not kept, and the next response's bytes are its own.
    o = origin(big_handler(8 * MIB), timeout=30)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            c.sendall(request_bytes("/big"))
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
        r, check = download(s.port, "/next?n=2000000")
        assert r.status == 200 and r.complete and check.n == 2000000 and not check.bad
    # A client gone is worth an info line, nothing worse.
    assert not re.search(r"\[(error|crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


@pytest.mark.parametrize("mode", ["splice", "splice-off"])
def test_a_tunnel_moves_bulk_both_ways_through_pipes(server, origin, mode):
    # After a 101, bytes go both ways through a kernel pipe each way
    # (proxy_splice), taken once the bytes that came with the heads are
    # passed on; half closes pass through; the worker lets go of the pipes
    # when the tunnel ends. Every byte arrives in order either way, and
    # what went to the client counts as sent body.
    size = 8 * MIB
    up = PATTERN * 8
    down = bytes(reversed(PATTERN)) * 8
    got_up = {}

    def handler(conn, req):
        assert req.header("Upgrade") == "bulk"
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: bulk\r\nConnection: Upgrade\r\n\r\n"
                     b"origin-first")

        def read_all():
            data = bytearray()
            while chunk := conn.recv(1 << 16):
                data += chunk
            got_up["data"] = bytes(data)
        t = threading.Thread(target=read_all)
        t.start()
        for i in range(0, size, 1 << 18):
            conn.sendall(down[i:i + (1 << 18)])
        conn.shutdown(socket.SHUT_WR)
        t.join(60)
        return False
    o = origin(handler, timeout=60)
    off = "proxy_splice off;" if mode == "splice-off" else ""
    s = start(server, f"""
        log_format sent '$status $body_bytes_sent';
        access_log logs/sent.log sent;
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; proxy_http_version 1.1;
                proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade; {off} }}
        }}
    """)
    pid = worker_pid(s)
    pipes_before = pipe_fds(pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        # The client's first bytes come with its request, before the 101.
        c.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nUpgrade: bulk\r\nConnection: Upgrade\r\n\r\nclient-first")
        reader = Reader(c)
        assert reader.line().startswith(b"HTTP/1.1 101")
        while reader.line():
            pass
        sender = threading.Thread(target=lambda: (c.sendall(up), c.shutdown(socket.SHUT_WR)))
        sender.start()
        received = bytearray(reader.buf)
        held = None
        while chunk := c.recv(1 << 16):
            received += chunk
            if held is None and len(received) > size // 2:
                held = pipe_fds(pid) - pipes_before
        sender.join(60)
    assert held == (4 if mode == "splice" else 0), mode  # two pipes, both ends each
    assert bytes(received) == b"origin-first" + down
    assert poll(lambda: "data" in got_up, timeout=30)
    assert got_up["data"] == b"client-first" + up
    [line] = s.wait_lines("sent.log", 1)
    assert line.decode().split() == ["101", str(len(b"origin-first") + size)]
    # The tunnel is over: its pipes go back to the table, and from there
    # (idle worker) are closed.
    assert poll(lambda: pipe_fds(pid) == pipes_before), pipe_fds(pid)
    assert not re.search(r"\[(error|crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


def test_a_client_gone_mid_tunnel_leaves_nothing_for_the_next_tunnel(server, origin):
    # The client goes away while its pipe holds the origin's bytes: the
    # pipe is closed with them, not kept, and the next tunnel's bytes are
    # its own.
    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: bulk\r\nConnection: Upgrade\r\n\r\n")
        if req.target == "/flood":
            try:
                while True:
                    conn.sendall(PATTERN)
            except OSError:
                return False
        data = bytearray()
        while len(data) < 3 * MIB and (chunk := conn.recv(1 << 16)):
            data += chunk
        conn.sendall(bytes(reversed(data)))
        return False
    o = origin(handler, timeout=30)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; proxy_http_version 1.1;
                proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade; }}
        }}
    """)
    pid = worker_pid(s)
    pipes_before = pipe_fds(pid)
    upgrade = b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: bulk\r\nConnection: Upgrade\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            c.sendall(upgrade % b"/flood")
            got = b""
            while len(got) < 4 * MIB:
                got += c.recv(1 << 16)
            # Gone with the pipe full behind a full socket.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(upgrade % b"/echo")
            reader = Reader(c)
            assert reader.line().startswith(b"HTTP/1.1 101")
            while reader.line():
                pass
            up = PATTERN * 3
            c.sendall(up)
            back = bytearray(reader.buf)
            while len(back) < len(up) and (chunk := c.recv(1 << 16)):
                back += chunk
            assert bytes(back) == bytes(reversed(up))
    assert poll(lambda: pipe_fds(pid) == pipes_before), pipe_fds(pid)
    # A client gone is worth an info line, nothing worse.
    assert not re.search(r"\[(error|crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


def accept_head(lsock, timeout):
    """The next connection on lsock, and what it sent up to the end of
    its request head: (conn, head, bytes after the head)."""
    conn, _ = lsock.accept()
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    return conn, head, rest


def slow_upload_origin(lsock, size, seen):
    """Takes one request from lsock: its head, then 1 MiB of its body,
    then waits for seen["go"] before it reads the rest; records the
    head and the body in seen and answers 200 with the body's length."""
    def run():
        conn, head, body = accept_head(lsock, 60)
        with conn:
            seen["head"] = head.decode("latin-1")
            body = bytearray(body)
            while len(body) < MIB:
                body += conn.recv(65536)
            seen["started"] = True
            assert seen["go"].wait(60)
            if "transfer-encoding: chunked" in seen["head"].lower():
                while not body.endswith(b"0\r\n\r\n") and (chunk := conn.recv(1 << 16)):
                    body += chunk
                body = dechunk(bytes(body))
            else:
                while len(body) < size and (chunk := conn.recv(1 << 16)):
                    body += chunk
            seen["body"] = bytes(body)
            conn.sendall(response(200, str(len(body)).encode(), close=True))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("mode", ["splice", "splice-off", "chunked", "small-buffer-off"])
def test_an_unbuffered_upload_is_spliced_to_the_origin(server, mode):
    # proxy_request_buffering off, a body framed by its length and larger
    # than client_body_buffer_size: it goes from the client's socket to
    # the origin's through one kernel pipe, held while the origin does not
    # read. Not with proxy_splice off, not for a chunked body (re-chunked
    # with its bytes), not for one the buffer keeps a copy of. Every byte
    # arrives in order either way, $request_length counts them, and the
    # pipe goes back when the request is over.
    size = 8 * MIB
    body = PATTERN * 8
    lsock, port = listener()
    seen = {"go": threading.Event()}
    origin_thread = slow_upload_origin(lsock, size, seen)
    off = "proxy_splice off;" if mode == "splice-off" else ""
    buffer = "client_body_buffer_size 16m;" if mode == "small-buffer-off" else "client_body_buffer_size 16k;"
    s = start(server, f"""
        log_format len '$status $request_length';
        access_log logs/len.log len;
        server {{ listen 127.0.0.1:PORT; client_max_body_size 64m; {buffer}
            location / {{ proxy_pass http://127.0.0.1:{port}; proxy_request_buffering off; {off} }}
        }}
    """)
    pid = worker_pid(s)
    pipes_before = pipe_fds(pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        head = request_bytes("/up", "POST", chunked=(mode == "chunked"),
                             headers=[] if mode == "chunked" else [("Content-Length", str(size))])
        if mode == "chunked":
            stream = b"".join(b"%x\r\n" % len(body[i:i + MIB]) + body[i:i + MIB] + b"\r\n"
                              for i in range(0, size, MIB)) + b"0\r\n\r\n"
        else:
            stream = body
        sender = threading.Thread(target=lambda: c.sendall(head + stream), daemon=True)
        sender.start()
        assert poll(lambda: seen.get("started"), timeout=30)
        # The origin reads no more: the worker's pipe (when it splices)
        # holds what the client sent meanwhile.
        assert poll(lambda: pipe_fds(pid) - pipes_before == (2 if mode == "splice" else 0) or None, timeout=10), \
            (mode, pipe_fds(pid) - pipes_before)
        held = pipe_fds(pid) - pipes_before
        seen["go"].set()
        sender.join(60)
        r = read_reply(c)
    origin_thread.join(60)
    lsock.close()
    assert held == (2 if mode == "splice" else 0), mode
    assert (r.status, r.body) == (200, str(size).encode())
    assert seen["body"] == body
    if mode == "chunked":
        assert "transfer-encoding: chunked" in seen["head"].lower()
    else:
        assert f"content-length: {size}" in seen["head"].lower()
    [line] = s.wait_lines("len.log", 1)
    status, length = line.decode().split()
    assert status == "200" and int(length) == len(head) + len(stream)
    assert poll(lambda: pipe_fds(pid) == pipes_before), pipe_fds(pid)
    assert not re.search(r"\[(error|crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


@pytest.mark.parametrize("mode", ["splice", "splice-off"])
def test_an_origin_slow_to_read_an_upload_is_not_the_clients_timeout(server, mode):
    # client_body_timeout is the client's: while the origin does not read
    # (the body waits in a pipe, or in memory), it does not run. The body
    # is larger than what the sockets on the way can hold.
    size = 24 * MIB
    lsock, port = listener()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    seen = {"go": threading.Event()}
    t = slow_upload_origin(lsock, size, seen)
    off = "proxy_splice off;" if mode == "splice-off" else ""
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; client_max_body_size 64m; client_body_buffer_size 16k;
            client_body_timeout 300ms;
            location / {{ proxy_pass http://127.0.0.1:{port}; proxy_request_buffering off; {off} }}
        }}
    """)
    body = PATTERN * 24
    result = {}
    sender = threading.Thread(target=lambda: result.update(r=request(s.port, "/slow", method="POST", body=body)))
    sender.start()
    assert poll(lambda: seen.get("started"), timeout=30)
    time.sleep(1.0)  # what is tested is a timeout that does not fire
    seen["go"].set()
    sender.join(60)
    t.join(30)
    lsock.close()
    assert (result["r"].status, result["r"].body) == (200, str(size).encode())
    assert seen["body"] == body
    assert "client timed out" not in s.error_log()


@pytest.mark.parametrize("mode", ["splice", "splice-off"])
def test_an_error_page_mid_upload_answers_and_lets_go_of_the_pipe(server, mode):
    # The origin answers 404 at once, before the spliced body has all
    # gone; its error_page answers instead (the proxy's reader left, the
    # rest of the body is not spliced for it), and the pipe goes back
    # when the request is over.
    size = 8 * MIB
    lsock, port = listener()

    def early():
        conn, _, _ = accept_head(lsock, 30)
        with conn:
            conn.sendall(response(404, b"no", close=True))
            try:
                while conn.recv(1 << 16):
                    pass
            except OSError:
                pass
    t = threading.Thread(target=early, daemon=True)
    t.start()
    off = "proxy_splice off;" if mode == "splice-off" else ""
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; client_max_body_size 64m; client_body_buffer_size 16k;
            location / {{ proxy_pass http://127.0.0.1:{port}; proxy_request_buffering off; {off}
                proxy_intercept_errors on; error_page 404 = /page; }}
            location = /page {{ return 200 "page"; }}
        }}
    """)
    pid = worker_pid(s)
    pipes_before = pipe_fds(pid)
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        def send():
            try:
                c.sendall(request_bytes("/up", "POST", headers=[("Content-Length", str(size))]) + PATTERN * 8)
            except OSError:
                pass  # the server may close before it has all: nothing more is read
        sender = threading.Thread(target=send)
        sender.start()
        r = read_reply(c)
        assert (r.status, r.body) == (200, b"page")
        c.shutdown(socket.SHUT_RD)
        sender.join(60)
    t.join(30)
    lsock.close()
    assert poll(lambda: pipe_fds(pid) == pipes_before or None, timeout=10), pipe_fds(pid)
    assert not re.search(r"\[(crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


def test_a_client_gone_mid_upload_leaves_nothing_in_the_pipe_for_the_next(server):
    # The client goes away while the pipe holds its body and the origin
    # does not read: the pipe is closed with the bytes, not kept, and the
    # next upload's bytes are its own.
    size = 8 * MIB
    lsock, port = listener(backlog=4)
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT; client_max_body_size 64m; client_body_buffer_size 16k;
            location / {{ proxy_pass http://127.0.0.1:{port}; proxy_request_buffering off; }}
        }}
    """)
    pid = worker_pid(s)
    pipes_before = pipe_fds(pid)
    # The first origin connection reads nothing of the body.
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        c.sendall(request_bytes("/gone", "POST", headers=[("Content-Length", str(size))]))
        c.settimeout(0.2)
        stalled, _ = lsock.accept()
        try:
            for i in range(0, size, 1 << 16):
                c.sendall(PATTERN[:1 << 16])
        except (socket.timeout, BlockingIOError):
            pass
        assert poll(lambda: pipe_fds(pid) - pipes_before == 2 or None, timeout=10)
    # The client is gone; the origin gives up too, which ends the
    # request. The next upload follows at once, before an idle worker
    # would close its kept pipes: a pipe kept with the old bytes would
    # put them before its body.
    seen = {"go": threading.Event()}
    seen["go"].set()
    t = slow_upload_origin(lsock, 2 * MIB, seen)
    stalled.close()
    body = bytes(reversed(PATTERN)) * 2
    r = request(s.port, "/next", method="POST", body=body)
    t.join(30)
    lsock.close()
    assert (r.status, r.body) == (200, str(2 * MIB).encode())
    assert seen["body"] == body
    assert poll(lambda: pipe_fds(pid) == pipes_before or None, timeout=10), pipe_fds(pid)
    assert not re.search(r"\[(crit|alert|emerg)\]", s.error_log()), s.error_log()[-2000:]


# ---- keepalive --------------------------------------------------------------------------------------


def keepalive_handler(conn, req):
    conn.sendall(response(200, f"{req.method} {req.target}".encode()))
    return True


def start_keepalive_proxy(server, o):
    """A proxy to origin `o` through a keep-alive pool, HTTP/1.1 both ways."""
    return start(server, f"""
        upstream backend {{ server {o.addr}; keepalive 4; }}
        server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://backend;
                  proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
    """)


def test_keepalive_reuses_connections(server, origin):
    o = origin(keepalive_handler)
    s = start(server, f"""
        upstream backend {{ server {o.addr}; keepalive 4; }}
        server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://backend; }} }}
    """)
    for i in range(5):
        r = request(s.port, f"/{i}")
        assert (r.status, r.body) == (200, f"GET /{i}".encode())
    assert o.connections == 1
    assert all(q.header("Connection") is None for q in o.requests)
    assert o.requests[0].header("Host") == "backend"


def test_a_body_sent_in_two_pieces_with_nagle_comes_whole(server, origin):
    # An origin as nginx with sendfile and tcp_nopush behaves: Nagle on,
    # the head and most of the body in one segment shorter than the MSS,
    # the rest held until that segment is acknowledged. The proxy reads
    # the first piece across several buffers (readv) and acknowledges it
    # while it waits for the rest (TCP_QUICKACK: a connection that has just
    # sent a request delays its ACKs otherwise, ~40 ms each time). Here the
    # origin waits for the acknowledgement itself, so every request shows
    # the piece acknowledged and the whole body delivered, over one kept
    # connection.
    body = bytes(range(256)) * 256  # 64 KiB
    head = response(200, b"", [("Content-Length", str(len(body)))], length=False)

    def handler(conn, req):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        first = head + body[:-4096]
        conn.sendall(first)
        # tcpi_unacked (struct tcp_info): 0 once the piece is acknowledged.
        acked = poll(lambda: struct.unpack_from("I", conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0]
                     == 0, timeout=10)
        conn.sendall(body[-4096:])
        return bool(acked)

    o = origin(handler)
    s = start_keepalive_proxy(server, o)
    for i in range(5):
        r = request(s.port, f"/{i}")
        assert (r.status, r.body) == (200, body)
    assert o.connections == 1


def test_keepalive_time_bounds_a_connections_life(server, origin):
    # A kept connection serves requests until it is keepalive_time old;
    # the request that finds it older still runs on it, then it is closed.
    o = origin(keepalive_handler)
    s = start(server, f"""
        upstream backend {{ server {o.addr}; keepalive 4; keepalive_time 1s; }}
        server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://backend; }} }}
    """)
    assert request(s.port, "/a").status == 200
    assert request(s.port, "/b").status == 200
    assert o.connections == 1
    time.sleep(1.2)  # the connection's age is what is tested
    r = request(s.port, "/c")
    assert (r.status, r.body) == (200, b"GET /c")
    assert o.connections == 1
    assert request(s.port, "/d").status == 200
    assert o.connections == 2
    # Given twice in one block: refused, as the other keepalive settings.
    bad = server("""
        upstream backend { server 127.0.0.1:1; keepalive 4; keepalive_time 1s; keepalive_time 2s; }
        server { listen 127.0.0.1:PORT; location / { proxy_pass http://backend; } }
    """, start=False)
    code, err = bad.test_config()
    assert code != 0 and '"keepalive_time" directive is duplicate' in err and "gatehouse.conf:" in err, err


def test_no_keepalive_without_pool(server, origin):
    o = origin(keepalive_handler)
    s = start(server, f"server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}")
    for i in range(3):
        assert request(s.port, f"/{i}").status == 200
    assert o.connections == 3


def test_pooled_connection_closed_by_origin(server, origin):
    """The origin closes a kept connection as the next request arrives: a
    GET is sent again on a new connection, a POST is not."""
    seen = set()

    # "/first" is answered and the connection kept; any other request is
    # answered on a new connection and dropped unanswered on a kept one.
    def wrapper(conn, req):
        first_on_conn = id(conn) not in seen
        seen.add(id(conn))
        if req.target.startswith("/first") or first_on_conn:
            conn.sendall(response(200, b"one" if req.target.startswith("/first") else b"fresh"))
            return req.target.startswith("/first")
        return False
    o = origin(wrapper)
    s = start(server, f"""
        upstream backend {{ server {o.addr}; keepalive 4; }}
        server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://backend; }} }}
    """)
    assert request(s.port, "/first").body == b"one"
    r = request(s.port, "/get")
    assert (r.status, r.body) == (200, b"fresh")
    assert [q.target for q in o.requests] == ["/first", "/get", "/get"]
    assert o.connections == 2

    assert request(s.port, "/first").body == b"one"
    r = request(s.port, "/post", method="POST", body=b"data")
    assert r.status == 502
    time.sleep(0.2)
    assert [q.target for q in o.requests].count("/post") == 1


# ---- WebSocket ----------------------------------------------------------------------------------------


def ws_origin_handler(conn, req):
    key = req.header("Sec-WebSocket-Key")
    if (req.header("Upgrade") or "").lower() != "websocket" or not key:
        conn.sendall(response(400, b"not a websocket"))
        return False
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + ws_frame(b"welcome", mask=False))
    reader = Reader(conn)
    while True:
        op, data = ws_read(reader)
        if op == 8:
            conn.sendall(ws_frame(data, opcode=8, mask=False))
            return False
        conn.sendall(ws_frame(data, opcode=op, mask=False))


WS_CONF = """
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{ listen 127.0.0.1:PORT;
        location / {{
            proxy_pass http://{addr};
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout {timeout};
        }}
    }}
"""


def ws_connect(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    c.sendall((f"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    reader = Reader(c)
    status = reader.line()
    headers = {}
    while True:
        h = reader.line()
        if not h:
            break
        n, _, v = h.decode().partition(":")
        headers[n.lower()] = v.strip()
    return c, reader, status, headers


def test_websocket_echo(server, origin):
    o = origin(ws_origin_handler)
    s = start(server, WS_CONF.format(addr=o.addr, timeout="5s"))
    c, reader, status, headers = ws_connect(s.port)
    with c:
        assert status.startswith(b"HTTP/1.1 101"), status
        assert headers.get("upgrade") == "websocket"
        assert headers.get("connection", "").lower() == "upgrade"
        assert ws_read(reader) == (1, b"welcome")
        for msg in (b"hello", b"x" * 70000):
            c.sendall(ws_frame(msg))
            assert ws_read(reader) == (1, msg)
        c.sendall(ws_frame(b"\x03\xe8", opcode=8))
        assert ws_read(reader) == (8, b"\x03\xe8")
        c.settimeout(5)
        assert c.recv(1) == b""
    q = o.requests[0]
    assert q.header("Upgrade") == "websocket" and q.header("Connection") == "upgrade"


def test_websocket_bytes_are_logged_as_sent_body(server, origin):
    # What goes to the client after the 101 counts in $bytes_sent and
    # $body_bytes_sent, as in nginx.
    o = origin(ws_origin_handler)
    conf = WS_CONF.format(addr=o.addr, timeout="5s").replace(
        "location / {", "access_log logs/ws.log ws;\n        location / {")
    s = start(server, "log_format ws '$bytes_sent $body_bytes_sent $sent_http_connection';" + conf)
    c, reader, status, headers = ws_connect(s.port)
    with c:
        assert status.startswith(b"HTTP/1.1 101"), status
        assert ws_read(reader) == (1, b"welcome")
        c.sendall(ws_frame(b"x" * 1000))
        assert ws_read(reader) == (1, b"x" * 1000)
        c.sendall(ws_frame(b"\x03\xe8", opcode=8))
        assert ws_read(reader) == (8, b"\x03\xe8")
        c.settimeout(5)
        assert c.recv(1) == b""
    body = sum(len(ws_frame(m, opcode=op, mask=False))
               for op, m in ((1, b"welcome"), (1, b"x" * 1000), (8, b"\x03\xe8")))
    (line,) = s.wait_lines("ws.log", 1)
    sent, body_sent, connection = line.split()
    assert int(body_sent) == body
    assert int(sent) > int(body_sent)
    assert connection == b"upgrade"


def test_websocket_idle_timeout(server, origin):
    o = origin(ws_origin_handler)
    s = start(server, WS_CONF.format(addr=o.addr, timeout="700ms"))
    c, reader, status, headers = ws_connect(s.port)
    with c:
        assert status.startswith(b"HTTP/1.1 101")
        assert ws_read(reader) == (1, b"welcome")
        t0 = time.monotonic()
        c.settimeout(5)
        assert c.recv(1) == b""
        assert time.monotonic() - t0 < 3
    assert error_lines(s, r"upstream timed out .* while proxying upgraded connection")


def test_plain_request_without_upgrade_to_ws_location(server, origin):
    o = origin()
    s = start(server, WS_CONF.format(addr=o.addr, timeout="5s"))
    r = request(s.port, "/")
    assert r.status == 200
    assert o.requests[0].header("Connection") == "close"
    assert o.requests[0].header("Upgrade") is None


def test_101_the_client_did_not_ask_for_is_a_502(server, origin):
    # Switching protocols under a client that asked for none would leave
    # it reading a protocol it does not speak: the origin is at fault.
    # (nginx passes the 101 head on, without a body.)
    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n"
                     b"handshaked\r\n")
        return False

    o = origin(handler)
    s = start(server, WS_CONF.format(addr=o.addr, timeout="5s"))
    r = request(s.port, "/")
    assert r.status == 502
    assert error_lines(s, r'upstream sent unexpected "101 Switching Protocols"')


# ---- variables and next upstream ------------------------------------------------------------------------


def test_upstream_variables_in_log(server, origin):
    def handler(conn, req):
        conn.sendall(response(201, b"12345", [("X-Test", "tv")]))
        return False
    o = origin(handler)
    s = start(server, f"""
        log_format up '$upstream_addr|$upstream_status|$upstream_response_time|$upstream_connect_time|'
                      '$upstream_header_time|$upstream_bytes_received|$upstream_http_x_test|'
                      '$proxy_host|$proxy_port|$status';
        access_log logs/up.log up;
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; }}
            location /static {{ return 200 "x"; }}
        }}
    """)
    assert request(s.port, "/").status == 201
    assert request(s.port, "/static").status == 200
    lines = [line.decode().strip() for line in s.wait_lines("up.log", 2)]
    f = lines[0].split("|")
    assert f[0] == o.addr and f[1] == "201"
    for t in f[2:5]:
        assert re.fullmatch(r"\d+\.\d{3}", t), f
    assert int(f[5]) > 5 and f[6] == "tv" and f[7] == o.addr and f[8] == str(o.port) and f[9] == "201"
    assert lines[1] == "-|-|-|-|-|-|-|-|-|200"


def test_client_gone_while_origin_works_is_499_at_once(server, origin):
    # The client leaves before the origin answers: gatehouse does not wait
    # for the answer to find out; it closes the origin's connection and
    # logs 499, with no header time for the try [nginx].
    origin_saw_close = threading.Event()

    def handler(conn, req):
        try:
            if conn.recv(1) == b"":
                origin_saw_close.set()
        except OSError:
            pass
        return False
    o = origin(handler)
    s = start(server, f"""
        log_format up '$status|$upstream_addr|$upstream_header_time|$upstream_response_time';
        access_log logs/up.log up;
        server {{ listen 127.0.0.1:PORT; location / {{ proxy_pass http://{o.addr}; }} }}
    """)
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(request_bytes("/slow"))
    o.wait_requests(1)
    c.close()
    assert origin_saw_close.wait(5)
    f = s.wait_lines("up.log", 1)[0].decode().strip().split("|")
    assert f[:3] == ["499", o.addr, "-"] and re.fullmatch(r"\d+\.\d{3}", f[3]), f
    assert error_lines(s, r"client prematurely closed connection")


def test_ignore_client_abort_lets_the_origin_finish(server, origin):
    answered = threading.Event()

    def handler(conn, req):
        # Answers once the client has gone (a half-close, as some clients
        # do after their request).
        poll(lambda: half_closed.is_set(), 5)
        try:
            conn.sendall(response(200, b"late"))
            answered.set()
        except OSError:
            pass
        return False
    half_closed = threading.Event()
    o = origin(handler)
    s = start(server, f"""
        log_format up '$status|$upstream_status';
        access_log logs/up.log up;
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://{o.addr}; proxy_ignore_client_abort on; }}
        }}
    """)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(request_bytes("/half"))
        o.wait_requests(1)
        c.shutdown(socket.SHUT_WR)
        half_closed.set()
        r = read_reply(c)
        assert (r.status, r.body) == (200, b"late")
    # The origin thread sets it just after its send, which the reply may
    # beat to the client.
    assert answered.wait(5)
    assert s.wait_lines("up.log", 1)[0].decode().strip() == "200|200"


def test_next_upstream_to_second_origin(server, origin):
    bad = origin(lambda conn, req: conn.sendall(response(503, b"busy")) or False)
    good = origin()
    dead = closed_port()
    s = start(server, f"""
        log_format up '$request_uri $upstream_addr $upstream_status';
        access_log logs/up.log up;
        upstream refused {{ server 127.0.0.1:{dead}; server {good.addr}; }}
        upstream busy {{ server {bad.addr}; server {good.addr}; }}
        server {{ listen 127.0.0.1:PORT;
            location /r/ {{ proxy_pass http://refused; }}
            location /b/ {{ proxy_pass http://busy; proxy_next_upstream error timeout http_503; }}
            location /n/ {{ proxy_pass http://busy; proxy_next_upstream error http_503 non_idempotent; }}
            location /off/ {{ proxy_pass http://refused; proxy_next_upstream off; }}
            location /tries/ {{ proxy_pass http://busy; proxy_next_upstream http_503; proxy_next_upstream_tries 1; }}
        }}
    """)
    # Round robin starts with the first server for the first request of
    # each group in this worker.
    r = request(s.port, "/r/a")
    assert (r.status, r.body) == (200, b"GET /r/a\n")
    r = request(s.port, "/b/a")
    assert (r.status, r.body) == (200, b"GET /b/a\n")
    # A POST reached the busy origin: not sent again...
    r = request(s.port, "/b/p", method="POST", body=b"x")
    assert r.status in (503, 200)
    # ...unless non_idempotent says so.
    statuses = set()
    for _ in range(2):
        statuses.add(request(s.port, "/n/p", method="POST", body=b"x").status)
    assert statuses == {200}
    lines = [line.decode().split() for line in s.wait_lines("up.log", 5)]
    assert lines[0] == ["/r/a", f"127.0.0.1:{dead},", good.addr, "502,", "200"]
    assert lines[1] == ["/b/a", f"{bad.addr},", good.addr, "503,", "200"]
    if lines[2][-1] == "503":
        assert lines[2] == ["/b/p", bad.addr, "503"]


def test_no_live_upstream_after_a_try_is_named(server, origin):
    # One server fails without being marked so (max_fails=0), the other
    # is marked failed by the first request: the second request tries the
    # first, then finds no server left, an attempt listed under the
    # group's name, as in nginx.
    o = origin(lambda conn, req: False)  # closes without answering
    dead = f"127.0.0.1:{closed_port()}"
    s = start(server, f"""
        log_format up '$upstream_addr|$upstream_status|$status';
        access_log logs/up.log up;
        upstream backend {{
            server {o.addr} max_fails=0;
            server {dead} max_fails=1 fail_timeout=60s;
        }}
        server {{ listen 127.0.0.1:PORT;
            location / {{ proxy_pass http://backend; add_header X-Up $upstream_addr always; }}
        }}
    """)
    r = request(s.port, "/first")
    assert r.status == 502 and sorted(r.header("X-Up").split(", ")) == sorted([o.addr, dead])
    r = request(s.port, "/second")
    assert (r.status, r.header("X-Up")) == (502, f"{o.addr}, backend")
    assert s.wait_lines("up.log", 2)[1].decode().strip() == f"{o.addr}, backend|502, 502|502"


def test_next_upstream_off_and_tries(server, origin):
    good = origin()
    dead = closed_port()
    # max_fails=0: the refused server keeps its turn in the round robin.
    s = start(server, f"""
        upstream a {{ server 127.0.0.1:{dead} max_fails=0; server {good.addr}; }}
        upstream b {{ server 127.0.0.1:{dead} max_fails=0; server {good.addr}; }}
        server {{ listen 127.0.0.1:PORT;
            location /off/ {{ proxy_pass http://a; proxy_next_upstream off; }}
            location /one/ {{ proxy_pass http://b; proxy_next_upstream_tries 1; }}
        }}
    """)
    # Whichever peer comes first: with retries off, a refused one is final.
    statuses = [request(s.port, f"/off/{i}").status for i in range(4)]
    assert 502 in statuses and 200 in statuses
    statuses = [request(s.port, f"/one/{i}").status for i in range(4)]
    assert 502 in statuses and 200 in statuses


def test_if_block_in_proxied_location_still_proxies(server, origin):
    o = origin()
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location / {{
                if ($arg_x) {{ add_header X-If yes; }}
                proxy_pass http://{o.addr};
            }}
        }}
    """)
    r = request(s.port, "/p?x=1")
    assert r.status == 200 and r.body == b"GET /p?x=1\n" and r.header("X-If") == "yes"
    r = request(s.port, "/q")
    assert r.status == 200 and r.body == b"GET /q\n"


def test_if_and_limit_except_blocks_choose_the_origin(server, origin):
    a, b = origin(), origin()
    s = start(server, f"""
        server {{ listen 127.0.0.1:PORT;
            location /lmt/ {{
                proxy_pass http://{a.addr}/a/;
                limit_except GET {{ proxy_pass http://{b.addr}; }}
            }}
            location /lmt-inherit/ {{
                proxy_pass http://{a.addr}/a/;
                limit_except GET {{ access_log logs/lmt.log; }}
                location /lmt-inherit/inner {{ limit_except GET {{ }} }}
            }}
            location /own {{
                if ($arg_p) {{ proxy_pass http://{b.addr}; }}
            }}
            location /two-ifs {{
                set $t 1;
                if ($t) {{ proxy_pass http://{a.addr}; }}
                if ($t) {{ add_header X-If yes; }}
            }}
        }}
    """)
    # A limit_except block with its own proxy_pass sends the methods it
    # does not allow there; the others go to the location's origin.
    r = request(s.port, "/lmt/x")
    assert (r.status, r.body) == (200, b"GET /a/x\n")
    r = request(s.port, "/lmt/x", method="POST", body=b"p")
    assert (r.status, r.body) == (200, b"POST /lmt/x\n")
    # Without one, it proxies as its location does, with its own settings;
    # a nested location does not inherit the proxying.
    r = request(s.port, "/lmt-inherit/y", method="POST", body=b"p")
    assert (r.status, r.body) == (200, b"POST /a/y\n")
    assert b"POST /lmt-inherit/y" in s.wait_lines("lmt.log", 1)[0]
    assert request(s.port, "/lmt-inherit/inner", method="POST", body=b"p").status != 200
    # An "if" block's proxy_pass in a location that does not proxy.
    r = request(s.port, "/own?p=1")
    assert (r.status, r.body) == (200, b"GET /own?p=1\n")
    assert request(s.port, "/own").status == 404
    # A later "if" block without proxy_pass leaves nothing to proxy to.
    assert request(s.port, "/two-ifs").status == 500
    assert error_lines(s, r"no upstream configuration")


# ---- named locations inherit from their server --------------------------------------------


def test_named_location_inherits_server_and_http_settings(server, origin):
    # Named locations used to miss the merge with their server and the
    # http block: proxy_pass there ran with unset timeouts and versions,
    # client_max_body_size, add_header and the access log did not apply,
    # and "error_page 502 = @fallback" re-sent a POST as HTTP/1.0 without
    # its body.
    o = origin()
    dead = closed_port()
    s = start(server, f"""
        client_max_body_size 100;
        log_format named "$uri $status $request_length";
        server {{ listen 127.0.0.1:PORT;
            add_header X-Srv yes always;
            access_log logs/named.log named;
            location /t/ {{ client_max_body_size 0; try_files $uri @app; }}
            location @app {{ proxy_pass http://{o.addr}; }}
            location /e/ {{
                proxy_pass http://127.0.0.1:{dead};
                error_page 502 = @fallback;
            }}
            location @fallback {{ proxy_pass http://{o.addr}; }}
        }}
    """)
    r = request(s.port, "/t/x?a=1")
    assert (r.status, r.body, r.header("X-Srv")) == (200, b"GET /t/x?a=1\n", "yes")
    got = o.wait_requests(1)[0]
    assert (got.version, got.header("Host")) == ("HTTP/1.1", o.addr)

    # client_max_body_size of the http block applies to a body read in
    # @app (a chunked one: a Content-Length is checked when the location
    # is found, as nginx does, and a named location is not searched for).
    r = request(s.port, "/t/big", method="POST", body=b"x" * 101, chunked=True)
    assert (r.status, r.header("X-Srv")) == (413, "yes")
    r = request(s.port, "/t/fits", method="POST", body=b"y" * 100, chunked=True)
    assert r.status == 200
    assert o.wait_requests(2)[1].body == b"y" * 100

    # The POST reaches @fallback whole, over HTTP/1.1.
    r = request(s.port, "/e/post", method="POST", body=b"payload")
    assert (r.status, r.body) == (200, b"POST /e/post\n")
    got = o.wait_requests(3)[2]
    assert (got.method, got.version, got.body) == ("POST", "HTTP/1.1", b"payload")

    lines = s.wait_lines("named.log", 4)
    assert [l.split()[:2] for l in lines] == [
        [b"/t/x", b"200"], [b"/t/big", b"413"], [b"/t/fits", b"200"], [b"/e/post", b"200"]]
