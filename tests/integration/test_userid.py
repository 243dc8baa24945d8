"""userid and its directives as a site uses them: a new visitor gets a
cookie identifying it, a returning one is recognised in the access log
($uid_got), a mark makes an old cookie be sent again, "userid log" only
reads, and $uid_reset gives a visitor a new identifier."""

import base64
import calendar
import re
import struct
import time

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from two_workers import two_workers  # noqa: F401  (the fixture)

CONF = """
log_format uid '$uri got=$uid_got set=$uid_set';
server {
    listen 127.0.0.1:PORT;
    root html;
    access_log logs/uid.log uid;
    userid on;
    userid_name visitor;
    userid_domain example.test;
    userid_path /app/;
    userid_expires 1d;
    userid_flags secure httponly samesite=lax;
    userid_p3p 'CP="NOI DSP"';
    location /app/ {}
    location /mark/ { userid_mark t; }
    location /log/ { userid log; }
    location /off/ { userid off; }
    location /reset/ { set $uid_reset 1; }
    location /resetlog/ { set $uid_reset log; }
    location /keep/ { set $uid_reset 0; }
    location /v1/ { userid v1; userid_service 258; }
    location /max/ {
        userid_expires max;
        userid_domain none;
        userid_flags off;
        userid_p3p none;
    }
    location /service/ { userid_service 65534; return 200 "$uid_set"; }
}
"""

FILES = {name: "ok\n" for name in (
    "app/a.html", "mark/a.html", "log/a.html", "off/a.html", "reset/a.html",
    "resetlog/a.html", "keep/a.html", "v1/a.html", "max/a.html")}


@pytest.fixture
def s(server):
    return server(CONF, FILES)


def cookie_of(r):
    """The Set-Cookie fields sent: exactly one, or None."""
    cookies = r.all("Set-Cookie")
    assert len(cookies) <= 1, cookies
    return cookies[0] if cookies else None


def parts(cookie):
    """("visitor", value) and the attributes, in order, as sent."""
    first, *attrs = cookie.split("; ")
    name, _, value = first.partition("=")
    return name, value, attrs


def uid_bytes(value):
    raw = base64.b64decode(value[:22] + "==")
    assert len(raw) == 16
    return raw


def hex_words(raw):
    """How $uid_got and $uid_set show an identifier: its four host-order
    32-bit words in hexadecimal, as nginx prints them."""
    return "".join("%08X" % w for w in struct.unpack("=4I", raw))


def log_line(s, n):
    return s.wait_lines("uid.log", n)[n - 1].decode().rstrip("\n")


def with_cookie(value):
    return [("Cookie", f"a=b; visitor={value}")]


def test_new_visitor_gets_a_cookie(s):
    t0 = int(time.time())
    r = s.get("/app/a.html")
    t1 = int(time.time())
    assert r.status == 200
    name, value, attrs = parts(cookie_of(r))
    assert name == "visitor"
    assert len(value) == 24 and value.endswith("==")
    expires = attrs[0]
    assert expires.startswith("expires=")
    when = calendar.timegm(time.strptime(expires[len("expires="):], "%a, %d-%b-%y %H:%M:%S GMT"))
    assert t0 + 86400 <= when <= t1 + 86400
    assert attrs[1:] == ["domain=example.test", "path=/app/", "secure", "httponly", "samesite=lax"]
    assert r.header("P3P") == 'CP="NOI DSP"'

    # Version 2: network order, the server's address as the service, the
    # time it was made.
    raw = uid_bytes(value)
    service, made, _, _ = struct.unpack(">4I", raw)
    assert service == 0x7F000001
    assert t0 <= made <= t1
    assert log_line(s, 1) == f"/app/a.html got=- set=visitor={hex_words(raw)}"


def test_identifiers_differ(s):
    values = {parts(cookie_of(s.get("/app/a.html")))[1] for _ in range(5)}
    assert len(values) == 5


def test_returning_visitor_is_recognised(s):
    value = parts(cookie_of(s.get("/app/a.html")))[1]
    r = s.get("/app/a.html", with_cookie(value))
    assert r.status == 200
    assert cookie_of(r) is None and r.header("P3P") is None
    # Cookie names compare without case, as nginx's.
    r = s.get("/app/a.html", [("Cookie", f"VISITOR={value}")])
    assert cookie_of(r) is None
    shown = f"visitor={hex_words(uid_bytes(value))}"
    assert log_line(s, 2) == f"/app/a.html got={shown} set=-"
    assert log_line(s, 3) == f"/app/a.html got={shown} set=-"


def test_a_missing_mark_sends_the_cookie_again(s):
    r = s.get("/mark/a.html")
    _, marked, _ = parts(cookie_of(r))
    assert marked[22:] == "t="
    assert cookie_of(s.get("/mark/a.html", with_cookie(marked))) is None

    unmarked = parts(cookie_of(s.get("/app/a.html")))[1]
    r = s.get("/mark/a.html", with_cookie(unmarked))
    name, again, attrs = parts(cookie_of(r))
    # The same identifier, now marked, with the expiry and P3P.
    assert again == unmarked[:22] + "t="
    assert attrs[0].startswith("expires=")
    assert r.header("P3P") == 'CP="NOI DSP"'
    shown = hex_words(uid_bytes(unmarked))
    assert log_line(s, 4) == f"/mark/a.html got=visitor={shown} set=visitor={shown}"


