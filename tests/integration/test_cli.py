"""The command line, as a user sees it: -h -? -v -V -t -T -q -p -c -e -g -s,
config errors with their file:line, and the error logs of a running master.
"""

import os
import re
import signal
import socket
import ssl
import subprocess
import zlib

import pytest

from conftest import free_port, wait_for

MINIMAL = "events { }\n"

USAGE_HEAD = "Usage: gatehouse [-?hvVtTq] [-s signal] [-p prefix]\n"
VERSION_RE = r"gatehouse version: gatehouse/\d+\.\d+\.\d+\n"
TIMESTAMP = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"


def ok_lines(conf):
    return (f"gatehouse: the configuration file {conf} syntax is ok\n"
            f"gatehouse: configuration file {conf} test is successful\n")


def failed(conf, message):
    """stderr of `-t` on a config that fails with `message`."""
    return f"gatehouse: [emerg] {message}\ngatehouse: configuration file {conf} test failed\n"


def directive_known(cli, name, where):
    """Whether this build knows directive `name`, tried at `where`
    ("http", "server" or "location")."""
    blocks = {"http": ("http {", "}"),
              "server": ("http { server {", "} }"),
              "location": ("http { server { location / {", "} } }")}
    open_, close = blocks[where]
    r = cli.test_conf(f"events {{ }}\n{open_} {name} x; {close}\n", name="probe.conf")
    return f'unknown directive "{name}"' not in r.stderr


# ---- -h -? -v -V ------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-h", "-?"])
def test_help(cli, flag):
    r = cli.run(flag, with_prefix=False)
    assert r.returncode == 0
    assert r.stdout == ""
    assert re.match(VERSION_RE + re.escape(USAGE_HEAD), r.stderr), r.stderr
    for opt in ["-?,-h", "-v", "-V", "-t", "-T", "-q", "-s signal", "-p prefix",
                "-e filename", "-c filename", "-g directives"]:
        assert f"  {opt} " in r.stderr, opt
    assert "stop, quit, reopen, reload" in r.stderr


def test_help_flags_agree(cli):
    assert cli.run("-h", with_prefix=False).stderr == cli.run("-?", with_prefix=False).stderr


def test_version(cli):
    r = cli.run("-v", with_prefix=False)
    assert r.returncode == 0
    assert r.stdout == ""
    assert re.fullmatch(VERSION_RE, r.stderr), r.stderr


def test_build_info(cli):
    r = cli.run("-V", with_prefix=False)
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert re.fullmatch(VERSION_RE, lines[0] + "\n")
    assert re.fullmatch(r"built by .+", lines[1])
    text = r.stderr
    # The running library versions are the ones this Python links too.
    assert re.search(r"^built with OpenSSL \S+.* \(running with " + re.escape(ssl.OPENSSL_VERSION)
                     + r"\)$", text, re.M), text
    assert re.search(r"^built with PCRE2 \d+\.\d+ \(running with \d+\.\d+ [\d-]+\)$", text, re.M)
    assert re.search(r"^built with zlib \S+ \(running with "
                     + re.escape(zlib.ZLIB_RUNTIME_VERSION) + r"\)$", text, re.M), text
    assert re.search(r"^(built with jemalloc \S+ \(running with \S+\)|built without jemalloc)$",
                     text, re.M), text
    assert re.search(r"^configure arguments:.*$", lines[-1])


def test_build_info_configure_arguments(cli, gatehouse_bin):
    """The configure arguments are those recorded next to the binary."""
    config_h = gatehouse_bin.parent / "gh_config.h"
    if not config_h.exists():
        pytest.skip("no objs/gh_config.h next to the binary")
    m = re.search(r'#define GH_CONFIGURE_ARGS "(.*)"', config_h.read_text())
    assert m
    r = cli.run("-V", with_prefix=False)
    assert r.stderr.splitlines()[-1] == f"configure arguments: {m.group(1)}"


