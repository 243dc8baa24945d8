"""upstream blocks as `gatehouse -t` reads them: valid ones, and each
configuration error with its file:line, worded as nginx words it.

Skipped when the build has no upstream module; the proxy_pass cases also
need the proxy module.
"""

import pytest

from test_cli import directive_known, failed, ok_lines


@pytest.fixture
def need_upstream(cli):
    r = cli.test_conf("events { }\nhttp { upstream probe { server 127.0.0.1; } }\n",
                      name="probe.conf")
    if 'unknown directive "upstream"' in r.stderr:
        pytest.skip("upstream module not built")


@pytest.fixture
def need_proxy(cli, need_upstream):
    if not directive_known(cli, "proxy_pass", "location"):
        pytest.skip("proxy module not built")


def http_conf(body):
    return "events { }\nhttp {\n" + body + "}\n"


def check_ok(cli, prefix, body):
    conf = prefix.write_conf(http_conf(body))
    r = cli.run("-t")
    assert (r.returncode, r.stderr) == (0, ok_lines(conf)), r


def check_error(cli, prefix, body, message):
    """`message` may hold {conf}, the config file's path."""
    conf = prefix.write_conf(http_conf(body))
    r = cli.run("-t")
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr == failed(conf, message.format(conf=conf))


# ---- valid --------------------------------------------------------------------

def test_every_parameter(cli, prefix, need_upstream):
    check_ok(cli, prefix, """
    upstream backend {
        server 127.0.0.1:8081 weight=5 max_fails=3 fail_timeout=30s max_conns=100;
        server 127.0.0.2:8081;
        server localhost:8082 down;
        server unix:/run/gatehouse-test.sock backup;
        keepalive 32;
        keepalive_timeout 30s;
        keepalive_requests 500;
    }
""")


def test_several_upstreams_and_the_client_side_keepalive(cli, prefix, need_upstream):
    # keepalive_timeout/keepalive_requests in http are the client side's.
    check_ok(cli, prefix, """
    keepalive_timeout 10s;
    keepalive_requests 50;
    upstream a { server 127.0.0.1:8081; }
    upstream b { server 127.0.0.1:8082; server 127.0.0.1:8083 backup; }
    server { listen 127.0.0.1:8080; keepalive_timeout 5s; }
""")


def test_an_included_upstream(cli, prefix, need_upstream):
    prefix.write_conf("upstream inc { server 127.0.0.1:8081; }\n", "upstreams.conf")
    check_ok(cli, prefix, "    include upstreams.conf;\n")


# ---- errors ---------------------------------------------------------------------

