"""Hardening of the request path (issue 11, item 6): what a hostile or odd
client can and cannot make gatehouse do, each case as a user sees it on
the wire, the origin's side included.

Each test starts a real gatehouse (gh_server.py) and, where the case is
about what reaches an origin, a real origin (origins.py) that records the
bytes it received.
"""

import select
import socket

from gh_server import poll, server  # noqa: F401  (server: the fixture)
from origins import Origin, response
from test_http_core import exchange
from test_proxy import read_reply, request


def site(body, http_extra=""):
    return http_extra + "\nserver {\n listen 127.0.0.1:PORT;\n server_name localhost;\n" + body + "\n}\n"


def raw_request(port, head):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head)
        return read_reply(c)


# ---- underscores_in_headers, ignore_invalid_headers ----------------------------------------


XFF = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"


def test_ignore_invalid_headers_default_drops_what_nginx_drops(server):
    o = Origin()
    try:
        s = server(site(f"""
            location / {{ {XFF} proxy_pass http://{o.addr}; }}
            location /v {{ return 200 "xff=[$http_x_forwarded_for] dot=[$http_x_foo]"; }}"""))
        head = (b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"X_Forwarded_For: 6.6.6.6\r\nx.foo: dot\r\nX-Ok: yes\r\n\r\n")
        assert raw_request(s.port, head).status == 200
        got = o.wait_requests(1)[0]
        # Neither field reaches the origin, and the spoofed address is not
        # part of the X-Forwarded-For gatehouse sends.
        assert got.all("X-Forwarded-For") == ["127.0.0.1"]
        assert "x_forwarded_for" not in got.names() and "x.foo" not in got.names()
        assert got.header("X-Ok") == "yes"
        v = raw_request(s.port, head.replace(b"/p", b"/v"))
        assert v.body == b"xff=[] dot=[]"
        assert poll(lambda: 'client sent invalid header line: "X_Forwarded_For: 6.6.6.6" and more'
                    in s.error_log())
    finally:
        o.stop()


def test_underscores_in_headers_on_passes_them_but_xff_stays_ours(server):
    o = Origin()
    try:
        s = server(site(f"underscores_in_headers on;\nlocation / {{ {XFF} proxy_pass http://{o.addr}; }}"))
        head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"
        assert raw_request(s.port, head).status == 200
        got = o.wait_requests(1)[0]
        assert got.header("X_Forwarded_For") == "6.6.6.6"
        assert got.all("X-Forwarded-For") == ["127.0.0.1"]
    finally:
        o.stop()


def test_ignore_invalid_headers_off_passes_tokens(server):
    o = Origin()
    try:
        s = server(site(f"ignore_invalid_headers off;\nlocation / {{ proxy_pass http://{o.addr}; }}"))
        head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx_foo: a\r\n.foo: b\r\n\r\n"
        assert raw_request(s.port, head).status == 200
        got = o.wait_requests(1)[0]
        assert (got.header("x_foo"), got.header(".foo")) == ("a", "b")
        # A name that is not a token is refused rather than forwarded.
        bad = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nA<b: c\r\n\r\n"
        assert raw_request(s.port, bad).status == 400
    finally:
        o.stop()


