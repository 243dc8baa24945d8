"""post_action: once a client's response is complete, a request for a URI
or a named location whose answer nobody gets, e.g. to tell a tracker that
a download went out.

The tracker origin records what the post actions bring and answers with
a body of its own ("TRACKER"), which must never reach a client. The main
request's access-log line is written once its post action is over, so a
test that waits for that line knows the tracker has heard everything it
will hear about the request.
"""

import shutil
import socket
import subprocess
import threading

import pytest

from gh_server import Response, poll, server  # noqa: F401  (server: the fixture)
from origins import GatedRecorder, Origin, response

CURL = shutil.which("curl")
FILE = b"the file's bytes\n"


def Tracker():
    """Records each request; answers 200 "TRACKER" at once, or once `gate`
    is set for targets under /gated."""
    return GatedRecorder(response(200, b"TRACKER", [("Content-Type", "text/plain")]), "/gated")


class Slow:
    """A cacheable response of 100000 bytes whose first 1000 come at once
    and the rest once `gate` is set."""

    def __init__(self):
        self.gate = threading.Event()
        self.origin = Origin(self.handle)
        self.port = self.origin.port

    def handle(self, conn, req):
        conn.sendall(response(200, b"", [("Cache-Control", "max-age=60"), ("Content-Length", "100000")],
                              length=False))
        conn.sendall(b"a" * 1000)
        self.gate.wait(20)
        conn.sendall(b"a" * 99000)
        return False

    def stop(self):
        self.gate.set()
        self.origin.stop()


def main_handler(conn, req):
    conn.sendall(response(200, b"main got %d bytes" % len(req.body)))
    return True


CONF = """
    log_format main '$request_uri $status $body_bytes_sent';
    log_format action 'action $uri $status';
    log_format done 'done [$request_completion] $status';
    access_log logs/main.log main;
    proxy_cache_path cache keys_zone=pa:1m;

    server {
        listen 127.0.0.1:PORT http2;
        server_name localhost;
        root html;

        location /files/ {
            post_action @sent;
        }
        location /uri/ {
            post_action /_sent?from=uri;
        }
        location /up/ {
            post_action @sent;
            proxy_pass http://127.0.0.1:MAIN;
        }
        location /gated/ {
            post_action @gated;
        }
        location /cond/ {
            post_action @sent;
            if ($arg_quiet) {
                post_action off;
            }
        }
        location /logged/ {
            post_action @logged;
        }
        location /missing/ {
            post_action @nowhere;
        }
        location /cached/ {
            post_action @sent;
            proxy_cache pa;
            access_log logs/done.log done;
            proxy_pass http://127.0.0.1:SLOW;
        }

        location @sent {
            proxy_pass http://127.0.0.1:TRACKER/sent?uri=$uri&args=$args&status=$status&bytes=$body_bytes_sent&done=$request_completion;
        }
        location = /_sent {
            internal;
            proxy_pass http://127.0.0.1:TRACKER/sent-uri?uri=$uri&args=$args&status=$status;
        }
        location @gated {
            proxy_pass http://127.0.0.1:TRACKER/gated$uri;
        }
        location @logged {
            log_subrequest on;
            access_log logs/action.log action;
            proxy_pass http://127.0.0.1:TRACKER/logged$uri;
        }
    }

    # The default server: a request refused from its head comes here.
    server {
        listen 127.0.0.1:PORT default_server;
        server_name inherited;
        root html;
        post_action /_notify;
        if ($arg_early) {
            return 200 "early";
        }

        location / {
        }
        location /off/ {
            post_action off;
        }
        # Inherits the server's post_action, which must not run for the
        # post action's own request.
        location = /_notify {
            internal;
            proxy_pass http://127.0.0.1:TRACKER/notify?for=$request_uri;
        }
    }
"""

FILES = {name: FILE for name in ("files/a.txt", "uri/a.txt", "gated/a.txt", "cond/a.txt", "logged/a.txt",
                                  "missing/a.txt", "a.txt", "off/a.txt")}


@pytest.fixture
def tracker():
    t = Tracker()
    yield t
    t.stop()


@pytest.fixture
def slow():
    s = Slow()
    yield s
    s.stop()