ERRORS = {
    "unknown parameter": (
        "    upstream b {\n        server 127.0.0.1:8081 service=_http._tcp;\n    }\n",
        'invalid parameter "service=_http._tcp" in {conf}:4'),
    "bad slow_start": (
        "    upstream b {\n        server 127.0.0.1:8081 slow_start=gradually;\n    }\n",
        'invalid parameter "slow_start=gradually" in {conf}:4'),
    "backup with hash": (
        "    upstream b {\n        hash $uri;\n        server 127.0.0.1:8081 backup;\n    }\n",
        'invalid parameter "backup" in {conf}:5'),
    "health_check without zone": (
        "    upstream b {\n        server 127.0.0.1:8081;\n        health_check;\n    }\n",
        '"health_check" requires "zone" in upstream "b" in {conf}:5'),
    "unknown match": (
        "    upstream b {\n        server 127.0.0.1:8081;\n        zone b 64k;\n"
        "        health_check match=nosuch;\n    }\n",
        'match "nosuch" not found in {conf}:6'),
    "misspelt flag": (
        "    upstream b {\n        server 127.0.0.1:8081 backups;\n    }\n",
        'invalid parameter "backups" in {conf}:4'),
    "zero weight": (
        "    upstream b {\n        server 127.0.0.1:8081 weight=0;\n    }\n",
        'invalid parameter "weight=0" in {conf}:4'),
    "weight not a number": (
        "    upstream b {\n        server 127.0.0.1:8081 weight=heavy;\n    }\n",
        'invalid parameter "weight=heavy" in {conf}:4'),
    "bad fail_timeout": (
        "    upstream b {\n        server 127.0.0.1:8081 fail_timeout=soon;\n    }\n",
        'invalid parameter "fail_timeout=soon" in {conf}:4'),
    "duplicate upstream": (
        "    upstream b { server 127.0.0.1:8081; }\n    upstream b { server 127.0.0.1:8082; }\n",
        'duplicate upstream "b" in {conf}:4'),
    "host not found": (
        "    upstream b {\n        server nosuch.invalid:80;\n    }\n",
        'host not found in upstream "nosuch.invalid:80" in {conf}:4'),
    "bad port": (
        "    upstream b {\n        server 127.0.0.1:65536;\n    }\n",
        'invalid port in upstream "127.0.0.1:65536" in {conf}:4'),
    # nginx refuses an empty block when it is read, used or not.
    "empty upstream": (
        "    upstream b {\n    }\n",
        'no servers are inside upstream in {conf}:3'),
    "only backups": (
        "    upstream b {\n        server 127.0.0.1:8081 backup;\n    }\n",
        'no servers in upstream "b" in {conf}:3'),
    "keepalive 0": (
        "    upstream b {\n        server 127.0.0.1:8081;\n        keepalive 0;\n    }\n",
        'invalid value "0" in "keepalive" directive in {conf}:5'),
    "duplicate keepalive": (
        "    upstream b {\n        server 127.0.0.1:8081;\n        keepalive 2;\n        keepalive 4;\n    }\n",
        '"keepalive" directive is duplicate in {conf}:6'),
    "keepalive outside upstream": (
        "    keepalive 16;\n",
        '"keepalive" directive is not allowed here in {conf}:3'),
    "upstream inside server": (
        "    server {\n        upstream b { server 127.0.0.1:8081; }\n    }\n",
        '"upstream" directive is not allowed here in {conf}:4'),
    "server block syntax in upstream": (
        "    upstream b {\n        server 127.0.0.1:8081 { }\n    }\n",
        'directive "server" is not terminated by ";" in {conf}:4'),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=lambda c: c.replace(" ", "_"))
def test_errors(cli, prefix, need_upstream, case):
    body, message = ERRORS[case]
    check_error(cli, prefix, body, message)


def test_error_in_an_included_file_names_that_file(cli, prefix, need_upstream):
    inc = prefix.write_conf("upstream b {\n    server 127.0.0.1 weight=-1;\n}\n", "ups.conf")
    conf = prefix.write_conf(http_conf("    include ups.conf;\n"))
    r = cli.run("-t")
    assert r.returncode == 1
    assert r.stderr == failed(conf, f'invalid parameter "weight=-1" in {inc}:2')


# ---- with proxy_pass ------------------------------------------------------------

def location(target):
    return ("    server {\n        listen 127.0.0.1:8080;\n"
            f"        location / {{ proxy_pass {target}; }}\n    }}\n")


def test_proxy_pass_before_its_upstream_block(cli, prefix, need_proxy):
    check_ok(cli, prefix, location("http://backend") +
             "    upstream backend { server 127.0.0.1:8081; }\n")


def test_proxy_pass_to_a_name_that_is_neither(cli, prefix, need_proxy):
    check_error(cli, prefix, location("http://nosuch.invalid"),
                'host not found in upstream "nosuch.invalid" in {conf}:5')


def test_proxy_pass_with_a_port_to_an_upstream_block(cli, prefix, need_proxy):
    check_error(cli, prefix, "    upstream backend { server 127.0.0.1:8081; }\n" +
                location("http://backend:8080"),
                'upstream "backend" may not have port 8080 in {conf}:6')
