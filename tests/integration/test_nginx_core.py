"""nginx's behaviour in the HTTP core that nginx's own tests check
(http_server_name.t, http_host.t, http_method.t, merge_slashes.t,
http_location_auto.t, http_keepalive.t, http_variables.t, body.t,
http_headers_multi.t ...), stated here in our own words: each test starts
the real binary and checks what a client or the log sees."""

import base64
import socket

import pytest

from gh_server import poll, server  # noqa: F401  (the fixture)
from origins import Origin, response
from test_http_core import exchange
from test_proxy import read_reply, request


def site(body, http_extra="", name="localhost"):
    return http_extra + f"\nserver {{\n listen 127.0.0.1:PORT;\n server_name {name};\n" + body + "\n}\n"


def test_server_name_with_leading_dot_is_named_without_it(server):
    s = server(site('location / { return 200 "$server_name"; }', name=".dot.example.com"))
    for host in ("dot.example.com", "www.dot.example.com"):
        r = request(s.port, "/", host=host)
        assert (r.status, r.body) == (200, b"dot.example.com"), host


def test_host_takes_ipvfuture_and_refuses_dots_in_ipv6(server):
    s = server(site('location / { return 200 "$host"; }'))
    r = request(s.port, "/", host="[v1.Fe:x]:80")
    assert (r.status, r.body) == (200, b"[v1.fe:x]")
    assert request(s.port, "/", host="[::1]").body == b"[::1]"
    # ".." could let $host climb directories in a root or alias path.
    for host in ("[ab..cd::1]", "[v1.]", "[v.x]", "[fe80::1%25eth0]"):
        assert request(s.port, "/", host=host).status == 400, host


def test_fields_a_request_may_carry_once(server):
    s = server(site('location / { return 200 "ok"; }'))
    for name in ("If-None-Match", "Authorization", "Expect", "Content-Range"):
        r = request(s.port, "/", headers=[(name, "a"), (name, "b")])
        assert (r.status, r.closed) == (400, True), name
    assert "client sent duplicate header line" in s.error_log()
    # Others may repeat.
    assert request(s.port, "/", headers=[("Via", "a"), ("Via", "b")]).status == 200


def test_trace_is_refused_and_the_connection_closed(server):
    s = server(site('location / { return 200 "ok"; }'))
    # Without "Connection: close": the server closes after the 405.
    raw = exchange(s.port, b"TRACE / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 405 Not Allowed\r\n")
    assert b"Connection: close\r\n" in raw


def test_merge_slashes_off_keeps_empty_segments(server):
    s = server(site('merge_slashes off;\nlocation / { return 200 "$uri"; }')
               + site('location / { return 200 "$uri"; }', name="merged"))
    for path, want in (("/foo//../bar", b"/foo/bar"), ("/foo///../bar", b"/foo//bar"),
                       ("//a//b", b"//a//b"), ("/a%2F%2Fb", b"/a//b")):
        assert request(s.port, path).body == want, path
    # The default merges.
    assert request(s.port, "/foo//../bar", host="merged").body == b"/bar"
    assert request(s.port, "//a//b", host="merged").body == b"/a/b"


def test_proxy_location_redirects_its_name_without_the_slash(server):
    o = Origin()
    try:
        s = server(site(f"""
            location /app/ {{ proxy_pass http://{o.addr}; }}
            location "/a b/" {{ proxy_pass http://{o.addr}; }}
            location /static/ {{ return 200 "static"; }}
            location /both/ {{ proxy_pass http://{o.addr}; }}
            location /both {{ return 200 "both"; }}
            location ~ ^/rx {{ return 200 "regex"; }}
            location /rx/ {{ proxy_pass http://{o.addr}; }}"""))
        r = request(s.port, "/app?a=b")
        assert (r.status, r.header("Location")) == (301, f"http://localhost:{s.port}/app/?a=b")
        assert request(s.port, "/a%20b").header("Location") == f"http://localhost:{s.port}/a%20b/"
        # Not for other content; not when a location is named so; and
        # before the regular expressions, as nginx.
        assert request(s.port, "/static").status == 404
        assert request(s.port, "/both").body == b"both"
        assert request(s.port, "/rx").status == 301
        assert request(s.port, "/app/x").status == 200
    finally:
        o.stop()


