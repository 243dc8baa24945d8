"""Building and installing as a packager does: ./configure's paths and
user (--conf-path, --error-log-path, --http-log-path, --pid-path,
--sbin-path, --man-path, --user, --group, as nginx's configure takes them)
become the binary's defaults and make install's layout; "make install
DESTDIR=..." installs a stripped binary, the man pages where man(1) finds
them, and the contrib files with the configured paths written in.

Nothing here rebuilds the project: configure runs in a scratch directory
(it writes objs/ where it runs), and make install runs only when the
binary under test is this tree's objs/gatehouse and is up to date.
"""

import os
import pwd
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, REPO_ROOT, free_port, run_binary, wait_for

PATHS = {
    "--prefix": "/opt/gh",
    "--sbin-path": "/usr/sbin/gatehouse",
    "--conf-path": "/etc/gatehouse/gatehouse.conf",
    "--error-log-path": "/var/log/gatehouse/error.log",
    "--http-log-path": "weblogs/access.log",
    "--pid-path": "/run/gatehouse.pid",
    "--lock-path": "/run/gatehouse.lock",
    "--man-path": "/usr/share/man",
}


def defines(text):
    """{name: value} of the string #defines of a gh_config.h."""
    return dict(re.findall(r'^#define (GH_\w+) "(.*)"$', text, re.M))


def make_vars(text):
    """{NAME: value} of an objs/Makefile.conf."""
    return dict(re.findall(r"^(\w+) = (.*)$", text, re.M))


