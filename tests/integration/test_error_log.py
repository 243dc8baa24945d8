"""Error log lines as nginx writes them: the date, the level, the pid, the
connection's "*N" (the number $connection shows) and the context after
the message (", client: ..., server: ..., request: ..., upstream: ...,
host: ...")."""

import os
import re
import signal
import socket
import time

from gh_server import poll, server  # noqa: F401  (server: the fixture)

HEAD = rb"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[(\w+)\] (\d+)#0: \*(\d+) "

LOGGED = """
    log_format conn "$connection $connection_requests $request";
    server {
        listen 127.0.0.1:PORT;
        server_name localhost alias.test;
        root html;
        access_log logs/conn.log conn;
        client_header_timeout 300ms;
        location /up { proxy_pass http://127.0.0.1:CLOSED; }
    }
"""


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server, **subst):
    http = LOGGED
    for k, v in subst.items():
        http = http.replace(k, str(v))
    return server(http, {"index.html": "x"})


def error_line(s, needle):
    """The line of logs/error.log holding `needle`, once it is there."""
    def find():
        for line in s.read_log("error.log").splitlines():
            if needle.encode() in line:
                return line
        return None
    line = poll(find)
    assert line, s.error_log()
    return line


def access_connections(s, n):
    """$connection of the first n access log lines, with the request."""
    return [tuple(line.decode().split(" ", 2)) for line in
            (ln.rstrip(b"\n") for ln in s.wait_lines("conn.log", n))]


def test_missing_file_line_has_star_connection_and_context(server):
    s = start(server, CLOSED=closed_port())
    r = s.get("/x", host="localhost")
    assert r.status == 404
    line = error_line(s, "/html/x")
    m = re.fullmatch(HEAD + rb"(.*)", line)
    assert m, line
    level, pid, conn, rest = m.groups()
    assert level == b"error"
    path = (s.prefix / "html" / "x").as_posix()
    assert rest.decode() == (f'open() "{path}" failed (2: No such file or directory), client: 127.0.0.1, '
                             f'server: localhost, request: "GET /x HTTP/1.1", host: "localhost"')
    ((number, _, request),) = access_connections(s, 1)
    assert request == "GET /x HTTP/1.1"
    assert conn.decode() == number


def test_requests_of_one_connection_share_its_number(server):
    s = start(server, CLOSED=closed_port())
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"GET /b HTTP/1.1\r\nHost: alias.test:80\r\nReferer: http://r.test/\r\n"
                  b"Connection: close\r\n\r\n")
        while c.recv(65536):
            pass
    a, b = error_line(s, "/html/a"), error_line(s, "/html/b")
    na = re.match(HEAD, a).group(3)
    nb = re.match(HEAD, b).group(3)
    assert na == nb
    # The server is the first name of the server that answered; the host
    # and the referrer as the client sent them.
    assert a.endswith(b', client: 127.0.0.1, server: localhost, request: "GET /a HTTP/1.1", host: "localhost"')
    assert b.endswith(b', client: 127.0.0.1, server: localhost, request: "GET /b HTTP/1.1", '
                      b'host: "alias.test:80", referrer: "http://r.test/"')
    logged = access_connections(s, 2)
    assert [(n, k) for n, k, _ in logged] == [(na.decode(), "1"), (na.decode(), "2")]


def test_connections_get_distinct_numbers(server):
    s = start(server, CLOSED=closed_port())
    s.get("/one")
    s.get("/two")
    one = re.match(HEAD, error_line(s, "/html/one")).group(3)
    two = re.match(HEAD, error_line(s, "/html/two")).group(3)
    assert one != two
    assert sorted(n for n, _, _ in access_connections(s, 2)) == sorted([one.decode(), two.decode()])


def test_proxy_failure_names_the_upstream_once(server):
    port = closed_port()
    s = start(server, CLOSED=port)
    r = s.get("/up/z?q=1", host="localhost")
    assert r.status == 502
    line = error_line(s, "while connecting to upstream")
    m = re.fullmatch(HEAD + rb"(.*)", line)
    assert m, line
    assert m.group(4).decode() == (
        "connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, "
        f'server: localhost, request: "GET /up/z?q=1 HTTP/1.1", upstream: "http://127.0.0.1:{port}/up/z?q=1", '
        'host: "localhost"')
    ((number, _, _),) = access_connections(s, 1)
    assert m.group(3).decode() == number


