"""The configuration "make install" installs (conf/gatehouse.conf): a
plain site on port 80 that reads any conf.d/*.conf, none being needed (an
include glob that matches nothing is no error, as in nginx), and that
leaves the paths and the user to ./configure's defaults."""

import re
import shutil

from conftest import REPO_ROOT

CONF = REPO_ROOT / "conf" / "gatehouse.conf"


def install_conf(prefix):
    for name in ("gatehouse.conf", "mime.types"):
        shutil.copy(REPO_ROOT / "conf" / name, prefix.conf_dir / name)
    return prefix.conf_dir / "gatehouse.conf"


def ok(conf):
    return (f"gatehouse: the configuration file {conf} syntax is ok\n"
            f"gatehouse: configuration file {conf} test is successful\n")


def directives(text):
    """The directive names of a configuration, comments left out."""
    return re.findall(r"^\s*([a-z_]+)\b", re.sub(r"#.*", "", text), re.M)


def test_without_conf_d(cli, prefix):
    conf = install_conf(prefix)
    assert not (prefix.conf_dir / "conf.d").exists()
    r = cli.run("-t")
    assert (r.returncode, r.stderr) == (0, ok(conf))


def test_with_an_empty_conf_d(cli, prefix):
    conf = install_conf(prefix)
    (prefix.conf_dir / "conf.d").mkdir()
    r = cli.run("-t")
    assert (r.returncode, r.stderr) == (0, ok(conf))


def test_sites_in_conf_d_are_read(cli, prefix):
    conf = install_conf(prefix)
    site = prefix.write_conf("server {\n    listen 127.0.0.1:8089;\n    server_name example.com;\n}\n",
                             "conf.d/example.conf")
    r = cli.run("-T")
    assert r.returncode == 0, r
    assert f"# configuration file {site}:\n" in r.stdout
    prefix.write_conf("server {\n    lisen 8089;\n}\n", "conf.d/broken.conf")
    r = cli.run("-t")
    assert r.returncode == 1
    assert f'unknown directive "lisen" in {prefix.conf_dir}/conf.d/broken.conf:2' in r.stderr


def test_leaves_paths_and_user_to_configure():
    """No directive that would override what ./configure chose."""
    text = CONF.read_text()
    names = directives(text)
    assert "include" in names and "server" in names
    for name in ("error_log", "access_log", "pid", "user", "proxy_pass", "upstream"):
        assert name not in names, name
    assert re.search(r"^\s*listen 80;$", text, re.M)
    assert re.search(r"^\s*include conf\.d/\*\.conf;$", text, re.M)
