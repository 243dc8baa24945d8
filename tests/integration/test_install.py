"""Building as a packager does: ./configure's paths and user
(--conf-path, --error-log-path, --http-log-path, --pid-path, --sbin-path,
--man-path, --user, --group, as nginx's configure takes them) become the
binary's defaults and make install's paths.

Nothing here rebuilds the project: configure runs in a scratch directory
(it writes objs/ where it runs).
"""

import re
import shutil
import subprocess

import pytest

from conftest import DEFAULT_TIMEOUT, REPO_ROOT

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
