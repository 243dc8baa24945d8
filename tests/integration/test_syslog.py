"""Logging to syslog ("error_log syslog:..." and "access_log syslog:..."):
real datagram sockets bound by the test, a UDP one on loopback and a
unix one in the test's directory, and the exact bytes each message
carries (nginx's RFC 3164 framing)."""

import os
import re
import socket
import time

from gh_server import poll, server  # noqa: F401  (server: the fixture)

MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
# "Mmm dd hh:mm:ss ": the day padded with a space.
DATE = rf"(?:{MONTHS}) [ 1-3]\d \d\d:\d\d:\d\d "
ERROR_HEAD = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (\d+)#0: "
HOST = socket.gethostname().lower()


class Receiver:
    """A datagram socket the server sends to: UDP on 127.0.0.1, or unix."""

    def __init__(self, tmp_path, kind):
        if kind == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.server = "127.0.0.1:%d" % self.sock.getsockname()[1]
        else:
            self.path = str(tmp_path / "syslog.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self.path)
            # The workers may run as another user (nobody, when the tests
            # run as root).
            os.chmod(self.path, 0o666)
            self.server = "unix:" + self.path
        self.got = []

    def close(self):
        self.sock.close()

    def drain(self):
        self.sock.setblocking(False)
        try:
            while True:
                self.got.append(self.sock.recv(65536))
        except BlockingIOError:
            pass
        return self.got

    def wait(self, needle, timeout=5.0):
        """The first datagram holding `needle`."""
        def find():
            return next((m for m in self.drain() if needle in m), None)
        m = poll(find, timeout)
        assert m, f"no datagram with {needle!r}: {self.got!r}"
        return m


def start(server, tmp_path, main="", http=""):
    s = server(http, {"index.html": "x"}, start=False)
    s.conf.write_text(main + "\n" + s.conf.read_text())
    return s.start()


SITE = """
    log_format conn "$connection";
    server {{
        listen 127.0.0.1:PORT;
        server_name localhost;
        root html;
        access_log logs/conn.log conn;
        {extra}
    }}
"""


def test_error_log_over_udp_exact_bytes(server, tmp_path):
    rx = Receiver(tmp_path, "udp")
    s = start(server, tmp_path, main=f"error_log syslog:server={rx.server} info;", http=SITE.format(extra=""))
    assert s.get("/x").status == 404
    m = rx.wait(b"/html/x").decode()
    (conn,) = [ln.decode().strip() for ln in s.wait_lines("conn.log", 1)]
    path = (s.prefix / "html" / "x").as_posix()
    rest = (f'\\*{conn} open\\(\\) "{re.escape(path)}" failed \\(2: No such file or directory\\), '
            'client: 127\\.0\\.0\\.1, server: localhost, request: "GET /x HTTP/1\\.1", host: "localhost"')
    # local7 (23) * 8 + error (3); the host name as nginx writes it; the
    # tag "nginx"; then the error log line whole, without its newline.
    assert re.fullmatch(r"<187>" + DATE + re.escape(HOST) + " nginx: " + ERROR_HEAD + rest, m), m
    # The master's own lines go there too, at their level (notice: 5).
    assert re.fullmatch(r"<189>" + DATE + re.escape(HOST) + r" nginx: " + ERROR_HEAD + r"start worker process \d+",
                        rx.wait(b"start worker process").decode())
    rx.close()


def test_error_log_over_unix_with_parameters(server, tmp_path):
    rx = Receiver(tmp_path, "unix")
    main = f"error_log syslog:server={rx.server},facility=user,severity=alert,tag=gh_1,nohostname warn;"
    s = start(server, tmp_path, main=main, http=SITE.format(extra=""))
    assert s.get("/missing").status == 404
    m = rx.wait(b"/html/missing").decode()
    # user (1) * 8 + error (3): "severity=" is for access logs only.
    assert re.fullmatch(r"<11>" + DATE + r"gh_1: " + ERROR_HEAD + r"\*\d+ open\(\) .*", m), m
    # warn: the info and notice lines are not sent.
    assert not [d for d in rx.drain() if b"[notice]" in d or b"[info]" in d]
    rx.close()


def test_a_syslog_server_that_is_away_is_reported_and_never_blocks(server, tmp_path):
    rx = Receiver(tmp_path, "unix")
    path = rx.path
    rx.close()
    os.unlink(path)
    main = f"error_log syslog:server=unix:{path};"
    s = start(server, tmp_path, main=main, http=SITE.format(extra=""))
    for _ in range(3):
        assert s.get("/gone").status == 404
    log = poll(lambda: "to syslog server" in s.error_log() and s.error_log())
    assert log, s.error_log()
    assert re.search(r"\[alert\] \d+#0: connect\(\) to syslog server \"unix:%s\" failed "
                     r"\(2: No such file or directory\), lines dropped so far: \d+" % re.escape(path), log), log
    # Once a minute at most: three failed requests, one report per process.
    assert log.count("to syslog server") <= 2, log
    # The daemon comes back: the next lines reach it.
    rx = Receiver(tmp_path, "unix")
    assert s.get("/back").status == 404
    rx.wait(b"/html/back")
    rx.close()


def test_syslog_parameter_errors_name_the_file_and_line(server, tmp_path):
    s = server(SITE.format(extra=""), start=False)
    s.conf.write_text("error_log syslog:server=127.0.0.1,facility=local9;\n" + s.conf.read_text())
    rc, err = s.test_config()
    assert rc == 1
    assert f'gatehouse: [emerg] unknown syslog facility "local9" in {s.conf}:1' in err, err


# ---- access_log ----------------------------------------------------------------------------


def test_access_log_over_udp_and_unix_exact_bytes(server, tmp_path):
    udp, unix = Receiver(tmp_path, "udp"), Receiver(tmp_path, "unix")
    extra = f"""
        location /a {{ access_log syslog:server={udp.server} plain; return 200 "a"; }}
        location /b {{
            access_log syslog:severity=alert,server={unix.server},facility=user,tag=web,nohostname plain;
            return 204;
        }}
        location /both {{
            access_log syslog:server={unix.server},nohostname plain;
            access_log logs/both.log plain;
            return 200;
        }}
    """
    site = SITE.replace("access_log logs/conn.log conn;", "").format(extra=extra)
    s = start(server, tmp_path, http='log_format plain "$request $status $connection";\n' + site)
    assert s.get("/a?x=1").status == 200
    m = udp.wait(b"GET /a").decode()
    # local7 (23) * 8 + info (6), the host name, the tag, the line without
    # its newline.
    assert re.fullmatch(r"<190>" + DATE + re.escape(HOST) + r" nginx: GET /a\?x=1 HTTP/1\.1 200 \d+", m), m
    assert s.get("/b").status == 204
    m = unix.wait(b"GET /b").decode()
    assert re.fullmatch(r"<9>" + DATE + r"web: GET /b HTTP/1\.1 204 \d+", m), m
    # A file and syslog get the same line.
    assert s.get("/both").status == 200
    m = unix.wait(b"GET /both").decode()
    (line,) = s.wait_lines("both.log", 1)
    assert m.endswith("nginx: " + line.decode().rstrip("\n")), (m, line)
    udp.close()
    unix.close()


def test_access_log_syslog_with_the_default_format_and_a_condition(server, tmp_path):
    rx = Receiver(tmp_path, "unix")
    extra = f"""
        location / {{ access_log syslog:server={rx.server},nohostname combined if=$arg_log; return 200; }}
    """
    s = start(server, tmp_path, http=SITE.replace("access_log logs/conn.log conn;", "").format(extra=extra))
    s.get("/skipped")
    s.get("/kept?log=1", headers=[("User-Agent", "ua/1")])
    m = rx.wait(b"/kept").decode()
    assert re.fullmatch(r"<190>" + DATE + r'nginx: 127\.0\.0\.1 - - \[[^]]+\] "GET /kept\?log=1 HTTP/1\.1" 200 0 '
                        r'"-" "ua/1"', m), m
    assert not [d for d in rx.drain() if b"/skipped" in d]
    rx.close()


def test_access_log_syslog_server_away_is_reported_once(server, tmp_path):
    rx = Receiver(tmp_path, "unix")
    path = rx.path
    rx.close()
    os.unlink(path)
    extra = f"location / {{ access_log syslog:server=unix:{path}; return 200; }}"
    s = start(server, tmp_path, http=SITE.replace("access_log logs/conn.log conn;", "").format(extra=extra))
    for _ in range(3):
        assert s.get("/").status == 200
    log = poll(lambda: "to syslog server" in s.error_log() and s.error_log())
    assert log, s.error_log()
    assert re.search(r"\[alert\] \d+#0: \*\d+ connect\(\) to syslog server \"unix:%s\" failed "
                     r"\(2: No such file or directory\), lines dropped so far: 1, client: 127\.0\.0\.1, "
                     % re.escape(path), log), log
    time.sleep(0.2)
    assert s.error_log().count("to syslog server") == 1


def test_access_log_syslog_errors(server, tmp_path):
    cases = [
        ("access_log syslog:server=127.0.0.1 combined buffer=32k;", "logs to syslog cannot be buffered"),
        ("access_log syslog:server=127.0.0.1 combined flush=1s;",
         'no buffer is defined for access_log "syslog:server=127.0.0.1"'),
        ("access_log syslog:server=127.0.0.1,severity=loud;", 'unknown syslog severity "loud"'),
        ("access_log syslog:facility=user;", "no syslog server specified"),
        ("access_log syslog:server=127.0.0.1,tag=a.b;",
         'syslog "tag" only allows alphanumeric characters and underscore'),
    ]
    for directive, message in cases:
        s = server(f"server {{ listen 127.0.0.1:PORT;\n{directive}\n}}", start=False)
        rc, err = s.test_config()
        assert rc == 1, err
        assert f"gatehouse: [emerg] {message} in {s.conf}:" in err, err
