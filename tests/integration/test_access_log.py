"""Access logs: log_format, access_log, the combined line, escaping,
buffering, conditions, the default log and reopening (USR1)."""

import datetime
import gzip
import json
import os
import re
import signal
import time

from gh_server import Server, poll, require_binary, server  # noqa: F401

INDEX = "hello\n"
FILES = {"index.html": INDEX, "a/b.txt": "abc"}

MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
TIME_LOCAL = rf"\d{{2}}/(?:{MONTHS})/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}} [+-]\d{{4}}"


def combined_re(request, status, size, referer, agent):
    """nginx's combined line for a request from 127.0.0.1, byte for byte,
    the time being the only free part."""
    return re.compile(
        rb"127\.0\.0\.1 - - \[(" + TIME_LOCAL.encode() + rb")\] "
        + b'"' + re.escape(request) + b'" '
        + str(status).encode() + b" " + str(size).encode() + b" "
        + b'"' + re.escape(referer) + b'" "' + re.escape(agent) + b'"\n'
    )


def check_time_local(text):
    t = datetime.datetime.strptime(text.decode(), "%d/%b/%Y:%H:%M:%S %z")
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - t).total_seconds()) < 60


# ---- the combined format -------------------------------------------------------


def test_combined_line_byte_for_byte(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/access.log combined;
        }
        """,
        FILES,
    )
    r = s.get("/index.html", [("Referer", "http://example.com/from?a=1"),
                              ("User-Agent", "gh-test/1.0 (linux)")])
    assert r.status == 200 and r.body == INDEX.encode()
    r = s.get("/missing")
    assert r.status == 404
    lines = s.wait_lines("access.log", 2)
    m = combined_re(b"GET /index.html HTTP/1.1", 200, len(INDEX),
                    b"http://example.com/from?a=1", b"gh-test/1.0 (linux)").fullmatch(lines[0])
    assert m, lines[0]
    check_time_local(m.group(1))
    # Absent headers log "-"; the 404 body is the standard page.
    m = combined_re(b"GET /missing HTTP/1.1", 404, len(r.body), b"-", b"-").fullmatch(lines[1])
    assert m, lines[1]


def test_combined_is_the_default_format(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/plain.log;
        }
        """,
        FILES,
    )
    s.get("/a/b.txt", [("User-Agent", "ua")])
    (line,) = s.wait_lines("plain.log", 1)
    assert combined_re(b"GET /a/b.txt HTTP/1.1", 200, 3, b"-", b"ua").fullmatch(line), line


def test_default_access_log_is_logs_access_log(server):
    # No access_log anywhere: nginx's default, logs/access.log combined.
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            location / { }
        }
        """,
        FILES,
    )
    s.get("/index.html", [("User-Agent", "dflt")])
    (line,) = s.wait_lines("access.log", 1)
    assert combined_re(b"GET /index.html HTTP/1.1", 200, len(INDEX), b"-", b"dflt").fullmatch(line), line


def test_default_escaping_in_combined(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/access.log;
        }
        """,
        FILES,
    )
    # '"', '\' and bytes >= 0x7f are escaped as \xHH; the request line too.
    req = (b"GET /index.html?q=%22x HTTP/1.1\r\nHost: localhost\r\n"
           b"User-Agent: a\"b\\c caf\xc3\xa9\r\nReferer: r\"\r\nConnection: close\r\n\r\n")
    s.raw(req)
    (line,) = s.wait_lines("access.log", 1)
    m = combined_re(b"GET /index.html?q=%22x HTTP/1.1", 200, len(INDEX),
                    b"r\\x22", b"a\\x22b\\x5Cc caf\\xC3\\xA9").fullmatch(line)
    assert m, line


# ---- log_format ----------------------------------------------------------------


def test_custom_format_with_several_variables(server):
    s = server(
        """
        log_format custom '$request_method $uri $args $status '
                          '[$http_x_custom] $request_length $bytes_sent $body_bytes_sent';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/custom.log custom;
        }
        """,
        FILES,
    )
    req = Server.request_bytes("/a/b.txt?x=1&y=2", [("X-Custom", "hello world")])
    raw = s.raw(req)
    assert raw.endswith(b"abc")
    req2 = Server.request_bytes("/a/b.txt", method="HEAD")
    raw2 = s.raw(req2)
    lines = s.wait_lines("custom.log", 2)
    # Literal text between the arguments is kept; $bytes_sent counts the
    # head and body as sent, $request_length the request as received.
    assert lines[0] == (f"GET /a/b.txt x=1&y=2 200 [hello world] {len(req)} {len(raw)} 3\n").encode()
    # $args is empty (a value, not "-"); a missing header is "-".
    assert lines[1] == (f"HEAD /a/b.txt  200 [-] {len(req2)} {len(raw2)} 0\n").encode()