def test_log_mode_reads_and_sets_nothing(s):
    r = s.get("/log/a.html")
    assert r.status == 200 and cookie_of(r) is None and r.header("P3P") is None
    value = parts(cookie_of(s.get("/app/a.html")))[1]
    r = s.get("/log/a.html", with_cookie(value))
    assert cookie_of(r) is None
    assert log_line(s, 1) == "/log/a.html got=- set=-"
    assert log_line(s, 3) == f"/log/a.html got=visitor={hex_words(uid_bytes(value))} set=-"


def test_off_reads_nothing(s):
    value = parts(cookie_of(s.get("/app/a.html")))[1]
    r = s.get("/off/a.html", with_cookie(value))
    assert cookie_of(r) is None
    assert log_line(s, 2) == "/off/a.html got=- set=-"


def test_uid_reset_gives_a_new_identifier(s):
    value = parts(cookie_of(s.get("/app/a.html")))[1]
    old = hex_words(uid_bytes(value))

    assert cookie_of(s.get("/keep/a.html", with_cookie(value))) is None

    r = s.get("/reset/a.html", with_cookie(value))
    new = parts(cookie_of(r))[1]
    assert new[:22] != value[:22]
    assert log_line(s, 3) == f"/reset/a.html got=visitor={old} set=visitor={hex_words(uid_bytes(new))}"
    assert f'userid cookie "visitor={old}" was reset' not in s.error_log()

    r = s.get("/resetlog/a.html", with_cookie(value))
    assert parts(cookie_of(r))[1][:22] not in (value[:22], new[:22])
    s.wait_lines("uid.log", 4)
    assert re.search(r'\[notice\] .*userid cookie "visitor=%s" was reset' % old, s.error_log())


@pytest.mark.parametrize("value, why", [
    ("short", "too short"),
    ("fwAA=WsWptB/D3IYAwMDAg==", "invalid"),
    ("fwAAAWsWptB/D3IYAwM!Ag==", "invalid"),
])
def test_a_bad_cookie_is_logged_and_replaced(s, value, why):
    r = s.get("/app/a.html", with_cookie(value))
    assert cookie_of(r) is not None
    assert log_line(s, 1).startswith("/app/a.html got=- set=visitor=")
    assert f'[error] ' in s.error_log()
    assert f'client sent {why} userid cookie "{value}"' in s.error_log()


def test_version_1_is_in_host_order(s):
    r = s.get("/v1/a.html")
    raw = uid_bytes(parts(cookie_of(r))[1])
    service, made, _, seq = struct.unpack("=4I", raw)
    assert service == 258
    assert abs(made - time.time()) < 5
    assert seq == 1  # the worker's first version 1 identifier
    assert log_line(s, 1) == f"/v1/a.html got=- set=visitor={hex_words(raw)}"
    assert hex_words(raw).startswith("00000102")


def test_expires_max_and_no_attributes(s):
    r = s.get("/max/a.html")
    _, _, attrs = parts(cookie_of(r))
    assert attrs == ["expires=Thu, 31-Dec-37 23:55:55 GMT", "path=/app/"]
    assert r.header("P3P") is None


def test_service_in_uid_set(s):
    r = s.get("/service/")
    # The variable and the cookie agree; 65534 in network order.
    value = parts(cookie_of(r))[1]
    assert r.body.decode() == f"visitor={hex_words(uid_bytes(value))}"
    assert uid_bytes(value)[:4] == b"\x00\x00\xff\xfe"


def test_workers_make_different_identifiers(two_workers):
    # Each worker's pid is in its identifiers (the low half of the third
    # number), so two workers never make the same one even in the same
    # second with the same sequence number.
    s = two_workers("""
server {
    listen 127.0.0.1:PORT;
    userid on;
    location / { add_header X-Pid $pid; return 200 "$uid_set"; }
}
""")
    seen = {}
    deadline = time.monotonic() + 20
    while len({pid for pid, _ in seen.values()}) < 2 and time.monotonic() < deadline:
        for r in s.burst("/", 8):
            assert r.status == 200
            value = parts(cookie_of(r))[1]
            assert value not in seen
            seen[value] = (int(r.header("X-Pid")), r.body)
    pids = {pid for pid, _ in seen.values()}
    assert len(pids) == 2, f"{len(seen)} requests, all answered by one worker"
    for value, (pid, body) in seen.items():
        raw = uid_bytes(value)
        assert body.decode() == f"uid={hex_words(raw)}"
        assert struct.unpack(">4I", raw)[2] & 0xFFFF == pid & 0xFFFF


@pytest.mark.parametrize("directive, message", [
    ("userid maybe;", 'invalid value "maybe"'),
    ("userid_mark ab;", '"userid_mark" directive value must be "off" or a single letter, digit or "="'),
    ("userid_mark -;", '"userid_mark" directive value must be "off" or a single letter, digit or "="'),
    ("userid_expires forever;", 'invalid value "forever" in "userid_expires" directive'),
    ("userid_expires 500ms;", 'invalid value "500ms" in "userid_expires" directive'),
    ("userid_flags secure bogus;", 'invalid value "bogus"'),
    ("userid_service 4294967296;", 'invalid number "4294967296" in "userid_service" directive'),
    ("userid_name a; userid_name b;", '"userid_name" directive is duplicate'),
])
def test_bad_config_is_emerg_with_file_and_line(server, directive, message):
    bad = server("server {\n    listen 127.0.0.1:PORT;\n    %s\n}\n" % directive, start=False)
    rc, err = bad.test_config()
    assert rc != 0
    assert "[emerg]" in err and message in err
    assert re.search(r"gatehouse\.conf:\d+", err)
