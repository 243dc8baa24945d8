"""random_index: a URI ending in "/" gets a regular file of its directory,
chosen at random; hidden files, directories and what links to them are
never chosen."""

import os

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from test_proxy import request

CONF = """
server {
    listen 127.0.0.1:PORT;
    root html;
    location /r/ {
        random_index on;
        location /r/off/ { random_index off; }
    }
    location ~ ^/q/.*\\.txt$ { return 200 "$uri?$args"; }
    location /q/ { random_index on; }
    location /plain/ { }
}
"""

FILES = {
    "r/a.txt": "A",
    "r/b.txt": "B",
    "r/c.txt": "C",
    "r/.hidden": "hidden",
    "r/sub/inner.txt": "inner",
    "r/off/index.html": "index of off\n",
    "r/off/x.txt": "x",
    "r/nofile/.only-hidden": "h",
    "q/one.txt": "1",
    "plain/a.txt": "a",
    "plain/index.html": "plain index\n",
}


@pytest.fixture
def s(server):
    srv = server(CONF, FILES)
    html = srv.prefix / "html"
    (html / "r/nofile/subdir").mkdir()
    os.symlink(html / "r/sub", html / "r/nofile/dir-link")
    os.symlink(html / "r/nofile/missing", html / "r/nofile/broken-link")
    return srv


def test_each_file_is_served_and_nothing_else(s):
    seen = {}
    for _ in range(60):  # each of 3 files missing from 60 draws: (2/3)^60
        r = request(s.port, "/r/")
        assert r.status == 200, r.status
        seen[r.body] = seen.get(r.body, 0) + 1
    assert set(seen) == {b"A", b"B", b"C"}, seen


def test_the_file_goes_through_its_own_location_with_the_arguments(s):
    r = request(s.port, "/q/?k=v")
    assert r.status == 200 and r.body == b"/q/one.txt?k=v"


def test_no_candidate_is_left_to_the_index_module(s):
    # /r/nofile/ holds a hidden file, a directory, a link to a directory
    # and a link to nothing: no index.html either, so 403 as nginx.
    assert request(s.port, "/r/nofile/").status == 403


def test_a_link_to_a_file_is_a_candidate(s):
    html = s.prefix / "html"
    os.symlink(html / "plain/a.txt", html / "r/nofile/file-link")
    r = request(s.port, "/r/nofile/")
    assert r.status == 200 and r.body == b"a"


def test_off_and_other_locations_use_the_index(s):
    assert request(s.port, "/r/off/").body == b"index of off\n"
    assert request(s.port, "/plain/").body == b"plain index\n"


def test_missing_directory_is_404(s):
    assert request(s.port, "/r/none/").status == 404
    assert 'opendir() "' in s.error_log() and "/r/none/\" failed (2: No such file or directory)" in s.error_log()


def test_methods(s):
    assert request(s.port, "/r/", method="HEAD").status == 200
    # Other methods are not its business: the static module refuses them.
    assert request(s.port, "/r/", method="DELETE").status == 405


def test_only_in_a_location(server):
    code, err = server("server { listen 127.0.0.1:PORT; random_index on; }", start=False).test_config()
    assert code != 0 and '"random_index" directive is not allowed here' in err, err
    code, err = server("server { listen 127.0.0.1:PORT; location / { random_index maybe; } }",
                       start=False).test_config()
    assert code != 0 and "random_index" in err and "gatehouse.conf:" in err, err