def test_a_connection_without_request_names_the_listening_address(server):
    s = start(server, CLOSED=closed_port())
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET / HT")
        time.sleep(0.1)
        c.recv(65536)  # the 408 page once client_header_timeout passed
    line = error_line(s, "while reading client request headers")
    m = re.fullmatch(HEAD + rb"(.*)", line)
    assert m, line
    assert m.group(1) == b"info"
    assert m.group(4).decode() == ("client timed out (110: Connection timed out) while reading client request "
                                   f"headers, client: 127.0.0.1, server: 127.0.0.1:{s.port}")


def test_a_bad_request_line_is_logged_with_its_request(server):
    s = start(server, CLOSED=closed_port())
    r = s.raw(b"GET /x HTTP/1.1\r\nHost: localhost\r\nBad Header: y\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 400")
    line = error_line(s, "while reading client request headers")
    assert re.match(HEAD, line).group(1) == b"info"
    assert line.endswith(b' while reading client request headers, client: 127.0.0.1, server: localhost, '
                         b'request: "GET /x HTTP/1.1"'), line


def test_the_memory_buffer_is_refused_not_taken_for_a_file(server):
    s = server(LOGGED.replace("CLOSED", "1"), start=False)
    s.conf.write_text("error_log memory:32m debug;\n" + s.conf.read_text())
    rc, err = s.test_config()
    assert rc == 1
    assert f"gatehouse: [emerg] the memory buffer error log is not supported in {s.conf}:1" in err, err
    assert not [p for p in s.prefix.rglob("*") if "memory" in p.name]


# ---- error_log in http, server and location ------------------------------------------


def test_error_log_per_location_server_and_http(server):
    # A request's lines go to the error_log of where it is handled (the
    # location's, else its server's, else the http block's), each directive
    # a sink of its own, filtered by its level; the rest to the main log.
    s = server("""
        error_log logs/http.log info;
        server {
            listen 127.0.0.1:PORT;
            root html;
            location /loc/ {
                error_log logs/loc.log;
                error_log logs/loc.log warn;
                error_log logs/loc_crit.log crit;
            }
            location /inherits/ { }
        }
        server {
            listen 127.0.0.1:PORT2;
            root html;
            error_log logs/srv.log;
        }
    """.replace("PORT2", str(closed_port())))
    for path in ("/loc/missing", "/inherits/missing"):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while c.recv(4096):
                pass

    def lines(name, needle):
        p = s.prefix / "logs" / name
        return [ln for ln in p.read_text().splitlines() if needle in ln] if p.exists() else []

    assert poll(lambda: len(lines("loc.log", "/loc/missing")) == 2)
    assert lines("loc_crit.log", "/loc/missing") == []
    assert len(lines("http.log", "/inherits/missing")) == 1
    assert lines("http.log", "/loc/missing") == []
    assert "/missing" not in s.error_log()
    assert lines("srv.log", "missing") == []


def test_error_log_of_a_location_is_reopened_on_usr1(server):
    s = server("""
        server {
            listen 127.0.0.1:PORT;
            root html;
            location / { error_log logs/loc.log; }
        }
    """)
    log = s.prefix / "logs" / "loc.log"

    def miss(path):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while c.recv(4096):
                pass

    miss("/first")
    assert poll(lambda: "/first" in log.read_text())
    rotated = s.prefix / "logs" / "loc.log.1"
    log.rename(rotated)
    os.kill(s.master_pid(), signal.SIGUSR1)
    # The master makes the new file, then tells the workers: until each
    # worker has reopened, its fd still names the rotated file.
    assert poll(lambda: log.exists() and not any(holds(pid, rotated) for pid in workers(s.master_pid())))
    miss("/second")
    assert poll(lambda: "/second" in log.read_text())
    assert "/second" not in rotated.read_text()


def workers(master):
    pids = []
    for task in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def holds(pid, path):
    """Whether process pid has `path` open (from /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            pass
    return False


def test_error_log_errors(server, tmp_path):
    from gh_server import Server
    bad = Server(tmp_path / "b", "server { listen 127.0.0.1:PORT; location / { error_log logs/x.log loud; } }\n")
    rc, err = bad.test_config()
    assert rc != 0 and '"error_log" directive' in err and "gatehouse.conf:" in err, err
