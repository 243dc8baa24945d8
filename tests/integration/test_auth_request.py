"""auth_request: access decided by a subrequest to an auth service.

The auth service is a threaded stdlib HTTP server started by the test; it
answers by the client's Authorization field (copied to the subrequest
with the rest of the client's fields):
    Bearer good       204, X-User: alice
    Bearer forbidden  403
    Bearer teapot     418 (an unexpected status: the client gets 500)
    Bearer slow       waits until the proxy closes the connection
    (none)            401 with two WWW-Authenticate fields
The origin behind the protected locations records what reaches it.
Two workers share the port (reuseport): each request may land on either.
"""

import http.server
import select
import socket
import threading

import pytest

from gh_server import poll, server  # noqa: F401  (server: the fixture)
from origins import Origin, closed_port, response


class AuthService:
    def __init__(self):
        self.requests = []  # (method, path, headers dict, body bytes)
        self.slow_closed = threading.Event()  # a slow request's socket was closed by the proxy
        self.lock = threading.Lock()
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with svc.lock:
                    svc.requests.append((self.command, self.path, dict(self.headers), body))
                auth = self.headers.get("Authorization", "")
                if auth == "Bearer good":
                    self.send_response(204)
                    self.send_header("X-User", "alice")
                    self.end_headers()
                elif auth == "Bearer forbidden":
                    self.answer(403)
                elif auth == "Bearer teapot":
                    self.answer(418)
                elif auth == "Bearer slow":
                    # No answer: wait for the proxy to give up the
                    # connection (EOF), which proves it was closed.
                    self.connection.settimeout(None)
                    r, _, _ = select.select([self.connection], [], [], 20)
                    if r and self.connection.recv(1) == b"":
                        svc.slow_closed.set()
                    self.close_connection = True
                else:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Bearer realm="test"')
                    self.send_header("WWW-Authenticate", 'Basic realm="test"')
                    self.send_header("Content-Length", "6")
                    self.end_headers()
                    self.wfile.write(b"denied")

            do_POST = do_GET

            def answer(self, status):
                body = b"auth says %d" % status
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def origin_handler(conn, req):
    body = b"origin got %d bytes for %s as %s" % (
        len(req.body), req.target.encode(), (req.header("X-User") or "-").encode())
    conn.sendall(response(200, body, [("Content-Type", "text/plain")]))
    return True


CONF = """
    log_format auth '$request_uri $status user=$auth_user auth=$auth_status';
    access_log logs/auth.log auth;
    client_body_buffer_size 8k;

    server {
        listen 127.0.0.1:PORT reuseport;

        location /private/ {
            auth_request /_auth;
            auth_request_set $auth_user $upstream_http_x_user;
            auth_request_set $auth_status $upstream_status;
            proxy_set_header X-User $auth_user;
            proxy_pass http://127.0.0.1:ORIGIN;
        }
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:AUTH/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_read_timeout 30s;
        }

        # Content from files: "return" would answer in the rewrite phase,
        # before any access check, as in nginx.
        location /down/ {
            auth_request /_down;
        }
        location = /_down {
            internal;
            proxy_pass http://127.0.0.1:CLOSED;
        }

        location /local/ {
            auth_request /_local;
        }
        location = /_local {
            internal;
            return 204;
        }

        location /any/ {
            satisfy any;
            auth_request /_auth;
        }

        location /le/ {
            auth_request /_auth;
            limit_except GET {
                proxy_pass http://127.0.0.1:ORIGIN;
            }
        }

        location /off/ {
            auth_request off;
        }
    }
"""


@pytest.fixture
def auth():
    a = AuthService()
    yield a
    a.stop()


@pytest.fixture
def site(server, auth):
    origin = Origin(origin_handler)
    http = (CONF.replace("ORIGIN", str(origin.port)).replace("AUTH", str(auth.port))
            .replace("CLOSED", str(closed_port())))
    files = {"down/x": "never\n", "local/x": "local ok\n", "any/x": "any ok\n", "le/x": "get ok\n",
             "off/x": "open\n"}
    s = server(http, files, start=False)
    code, err = s.test_config()
    if 'unknown directive "auth_request"' in err:
        origin.stop()
        pytest.skip("auth_request module not built")
    assert code == 0, err
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    s.start()
    s.origin = origin
    yield s
    origin.stop()


def bearer(token):
    return [("Authorization", f"Bearer {token}")]


def test_granted_proxies_with_the_user_from_the_auth_service(site, auth):
    r = site.get("/private/a?x=1", headers=bearer("good"))
    assert r.status == 200
    assert r.body == b"origin got 0 bytes for /private/a?x=1 as alice"
    # The subrequest: a GET to the auth location's URI, with the client's
    # fields and the original URI, and no body.
    method, path, headers, body = auth.requests[0]
    assert (method, path, body) == ("GET", "/check", b"")
    assert headers["X-Original-URI"] == "/private/a?x=1"
    assert headers["X-Original-Method"] == "GET"
    assert headers["Authorization"] == "Bearer good"
    assert "Content-Length" not in headers
    # One line per client request: the subrequest is not logged.
    assert site.wait_lines("auth.log", 1) == [b"/private/a?x=1 200 user=alice auth=204\n"]


