"""geo: a variable whose value depends on an IP address (geo $var { ... }).

Each test starts a real master with two workers on loopback and reads the
variables back from response fields (add_header), as nginx's own tests
do: the client's address (after realip, or from X-Forwarded-For of a
"proxy"), or an address given in the query string ($arg_ip), looked up
among CIDR blocks or ranges; IPv6 clients on ::1, UNIX-socket clients,
and configurations nginx refuses with the [emerg] line it prints.
"""

import socket

from gh_server import Response, Server, require_binary, server  # noqa: F401  (server: the fixture)

FILES = {"index.html": "ok\n"}


def start(server, http, files=None):
    """Two workers: reuseport spreads the requests of a test over both,
    each with its copy of the table."""
    s = server(http, {**FILES, **(files or {})}, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    return s.start()


def send(s, path="/", headers=(), family=socket.AF_INET, unix_path=None):
    if unix_path is not None:
        sock, addr = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), unix_path
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
        addr = ("127.0.0.1" if family == socket.AF_INET else "::1", s.port)
    with sock:
        sock.settimeout(10)
        sock.connect(addr)
        sock.sendall(s.request_bytes(path, headers))
        chunks = []
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    r = Response(b"".join(chunks))
    assert r.status == 200, r.raw
    return r


def geo(s, ip=None, header="X-Geo", **kw):
    """The field `header` of four answers (new connections, either worker),
    which must agree."""
    path = "/" if ip is None else f"/?ip={ip}"
    values = {send(s, path, **kw).header(header) for _ in range(4)}
    assert len(values) == 1, values
    return values.pop()


def test_cidr_longest_prefix_whatever_the_order(server):
    s = start(server, """
    geo $arg_ip $geo {
        default          world;
        10.1.2.3         host;
        10.0.0.0/8       ten;
        10.1.2.0/24      ten-1-2;
        10.1.0.0/16      ten-1;
        192.0.2.0/25     low;
        192.0.2.128/25   high;
        2001:db8::/32    doc6;
        2001:db8:1::/48  doc6-1;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / { add_header X-Geo "$geo"; }
    }""")
    for ip, want in [
        ("10.1.2.3", "host"), ("10.1.2.4", "ten-1-2"), ("10.1.3.0", "ten-1"),
        ("10.2.0.0", "ten"), ("9.255.255.255", "world"), ("11.0.0.0", "world"),
        ("192.0.2.127", "low"), ("192.0.2.128", "high"), ("192.0.3.0", "world"),
        ("2001:db8::1", "doc6"), ("2001:db8:1::1", "doc6-1"), ("2001:db9::", "world"),
        # A mapped IPv4 address is looked up as IPv4.
        ("::ffff:10.1.2.3", "host"),
        # Not an address: looked up as 255.255.255.255.
        ("localhost", "world"),
    ]:
        assert geo(s, ip) == want, ip


def test_client_address_include_delete_and_no_default(server):
    s = server("", FILES, start=False)
    # Relative to the configuration's directory, as nginx's include.
    (s.prefix / "conf" / "geo.conf").write_text("127.0.0.0/8 loopback;\ninclude more.conf;\n")
    (s.prefix / "conf" / "more.conf").write_text("192.0.2.0/24 test;\n")
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;")
                      .replace("http {\n", """http {
    geo $geo {
        include      geo.conf;
        0.0.0.0/0    world;
    }
    geo $geo_delete {
        127.0.0.0/8  loopback;
        0.0.0.0/0    world;
        delete       127.0.0.0/8;
    }
    geo $arg_ip $geo_arg {
        include      geo.conf;
    }
    geo $geo_empty {
        192.0.2.0/24 test;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / {
            add_header X-Geo "$geo";
            add_header X-Del "$geo_delete";
            add_header X-Empty "[$geo_empty]";
            add_header X-Arg "$geo_arg";
        }
    }
""".replace("PORT", str(s.port)), 1))
    s.start()
    assert geo(s) == "loopback"
    assert geo(s, header="X-Del") == "world"
    assert geo(s, header="X-Empty") == "[]"
    assert geo(s, "192.0.2.1", header="X-Arg") == "test"  # from more.conf, included by geo.conf


def test_realip_address_is_the_one_looked_up(server):
    s = start(server, """
    geo $geo {
        default        world;
        127.0.0.0/8    loopback;
        192.0.2.0/24   test;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location / { add_header X-Geo "$geo"; add_header X-IP "$remote_addr"; }
    }""")
    r = send(s, headers=[("X-Forwarded-For", "192.0.2.7")])
    assert (r.header("X-IP"), r.header("X-Geo")) == ("192.0.2.7", "test")
    assert geo(s, headers=[("X-Forwarded-For", "203.0.113.1")]) == "world"
    assert geo(s) == "loopback"


