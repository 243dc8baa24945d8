"""Who the workers are: started as root without "user", they run as the
user and group of ./configure (--user, --group: nobody and, on Debian,
nogroup), as nginx's do, and the master alone keeps root. What they must
write still works: request bodies go to client_body_temp (made by the
master, theirs), and log files reopened after a rotation (made by the
master, given to them). "user" overrides the default; "user root" keeps
the old behaviour.

Skipped unless the tests run as root: otherwise no user changes.
"""

import grp
import os
import pwd
import re
import signal
import socket
import stat

import pytest

from conftest import free_port, wait_for
from origins import Origin

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="workers change user only under root")


def default_user(gatehouse_bin):
    """(user, group) of ./configure, from objs/gh_config.h next to the binary."""
    p = gatehouse_bin.parent / "gh_config.h"
    if not p.exists():
        pytest.skip("no objs/gh_config.h next to the binary")
    text = p.read_text()
    return (re.search(r'#define GH_USER "(.*)"', text).group(1),
            re.search(r'#define GH_GROUP "(.*)"', text).group(1))


def ids(pid):
    """(real, effective, saved, fs) uids and gids, and the groups, of pid."""
    status = open(f"/proc/{pid}/status").read()
    uids = tuple(int(x) for x in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split())
    gids = tuple(int(x) for x in re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split())
    groups = {int(x) for x in re.search(r"^Groups:[ \t]*(.*)$", status, re.M).group(1).split()}
    return uids, gids, groups


def conf(port, main="", http=""):
    return f"""
{main}
worker_processes 2;
error_log logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log logs/access.log;
    {http}
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def get(port, path="/", method="GET", body=b""):
    """(status, body) of one request on its own connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def test_workers_run_as_the_default_user(gatehouse, prefix, gatehouse_bin):
    user, group = default_user(gatehouse_bin)
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    port = free_port()
    g = gatehouse.start(conf(port), ports=[port], workers=2)
    for w in g.children():
        uids, gids, groups = ids(w)
        assert uids == (uid,) * 4, (w, uids)
        assert gids == (gid,) * 4, (w, gids)
        assert 0 not in groups
    assert ids(g.pid)[0] == (0,) * 4
    assert get(port) == (200, b"ok\n")


@pytest.mark.parametrize("directive, who", [("user root;", ("root", "root")),
                                            ("user daemon;", ("daemon", "daemon")),
                                            ("user daemon root;", ("daemon", "root"))])
def test_user_overrides_the_default(gatehouse, prefix, directive, who):
    try:
        uid, gid = pwd.getpwnam(who[0]).pw_uid, grp.getgrnam(who[1]).gr_gid
    except KeyError:
        pytest.skip(f"no user or group {who}")
    port = free_port()
    g = gatehouse.start(conf(port, main=directive), ports=[port], workers=2)
    for w in g.children():
        uids, gids, _ = ids(w)
        assert (uids, gids) == ((uid,) * 4, (gid,) * 4)


def test_single_process_keeps_its_user(gatehouse, prefix):
    """master_process off: the one process is the master, and keeps root
    without "user", as nginx's does."""
    port = free_port()
    g = gatehouse.start(conf(port, main="master_process off;"), ports=[port])
    assert ids(g.pid)[0] == (0,) * 4
    assert get(port) == (200, b"ok\n")