def test_escape_json(server):
    s = server(
        """
        log_format j escape=json
            '{"uri":"$request_uri","data":"$http_x_data",'
            '"missing":"$http_x_missing","status":$status}';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/j.log j;
        }
        """,
        FILES,
    )
    data = 'a"b\\c\td caf\u00e9'
    s.raw(b"GET /index.html?k=%22v HTTP/1.1\r\nHost: localhost\r\nX-Data: " + data.encode()
          + b"\r\nConnection: close\r\n\r\n")
    (line,) = s.wait_lines("j.log", 1)
    assert b'"data":"a\\"b\\\\c\\td caf\xc3\xa9"' in line
    # A variable without a value is empty with escape=json, not "-".
    assert json.loads(line) == {"uri": "/index.html?k=%22v", "data": data, "missing": "", "status": 200}


def test_escape_json_control_bytes_in_upper_case(server):
    # nginx writes other control bytes as \u00HH with upper-case digits.
    s = server(
        """
        log_format j escape=json '{"c":"$ctl"}';
        server {
            listen 127.0.0.1:PORT;
            root html;
            set $ctl "<\x01\x1f>";
            access_log logs/j.log j;
        }
        """,
        FILES,
    )
    s.get("/index.html")
    (line,) = s.wait_lines("j.log", 1)
    assert line == b'{"c":"<\\u0001\\u001F>"}\n'
    assert json.loads(line) == {"c": "<\x01\x1f>"}


def test_escape_none(server):
    s = server(
        """
        log_format raw escape=none '$http_x_data|$http_x_missing';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/raw.log raw;
        }
        """,
        FILES,
    )
    s.get("/index.html", [("X-Data", 'q"\\\xe9')])
    (line,) = s.wait_lines("raw.log", 1)
    # A variable without a value is empty, as with escape=json (nginx).
    assert line == b'q"\\\xe9|\n'


# ---- access_log ---------------------------------------------------------------


def test_access_log_off_and_inheritance(server):
    s = server(
        """
        log_format uri '$uri';
        access_log logs/http.log uri;
        server {
            listen 127.0.0.1:PORT;
            root html;
            location /a/ { }
            location = /index.html {
                access_log off;
            }
            location /quiet/ {
                # off cancels every access_log of its level
                access_log logs/never.log uri;
                access_log off;
            }
        }
        """,
        FILES,
    )
    s.get("/index.html")
    s.get("/quiet/x")
    s.get("/a/b.txt")
    (line,) = s.wait_lines("http.log", 1)
    assert line == b"/a/b.txt\n"
    s.get("/a/b.txt?second")
    assert s.wait_lines("http.log", 2)[1] == b"/a/b.txt\n"
    assert s.read_log("http.log").count(b"\n") == 2
    assert s.read_log("never.log") == b""
    assert not s.log_path("access.log").exists()


def test_several_access_logs(server):
    s = server(
        """
        log_format uri '$uri';
        log_format st '$status';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/srv.log uri;
            location /a/ {
                access_log logs/one.log uri;
                access_log logs/two.log st;
                access_log logs/shared.log uri;
            }
            location / {
                access_log logs/shared.log st;
            }
        }
        """,
        FILES,
    )
    s.get("/a/b.txt")
    s.get("/index.html")
    s.get("/a/nope")
    assert s.wait_lines("one.log", 2) == [b"/a/b.txt\n", b"/a/nope\n"]
    assert s.wait_lines("two.log", 2) == [b"200\n", b"404\n"]
    # One path, opened once, written by both locations in request order.
    assert s.wait_lines("shared.log", 3) == [b"/a/b.txt\n", b"200\n", b"/a/nope\n"]
    # A location with its own access_log does not also log to the server's.
    assert s.read_log("srv.log") == b""


def test_if_condition(server):
    s = server(
        """
        log_format uri '$request_uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/cond.log uri if=$arg_log;
            access_log logs/all.log uri;
        }
        """,
        FILES,
    )
    for q in ("?log=1", "?log=0", "?log=", "", "?log=yes"):
        s.get("/index.html" + q)
    s.wait_lines("all.log", 5)
    # "0" and the empty string (or no value) are false.
    assert s.read_log("cond.log") == b"/index.html?log=1\n/index.html?log=yes\n"