def test_401_passes_every_www_authenticate(site, auth):
    r = site.get("/private/b")
    assert r.status == 401
    assert r.all("WWW-Authenticate") == ['Bearer realm="test"', 'Basic realm="test"']
    assert b"<title>401 Authorization Required</title>" in r.body
    assert site.origin.requests == []
    assert site.wait_lines("auth.log", 1) == [b"/private/b 401 user= auth=401\n"]


def test_403(site, auth):
    r = site.get("/private/c", headers=bearer("forbidden"))
    assert r.status == 403
    assert r.header("WWW-Authenticate") is None
    assert site.origin.requests == []


def test_unexpected_status_is_500_and_logged(site, auth):
    r = site.get("/private/d", headers=bearer("teapot"))
    assert r.status == 500
    assert poll(lambda: "auth request unexpected status: 418" in site.error_log())
    assert site.wait_lines("auth.log", 1) == [b"/private/d 500 user= auth=418\n"]


def test_auth_service_down_is_500(site):
    r = site.get("/down/x")
    assert r.status == 500
    log = poll(lambda: "auth request unexpected status: 502" in site.error_log() and site.error_log())
    assert log
    # The connect() failure names the subrequest.
    assert 'subrequest: "/_down"' in log


def test_local_subrequest_and_off(site):
    r = site.get("/local/x")
    assert (r.status, r.body) == (200, b"local ok\n")
    r = site.get("/off/x")
    assert (r.status, r.body) == (200, b"open\n")


def test_internal_auth_location_is_not_reachable_directly(site):
    assert site.get("/_auth").status == 404


def test_post_body_reaches_the_origin_intact(site, auth):
    body = bytes(range(256)) * 800  # 204800 bytes: larger than the body buffer
    head = ("POST /private/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer good\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    from gh_server import Response
    r = Response(site.raw(head + body))
    assert r.status == 200
    assert r.body == b"origin got 204800 bytes for /private/upload as alice"
    assert site.origin.requests[0].body == body
    assert site.origin.requests[0].method == "POST"
    # The auth service saw a GET without the body.
    method, _, headers, got = auth.requests[0]
    assert (method, got) == ("GET", b"")
    assert headers["X-Original-Method"] == "POST"
    assert "Content-Length" not in headers


def test_satisfy_any_with_auth_request_alone(site):
    assert site.get("/any/x", headers=bearer("good")).status == 200
    r = site.get("/any/x")
    assert r.status == 401
    assert r.all("WWW-Authenticate") == ['Bearer realm="test"', 'Basic realm="test"']
    assert site.get("/any/x", headers=bearer("forbidden")).status == 403


def test_limit_except_block_keeps_auth_request(site):
    r = site.get("/le/x", headers=bearer("good"))
    assert (r.status, r.body) == (200, b"get ok\n")
    assert site.get("/le/x").status == 401
    # POST gets the limit_except block, which inherits auth_request.
    assert site.get("/le/x", method="POST").status == 401
    r = site.get("/le/x", method="POST", headers=bearer("good"))
    assert r.status == 200
    assert r.body == b"origin got 0 bytes for /le/x as -"


def test_client_closing_during_a_slow_subrequest(site, auth):
    s = socket.create_connection(("127.0.0.1", site.port), timeout=5)
    s.sendall(b"GET /private/slow HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer slow\r\n\r\n")
    assert poll(lambda: len(auth.requests) == 1)
    s.close()
    # The worker ends the request and closes the subrequest's upstream
    # connection, which the auth service sees as EOF.
    assert auth.slow_closed.wait(10)
    assert site.wait_lines("auth.log", 1) == [b"/private/slow 499 user= auth=\n"]
    # Both workers go on serving.
    for i in range(6):
        r = site.get(f"/private/after{i}", headers=bearer("good"))
        assert r.status == 200
    log = site.error_log()
    assert "client prematurely closed connection" in log
    assert "[alert]" not in log


def test_config_errors(server):
    s = server("server { listen 127.0.0.1:PORT; location / { auth_request /a; auth_request /b; } }",
               start=False)
    code, err = s.test_config()
    if 'unknown directive "auth_request"' in err:
        pytest.skip("auth_request module not built")
    assert code != 0
    assert f'"auth_request" directive is duplicate in {s.conf}:' in err
    s = server("server { listen 127.0.0.1:PORT; location / { auth_request_set x 1; } }", start=False)
    code, err = s.test_config()
    assert code != 0
    assert f'invalid variable name "x" in {s.conf}:' in err
    s = server("server { listen 127.0.0.1:PORT; location / { auth_request_set $host 1; } }", start=False)
    code, err = s.test_config()
    assert code != 0
    assert f'the duplicate "host" variable in {s.conf}:' in err
