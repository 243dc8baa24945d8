"""nginx's behaviour in the HTTP core that nginx's own tests check
(http_server_name.t, http_host.t, http_method.t, merge_slashes.t,
http_location_auto.t, http_keepalive.t, http_variables.t, body.t,
http_headers_multi.t ...), stated here in our own words: each test starts
the real binary and checks what a client or the log sees."""

import base64
import socket

from gh_server import server  # noqa: F401  (the fixture)
from origins import Origin, response
from test_http_core import exchange
from test_proxy import read_reply, request


def site(body, http_extra="", name="localhost"):
    return http_extra + f"\nserver {{\n listen 127.0.0.1:PORT;\n server_name {name};\n" + body + "\n}\n"


def test_server_name_with_leading_dot_is_named_without_it(server):
    s = server(site('location / { return 200 "$server_name"; }', name=".dot.example.com"))
    for host in ("dot.example.com", "www.dot.example.com"):
        r = request(s.port, "/", host=host)
        assert (r.status, r.body) == (200, b"dot.example.com"), host
