"""secure_link, secure_link_md5 and secure_link_secret, with $secure_link
used as nginx's documentation uses it: 403 for a bad link, 410 for an
expired one."""

import base64
import hashlib
import time

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from test_proxy import request

CONF = """
server {
    listen 127.0.0.1:PORT;
    root html;
    location /s/ {
        secure_link $arg_md5,$arg_expires;
        secure_link_md5 "$secure_link_expires$uri$remote_addr secret";
        if ($secure_link = "") { return 403; }
        if ($secure_link = "0") { return 410; }
        add_header X-Expires "[$secure_link_expires]";
    }
    location /forever/ {
        secure_link $arg_md5;
        secure_link_md5 "secret$uri";
        if ($secure_link = "") { return 403; }
    }
    location /p/ {
        secure_link_secret secret;
        if ($secure_link = "") { return 403; }
        rewrite ^ /secure/$secure_link;
    }
    location /secure/ { internal; }
    location /show/ {
        secure_link $arg_md5,$arg_expires;
        secure_link_md5 "$secure_link_expires$uri$remote_addr secret";
        return 200 "[$secure_link][$secure_link_expires]";
    }
    location /none/ { return 200 "[$secure_link][$secure_link_expires]"; }
}
"""

FILES = {
    "s/file.txt": "protected\n",
    "forever/file.txt": "forever\n",
    "secure/link.txt": "secret mode\n",
}


def md5_b64url(text, pad=False):
    b = base64.urlsafe_b64encode(hashlib.md5(text.encode()).digest()).decode()
    return b if pad else b.rstrip("=")


def link(path, expires, client="127.0.0.1"):
    return f"{path}?md5={md5_b64url(f'{expires}{path}{client} secret')}&expires={expires}"


@pytest.fixture
def s(server):
    return server(CONF, FILES)


def test_valid_link_with_expiry(s):
    expires = int(time.time()) + 3600
    r = request(s.port, link("/s/file.txt", expires))
    assert r.status == 200 and r.body == b"protected\n"
    assert r.header("X-Expires") == f"[{expires}]"


def test_doc_example_link(s):
    # nginx's documentation's own link, valid until 2038 for 127.0.0.1.
    r = request(s.port, "/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647")
    assert r.status == 404  # the check passed; there is no such file


def test_expired_link_is_410(s):
    expires = int(time.time()) - 60
    assert request(s.port, link("/s/file.txt", expires)).status == 410
    r = request(s.port, link("/show/x", expires))
    assert r.body == f"[0][{expires}]".encode()


@pytest.mark.parametrize("query", [
    "",                                                     # no hash
    "md5=&expires=4102444800",                              # empty hash
    "md5=AAAAAAAAAAAAAAAAAAAAAA&expires=4102444800",        # wrong hash
    "md5=not*base64url*at*all&expires=4102444800",          # bad characters
    "md5=q-5vpkjBkRXXtkUMXiJVHAQQ&expires=4102444800",      # 18 bytes
    "md5=q-5vpkjBkRXXtkUMXiJVHA-TOOLONG&expires=4102444800",
])
def test_bad_links_are_403(s, query):
    assert request(s.port, "/s/file.txt?" + query).status == 403


def test_link_for_another_file_or_client_is_403(s):
    expires = int(time.time()) + 3600
    good = link("/s/file.txt", expires)
    assert request(s.port, good.replace("/s/file.txt", "/s/other.txt")).status == 403
    assert request(s.port, link("/s/file.txt", expires, client="10.0.0.1")).status == 403
    # The time is part of the hash: a later one does not extend the link.
    assert request(s.port, good.replace(f"expires={expires}", f"expires={expires + 1}")).status == 403


@pytest.mark.parametrize("expires", ["0", "-1", "12x", "", "99999999999999999999"])
def test_malformed_expiry_is_invalid_not_expired(s, expires):
    # The hash matches the time as written: still refused, and "" not "0".
    path = "/show/x"
    q = f"md5={md5_b64url(f'{expires}{path}127.0.0.1 secret')}&expires={expires}"
    assert request(s.port, f"{path}?{q}").body == b"[][]"
    assert request(s.port, f"/s/file.txt?{q}").status == 403


def test_variables_of_a_good_link(s):
    expires = int(time.time()) + 3600
    assert request(s.port, link("/show/x", expires)).body == f"[1][{expires}]".encode()


def test_no_expiry_and_padding(s):
    h = md5_b64url("secret/forever/file.txt")
    assert request(s.port, "/forever/file.txt?md5=" + h).body == b"forever\n"
    padded = md5_b64url("secret/forever/file.txt", pad=True)
    assert padded.endswith("==")
    assert request(s.port, "/forever/file.txt?md5=" + padded).body == b"forever\n"
    # Read up to the first "=", as nginx reads it.
    assert request(s.port, "/forever/file.txt?md5=" + h + "=").status == 200
    assert request(s.port, "/forever/other.txt?md5=" + h).status == 403


def test_secret_mode(s):
    h = hashlib.md5(b"link.txtsecret").hexdigest()
    r = request(s.port, f"/p/{h}/link.txt")
    assert r.status == 200 and r.body == b"secret mode\n"
    assert request(s.port, f"/p/{h.upper()}/link.txt").status == 200
    assert request(s.port, "/secure/link.txt").status == 404  # internal only
    bad = [
        f"/p/{hashlib.md5(b'fake').hexdigest()}/link.txt",  # wrong hash
        "/p/foo/link.txt",                                  # short hash
        "/p/" + "x" * 32 + "/link.txt",                     # not hex
        "/p/link.txt",                                      # no hash
        f"/p/{h}/",                                         # no link
        f"/p/{h}/link.txt?x=1",                             # the arguments are part of the link
    ]
    for path in bad:
        assert request(s.port, path).status == 403, path


def test_not_configured_is_not_found(s):
    assert request(s.port, "/none/?md5=x&expires=1").body == b"[][]"


@pytest.mark.parametrize("line, message", [
    ("secure_link $secure_link_expires;", "the $secure_link variables cannot be used"),
    ("secure_link_md5 $secure_link;", "the $secure_link variables cannot be used"),
    ("secure_link $arg_a; secure_link $arg_b;", '"secure_link" directive is duplicate'),
    ("secure_link $nonesuch;", "nonesuch"),
])
def test_config_errors(server, line, message):
    s = server("server { listen 127.0.0.1:PORT; location / { " + line + " } }", start=False)
    code, err = s.test_config()
    assert code != 0 and message in err and "gatehouse.conf:" in err, err


def test_secret_only_in_location(server):
    s = server("server { listen 127.0.0.1:PORT; secure_link_secret x; }", start=False)
    code, err = s.test_config()
    assert code != 0 and '"secure_link_secret" directive is not allowed here' in err, err
