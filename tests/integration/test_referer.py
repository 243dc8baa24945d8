"""valid_referers and $invalid_referer, as the hotlink check uses them:
"if ($invalid_referer) { return 403; }"."""

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from test_proxy import request

CONF = """
server {
    listen 127.0.0.1:PORT;
    server_name site.test *.site.test ~^img\\d+\\.cdn$;
    location /img/ {
        valid_referers none blocked server_names *.friend.org .partner.net shop.* example.com/gallery/ ~\\.edu/;
        if ($invalid_referer) { return 403; }
        return 200 "ok";
    }
    location /strict/ {
        valid_referers example.com;
        return 200 "[$invalid_referer]";
    }
    location /free/ { return 200 "[$invalid_referer]"; }
}
"""


@pytest.mark.parametrize("referer, status", [
    (None, 200),                                  # none
    ("", 200),                                    # blocked: no scheme
    ("www.friend.org", 200),                      # blocked
    ("http://site.test/page", 200),               # server_names, exact
    ("https://a.site.test", 200),                 # server_names, wildcard
    ("http://img42.cdn/x", 200),                  # server_names, regex
    ("http://a.b.friend.org/", 200),              # *.x: any subdomain
    ("http://friend.org/", 403),                  # ... not the domain
    ("http://partner.net", 200),                  # .x: the domain
    ("http://www.partner.net:8080/", 200),        # ... and subdomains, any port
    ("http://shop.example.co.uk/", 200),          # x.*
    ("http://EXAMPLE.com/gallery/1.html", 200),   # host without case, path prefix
    ("http://example.com/Gallery/1.html", 403),   # path with case
    ("http://example.com/", 403),
    ("http://www.mit.edu/page", 200),             # regex after the scheme
    ("http://evil.test/", 403),
    ("ftp://site.test/", 200),                    # no http(s): blocked
    ("http://" + "a" * 257, 403),                 # host past 256 bytes
])
def test_hotlink_check(server, referer, status):
    s = server(CONF)
    headers = [] if referer is None else [("Referer", referer)]
    assert request(s.port, "/img/a.png", headers=headers).status == status


def test_the_variable_alone(server):
    s = server(CONF)
    def value(path, referer=None):
        return request(s.port, path, headers=[("Referer", referer)] if referer is not None else []).body
    assert value("/strict/", "http://example.com/x") == b"[]"
    assert value("/strict/", "http://other.com/x") == b"[1]"
    assert value("/strict/") == b"[1]"          # no "none"
    assert value("/strict/", "junk") == b"[1]"  # no "blocked"
    # Where no valid_referers applies, every Referer is valid.
    assert value("/free/", "http://other.com/") == b"[]"


@pytest.mark.parametrize("line, message", [
    ("valid_referers *.a.*;", 'invalid referer "*.a.*"'),
    ("valid_referers ~(;", "pcre2_compile() failed"),
])
def test_config_errors(server, line, message):
    s = server("server { listen 127.0.0.1:PORT; location / { " + line + " } }", start=False)
    code, err = s.test_config()
    assert code != 0 and message in err, err