def test_proxy_and_proxy_recursive(server):
    s = start(server, """
    geo $geo_proxy {
        default       default;
        proxy         127.0.0.1;
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
    }
    geo $geo_recursive {
        proxy_recursive;
        default       default;
        proxy         127.0.0.1;
        proxy         10.0.0.0/8;
        127.0.0.0/8   loopback;
        192.0.2.0/24  test;
    }
    geo $arg_ip $geo_var {
        default       default;
        proxy         192.0.2.1;
        192.0.2.0/24  test;
        198.51.100.0/24 other;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / {
            add_header X-XFF "$geo_proxy";
            add_header X-XFR "$geo_recursive";
            add_header X-Var "$geo_var";
            add_header X-IP "$remote_addr";
        }
    }""")
    xff = lambda v: [("X-Forwarded-For", v)]  # noqa: E731
    assert geo(s, header="X-XFF", headers=xff("192.0.2.1")) == "test"
    assert geo(s, header="X-XFF", headers=xff("10.0.0.1")) == "default"
    assert geo(s, header="X-XFF", headers=xff("10.0.0.1, 192.0.2.1")) == "test"
    assert geo(s, header="X-XFF", headers=xff("192.0.2.1, 127.0.0.1")) == "loopback"
    assert geo(s, header="X-XFR", headers=xff("192.0.2.1, 127.0.0.1")) == "test"
    # Recursive: trusted addresses are skipped from the right, whatever range.
    assert geo(s, header="X-XFR", headers=xff("192.0.2.1, 10.9.9.9, 127.0.0.1")) == "test"
    # An element that is not an address ends the walk where it is.
    assert geo(s, header="X-XFR", headers=xff("192.0.2.1, junk, 127.0.0.1")) == "loopback"
    # Two fields are one list.
    assert geo(s, header="X-XFF", headers=xff("10.0.0.1") + xff("192.0.2.1")) == "test"
    # With a port, or an IPv6 literal in brackets.
    assert geo(s, header="X-XFF", headers=xff("192.0.2.9:8080")) == "test"
    # No field: the connection's address.
    assert geo(s, header="X-XFF") == "loopback"
    # The address from a variable is a proxy's too when trusted.
    assert geo(s, "192.0.2.1", header="X-Var", headers=xff("198.51.100.5")) == "other"
    assert geo(s, "192.0.2.2", header="X-Var", headers=xff("198.51.100.5")) == "test"
    # geo changes no one's $remote_addr.
    assert send(s, headers=xff("192.0.2.1")).header("X-IP") == "127.0.0.1"


def test_ranges_overlaps_deletes_and_ipv6(server):
    s = start(server, """
    geo $arg_ip $r {
        ranges;
        default                    default;
        127.0.0.0-127.0.0.255      test;
        127.0.0.1-127.0.0.2        test2;
        127.0.0.1-127.0.0.1        loopback;
        10.10.3.0-10.11.2.255      foo;
        10.12.3.0-10.13.2.255      foo2;
        delete                     10.10.3.0-10.11.2.255;
        192.0.2.0-192.0.2.255      doc;
        192.0.2.0-192.0.2.9        doc-head;
        192.0.2.250-192.0.2.255    doc-tail;
        0.0.0.0-0.0.0.0            zero;
        255.255.255.255-255.255.255.255  none;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / { add_header X-Geo "$r"; }
    }""")
    for ip, want in [
        ("127.0.0.0", "test"), ("127.0.0.1", "loopback"), ("127.0.0.2", "test2"),
        ("127.0.0.3", "test"), ("127.0.1.0", "default"),
        ("10.11.2.1", "default"), ("10.13.2.1", "foo2"), ("10.12.3.0", "foo2"),
        ("10.13.3.0", "default"),
        ("192.0.2.0", "doc-head"), ("192.0.2.10", "doc"), ("192.0.2.249", "doc"),
        ("192.0.2.250", "doc-tail"), ("0.0.0.0", "zero"), ("0.0.0.1", "default"),
        ("255.255.255.255", "none"),
        # Ranges are IPv4: an IPv6 address is taken as 255.255.255.255,
        # a mapped one as its IPv4 address.
        ("2001:db8::1", "none"), ("::ffff:127.0.0.1", "loopback"),
    ]:
        assert geo(s, ip) == want, ip