@pytest.mark.parametrize("flags", [["-vt"], ["-tv"], ["-v", "-t"], ["-Vt"], ["-ht"], ["-vtq"]])
def test_version_then_test(cli, prefix, flags):
    """As nginx's: -v, -V or -h with -t print what they print, then the
    configuration is tested (-q: silently)."""
    conf = prefix.write_conf(MINIMAL)
    r = cli.run(*flags)
    assert r.returncode == 0, r
    assert re.match(VERSION_RE, r.stderr), r.stderr
    if "-h" in flags[0]:
        assert USAGE_HEAD in r.stderr
    if "V" in flags[0]:
        assert "\nconfigure arguments:" in r.stderr
    tail = "" if "q" in flags[0] else ok_lines(conf)
    assert r.stderr.endswith(("\n" if tail else "") + tail)
    assert r.stdout == ""


def test_version_then_failed_test(cli, prefix):
    conf = prefix.write_conf("events {\n")
    r = cli.run("-vt")
    assert r.returncode == 1
    assert re.match(VERSION_RE, r.stderr), r.stderr
    assert r.stderr.endswith(failed(conf, f'unexpected end of file, expecting "}}" in {conf}:2 '
                                         f'(block opened at line 1)'))


def test_version_then_dump(cli, prefix):
    conf = prefix.write_conf(MINIMAL)
    r = cli.run("-vT")
    assert (r.returncode, r.stdout) == (0, f"# configuration file {conf}:\n{MINIMAL}\n")
    assert re.match(VERSION_RE + re.escape(ok_lines(conf)), r.stderr), r.stderr


def test_version_with_signal_only_prints(cli, prefix):
    """-v with -s sends nothing: the version is all, as with nginx."""
    r = cli.run("-v", "-s", "reload")
    assert (r.returncode, r.stdout) == (0, "")
    assert re.fullmatch(VERSION_RE, r.stderr), r.stderr


# ---- -t ---------------------------------------------------------------------

def test_t_ok(cli, prefix):
    conf = prefix.write_conf("worker_processes 2;\nevents { worker_connections 64; }\n")
    r = cli.run("-t")
    assert r.returncode == 0, r
    assert r.stdout == ""
    assert r.stderr == ok_lines(conf)


def test_t_ok_with_http(cli, prefix):
    conf = prefix.write_conf(
        "events { }\n"
        "http {\n"
        "    server {\n"
        "        listen 127.0.0.1:8080;\n"
        "        server_name example.com;\n"
        "        location / { root html; }\n"
        "    }\n"
        "}\n")
    r = cli.run("-t")
    assert (r.returncode, r.stderr) == (0, ok_lines(conf))


def test_t_opens_the_error_logs_under_the_prefix(cli, prefix):
    prefix.write_conf("error_log logs/checked.log;\nevents { }\n")
    r = cli.run("-t")
    assert r.returncode == 0, r
    assert (prefix / "logs/checked.log").exists()


def test_tq_grouped_flags(cli, prefix):
    prefix.write_conf(MINIMAL)
    r = cli.run("-tq")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


