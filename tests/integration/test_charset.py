"""charset, charset_types, override_charset, source_charset and charset_map
(charset_filter_module) as a client sees them: the charset in
Content-Type, recoded bodies (static files and proxied ones, with UTF-8
sequences split across the origin's writes), framing, and config errors.

The maps are small ones written in each test's config, in the form of
nginx's conf/koi-utf and conf/koi-win."""

import gzip
import time

import pytest

from gh_server import dechunk, server  # noqa: F401  (server: the fixture)
from origins import response

# A few letters of koi8-r, windows-1251 and UTF-8.
KOI_UTF = """
    charset_map koi8-r utf-8 {
        C1 D0B0;  # small a
        C2 D0B1;  # small b
        C0 D18E;  # small yu
        A4 E282AC;  # euro, a three-byte one
    }
"""
WIN_UTF = """
    charset_map windows-1251 utf-8 {
        E0 D0B0;  # small a
        E1 D0B1;  # small b
        FE D18E;  # small yu
    }
"""
KOI_WIN = """
    charset_map koi8-r windows-1251 {
        C1 E0;  # small a
        C2 E1;  # small b
        C0 FE;  # small yu
    }
"""
KOI = b"\xc1\xc2\xc0"  # "абю" in koi8-r
WIN = b"\xe0\xe1\xfe"  # "абю" in windows-1251
UTF = "абю".encode()

FILES = {
    "t.html": "hello\n",
    "t.txt": "text\n",
    "t.foo": "foo\n",
    "img.png": b"\x89PNG\r\n",
    "dir/x.html": "x\n",
    "koi.html": b"koi: " + KOI + b"\n",
    "big.html": KOI * 40000 + b"end\n",
}


def start(server, http, files=None):
    s = server(http, files, start=False)
    code, err = s.test_config()
    if 'unknown directive "charset"' in err:
        pytest.skip("charset_filter module not built")
    assert code == 0, err
    return s.start()


def body_of(r):
    if (r.header("Transfer-Encoding") or "").lower() == "chunked":
        return dechunk(r.body)
    return r.body


def test_static_types_and_off(server):
    s = start(server, f"""
        types {{ text/html html; text/plain txt; text/foo foo; image/png png; }}
        server {{
            listen 127.0.0.1:PORT;
            root html;
            charset utf-8;
            location /dir/ {{ charset off; }}
            location /foo/ {{ alias html/; charset_types text/foo; }}
            location /any/ {{ alias html/; charset_types *; }}
            location /var/ {{ alias html/; charset $arg_c; }}
        }}
        """, FILES)
    r = s.get("/t.html")
    assert r.status == 200
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert r.header("Content-Length") == "6" and r.body == b"hello\n"
    assert s.get("/t.txt").header("Content-Type") == "text/plain; charset=utf-8"
    # Not in charset_types: as it was.
    assert s.get("/t.foo").header("Content-Type") == "text/foo"
    assert s.get("/img.png").header("Content-Type") == "image/png"
    # "charset off" in a nested location.
    assert s.get("/dir/x.html").header("Content-Type") == "text/html"
    # charset_types adds to text/html; "*" takes any type.
    assert s.get("/foo/t.foo").header("Content-Type") == "text/foo; charset=utf-8"
    assert s.get("/foo/t.html").header("Content-Type") == "text/html; charset=utf-8"
    assert s.get("/foo/t.txt").header("Content-Type") == "text/plain"
    assert s.get("/any/img.png").header("Content-Type") == "image/png; charset=utf-8"
    # Variables; an empty value adds nothing.
    assert s.get("/var/t.html?c=koi8-r").header("Content-Type") == "text/html; charset=koi8-r"
    assert s.get("/var/t.html").header("Content-Type") == "text/html"
    # Redirects never get one (nginx).
    r = s.get("/dir")
    assert r.status == 301 and r.header("Content-Type") == "text/html"
    # nginx's own pages do.
    r = s.get("/missing.html")
    assert r.status == 404 and r.header("Content-Type") == "text/html; charset=utf-8"


