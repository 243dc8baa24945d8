"""The HTTP/1.1 server core: connections, strict parsing, limits and
timeouts, location and server choice, error pages. Each test starts the
real master and a worker on a loopback port (gh_server.Server) and speaks
raw HTTP on sockets, so that what goes over the wire is exactly what a
client would send."""
import http.client
import os
import signal
import socket
import time

import pytest

from gh_server import Response, Server, poll, server  # noqa: F401  (fixture)


def exchange(port, data, timeout=10.0):
    """Sends data, reads until the server closes; returns the bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                chunks.append(b"<RST>")
                break
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def responses(raw):
    """Splits a byte stream of responses with Content-Length bodies."""
    out = []
    while raw.startswith(b"HTTP/"):
        head, sep, rest = raw.partition(b"\r\n\r\n")
        r = Response(head + b"\r\n\r\n")
        n = int(r.header("Content-Length") or 0)
        r.body = rest[:n]
        out.append(r)
        raw = rest[n:]
    return out, raw


BASIC = """
    server {
        listen 127.0.0.1:PORT;
        location / { return 200 "root\\n"; }
        location /a { return 200 "a\\n"; }
        location /b { return 200 "b\\n"; }
    }
"""


# ---- keepalive and pipelining -----------------------------------------------

def test_keepalive_serves_several_requests_on_one_connection(server):
    s = server(BASIC)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    for path, body in (("/a", b"a\n"), ("/b", b"b\n"), ("/", b"root\n")):
        c.request("GET", path)
        r = c.getresponse()
        assert r.status == 200
        assert r.getheader("Connection") == "keep-alive"
        assert r.read() == body
    c.close()


def test_pipelined_requests_answered_in_order(server):
    s = server(BASIC)
    req = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"/b", b"/a", b"/b"))
    req += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    rs, rest = responses(exchange(s.port, req))
    assert [r.body for r in rs] == [b"b\n", b"a\n", b"b\n", b"root\n"]
    assert rest == b""
    assert rs[-1].header("Connection") == "close"


def test_keepalive_requests_limits_a_connection(server):
    s = server(BASIC.replace("server {", "keepalive_requests 2;\n    server {"))
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    rs, rest = responses(exchange(s.port, req))
    assert len(rs) == 2
    assert rs[0].header("Connection") == "keep-alive"
    assert rs[1].header("Connection") == "close"


def test_keepalive_limits_of_the_answering_location(server):
    # As nginx (ngx_http_update_location_config): the location that
    # answers decides; keepalive_timeout 0 there disables keep-alive.
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        location / { return 200 "root\\n"; }
        location /once { keepalive_requests 1; return 200 "once\\n"; }
        location /none { keepalive_timeout 0; return 200 "none\\n"; }
    }
""")
    rs, rest = responses(exchange(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                          b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n"
                                          b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert [(r.body, r.header("Connection")) for r in rs] == [(b"root\n", "keep-alive"), (b"once\n", "close")]
    rs, rest = responses(exchange(s.port, b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n"
                                          b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert [(r.body, r.header("Connection")) for r in rs] == [(b"none\n", "close")]


def test_http10_closes_unless_keep_alive_asked(server):
    s = server(BASIC)
    rs, _ = responses(exchange(s.port, b"GET /a HTTP/1.0\r\n\r\n"))
    assert rs[0].status == 200 and rs[0].header("Connection") == "close"
    rs, _ = responses(exchange(s.port, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                        b"GET /b HTTP/1.0\r\n\r\n"))
    assert [r.body for r in rs] == [b"a\n", b"b\n"]


def test_head_has_headers_and_no_body(server):
    s = server(BASIC)
    raw = exchange(s.port, b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert Response(head + b"\r\n\r\n").header("Content-Length") == "2"
    # The next response follows the head at once: no body in between.
    assert rest.startswith(b"HTTP/1.1 200")


def test_keepalive_timeout_closes_idle_connection(server):
    s = server(BASIC.replace("server {", "keepalive_timeout 1s;\n    server {"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as c:
        c.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"a\n"):
            data += c.recv(4096)
        assert c.recv(4096) == b""  # closed by the server, not by the timeout above


# ---- malformed requests -----------------------------------------------------

BAD = [
    (b"GET /a HTTP/1.1\r\n\r\n", 400, "without \"Host\""),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, None),
    (b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n", 505, None),
    (b"GET /a FOO/1.1\r\nHost: x\r\n\r\n", 400, None),
    (b"GET  /a HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    (b"G(T /a HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    (b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    (b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    (b"GET /a HTTP/1.1\r\nHost: bad/host\r\n\r\n", 400, None),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, None),
]


@pytest.mark.parametrize("req,status,reason", BAD)
def test_malformed_request_gets_status_and_close(server, req, status, reason):
    s = server(BASIC)
    raw = exchange(s.port, req)
    rs, rest = responses(raw)
    assert len(rs) == 1, raw
    assert rs[0].status == status
    assert rs[0].header("Connection") == "close"
    assert b"<RST>" not in rest
    # Every rejected request is logged at info with its reason.
    assert poll(lambda: "while reading client request headers" in s.error_log()
                or "client sent" in s.error_log()), s.error_log()
    if reason:
        assert reason in s.error_log()


def test_nothing_after_a_bad_request_is_processed(server):
    # A smuggling attempt: the second request must never be answered.
    s = server(BASIC)
    raw = exchange(s.port, b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    rs, _ = responses(raw)
    assert [r.status for r in rs] == [400]


def test_absolute_form_target(server):
    s = server(BASIC)
    rs, _ = responses(exchange(s.port, b"GET http://example.com/a?x=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"))
    assert rs[0].status == 200 and rs[0].body == b"a\n"


def test_leading_empty_lines_are_ignored(server):
    s = server(BASIC)
    rs, _ = responses(exchange(s.port, b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert rs[0].status == 200


# ---- limits -------------------------------------------------------------------

LIMITS = """
    client_header_buffer_size 256;
    large_client_header_buffers 2 512;
    client_max_body_size 16;
    server {
        listen 127.0.0.1:PORT;
        location / { return 200 "ok\\n"; }
    }
"""


def test_too_long_request_line_is_414(server):
    s = server(LIMITS)
    rs, _ = responses(exchange(s.port, b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert rs[0].status == 414


def test_request_line_at_the_limit_is_served(server):
    s = server(LIMITS)
    line = b"GET /" + b"a" * 300 + b" HTTP/1.1"
    rs, _ = responses(exchange(s.port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert rs[0].status == 200


def test_too_long_header_line_is_431(server):
    s = server(LIMITS)
    rs, _ = responses(exchange(s.port, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 600 + b"\r\n\r\n"))
    assert rs[0].status == 431


def test_too_large_head_is_431(server):
    s = server(LIMITS)
    headers = b"".join(b"X%d: %s\r\n" % (i, b"v" * 200) for i in range(8))
    rs, _ = responses(exchange(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"))
    assert rs[0].status == 431


def test_body_over_client_max_body_size_is_413(server):
    s = server(LIMITS)
    rs, _ = responses(exchange(s.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 100))
    assert rs[0].status == 413
    assert "client intended to send too large body: 100 bytes" in s.error_log()


def test_413_with_unread_body_arrives_whole_not_reset(server):
    # The client sends far more than the server reads: lingering close
    # must let it read the 413 instead of a reset.
    s = server(LIMITS)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        c.sendall(b"b" * 200000)
        data = b""
        while True:
            try:
                d = c.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            data += d
    rs, _ = responses(data)
    assert rs and rs[0].status == 413
    assert rs[0].body.endswith(b"</html>\r\n")


def test_small_body_is_discarded_and_connection_kept(server):
    s = server(LIMITS)
    req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    req += b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    req += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    rs, rest = responses(exchange(s.port, req))
    assert [r.status for r in rs] == [200, 200, 200]


# ---- timeouts -------------------------------------------------------------------

def test_client_header_timeout_closes_a_slow_client(server):
    s = server(BASIC.replace("server {", "client_header_timeout 1s;\n    server {"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as c:
        c.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n")  # never finished
        data = b""
        while True:
            d = c.recv(4096)
            if not d:
                break
            data += d
    # A partial head gets the 408 page (nginx sends nothing; see the man
    # page), then the connection closes.
    assert data.startswith(b"HTTP/1.1 408")
    assert poll(lambda: "client timed out" in s.error_log())


# ---- locations -------------------------------------------------------------------

LOCATIONS = """
    server {
        listen 127.0.0.1:PORT;
        location = / { return 200 "exact-root"; }
        location / { return 200 "prefix-root"; }
        location /docs/ {
            location ~ \\.txt$ { return 200 "nested-regex-txt"; }
            return 200 "prefix-docs";
        }
        location /docs/long/ { return 200 "prefix-docs-long"; }
        location ^~ /static/ { return 200 "noregex-static"; }
        location ~ \\.(gif|jpg)$ { return 200 "regex-image"; }
        location ~* \\.PNG$ { return 200 "regex-png-caseless"; }
        location = /exact { return 200 "exact"; }
        location /exact { return 200 "prefix-exact"; }
        location /named { try_files /nonexistent @fallback; }
        location @fallback { return 200 "named"; }
        location ~ ^/cap/(?<word>[a-z]+)/(\\d+)$ { return 200 "cap $word $2"; }
    }
"""

PRECEDENCE = [
    ("/", "exact-root"),
    ("/index.html", "prefix-root"),
    ("/docs/", "prefix-docs"),
    ("/docs/a.txt", "nested-regex-txt"),
    ("/docs/long/x", "prefix-docs-long"),
    ("/docs/long/x.txt", "nested-regex-txt" if False else "prefix-docs-long"),
    ("/static/a.gif", "noregex-static"),
    ("/img/a.gif", "regex-image"),
    ("/docs/a.jpg", "regex-image"),
    ("/img/a.png", "regex-png-caseless"),
    ("/img/a.PNG", "regex-png-caseless"),
    ("/exact", "exact"),
    ("/exactly", "prefix-exact"),
    ("/named", "named"),
    ("/cap/abc/42", "cap abc 42"),
]


@pytest.mark.parametrize("path,want", PRECEDENCE)
def test_location_precedence(server, path, want):
    s = server(LOCATIONS)
    r = s.get(path)
    assert (r.status, r.body.decode()) == (200, want)


def test_regex_of_the_server_level_applies_inside_a_longer_prefix(server):
    # "/docs/long/x.gif": the longest prefix is /docs/long/ (no nested
    # regex); the server-level regex still wins over a plain prefix.
    s = server(LOCATIONS)
    assert s.get("/docs/long/x.gif").body == b"regex-image"


def test_named_location_is_not_reachable_by_uri(server):
    s = server(LOCATIONS)
    assert s.get("/@fallback").body == b"prefix-root"


def test_location_config_errors_name_file_and_line(server):
    s = server("""
    server {
        listen 127.0.0.1:PORT;
        location /a { location /b { } }
    }
""", start=False)
    rc, err = s.test_config()
    assert rc == 1
    assert 'location "/b" is outside location "/a"' in err and "gatehouse.conf:11" in err


# ---- servers -------------------------------------------------------------------------

SERVERS = """
    server {
        listen 127.0.0.1:PORT;
        server_name first.test;
        return 200 "first";
    }
    server {
        listen 127.0.0.1:PORT default_server;
        server_name default.test;
        return 200 "default";
    }
    server {
        listen 127.0.0.1:PORT;
        server_name exact.test *.wild.test www.tail.*;
        return 200 "named $host";
    }
    server {
        listen 127.0.0.1:PORT;
        server_name ~^(?<sub>[a-z]+)\\.regex\\.test$;
        return 200 "regex $sub";
    }
    server {
        listen 127.0.0.1:PORT;
        server_name "";
        return 200 "no-host";
    }
"""


@pytest.mark.parametrize("host,want", [
    ("first.test", "first"),
    ("FIRST.test", "first"),
    ("first.test.", "first"),
    ("first.test:8080", "first"),
    ("exact.test", "named exact.test"),
    ("a.b.wild.test", "named a.b.wild.test"),
    ("www.tail.org", "named www.tail.org"),
    ("abc.regex.test", "regex abc"),
    ("unknown.test", "default"),
    ("127.0.0.1", "default"),
])
def test_server_name_selection(server, host, want):
    s = server(SERVERS)
    r = Response(exchange(s.port, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()))
    assert r.body.decode() == want


def test_request_without_host_goes_to_empty_server_name(server):
    s = server(SERVERS)
    r = Response(exchange(s.port, b"GET / HTTP/1.0\r\n\r\n"))
    assert r.body == b"no-host"


# ---- error pages -------------------------------------------------------------------

ERRORS = """
    server {
        listen 127.0.0.1:PORT;
        location /missing { return 404; }
        location /gone { error_page 410 =200 /page; return 410; }
        location /to-named { error_page 404 @named; return 404; }
        location @named { return 200 "from named"; }
        location /to-url { error_page 403 http://example.com/forbidden; return 403; }
        location /cycle { error_page 404 /cycle; return 404; }
        location = /page { return 200 "page for $uri"; }
        error_page 404 /404.html;
        location = /404.html { internal; return 200 "custom 404"; }
    }
"""


def test_error_page_keeps_the_status(server):
    s = server(ERRORS)
    r = s.get("/missing")
    assert (r.status, r.body) == (404, b"custom 404")


def test_error_page_with_changed_status(server):
    s = server(ERRORS)
    r = s.get("/gone")
    assert (r.status, r.body) == (200, b"page for /page")


def test_error_page_to_named_location(server):
    s = server(ERRORS)
    r = s.get("/to-named")
    assert (r.status, r.body) == (404, b"from named")


def test_error_page_to_url_redirects(server):
    s = server(ERRORS)
    r = s.get("/to-url")
    assert r.status == 302 and r.header("Location") == "http://example.com/forbidden"


def test_internal_location_is_404_from_outside(server):
    s = server(ERRORS)
    r = s.get("/404.html")
    assert (r.status, r.body) == (404, b"custom 404")


def test_standard_error_page(server):
    s = server(BASIC.replace('location / { return 200 "root\\n"; }', "location / { return 403; }"))
    r = s.get("/")
    assert r.status == 403
    assert r.header("Content-Type") == "text/html"
    assert b"<center><h1>403 Forbidden</h1></center>" in r.body
    assert r.header("Server").startswith("gatehouse")


def test_server_tokens_off_hides_the_version(server):
    s = server(BASIC.replace("server {", "server_tokens off;\n    server {"))
    r = s.get("/a")
    assert r.header("Server") == "gatehouse"


def test_server_tokens_build_and_bad_value(server, tmp_path):
    # Without configure --build the build's name is absent: as "on".
    s = server(BASIC.replace("server {", "server_tokens build;\n    server {"))
    r = s.get("/a")
    assert r.header("Server").startswith("gatehouse/")
    assert "(" not in r.header("Server")
    bad = Server(tmp_path / "bad", "server { listen 127.0.0.1:PORT; }\nserver_tokens maybe;\n")
    rc, err = bad.test_config()
    assert rc != 0
    assert 'invalid value "maybe" in "server_tokens" directive, it must be "on", "off" or "build"' in err
    assert "gatehouse.conf:" in err


def test_send_timeout_closes_a_client_that_stops_reading(server):
    s = server("""
    send_timeout 1s;
    reset_timedout_connection on;
    server {
        listen 127.0.0.1:PORT;
        root html;
        sendfile on;
    }
""", files={"big.bin": b"x" * (32 << 20)})
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        # Read nothing: the server's socket buffer fills, and after
        # send_timeout without progress the server gives up.
        assert poll(lambda: "while sending response to client" in s.error_log(), timeout=15), s.error_log()
        got = 0
        try:
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                got += len(d)
        except ConnectionResetError:
            pass
    assert got < (32 << 20)  # the response was cut short, not completed


def test_unix_socket_file_removed_at_exit_and_when_a_reload_drops_it(server):
    # As nginx: the master deletes the socket files of its UNIX-domain
    # listeners when it exits, and when a reload no longer listens there.
    s = server("server { listen 127.0.0.1:PORT; listen unix:SOCKS/a.sock; listen unix:SOCKS/b.sock; "
               "location / { return 200 ok; } }", start=False)
    s.conf.write_text(s.conf.read_text().replace("SOCKS", str(s.prefix / "logs")))
    s.start()
    a, b = s.prefix / "logs" / "a.sock", s.prefix / "logs" / "b.sock"
    assert a.is_socket() and b.is_socket()
    s.conf.write_text(s.conf.read_text().replace(f" listen unix:{b};", ""))
    os.kill(s.master_pid(), signal.SIGHUP)
    assert poll(lambda: not b.exists(), timeout=10), s.error_log()
    assert a.is_socket()
    s.stop()
    assert not a.exists()