# Each config error class of the issue: files to write (conf/...), the
# message with its file:line ({conf} is conf/gatehouse.conf, {dir} conf/).
ERRORS = {
    "unknown directive": (
        {"gatehouse.conf": "events { }\nworker_proceses 2;\n"},
        'unknown directive "worker_proceses" in {conf}:2 (did you mean "worker_processes"?)'),
    "unknown directive, nothing close": (
        {"gatehouse.conf": "events { }\n\nfrobnicate on;\n"},
        'unknown directive "frobnicate" in {conf}:3'),
    "not allowed here": (
        {"gatehouse.conf": "worker_connections 10;\nevents { }\n"},
        '"worker_connections" directive is not allowed here in {conf}:1'),
    "not allowed in a block": (
        {"gatehouse.conf": "events {\n    daemon off;\n}\n"},
        '"daemon" directive is not allowed here in {conf}:2'),
    "too few arguments": (
        {"gatehouse.conf": "events { }\ndaemon;\n"},
        'invalid number of arguments in "daemon" directive in {conf}:2'),
    "too many arguments": (
        {"gatehouse.conf": "events { }\nerror_log a info extra;\n"},
        'invalid number of arguments in "error_log" directive in {conf}:2'),
    "duplicate": (
        {"gatehouse.conf": "daemon on;\nevents { }\ndaemon off;\n"},
        '"daemon" directive is duplicate in {conf}:3'),
    "duplicate block": (
        {"gatehouse.conf": "events { }\nevents { }\n"},
        '"events" directive is duplicate in {conf}:2'),
    "duplicate in a block": (
        {"gatehouse.conf": "events {\n  worker_connections 10;\n  worker_connections 20;\n}\n"},
        '"worker_connections" directive is duplicate in {conf}:3'),
    "value out of range": (
        {"gatehouse.conf": "events {\n  worker_connections 1;\n}\n"},
        'invalid value "1", it must be a number from 2 to 1048576 in "worker_connections" '
        'directive in {conf}:2'),
    "no opening brace": (
        {"gatehouse.conf": "events;\n"},
        'directive "events" has no opening "{{" in {conf}:1'),
    "not terminated by semicolon": (
        {"gatehouse.conf": "events { }\ndaemon on { }\n"},
        'directive "daemon" is not terminated by ";" in {conf}:2'),
    "invalid flag": (
        {"gatehouse.conf": "events { }\ndaemon yes;\n"},
        'invalid value "yes", it must be "on" or "off" in "daemon" directive in {conf}:2'),
    "invalid time": (
        {"gatehouse.conf": "events { }\nworker_shutdown_timeout 5parsecs;\n"},
        'invalid time "5parsecs" in "worker_shutdown_timeout" directive in {conf}:2'),
    "invalid number": (
        {"gatehouse.conf": "events { }\nworker_processes many;\n"},
        'invalid value "many", it must be a number from 1 to 1024 or "auto" in '
        '"worker_processes" directive in {conf}:2'),
    "invalid address port": (
        {"gatehouse.conf": "events { }\nhttp {\n  server {\n    listen 127.0.0.1:99999;\n"
                           "  }\n}\n"},
        'invalid port in "127.0.0.1:99999" in "listen" directive in {conf}:4'),
    "invalid address ipv6": (
        {"gatehouse.conf": "events { }\nhttp {\n  server {\n    listen ::1:80;\n  }\n}\n"},
        'IPv6 addresses must be in brackets in address "::1:80" in "listen" directive '
        'in {conf}:4'),
    "invalid address unix": (
        {"gatehouse.conf": "events { }\nhttp {\n  server {\n    listen unix:rel.sock;\n"
                           "  }\n}\n"},
        'unix socket path must be absolute in address "unix:rel.sock" in "listen" directive '
        'in {conf}:4'),
    "invalid log level": (
        {"gatehouse.conf": "events { }\nerror_log logs/e.log loud;\n"},
        'invalid log level "loud" in "error_log" directive in {conf}:2'),
    "unexpected closing brace": (
        {"gatehouse.conf": "events { }\n}\n"},
        'unexpected "}}" in {conf}:2'),
    "unexpected end of file in a block": (
        {"gatehouse.conf": "events {\n  worker_connections 10;\n"},
        'unexpected end of file, expecting "}}" in {conf}:3 (block opened at line 1)'),
    "unexpected end of file in a directive": (
        {"gatehouse.conf": "events { }\ndaemon off"},
        'unexpected end of file, expecting ";" or "}}" in {conf}:2'),
    "directive ended by a brace": (
        {"gatehouse.conf": "events {\n  worker_connections 10\n}\n"},
        'unexpected "}}", expecting ";" in {conf}:3'),
    "unexpected semicolon": (
        {"gatehouse.conf": "events { }\n;\n"},
        'unexpected ";" in {conf}:2'),
    "unterminated string": (
        {"gatehouse.conf": "events { }\npid \"logs/g.pid;\n\n"},
        'unterminated string in {conf}:2'),
    "text after a quoted string": (
        {"gatehouse.conf": "events { }\npid \"logs/g.pid\"x;\n"},
        'unexpected "x" after quoted string in {conf}:2'),
    "unterminated variable": (
        {"gatehouse.conf": "events { }\nset ${name;\n"},
        'unterminated variable "${{" in {conf}:2'),
    "missing include": (
        {"gatehouse.conf": "events { }\ninclude missing.conf;\n"},
        'open() "{dir}missing.conf" failed (2: No such file or directory) in {conf}:2'),
    "include of a directory": (
        {"gatehouse.conf": "include sites;\nevents { }\n", "sites/a.conf": ""},
        '"{dir}sites" is a directory in {conf}:1'),
    "include with no argument": (
        {"gatehouse.conf": "events { }\ninclude;\n"},
        'invalid number of arguments in "include" directive in {conf}:2'),
    "include loop": (
        {"gatehouse.conf": "include loop.conf;\nevents { }\n", "loop.conf": "include loop.conf;\n"},
        'include nesting is deeper than 32 levels (an include loop?) in {dir}loop.conf:1'),
    "error inside an included file": (
        {"gatehouse.conf": "events { }\nhttp {\n  include sites/*.conf;\n}\n",
         "sites/a.conf": "server {\n  listen 8080;\n}\n",
         "sites/b.conf": "server {\n  listen 8081;\n  lisen 8082;\n}\n"},
        'unknown directive "lisen" in {dir}sites/b.conf:3 (did you mean "listen"?)'),
    "unknown user": (
        {"gatehouse.conf": "events { }\nuser no-such-user-gh;\n"},
        'getpwnam("no-such-user-gh") failed in {conf}:2'),
    "unknown group": (
        {"gatehouse.conf": "events { }\nuser root no-such-group-gh;\n"},
        'getgrnam("no-such-group-gh") failed in {conf}:2'),
    "no events section": (
        {"gatehouse.conf": "worker_processes 1;\n"},
        'no "events" section in configuration'),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=lambda c: c.replace(" ", "_"))