def configure(tmp_path, *args):
    """Runs a copy of ./configure in tmp_path; its objs/ are written there."""
    shutil.copy(REPO_ROOT / "configure", tmp_path / "configure")
    r = subprocess.run(["/bin/sh", "./configure", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=DEFAULT_TIMEOUT)
    return r


def need_toolchain():
    for tool in ("g++", "pkg-config"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed: configure cannot run")


# ---- ./configure --------------------------------------------------------------------------------

def test_configure_paths_become_the_defaults(tmp_path):
    need_toolchain()
    args = [f"{k}={v}" for k, v in PATHS.items()] + ["--user=www-data"]
    r = configure(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    h = defines((tmp_path / "objs" / "gh_config.h").read_text())
    assert h["GH_PREFIX"] == "/opt/gh/"
    assert h["GH_CONF_PATH"] == "/etc/gatehouse/gatehouse.conf"
    assert h["GH_ERROR_LOG_PATH"] == "/var/log/gatehouse/error.log"
    # A relative path stays relative: the binary takes it under its prefix
    # (-p), as nginx's does.
    assert h["GH_HTTP_LOG_PATH"] == "weblogs/access.log"
    assert h["GH_PID_PATH"] == "/run/gatehouse.pid"
    # Without --group, the group is named as the user.
    assert (h["GH_USER"], h["GH_GROUP"]) == ("www-data", "www-data")
    assert h["GH_CONFIGURE_ARGS"] == " ".join(args)
    # make install's paths are all absolute.
    m = make_vars((tmp_path / "objs" / "Makefile.conf").read_text())
    assert m["PREFIX"] == "/opt/gh"
    assert m["SBIN_PATH"] == "/usr/sbin/gatehouse"
    assert m["CONF_PATH"] == "/etc/gatehouse/gatehouse.conf"
    assert m["ERROR_LOG_PATH"] == "/var/log/gatehouse/error.log"
    assert m["HTTP_LOG_PATH"] == "/opt/gh/weblogs/access.log"
    assert m["PID_PATH"] == "/run/gatehouse.pid"
    assert m["MAN_PATH"] == "/usr/share/man"


def test_configure_defaults(tmp_path):
    need_toolchain()
    r = configure(tmp_path)
    assert r.returncode == 0, r.stderr
    h = defines((tmp_path / "objs" / "gh_config.h").read_text())
    assert h["GH_PREFIX"] == "/usr/local/gatehouse/"
    assert h["GH_CONF_PATH"] == "conf/gatehouse.conf"
    assert h["GH_ERROR_LOG_PATH"] == "logs/error.log"
    assert h["GH_HTTP_LOG_PATH"] == "logs/access.log"
    assert h["GH_PID_PATH"] == "logs/gatehouse.pid"
    # nginx's configure: the group nobody if it exists, else nogroup
    # (Debian's group of nobody) if that exists.
    expected = "nobody"
    if not subprocess.run(["getent", "group", "nobody"], capture_output=True).returncode == 0 \
            and subprocess.run(["getent", "group", "nogroup"], capture_output=True).returncode == 0:
        expected = "nogroup"
    assert (h["GH_USER"], h["GH_GROUP"]) == ("nobody", expected)
    assert f"checking for {expected} group ... found" in r.stdout
    m = make_vars((tmp_path / "objs" / "Makefile.conf").read_text())
    assert m["SBIN_PATH"] == "/usr/local/gatehouse/sbin/gatehouse"
    assert m["MAN_PATH"] == "/usr/local/gatehouse/share/man"


def test_configure_again_keeps_unchanged_files(tmp_path):
    """The same options again rewrite nothing: nothing is rebuilt."""
    need_toolchain()
    assert configure(tmp_path, "--user=daemon").returncode == 0
    files = [tmp_path / "objs" / n for n in ("gh_config.h", "Makefile.conf", "modules.cc")]
    before = [f.stat().st_mtime_ns for f in files]
    assert configure(tmp_path, "--user=daemon").returncode == 0
    assert [f.stat().st_mtime_ns for f in files] == before


@pytest.mark.parametrize("arg", ["--conf-path=/etc/my gatehouse.conf", '--pid-path=/run/"x"',
                                 "--user=a$b", "--sbin-path=/usr/sbin/a|b"])
def test_configure_refuses_unsafe_values(tmp_path, arg):
    """Paths and names go into C strings, make variables and sed commands."""
    r = configure(tmp_path, arg)
    assert r.returncode == 1
    assert r.stderr.startswith("configure: error: invalid value"), r.stderr
    assert not (tmp_path / "objs").exists()


# ---- the binary's defaults ------------------------------------------------------------------------

def config_h(gatehouse_bin):
    p = gatehouse_bin.parent / "gh_config.h"
    if not p.exists():
        pytest.skip("no objs/gh_config.h next to the binary")
    return defines(p.read_text())


def test_help_shows_the_configured_defaults(cli, gatehouse_bin):
    h = config_h(gatehouse_bin)
    r = cli.run("-h", with_prefix=False)
    assert f"-p prefix     : set prefix path (default: {h['GH_PREFIX']})" in r.stderr
    assert f"-e filename   : set error log file (default: {h['GH_ERROR_LOG_PATH']})" in r.stderr
    assert f"-c filename   : set configuration file (default: {h['GH_CONF_PATH']})" in r.stderr


def test_default_paths_follow_the_configured_ones(cli, prefix, gatehouse_bin):
    """Without -c, "pid", "error_log" and "access_log", the paths of
    ./configure apply, relative ones under the prefix (-p)."""
    h = config_h(gatehouse_bin)
    if any(h[k].startswith("/") for k in ("GH_CONF_PATH", "GH_ERROR_LOG_PATH", "GH_HTTP_LOG_PATH")):
        pytest.skip("configured with absolute paths: this test would write outside its prefix")
    conf = prefix / h["GH_CONF_PATH"]
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("events { }\nhttp { server { listen 127.0.0.1:1; } }\n")
    for k in ("GH_ERROR_LOG_PATH", "GH_HTTP_LOG_PATH"):
        (prefix / h[k]).parent.mkdir(parents=True, exist_ok=True)
    r = cli.run("-t")
    assert r.returncode == 0, r
    assert f"configuration file {conf} test is successful" in r.stderr
    assert (prefix / h["GH_ERROR_LOG_PATH"]).exists()
    assert (prefix / h["GH_HTTP_LOG_PATH"]).exists()


# ---- make install ---------------------------------------------------------------------------------

def make_env():
    """The environment for a make of this tree: not the jobserver of a
    make that may be running the tests."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return env


@pytest.fixture
def installable(gatehouse_bin):
    """Skips unless `make install` would install the binary under test
    without building anything."""
    if not shutil.which("make") or not shutil.which("objcopy"):
        pytest.skip("make or objcopy is not installed")
    if gatehouse_bin.resolve() != (REPO_ROOT / "objs" / "gatehouse").resolve():
        pytest.skip("the binary under test is not this tree's objs/gatehouse")
    r = subprocess.run(["make", "-q", "objs/gatehouse"], cwd=REPO_ROOT, env=make_env(),
                       capture_output=True, timeout=DEFAULT_TIMEOUT)
    if r.returncode != 0:
        pytest.skip("objs/gatehouse is not up to date: the tests do not build")


def make_install(destdir, *overrides):
    r = subprocess.run(["make", "-s", "install", f"DESTDIR={destdir}", *overrides], cwd=REPO_ROOT,
                       env=make_env(), capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def sections(binary):
    r = subprocess.run(["readelf", "-S", "-W", str(binary)], capture_output=True, text=True,
                       timeout=DEFAULT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return re.findall(r"\]\s+(\.\S+)", r.stdout)


def installed_prefix(gatehouse_bin):
    h = config_h(gatehouse_bin)
    return h["GH_PREFIX"].rstrip("/") or "/"


def test_install_layout(installable, tmp_path, gatehouse_bin):
    make_install(tmp_path)
    root = tmp_path / installed_prefix(gatehouse_bin).lstrip("/")
    binary = root / "sbin" / "gatehouse"
    assert os.access(binary, os.X_OK)
    # Stripped: no symbols, no debug information; those stay apart, in
    # objs/gatehouse.debug, which the binary names.
    names = sections(binary)
    assert not [n for n in names if n.startswith(".debug") or n in (".symtab", ".strtab")], names
    assert ".gnu_debuglink" in names
    assert any(n.startswith(".debug_info") for n in sections(REPO_ROOT / "objs" / "gatehouse.debug"))
    r = run_binary(binary, ["-v"])
    assert r.returncode == 0 and "gatehouse version: gatehouse/" in r.stderr
    # The configuration files, each with its pristine copy, and conf.d/.
    for name in ("gatehouse.conf", "mime.types", "demo.conf", "site.conf"):
        assert (root / "conf" / name).read_bytes() == (REPO_ROOT / "conf" / name).read_bytes()
        assert (root / "conf" / (name + ".default")).exists()
    assert (root / "conf" / "conf.d").is_dir()
    assert (root / "html" / "index.html").exists()
    assert (root / "logs").is_dir()
    # The man pages, where man(1) finds them once the binary's directory
    # is on PATH (man-db looks in ../share/man of each PATH entry).
    for page in ("man8/gatehouse.8", "man5/gatehouse.conf.5"):
        assert (root / "share" / "man" / page).read_bytes() == (REPO_ROOT / "man" / page.split("/")[1]).read_bytes()
    if shutil.which("man"):
        env = dict(os.environ, PATH=f"{root / 'sbin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        env.pop("MANPATH", None)
        r = subprocess.run(["man", "-w", "gatehouse"], env=env, capture_output=True, text=True,
                           timeout=DEFAULT_TIMEOUT)
        assert r.stdout.strip() == str(root / "share" / "man" / "man8" / "gatehouse.8"), r
    # The contrib files, with the paths of the installation (not DESTDIR).
    prefix = installed_prefix(gatehouse_bin)
    unit = (root / "share" / "gatehouse" / "gatehouse.service").read_text()
    assert "@" not in unit.split("[Unit]")[1]
    assert f"ExecStart={prefix}/sbin/gatehouse\n" in unit
    assert f"PIDFile={prefix}/logs/gatehouse.pid\n" in unit
    rotate = (root / "share" / "gatehouse" / "logrotate").read_text()
    assert f"\n{prefix}/logs/*.log {{\n" in rotate
    assert "@" not in rotate and str(tmp_path) not in unit + rotate


def test_install_keeps_an_edited_configuration(installable, tmp_path, gatehouse_bin):
    make_install(tmp_path)
    conf = tmp_path / installed_prefix(gatehouse_bin).lstrip("/") / "conf" / "gatehouse.conf"
    conf.write_text("# mine\n")
    make_install(tmp_path)
    assert conf.read_text() == "# mine\n"
    assert conf.with_name("gatehouse.conf.default").read_bytes() == (REPO_ROOT / "conf" / "gatehouse.conf").read_bytes()


def test_install_in_configured_paths(installable, tmp_path):
    """A packager's layout (the paths of ./configure, given here to make
    directly, as objs/Makefile.conf would): everything where it says, the
    configuration file under its configured name."""
    paths = {"PREFIX": "/usr/share/gatehouse", "SBIN_PATH": "/usr/sbin/gatehouse",
             "CONF_PATH": "/etc/gatehouse/main.conf", "ERROR_LOG_PATH": "/var/log/gatehouse/error.log",
             "HTTP_LOG_PATH": "/var/log/gatehouse-web/access.log", "PID_PATH": "/run/gatehouse.pid",
             "MAN_PATH": "/usr/share/man"}
    make_install(tmp_path, *[f"{k}={v}" for k, v in paths.items()])
    d = tmp_path
    assert os.access(d / "usr/sbin/gatehouse", os.X_OK)
    assert (d / "etc/gatehouse/main.conf").read_bytes() == (REPO_ROOT / "conf/gatehouse.conf").read_bytes()
    assert (d / "etc/gatehouse/mime.types").exists() and (d / "etc/gatehouse/conf.d").is_dir()
    assert (d / "var/log/gatehouse").is_dir() and (d / "var/log/gatehouse-web").is_dir()
    assert (d / "usr/share/gatehouse/html/index.html").exists()
    assert (d / "usr/share/man/man8/gatehouse.8").exists()
    unit = (d / "usr/share/gatehouse/share/gatehouse/gatehouse.service").read_text()
    assert "ExecStart=/usr/sbin/gatehouse\n" in unit and "PIDFile=/run/gatehouse.pid\n" in unit
    rotate = (d / "usr/share/gatehouse/share/gatehouse/logrotate").read_text()
    assert "\n/var/log/gatehouse/*.log /var/log/gatehouse-web/*.log {\n" in rotate
    assert "/usr/sbin/gatehouse -s reopen" in rotate and 'cat /run/gatehouse.pid' in rotate


def test_installed_default_configuration_serves_the_welcome_page(installable, tmp_path, gatehouse_bin):
    """The installed configuration passes -t, and, moved to a free port,
    serves html/ (by workers that are nobody when the tests run as root)."""
    make_install(tmp_path)
    root = tmp_path / installed_prefix(gatehouse_bin).lstrip("/")
    binary = root / "sbin" / "gatehouse"
    r = run_binary(binary, ["-p", root, "-t"])
    assert r.returncode == 0, r
    assert f"configuration file {root}/conf/gatehouse.conf test is successful" in r.stderr
    conf = root / "conf" / "gatehouse.conf"
    port = free_port()
    conf.write_text(conf.read_text().replace("listen 80;", f"listen 127.0.0.1:{port};"))
    p = subprocess.Popen([str(binary), "-p", str(root), "-g", "daemon off;"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
    try:
        def page():
            if p.poll() is not None:
                pytest.fail(f"gatehouse exited: {p.stderr.read().decode()}")
            try:
                with direct.open(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    return resp.status, resp.read()
            except OSError:
                return None
        status, body = wait_for(page, what="the welcome page")
        assert status == 200 and b"Welcome to gatehouse" in body
        if os.geteuid() == 0:
            nobody = pwd.getpwnam(config_h(gatehouse_bin)["GH_USER"]).pw_uid
            assert (root / "client_body_temp").stat().st_uid == nobody
    finally:
        p.terminate()
        p.wait(timeout=DEFAULT_TIMEOUT)