def test_buffer_and_flush(server):
    flush = 1.5
    s = server(
        f"""
        log_format uri '$uri';
        server {{
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/buf.log uri buffer=32k flush={int(flush * 1000)}ms;
        }}
        """,
        FILES,
    )
    sent = time.monotonic()
    s.get("/index.html")
    s.get("/a/b.txt")
    # Nothing is written while the buffer has room and is younger than flush=.
    assert s.read_log("buf.log") == b""
    lines = s.wait_lines("buf.log", 2, timeout=flush + 5)
    waited = time.monotonic() - sent
    assert lines == [b"/index.html\n", b"/a/b.txt\n"]
    assert waited >= flush * 0.9, waited


def test_buffer_flushes_when_full(server):
    s = server(
        """
        log_format uri '$uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/small.log uri buffer=32;
        }
        """,
        FILES,
    )
    # "/index.html\n" is 12 bytes: the third line does not fit and pushes
    # the first two out; no flush= means nothing else would.
    for _ in range(3):
        s.get("/index.html")
    assert s.wait_lines("small.log", 2) == [b"/index.html\n"] * 2
    assert s.read_log("small.log").count(b"\n") == 2


def test_buffer_written_when_worker_exits(server):
    s = server(
        """
        log_format uri '$uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/exit.log uri buffer=32k;
        }
        """,
        FILES,
    )
    s.get("/index.html")
    assert s.read_log("exit.log") == b""
    s.stop()
    assert s.read_log("exit.log") == b"/index.html\n"


def test_reopen_on_usr1(server):
    s = server(
        """
        log_format uri '$uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/rot.log uri;
        }
        """,
        FILES,
    )
    s.get("/index.html")
    s.wait_lines("rot.log", 1)
    os.rename(s.log_path("rot.log"), s.log_path("rot.log.1"))
    os.kill(s.master_pid(), signal.SIGUSR1)
    # The master reopens, then tells the worker; until the worker has,
    # lines still go to the renamed file.
    assert poll(lambda: s.log_path("rot.log").exists(), timeout=5)

    def moved():
        s.get("/a/b.txt")
        return b"/a/b.txt\n" in s.read_log("rot.log")

    assert poll(moved, timeout=5, step=0.1)
    assert s.read_log("rot.log.1").startswith(b"/index.html\n")


# ---- gzip ------------------------------------------------------------------------


def test_gzip_writes_each_buffer_as_a_gzip_member(server):
    s = server(
        """
        log_format uri '$uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/small.log.gz uri gzip=9 buffer=32;
            access_log logs/big.log.gz uri gzip;
        }
        """,
        FILES,
    )
    # The third line does not fit in 32 bytes: the first two go out,
    # compressed. "gzip" alone buffers 64k: nothing before the end.
    for _ in range(3):
        s.get("/index.html")
    assert poll(lambda: s.read_log("small.log.gz"))
    first = s.read_log("small.log.gz")
    assert first[:2] == b"\x1f\x8b"
    assert gzip.decompress(first) == b"/index.html\n" * 2
    assert s.read_log("big.log.gz") == b""
    s.stop()
    # Members one after another read back as one text, as zcat reads them.
    assert gzip.decompress(s.read_log("small.log.gz")) == b"/index.html\n" * 3
    assert gzip.decompress(s.read_log("big.log.gz")) == b"/index.html\n" * 3


# ---- paths with variables --------------------------------------------------------


def writable_logs(s):
    """The workers (nobody, when the tests run as root) open paths with
    variables themselves, so they need to be able to create files."""
    s.log_path("").chmod(0o777)


def test_path_with_variables(server):
    s = server(
        """
        log_format uri '$uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            access_log logs/by_$arg_n.log uri;
            location /gone/ { root nonexistent; }
        }
        """,
        FILES,
    )
    writable_logs(s)
    s.get("/index.html?n=a")
    s.get("/a/b.txt?n=b")
    s.get("/index.html?n=a")
    assert s.wait_lines("by_a.log", 2) == [b"/index.html\n"] * 2
    assert s.wait_lines("by_b.log", 1) == [b"/a/b.txt\n"]
    # A ".." segment put in by the request is not written to.
    s.get("/index.html?n=/../../escaped")
    assert poll(lambda: "has a \"..\" segment" in s.error_log())
    assert not (s.prefix / "escaped.log").exists()
    # Nothing is logged while the root directory does not exist.
    s.get("/gone/x?n=c")
    assert poll(lambda: "nonexistent\" existence failed" in s.error_log())
    assert not s.log_path("by_c.log").exists()