def test_recode_static_file(server):
    s = start(server, KOI_UTF + KOI_WIN + """
        types { text/html html; }
        server {
            listen 127.0.0.1:PORT;
            root html;
            source_charset koi8-r;
            location /u/ { alias html/; charset utf-8; }
            location /w/ { alias html/; charset windows-1251; }
            location /k/ { alias html/; charset koi8-r; }
        }
        """, FILES)
    r = s.get("/u/koi.html")
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    # The length changed: no Content-Length, chunked.
    assert r.header("Content-Length") is None
    assert r.header("Transfer-Encoding") == "chunked"
    assert body_of(r) == b"koi: " + UTF + b"\n"
    # 8-bit to 8-bit keeps the length.
    r = s.get("/w/koi.html")
    assert r.header("Content-Type") == "text/html; charset=windows-1251"
    assert r.header("Content-Length") == str(len(FILES["koi.html"]))
    assert r.body == b"koi: " + WIN + b"\n"
    # The same charset: nothing to do.
    r = s.get("/k/koi.html")
    assert r.header("Content-Type") == "text/html; charset=koi8-r"
    assert r.body == FILES["koi.html"]
    # A file much larger than the filter's slabs.
    r = s.get("/u/big.html")
    assert body_of(r) == UTF * 40000 + b"end\n"
    r = s.get("/w/big.html")
    assert r.body == WIN * 40000 + b"end\n"
    # HEAD: the head a GET gets.
    r = s.get("/u/koi.html", method="HEAD")
    assert r.header("Content-Type") == "text/html; charset=utf-8" and r.header("Content-Length") is None


def test_proxied_charset_kept_or_overridden(server, origin):
    bodies = {
        "/koi": ("text/html; charset=koi8-r", b"<p>" + KOI + b"</p>"),
        "/plain": ("text/html", b"<p>" + KOI + b"</p>"),
        "/quoted": ('text/html; charset="KOI8-R"', KOI),
    }

    def handler(conn, req):
        ct, body = bodies[req.target]
        conn.sendall(response(200, body, [("Content-Type", ct)], close=True))
        return False

    o = origin(handler)
    s = start(server, KOI_UTF + f"""
        server {{
            listen 127.0.0.1:PORT;
            location /keep/ {{ charset utf-8; proxy_pass http://{o.addr}/; }}
            location /over/ {{ charset utf-8; override_charset on; proxy_pass http://{o.addr}/; }}
            location /src/ {{ charset utf-8; source_charset koi8-r; proxy_pass http://{o.addr}/; }}
        }}
        """)
    # override_charset off: the origin's charset and bytes as they were.
    r = s.get("/keep/koi")
    assert r.header("Content-Type") == "text/html; charset=koi8-r"
    assert body_of(r) == b"<p>" + KOI + b"</p>"
    # on: replaced, and the body recoded from the origin's charset.
    r = s.get("/over/koi")
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert r.header("Content-Length") is None
    assert body_of(r) == b"<p>" + UTF + b"</p>"
    r = s.get("/over/quoted")
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert body_of(r) == UTF
    # No charset from the origin: source_charset says what it is.
    r = s.get("/src/plain")
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert body_of(r) == b"<p>" + UTF + b"</p>"
    # The origin's own charset wins over source_charset (override off).
    assert s.get("/src/koi").header("Content-Type") == "text/html; charset=koi8-r"


def test_x_accel_charset_names_the_charset_the_body_goes_in(server, origin):
    # The origin's X-Accel-Charset outranks the location: the body is
    # recoded to it, "charset" or not, and the field is not passed on
    # [nginx]. proxy_ignore_headers X-Accel-Charset turns that off.
    def handler(conn, req):
        conn.sendall(response(200, KOI, [("Content-Type", "text/html; charset=koi8-r"),
                                         ("X-Accel-Charset", "windows-1251")], close=True))
        return False

    o = origin(handler)
    s = start(server, KOI_WIN + f"""
        server {{
            listen 127.0.0.1:PORT;
            location /a/ {{ proxy_pass http://{o.addr}/; }}
            location /b/ {{ charset koi8-r; proxy_pass http://{o.addr}/; }}
            location /i/ {{ proxy_pass http://{o.addr}/; proxy_ignore_headers X-Accel-Charset; }}
        }}
        """)
    for path in ("/a/x", "/b/x"):
        r = s.get(path)
        assert r.header("Content-Type") == "text/html; charset=windows-1251", path
        assert r.header("X-Accel-Charset") is None
        assert body_of(r) == b"\xe0\xe1\xfe"
    r = s.get("/i/x")
    assert (r.header("Content-Type"), body_of(r)) == ("text/html; charset=koi8-r", KOI)


