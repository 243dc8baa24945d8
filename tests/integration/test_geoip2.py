"""geoip2: variables from MaxMind DB files.

The databases are written by the test with MaxMind::DB::Writer (Debian
libmaxmind-db-writer-perl) and every value the proxy returns is checked
against what mmdblookup (Debian mmdb-bin) reads from the same file at the
same key path, rendered as the third-party ngx_http_geoip2_module renders
it (booleans 1/0, floating point with five decimals). The client address
varies through realip: X-Forwarded-For from the trusted 127.0.0.1.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from gh_server import Response, poll, server  # noqa: F401  (server: the fixture)

WRITER = r"""
use strict;
use warnings;
use JSON::PP;
use MaxMind::DB::Writer::Tree;

my ($spec_file, $out) = @ARGV;
open my $in, '<', $spec_file or die "$spec_file: $!";
my $spec = decode_json(do { local $/; <$in> });
my %types = (
    country => 'map', city => 'map', continent => 'map', location => 'map',
    names => 'map', subdivisions => ['array', 'map'],
    iso_code => 'utf8_string', code => 'utf8_string', en => 'utf8_string', de => 'utf8_string',
    time_zone => 'utf8_string', geoname_id => 'uint32', accuracy_radius => 'uint16',
    latitude => 'double', longitude => 'double', ratio => 'float',
    is_in_european_union => 'boolean', population => 'uint64', offset => 'int32',
    big => 'uint128', empty => 'utf8_string',
);
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 28, database_type => $spec->{type},
    languages => ['en', 'de'], description => { en => 'gatehouse test' },
    remove_reserved_networks => 0,
    map_key_type_callback => sub { $types{$_[0]} // die "no type for $_[0]" },
);
for my $r (@{ $spec->{records} }) {
    my ($net, $data) = @$r;
    # JSON booleans become what the writer takes as a boolean.
    $data->{is_in_european_union} = $data->{is_in_european_union} ? 1 : 0
        if exists $data->{is_in_european_union};
    $tree->insert_network($net, $data);
}
open my $fh, '>:raw', "$out.tmp" or die "$out.tmp: $!";
$tree->write_tree($fh);
close $fh or die;
rename "$out.tmp", $out or die "rename: $!";
"""

COUNTRY = {
    "type": "GH-Country",
    "records": [
        ["127.0.0.0/24", {"country": {"iso_code": "LO", "names": {"en": "Loopland", "de": "Schleifenland"}},
                          "continent": {"code": "EU"}}],
        ["192.0.2.0/24", {"country": {"iso_code": "DC", "names": {"en": "Docland"}}}],
        ["198.51.100.0/24", {"country": {"iso_code": "TN", "names": {"en": "Testnet"}}}],
        ["2001:db8::/32", {"country": {"iso_code": "SX", "names": {"en": "Sixland", "de": "Sechsland"}}}],
        ["::1/128", {"country": {"iso_code": "L6", "names": {"en": "Loop Six"}}}],
    ],
}

CITY = {
    "type": "GH-City",
    "records": [
        ["192.0.2.0/25", {
            "city": {"geoname_id": 2643743, "names": {"en": "Doc City", "de": "Dokstadt"}},
            "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}, {"iso_code": "LND"}],
            "location": {"latitude": 51.5074, "longitude": -0.1278, "accuracy_radius": 50,
                         "time_zone": "Europe/London"},
            "is_in_european_union": True, "population": 8982000000, "offset": -3600,
            "ratio": 0.25, "big": "340282366920938463463374607431768211455", "empty": "",
        }],
        ["198.51.100.64/26", {
            "city": {"geoname_id": 5128581, "names": {"en": "Test Town"}},
            "subdivisions": [{"iso_code": "NY"}],
            "location": {"latitude": 40.71427, "longitude": -74.00597, "accuracy_radius": 5},
            "is_in_european_union": False, "population": 8336817, "offset": 18000, "ratio": -1.5,
        }],
        ["2001:db8:1::/48", {
            "city": {"geoname_id": 2950159, "names": {"en": "Berlin", "de": "Berlin"}},
            "subdivisions": [{"iso_code": "BE", "names": {"de": "Land Berlin"}}],
            "location": {"latitude": 52.52437, "longitude": 13.41053, "accuracy_radius": 1},
            "is_in_european_union": True, "population": 3644826, "offset": 3600,
        }],
    ],
}

# name: (database, key path); the response prints "name=value" per line.
VARS = {
    "c_iso": ("country", "country iso_code"),
    "c_en": ("country", "country names en"),
    "c_de": ("country", "country names de"),
    "c_cont": ("country", "continent code"),
    "c_map": ("country", "country"),
    "city": ("city", "city names en"),
    "city_de": ("city", "city names de"),
    "city_id": ("city", "city geoname_id"),
    "sub0": ("city", "subdivisions 0 iso_code"),
    "sub1": ("city", "subdivisions 1 iso_code"),
    "sub0_en": ("city", "subdivisions 0 names en"),
    "sub5": ("city", "subdivisions 5 iso_code"),
    "lat": ("city", "location latitude"),
    "lon": ("city", "location longitude"),
    "acc": ("city", "location accuracy_radius"),
    "tz": ("city", "location time_zone"),
    "eu": ("city", "is_in_european_union"),
    "pop": ("city", "population"),
    "off": ("city", "offset"),
    "ratio": ("city", "ratio"),
    "big": ("city", "big"),
    "empty": ("city", "empty"),
}


def have_writer():
    try:
        return subprocess.run(["perl", "-MMaxMind::DB::Writer::Tree", "-e", "1"],
                              capture_output=True, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


if not have_writer():
    pytest.skip("perl MaxMind::DB::Writer::Tree (libmaxmind-db-writer-perl) is not installed",
                allow_module_level=True)


def write_db(directory, name, spec):
    """Writes directory/name from spec, atomically (rename); returns the path."""
    script = directory / "writer.pl"
    if not script.exists():
        script.write_text(WRITER)
    spec_file = directory / (name + ".json")
    spec_file.write_text(json.dumps(spec))
    out = directory / name
    subprocess.run(["perl", str(script), str(spec_file), str(out)], check=True, timeout=60)
    os.chmod(out, 0o644)
    return out


def mmdblookup(db, ip, path):
    """The value at path for ip as the third-party module renders it, or
    None when mmdblookup finds none (no record, no such key, a map)."""
    p = subprocess.run(["mmdblookup", "--file", str(db), "--ip", ip, *path.split()],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return None
    m = re.fullmatch(r'\s*(.*?) <(\w+)>\s*', p.stdout, re.S)
    if not m:
        return None  # a map or an array: several lines
    text, kind = m.groups()
    if kind == "utf8_string":
        return text[1:-1]
    if kind == "boolean":
        return {"true": "1", "false": "0"}[text]
    if kind in ("double", "float"):
        return "%.5f" % float(text)
    if kind == "uint128":
        return text.lower()
    return text


def values(body):
    out = {}
    for line in body.decode().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def echo(names):
    return "".join(f"{n}=${n}\\n" for n in names)


@pytest.fixture
def dbs(tmp_path):
    d = tmp_path / "db"
    d.mkdir()
    d.chmod(0o755)
    return {"dir": d, "country": write_db(d, "country.mmdb", COUNTRY), "city": write_db(d, "city.mmdb", CITY)}


def full_conf(dbs, extra_country="", extra_city="", listen6=False, locations=""):
    country = "".join(f"        ${n} {p};\n" for n, (db, p) in VARS.items() if db == "country")
    city = "".join(f"        ${n} {p};\n" for n, (db, p) in VARS.items() if db == "city")
    six = "listen [::1]:PORT;" if listen6 else ""
    return f"""
    geoip2 {dbs['country']} {{
{country}{extra_country}
    }}
    geoip2 {dbs['city']} {{
{city}{extra_city}
    }}
    server {{
        listen 127.0.0.1:PORT;
        {six}
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location / {{ return 200 "addr=$remote_addr\\n{echo(VARS)}"; }}
        {locations}
    }}
