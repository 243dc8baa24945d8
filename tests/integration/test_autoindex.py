"""autoindex: a directory's listing as nginx writes it (HTML, XML, JSON,
JSONP), what is listed and how, and the statuses around it."""

import json
import os
import re
import time

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from test_proxy import request

FILES = {
    "d/a.txt": "x" * 42,
    "d/b-big.bin": b"y" * 20000,
    "d/.hidden": "h",
    "d/sub/inner.txt": "i",
    "d/q?&<>%.txt": "q",
    "d/col:on": "c",
    "d/" + "L" * 60: "l",
    "u/" + "\u0444" * 60: "u",
    "idx/index.html": "index wins\n",
}

CONF = """
server {
    listen 127.0.0.1:PORT;
    root html;
    autoindex on;
    location /x/ { alias html/d/; autoindex_format xml; }
    location /j/ { alias html/d/; autoindex_format json; }
    location /p/ { alias html/d/; autoindex_format jsonp; }
    location /h/ { alias html/d/; autoindex_exact_size off; }
    location /u/ { charset utf-8; }
    location /off/ { alias html/d/; autoindex off; }
}
"""


@pytest.fixture
def s(server):
    srv = server(CONF, FILES)
    # Known times, so the date columns can be checked.
    for root, dirs, files in os.walk(srv.prefix / "html"):
        for n in dirs + files:
            os.utime(os.path.join(root, n), (1700000000, 1700000000))
    return srv


def lines_of(body):
    return body.decode("utf-8").split("\r\n")


def test_html_listing(s):
    r = request(s.port, "/d/")
    assert r.status == 200 and r.header("Content-Type") == "text/html"
    # No length: the page follows its head, chunked [nginx].
    assert r.header("Content-Length") is None and r.header("Transfer-Encoding") == "chunked"
    lines = lines_of(r.body)
    assert lines[:4] == ["<html>", "<head><title>Index of /d/</title></head>", "<body>",
                         '<h1>Index of /d/</h1><hr><pre><a href="../">../</a>']
    assert lines[-3:] == ["</pre><hr></body>", "</html>", ""]
    entries = lines[4:-3]
    # Directories first, then names in byte order; no hidden files.
    hrefs = [re.match(r'<a href="([^"]*)">', e).group(1) for e in entries]
    assert hrefs == ["sub/", "L" * 60, "a.txt", "b-big.bin", "./col:on", "q%3F%26%3C%3E%25.txt"]
    date = time.strftime("%d-%b-%Y %H:%M", time.gmtime(1700000000))
    assert entries[0] == '<a href="sub/">sub/</a>' + " " * 46 + " " + date + " " + " " * 18 + "-"
    assert entries[2] == '<a href="a.txt">a.txt</a>' + " " * 45 + " " + date + " " + "42".rjust(19)
    # Longer than 50: cut to 47 and "..>"; the text is escaped after the cut.
    assert entries[1] == f'<a href="{"L" * 60}">{"L" * 47}..&gt;</a> {date} ' + "1".rjust(19)
    assert entries[5].startswith('<a href="q%3F%26%3C%3E%25.txt">q?&amp;&lt;&gt;%.txt</a>')


def test_human_sizes_and_utf8_names(s):
    entries = lines_of(request(s.port, "/h/").body)[4:-3]
    assert entries[3].endswith("   20K")  # 20000 bytes: 19.5 KiB, rounded
    assert entries[2].endswith("     42")
    assert entries[0].endswith("      -")
    # With "charset utf-8", names are cut by characters, not bytes.
    r = request(s.port, "/u/")
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert ("\u0444" * 47 + "..&gt;</a>") in r.body.decode("utf-8")


def test_xml_json_and_jsonp(s):
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1700000000))
    r = request(s.port, "/x/")
    assert r.header("Content-Type") == "text/xml; charset=utf-8"
    body = r.body.decode()
    assert body.startswith('<?xml version="1.0"?>\r\n<list>\r\n<directory mtime="' + iso + '">sub</directory>\r\n')
    assert f'<file mtime="{iso}" size="42">a.txt</file>' in body
    assert '>q?&amp;&lt;&gt;%.txt</file>' in body and body.endswith("</list>\r\n")

    r = request(s.port, "/j/")
    assert r.header("Content-Type") == "application/json; charset=utf-8"
    listing = json.loads(r.body)
    assert listing[0] == {"name": "sub", "type": "directory", "mtime": "Tue, 14 Nov 2023 22:13:20 GMT"}
    assert {"name": "a.txt", "type": "file", "mtime": "Tue, 14 Nov 2023 22:13:20 GMT", "size": 42} in listing

    r = request(s.port, "/p/?callback=cb.x_1")
    assert r.header("Content-Type") == "application/javascript; charset=utf-8"
    assert r.body.startswith(b"cb.x_1([") and r.body.endswith(b"]\r\n);\r\n")
    assert json.loads(r.body[len(b"cb.x_1("):-len(b");\r\n")]) == listing
    assert json.loads(request(s.port, "/p/").body) == listing
    assert request(s.port, "/p/?callback=alert(1)").status == 400


def test_what_the_listing_leaves_to_others(s):
    # An index file wins; off, a directory is 403; no directory, 404; a
    # file is the file; HEAD gets the head alone; other methods get the
    # 403 of a directory without an index [nginx].
    assert request(s.port, "/idx/").body == b"index wins\n"
    assert request(s.port, "/off/").status == 403
    assert request(s.port, "/nothere/").status == 404
    assert request(s.port, "/d/a.txt").body == b"x" * 42
    r = request(s.port, "/d/", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert request(s.port, "/d/", method="POST").status == 403
    # The index module looked first, and said so [nginx].
    assert 'nothere/index.html" is not found (2: No such file or directory)' in s.error_log()


@pytest.mark.parametrize("line, message", [
    ("autoindex maybe;", 'invalid value "maybe"'),
    ("autoindex_format yaml;", 'invalid value "yaml"'),
])
def test_config_errors(server, line, message):
    s = server("server { listen 127.0.0.1:PORT; " + line + " }", start=False)
    code, err = s.test_config()
    assert code != 0 and message in err, err
