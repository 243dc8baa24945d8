"""gzip_static, brotli_static, zstd_static: a precompressed file.gz,
file.br or file.zst sent instead of file, chosen by Accept-Encoding.

The server's html/ holds page.html and its three compressed forms, made
here with Python's gzip, brotli and zstandard; responses are decoded with
the same modules and compared with the original. Raw sockets (gh_server)
so that HEAD and 304 bodies are seen as sent.
"""

import email.utils
import gzip
import os
import shutil

import brotli
import pytest
import zstandard

from gh_server import ROOT, Response, poll, server  # noqa: F401  (server: the fixture)

TEXT = b"".join(b"line %04d of a page that compresses well\n" % i for i in range(400))
OTHER = b"only plain\n"

FILES = {
    "page.html": TEXT,
    "page.html.gz": gzip.compress(TEXT),
    "page.html.br": brotli.compress(TEXT),
    "page.html.zst": zstandard.ZstdCompressor().compress(TEXT),
    "gzonly.txt": TEXT,
    "gzonly.txt.gz": gzip.compress(TEXT),
    "plain.txt": OTHER,
    "dir.gz/x": "a directory named like a compressed file",
    "dir": "file next to dir.gz",
    "denied.txt": TEXT,
    "denied.txt.gz": gzip.compress(TEXT),
}

HTTP = """
include mime.types;
server {
    listen 127.0.0.1:PORT;
    server_name localhost;
    root html;

    location / {
        gzip_static on;
        brotli_static on;
        zstd_static on;
    }
    location = /gzonly.txt {
        gzip_static on;
    }
    location /off/ {
        alias html/;
    }
    location /always/ {
        alias html/;
        gzip_static always;
    }
    location /brgz/ {
        alias html/;
        gzip_static always;
        brotli_static on;
    }
    location /vary/ {
        alias html/;
        gzip_static on;
        gzip_vary on;
    }
    location /varygz/ {
        alias html/;
        gzip_static on;
        gzip_vary on;
        gzip on;
        gzip_types text/plain;
    }
    location /v10/ {
        alias html/;
        gzip_static on;
        gzip_http_version 1.0;
    }
    location /proxied/ {
        alias html/;
        gzip_static on;
        gzip_proxied any;
    }
    location /disable/ {
        alias html/;
        gzip_static on;
        gzip_disable "^curl/" msie6;
    }
    location /noetag/ {
        alias html/;
        gzip_static on;
        etag off;
    }
}
"""


@pytest.fixture
def gh(server):
    s = server(HTTP, FILES, start=False)
    shutil.copy(ROOT / "conf" / "mime.types", s.prefix / "conf" / "mime.types")
    os.chmod(s.prefix / "html" / "denied.txt.gz", 0)
    return s.start()


def get(s, path, ae=None, method="GET", extra=()):
    headers = [("Accept-Encoding", ae)] if ae is not None else []
    return s.get(path, headers + list(extra), method=method)


def decode(coding, body):
    return {"gzip": gzip.decompress, "br": brotli.decompress,
            "zstd": zstandard.ZstdDecompressor().decompress}[coding](body)


def stat_of(s, name):
    return os.stat(s.prefix / "html" / name)


def test_gzip_file_for_a_gzip_client(gh):
    r = get(gh, "/gzonly.txt", "gzip, deflate")
    assert r.status == 200
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Type") == "text/plain"
    assert r.body == FILES["gzonly.txt.gz"]
    assert gzip.decompress(r.body) == TEXT
    assert r.header("Content-Length") == str(len(FILES["gzonly.txt.gz"]))


def test_validators_are_the_compressed_files(gh):
    st = stat_of(gh, "gzonly.txt.gz")
    r = get(gh, "/gzonly.txt", "gzip")
    assert r.header("Last-Modified") == email.utils.formatdate(int(st.st_mtime), usegmt=True)
    assert r.header("ETag") == '"%x-%x"' % (int(st.st_mtime), st.st_size)
    r = get(gh, "/noetag/gzonly.txt", "gzip")
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("ETag") is None


def test_no_accept_encoding_gets_the_original(gh):
    r = get(gh, "/gzonly.txt")
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT
    r = get(gh, "/gzonly.txt", "br, deflate")
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT


@pytest.mark.parametrize("ae", ["gzip;q=0", "gzip; q=0", "gzip;q=0.000", "gzip;q=bad", "identity;q=0",
                                "*;q=0", "gzip;q=0, *"])