def test_always_invalid_names_are_400(server):
    s = server(site('location / { return 200 "ok"; }'))
    for line in (b":foo: x", b" foo: x", b"foo\x02: x", b"fo o: x"):
        r = raw_request(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n")
        assert r.status == 400, line


# ---- CR, LF and NUL from variables -----------------------------------------------------------

# "%0d%0a" decodes into $uri as CR LF.
EVIL = "/a%0d%0aSet-Cookie:%20owned=1%0d%0aX-Injected:%20yes"


def test_response_fields_from_variables_cannot_split(server):
    s = server(site("""
        location /a { add_header X-Uri $uri; return 200 "ok"; }
        location /r { return 302 http://example.com$uri; }"""))
    r = request(s.port, EVIL)
    assert r.status == 200
    assert r.header("X-Uri") == "/a%0D%0ASet-Cookie: owned=1%0D%0AX-Injected: yes"
    assert r.header("Set-Cookie") is None and r.header("X-Injected") is None
    r = request(s.port, EVIL.replace("/a", "/r", 1))
    assert r.status == 302
    assert r.header("Location") == "http://example.com/r%0D%0ASet-Cookie: owned=1%0D%0AX-Injected: yes"
    assert r.header("Set-Cookie") is None
    assert poll(lambda: 'value of "X-Uri" has CR, LF or NUL bytes, sent percent-encoded' in s.error_log())


def test_origin_request_from_variables_cannot_split_or_smuggle(server):
    o = Origin()
    try:
        s = server(site(f"""
            location /h {{ proxy_set_header X-Orig $uri; proxy_pass http://{o.addr}; }}
            location /u {{ proxy_pass http://{o.addr}$uri; }}
            location /m {{ proxy_method $arg_m; proxy_pass http://{o.addr}; }}"""))
        assert request(s.port, EVIL.replace("/a", "/h", 1)).status == 200
        got = o.wait_requests(1)[0]
        assert got.header("X-Orig") == "/h%0D%0ASet-Cookie: owned=1%0D%0AX-Injected: yes"
        assert got.header("Set-Cookie") is None and got.header("X-Injected") is None

        # A second request hidden in the URI stays part of the first one's
        # target: the origin sees one request.
        smuggle = "/u%20HTTP/1.1%0d%0aHost:%20a%0d%0a%0d%0aGET%20/smuggled"
        assert request(s.port, smuggle).status == 200
        got = o.wait_requests(2)[1]
        assert got.target == "/u%20HTTP/1.1%0D%0AHost:%20a%0D%0A%0D%0AGET%20/smuggled"
        assert got.header("Host") != "a"

        # A method from a variable must be a method.
        assert request(s.port, "/m?m=GET%20/x%20HTTP/1.1").status == 500
        assert request(s.port, "/m?m=PURGE").status == 200
        assert [q.method for q in o.wait_requests(3)] == ["GET", "GET", "PURGE"]
        assert len(o.requests) == 3
        log = s.error_log()
        assert "request URI for the upstream has CR, LF, NUL or other control bytes, sent percent-encoded" in log
        assert 'proxy_method value "GET%20/x%20HTTP/1.1" is not a method' in log
    finally:
        o.stop()


# ---- absolute form without a path ------------------------------------------------------------


def test_absolute_form_without_path_is_root(server):
    s = server(site('location = / { return 200 "root $uri $request_uri"; }\n'
                    'location / { return 200 "other $uri"; }'))
    for target, body in ((b"http://localhost", b"root / /"), (b"http://localhost?a=1", b"root / /?a=1"),
                         (b"http://localhost/x", b"other /x")):
        r = raw_request(s.port, b"GET " + target + b" HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
        assert (r.status, r.body) == (200, body), target


# ---- no fixed cap on the number of fields ----------------------------------------------------


def test_many_fields_both_ways(server):
    many = [(f"X-F{i}", f"v{i}") for i in range(300)]

    def handler(conn, req):
        conn.sendall(response(200, b"ok", [(f"X-R{i}", f"r{i}") for i in range(300)], close=True))
        return False

    o = Origin(handler)
    try:
        # 300 request fields fit in the default 4 x 8k; 300 response fields
        # in a 16k proxy_buffer_size.
        s = server(site(f"location / {{ proxy_buffer_size 16k; proxy_pass http://{o.addr}; }}"))
        r = request(s.port, "/", headers=many)
        assert r.status == 200
        assert [v for n, v in r.headers if n.startswith("X-R")] == [f"r{i}" for i in range(300)]
        got = o.wait_requests(1)[0]
        assert [(n, v) for n, v in got.headers if n.startswith("X-F")] == many
        # The buffers, not a count, are the limit.
        huge = [(f"X-F{i}", "v" * 20) for i in range(2000)]
        assert request(s.port, "/", headers=huge).status == 431
    finally:
        o.stop()


def test_response_head_is_bounded_by_proxy_buffer_size(server):
    def handler(conn, req):
        conn.sendall(response(200, b"ok", [(f"X-R{i}", f"r{i}") for i in range(300)], close=True))
        return False

    o = Origin(handler)
    try:
        s = server(site(f"location / {{ proxy_buffer_size 1k; proxy_pass http://{o.addr}; }}"))
        assert request(s.port, "/").status == 502
        assert poll(lambda: "upstream sent too big header" in s.error_log())
    finally:
        o.stop()


# ---- a body that cannot be discarded ---------------------------------------------------------


def test_broken_chunked_body_is_400_and_closes(server):
    o = Origin()
    try:
        s = server(site(f'location / {{ return 200 "ok"; }}\nlocation /p {{ proxy_pass http://{o.addr}; }}'))
        for path in (b"/", b"/p"):
            raw = exchange(s.port, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            # One answer, 400, and the connection closes: the pipelined GET
            # behind the broken body is not taken for a request.
            assert raw.startswith(b"HTTP/1.1 400 "), raw
            assert raw.count(b"HTTP/1.1") == 1
            assert b"Connection: close" in raw
        assert o.requests == []
        assert poll(lambda: "client sent invalid chunk size" in s.error_log())
        # A body that arrives whole and well-formed is discarded and the
        # connection kept.
        raw = exchange(s.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.count(b"HTTP/1.1 200 OK") == 2
    finally:
        o.stop()


# ---- a body still arriving after the response ------------------------------------------------


def test_a_body_still_arriving_is_dropped_and_the_connection_kept(server):
    # A location that never reads the body answers at once, while the
    # client is still sending it. The response said keep-alive and the
    # connection is kept: the rest of the body is read and dropped as it
    # comes [nginx], and the next request on it is answered, not taken
    # from the body's bytes.
    s = server(site('location / { return 200 "ok"; }'))
    cases = {
        "length": (b"Content-Length: 300000\r\n", [b"a" * 1000, b"b" * 200000, b"c" * 99000]),
        "chunked": (b"Transfer-Encoding: chunked\r\n",
                    [b"3e8\r\n" + b"a" * 1000 + b"\r\n", b"30d40\r\n" + b"b" * 200000, b"\r\n0\r\n\r\n"]),
    }
    for name, (framing, pieces) in cases.items():
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + pieces[0])
            r = read_reply(c)
            assert (r.status, r.body, r.header("Connection")) == (200, b"ok", "keep-alive"), name
            for p in pieces[1:]:
                c.sendall(p)
            c.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            r = read_reply(c)
            assert (r.status, r.body) == (200, b"ok"), name
            # One more, to show the connection is an ordinary one again.
            c.sendall(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_reply(c).status == 200, name
            assert c.recv(1) == b"", name


def test_a_dropped_body_that_stalls_or_trickles_ends_the_connection(server):
    # Dropping a body is bounded as a lingering close is: lingering_timeout
    # for each wait, lingering_time in all.
    s = server(site('lingering_timeout 300ms; lingering_time 1s; location / { return 200 "ok"; }'))
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789"
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(head)
        assert read_reply(c).status == 200
        # Nothing more comes: the connection closes (a hang fails here).
        assert c.recv(1) == b""
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(head)
        assert read_reply(c).status == 200
        # A byte each 100 ms never lets lingering_timeout expire, but
        # lingering_time ends it: long before the body's end.
        sent = 0
        while sent < 200:
            readable, _, _ = select.select([c], [], [], 0.1)
            if readable:
                break
            try:
                c.sendall(b"x")
            except OSError:
                break
            sent += 1
        assert sent < 200
        try:
            assert c.recv(1) == b""
        except ConnectionResetError:
            pass  # closed while our last bytes were on their way: also an end


# ---- worker_connections full of idle clients -------------------------------------------------


def with_worker_connections(server, body, n, workers=1):
    s = server(site(body), start=False)
    conf = s.conf.read_text().replace("worker_connections 128", f"worker_connections {n}")
    conf = conf.replace("worker_processes 1;", f"worker_processes {workers};")
    s.conf.write_text(conf)
    return s.start()


def connected(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_idle_connections_give_their_slots_to_new_clients(server):
    s = with_worker_connections(server, 'location / { return 200 "ok"; }', 4)
    idle = []
    try:
        # Four idle clients: two that sent nothing yet, one in the middle
        # of a head, one kept alive after a request. The oldest goes
        # first.
        for _ in range(2):
            idle.append(connected(s.port))
        idle.append(connected(s.port))
        idle[2].sendall(b"GET / HTTP/1.1\r\n")
        idle.append(connected(s.port))
        idle[3].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(idle[3]).status == 200
        # Each new client is served at once, and takes the slot of the
        # client idle longest, which sees the connection closed (no reset).
        fresh = []
        for i in range(4):
            c = connected(s.port)
            fresh.append(c)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_reply(c).status == 200, i
            idle[i].settimeout(5)
            assert idle[i].recv(100) == b"", i
        assert "4 worker_connections are not enough, reusing connections" in s.error_log()
        idle += fresh
    finally:
        for c in idle:
            c.close()


def test_busy_worker_keeps_new_clients_waiting_not_refused(server):
    release = []

    def handler(conn, req):
        release.append(conn)
        return True  # answered later, by the test

    o = Origin(handler)
    try:
        # Each proxied request takes two slots (client and origin): two of
        # them fill the table, and nothing is idle.
        s = with_worker_connections(server, f"location / {{ proxy_pass http://{o.addr}; }}", 4)
        busy = [connected(s.port) for _ in range(2)]
        for i, c in enumerate(busy):
            c.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            o.wait_requests(i + 1)
        waiting = connected(s.port)
        waiting.sendall(b"GET /w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # Not refused: it waits in the backlog.
        waiting.settimeout(0.5)
        try:
            got = waiting.recv(100)
            raise AssertionError(f"the waiting client got {got!r}")
        except socket.timeout:
            pass
        assert poll(lambda: "worker_connections are not enough" in s.error_log())
        # The origin answers: slots free, and the waiting client is served.
        for conn in release[:2]:
            conn.sendall(response(200, b"b", close=True))
            conn.close()
        waiting.settimeout(10)
        assert read_reply(busy[0]).status == 200 and read_reply(busy[1]).status == 200
        r3 = o.wait_requests(3)[2]
        assert r3.target == "/w"
        assert poll(lambda: len(release) > 2)
        release[2].sendall(response(200, b"w", close=True))
        w = read_reply(waiting)
        assert (w.status, w.body) == (200, b"w")
        for c in busy + [waiting]:
            c.close()
    finally:
        o.stop()


def test_a_full_worker_leaves_new_clients_to_the_others(server):
    release = []

    def handler(conn, req):
        release.append(conn)
        return True

    o = Origin(handler)
    try:
        # Two workers of four slots: each holds two proxied requests at
        # most. Four busy requests must land two and two; a full worker
        # that took a third client could not serve it.
        s = with_worker_connections(server, f"location / {{ proxy_pass http://{o.addr}; }}", 4, workers=2)
        busy = []
        for i in range(4):
            c = connected(s.port)
            c.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            busy.append(c)
            o.wait_requests(i + 1, timeout=10)
        for conn in release:
            conn.sendall(response(200, b"b", close=True))
            conn.close()
        for c in busy:
            c.settimeout(10)
            assert read_reply(c).status == 200
            c.close()
    finally:
        o.stop()