def test_ipv6_client_on_loopback(server):
    s = start(server, """
    geo $geo {
        ::1/128         loopback6;
        127.0.0.1       loopback;
        2001:db8::/32   test;
        ::/0            world6;
    }
    geo $geo_delete {
        default         default;
        ::1/128         loopback6;
        delete          ::1/128;
    }
    geo $geo_proxy {
        ranges;
        proxy                ::1;
        default              default;
        192.0.2.1-192.0.2.1  test;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        listen [::1]:PORT reuseport;
        location / {
            add_header X-Geo "$geo";
            add_header X-Del "$geo_delete";
            add_header X-XFF "$geo_proxy";
        }
    }""")
    assert geo(s, family=socket.AF_INET6) == "loopback6"
    assert geo(s) == "loopback"
    assert geo(s, header="X-Del", family=socket.AF_INET6) == "default"
    xff = [("X-Forwarded-For", "::ffff:192.0.2.1")]
    assert geo(s, header="X-XFF", family=socket.AF_INET6, headers=xff) == "test"
    assert geo(s, header="X-XFF", headers=xff) == "default"  # 127.0.0.1 is no proxy


def test_unix_socket_client_is_255_255_255_255(server, tmp_path):
    sock = tmp_path / "geo.sock"
    s = start(server, f"""
    geo $geo {{
        default          default;
        255.255.255.255  none;
    }}
    geo $ranges {{
        ranges;
        0.0.0.0-255.255.255.254  test;
        default                  none;
    }}
    geo $arg_ip $arg {{
        default          default;
        192.0.2.0/24     test;
    }}
    server {{
        listen 127.0.0.1:PORT reuseport;
        listen unix:{sock};
        location / {{
            add_header X-Geo "$geo";
            add_header X-Ranges "$ranges";
            add_header X-Arg "$arg";
        }}
    }}""")
    u = {"unix_path": str(sock)}
    assert geo(s, **u) == "none"
    assert geo(s, header="X-Ranges", **u) == "none"
    assert geo(s, "192.0.2.1", header="X-Arg", **u) == "test"
    assert geo(s) == "default"
    assert geo(s, header="X-Ranges") == "test"


def test_volatile_and_set(server):
    s = start(server, """
    geo $arg_ip $cached {
        192.0.2.1    one;
        192.0.2.2    two;
    }
    geo $arg_ip $fresh {
        volatile;
        192.0.2.1    one;
        192.0.2.2    two;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / {
            set $before "$cached|$fresh";
            set $args ip=192.0.2.2;
            add_header X-Geo "$before|$cached|$fresh";
        }
        location /set {
            set $cached changed;
            add_header X-Geo "$cached";
        }
    }""", files={"set": ""})
    # /index.html: "/" would be redirected to it, running "set" again.
    assert send(s, "/index.html?ip=192.0.2.1").header("X-Geo") == "one|one|one|two"
    assert send(s, "/set?ip=192.0.2.1").header("X-Geo") == "changed"


def test_a_large_include_in_any_order(server):
    # 50,000 /24 blocks written from the highest down, and a few longer
    # prefixes inside them: every lookup finds its own.
    lines = [f"10.{i >> 8 & 255}.{i & 255}.0/24 v{i % 1000};" for i in reversed(range(50000))]
    lines += ["10.0.7.7/32 host;", "10.0.0.0/8 ten;"]
    s = server("", FILES, start=False)
    (s.prefix / "conf" / "big.conf").write_text("\n".join(lines) + "\n")
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;")
                      .replace("http {\n", """http {
    geo $arg_ip $geo { default none; include big.conf; }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / { add_header X-Geo "$geo"; }
    }
""".replace("PORT", str(s.port)), 1))
    s.start()
    assert geo(s, "10.0.7.7") == "host"
    assert geo(s, "10.0.7.8") == f"v{7 % 1000}"
    assert geo(s, f"10.{49999 >> 8 & 255}.{49999 & 255}.1") == f"v{49999 % 1000}"
    assert geo(s, "10.195.80.1") == "ten"   # past the last /24 (50000 = 195 * 256 + 80)
    assert geo(s, "11.0.0.0") == "none"


def bad_config(tmp_path, i, block, include=None):
    require_binary()
    s = Server(tmp_path / f"bad{i}", f"""    geo $geo {{
{block}
    }}
    server {{ listen 127.0.0.1:PORT; }}""")
    if include is not None:
        (s.prefix / "conf" / "inc.conf").write_text(include)
    return s.test_config()