def test_open_log_file_cache_keeps_the_descriptor_until_usr1(server):
    s = server(
        """
        log_format uri '$uri';
        server {
            listen 127.0.0.1:PORT;
            root html;
            location /cached/ {
                open_log_file_cache max=10 valid=1h;
                access_log logs/c_$arg_n.log uri;
            }
            location / {
                access_log logs/u_$arg_n.log uri;
            }
        }
        """,
        {**FILES, "cached/x": "x"},
    )
    writable_logs(s)
    s.get("/cached/x?n=a")
    s.get("/index.html?n=a")
    s.wait_lines("c_a.log", 1)
    s.wait_lines("u_a.log", 1)
    for name in ("c_a.log", "u_a.log"):
        os.rename(s.log_path(name), s.log_path(name + ".1"))
    # The kept descriptor still writes to the renamed file; without the
    # cache the name is opened again, and made anew.
    s.get("/cached/x?n=a")
    s.get("/index.html?n=a")
    assert s.wait_lines("c_a.log.1", 2) == [b"/cached/x\n"] * 2
    assert s.wait_lines("u_a.log", 1) == [b"/index.html\n"]
    assert not s.log_path("c_a.log").exists()
    # USR1 lets kept descriptors go.
    os.kill(s.master_pid(), signal.SIGUSR1)

    def reopened():
        s.get("/cached/x?n=a")
        return s.log_path("c_a.log").exists()

    assert poll(reopened, timeout=5, step=0.1)


# ---- configuration errors --------------------------------------------------------


def config_error(tmp_path, http):
    require_binary()
    s = Server(tmp_path, "server { listen 127.0.0.1:PORT; }\n" + http)
    rc, err = s.test_config()
    assert rc != 0, err
    return err


def test_config_errors(tmp_path):
    cases = [
        ("access_log logs/x.log nope;", 'unknown log format "nope"'),
        ("log_format combined '$uri';", 'duplicate "log_format" name "combined"'),
        ("log_format a '$uri'; log_format a '$uri';", 'duplicate "log_format" name "a"'),
        ("log_format a escape=xml '$uri';", 'unknown log format escaping "xml"'),
        ("log_format a '$uri $no_such_variable';", 'unknown "no_such_variable" variable'),
        ("access_log logs/x.log combined flush=1s;", 'no buffer is defined for access_log "logs/x.log"'),
        ("access_log logs/x.log combined buffer=1q;", 'invalid buffer size "1q"'),
        ("access_log logs/x.log combined bogus=1;", 'invalid parameter "bogus=1"'),
        ("access_log off combined;", 'invalid parameter "combined"'),
        ("access_log logs/x.log combined buffer=4k; access_log logs/x.log combined buffer=8k;",
         'access_log "logs/x.log" already defined with conflicting parameters'),
        ("access_log /nonexistent-dir/x.log;", 'open() "/nonexistent-dir/x.log" failed (2: '),
        ("open_log_file_cache max=0;", 'invalid "open_log_file_cache" parameter "max=0"'),
        ("open_log_file_cache inactive=10s;", '"open_log_file_cache" must have "max" parameter'),
        ("access_log logs/x.log combined gzip=10;", 'invalid compression level "10"'),
        ("access_log logs/$host.log combined buffer=4k;", "buffered logs cannot have variables in name"),
        ("access_log logs/$host.log combined gzip;", "buffered logs cannot have variables in name"),
        ("access_log logs/x.log combined gzip=1; access_log logs/x.log combined gzip=2;",
         'access_log "logs/x.log" already defined with conflicting parameters'),
    ]
    for i, (http, message) in enumerate(cases):
        err = config_error(tmp_path / str(i), http)
        assert message in err, (http, err)


def test_config_accepted(tmp_path):
    require_binary()
    s = Server(tmp_path, """
        log_format a escape=default '$uri';
        log_format b escape=none '$uri' ' $status';
        open_log_file_cache off;
        access_log logs/x.log combined buffer=4k flush=5s if=$arg_x;
        access_log logs/x.log a buffer=4k flush=5s;
        server {
            listen 127.0.0.1:PORT;
            open_log_file_cache max=1000 inactive=20s valid=1m min_uses=2;
            location / { access_log logs/x.log b; }
        }
    """)
    rc, err = s.test_config()
    assert rc == 0, err