@pytest.fixture
def site(server, tracker, slow):
    main = Origin(main_handler)
    http = (CONF.replace("TRACKER", str(tracker.port)).replace("MAIN", str(main.port))
            .replace("SLOW", str(slow.port)))
    s = server(http, files=FILES)
    yield s
    main.stop()
    assert "[alert]" not in s.error_log()
    assert "signal" not in s.error_log()


def test_after_the_response_the_named_location_is_told(site, tracker):
    r = site.get("/files/a.txt?x=1", headers=[("X-Token", "t1")])
    # The client gets its file, and nothing of the tracker's answer.
    assert (r.status, r.body) == (200, FILE)
    t = tracker.wait(1)[0]
    # A named location keeps the request's $uri and $args; $status and
    # $body_bytes_sent say what the client got.
    assert t.target == "/sent?uri=/files/a.txt&args=x=1&status=200&bytes=%d&done=OK" % len(FILE)
    assert t.method == "GET"
    assert t.header("X-Token") == "t1"
    assert site.wait_lines("main.log", 1) == [b"/files/a.txt?x=1 200 %d\n" % len(FILE)]


def test_an_error_response_is_followed_too(site, tracker):
    r = site.get("/files/none.txt")
    assert r.status == 404
    assert b"TRACKER" not in r.raw
    assert tracker.wait(1)[0].target.startswith("/sent?uri=/files/none.txt&args=&status=404&bytes=")


def test_a_uri_gets_its_own_arguments(site, tracker):
    r = site.get("/uri/a.txt?x=1")
    assert (r.status, r.body) == (200, FILE)
    # An internal redirect's URI and the arguments it names, not the
    # client's.
    assert tracker.wait(1)[0].target == "/sent-uri?uri=/_sent&args=from=uri&status=200"


def test_keepalive_responses_stay_whole(site, tracker):
    # Two requests on one connection: each answer is the file alone, the
    # tracker's bodies went nowhere.
    one = b"GET /files/a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
    two = b"GET /files/a.txt?n=2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    raw = site.raw(one + two)
    assert b"TRACKER" not in raw
    assert raw.count(FILE) == 2
    first, _, second = raw.partition(FILE)
    assert Response(first + FILE).status == 200
    assert Response(second).body == FILE
    assert [t.target.split("&")[1] for t in tracker.wait(2)] == ["args=", "args=n=2"]