def test_t_errors(cli, prefix, case):
    files, message = ERRORS[case]
    for name, text in files.items():
        prefix.write_conf(text, name)
    conf = prefix.conf_dir / "gatehouse.conf"
    r = cli.run("-t")
    expected = message.format(conf=conf, dir=f"{prefix.conf_dir}/")
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr == failed(conf, expected)


def test_t_invalid_size(cli, prefix):
    if not directive_known(cli, "client_max_body_size", "http"):
        pytest.skip("no size directive in this build")
    conf = prefix.write_conf("events { }\nhttp {\n    client_max_body_size 10q;\n}\n")
    r = cli.run("-t")
    assert r.returncode == 1
    assert r.stderr == failed(
        conf, f'invalid size "10q" in "client_max_body_size" directive in {conf}:3')


def test_t_issue_example_did_you_mean(cli, prefix):
    """The issue's own example: a typo in an included site file."""
    if not directive_known(cli, "proxy_pass", "location"):
        pytest.skip("proxy module not built")
    conf = prefix.write_conf("events { }\nhttp {\n    include site.conf;\n}\n")
    site = prefix.write_conf("server {\n" + "\n" * 9 + "  location / {\n"
                             "    proxy_pas http://127.0.0.1:8081;\n  }\n}\n", "site.conf")
    r = cli.run("-t")
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        f'gatehouse: [emerg] unknown directive "proxy_pas" in {site}:12 '
        f'(did you mean "proxy_pass"?)')
    assert r.stderr == failed(conf, r.stderr.splitlines()[0][len("gatehouse: [emerg] "):])


def test_t_unreadable_include(cli, prefix):
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not apply")
    conf = prefix.write_conf("include secret.conf;\nevents { }\n")
    secret = prefix.write_conf("daemon off;\n", "secret.conf")
    secret.chmod(0)
    r = cli.run("-t")
    assert r.returncode == 1
    assert r.stderr == failed(
        conf, f'open() "{secret}" failed (13: Permission denied) in {conf}:1')


def test_t_unreadable_include_read_error(cli, prefix):
    """A file that opens but cannot be read (root included)."""
    conf = prefix.write_conf("include /proc/self/mem;\nevents { }\n")
    r = cli.run("-t")
    assert r.returncode == 1
    assert r.stderr == failed(
        conf, f'read() "/proc/self/mem" failed (5: Input/output error) in {conf}:1')


def test_t_error_log_cannot_be_opened(cli, prefix):
    conf = prefix.write_conf("error_log nodir/e.log;\nevents { }\n")
    r = cli.run("-t")
    assert r.returncode == 1
    assert r.stderr == failed(
        conf, f'open() "{prefix.path}/nodir/e.log" failed (2: No such file or directory)')


def test_t_missing_config(cli, prefix):
    r = cli.run("-t")
    conf = prefix.conf_dir / "gatehouse.conf"
    assert r.returncode == 1
    assert r.stderr == failed(conf, f'open() "{conf}" failed (2: No such file or directory)')


