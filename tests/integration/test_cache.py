"""proxy_cache: what clients and origins see through the shared cache.

Every test runs two workers against a real origin (origins.py: Python
threads on raw sockets) that records each request, so that a test asserts
how many requests reached the origin and what they carried. The cache's
verdict is in an X-Cache field (add_header X-Cache $upstream_cache_status).
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from gh_server import Response, Server, poll, require_binary
from origins import response


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def cache_server(tmp_path):
    """cache_server(http) starts a master with two workers; CACHE in the
    http block is the cache directory, PORT the listening port."""
    require_binary()
    started = []

    def make(http, start=True):
        base = tmp_path / f"s{len(started)}"
        cache_dir = base / "cache"
        s = Server(base, http.replace("CACHE", str(cache_dir)))
        s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
        s.cache_dir = cache_dir
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()


def counting(body_of=None, headers_of=None, status_of=None, delay=0.0):
    """A handler answering every path with a body that names the path and
    the count of requests for it so far (so a test sees which response it
    got), the fields headers_of(req) gives, and status_of(req) (200)."""
    counts = {}
    lock = threading.Lock()

    def handler(conn, req):
        with lock:
            counts[req.target] = counts.get(req.target, 0) + 1
            n = counts[req.target]
        if delay:
            time.sleep(delay)
        body = body_of(req, n) if body_of else f"{req.target} #{n}\n".encode()
        hdrs = headers_of(req) if headers_of else [("Cache-Control", "max-age=60")]
        status = status_of(req) if status_of else 200
        if req.method == "HEAD":
            head = response(status, body, hdrs)
            conn.sendall(head[: head.index(b"\r\n\r\n") + 4])
            return True
        conn.sendall(response(status, body, hdrs))
        return True

    return handler


def conf(o, extra="", loc_extra="", path_params="levels=1:2 keys_zone=one:1m"):
    return f"""
    proxy_cache_path CACHE {path_params};
    {extra}
    server {{
        listen 127.0.0.1:PORT;
        location / {{
            proxy_pass http://{o.addr};
            proxy_cache one;
            add_header X-Cache $upstream_cache_status always;
            {loc_extra}
        }}
    }}
    """


def until_stale(stored, max_age=1):
    """Sleeps until an entry stored at wall-clock second `stored` (or
    before) with this max-age is stale: it is fresh through second
    stored + max_age, as in nginx."""
    time.sleep(max(0.0, stored + max_age + 1 - time.time()))


def children(master_pid, title):
    """Pids of the master's children whose title contains `title` (from
    /proc: procps may not be installed)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ppid == master_pid and title in cmd:
            out.append(int(d))
    return sorted(out)