def test_the_request_body_goes_along_when_it_was_kept(site, tracker):
    raw = site.raw(b"POST /up/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                   b"Connection: close\r\n\r\nhello")
    assert Response(raw).body == b"main got 5 bytes"
    t = tracker.wait(1)[0]
    # The client's method and body.
    assert (t.method, t.body) == ("POST", b"hello")
    assert t.header("Content-Length") == "5"


def test_the_client_does_not_wait_for_the_post_action(site, tracker):
    # The tracker holds its answer: the client has its response and the
    # connection's end all the same ("Connection: close").
    r = site.get("/gated/a.txt")
    assert (r.status, r.body) == (200, FILE)
    assert tracker.wait(1)[0].target == "/gated/gated/a.txt"
    # The request ends, and is logged, when its post action is over.
    assert site.read_log("main.log") == b""
    tracker.gate.set()
    assert site.wait_lines("main.log", 1) == [b"/gated/a.txt 200 %d\n" % len(FILE)]


def test_a_keepalive_connection_takes_its_next_request_after_the_post_action(site, tracker):
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        s.sendall(b"GET /gated/a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        while FILE not in got:
            data = s.recv(65536)
            assert data, got
            got += data
        tracker.wait(1)
        s.sendall(b"GET /files/a.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        tracker.gate.set()
        rest = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            rest += data
    assert Response(rest).body == FILE
    assert [t.target.split("?")[0] for t in tracker.wait(2)] == ["/gated/gated/a.txt", "/sent"]


def test_off_in_an_if_block(site, tracker):
    assert site.get("/cond/a.txt?quiet=1").body == FILE
    assert site.get("/cond/a.txt").body == FILE
    site.wait_lines("main.log", 2)
    assert [t.target.split("&")[0] for t in tracker.requests] == ["/sent?uri=/cond/a.txt"]


def test_inherited_off_and_no_loop(site, tracker):
    assert site.get("/off/a.txt", host="inherited").body == FILE
    assert site.get("/a.txt", host="inherited").body == FILE
    site.wait_lines("main.log", 2)
    # "off" cancels the server's; the post action's own location
    # inherits it but runs none: one request in all.
    assert [t.target for t in tracker.requests] == ["/notify?for=/a.txt"]


def test_a_server_level_return_is_followed_too(site, tracker):
    assert site.get("/a.txt?early=1", host="inherited").body == b"early"
    assert tracker.wait(1)[0].target == "/notify?for=/a.txt?early=1"


def test_a_request_refused_from_its_head_is_not_followed(site, tracker):
    # On the default server, whose post_action a request that names no
    # server would take: a head the parser refused, and one the server
    # does not serve.
    assert Response(site.raw(b"GET /a.txt HTTP/1.1\r\nHost: inherited\r\nHost: twice\r\n\r\n")).status == 400
    assert site.get("/a.txt", method="TRACE", host="inherited").status == 405
    assert site.get("/a.txt", host="inherited").body == FILE
    site.wait_lines("main.log", 3)
    assert [t.target for t in tracker.requests] == ["/notify?for=/a.txt"]
    assert 'subrequest: "/_notify"' not in site.error_log()


def test_a_client_gone_before_the_end_is_not_followed(site, tracker, slow):
    # The client leaves midway; the response goes on without it to fill
    # the cache, and ends whole, but nobody got it: no post action.
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as s:
        s.sendall(b"GET /cached/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert s.recv(100)
    assert poll(lambda: "the response goes on for the cache" in site.error_log())
    slow.gate.set()
    assert site.wait_lines("done.log", 1) == [b"done [] 200\n"]
    # From the cache now, whole: followed.
    r = site.get("/cached/x")
    assert (r.status, len(r.body)) == (200, 100000)
    assert site.wait_lines("done.log", 2)[1] == b"done [OK] 200\n"
    assert [t.target.split("&")[0] for t in tracker.requests] == ["/sent?uri=/cached/x"]


def test_log_subrequest_logs_the_post_action(site, tracker):
    assert site.get("/logged/a.txt").body == FILE
    assert site.wait_lines("action.log", 1) == [b"action /logged/a.txt 200\n"]
    assert site.wait_lines("main.log", 1) == [b"/logged/a.txt 200 %d\n" % len(FILE)]
    # Without it, only the client's line (the other tests' locations).
    assert site.get("/files/a.txt").body == FILE
    site.wait_lines("main.log", 2)
    assert len(site.read_log("action.log").splitlines()) == 1


def test_a_missing_named_location_changes_nothing_for_the_client(site, tracker):
    r = site.get("/missing/a.txt")
    assert (r.status, r.body) == (200, FILE)
    assert site.wait_lines("main.log", 1) == [b"/missing/a.txt 200 %d\n" % len(FILE)]
    assert 'could not find named location "@nowhere"' in site.error_log()
    assert tracker.requests == []


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_http2_clients(site, tracker):
    r = subprocess.run([CURL, "-s", "--http2-prior-knowledge", "-H", "Host: localhost",
                        f"http://127.0.0.1:{site.port}/files/a.txt", "-w", "%{http_version}"],
                       capture_output=True, timeout=20)
    assert r.stdout == FILE + b"2"
    assert tracker.wait(1)[0].target.startswith("/sent?uri=/files/a.txt&")
    assert site.wait_lines("main.log", 1) == [b"/files/a.txt 200 %d\n" % len(FILE)]


@pytest.mark.parametrize("value, message", [
    ("post_action done;", 'invalid value "done"'),
    ("post_action @;", 'invalid value "@"'),
    ("post_action /a;\n            post_action off;", '"post_action" directive is duplicate'),
])
def test_bad_values(server, value, message):
    s = server("server {\n        listen 127.0.0.1:PORT;\n        location / {\n            " + value +
               "\n        }\n    }", start=False)
    code, err = s.test_config()
    assert code != 0
    assert f"[emerg] {message} in {s.conf}:" in err