def test_errors_without_t(cli, prefix):
    """Starting on a bad config fails the same way, without the -t line."""
    conf = prefix.write_conf("events { }\nworker_proceses 2;\n")
    r = cli.run()
    assert r.returncode == 1
    assert r.stderr == (f'gatehouse: [emerg] unknown directive "worker_proceses" in {conf}:2 '
                        f'(did you mean "worker_processes"?)\n')
    assert not prefix.pid_file.exists()


# ---- -q ---------------------------------------------------------------------

def test_q_silences_success(cli, prefix):
    prefix.write_conf(MINIMAL)
    r = cli.run("-t", "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_q_keeps_errors(cli, prefix):
    conf = prefix.write_conf("events { }\ndaemon maybe;\n")
    r = cli.run("-q", "-t")
    assert r.returncode == 1
    assert r.stderr == failed(
        conf, f'invalid value "maybe", it must be "on" or "off" in "daemon" directive in {conf}:2')


# ---- -T ---------------------------------------------------------------------

def test_T_dumps_every_file_with_includes_expanded(cli, prefix):
    main = "worker_processes 1;\nevents {\n    include events.conf;\n}\nhttp {\n" \
           "    include sites/*.conf;\n}\n"
    events = "worker_connections 64;\n"
    site_a = "server {\n    listen 127.0.0.1:8080;\n}\n"
    site_b = "server { listen 127.0.0.1:8081; }"  # no final newline
    conf = prefix.write_conf(main)
    ev = prefix.write_conf(events, "events.conf")
    a = prefix.write_conf(site_a, "sites/a.conf")
    b = prefix.write_conf(site_b, "sites/b.conf")
    r = cli.run("-T")
    assert r.returncode == 0, r
    assert r.stderr == ok_lines(conf)
    assert r.stdout == (f"# configuration file {conf}:\n{main}\n"
                        f"# configuration file {ev}:\n{events}\n"
                        f"# configuration file {a}:\n{site_a}\n"
                        f"# configuration file {b}:\n{site_b}\n\n")


def test_T_shows_a_file_included_twice_once(cli, prefix):
    main = ("worker_processes 1;\ninclude twice.conf;\ninclude twice.conf;\nevents {\n}\n"
            "http {\n    map $args $x {\n        include m.conf;\n        include m.conf;\n    }\n}\n")
    conf = prefix.write_conf(main)
    twice = prefix.write_conf("include inner.conf;\n", "twice.conf")
    inner = prefix.write_conf("# inner\n", "inner.conf")
    m = prefix.write_conf("# m\n", "m.conf")
    r = cli.run("-T")
    assert r.returncode == 0, r
    assert r.stdout == (f"# configuration file {conf}:\n{main}\n"
                        f"# configuration file {twice}:\ninclude inner.conf;\n\n"
                        f"# configuration file {inner}:\n# inner\n\n"
                        f"# configuration file {m}:\n# m\n\n")


def test_T_quiet(cli, prefix):
    conf = prefix.write_conf(MINIMAL)
    r = cli.run("-T", "-q")
    assert r.returncode == 0
    assert r.stderr == ""
    assert r.stdout == f"# configuration file {conf}:\n{MINIMAL}\n"


def test_T_on_a_bad_config_dumps_nothing(cli, prefix):
    conf = prefix.write_conf("events {\n")
    r = cli.run("-T")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == failed(
        conf, f'unexpected end of file, expecting "}}" in {conf}:2 (block opened at line 1)')


# ---- -g ---------------------------------------------------------------------

def test_g_adds_directives(cli, prefix):
    conf = prefix.write_conf(MINIMAL)
    r = cli.run("-t", "-g", "worker_processes 2; error_log logs/g.log info;")
    assert (r.returncode, r.stderr) == (0, ok_lines(conf))
    assert (prefix / "logs/g.log").exists()


def test_a_daemon_lets_go_of_the_terminal_and_keeps_stderr_in_the_error_log(gatehouse_bin, prefix):
    # Started with pipes for its output, as "gatehouse | tail" does: the
    # run ends once the starting process exits (the daemon holds neither
    # pipe), stdin and stdout are /dev/null and stderr is the error log,
    # where what a library writes there is kept [nginx].
    port = free_port()
    prefix.write_conf(f"""daemon on;
pid logs/d.pid;
error_log logs/error.log info;
events {{ }}
http {{ server {{ listen 127.0.0.1:{port}; return 200 "up\\n"; }} }}
""")
    r = subprocess.run([str(gatehouse_bin), "-p", str(prefix.path) + "/"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    def pid_of():
        try:
            return int((prefix / "logs/d.pid").read_text())
        except (OSError, ValueError):
            return None
    pid = wait_for(pid_of, what="the daemon's pid file")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert c.recv(4096).endswith(b"\r\n\r\nup\n")
        fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in ("0", "1", "2")}
        assert fds == {"0": "/dev/null", "1": "/dev/null", "2": str(prefix / "logs/error.log")}
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"))


def test_g_duplicate_with_the_file(cli, prefix):
    conf = prefix.write_conf("daemon on;\nevents { }\n")
    r = cli.run("-t", "-g", "daemon off;")
    assert r.returncode == 1
    assert r.stderr == failed(conf, f'"daemon" directive is duplicate in {conf}:1')


@pytest.mark.parametrize("globals_, message", [
    ("daemon off", 'unexpected end of file, expecting ";" or "}" in command line:1'),
    ("deamon off;", 'unknown directive "deamon" in command line:1 (did you mean "daemon"?)'),
    ("listen 80;", '"listen" directive is not allowed here in command line:1'),
    ("daemon off; daemon on;", '"daemon" directive is duplicate in command line:1'),
    ('pid "x;', "unterminated string in command line:1"),
], ids=["syntax", "unknown", "not_allowed", "duplicate", "unterminated"])
def test_g_errors(cli, prefix, globals_, message):
    conf = prefix.write_conf(MINIMAL)
    r = cli.run("-t", "-g", globals_)
    assert r.returncode == 1
    assert r.stderr == failed(conf, message)


def test_g_applies_to_a_running_master(gatehouse, prefix):
    prefix.write_conf(MINIMAL)
    g = gatehouse.start(globals_="daemon off; pid logs/other.pid; error_log logs/g.log notice;",
                        pid_file=prefix / "logs/other.pid", workers=1)
    wait_for(lambda: re.search(r"\[notice\] \d+#\d+: gatehouse/\S+ started", prefix.read("logs/g.log")),
             what="the started notice in logs/g.log")
    assert not prefix.pid_file.exists()
    g.stop()
    assert not (prefix / "logs/other.pid").exists()


# ---- -p and -c --------------------------------------------------------------

def test_p_relative_to_the_working_directory(cli, prefix, tmp_path):
    conf = prefix.write_conf(MINIMAL)
    rel = os.path.relpath(prefix.path, tmp_path)
    r = cli.run("-p", rel, "-t", with_prefix=False, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, ok_lines(conf))


@pytest.mark.parametrize("slash", ["", "/"])
def test_p_trailing_slash(cli, prefix, slash):
    conf = prefix.write_conf(MINIMAL)
    r = cli.run("-p", f"{prefix.path}{slash}", "-t", with_prefix=False)
    assert (r.returncode, r.stderr) == (0, ok_lines(conf))


def test_p_attached_value(cli, prefix):
    conf = prefix.write_conf(MINIMAL)
    r = cli.run(f"-p{prefix.path}", "-t", with_prefix=False)
    assert (r.returncode, r.stderr) == (0, ok_lines(conf))


def test_c_relative_to_the_prefix_not_the_cwd(cli, prefix, tmp_path):
    other = tmp_path / "elsewhere"
    (other / "conf").mkdir(parents=True)
    (other / "conf" / "alt.conf").write_text("bogus;\n")
    conf = prefix.write_conf(MINIMAL, "alt.conf")
    r = cli.run("-c", "conf/alt.conf", "-t", cwd=other)
    assert (r.returncode, r.stderr) == (0, ok_lines(conf))


def test_c_absolute_and_includes_relative_to_its_directory(cli, prefix, tmp_path):
    d = tmp_path / "etc"
    (d / "parts").mkdir(parents=True)
    main = d / "main.conf"
    main.write_text("include parts/events.conf;\n")
    (d / "parts" / "events.conf").write_text("events { }\n")
    r = cli.run("-c", str(main), "-t")
    assert (r.returncode, r.stderr) == (0, ok_lines(main))


def test_c_missing(cli, prefix):
    r = cli.run("-c", "nope.conf", "-t")
    conf = prefix.path / "nope.conf"
    assert r.returncode == 1
    assert r.stderr == failed(conf, f'open() "{conf}" failed (2: No such file or directory)')


def test_paths_in_the_config_are_relative_to_the_prefix(cli, prefix, tmp_path):
    prefix.write_conf("error_log logs/rel.log;\nevents { }\n")
    r = cli.run("-t", cwd=tmp_path)
    assert r.returncode == 0
    assert (prefix / "logs/rel.log").exists()
    assert not (tmp_path / "logs").exists()


# ---- -e ---------------------------------------------------------------------

def test_e_stderr(cli, prefix):
    conf = prefix.write_conf("events { }\nfrobnicate;\n")
    r = cli.run("-e", "stderr", "-t")
    assert r.returncode == 1
    assert r.stderr == failed(conf, f'unknown directive "frobnicate" in {conf}:2')
    assert list(prefix.logs_dir.iterdir()) == []


def test_e_file_gets_startup_errors(cli, prefix):
    conf = prefix.write_conf("events { }\nfrobnicate;\n")
    r = cli.run("-e", "logs/startup.log", "-t")
    assert r.returncode == 1
    message = f'unknown directive "frobnicate" in {conf}:2'
    assert r.stderr == failed(conf, message)
    log = prefix.read("logs/startup.log")
    assert re.fullmatch(TIMESTAMP + r" \[emerg\] \d+#\d+: " + re.escape(message) + "\n", log), log


def test_e_absolute_path(cli, prefix, tmp_path):
    prefix.write_conf("events { }\ndaemon;\n")
    path = tmp_path / "abs.log"
    r = cli.run("-e", str(path), "-t")
    assert r.returncode == 1
    assert "[emerg] " in path.read_text()


def test_e_unopenable_is_reported(cli, prefix):
    # As nginx: -e replaces the default error log, so a config without
    # "error_log" cannot open its log and fails the test.
    prefix.write_conf(MINIMAL)
    r = cli.run("-e", "/nonexistent/dir/e.log", "-t")
    assert r.returncode == 1
    assert r.stderr.startswith(
        'gatehouse: [alert] could not open error log file: open() "/nonexistent/dir/e.log" '
        "failed (2: No such file or directory)\n")
    assert 'open() "/nonexistent/dir/e.log" failed' in r.stderr.splitlines()[1]


def test_e_is_the_default_error_log(cli, prefix, tmp_path):
    prefix.write_conf(MINIMAL)
    path = tmp_path / "default.log"
    r = cli.run("-e", str(path), "-t")
    assert r.returncode == 0, r.stderr
    assert path.exists()


# ---- -s ---------------------------------------------------------------------

def test_s_without_pid_file(cli, prefix):
    prefix.write_conf(MINIMAL)
    r = cli.run("-s", "stop")
    assert r.returncode == 1
    assert r.stderr == (f'gatehouse: [error] open() "{prefix.pid_file}" failed '
                        f"(2: No such file or directory)\n")


def test_s_with_pid_off(cli, prefix):
    prefix.write_conf("pid off;\nevents { }\n")
    r = cli.run("-s", "reload")
    assert r.returncode == 1
    assert r.stderr == ('gatehouse: [error] no pid file is configured ("pid off"), '
                        'cannot send "reload"\n')


def test_s_with_garbage_in_the_pid_file(cli, prefix):
    prefix.write_conf(MINIMAL)
    prefix.write("logs/gatehouse.pid", "not-a-pid\n")
    r = cli.run("-s", "quit")
    assert r.returncode == 1
    assert r.stderr == f'gatehouse: [error] invalid PID number "not-a-pid" in "{prefix.pid_file}"\n'


def test_s_with_a_stale_pid(cli, prefix):
    prefix.write_conf(MINIMAL)
    prefix.write("logs/gatehouse.pid", "2147483647\n")  # above any pid_max
    r = cli.run("-s", "stop")
    assert r.returncode == 1
    assert r.stderr == "gatehouse: [error] kill(2147483647, 15) failed (3: No such process)\n"


def test_s_on_a_bad_config(cli, prefix):
    conf = prefix.write_conf("events { }\nfrobnicate;\n")
    r = cli.run("-s", "stop")
    assert r.returncode == 1
    assert r.stderr == f'gatehouse: [emerg] unknown directive "frobnicate" in {conf}:2\n'


def test_s_invalid_signal(cli):
    r = cli.run("-s", "restart")
    assert r.returncode == 1
    assert r.stderr.startswith('gatehouse: invalid option: "-s restart"\n' + USAGE_HEAD)


@pytest.mark.parametrize("sig", ["stop", "quit"])
def test_s_stops_a_running_master(gatehouse, cli, prefix, sig):
    prefix.write_conf("error_log logs/error.log notice;\n" + MINIMAL)
    g = gatehouse.start(workers=1)
    r = cli.run("-s", sig)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert g.wait_exit() == 0
    assert not prefix.pid_file.exists()
    assert re.search(r"gatehouse/\S+ started", prefix.read("logs/error.log"))


def test_s_reopen_creates_the_log_again(gatehouse, cli, prefix):
    prefix.write_conf("error_log logs/error.log notice;\n" + MINIMAL)
    g = gatehouse.start(workers=1)
    log = prefix / "logs/error.log"
    wait_for(lambda: "started" in prefix.read("logs/error.log"), what="the started notice")
    log.rename(prefix / "logs/error.log.1")
    r = cli.run("-s", "reopen")
    assert r.returncode == 0, r
    wait_for(log.exists, what="logs/error.log to be reopened")
    assert g.running()
    assert "started" in prefix.read("logs/error.log.1")


def test_running_master_writes_its_pid(gatehouse, prefix):
    prefix.write_conf(MINIMAL)
    g = gatehouse.start(workers=1)
    assert prefix.pid_file.read_text() == f"{g.pid}\n"
    g.signal(signal.SIGTERM)
    assert g.wait_exit() == 0
    assert not prefix.pid_file.exists()


# ---- bad command lines ------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["-x"], 'invalid option: "x"'),
    (["-tx"], 'invalid option: "x"'),
    (["--help"], 'invalid option: "-"'),
    (["-"], 'invalid option: "-"'),
    (["conf/gatehouse.conf"], 'invalid option: "conf/gatehouse.conf"'),
    (["-c"], 'option "-c" requires file name'),
    (["-e"], 'option "-e" requires file name'),
    (["-p"], 'option "-p" requires directory name'),
    (["-g"], 'option "-g" requires parameter'),
    (["-s"], 'option "-s" requires parameter'),
], ids=["unknown", "unknown_grouped", "long", "dash", "no_dash", "c", "e", "p", "g", "s"])
def test_bad_options_print_usage(cli, args, message):
    r = cli.run(*args, with_prefix=False)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"gatehouse: {message}\n{USAGE_HEAD}"), r.stderr
    assert "-g directives : set global directives out of configuration file\n" in r.stderr


