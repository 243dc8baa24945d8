"""mirror: copies of client requests sent to a shadow origin in the
background, their answers ignored.

Two origins: the main one answers the client ("main got ..."); the
shadow one records what the mirrors bring (method, target, fields, body)
and answers 204, or does what a test asks (wait, never answer). The
client must always get the main origin's answer, whatever the shadow
origin does.
"""

import shutil
import socket
import subprocess
import threading

import pytest

from gh_server import Response, poll, server  # noqa: F401  (server: the fixture)
from origins import GatedRecorder, Origin, answer_mid_request, closed_port, listener, response

CURL = shutil.which("curl")


def main_handler(conn, req):
    body = b"main got %s %s with %d bytes" % (req.method.encode(), req.target.encode(), len(req.body))
    conn.sendall(response(200, body, [("Content-Type", "text/plain")]))
    return True


def Shadow():
    """The shadow origin: records each request; answers 204 at once, or
    once `gate` is set for targets under /gated/."""
    return GatedRecorder(response(204), "/gated/")


CONF = """
    log_format main '$request_uri $status';
    log_format shadow 'mirror $uri $request_uri $status';
    access_log logs/main.log main;
    client_body_buffer_size 8k;

    server {
        listen 127.0.0.1:PORT http2;

        location / {
            mirror /_shadow;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /two/ {
            mirror /_shadow;
            mirror /_second;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /nobody/ {
            mirror /_shadow;
            mirror_request_body off;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /stream/ {
            mirror /_shadow;
            proxy_request_buffering off;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /nest/ {
            mirror /_shadow;
            proxy_pass http://127.0.0.1:MAIN;
            location /nest/off/ {
                mirror off;
                proxy_pass http://127.0.0.1:MAIN;
            }
            location /nest/own/ {
                mirror /_second;
                proxy_pass http://127.0.0.1:MAIN;
            }
        }
        location /hang/ {
            mirror /_hang;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /down/ {
            mirror /_down;
            mirror /_shadow;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /early/ {
            mirror /_gated;
            mirror_request_body off;
            proxy_request_buffering off;
            proxy_pass http://127.0.0.1:EARLY;
        }
        location /slowmain/ {
            mirror /_gated;
            proxy_pass http://127.0.0.1:HANG;
        }
        location /local/ {
            mirror /_shadow;
            return 200 "local answer";
        }

        location = /_shadow {
            internal;
            log_subrequest on;
            access_log logs/shadow.log shadow;
            proxy_set_header X-Mirrored yes;
            proxy_pass http://127.0.0.1:SHADOW$request_uri;
        }
        location = /_second {
            internal;
            proxy_pass http://127.0.0.1:SHADOW/second$request_uri;
        }
        location = /_gated {
            internal;
            log_subrequest on;
            access_log logs/shadow.log shadow;
            proxy_pass http://127.0.0.1:SHADOW/gated$request_uri;
        }
        location = /_hang {
            internal;
            proxy_read_timeout 30s;
            proxy_pass http://127.0.0.1:HANG;
        }
        location = /_down {
            internal;
            proxy_pass http://127.0.0.1:CLOSED;
        }
    }
"""


@pytest.fixture
def shadow():
    s = Shadow()
    yield s
    s.stop()


@pytest.fixture
def hang():
    sock, port = listener(backlog=16)
    yield port
    sock.close()


@pytest.fixture
def early():
    sock, port = listener(backlog=4)
    yield sock, port
    sock.close()


@pytest.fixture
def site(server, shadow, hang, early):
    main = Origin(main_handler)
    http = (CONF.replace("MAIN", str(main.port)).replace("SHADOW", str(shadow.port))
            .replace("HANG", str(hang)).replace("CLOSED", str(closed_port()))
            .replace("EARLY", str(early[1])))
    s = server(http, start=False)
    code, err = s.test_config()
    if 'unknown directive "mirror"' in err:
        main.stop()
        pytest.skip("mirror module not built")
    assert code == 0, err
    s.start()
    s.main = main
    yield s
    main.stop()
    assert "[alert]" not in s.error_log()
    assert "signal" not in s.error_log()


def post(site, path, body, headers=(), chunked=False):
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", "Connection: close", *[f"{n}: {v}" for n, v in headers]]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 3000]), body[i:i + 3000])
                           for i in range(0, len(body), 3000)) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return Response(site.raw(("\r\n".join(lines) + "\r\n\r\n").encode() + payload))