def test_request_body_in_a_temp_file(gatehouse, prefix, gatehouse_bin):
    """A proxied body larger than client_body_buffer_size goes through a
    temp file in client_body_temp, which the master made for the workers
    (they could not make it under a prefix that root owns); the same for a
    "client_body_temp_path" of a location, and proxy_temp."""
    user, _ = default_user(gatehouse_bin)
    uid = pwd.getpwnam(user).pw_uid
    os.chmod(prefix.path, 0o755)  # root's, as an installed prefix: closed to the workers
    origin = Origin()
    try:
        port = free_port()
        http = f"""
            client_body_buffer_size 1k;
            upstream o {{ server {origin.addr}; }}
            server {{
                listen 127.0.0.1:{port};
                location /up/ {{ proxy_pass http://o/; }}
                location /own/ {{ client_body_temp_path own_temp; proxy_pass http://o/; }}
            }}
        """
        g = gatehouse.start(conf(free_port(), http=http), ports=[port], workers=2)
        body = os.urandom(256 * 1024)
        for path in ("/up/a", "/own/b"):
            status, _ = get(port, path, "POST", body)
            assert status == 200, g.stderr() + prefix.read("logs/error.log")
        reqs = origin.wait_requests(2)
        assert [r.body for r in reqs] == [body, body]
        for d in ("client_body_temp", "own_temp", "proxy_temp"):
            st = (prefix / d).stat()
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700, d
        assert "[crit]" not in prefix.read("logs/error.log")
    finally:
        origin.stop()


def test_reopen_gives_new_logs_to_the_workers(gatehouse, prefix, gatehouse_bin):
    """logrotate renames the logs, then USR1: the master makes the new
    files (it is root), gives them to the workers' user, and the workers
    reopen them and write there."""
    user, _ = default_user(gatehouse_bin)
    uid = pwd.getpwnam(user).pw_uid
    port = free_port()
    g = gatehouse.start(conf(port), ports=[port], workers=2)
    logs = prefix.logs_dir
    assert get(port, "/before") == (200, b"ok\n")
    wait_for(lambda: b"/before" in (logs / "access.log").read_bytes(), what="the first line")
    os.rename(logs / "access.log", logs / "access.log.1")
    os.rename(logs / "error.log", logs / "error.log.1")
    g.signal(signal.SIGUSR1)
    wait_for(lambda: (logs / "access.log").exists() and (logs / "error.log").exists(), what="new logs")
    for name in ("access.log", "error.log"):
        assert (logs / name).stat().st_uid == uid, name

    def logged():
        get(port, "/after")
        return b"/after" in (logs / "access.log").read_bytes()
    # Each worker reopens on its own signal: ask until one has and logged.
    wait_for(logged, interval=0.05, what="a line in the new access.log")
    # A worker that could not reopen would say so in the file it still has.
    after = prefix.read("logs/error.log.1").split("reopening logs", 1)[1] + prefix.read("logs/error.log")
    assert "failed" not in after, after


def capabilities(pid):
    """(effective, permitted) capability sets of pid, as numbers."""
    status = open(f"/proc/{pid}/status").read()
    return (int(re.search(r"^CapEff:\s*(\w+)", status, re.M).group(1), 16),
            int(re.search(r"^CapPrm:\s*(\w+)", status, re.M).group(1), 16))


def test_transparent_proxy_bind_keeps_cap_net_raw_alone(gatehouse, prefix, gatehouse_bin):
    """IP_TRANSPARENT needs CAP_NET_RAW: with "proxy_bind ...
    transparent" the workers keep that one capability, and only it, after
    becoming the workers' user [nginx]; without it they keep none."""
    user, _ = default_user(gatehouse_bin)
    cap_net_raw = 1 << 13

    def handler(conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (
            len(conn.getpeername()[0]), conn.getpeername()[0].encode()))
        return False
    origin = Origin(handler)
    try:
        port = free_port()
        http = f"""
            server {{
                listen 127.0.0.1:{port};
                location / {{ proxy_bind 127.0.0.2 transparent; proxy_pass http://{origin.addr}; }}
            }}
        """
        g = gatehouse.start(conf(free_port(), http=http), ports=[port], workers=2)
        workers = g.children()
        assert workers
        for w in workers:
            assert ids(w)[0][0] == pwd.getpwnam(user).pw_uid
            assert capabilities(w) == (cap_net_raw, cap_net_raw), w
        assert get(port) == (200, b"127.0.0.2")
        g.stop()
        plain = free_port()
        g = gatehouse.start(conf(plain), ports=[plain], workers=2)
        assert [capabilities(w) for w in g.children()] == [(0, 0), (0, 0)]
    finally:
        origin.stop()