def test_refused_gzip_gets_the_original(gh, ae):
    r = get(gh, "/gzonly.txt", ae)
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT


@pytest.mark.parametrize("ae", ["gzip;q=0.5", "GZIP", "x-gzip", "*", "identity;q=0, gzip;q=0.001"])
def test_accepted_gzip(gh, ae):
    r = get(gh, "/gzonly.txt", ae)
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == TEXT


@pytest.mark.parametrize("ae,coding", [
    ("gzip, br, zstd", "zstd"),          # a tie: zstd, br, gzip
    ("gzip, br", "br"),
    ("gzip", "gzip"),
    ("gzip;q=1, br;q=0.5, zstd;q=0.4", "gzip"),
    ("br;q=0.9, zstd;q=0.8, gzip", "gzip"),
    ("zstd;q=0, br;q=0, gzip;q=0.1", "gzip"),
    ("zstd;q=0, *", "br"),
    ("br;q=1, zstd;q=0.999", "br"),
])
def test_choice_by_preference(gh, ae, coding):
    r = get(gh, "/page.html", ae)
    assert r.status == 200
    assert r.header("Content-Encoding") == coding
    assert r.header("Content-Type") == "text/html"
    assert r.body == FILES["page.html." + {"gzip": "gz", "br": "br", "zstd": "zst"}[coding]]
    assert decode(coding, r.body) == TEXT


def test_compression_order_breaks_ties(server):
    http = HTTP.replace("zstd_static on;\n    }", "zstd_static on;\n        compression_order gzip br;\n    }", 1)
    assert http != HTTP
    s = server(http, FILES, start=False)
    shutil.copy(ROOT / "conf" / "mime.types", s.prefix / "conf" / "mime.types")
    s.start()
    r = get(s, "/page.html", "zstd, br, gzip")
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == FILES["page.html.gz"]
    os.unlink(s.prefix / "html" / "page.html.gz")
    r = get(s, "/page.html", "zstd, br, gzip")
    assert r.header("Content-Encoding") == "br"
    assert r.body == FILES["page.html.br"]


def test_preferred_file_missing_falls_to_the_next(gh):
    os.unlink(gh.prefix / "html" / "page.html.zst")
    r = get(gh, "/page.html", "zstd, gzip;q=0.5, br;q=0.4")
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == TEXT


def test_no_compressed_file_serves_the_original(gh):
    r = get(gh, "/plain.txt", "gzip, br, zstd")
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.body == OTHER


def test_off_by_default(gh):
    r = get(gh, "/off/gzonly.txt", "gzip")
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT


def test_always_ignores_accept_encoding(gh):
    for ae in (None, "identity", "gzip;q=0", "br"):
        r = get(gh, "/always/gzonly.txt", ae)
        assert r.status == 200
        assert r.header("Content-Encoding") == "gzip"
        assert r.body == FILES["gzonly.txt.gz"]
    # No .gz: the original, whatever "always" says.
    r = get(gh, "/always/plain.txt")
    assert r.header("Content-Encoding") is None
    assert r.body == OTHER


def test_accepted_coding_before_always(gh):
    r = get(gh, "/brgz/page.html", "br")
    assert r.header("Content-Encoding") == "br"
    assert brotli.decompress(r.body) == TEXT
    r = get(gh, "/brgz/page.html", "deflate")
    assert r.header("Content-Encoding") == "gzip"
    assert gzip.decompress(r.body) == TEXT


def test_head_has_the_head_and_no_body(gh):
    raw = gh.raw(gh.request_bytes("/gzonly.txt", [("Accept-Encoding", "gzip")], method="HEAD"))
    r = Response(raw)
    assert r.body == b""
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Length") == str(len(FILES["gzonly.txt.gz"]))


def test_range_cuts_the_compressed_bytes(gh):
    gz = FILES["gzonly.txt.gz"]
    r = get(gh, "/gzonly.txt", "gzip", extra=[("Range", "bytes=0-9")])
    assert r.status == 206
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Range") == "bytes 0-9/%d" % len(gz)
    assert r.body == gz[:10]
    r = get(gh, "/gzonly.txt", "gzip", extra=[("Range", "bytes=-5")])
    assert r.status == 206
    assert r.body == gz[-5:]