def test_the_mirror_gets_the_request_and_the_client_the_main_answer(site, shadow):
    r = post(site, "/a/b?x=1", b"hello=world", headers=[("X-Token", "t1")])
    assert (r.status, r.body) == (200, b"main got POST /a/b?x=1 with 11 bytes")
    m = shadow.wait(1)[0]
    assert (m.method, m.target, m.body) == ("POST", "/a/b?x=1", b"hello=world")
    assert m.header("Content-Length") == "11"
    assert m.header("X-Token") == "t1"
    assert m.header("X-Mirrored") == "yes"
    # The main request's line once its mirror is over; the mirror's own
    # line where "log_subrequest on".
    assert site.wait_lines("main.log", 1) == [b"/a/b?x=1 200\n"]
    assert site.wait_lines("shadow.log", 1) == [b"mirror /_shadow /a/b?x=1 204\n"]


def test_a_get_is_mirrored_as_a_get_without_a_body(site, shadow):
    r = site.get("/g?y=2")
    assert (r.status, r.body) == (200, b"main got GET /g?y=2 with 0 bytes")
    m = shadow.wait(1)[0]
    assert (m.method, m.target, m.body) == ("GET", "/g?y=2", b"")
    assert m.header("Content-Length") is None


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_body_from_a_temp_file_is_mirrored_whole(site, shadow, chunked):
    body = bytes(range(256)) * 800  # 204800 bytes: past client_body_buffer_size
    r = post(site, "/big", body, chunked=chunked)
    assert (r.status, r.body) == (200, b"main got POST /big with 204800 bytes")
    m = shadow.wait(1)[0]
    assert m.body == body
    # A chunked body was read whole first: its length is known.
    assert m.header("Content-Length") == "204800"
    assert site.main.requests[0].body == body


def test_several_mirrors(site, shadow):
    r = post(site, "/two/x", b"abc")
    assert (r.status, r.body) == (200, b"main got POST /two/x with 3 bytes")
    got = sorted((m.target, m.body) for m in shadow.wait(2))
    assert got == [("/second/two/x", b"abc"), ("/two/x", b"abc")]


def test_off_and_a_level_of_its_own(site, shadow):
    assert site.get("/nest/off/x").body == b"main got GET /nest/off/x with 0 bytes"
    assert site.get("/nest/own/x").body == b"main got GET /nest/own/x with 0 bytes"
    assert site.get("/nest/x").body == b"main got GET /nest/x with 0 bytes"
    # The main requests' lines are written once their mirrors are over.
    site.wait_lines("main.log", 3)
    # "off" cancels the outer mirror; a level with its own replaces it.
    assert sorted(m.target for m in shadow.requests) == ["/nest/x", "/second/nest/own/x"]


def test_mirror_request_body_off(site, shadow):
    r = post(site, "/nobody/x", b"secret")
    assert (r.status, r.body) == (200, b"main got POST /nobody/x with 6 bytes")
    m = shadow.wait(1)[0]
    assert (m.method, m.target, m.body) == ("POST", "/nobody/x", b"")
    assert m.header("Content-Length") is None


def test_unbuffered_proxying_gets_the_body_read_first(site, shadow):
    body = b"x" * 50000
    r = post(site, "/stream/x", body)
    assert (r.status, r.body) == (200, b"main got POST /stream/x with 50000 bytes")
    assert site.main.requests[0].body == body
    assert site.main.requests[0].header("Content-Length") == "50000"
    assert shadow.wait(1)[0].body == body


def test_a_hanging_mirror_does_not_change_the_answer(site, shadow):
    # "Connection: close": the response ends with the connection, which
    # is closed for the client although the mirror still waits.
    r = post(site, "/hang/x", b"abc")
    assert (r.status, r.body) == (200, b"main got POST /hang/x with 3 bytes")
    # The worker goes on serving meanwhile.
    assert site.get("/local/y").body == b"local answer"


def test_a_mirror_origin_down_does_not_change_the_answer(site, shadow):
    r = post(site, "/down/x", b"abc")
    assert (r.status, r.body) == (200, b"main got POST /down/x with 3 bytes")
    # The other mirror of the location still went.
    assert shadow.wait(1)[0].target == "/down/x"
    assert poll(lambda: "connect() failed (111: Connection refused)" in site.error_log())
    assert 'subrequest: "/_down"' in site.error_log()


def test_return_answers_before_the_mirror(site, shadow):
    # "return" answers in the rewrite phase, before the mirror's phase: no
    # mirror, as in nginx.
    assert site.get("/local/x").body == b"local answer"
    site.wait_lines("main.log", 1)
    assert shadow.requests == []


def test_the_client_leaving_while_a_mirror_runs(site, shadow):
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as s:
        s.sendall(b"POST /gated/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc")
        got = b""
        while b"with 3 bytes" not in got:
            data = s.recv(65536)
            assert data, got
            got += data
        assert Response(got).status == 200
        # Keepalive: the mirror still waits at the shadow origin.
        shadow.wait(1)
    # The client is gone; the request is kept until its mirror is over,
    # then logged.
    assert site.read_log("main.log") == b""
    shadow.gate.set()
    assert site.wait_lines("main.log", 1) == [b"/gated/x 200\n"]
    assert site.wait_lines("shadow.log", 1) == [b"mirror /_shadow /gated/x 204\n"]
    # The worker goes on serving.
    assert site.get("/z").body == b"main got GET /z with 0 bytes"


