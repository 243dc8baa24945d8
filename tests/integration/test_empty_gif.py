"""empty_gif: a location answering a 1x1 transparent GIF, with HEAD and
conditional requests as for a file."""

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from test_proxy import request

CONF = """
server {
    listen 127.0.0.1:PORT;
    root html;
    location = /pixel.gif { empty_gif; }
    location /t/ {
        empty_gif;
        location /t/inner/ { }
    }
}
"""

LAST_MODIFIED = "Mon, 28 Sep 1970 06:00:00 GMT"


def gif_pixels(data):
    """Reads a GIF89a as the specification lays it out: (width, height,
    the transparent color index or None, the pixels' color indexes)."""
    assert data[:6] == b"GIF89a"
    width = int.from_bytes(data[6:8], "little")
    height = int.from_bytes(data[8:10], "little")
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    transparent = None
    pixels = []
    while True:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            assert pos == len(data) - 1
            return width, height, transparent, pixels
        if kind == 0x21:  # extension: label, sub-blocks
            label, size = data[pos + 1], data[pos + 2]
            if label == 0xF9 and data[pos + 3] & 1:
                transparent = data[pos + 6]
            pos += 3 + size
            while data[pos]:
                pos += 1 + data[pos]
            pos += 1
            continue
        assert kind == 0x2C  # image descriptor, then LZW data in sub-blocks
        assert data[pos + 9] & 0x80 == 0  # no local color table
        pos += 10
        min_size = data[pos]
        pos += 1
        lzw = b""
        while data[pos]:
            lzw += data[pos + 1:pos + 1 + data[pos]]
            pos += 1 + data[pos]
        pos += 1
        pixels += lzw_decode(lzw, min_size)


def lzw_decode(data, min_size):
    clear, end = 1 << min_size, (1 << min_size) + 1
    bits = int.from_bytes(data, "little")
    width, at, out = min_size + 1, 0, []
    table, prev = None, None
    while True:
        code = bits >> at & ((1 << width) - 1)
        at += width
        if code == clear:
            table = [[i] for i in range(clear)] + [None, None]
            width, prev = min_size + 1, None
            continue
        if code == end:
            return out
        entry = table[code] if code < len(table) else table[prev] + table[prev][:1]
        out += entry
        if prev is not None:
            table.append(table[prev] + entry[:1])
            if len(table) == 1 << width and width < 12:
                width += 1
        prev = code


@pytest.fixture
def s(server):
    return server(CONF)


def test_the_image(s):
    r = request(s.port, "/pixel.gif")
    assert r.status == 200
    assert r.header("Content-Type") == "image/gif"
    assert r.header("Content-Length") == str(len(r.body)) == "43"
    assert r.header("Last-Modified") == LAST_MODIFIED
    width, height, transparent, pixels = gif_pixels(r.body)
    assert (width, height) == (1, 1)
    assert transparent is not None and pixels == [transparent]


def test_head(s):
    r = request(s.port, "/pixel.gif", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert r.header("Content-Type") == "image/gif" and r.header("Content-Length") == "43"


def test_other_methods_405(s):
    for method in ("POST", "PUT", "DELETE"):
        assert request(s.port, "/pixel.gif", method=method, body=b"x").status == 405, method


def test_conditional(s):
    r = request(s.port, "/pixel.gif", headers=[("If-Modified-Since", LAST_MODIFIED)])
    assert r.status == 304 and r.body == b""
    r = request(s.port, "/pixel.gif", headers=[("If-Modified-Since", "Tue, 29 Sep 1970 06:00:00 GMT")])
    assert r.status == 200 and len(r.body) == 43
    r = request(s.port, "/pixel.gif", headers=[("If-Unmodified-Since", "Sun, 27 Sep 1970 06:00:00 GMT")])
    assert r.status == 412


def test_range_gets_the_whole_image(s):
    # As from nginx: 43 bytes are not worth cutting.
    whole = request(s.port, "/pixel.gif").body
    r = request(s.port, "/pixel.gif", headers=[("Range", "bytes=0-5")])
    assert (r.status, r.body, r.header("Content-Range"), r.header("Accept-Ranges")) == (200, whole, None, None)


def test_any_uri_of_the_location_and_not_nested_ones(s):
    assert request(s.port, "/t/anything").header("Content-Type") == "image/gif"
    # A nested location does not inherit a content handler (nginx): the
    # static module looks for a file there.
    assert request(s.port, "/t/inner/x.gif").status == 404


@pytest.mark.parametrize("conf, message", [
    ("server { listen 127.0.0.1:PORT; empty_gif; }", '"empty_gif" directive is not allowed here'),
    ("server { listen 127.0.0.1:PORT; location / { empty_gif on; } }",
     'invalid number of arguments in "empty_gif" directive'),
])
def test_config_errors(server, conf, message):
    code, err = server(conf, start=False).test_config()
    assert code != 0 and message in err and "gatehouse.conf:" in err, err
