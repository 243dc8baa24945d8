"""Static files: root, alias, index, try_files, types, conditional requests
and byte ranges, as a client sees them.

Each test starts a real gatehouse (gh_server.py) over a prefix whose html/
holds the files below, with the shipped conf/mime.types included, and
speaks HTTP with http.client (raw bytes where the test is about what is
*not* sent: HEAD and 304 bodies).
"""

import email.utils
import http.client
import os
import shutil

import pytest

from gh_server import ROOT, Server, require_binary

BIG = bytes(range(256)) * 40  # 10240 bytes, every byte value

FILES = {
    "index.html": "<h1>home</h1>\n",
    "hello.txt": "hello, world\n",
    "big.bin": BIG,
    "IMAGE.PNG": b"\x89PNG fake",
    "data.unknownext": "?",
    "empty.txt": "",
    "sub/index.html": "sub index\n",
    "t404/sub/index.html": "t404 sub index\n",
    "noindex/file.txt": "in noindex\n",
    "custom/start.htm": "custom index\n",
    "other/a.txt": "aliased a\n",
    "other/deep/b.txt": "aliased b\n",
    "fallback.html": "fallback\n",
    "secret.txt": "must not leak\n",
    "images/pic.gif": "GIF89a",
    "dl/file.html": "<p>download me</p>",
}

HTTP = """
include mime.types;
default_type application/octet-stream;
server {
    listen 127.0.0.1:PORT;
    server_name localhost;
    root html;

    location /custom/ {
        index missing.html start.htm;
    }
    location /a/ {
        alias HTML/other/;
    }
    # The off-by-slash alias: "/img../secret.txt" must not reach html/.
    location /img {
        alias HTML/images/;
    }
    location /t/ {
        try_files $uri /fallback.html;
    }
    location /t404/ {
        try_files $uri $uri/ =404;
    }
    location /dl/ {
        types { }
        default_type application/x-download;
    }
    location ~ ^/re/(.+)$ {
        alias HTML/other/$1;
        add_header X-File $request_filename;
        add_header X-Root $document_root;
    }
    location /named/ {
        try_files $uri @fallback;
    }
    location @fallback {
        return 200 "named fallback\n";
    }
    location /two/ {
        alias HTML/;
        max_ranges 2;
    }
    location /plain/ {
        alias HTML/;
        etag off;
        max_ranges 0;
        if_modified_since before;
    }
}
"""


@pytest.fixture
def gh(tmp_path):
    """The started server for these files and HTTP."""
    require_binary()
    html = tmp_path / "gh" / "html"
    s = Server(tmp_path, HTTP.replace("HTML", str(html)), FILES)
    shutil.copy(ROOT / "conf" / "mime.types", s.prefix / "conf" / "mime.types")
    s.start()
    yield s
    s.stop()


def fetch(s, path, headers=None, method="GET"):
    """(status, headers as a dict with lower-case names, body)."""
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def stat_of(s, name):
    return os.stat(s.prefix / "html" / name)


def etag_of(s, name):
    st = stat_of(s, name)
    return '"%x-%x"' % (int(st.st_mtime), st.st_size)


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


# ---- plain GET, HEAD and types -------------------------------------------------


def test_file_with_validators(gh):
    status, h, body = fetch(gh, "/hello.txt")
    assert status == 200
    assert body == b"hello, world\n"
    assert h["content-type"] == "text/plain"
    assert h["content-length"] == "13"
    st = stat_of(gh, "hello.txt")
    assert h["last-modified"] == http_date(int(st.st_mtime))
    assert h["etag"] == etag_of(gh, "hello.txt")
    assert h["accept-ranges"] == "bytes"


def test_binary_file_intact(gh):
    status, h, body = fetch(gh, "/big.bin")
    assert status == 200
    assert body == BIG
    assert h["content-type"] == "application/octet-stream"


def test_empty_file(gh):
    status, h, body = fetch(gh, "/empty.txt")
    assert status == 200
    assert h["content-length"] == "0"
    assert body == b""