def test_conditional_request_on_the_compressed_variant(gh):
    etag = get(gh, "/gzonly.txt", "gzip").header("ETag")
    r = get(gh, "/gzonly.txt", "gzip", extra=[("If-None-Match", etag)])
    assert r.status == 304
    assert r.body == b""
    assert r.header("ETag") == etag
    # The original's validators differ: the same tag does not match it.
    r = get(gh, "/gzonly.txt", None, extra=[("If-None-Match", etag)])
    assert r.status == 200
    assert r.body == TEXT


def test_a_directory_named_file_gz_is_not_sent(gh):
    r = get(gh, "/dir", "gzip")
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.body == b"file next to dir.gz"


def test_unreadable_compressed_file_is_403(gh):
    r = get(gh, "/denied.txt", "gzip")
    assert r.status == 403
    assert poll(lambda: "denied.txt.gz\" failed (13: Permission denied)" in gh.error_log())


def test_post_and_directories_are_not_ours(gh):
    r = get(gh, "/gzonly.txt", "gzip", method="POST")
    assert r.status == 405
    r = get(gh, "/", "gzip")
    assert r.status == 403  # no index.html: the static module answers


def test_bad_value_is_emerg(server):
    s = server("server { listen 127.0.0.1:PORT; gzip_static maybe; }", start=False)
    rc, err = s.test_config()
    assert rc == 1
    assert 'invalid value "maybe"' in err
    assert "gatehouse.conf:" in err


def test_http10_and_via_get_the_original(gh):
    """nginx's defaults: gzip_http_version 1.1, gzip_proxied off (a
    request through a proxy gets no compressed variant)."""
    raw = gh.raw(b"GET /gzonly.txt HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n")
    r = Response(raw)
    assert r.status == 200
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT
    r = get(gh, "/page.html", "gzip, br, zstd", extra=[("Via", "1.1 cache.example")])
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT
    # "always" does not ask.
    raw = gh.raw(b"GET /always/gzonly.txt HTTP/1.0\r\nHost: localhost\r\n\r\n")
    r = Response(raw)
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == FILES["gzonly.txt.gz"]


def test_gzip_vary_when_the_gz_exists(gh):
    """nginx: gzip_vary marks the answer once a .gz exists, whether the
    client got it or the original."""
    r = get(gh, "/vary/gzonly.txt", "gzip")
    assert r.header("Content-Encoding") == "gzip"
    assert r.all("Vary") == ["Accept-Encoding"]
    r = get(gh, "/vary/gzonly.txt")
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT
    assert r.all("Vary") == ["Accept-Encoding"]
    r = get(gh, "/vary/plain.txt", "gzip")
    assert r.body == OTHER
    assert r.all("Vary") == []
    # gzip_vary off (the default): none.
    assert get(gh, "/gzonly.txt", "gzip").all("Vary") == []


def test_gzip_vary_once_with_the_gzip_filter(gh):
    r = get(gh, "/varygz/gzonly.txt", "gzip")
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == FILES["gzonly.txt.gz"]
    assert r.all("Vary") == ["Accept-Encoding"]
    r = get(gh, "/varygz/gzonly.txt")
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT
    assert r.all("Vary") == ["Accept-Encoding"]


def test_gzip_http_version_10(gh):
    raw = gh.raw(b"GET /v10/gzonly.txt HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n")
    r = Response(raw)
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == FILES["gzonly.txt.gz"]


def test_gzip_proxied_any_and_off_with_via(gh):
    via = [("Via", "1.1 cache.example")]
    r = get(gh, "/proxied/gzonly.txt", "gzip", extra=via)
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == FILES["gzonly.txt.gz"]
    r = get(gh, "/off/gzonly.txt", "gzip", extra=via)  # gzip_static off
    assert r.header("Content-Encoding") is None
    r = get(gh, "/gzonly.txt", "gzip", extra=via)  # gzip_proxied off
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT


def test_gzip_disable(gh):
    r = get(gh, "/disable/gzonly.txt", "gzip", extra=[("User-Agent", "curl/8.0")])
    assert r.header("Content-Encoding") is None
    assert r.body == TEXT
    r = get(gh, "/disable/gzonly.txt", "gzip",
            extra=[("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.0)")])
    assert r.header("Content-Encoding") is None
    r = get(gh, "/disable/gzonly.txt", "gzip", extra=[("User-Agent", "Mozilla/5.0")])
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == FILES["gzonly.txt.gz"]