def test_utf8_to_8bit_split_sequences_and_references(server, origin):
    # Every byte in its own write, a pause between: UTF-8 sequences
    # arrive split across reads, and the recoded body is the same.
    text = "a" + "абю" * 3 + "é€😀" + "z"

    def handler(conn, req):
        raw = text.encode()
        if req.target == "/bad":
            raw = b"x\xd0" + b"y\xe2\x82"  # cut short mid-body and at the end
        conn.sendall(response(200, b"", [("Content-Type", "text/plain")], close=True, length=False))
        for i in range(len(raw)):
            conn.sendall(raw[i:i + 1])
            time.sleep(0.005)
        return False

    o = origin(handler)
    s = start(server, WIN_UTF + f"""
        server {{
            listen 127.0.0.1:PORT;
            location / {{
                charset windows-1251; source_charset utf-8;
                proxy_pass http://{o.addr}; proxy_buffering off;
            }}
        }}
        """)
    r = s.get("/")
    assert r.header("Content-Type") == "text/plain; charset=windows-1251"
    # What the map lacks becomes an HTML reference (nginx).
    assert body_of(r) == b"a" + WIN * 3 + b"&#233;&#8364;&#128512;z"
    # Ill-formed sequences become "?".
    assert body_of(s.get("/bad")) == b"x?y?"


def test_content_encoding_is_not_recoded(server, origin):
    packed = gzip.compress(KOI * 10)

    def handler(conn, req):
        conn.sendall(response(200, packed, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")],
                              close=True))
        return False

    o = origin(handler)
    s = start(server, KOI_UTF + f"""
        server {{
            listen 127.0.0.1:PORT;
            location /r/ {{ charset utf-8; source_charset koi8-r; proxy_pass http://{o.addr}/; }}
            location /n/ {{ charset utf-8; proxy_pass http://{o.addr}/; }}
        }}
        """)
    # Recoding needed but impossible: no charset named, bytes untouched.
    r = s.get("/r/x")
    assert r.header("Content-Type") == "text/html"
    assert r.header("Content-Length") == str(len(packed)) and r.body == packed
    # No recoding needed: the charset is named.
    r = s.get("/n/x")
    assert r.header("Content-Type") == "text/html; charset=utf-8" and r.body == packed


def test_no_map_at_run_time_is_logged(server):
    s = start(server, KOI_UTF + """
        types { text/html html; }
        server {
            listen 127.0.0.1:PORT;
            root html;
            location / { charset $arg_c; source_charset koi8-r; }
        }
        """, FILES)
    r = s.get("/koi.html?c=iso-8859-5")
    assert r.status == 200
    assert r.header("Content-Type") == "text/html"
    assert r.body == FILES["koi.html"]
    assert 'no "charset_map" between the charsets "koi8-r" and "iso-8859-5"' in s.error_log()
    # A name the variable gives that a map knows recodes.
    r = s.get("/koi.html?c=UTF-8")
    assert r.header("Content-Type") == "text/html; charset=UTF-8"
    assert body_of(r) == b"koi: " + UTF + b"\n"


@pytest.mark.parametrize("http, message", [
    (KOI_UTF + "server { listen 127.0.0.1:PORT; charset windows-1251; source_charset koi8-r; }",
     'no "charset_map" between the charsets "koi8-r" and "windows-1251" in'),
    ("charset_map a b { 100 01; }", 'invalid value "100" in'),
    ("charset_map a utf-8 { C1 D0; }", 'invalid value "D0" in'),
    ("charset_map a utf-8 { C1 F09F9880; }", 'invalid value "F09F9880" in'),
    ("charset_map a b { C1; }", "invalid parameters number in"),
    ("charset_map a A { }", '"charset_map" between the same charsets "a" and "A" in'),
    ("charset_map a b { } charset_map b a { }", 'duplicate "charset_map" between "b" and "a" in'),
    ("charset_map utf-8 a { }", '"utf-8" must be the second charset of "charset_map"'),
    ("charset a; charset b;", '"charset" directive is duplicate in'),
    ("source_charset a; source_charset b;", '"source_charset" directive is duplicate in'),
    ("override_charset maybe;", 'invalid value "maybe"'),
    ("server { listen 127.0.0.1:PORT; charset_map a b { } }", '"charset_map" directive is not allowed here'),
])
def test_config_errors(server, http, message):
    s = server(http, start=False)
    code, err = s.test_config()
    if 'unknown directive "charset' in err:
        pytest.skip("charset_filter module not built")
    assert code != 0
    assert message in err and "gatehouse.conf:" in err, err