def test_100_continue_before_an_empty_body(server):
    o = Origin()
    try:
        s = server(site(f"location / {{ proxy_pass http://{o.addr}; }}"))
        for value in ("100-continue", "100-Continue"):
            raw = exchange(s.port, b"POST / HTTP/1.1\r\nHost: localhost\r\nExpect: " + value.encode()
                           + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), raw
        # Never to HTTP/1.0.
        raw = exchange(s.port, b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        o.stop()


def test_keepalive_timeout_header(server):
    s = server(site('keepalive_timeout 60s 30s;\nlocation / { return 200 "x"; }\n'
                    'location /in/ { keepalive_timeout 50s; return 200 "x"; }\n'
                    'location /none/ { keepalive_timeout 60s 0; return 200 "x"; }'))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_reply(c)
        assert (r.header("Connection"), r.header("Keep-Alive")) == ("keep-alive", "timeout=30")
        # The second value inherits on its own, as nginx's.
        c.sendall(b"GET /in/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(c).header("Keep-Alive") == "timeout=30"
        c.sendall(b"GET /none/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(c).header("Keep-Alive") is None
    # Not on a response that closes.
    assert request(s.port, "/").header("Keep-Alive") is None


MSIE6 = "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Safari/605.1.15")
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0 Safari/537.36")


def connection_header(port, path, ua, method="GET"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        body = b"Content-Length: 0\r\n" if method == "POST" else b""
        c.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: {ua}\r\n".encode() + body + b"\r\n")
        return read_reply(c).header("Connection")


def test_keepalive_disable(server):
    s = server(site('location / { return 200 "x"; }\n'
                    'location /safari/ { keepalive_disable safari; return 200 "x"; }\n'
                    'location /none/ { keepalive_disable none; return 200 "x"; }'))
    # The default, msie6: POST requests of MSIE 6 and older only.
    assert connection_header(s.port, "/", MSIE6, "POST") == "close"
    assert connection_header(s.port, "/", MSIE6) == "keep-alive"
    assert connection_header(s.port, "/", MSIE6.replace("5.1)", "5.1; SV1)"), "POST") == "keep-alive"
    assert connection_header(s.port, "/none/", MSIE6, "POST") == "keep-alive"
    assert connection_header(s.port, "/", SAFARI) == "keep-alive"
    assert connection_header(s.port, "/safari/", SAFARI) == "close"
    assert connection_header(s.port, "/safari/", CHROME) == "keep-alive"


def test_keepalive_disable_values_are_checked(cli):
    for line, message in (("keepalive_disable opera;", 'invalid value "opera"'),
                          ("keepalive_disable none safari;", 'invalid value "none"')):
        r = cli.test_conf("events { }\nhttp {\n " + line + "\n}\n")
        assert r.returncode == 1
        assert message in r.stderr and "gatehouse.conf:3" in r.stderr, r.stderr


def test_bare_arg_prefix_is_a_variable_of_nothing(server):
    s = server(site('location / { return 200 "[$arg_][$arg_a]"; }'))
    assert request(s.port, "/?a=1&b=2").body == b"[][1]"


def test_sent_http_joins_repeated_fields(server):
    def two(conn, req):
        conn.sendall(response(200, b"x", [("X-Multi", "a"), ("X-Multi", "b"), ("X-One", "c")], close=True))
        return False

    o = Origin(two)
    try:
        s = server(site(f"location / {{ proxy_pass http://{o.addr}; }}",
                        'log_format m "$sent_http_x_multi|$sent_http_x_one|$sent_http_x_none";\n'
                        "access_log logs/m.log m;"))
        assert request(s.port, "/").all("X-Multi") == ["a", "b"]
        assert s.wait_lines("m.log", 1) == [b"a, b|c|-\n"]
    finally:
        o.stop()


def test_sent_http_connection_keep_alive_and_transfer_encoding_say_what_the_head_said(server):
    # The fields the server writes itself, as nginx computes them: the
    # connection's fate, the Keep-Alive timeout, the chunked framing.
    def no_length(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed")
        return False

    o = Origin(no_length)
    try:
        s = server(site(f'location / {{ return 200 "x"; }} location /p {{ proxy_pass http://{o.addr}; }}',
                        "keepalive_timeout 60s 9s;\n"
                        'log_format f "$sent_http_connection|$sent_http_keep_alive|$sent_http_transfer_encoding";\n'
                        "access_log logs/f.log f;"))
        data = exchange(s.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
                                b"GET /p HTTP/1.1\r\nHost: localhost\r\n\r\n"
                                b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert data.count(b"Keep-Alive: timeout=9") == 2 and b"Transfer-Encoding: chunked" in data
        assert s.wait_lines("f.log", 3) == [b"keep-alive|timeout=9|-\n", b"keep-alive|timeout=9|chunked\n",
                                            b"close|-|-\n"]
    finally:
        o.stop()


def test_sent_http_etag_last_modified_and_accept_ranges_say_what_the_head_said(server):
    # Fields the head writes from the response's validators and flags, as
    # a log or add_trailer reads them [nginx]. The log escapes '"'.
    s = server(site('location / { root html; }',
                    'log_format v "$sent_http_etag|$sent_http_last_modified|$sent_http_accept_ranges";\n'
                    "access_log logs/v.log v;"), {"f.txt": "file"})
    r = request(s.port, "/f.txt")
    assert r.status == 200
    line = f"{r.header('ETag')}|{r.header('Last-Modified')}|bytes\n".replace('"', "\\x22").encode()
    assert s.wait_lines("v.log", 1) == [line]
    assert request(s.port, "/missing").status == 404
    assert s.wait_lines("v.log", 2)[1] == b"-|-|-\n"


def test_remote_user_from_basic_credentials(server):
    s = server(site('location / { return 200 "[$remote_user]"; }'))
    def user(value):
        return request(s.port, "/", headers=[("Authorization", value)] if value else []).body

    assert user("Basic " + base64.b64encode(b"alice:secret").decode()) == b"[alice]"
    assert user("basic " + base64.b64encode(b"bob:").decode().rstrip("=")) == b"[bob]"
    # Not found: no header, another scheme, bad base64, no colon.
    assert user(None) == b"[]"
    assert user("Bearer abc") == b"[]"
    assert user("Basic !!!") == b"[]"
    assert user("Basic " + base64.b64encode(b"nocolon").decode()) == b"[]"


def test_request_body_file(server, tmp_path):
    o = Origin()
    try:
        temp = tmp_path / "body"
        s = server(site(f"""
            client_body_temp_path {temp};
            client_body_buffer_size 1k;
            location / {{ proxy_set_header X-File $request_body_file; proxy_pass http://{o.addr}; }}"""))
        assert request(s.port, "/", method="POST", body=b"x" * 5000).status == 200
        assert request(s.port, "/", method="POST", body=b"small").status == 200
        big, small = o.wait_requests(2)
        # The file that held the body, removed once the request ended; a
        # body in memory has none.
        assert big.header("X-File").startswith(str(temp) + "/") and big.body == b"x" * 5000
        assert small.header("X-File") is None
        assert list(temp.iterdir()) == []
    finally:
        o.stop()


def test_upstream_cookie(server):
    def cookies(conn, req):
        conn.sendall(response(204, b"", [("Set-Cookie", "foo=1; Path=/"), ("Set-Cookie", "Bar = 2 ;HttpOnly"),
                                         ("Set-Cookie", "tab\t=\t3")], close=True))
        return False

    o = Origin(cookies)
    try:
        s = server(site(f"""location / {{ proxy_pass http://{o.addr};
            add_header X-Foo "[$upstream_cookie_foo]"; add_header X-Bar "[$upstream_cookie_bar]";
            add_header X-None "[$upstream_cookie_none]"; add_header X-Tab "[$upstream_cookie_tab]"; }}"""))
        r = request(s.port, "/")
        assert (r.header("X-Foo"), r.header("X-Bar"), r.header("X-None")) == ("[1]", "[2]", "[]")
        # Spaces around "=" go, tabs do not: "tab\t" is not "tab" [nginx].
        assert r.header("X-Tab") == "[]"
    finally:
        o.stop()


def test_status_line_without_reason_keeps_its_space(server):
    s = server(site('location / { return 306; }\nlocation /r { return 299 "x"; }'))
    raw = exchange(s.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # status-line = HTTP-version SP status-code SP [ reason-phrase ]
    assert raw.startswith(b"HTTP/1.1 306 \r\n"), raw
    raw = exchange(s.port, b"GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 299 \r\n"), raw


def test_error_page_keeps_the_error_status_over_its_handler(server):
    s = server(site("""
        location /e204 { error_page 405 /r204; return 405; }
        location /e306 { error_page 405 /r306; return 405; }
        location /e302 { error_page 405 /r302; return 405; }
        location /e404 { error_page 405 /nothing; return 405; }
        location /eq { error_page 405 = /r204; return 405; }
        location /r204 { return 204; }
        location /r306 { return 306; }
        location /r302 { return 302 /elsewhere; }"""))
    # The page's "return 204" sends the error, framed, with no body.
    raw = exchange(s.port, b"GET /e204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 405 Not Allowed\r\n")
    assert b"Content-Length: 0\r\n" in raw or raw.endswith(b"\r\n0\r\n\r\n"), raw
    assert request(s.port, "/e306").status == 405
    # A redirect replaces the error; another error keeps its own status;
    # a bare "=" takes the page's.
    r = request(s.port, "/e302")
    assert (r.status, r.header("Location")) == (302, f"http://localhost:{s.port}/elsewhere")
    assert request(s.port, "/e404").status == 404
    assert request(s.port, "/eq").status == 204


def test_break_after_rewrite_sends_the_whole_uri_to_the_origin(server):
    o = Origin()
    try:
        s = server(site(f"""
            location /brk {{ rewrite ^ /changed; break; proxy_pass http://{o.addr}/base; }}
            location /flag {{ rewrite ^ /changed break; proxy_pass http://{o.addr}/base; }}
            location /kept {{ break; proxy_pass http://{o.addr}/base; }}"""))
        for path in ("/brk/x", "/flag/x", "/kept/x"):
            assert request(s.port, path).status == 200
        # The rewritten URI goes whole, as with the "break" flag; without a
        # rewrite, the location's prefix is replaced by the proxy_pass URI.
        assert [r.target for r in o.wait_requests(3)] == ["/changed", "/changed", "/base/x"]
    finally:
        o.stop()


def test_listen_port_range(server, cli):
    ports = []
    # Three free consecutive ports (the range binds them all).
    for base in range(20000, 60000, 37):
        socks = []
        try:
            for p in range(base, base + 3):
                sk = socket.socket()
                sk.bind(("127.0.0.1", p))
                socks.append(sk)
            ports = [base, base + 1, base + 2]
            break
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
    assert ports
    s = server(f"server {{ listen 127.0.0.1:{ports[0]}-{ports[1]}; "
               'location / { return 200 "$server_port"; } }\n'
               "server { listen 127.0.0.1:PORT; }\n")
    for p in ports[:2]:
        assert request(p, "/").body == str(p).encode()
    try:
        request(ports[2], "/")
        raise AssertionError("a port beyond the range answered")
    except ConnectionRefusedError:
        pass
    for spec in ("127.0.0.1:9-8", "127.0.0.1:0-3", "127.0.0.1:1-70000", "1-x"):
        r = cli.test_conf("events { }\nhttp {\n server { listen " + spec + "; }\n}\n")
        assert r.returncode == 1
        assert f'invalid port range in "{spec}"' in r.stderr and "gatehouse.conf:3" in r.stderr, r.stderr


def test_rewrite_captures_stay_decoded_in_the_uri_escaped_in_args(server):
    o = Origin()
    try:
        s = server(site(f"""
            location /cap {{ rewrite ^(.*) $1?c=$1; return 200 "uri:$uri args:$args"; }}
            location /red {{ rewrite ^(.*) $1/x?c=$1 redirect; }}
            location /px/ {{ rewrite ^(.*) $1 break; proxy_pass http://{o.addr}; }}"""))
        assert request(s.port, "/cap/%25?a=b").body == b"uri:/cap/% args:c=/cap/%25&a=b"
        assert request(s.port, "/red/a%20b").header("Location").endswith("/red/a%20b/x?c=/red/a%20b")
        # The origin gets the URI escaped once.
        assert request(s.port, "/px/a%25b").status == 200
        assert o.wait_requests(1)[0].target == "/px/a%25b"
    finally:
        o.stop()


def test_max_headers(server):
    s = server(site('max_headers 5;\nlocation / { return 200 "ok"; }'))

    def with_headers(n):
        # Host is one of them.
        return request(s.port, "/", headers=[("X-H", str(i)) for i in range(n - 2)], close=True)

    # request() adds Host and Connection: 5 header lines in all pass.
    assert with_headers(5).status == 200
    assert with_headers(6).status == 431
    assert "client sent too many header lines" in s.error_log()


def test_upstream_and_trailer_variables_join_repeated_fields(server):
    def multi(conn, req):
        conn.sendall(response(200, b"x", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Bar", "one"),
                                          ("X-Bar", "two")], close=True))
        return False

    o = Origin(multi)
    try:
        s = server(site(f"""location / {{ proxy_pass http://{o.addr};
            add_header X-Up-Cookie "$upstream_http_set_cookie"; add_header X-Up-Bar "$upstream_http_x_bar";
            add_trailer X-T a; add_trailer X-T b; }}""",
                        'log_format t "$sent_trailer_x_t";\naccess_log logs/t.log t;'))
        r = request(s.port, "/")
        assert (r.header("X-Up-Cookie"), r.header("X-Up-Bar")) == ("a=1, b=2", "one, two")
        assert s.wait_lines("t.log", 1) == [b"a, b\n"]
    finally:
        o.stop()


def _send_queue(local_port, remote_port):
    """tx_queue of the server's side of a loopback connection (/proc/net/tcp)."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == local_port and int(f[2].split(":")[1], 16) == remote_port:
            return int(f[4].split(":")[0], 16)
    return None


def test_listen_sndbuf_bounds_what_the_kernel_holds(server):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        other = free.getsockname()[1]
    s = server(f"server {{ listen 127.0.0.1:PORT sndbuf=16k rcvbuf=8k; root html; }}\n"
               f"server {{ listen 127.0.0.1:{other}; root html; }}\n",
               files={"big.bin": b"x" * (8 << 20)})

    def stalled_queue(port):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", port))
        c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        me = c.getsockname()[1]
        last = [None]

        def steady():
            q = _send_queue(port, me)
            done = q is not None and q > 0 and q == last[0]
            last[0] = q
            return q if done else None
        # The queue stops growing once the client's window and the
        # server's buffer are full; two equal readings in a row.
        q = poll(steady, 10, step=0.2)
        c.close()
        return q

    bounded = stalled_queue(s.port)
    default = stalled_queue(other)
    assert bounded is not None and default is not None
    # The kernel doubles SO_SNDBUF for its bookkeeping: 32 KiB plus at
    # most one segment beyond; the default grows far larger.
    assert bounded <= 64 * 1024, bounded
    assert default > 4 * bounded, (default, bounded)


@pytest.mark.parametrize("param, message", [
    ("sndbuf=0", 'invalid sndbuf "0"'),
    ("rcvbuf=big", 'invalid rcvbuf "big"'),
])
def test_listen_buffer_errors(server, param, message):
    s = server(f"server {{ listen 127.0.0.1:PORT {param}; }}", start=False)
    code, err = s.test_config()
    assert code != 0 and message in err and "gatehouse.conf:" in err, err