"""


def expected(dbs, ip):
    return {n: mmdblookup(dbs[db], ip, path) or "" for n, (db, path) in VARS.items()}


IPV4 = ["192.0.2.7", "192.0.2.200", "198.51.100.70", "198.51.100.1", "127.0.0.1", "203.0.113.9"]
IPV6 = ["2001:db8:1::5", "2001:db8:ffff::1", "2001:db9::1", "::1"]


def test_ipv4_values_match_mmdblookup(server, dbs):
    s = server(full_conf(dbs))
    seen_city = 0
    for ip in IPV4:
        got = values(s.get("/", headers=[("X-Forwarded-For", ip)]).body)
        assert got.pop("addr") == ip
        want = expected(dbs, ip)
        assert got == want, ip
        seen_city += want["city"] != ""
    # The cross-check has substance: records were found, and the values
    # of every type are there.
    assert seen_city == 2
    doc = values(s.get("/", headers=[("X-Forwarded-For", "192.0.2.7")]).body)
    assert (doc["c_iso"], doc["c_en"], doc["city"], doc["city_de"]) == ("DC", "Docland", "Doc City", "Dokstadt")
    assert (doc["sub0"], doc["sub1"], doc["sub0_en"], doc["sub5"]) == ("ENG", "LND", "England", "")
    assert (doc["lat"], doc["lon"], doc["acc"], doc["tz"]) == ("51.50740", "-0.12780", "50", "Europe/London")
    assert (doc["eu"], doc["pop"], doc["off"], doc["ratio"]) == ("1", "8982000000", "-3600", "0.25000")
    assert doc["big"] == "0xffffffffffffffffffffffffffffffff"
    assert (doc["c_map"], doc["empty"], doc["city_id"]) == ("", "", "2643743")
    # Without X-Forwarded-For: the connection's address.
    direct = values(s.get("/").body)
    assert (direct["addr"], direct["c_iso"], direct["c_de"]) == ("127.0.0.1", "LO", "Schleifenland")


def test_ipv6_values_match_mmdblookup(server, dbs):
    s = server(full_conf(dbs))
    for ip in IPV6:
        got = values(s.get("/", headers=[("X-Forwarded-For", ip)]).body)
        assert got.pop("addr") == ip
        assert got == expected(dbs, ip), ip
    berlin = values(s.get("/", headers=[("X-Forwarded-For", "2001:db8:1::5")]).body)
    assert (berlin["c_iso"], berlin["c_de"], berlin["city"], berlin["sub0"]) == ("SX", "Sechsland", "Berlin", "BE")


def test_ipv6_client_on_an_ipv6_listener(server, dbs):
    s = server(full_conf(dbs, listen6=True))
    with socket.create_connection(("::1", s.port), timeout=5) as c:
        c.sendall(s.request_bytes("/"))
        raw = b""
        while chunk := c.recv(65536):
            raw += chunk
    got = values(Response(raw).body)
    assert got.pop("addr") == "::1"
    assert got == expected(dbs, "::1")
    assert (got["c_iso"], got["c_en"]) == ("L6", "Loop Six")


def test_source_variable_and_default(server, dbs):
    s = server(full_conf(dbs, extra_country="""
        $x_c source=$http_x_addr country iso_code;
        $x_def default=ZZ source=$http_x_addr country iso_code;
    """, extra_city="""
        $x_city source=$http_x_addr city names en;
        $x_sub "default=no region" source=$http_x_addr subdivisions 0 iso_code;
    """, locations=f'location /x {{ return 200 "{echo(["x_c", "x_city", "x_sub", "x_def"])}"; }}'))
    for ip in ["198.51.100.70", "2001:db8:1::9", "2001:db8::1", "203.0.113.1"]:
        got = values(s.get("/x", headers=[("X-Addr", ip), ("X-Forwarded-For", "192.0.2.7")]).body)
        want_c = mmdblookup(dbs["country"], ip, "country iso_code")
        want_sub = mmdblookup(dbs["city"], ip, "subdivisions 0 iso_code")
        assert got == {
            "x_c": want_c or "",
            "x_city": mmdblookup(dbs["city"], ip, "city names en") or "",
            "x_sub": want_sub or "no region",
            "x_def": want_c or "ZZ",
        }, ip
    assert values(s.get("/x", headers=[("X-Addr", "198.51.100.70")]).body) == {
        "x_c": "TN", "x_city": "Test Town", "x_sub": "NY", "x_def": "TN"}
    # No address, or not an address: not found, so the default.
    for bad in (None, "not-an-ip", "192.0.2.7:80", "[2001:db8::1]"):
        h = [("X-Addr", bad)] if bad else []
        assert values(s.get("/x", headers=h).body) == {"x_c": "", "x_city": "", "x_sub": "no region", "x_def": "ZZ"}


def test_metadata(server, dbs):
    s = server(full_conf(dbs, extra_country="""
        $build metadata build_epoch;
        $checked metadata last_check;
        $changed metadata last_change;
    """, locations=f'location /meta {{ return 200 "{echo(["build", "checked", "changed"])}"; }}'))
    verbose = subprocess.run(["mmdblookup", "--file", str(dbs["country"]), "--ip", "127.0.0.1", "--verbose"],
                             capture_output=True, text=True, check=True).stdout
    epoch = re.search(r"Build epoch:\s+(\d+)", verbose).group(1)
    got = values(s.get("/meta").body)
    assert got["build"] == epoch
    # Without auto_reload both are the load's time, never changed after.
    assert got["checked"] == got["changed"]
    assert abs(int(got["checked"]) - int(epoch)) < 3600


def test_reload_opens_the_file_again(server, dbs):
    s = server(full_conf(dbs))
    assert values(s.get("/", headers=[("X-Forwarded-For", "198.51.100.1")]).body)["c_iso"] == "TN"
    changed = json.loads(json.dumps(COUNTRY))
    changed["records"][2][1]["country"]["iso_code"] = "RL"
    write_db(dbs["dir"], "country.mmdb", changed)
    # No auto_reload: the workers keep the file they have.
    assert values(s.get("/", headers=[("X-Forwarded-For", "198.51.100.1")]).body)["c_iso"] == "TN"
    s.proc.send_signal(signal.SIGHUP)

    def reloaded():
        v = values(s.get("/", headers=[("X-Forwarded-For", "198.51.100.1")]).body)["c_iso"]
        return v if v == "RL" else None

    assert poll(reloaded, timeout=10) == "RL"


def two_workers(server, http):
    s = server(http, start=False)
    s.conf.write_text(s.conf.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    return s.start()


def test_auto_reload_swaps_a_changed_file_in_every_worker(server, dbs):
    s = two_workers(server, f"""
    geoip2 {dbs['country']} {{
        auto_reload 100ms;
        $c_iso country iso_code;
        $changed metadata last_change;
    }}
    server {{
        listen 127.0.0.1:PORT reuseport;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        location / {{ return 200 "$pid $c_iso $changed\\n"; }}
    }}
    """)

    last_change = {}

    def answers():
        """(pid, value) of a batch of connections opened together: the
        workers share one listening socket, and a batch mostly lands on
        one worker, the next batch often on the other."""
        conns = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(8)]
        out = []
        for c in conns:
            c.sendall(s.request_bytes("/", headers=[("X-Forwarded-For", "192.0.2.1")]))
        for c in conns:
            raw = b""
            while chunk := c.recv(4096):
                raw += chunk
            c.close()
            pid, iso, changed = Response(raw).body.decode().split()
            last_change[pid] = int(changed)
            out.append((pid, iso))
        return out

    def every_worker_says(iso):
        seen = {}

        def step():
            seen.update(answers())
            return len(seen) == 2 and all(v == iso for v in seen.values())

        return poll(step, timeout=20)

    assert every_worker_says("DC")
    loaded = dict(last_change)
    before_write = int(time.time())
    changed = json.loads(json.dumps(COUNTRY))
    changed["records"][1][1]["country"]["iso_code"] = "NW"
    write_db(dbs["dir"], "country.mmdb", changed)
    assert mmdblookup(dbs["country"], "192.0.2.1", "country iso_code") == "NW"
    assert every_worker_says("NW")
    assert poll(lambda: s.error_log().count(f'geoip2 database "{dbs["country"]}" reloaded') == 2)
    # metadata last_change: the load's time, then each worker's swap.
    assert all(loaded[pid] <= before_write <= last_change[pid] for pid in loaded)

    # A broken file: the database in use stays, the error is logged.
    broken = dbs["dir"] / "broken.tmp"
    broken.write_text("not a database\n")
    os.chmod(broken, 0o644)
    os.rename(broken, dbs["country"])
    msg = f'MMDB_open() "{dbs["country"]}" failed (The MaxMind DB file contains invalid metadata)'

    def logged():
        answers()
        return s.error_log().count(msg) == 2

    assert poll(logged, timeout=20)
    assert every_worker_says("NW")
    assert "[error]" in [line for line in s.error_log().splitlines() if msg in line][0]


def config_error(server, http):
    s = server(http + "\n    server { listen 127.0.0.1:PORT; }", start=False)
    code, err = s.test_config()
    assert code == 1
    return err, s


def test_a_bad_database_is_an_emerg(server, dbs, tmp_path):
    missing = tmp_path / "none.mmdb"
    err, s = config_error(server, f"geoip2 {missing} {{ $c country iso_code; }}")
    assert (f'[emerg] MMDB_open() "{missing}" failed (Error opening the specified MaxMind DB file: '
            f'No such file or directory) in {s.conf}:8') in err

    junk = tmp_path / "junk.mmdb"
    junk.write_text("junk\n")
    err, s = config_error(server, f"\n    geoip2 {junk} {{ $c country iso_code; }}")
    assert (f'[emerg] MMDB_open() "{junk}" failed (The MaxMind DB file contains invalid metadata) '
            f'in {s.conf}:9') in err


@pytest.mark.parametrize("block, message", [
    ("$v default=x", 'no key path for "$v"'),
    ("$v deflt=x country iso_code", 'invalid parameter "deflt=x" for "$v"'),
    ("$v default=a default=b country", 'duplicate "default" for "$v"'),
    ("$v source=http_x country", 'invalid source variable name "http_x"'),
    ("$v metadata build", 'unknown metadata field "build"'),
    ("$v metadata", 'invalid number of arguments for metadata of "$v"'),
    ("auto_reload soon; $v country", 'invalid time "soon" in "auto_reload" directive'),
    ("reload 1m; $v country", 'unknown directive "reload"'),
    ("$host country iso_code", 'the duplicate "host" variable'),
])
def test_config_errors(server, dbs, block, message):
    err, s = config_error(server, f"geoip2 {dbs['country']} {{ {block}; }}")
    assert f"[emerg] {message} in {s.conf}:8" in err


def test_the_same_database_twice_is_an_error(server, dbs):
    err, s = config_error(server, f"""geoip2 {dbs['country']} {{ $a country iso_code; }}
    geoip2 {dbs['country']} {{ $b country iso_code; }}""")
    assert f'[emerg] duplicate geoip2 database "{dbs["country"]}" in {s.conf}:9' in err
