"""Global server load balancing end to end, as issue 14 describes it: a
client's address (set through X-Forwarded-For from a trusted 127.0.0.1,
as realip allows) picks its region with "geo", a map names the region's
pool, and each pool falls back tier by tier ("backup=1", "backup=2") to
the next-closest region when its own origins die, then comes back when
they return.

Origins answer with their name. Every loop is bounded in count; the
origins are stopped at teardown.
"""

import re
import socket
import time

import pytest

from gh_server import poll, server  # noqa: F401  (server: the fixture)
from origins import Origin, response

FAIL_TIMEOUT = 2


def named(name):
    def handler(conn, req):
        close = (req.header("Connection") or "").lower() == "close"
        conn.sendall(response(200, name.encode(), close=close))
        return not close
    return handler


@pytest.fixture
def regions():
    made = {}

    def make(name, port=0):
        o = Origin(named(name), port=port)
        made.setdefault(name, []).append(o)
        return o

    yield make
    for os_ in made.values():
        for o in os_:
            o.stop()


def conf(o):
    ft = f"max_fails=1 fail_timeout={FAIL_TIMEOUT}s"
    pools = {
        # The nearest region first, then the next-closest, then the rest.
        "eu_pool": [(o["eu1"], ""), (o["eu2"], ""), (o["ap1"], "backup=1"), (o["us1"], "backup=2")],
        "ap_pool": [(o["ap1"], ""), (o["eu1"], "backup=1"), (o["us1"], "backup=2")],
        "us_pool": [(o["us1"], ""), (o["eu1"], "backup=1"), (o["ap1"], "backup=2")],
    }
    blocks = ""
    for name, servers in pools.items():
        lines = "\n".join(f"        server {x.addr} {ft} {extra};" for x, extra in servers)
        blocks += f"    upstream {name} {{\n        zone gslb 64k;\n{lines}\n    }}\n"
    return f"""
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    geo $region {{
        default us;
        10.1.0.0/16 eu;
        10.2.0.0/16 ap;
        2001:db8:3::/48 us;
    }}
    map $region $pool {{ eu eu_pool; ap ap_pool; default us_pool; }}
{blocks}
    log_format gslb '$http_x_forwarded_for $region $upstream_addr $status';
    server {{
        listen 127.0.0.1:PORT reuseport;
        access_log logs/gslb.log gslb;
        location / {{ proxy_pass http://$pool; }}
    }}
"""


def get(port, client):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(f"GET / HTTP/1.1\r\nHost: gslb.test\r\nX-Forwarded-For: {client}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def test_each_region_to_its_pool_then_failover_and_back(server, regions):
    o = {n: regions(n) for n in ("eu1", "eu2", "ap1", "us1")}
    s = server(conf(o), start=False)
    code, err = s.test_config()
    if 'unknown directive "geo"' in err:
        pytest.skip("geo module not built")
    assert code == 0, err
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    s.start()
    eu, ap, us = "10.1.2.3", "10.2.0.9", "2001:db8:3::1"

    # Each region's clients reach their region.
    got = {c: sorted({get(s.port, c)[1] for _ in range(8)}) for c in (eu, ap, us)}
    assert got == {eu: ["eu1", "eu2"], ap: ["ap1"], us: ["us1"]}

    # Both eu origins die: eu's clients go to ap, the next tier, within
    # the request (GET retries), with no error.
    ports = [o["eu1"].port, o["eu2"].port]
    o["eu1"].stop()
    o["eu2"].stop()
    answers = [get(s.port, eu) for _ in range(20)]
    assert answers == [(200, "ap1")] * 20
    log = s.error_log()
    assert re.search(r'\[warn\].*upstream "eu_pool" switched from its primary servers to its backup=1 servers', log)
    # ap's own clients are untouched; us's fall back to ap past dead eu1.
    assert {get(s.port, ap)[1] for _ in range(5)} == {"ap1"}

    # ap dies too: eu's clients reach us, the last tier.
    ap_port = o["ap1"].port
    o["ap1"].stop()
    answers = [get(s.port, eu) for _ in range(10)]
    assert answers == [(200, "us1")] * 10
    assert poll(lambda: 'switched from its backup=1 servers to its backup=2 servers' in s.error_log())

    # $upstream_addr shows the tiers a failing-over request went through.
    lines = s.read_log("gslb.log").decode().splitlines()
    eu_lines = [line for line in lines if line.startswith(eu)]
    assert any(line.count(",") >= 2 and line.endswith(" 200") for line in eu_lines), eu_lines[-5:]

    # eu comes back on its ports: eu's clients return to it once
    # fail_timeout has passed since the last failure.
    restored = time.monotonic()
    regions("eu1", port=ports[0])
    regions("eu2", port=ports[1])
    regions("ap1", port=ap_port)
    tries = []

    def back_to_eu():
        tries.append(get(s.port, eu))
        return tries[-1][1] in ("eu1", "eu2")

    assert poll(back_to_eu, timeout=FAIL_TIMEOUT + 10, step=0.1)
    took = time.monotonic() - restored
    assert all(status == 200 for status, _ in tries), tries
    print(f"gslb: eu back after {took:.2f}s (fail_timeout {FAIL_TIMEOUT}s), {len(tries)} requests, "
          f"answered by: {sorted({b for _, b in tries})}")
    assert {get(s.port, eu)[1] for _ in range(8)} == {"eu1", "eu2"}
    assert poll(lambda: re.search(r'\[notice\].*upstream "eu_pool" switched back from its backup=2 servers '
                                  r'to its primary servers', s.error_log()))
