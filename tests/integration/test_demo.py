"""The demo configuration (conf/demo.conf), as "make run" serves it: it
passes -t once its certificate exists, and names the missing file
otherwise."""

import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

OPENSSL = shutil.which("openssl")


def copy_demo(prefix):
    for name in ("demo.conf", "site.conf", "mime.types"):
        shutil.copy(REPO_ROOT / "conf" / name, prefix.conf_dir / name)


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
def test_demo_config_is_valid_with_its_certificate(cli, prefix):
    copy_demo(prefix)
    # What "make demo-cert" runs.
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "demo.key", "-out", "demo.crt", "-days", "1", "-subj", "/CN=localhost"],
                   cwd=prefix.conf_dir, check=True, capture_output=True, timeout=60)
    r = cli.run("-t", "-c", "conf/demo.conf")
    assert r.returncode == 0, r
    assert "test is successful" in r.stderr


def test_demo_config_without_certificate_names_it(cli, prefix):
    copy_demo(prefix)
    r = cli.run("-t", "-c", "conf/demo.conf")
    assert r.returncode == 1, r
    assert "demo.crt" in r.stderr