def test_head_sends_no_body(gh):
    raw = gh.raw(Server.request_bytes("/hello.txt", method="HEAD"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 13" in head
    assert rest == b""


def test_types_are_case_insensitive_and_default_type_applies(gh):
    assert fetch(gh, "/IMAGE.PNG")[1]["content-type"] == "image/png"
    assert fetch(gh, "/data.unknownext")[1]["content-type"] == "application/octet-stream"
    assert fetch(gh, "/index.html")[1]["content-type"] == "text/html"


def test_empty_types_block_and_location_default_type(gh):
    status, h, body = fetch(gh, "/dl/file.html")
    assert status == 200
    assert h["content-type"] == "application/x-download"


def test_methods(gh):
    assert fetch(gh, "/hello.txt", method="POST")[0] == 405
    assert fetch(gh, "/nothing-here", method="POST")[0] == 404
    assert fetch(gh, "/hello.txt", method="PUT")[0] == 405
    assert fetch(gh, "/hello.txt", method="DELETE")[0] == 405


# ---- errors and directories ---------------------------------------------------


def test_missing_file_is_404_and_logged(gh):
    status, _, _ = fetch(gh, "/nothing-here.txt")
    assert status == 404
    path = gh.prefix / "html" / "nothing-here.txt"
    want = f'open() "{path}" failed (2: No such file or directory)'
    assert want in gh.error_log()


def test_file_as_directory_is_404(gh):
    assert fetch(gh, "/hello.txt/x")[0] == 404


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_403_and_logged(gh):
    p = gh.prefix / "html" / "hello.txt"
    os.chmod(p, 0)
    try:
        assert fetch(gh, "/hello.txt")[0] == 403
    finally:
        os.chmod(p, 0o644)
    assert f'open() "{p}" failed (13: Permission denied)' in gh.error_log()


def test_index_for_slash(gh):
    status, h, body = fetch(gh, "/")
    assert status == 200
    assert body == b"<h1>home</h1>\n"
    assert h["content-type"] == "text/html"
    assert fetch(gh, "/sub/")[2] == b"sub index\n"


def test_index_list_takes_the_first_existing(gh):
    status, _, body = fetch(gh, "/custom/")
    assert status == 200
    assert body == b"custom index\n"


def test_directory_without_index_is_403(gh):
    status, _, _ = fetch(gh, "/noindex/")
    assert status == 403
    assert f'directory index of "{gh.prefix}/html/noindex/" is forbidden' in gh.error_log()


def test_missing_directory_is_404(gh):
    assert fetch(gh, "/no-such-dir/")[0] == 404
    assert f'"{gh.prefix}/html/no-such-dir/index.html" is not found' in gh.error_log()


def test_directory_without_slash_redirects(gh):
    status, h, _ = fetch(gh, "/sub")
    assert status == 301
    assert h["location"].endswith("/sub/")
    status, h, _ = fetch(gh, "/sub?a=1")
    assert status == 301
    assert h["location"].endswith("/sub/?a=1")


# ---- alias and try_files ----------------------------------------------------------


def test_alias_replaces_the_location(gh):
    assert fetch(gh, "/a/a.txt")[2] == b"aliased a\n"
    assert fetch(gh, "/a/deep/b.txt")[2] == b"aliased b\n"
    assert fetch(gh, "/a/missing.txt")[0] == 404


def test_alias_without_slash_does_not_escape(gh):
    assert fetch(gh, "/img/pic.gif")[2] == b"GIF89a"
    status, _, body = fetch(gh, "/img../secret.txt")
    assert status == 404
    assert b"must not leak" not in body


def test_try_files_falls_back_to_uri(gh):
    status, h, body = fetch(gh, "/t/nothing")
    assert status == 200
    assert body == b"fallback\n"
    assert h["content-type"] == "text/html"


def test_alias_in_regex_location_uses_captures(gh):
    status, h, body = fetch(gh, "/re/deep/b.txt")
    assert status == 200
    assert body == b"aliased b\n"
    assert h["x-file"] == f"{gh.prefix}/html/other/deep/b.txt"
    assert h["x-root"] == f"{gh.prefix}/html/other/deep/b.txt"


def test_try_files_named_location(gh):
    assert fetch(gh, "/named/nothing")[2] == b"named fallback\n"


def test_try_files_code(gh):
    assert fetch(gh, "/t404/nothing")[0] == 404


def test_try_files_directory_entry_redirects_to_its_slash(gh):
    # "$uri/" matching a directory continues with the directory's URI
    # without the slash [nginx]: "/t404/sub" gets the 301 to "/t404/sub/",
    # which then serves its index.
    status, h, _ = fetch(gh, "/t404/sub")
    assert (status, h["location"]) == (301, f"http://127.0.0.1:{gh.port}/t404/sub/")
    status, _, body = fetch(gh, "/t404/sub/")
    assert (status, body) == (200, b"t404 sub index\n")


# ---- conditional requests ---------------------------------------------------------


def test_if_none_match_gives_304_without_body(gh):
    etag = etag_of(gh, "hello.txt")
    status, h, _ = fetch(gh, "/hello.txt", {"If-None-Match": etag})
    assert status == 304
    assert h["etag"] == etag
    assert "content-length" not in h
    raw = gh.raw(Server.request_bytes("/hello.txt", [("If-None-Match", f'"x", {etag}')]))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 304")
    assert rest == b""
    assert fetch(gh, "/hello.txt", {"If-None-Match": '"other"'})[0] == 200


def test_if_modified_since(gh):
    lm = int(stat_of(gh, "hello.txt").st_mtime)
    assert fetch(gh, "/hello.txt", {"If-Modified-Since": http_date(lm)})[0] == 304
    assert fetch(gh, "/hello.txt", {"If-Modified-Since": http_date(lm - 10)})[0] == 200
    # "exact" (the default): a later date is not a match.
    assert fetch(gh, "/hello.txt", {"If-Modified-Since": http_date(lm + 10)})[0] == 200
    # "before": it is.
    assert fetch(gh, "/plain/hello.txt", {"If-Modified-Since": http_date(lm + 10)})[0] == 304


def test_if_match_and_if_unmodified_since_fail_with_412(gh):
    etag = etag_of(gh, "hello.txt")
    lm = int(stat_of(gh, "hello.txt").st_mtime)
    assert fetch(gh, "/hello.txt", {"If-Match": etag})[0] == 200
    status, _, body = fetch(gh, "/hello.txt", {"If-Match": '"nope"'})
    assert status == 412
    assert b"hello" not in body
    assert fetch(gh, "/hello.txt", {"If-Unmodified-Since": http_date(lm - 10)})[0] == 412
    assert fetch(gh, "/hello.txt", {"If-Unmodified-Since": http_date(lm)})[0] == 200


def test_etag_off(gh):
    status, h, _ = fetch(gh, "/plain/hello.txt")
    assert status == 200
    assert "etag" not in h
    assert "last-modified" in h


# ---- ranges ---------------------------------------------------------------------


def test_single_range(gh):
    status, h, body = fetch(gh, "/big.bin", {"Range": "bytes=10-19"})
    assert status == 206
    assert body == BIG[10:20]
    assert h["content-range"] == f"bytes 10-19/{len(BIG)}"
    assert h["content-length"] == "10"


def test_suffix_and_open_ranges(gh):
    status, h, body = fetch(gh, "/big.bin", {"Range": "bytes=-10"})
    assert status == 206
    assert body == BIG[-10:]
    assert h["content-range"] == f"bytes {len(BIG) - 10}-{len(BIG) - 1}/{len(BIG)}"
    status, h, body = fetch(gh, "/big.bin", {"Range": "bytes=5-"})
    assert status == 206
    assert body == BIG[5:]
    assert h["content-range"] == f"bytes 5-{len(BIG) - 1}/{len(BIG)}"


def test_unsatisfiable_range_is_416(gh):
    status, h, body = fetch(gh, "/big.bin", {"Range": f"bytes={len(BIG)}-"})
    assert status == 416
    assert h["content-range"] == f"bytes */{len(BIG)}"
    assert BIG[:10] not in body


def multipart_parts(h, body):
    """[(part fields, part bytes)] of a multipart/byteranges body, checked
    against RFC 2046's framing and the response's Content-Length."""
    ctype = h["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary="), ctype
    boundary = ctype.split("=", 1)[1].encode()
    assert int(h["content-length"]) == len(body)
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    chunks = body[:-len(boundary) - 8].split(b"\r\n--" + boundary + b"\r\n")
    assert chunks[0] == b""
    parts = []
    for c in chunks[1:]:
        head, _, data = c.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((fields, data))
    return parts


def test_multiple_ranges_are_a_multipart_answer(gh):
    n = len(BIG)
    status, h, body = fetch(gh, "/big.bin", {"Range": f"bytes=0-1, -3, {n}-, 5-6"})
    assert status == 206
    assert "content-range" not in h
    # In ascending order (RFC 9110 15.3.7.2 allows it): cut as the file streams.
    parts = multipart_parts(h, body)
    assert [(f["Content-Range"], d) for f, d in parts] == [
        (f"bytes 0-1/{n}", BIG[0:2]), (f"bytes 5-6/{n}", BIG[5:7]), (f"bytes {n - 3}-{n - 1}/{n}", BIG[-3:])]
    assert all(f["Content-Type"] == "application/octet-stream" for f, _ in parts)
    # Overlapping ranges merge into one part; merged into one range, a plain 206.
    status, h, body = fetch(gh, "/big.bin", {"Range": "bytes=10-19,0-4,15-29"})
    parts = multipart_parts(h, body)
    assert [(f["Content-Range"], d) for f, d in parts] == [
        (f"bytes 0-4/{n}", BIG[0:5]), (f"bytes 10-29/{n}", BIG[10:30])]
    status, h, body = fetch(gh, "/big.bin", {"Range": "bytes=10-19,5-14"})
    assert (status, h["content-range"], body) == (206, f"bytes 5-19/{n}", BIG[5:20])
    # HEAD: the same head, no body.
    raw = gh.raw(Server.request_bytes("/big.bin", [("Range", "bytes=0-1,5-6")], method="HEAD"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206") and b"multipart/byteranges; boundary=" in head and rest == b""
    # More bytes than the file, overlaps included: the whole file instead.
    status, h, body = fetch(gh, "/big.bin", {"Range": f"bytes=0-{n - 1},0-0"})
    assert (status, body) == (200, BIG)


def test_max_ranges_caps_the_parts(gh):
    status, h, body = fetch(gh, "/two/big.bin", {"Range": "bytes=0-1,5-6"})
    assert status == 206 and len(multipart_parts(h, body)) == 2
    status, h, body = fetch(gh, "/two/big.bin", {"Range": "bytes=0-1,5-6,9-9"})
    assert (status, body) == (200, BIG)


def test_if_range(gh):
    etag = etag_of(gh, "big.bin")
    assert fetch(gh, "/big.bin", {"Range": "bytes=0-0", "If-Range": etag})[0] == 206
    status, _, body = fetch(gh, "/big.bin", {"Range": "bytes=0-0", "If-Range": '"stale"'})
    assert status == 200
    assert body == BIG


def test_range_with_head_and_not_modified(gh):
    raw = gh.raw(Server.request_bytes("/big.bin", [("Range", "bytes=0-9")], method="HEAD"))
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert rest == b""
    etag = etag_of(gh, "big.bin")
    assert fetch(gh, "/big.bin", {"Range": "bytes=0-9", "If-None-Match": etag})[0] == 304


def test_max_ranges_zero_disables_ranges(gh):
    status, h, body = fetch(gh, "/plain/big.bin", {"Range": "bytes=0-9"})
    assert status == 200
    assert body == BIG
    assert "accept-ranges" not in h


def test_bad_config_is_refused(tmp_path):
    require_binary()
    s = Server(tmp_path, """
server {
    listen 127.0.0.1:PORT;
    location / { root /a; alias /b; }
}
""")
    rc, err = s.test_config()
    assert rc != 0
    assert '"alias" directive is duplicate, "root" directive was specified earlier' in err


def test_duplicate_extension_warns_and_last_wins(tmp_path):
    require_binary()
    s = Server(tmp_path, """
types { text/html html; text/x-last html; }
server { listen 127.0.0.1:PORT; }
""", {"page.html": "x"})
    rc, err = s.test_config()
    assert rc == 0
    assert ('duplicate extension "html", content type: "text/x-last", '
            'previous content type: "text/html"') in err
    s.start()
    try:
        assert fetch(s, "/page.html")[1]["content-type"] == "text/x-last"
    finally:
        s.stop()


def test_read_ahead_serves_files_as_before(tmp_path):
    # posix_fadvise() changes how the kernel reads, not what is sent.
    require_binary()
    s = Server(tmp_path, "server { listen 127.0.0.1:PORT; root html; read_ahead 512k; }\n", FILES)
    s.start()
    try:
        status, _, body = fetch(s, "/big.bin")
        assert (status, body) == (200, BIG)
    finally:
        s.stop()