def pid_connected_to(pids, port):
    """The pid among `pids` with an established TCP connection to
    127.0.0.1:port (from /proc/net/tcp and the pids' fds)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[2] == f"0100007F:{port:04X}" and cols[3] == "01":
                inodes.add(cols[9])
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    return None


def hits(o, target):
    return sum(1 for r in o.requests if r.target == target)


def entry_files(s):
    return sorted(p for p in pathlib.Path(s.cache_dir).rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


# ---- storing and serving ------------------------------------------------------------------


def test_a_response_is_fetched_once_and_served_from_the_cache_by_every_worker(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o))
    first = s.get("/a")
    assert first.status == 200 and first.header("X-Cache") == "MISS" and first.body == b"/a #1\n"
    # New connections spread over both workers: all of them hit.
    for _ in range(20):
        r = s.get("/a")
        assert (r.status, r.header("X-Cache"), r.body) == (200, "HIT", b"/a #1\n")
        assert r.header("Age") is not None and int(r.header("Age")) >= 0
    assert hits(o, "/a") == 1
    # nginx's levels=1:2 layout: the last character of the key's MD5, then
    # the two before it.
    files = entry_files(s)
    assert len(files) == 1
    name = files[0].name
    assert files[0].parent.name == name[-3:-1] and files[0].parent.parent.name == name[-1]


def test_the_key_separates_entries_and_proxy_cache_key_sets_it(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o, loc_extra="proxy_cache_key $uri;"))
    assert s.get("/k?x=1").header("X-Cache") == "MISS"
    # The arguments are not in this key: the same entry.
    r = s.get("/k?x=2")
    assert r.header("X-Cache") == "HIT" and r.body == b"/k?x=1 #1\n"
    assert s.get("/other").header("X-Cache") == "MISS"


@pytest.mark.parametrize("fields,stored", [
    ([("Cache-Control", "max-age=60")], True),
    ([("Cache-Control", "no-store")], False),
    ([("Cache-Control", "private, max-age=60")], False),
    ([("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")], False),
    ([("Cache-Control", "max-age=60"), ("Vary", "*")], False),
    ([("X-Accel-Expires", "0"), ("Cache-Control", "max-age=60")], False),
    ([("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], True),
    ([], False),  # no lifetime and no proxy_cache_valid
])
def test_what_the_origin_allows_is_stored(cache_server, origin, fields, stored):
    o = origin(counting(headers_of=lambda req: fields))
    s = cache_server(conf(o))
    s.get("/p")
    r = s.get("/p")
    assert r.header("X-Cache") == ("HIT" if stored else "MISS")
    assert hits(o, "/p") == (1 if stored else 2)


def test_proxy_ignore_headers_and_proxy_cache_valid(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Set-Cookie", "a=b"), ("Cache-Control", "no-cache")]))
    s = cache_server(conf(o, loc_extra="proxy_ignore_headers Set-Cookie Cache-Control; proxy_cache_valid 1m;"))
    s.get("/v")
    r = s.get("/v")
    assert r.header("X-Cache") == "HIT" and hits(o, "/v") == 1
    # proxy_cache_valid with a time alone is for 200, 301 and 302: a 404
    # is not stored.
    o404 = origin(counting(headers_of=lambda req: [], status_of=lambda req: 404))
    s2 = cache_server(conf(o404, loc_extra="proxy_cache_valid 1m;"))
    s2.get("/n")
    assert s2.get("/n").header("X-Cache") == "MISS"
    s3 = cache_server(conf(o404, loc_extra="proxy_cache_valid 404 1m;"))
    s3.get("/n3")
    assert s3.get("/n3").header("X-Cache") == "HIT"


def test_expired_entries_are_fetched_again(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1")]))
    s = cache_server(conf(o))
    s.get("/e")
    assert s.get("/e").header("X-Cache") == "HIT"
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "EXPIRED" else None)(s.get("/e")), timeout=5)
    assert r is not None and r.body == b"/e #2\n"


def test_revalidation_with_a_304_refreshes_the_entry(cache_server, origin):
    seen = []

    def handler(conn, req):
        seen.append((req.header("If-None-Match"), req.header("If-Modified-Since")))
        if req.header("If-None-Match") == '"v1"':
            conn.sendall(response(304, b"", [("Cache-Control", "max-age=60"), ("ETag", '"v1"')], length=False))
            return True
        conn.sendall(response(200, b"original", [("Cache-Control", "max-age=1"), ("ETag", '"v1"'),
                                                 ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")]))
        return True

    o = origin(handler)
    s = cache_server(conf(o, loc_extra="proxy_cache_revalidate on;"))
    assert s.get("/r").body == b"original"
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "REVALIDATED" else None)(s.get("/r")), timeout=5)
    assert r is not None and r.status == 200 and r.body == b"original"
    assert seen[-1] == ('"v1"', "Mon, 01 Jan 2024 00:00:00 GMT")
    # The 304's max-age=60 renewed the entry: a hit now.
    n = len(o.requests)
    assert s.get("/r").header("X-Cache") == "HIT" and len(o.requests) == n


def test_the_clients_conditionals_never_reach_the_origin_and_apply_to_the_answer(cache_server, origin):
    o = origin(counting(body_of=lambda req, n: b"0123456789",
                        headers_of=lambda req: [("Cache-Control", "max-age=60"), ("ETag", '"t"')]))
    s = cache_server(conf(o))
    # A miss with conditionals: they stay with the client's answer.
    r = s.get("/c", headers=[("If-None-Match", '"x"'), ("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")])
    assert r.status == 200 and r.body == b"0123456789"
    assert o.requests[0].header("If-None-Match") is None and o.requests[0].header("If-Modified-Since") is None
    r = s.get("/c", headers=[("Range", "bytes=2-4"), ("If-None-Match", '"x"')])
    assert (r.status, r.header("X-Cache"), r.body) == (206, "HIT", b"234")
    r = s.get("/c", headers=[("Range", "bytes=5-")])
    assert (r.status, r.header("X-Cache"), r.body) == (206, "HIT", b"56789")
    assert s.get("/c", headers=[("If-None-Match", '"t"')]).status == 304
    assert hits(o, "/c") == 1


def test_several_ranges_get_a_multipart_answer_on_a_miss_and_on_a_hit(cache_server, origin):
    # A miss streams the origin's body through the parts; a hit cuts them
    # from the entry. The origin's own Content-Range (wrong on a 200) is
    # not passed on with ours [nginx].
    body = bytes(range(48, 48 + 64)) * 64
    o = origin(counting(body_of=lambda req, n: body,
                        headers_of=lambda req: [("Cache-Control", "max-age=60"), ("Content-Type", "text/plain"),
                                                ("Content-Range", "stub")]))
    s = cache_server(conf(o))
    for want in ("MISS", "HIT"):
        if want == "HIT":
            # The miss's range went to the origin; the entry is filled apart.
            assert poll(lambda: s.get("/m").header("X-Cache") == "HIT", timeout=5)
            n = hits(o, "/m")
        r = s.get("/m", headers=[("Range", "bytes=4000-4009,0-3")])
        assert (r.status, r.header("X-Cache")) == (206, want)
        assert r.all("Content-Range") == []
        b = r.header("Content-Type").split("boundary=", 1)[1]
        assert r.body == (f"\r\n--{b}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-3/4096\r\n\r\n".encode()
                          + body[0:4]
                          + f"\r\n--{b}\r\nContent-Type: text/plain\r\nContent-Range: bytes 4000-4009/4096\r\n\r\n"
                          .encode() + body[4000:4010] + f"\r\n--{b}--\r\n".encode())
        r = s.get("/m", headers=[("Range", "bytes=1-2")])
        assert (r.status, r.all("Content-Range"), r.body) == (206, ["bytes 1-2/4096"], body[1:3])
    assert hits(o, "/m") == n


def test_head_is_fetched_as_get_and_answered_from_the_entry(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o))
    r = s.get("/h", method="HEAD")
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "6"
    assert o.requests[0].method == "GET"
    r = s.get("/h")
    assert (r.header("X-Cache"), r.body) == ("HIT", b"/h #1\n")
    o2 = origin(counting())
    s2 = cache_server(conf(o2, loc_extra="proxy_cache_convert_head off;"))
    s2.get("/h2", method="HEAD")
    assert o2.requests[0].method == "HEAD"


def test_vary_keeps_one_variant_per_value(cache_server, origin):
    o = origin(counting(body_of=lambda req, n: f"{req.header('Accept-Language')} #{n}".encode(),
                        headers_of=lambda req: [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]))
    s = cache_server(conf(o))
    for n, lang in enumerate(("en", "fr", "de"), 1):
        r = s.get("/v", headers=[("Accept-Language", lang)])
        assert (r.header("X-Cache"), r.body) == ("MISS", f"{lang} #{n}".encode())
    for _ in range(2):
        for lang in ("en", "fr", "de"):
            r = s.get("/v", headers=[("Accept-Language", lang)])
            assert r.header("X-Cache") == "HIT" and r.body.split()[0] == lang.encode()
    assert hits(o, "/v") == 3


def test_vary_values_match_whatever_their_whitespace(cache_server, origin):
    # "foo, bar", "foo,bar" and "foo,, ,bar , " are one variant; the order
    # of the elements, and where they split, still count.
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=60"), ("Vary", "X-List")]))
    s = cache_server(conf(o))
    assert s.get("/w", headers=[("X-List", "foo, bar")]).header("X-Cache") == "MISS"
    assert s.get("/w", headers=[("X-List", "foo,bar")]).header("X-Cache") == "HIT"
    assert s.get("/w", headers=[("X-List", "foo,, ,bar , ")]).header("X-Cache") == "HIT"
    assert s.get("/w", headers=[("X-List", "foo"), ("X-List", "bar")]).header("X-Cache") == "HIT"
    assert s.get("/w", headers=[("X-List", "foobar")]).header("X-Cache") == "MISS"
    assert s.get("/w", headers=[("X-List", "bar, foo")]).header("X-Cache") == "MISS"
    assert hits(o, "/w") == 3


def test_bypass_and_no_cache(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o, loc_extra="proxy_cache_bypass $http_x_bypass; proxy_no_cache $http_x_nostore;"))
    s.get("/b")
    r = s.get("/b", headers=[("X-Bypass", "1")])
    assert r.header("X-Cache") == "BYPASS" and r.body == b"/b #2\n"
    # A bypassed response is stored: the next plain request hits it.
    assert s.get("/b").body == b"/b #2\n"
    s.get("/n", headers=[("X-Nostore", "yes")])
    assert s.get("/n").header("X-Cache") == "MISS"
    # "0" and empty mean no.
    s.get("/z", headers=[("X-Nostore", "0")])
    assert s.get("/z").header("X-Cache") == "HIT"


def test_min_uses(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o, loc_extra="proxy_cache_min_uses 3;"))
    for _ in range(3):
        assert s.get("/m").header("X-Cache") == "MISS"
    assert s.get("/m").header("X-Cache") == "HIT"
    assert hits(o, "/m") == 3


def test_below_min_uses_the_clients_range_and_conditionals_reach_the_origin(cache_server, origin):
    # A miss that will not be stored asks the origin for what the client
    # asked, as nginx does ("scarce"); the miss that is stored fetches the
    # whole response, and the range is cut from it.
    o = origin(counting())
    s = cache_server(conf(o, loc_extra="proxy_cache_min_uses 2;"))
    r = s.get("/u", headers=[("Range", "bytes=1-3"), ("If-None-Match", '"x"')])
    assert r.header("X-Cache") == "MISS"
    first = o.requests[-1]
    assert (first.header("Range"), first.header("If-None-Match")) == ("bytes=1-3", '"x"')
    # The second use is stored; a range of it is then cut from the entry.
    assert s.get("/u").header("X-Cache") == "MISS"
    r = s.get("/u", headers=[("Range", "bytes=1-3")])
    assert (r.header("X-Cache"), r.status, r.body) == ("HIT", 206, b"u #")
    assert len(o.requests) == 2


def test_methods_other_than_get_and_head_are_not_cached_by_default(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o))
    for _ in range(2):
        r = s.get("/post", method="POST")
        assert r.status == 200 and r.header("X-Cache") is None
    assert hits(o, "/post") == 2


# ---- collapsing and stale answers ------------------------------------------------------------


def test_the_lock_collapses_concurrent_misses_into_one_origin_request(cache_server, origin):
    o = origin(counting(delay=0.5))
    s = cache_server(conf(o, loc_extra="proxy_cache_lock on; proxy_cache_lock_timeout 10s;"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(s.get("/lock"))) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 100
    assert all(r.status == 200 and r.body == b"/lock #1\n" for r in results)
    assert hits(o, "/lock") == 1
    assert sum(1 for r in results if r.header("X-Cache") == "MISS") == 1


def test_without_the_lock_concurrent_misses_all_reach_the_origin(cache_server, origin):
    o = origin(counting(delay=0.3))
    s = cache_server(conf(o))
    threads = [threading.Thread(target=lambda: s.get("/nolock")) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert hits(o, "/nolock") == 5


def test_stale_is_served_when_the_origin_is_down_or_fails(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1")]))
    s = cache_server(conf(o, loc_extra="proxy_cache_use_stale error timeout http_500;"))
    assert s.get("/s").body == b"/s #1\n"
    o.stop()
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "STALE" else None)(s.get("/s")), timeout=5)
    assert r is not None and r.status == 200 and r.body == b"/s #1\n"
    # An origin answering 500 is listed too.
    o500 = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1")],
                           status_of=lambda req: 200 if "ok" in req.target else 500))
    s2 = cache_server(conf(o500, loc_extra="proxy_cache_use_stale http_500; proxy_cache_key /x;"))
    s2.get("/ok")
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "STALE" else None)(s2.get("/bad")), timeout=5)
    assert r is not None and r.body == b"/ok #1\n"


def test_no_stale_without_use_stale(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1")]))
    s = cache_server(conf(o))
    s.get("/d")
    o.stop()
    r = poll(lambda: (lambda x: x if x.status != 200 else None)(s.get("/d")), timeout=5)
    assert r is not None and r.status == 502


def test_stale_if_error_from_the_origin(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1, stale-if-error=60")]))
    s = cache_server(conf(o))
    s.get("/sie")
    o.stop()
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "STALE" else None)(s.get("/sie")), timeout=5)
    assert r is not None and r.body == b"/sie #1\n"


def test_updating_serves_stale_while_one_request_refreshes(cache_server, origin):
    slow = {"on": False}

    def body_of(req, n):
        if slow["on"]:
            time.sleep(1.0)
        return f"v{n}".encode()

    o = origin(counting(body_of=body_of, headers_of=lambda req: [("Cache-Control", "max-age=1")]))
    s = cache_server(conf(o, loc_extra="proxy_cache_use_stale updating;"))
    assert s.get("/u").body == b"v1"
    assert poll(lambda: s.get("/u").header("X-Cache") == "EXPIRED" or None, timeout=5)
    # Now v2 is stored with max-age=1; let it expire, then refresh slowly.
    until_stale(int(time.time()))
    slow["on"] = True
    refresher = []
    t = threading.Thread(target=lambda: refresher.append(s.get("/u")))
    t.start()
    assert poll(lambda: len(o.requests) >= 3 or None, timeout=5)
    r = s.get("/u")
    assert r.header("X-Cache") == "UPDATING" and r.body == b"v2"
    t.join(10)
    assert refresher[0].header("X-Cache") == "EXPIRED" and refresher[0].body == b"v3"


# ---- purge ------------------------------------------------------------------------------------


def test_purge(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o, extra="map $request_method $purge { PURGE 1; default 0; }",
                          loc_extra="proxy_cache_purge $purge;"))
    for p in ("/p/a", "/p/b", "/q"):
        s.get(p)
        assert s.get(p).header("X-Cache") == "HIT"
    assert s.get("/p/a", method="PURGE").status == 204
    assert s.get("/p/a", method="PURGE").status == 404
    assert s.get("/p/a").header("X-Cache") == "MISS"
    # A trailing "*": every key with that prefix.
    assert s.get("/p/*", method="PURGE").status == 204
    assert s.get("/p/b").header("X-Cache") == "MISS"
    assert s.get("/q").header("X-Cache") == "HIT"
    assert s.get("/nothing*", method="PURGE").status == 404


# ---- processes, reloads, restarts, failures ------------------------------------------------------


def test_reload_keeps_the_cache_warm(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o))
    for i in range(10):
        s.get(f"/w{i}")
    def helpers():
        return children(s.master_pid(), "gatehouse: cache manager")

    before = helpers()
    assert len(before) == 1
    s.proc.send_signal(signal.SIGHUP)
    assert poll(lambda: "reconfiguring" in s.error_log() or None, timeout=5)
    # The old generation's manager is retired, the new one runs.
    assert poll(lambda: (lambda h: h if len(h) == 1 and h != before else None)(helpers()), timeout=10)
    for _ in range(3):
        for i in range(10):
            r = s.get(f"/w{i}")
            assert (r.status, r.header("X-Cache"), r.body) == (200, "HIT", f"/w{i} #1\n".encode())
    assert len(o.requests) == 10


def test_restart_rebuilds_the_index_from_disk(cache_server, origin):
    o = origin(counting())
    http = conf(o)
    s = cache_server(http)
    for i in range(20):
        s.get(f"/r{i}")
    s.stop()
    # A temp file a dead writer left and a file that is not an entry.
    some = entry_files(s)[0]
    leftover = some.parent / (some.name + ".999999999.1.tmp")
    leftover.write_bytes(b"partial")
    bogus = some.parent / ("0" * 32)
    bogus.write_bytes(b"not an entry")
    s.start()
    # The log has the first start's line too.
    assert poll(lambda: s.error_log().count("cache loader done") >= 2 or None, timeout=10)
    for i in range(20):
        assert s.get(f"/r{i}").header("X-Cache") == "HIT"
    assert len(o.requests) == 20
    assert not leftover.exists() and not bogus.exists()


def test_the_cache_manager_removes_inactive_entries_and_is_respawned(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=600")]))
    s = cache_server(conf(o, path_params="keys_zone=one:1m inactive=1s"))
    s.get("/i")
    assert len(entry_files(s)) == 1
    assert poll(lambda: not entry_files(s) or None, timeout=10)
    assert s.get("/i").header("X-Cache") == "MISS"
    pids = children(s.master_pid(), "gatehouse: cache manager")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)

    def respawned():
        p = children(s.master_pid(), "gatehouse: cache manager")
        return p if p and p != pids else None

    assert poll(respawned, timeout=5)


def test_max_size_keeps_the_cache_under_its_size(cache_server, origin):
    o = origin(counting(body_of=lambda req, n: b"x" * 20000))
    s = cache_server(conf(o, path_params="keys_zone=one:1m max_size=100k"))
    for i in range(20):
        s.get(f"/big{i}")

    def sizes():
        # The manager removes files while they are listed: a file gone
        # between the listing and its stat() counts as gone.
        out = {}
        for p in entry_files(s):
            try:
                out[p.name] = p.stat().st_size
            except FileNotFoundError:
                pass
        return out

    def small():
        total = sum(sizes().values())
        return total if total <= 100 * 1024 else None

    assert poll(small, timeout=10), sizes()
    # The most recent ones stay.
    r = s.get("/big19")
    assert r.header("X-Cache") == "HIT", (r.status, r.header("X-Cache"), [p.name for p in entry_files(s)],
                                          s.error_log()[-2000:])


def test_a_worker_killed_during_a_fill_leaves_no_partial_entry(cache_server, origin):
    started = threading.Event()

    def handler(conn, req):
        if req.target == "/slow" and not started.is_set():
            started.set()
            conn.sendall(response(200, b"", [("Cache-Control", "max-age=60"), ("Content-Length", "100000")],
                                  length=False))
            conn.sendall(b"a" * 50000)
            time.sleep(5)
            return False
        conn.sendall(response(200, b"b" * 100000, [("Cache-Control", "max-age=60")]))
        return True

    o = origin(handler)
    s = cache_server(conf(o))
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100)
    assert started.wait(5)
    # The worker serving it: the one with an established connection to the
    # origin.
    pid = pid_connected_to(children(s.master_pid(), "worker process"), o.port)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    sock.close()
    assert entry_files(s) == []
    r = s.get("/slow")
    assert r.status == 200 and r.body == b"b" * 100000 and r.header("X-Cache") == "MISS"
    r = s.get("/slow")
    assert r.header("X-Cache") == "HIT" and r.body == b"b" * 100000


def test_a_full_disk_only_means_not_stored(tmp_path, cache_server, origin):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        o = origin(counting(body_of=lambda req, n: b"y" * 600000))
        http = conf(o).replace("proxy_cache_path CACHE", f"proxy_cache_path {mnt}/c")
        s = cache_server(http)
        for i in range(3):
            r = s.get(f"/f{i}")
            assert r.status == 200 and r.body == b"y" * 600000
        # One fits; the others did not, and left nothing behind.
        files = [p for p in (mnt / "c").rglob("*") if p.is_file()]
        assert len(files) == 1 and not files[0].name.endswith(".tmp")
        assert s.get("/f0").header("X-Cache") == "HIT"
        assert s.get("/f1").header("X-Cache") == "MISS"
        s.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# ---- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("http,message", [
    ("proxy_cache_path CACHE levels=1:2;", '"proxy_cache_path" must have "keys_zone" parameter'),
    ("proxy_cache_path CACHE keys_zone=z:1m levels=3;", 'invalid parameter "levels=3"'),
    ("proxy_cache_path CACHE keys_zone=z:1m bogus=1;", 'invalid parameter "bogus=1"'),
    ("server { listen 127.0.0.1:PORT; location / { proxy_cache nope; } }", '"proxy_cache" zone "nope" is unknown'),
    ("proxy_cache_path CACHE keys_zone=z:1m; proxy_cache_use_stale off error;",
     '"off" cannot be combined with other values'),
    ("proxy_cache_path CACHE keys_zone=z:1m; proxy_cache_valid 99 1m;", 'invalid status "99"'),
    ("proxy_cache_path CACHE keys_zone=z:1m memory_max_object=1k;", '"memory_max_object" needs "memory"'),
    ("proxy_cache_path CACHE keys_zone=z:1m memory=1;", 'invalid parameter "memory=1"'),
])
def test_config_errors_name_the_file_and_line(cache_server, http, message):
    s = cache_server(http, start=False)
    code, err = s.test_config()
    assert code != 0
    assert "[emerg]" in err and message in err and "gatehouse.conf:" in err


# ---- nginx's finer points ------------------------------------------------------------------


def test_proxy_cache_at_server_level_is_inherited_and_the_zone_may_come_later(cache_server, origin):
    o = origin(counting())
    s = cache_server(f"""
    server {{
        listen 127.0.0.1:PORT;
        proxy_cache later;
        add_header X-Cache $upstream_cache_status;
        location / {{ proxy_pass http://{o.addr}; }}
        location /off {{ proxy_pass http://{o.addr}; proxy_cache off; }}
    }}
    proxy_cache_path CACHE keys_zone=later:1m;
    """)
    s.get("/in")
    r = s.get("/in")
    assert r.header("X-Cache") == "HIT"
    # One "Accept-Ranges" (ours: the origin sent none).
    assert len(r.all("Accept-Ranges")) == 1
    s.get("/off")
    assert s.get("/off").header("X-Cache") is None and hits(o, "/off") == 2


def test_an_intercepted_error_is_cached_and_its_error_page_served_again(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [], status_of=lambda req: 404))
    s = cache_server(f"""
    proxy_cache_path CACHE keys_zone=one:1m;
    server {{
        listen 127.0.0.1:PORT;
        location / {{
            proxy_pass http://{o.addr};
            proxy_cache one;
            proxy_cache_valid any 1m;
            proxy_intercept_errors on;
            error_page 404 = @fallback;
        }}
        location @fallback {{ return 403; }}
    }}
    """)
    assert s.get("/gone").status == 403
    assert s.get("/gone").status == 403
    assert hits(o, "/gone") == 1


def test_a_cache_named_by_a_variable_that_names_none_is_a_500(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o).replace("proxy_cache one;", "proxy_cache $arg_c;"))
    assert s.get("/x?c=nope").status == 500
    assert s.get("/x?c=one").header("X-Cache") == "MISS"
    assert s.get("/x?c=one").header("X-Cache") == "HIT"
    # Empty: no cache.
    assert s.get("/x").header("X-Cache") is None


def test_only_a_stored_200_is_revalidated(cache_server, origin):
    seen = []

    def handler(conn, req):
        seen.append(req.header("If-Modified-Since"))
        conn.sendall(response(201, b"", [("Cache-Control", "max-age=1"),
                                         ("Last-Modified", "Mon, 02 Mar 2015 17:20:58 GMT")]))
        return True

    o = origin(handler)
    s = cache_server(conf(o, loc_extra="proxy_cache_revalidate on;"))
    s.get("/201")
    assert poll(lambda: s.get("/201").header("X-Cache") == "EXPIRED" or None, timeout=5)
    assert seen and all(v is None for v in seen)


def test_several_proxy_ignore_headers_add_up(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "no-store"), ("X-Accel-Expires", "0")]))
    s = cache_server(conf(o, loc_extra="proxy_ignore_headers Cache-Control; proxy_ignore_headers X-Accel-Expires;"
                                       " proxy_cache_valid 1m;"))
    s.get("/two")
    assert s.get("/two").header("X-Cache") == "HIT"


# ---- small entries kept in the worker -------------------------------------------------------


def open_entry_files(s):
    """The cache entry files the workers hold open."""
    out = []
    for pid in children(s.master_pid(), "worker process"):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith(str(s.cache_dir)):
                out.append(link)
    return out


def file_reads(s):
    """The read()/pread() calls the workers have made so far (syscr in
    /proc/PID/io; a socket's recv() is not one)."""
    total = 0
    for pid in children(s.master_pid(), "worker process"):
        with open(f"/proc/{pid}/io") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("syscr:"))
    return total


def change_in_place(f):
    """Makes the entry file's "max-age=60" field two fields, same length,
    behind the cache's back."""
    data = f.read_bytes()
    assert data.count(b"max-age=60") == 1
    with open(f, "r+b") as w:
        w.seek(data.index(b"max-age=60"))
        w.write(b"a\r\nX-In: b")


def old_or_changed(r):
    """The X-In field of a hit that is the entry whole as it was, or whole
    as change_in_place() made it; never a mix of the two."""
    fields = (r.header("Cache-Control"), r.header("X-In"))
    assert r.header("X-Cache") == "HIT" and fields in (("max-age=60", None), ("a", "b")), fields
    return fields[1]


def test_hits_on_a_small_entry_are_served_from_the_workers_copy_while_its_file_is_the_same(
        cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=60")]))
    s = cache_server(conf(o, extra="map $request_method $purge { PURGE 1; default 0; }",
                          loc_extra="proxy_cache_purge $purge;"))
    assert s.get("/k").header("X-Cache") == "MISS"
    # Two hundred hits read the file once a second in each worker at most,
    # not once a hit, and hold no descriptor of it.
    before, started = file_reads(s), time.monotonic()
    for _ in range(200):
        r = s.get("/k")
        assert (r.header("X-Cache"), r.body) == ("HIT", b"/k #1\n")
    reads = file_reads(s) - before
    assert reads <= 2 * (int(time.monotonic() - started) + 2), reads
    assert not open_entry_files(s)
    # A purge, then a new response: the next hits are the new one at once,
    # in every worker, though each kept the old one.
    assert s.get("/k", method="PURGE").status == 204
    assert s.get("/k").body == b"/k #2\n"
    for _ in range(4):
        r = s.get("/k")
        assert (r.header("X-Cache"), r.body) == ("HIT", b"/k #2\n")
    # A file changed in place behind the cache's back is served as it was
    # for the rest of the second at most, then as it now is, in every
    # worker, its head read from the new bytes (here one field made two).
    [f] = entry_files(s)
    change_in_place(f)
    assert poll(lambda: [old_or_changed(s.get("/k")) for _ in range(4)] == ["b"] * 4)
    # A file removed behind the cache's back: a miss once the second has
    # passed.
    [f.unlink() for f in entry_files(s)]
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "MISS" else None)(s.get("/k")), timeout=5)
    assert r.body == b"/k #3\n"


def test_a_busy_worker_reads_a_kept_entry_again_once_its_second_has_passed(cache_server, origin):
    # A worker that never goes idle (idle, it frees every copy at once)
    # still drops a copy once the second it was read in has passed: the
    # first cache lookup of each second does.
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=60")]))
    s = cache_server(conf(o), start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 2;", "worker_processes 1;"))
    s.start()
    s.get("/k")
    s.get("/busy")
    assert s.get("/k").header("X-Cache") == "HIT"
    [k] = [f for f in entry_files(s) if f.read_bytes().endswith(b"/k #1\n")]
    change_in_place(k)
    # Hits on another entry between, back to back, keep the worker busy.
    deadline = time.monotonic() + 5
    while old_or_changed(s.get("/k")) != "b":
        assert time.monotonic() < deadline, "the old copy of /k outlived its second"
        assert s.get("/busy").header("X-Cache") == "HIT"


# ---- the memory tier -------------------------------------------------------------------------


def test_the_memory_tier_serves_small_objects_without_the_disk(cache_server, origin):
    o = origin(counting(body_of=lambda req, n: (b"s" * 1000) if "small" in req.target else (b"L" * 100000)))
    s = cache_server(conf(o, path_params="levels=1:2 keys_zone=one:1m memory=1m memory_max_object=10k"))
    assert s.get("/small").header("X-Cache") == "MISS"
    assert s.get("/large").header("X-Cache") == "MISS"
    # Both files are on disk; taking them away shows which answers come
    # from memory: the small object still hits, every worker, whole.
    files = entry_files(s)
    assert len(files) == 2
    for f in files:
        f.unlink()
    for _ in range(10):
        r = s.get("/small")
        assert (r.status, r.header("X-Cache"), r.body) == (200, "HIT", b"s" * 1000)
    r = s.get("/small", headers=[("Range", "bytes=10-19")])
    assert r.status == 206 and r.body == b"s" * 10
    # The large one was only on disk: fetched again.
    r = s.get("/large")
    assert r.header("X-Cache") == "MISS" and r.body == b"L" * 100000
    assert hits(o, "/small") == 1 and hits(o, "/large") == 2


def test_a_hit_from_memory_sends_the_stored_head_as_a_hit_from_disk_does(cache_server, origin):
    # The memory tier keeps its copies' heads parsed (an index after the
    # bytes): the fields, their order, empty values, the reason phrase and
    # the dates must come out as from the file.
    fields = [("Cache-Control", "max-age=60"), ("Last-Modified", "Mon, 02 Mar 2015 17:20:58 GMT"),
              ("ETag", '"v1"'), ("X-Two", "first"), ("X-Empty", ""), ("X-Two", "second  value"),
              ("Link", "</a>; rel=preload")]

    def handler(conn, req):
        conn.sendall(response(200, b"body " + req.target.encode(), fields, reason="Fine Thanks"))
        return True

    def head_of(r):
        return (r.raw.split(b"\r\n", 1)[0],
                [(n, v) for n, v in r.headers if n not in ("Date", "Age", "X-Cache")], r.body)

    o = origin(handler)
    disk = cache_server(conf(o, path_params="keys_zone=one:1m"))
    disk.get("/h")
    from_disk = disk.get("/h")
    assert from_disk.header("X-Cache") == "HIT"
    mem = cache_server(conf(o, path_params="keys_zone=one:1m memory=1m"))
    mem.get("/h")
    [f.unlink() for f in entry_files(mem)]
    for _ in range(4):  # every worker, each from memory
        r = mem.get("/h")
        assert r.header("X-Cache") == "HIT"
        assert head_of(r) == head_of(from_disk)
    assert head_of(from_disk)[0] == b"HTTP/1.1 200 Fine Thanks"
    # Last-Modified and ETag have places of their own in our heads.
    mine = ("Last-Modified", "ETag")
    assert [f for f in head_of(from_disk)[1] if f in fields and f[0] not in mine] == \
        [f for f in fields if f[0] not in mine]
    assert from_disk.header("Last-Modified") == "Mon, 02 Mar 2015 17:20:58 GMT"
    assert from_disk.header("ETag") == '"v1"'
    # A conditional request is answered from the index's fields too.
    r = mem.get("/h", headers=[("If-None-Match", '"v1"')])
    assert r.status == 304 and r.header("ETag") == '"v1"'


def test_the_memory_tier_is_kept_across_a_reload_and_refilled_from_disk_after_a_restart(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o, path_params="keys_zone=one:1m memory=1m"))
    s.get("/m")
    s.proc.send_signal(signal.SIGHUP)
    assert poll(lambda: "reconfiguring" in s.error_log() or None, timeout=5)
    [f.unlink() for f in entry_files(s)]
    assert s.get("/m").header("X-Cache") == "HIT"
    # A restart: the memory is gone, the disk is the truth.
    s.get("/d")
    s.stop()
    s.start()
    assert s.get("/m").header("X-Cache") == "MISS"
    assert s.get("/d").header("X-Cache") == "HIT"
    # That hit read the file and put it in memory again.
    [f.unlink() for f in entry_files(s)]
    assert s.get("/d").header("X-Cache") == "HIT"


def test_a_purge_and_a_new_response_replace_the_memory_copy(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1")]))
    s = cache_server(conf(o, extra="map $request_method $purge { PURGE 1; default 0; }",
                          loc_extra="proxy_cache_purge $purge;",
                          path_params="keys_zone=one:1m memory=1m"))
    assert s.get("/p").body == b"/p #1\n"
    assert s.get("/p", method="PURGE").status == 204
    assert s.get("/p").body == b"/p #2\n"
    r = poll(lambda: (lambda x: x if x.header("X-Cache") == "EXPIRED" else None)(s.get("/p")), timeout=5)
    assert r.body == b"/p #3\n"
    assert s.get("/p").body == b"/p #3\n"


# ---- background update -----------------------------------------------------------------------


def test_background_update_serves_stale_at_once_and_refreshes_apart(cache_server, origin):
    gate = threading.Event()
    gate.set()

    def body_of(req, n):
        # The refresh waits until the test has seen the stale answers.
        assert gate.wait(10)
        return f"v{n}".encode()

    o = origin(counting(body_of=body_of, headers_of=lambda req: [("Cache-Control", "max-age=1")]))
    s = cache_server(conf(o, loc_extra="proxy_cache_use_stale updating; proxy_cache_background_update on;"))
    assert s.get("/bg").body == b"v1"
    until_stale(int(time.time()))
    gate.clear()
    # Stale at once, not after the origin: the update is apart.
    r = s.get("/bg")
    assert (r.status, r.header("X-Cache"), r.body) == (200, "STALE", b"v1")
    assert poll(lambda: hits(o, "/bg") == 2 or None, timeout=5)
    r = s.get("/bg")
    assert (r.header("X-Cache"), r.body) == ("UPDATING", b"v1")
    gate.set()
    r = poll(lambda: (lambda x: x if x.body == b"v2" else None)(s.get("/bg")), timeout=5)
    assert r.header("X-Cache") == "HIT"
    assert hits(o, "/bg") == 2


def test_background_update_with_stale_while_revalidate_and_a_failing_origin(cache_server, origin):
    state = {"failing": False}
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=1, stale-while-revalidate=60")],
                        status_of=lambda req: 500 if state["failing"] else 200))
    s = cache_server(conf(o, loc_extra="proxy_cache_background_update on;"))
    assert s.get("/swr").body == b"/swr #1\n"
    until_stale(int(time.time()))
    state["failing"] = True
    r = s.get("/swr")
    assert (r.header("X-Cache"), r.body) == ("STALE", b"/swr #1\n")
    # The failed update stored nothing and gave the claim back: the next
    # request starts another one.
    assert poll(lambda: hits(o, "/swr") == 2 or None, timeout=5)
    assert poll(lambda: (s.get("/swr").header("X-Cache") == "STALE" and hits(o, "/swr") >= 3) or None, timeout=5)


def test_a_new_vary_replaces_the_first_entry_and_its_variants_survive_a_restart(cache_server, origin):
    # The origin varies on what ?vary= names; the key is the path alone.
    o = origin(counting(body_of=lambda req, n: f"{req.header('X') or '-'} #{n}".encode(),
                        headers_of=lambda req: [("Cache-Control", "max-age=600"),
                                                ("Vary", req.target.split("vary=")[1].split("&")[0])]))
    s = cache_server(conf(o, loc_extra="proxy_cache_key $uri;"))
    assert s.get("/cold?vary=Z", headers=[("Z", "1")]).header("X-Cache") == "MISS"
    assert s.get("/cold?vary=X", headers=[("X", "1")]).header("X-Cache") == "MISS"
    assert s.get("/cold?vary=X", headers=[("X", "1")]).header("X-Cache") == "HIT"
    assert s.get("/cold?vary=X&n=2", headers=[("X", "2")]).header("X-Cache") == "MISS"
    assert s.get("/cold?vary=X&n=2", headers=[("X", "2")]).header("X-Cache") == "HIT"
    s.stop()
    s.start()
    for x in ("1", "2"):
        r = s.get("/cold?vary=X", headers=[("X", x)])
        assert r.header("X-Cache") == "HIT" and r.body.startswith(x.encode())


def test_a_range_is_cut_from_a_response_that_is_not_stored(cache_server, origin):
    o = origin(counting(body_of=lambda req, n: b"0123456789"))
    s = cache_server(conf(o, loc_extra="proxy_cache_min_uses 5;"))
    # The range goes to the origin (nginx's "scarce" miss); one that
    # ignores it is cut here.
    r = s.get("/below", headers=[("Range", "bytes=4-")])
    assert (r.status, r.body) == (206, b"456789")
    assert o.requests[0].header("Range") == "bytes=4-"


def test_an_uncached_range_goes_to_the_origin_and_the_entry_is_filled_apart(cache_server, origin):
    body = bytes(range(256)) * 4000  # 1 MB

    def handler(conn, req):
        rng = req.header("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            part = body[start:start + 10]
            conn.sendall(response(206, part, [("Cache-Control", "max-age=60"),
                                              ("Content-Range", f"bytes {start}-{start + 9}/{len(body)}")]))
        else:
            conn.sendall(response(200, body, [("Cache-Control", "max-age=60")]))
        return True

    o = origin(handler)
    s = cache_server(conf(o, loc_extra="proxy_cache_lock on;"))
    r = s.get("/big", headers=[("Range", "bytes=500000-500009")])
    assert (r.status, r.header("X-Cache"), r.body) == (206, "MISS", body[500000:500010])
    assert poll(lambda: len(entry_files(s)) == 1 or None, timeout=10)
    r = s.get("/big", headers=[("Range", "bytes=100-109")])
    assert (r.status, r.header("X-Cache"), r.body) == (206, "HIT", body[100:110])
    assert s.get("/big").body == body
    assert sorted(q.header("Range") or "-" for q in o.requests) == ["-", "bytes=500000-500009"]


def test_a_client_that_goes_away_does_not_end_the_fill_others_wait_for(cache_server, origin):
    # nginx reads a cacheable response to its end after the client's
    # error; the request waiting on the lock gets it without a second
    # origin request.
    gone = threading.Event()

    def handler(conn, req):
        conn.sendall(response(200, b"", [("Cache-Control", "max-age=60"), ("Content-Length", "100000")],
                              length=False))
        conn.sendall(b"a" * 1000)
        gone.wait(10)
        conn.sendall(b"a" * 99000)
        return False

    o = origin(handler)
    s = cache_server(conf(o, loc_extra="proxy_cache_lock on; proxy_cache_lock_timeout 20s;"))
    a = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    a.sendall(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")
    assert a.recv(100)
    waiter = []
    t = threading.Thread(target=lambda: waiter.append(s.get("/w")))
    t.start()
    # The waiter is (most likely) waiting on the lock by now: nothing
    # outside shows it, and the outcome the user sees is the same if it
    # came after the filling client went away.
    time.sleep(0.3)
    a.close()
    assert poll(lambda: "client closed connection; the response goes on for the cache" in s.error_log())
    gone.set()
    t.join(10)
    r = waiter[0]
    assert (r.status, r.body) == (200, b"a" * 100000)
    h = s.get("/w")
    assert (h.header("X-Cache"), h.body) == ("HIT", b"a" * 100000)
    assert len(o.requests) == 1


def test_an_orphaned_fill_cut_by_the_origin_stores_nothing_and_logs_its_request(cache_server, origin):
    gone = threading.Event()
    first = threading.Event()

    def handler(conn, req):
        if first.is_set():
            conn.sendall(response(200, b"c" * 5000, [("Cache-Control", "max-age=60")]))
            return True
        first.set()
        conn.sendall(response(200, b"", [("Cache-Control", "max-age=60"), ("Content-Length", "5000")],
                              length=False))
        conn.sendall(b"x" * 1000)
        gone.wait(10)
        return False  # cut at 1000 of 5000 bytes

    o = origin(handler)
    s = cache_server(conf(o, extra="log_format st '$uri $status $upstream_cache_status';"
                                   "access_log logs/st.log st;"))
    a = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    a.sendall(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
    assert a.recv(100)
    a.close()
    assert poll(lambda: "client closed connection; the response goes on for the cache" in s.error_log())
    gone.set()
    assert poll(lambda: "upstream prematurely closed connection" in s.error_log())
    s.wait_lines("st.log", 1)
    assert s.read_log("st.log").decode().split("\n")[0] == "/cut 200 MISS"
    r = s.get("/cut")
    assert (r.status, r.body, r.header("X-Cache")) == (200, b"c" * 5000, "MISS")
    assert len(o.requests) == 2


def test_a_purge_removes_every_variant_of_the_key(cache_server, origin):
    o = origin(counting(body_of=lambda req, n: f"{req.header('Accept-Language')} #{n}".encode(),
                        headers_of=lambda req: [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]))
    s = cache_server(conf(o, extra="map $request_method $purge { PURGE 1; default 0; }",
                          loc_extra="proxy_cache_purge $purge;"))
    for lang in ("en", "fr"):
        s.get("/pv", headers=[("Accept-Language", lang)])
        assert s.get("/pv", headers=[("Accept-Language", lang)]).header("X-Cache") == "HIT"
    assert len(entry_files(s)) == 2
    assert s.get("/pv", method="PURGE").status == 204
    assert entry_files(s) == []
    for lang in ("fr", "en"):
        r = s.get("/pv", headers=[("Accept-Language", lang)])
        assert r.header("X-Cache") == "MISS" and r.body.startswith(lang.encode())


def test_head_on_a_hit_sends_no_body_and_the_connection_goes_on(cache_server, origin):
    o = origin(counting())
    s = cache_server(conf(o, path_params="keys_zone=one:1m memory=1m"))
    s.get("/hd")
    raw = s.raw(b"HEAD /hd HTTP/1.1\r\nHost: x\r\n\r\nGET /hd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head1, rest = raw.split(b"\r\n\r\n", 1)
    assert b"X-Cache: HIT" in head1 and b"Content-Length: 7" in head1
    # The next bytes are the second response, not the first one's body.
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.endswith(b"\r\n\r\n/hd #1\n")
    assert hits(o, "/hd") == 1


def test_the_origins_accept_ranges_is_not_doubled(cache_server, origin):
    o = origin(counting(headers_of=lambda req: [("Cache-Control", "max-age=60"), ("Accept-Ranges", "bytes")]))
    s = cache_server(conf(o))
    for want in ("MISS", "HIT"):
        r = s.get("/ar")
        assert r.header("X-Cache") == want and r.all("Accept-Ranges") == ["bytes"]
