"""contrib/pgo/train, the load a "./configure --with-pgo" build is trained
on, run against the binary under test. Its configuration and the answers
it checks must keep working as the server changes, or the release build
fails at its training step; this test finds that first. A short pass
(--scale), since what is checked is that every scenario is served right,
not the profile."""

import subprocess
import sys

from gh_server import BIN, ROOT

SCENARIOS = ["local-return", "small-keepalive", "large", "small-close", "cache-hit",
             "cache-hit-memory", "access-logged", "tls-keepalive", "tls-local"]


def test_the_pgo_training_load_is_served_without_an_error():
    r = subprocess.run([sys.executable, str(ROOT / "contrib" / "pgo" / "train"), "--scale", "0.02", str(BIN)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ran = [line.split(":")[1].strip() for line in r.stdout.splitlines() if line.startswith("train: ")]
    assert ran == SCENARIOS
    assert r.stderr == ""