# ---- error_log --------------------------------------------------------------

def test_several_error_logs_get_what_their_level_admits(gatehouse, prefix):
    prefix.write_conf("error_log logs/crit.log crit;\n"
                      "error_log logs/error.log error;\n"
                      "error_log logs/notice.log notice;\n"
                      "error_log logs/info.log info;\n"
                      "error_log stderr notice;\n"
                      + MINIMAL)
    g = gatehouse.start(workers=1)
    started = re.compile(r"^" + TIMESTAMP + r" \[notice\] " + str(g.pid)
                         + r"#\d+: gatehouse/\d+\.\d+\.\d+ started$", re.M)
    wait_for(lambda: started.search(prefix.read("logs/notice.log")),
             what="the started notice in logs/notice.log")
    wait_for(lambda: started.search(prefix.read("logs/info.log")),
             what="the started notice in logs/info.log")
    wait_for(lambda: started.search(g.stderr()), what="the started notice on stderr")
    assert g.stop() == 0
    assert "[notice]" not in prefix.read("logs/error.log")
    assert "[notice]" not in prefix.read("logs/crit.log")
    assert (prefix / "logs/error.log").exists()
    assert (prefix / "logs/crit.log").exists()
    # Every line of the notice log is in nginx's form and at most notice.
    for line in prefix.read("logs/notice.log").splitlines():
        assert re.match(TIMESTAMP + r" \[(emerg|alert|crit|error|warn|notice)\] \d+#\d+: ", line)