def test_invalid_configurations_name_file_and_line(tmp_path):
    # The geo block's first entry is line 9 of the main file (MAIN_CONF).
    conf = str(tmp_path / "bad{}" / "gh" / "conf" / "gatehouse.conf")
    cases = [
        ("        10.0.0.0/33 x;", 'invalid network "10.0.0.0/33"', 9),
        ("        proxy 10.0.0.1/99;", 'invalid network "10.0.0.1/99"', 9),
        ("        delete banana;", 'invalid network "banana"', 9),
        ("        10.0.0.0/8 x y;", "invalid number of the geo parameters", 9),
        ("        10.0.0.0/8;", "invalid number of the geo parameters", 9),
        ("        default x;\n        ranges;",
         'the "ranges" directive must be the first directive inside "geo" block', 10),
        ("        ranges;\n        10.0.0.0/8 x;", 'invalid range "10.0.0.0/8"', 10),
        ("        ranges;\n        10.0.0.9-10.0.0.1 x;", 'invalid range "10.0.0.9-10.0.0.1"', 10),
        ("        ranges;\n        ::1-::2 x;", 'invalid range "::1-::2"', 10),
        ("        ranges;\n        127.0.0.10-127.0.0.20 a;\n        127.0.0.15-127.0.0.25 b;",
         'range "127.0.0.15-127.0.0.25" overlaps "127.0.0.10-127.0.0.20"', 11),
        ("        10.0.0.0/8 x { }", 'unexpected "{"', 9),
    ]
    for i, (block, msg, line) in enumerate(cases):
        rc, err = bad_config(tmp_path, i, block)
        assert rc == 1, (block, err)
        assert f"[emerg] {msg} in {conf.format(i)}:{line}" in err, (block, err)

    # In an included file, its own name and line.
    rc, err = bad_config(tmp_path, 99, "        include inc.conf;",
                         include="10.0.0.0/8 ok;\n\n10.1.0.0/16 x y;\n")
    inc = str(tmp_path / "bad99" / "gh" / "conf" / "inc.conf")
    assert rc == 1
    assert f"[emerg] invalid number of the geo parameters in {inc}:3" in err, err

    rc, err = bad_config(tmp_path, 96, "        include missing.conf;")
    missing = str(tmp_path / "bad96" / "gh" / "conf" / "missing.conf")
    assert rc == 1
    assert (f'[emerg] open() "{missing}" failed (2: No such file or directory) in '
            f'{conf.format(96)}:9') in err, err

    # Nested includes; an included file has no blocks.
    rc, err = bad_config(tmp_path, 95, "        include inc.conf;",
                         include="include inc.conf;\n")
    assert rc == 1
    assert "[emerg] include nesting is deeper than 32 levels (an include loop?) in " in err, err
    rc, err = bad_config(tmp_path, 94, "        include inc.conf;", include="10.0.0.0/8 { }\n")
    assert rc == 1
    assert f'[emerg] unexpected "{{" in {tmp_path}/bad94/gh/conf/inc.conf:1' in err, err

    rc, err = bad_config(tmp_path, 98, "")
    assert rc == 0, err
    require_binary()
    s = Server(tmp_path / "bad97", "geo $a bad { }")
    rc, err = s.test_config()
    assert rc == 1 and '[emerg] invalid variable name "bad" in ' in err, err


def test_warnings_as_nginx(tmp_path):
    rc, err = bad_config(tmp_path, 0, """
        10.0.0.0/8    a;
        10.0.0.0/8    b;
        10.1.2.3/16   c;
        delete        192.0.2.0/24;
        default       d;
        default       e;""")
    assert rc == 0, err
    conf = str(tmp_path / "bad0" / "gh" / "conf" / "gatehouse.conf")
    assert f'[warn] duplicate network "10.0.0.0/8", value: "b", old value: "a" in {conf}:11' in err
    assert f"[warn] low address bits of 10.1.2.3/16 are meaningless in {conf}:12" in err
    assert f'[warn] no network "192.0.2.0/24" to delete in {conf}:13' in err
    assert f'[warn] duplicate network "default", value: "e", old value: "d" in {conf}:15' in err

    rc, err = bad_config(tmp_path, 1, """
        ranges;
        10.0.0.0-10.0.0.9    a;
        10.0.0.0-10.0.0.9    b;
        delete               10.0.0.0-10.0.0.8;
        default              x;
        default              y;""")
    assert rc == 0, err
    conf = str(tmp_path / "bad1" / "gh" / "conf" / "gatehouse.conf")
    assert f'[warn] duplicate range "10.0.0.0-10.0.0.9", value: "b", old value: "a" in {conf}:12' in err
    assert f'[warn] no address range "10.0.0.0-10.0.0.8" to delete in {conf}:13' in err
    assert f'[warn] duplicate default geo range value: "y", old value: "x" in {conf}:15' in err
