"""disable_symlinks: a symbolic link in the path of a file the static
module, index, try_files or an "if (-f ...)" looks at is refused ("on"),
or followed only to a file of the link's owner ("if_not_owner"), with
403 as nginx answers; "from=" leaves the first part of the path alone.
"""

import os

import pytest

from gh_server import Server, require_binary

FILES = {
    "file.html": "plain\n",
    "dir/index.html": "index of dir\n",
    "try/fallback.html": "fallback\n",
}

HTTP = """
server {
    listen 127.0.0.1:PORT;
    root html;
    location /off/ { alias html/; }
    location /on/ { alias html/; disable_symlinks on from=$document_root; }
    location /owner/ { alias html/; disable_symlinks if_not_owner from=$document_root; }
    location /whole/ { alias html/; disable_symlinks on; }
    location /try/ { disable_symlinks on from=$document_root; try_files $uri /try/fallback.html; }
    location /if/ {
        alias html/;
        disable_symlinks on from=$document_root;
        if (-f $request_filename) { return 204; }
        return 404;
    }
    # $document_root is the alias, link included.
    location /inside/ { disable_symlinks on from=$document_root; alias html/dirlink/; }
    location /inside-checked/ { disable_symlinks on; alias html/dirlink/; }
}
"""


@pytest.fixture
def gh(tmp_path):
    require_binary()
    s = Server(tmp_path, HTTP, FILES)
    html = s.prefix / "html"
    os.symlink("file.html", html / "link.html")
    os.symlink("dir", html / "dirlink")
    os.symlink("file.html", html / "try" / "link")
    s.start()
    yield s
    s.stop()


def status(s, path):
    return s.get(path).status


def test_off_follows_and_on_refuses_with_403(gh):
    assert gh.get("/off/link.html").body == b"plain\n"
    assert gh.get("/off/dirlink/").body == b"index of dir\n"
    assert status(gh, "/on/file.html") == 200
    assert status(gh, "/on/link.html") == 403
    # The directory's link refuses its index too.
    assert status(gh, "/on/dirlink/index.html") == 403
    assert status(gh, "/on/dirlink/") == 403
    assert status(gh, "/on/missing.html") == 404
    assert 'open() "' in gh.error_log() and '/link.html" failed (40: Too many levels of symbolic links)' in gh.error_log()


def test_if_not_owner_follows_links_to_their_owners_files(gh):
    assert gh.get("/owner/link.html").body == b"plain\n"
    assert gh.get("/owner/dirlink/").body == b"index of dir\n"
    if os.geteuid() != 0:
        return
    html = gh.prefix / "html"
    (html / "theirs.html").write_text("theirs\n")
    os.chown(html / "theirs.html", 65534, 65534)
    os.symlink("theirs.html", html / "theirlink.html")
    assert status(gh, "/owner/theirlink.html") == 403
    assert status(gh, "/owner/theirs.html") == 200
    assert status(gh, "/on/theirs.html") == 200


def test_try_files_and_if_see_a_refused_link_as_missing(gh):
    assert gh.get("/try/link").body == b"fallback\n"
    assert status(gh, "/if/file.html") == 204
    assert status(gh, "/if/link.html") == 404


def test_from_leaves_its_part_unchecked(gh):
    assert gh.get("/inside/index.html").body == b"index of dir\n"
    assert status(gh, "/inside-checked/index.html") == 403


def test_whole_path_checked_without_from(gh):
    html = gh.prefix / "html"
    if os.path.realpath(html) != str(html):
        pytest.skip("the test directory is reached through a link")
    assert status(gh, "/whole/file.html") == 200
    assert status(gh, "/whole/link.html") == 403


@pytest.mark.parametrize("directive,message", [
    ("disable_symlinks maybe;", 'invalid value "maybe"'),
    ("disable_symlinks on to=/x;", 'invalid parameter "to=/x"'),
    ("disable_symlinks off from=/x;", '"from=" cannot be used with "off" parameter'),
    ("disable_symlinks on; disable_symlinks off;", '"disable_symlinks" directive is duplicate'),
])
def test_invalid_configurations(tmp_path, directive, message):
    require_binary()
    s = Server(tmp_path, f"server {{ listen 127.0.0.1:PORT; location / {{ {directive} }} }}\n")
    rc, err = s.test_config()
    assert rc != 0
    assert message in err, err