def test_the_client_leaving_before_its_answer_ends_the_mirrors_too(site, shadow):
    # The main origin never answers; the client gives up while its
    # mirror is at the shadow origin: the request ends (499), as in
    # nginx, and its mirror with it.
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as s:
        s.sendall(b"GET /slowmain/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert shadow.wait(1)[0].target == "/gated/slowmain/x"
    assert site.wait_lines("main.log", 1) == [b"/slowmain/x 499\n"]
    shadow.gate.set()
    assert site.get("/nest/off/z").body == b"main got GET /nest/off/z with 0 bytes"
    # The mirror was cut short: no line for it.
    assert site.read_log("shadow.log") == b""


def test_keepalive_requests_wait_for_the_mirrors(site, shadow):
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        one = b"GET /gated/1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        two = b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        s.sendall(one)
        got = b""
        while b"with 0 bytes" not in got:
            data = s.recv(65536)
            assert data, got
            got += data
        shadow.wait(1)
        s.sendall(two)
        # As in nginx, the connection takes its next request once the
        # mirror is over.
        shadow.gate.set()
        rest = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            rest += data
    assert Response(rest).body == b"main got GET /after with 0 bytes"


def test_a_body_still_coming_while_the_mirror_runs(site, shadow, early):
    # The origin answers as soon as the head came, before the body ended:
    # the response is complete while the client still sends, and the
    # mirror still runs. The rest of the body has no reader any more.
    t = threading.Thread(target=answer_mid_request,
                         args=(early[0], b"\r\n\r\n", response(200, b"early", close=True)), daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        s.sendall(b"POST /early/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n" + b"a" * 10)
        got = b""
        while b"early" not in got:
            data = s.recv(65536)
            assert data, got
            got += data
        assert Response(got).status == 200
        assert shadow.wait(1)[0].target == "/gated/early/x"
        s.sendall(b"b" * 30000)
        shadow.gate.set()
        # Then the connection ends (the body was not all read).
        while s.recv(65536):
            pass
    t.join(10)
    assert site.wait_lines("main.log", 1) == [b"/early/x 200\n"]
    assert site.get("/z").body == b"main got GET /z with 0 bytes"


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_http2_clients(site, shadow, tmp_path):
    body = bytes(range(256)) * 100
    f = tmp_path / "body"
    f.write_bytes(body)
    r = subprocess.run([CURL, "-s", "--http2-prior-knowledge", "--data-binary", f"@{f}",
                        f"http://127.0.0.1:{site.port}/h2/x", "-w", " %{http_version}"],
                       capture_output=True, timeout=20)
    assert r.stdout == b"main got POST /h2/x with 25600 bytes 2"
    m = shadow.wait(1)[0]
    assert (m.method, m.target, m.body) == ("POST", "/h2/x", body)
    # A hanging mirror: the stream's answer comes whole all the same.
    r = subprocess.run([CURL, "-s", "--http2-prior-knowledge", f"http://127.0.0.1:{site.port}/hang/h2"],
                       capture_output=True, timeout=20)
    assert r.stdout == b"main got GET /hang/h2 with 0 bytes"


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_http2_client_leaving_while_a_mirror_runs(site, shadow):
    r = subprocess.run([CURL, "-s", "--http2-prior-knowledge", f"http://127.0.0.1:{site.port}/gated/h2"],
                       capture_output=True, timeout=20)
    # curl has its answer and closed its connection.
    assert r.stdout == b"main got GET /gated/h2 with 0 bytes"
    shadow.wait(1)
    shadow.gate.set()
    assert site.wait_lines("main.log", 1) == [b"/gated/h2 200\n"]
    assert site.get("/z").status == 200


@pytest.mark.parametrize("block", [
    "mirror /a;\n            mirror off;",
    "mirror off;\n            mirror /a;",
    "mirror off;\n            mirror off;",
])
def test_off_stands_alone_at_its_level(server, block):
    s = server("server {\n        listen 127.0.0.1:PORT;\n        location / {\n            " + block +
               "\n        }\n    }", start=False)
    code, err = s.test_config()
    if 'unknown directive "mirror"' in err:
        pytest.skip("mirror module not built")
    assert code != 0
    # The second directive's line of the http block (after MAIN_CONF's 7).
    assert f'[emerg] "mirror" directive is duplicate in {s.conf}:12' in err
