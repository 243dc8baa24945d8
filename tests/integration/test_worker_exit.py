"""What the master logs when a worker exits, as nginx: "worker process N
exited with code 0" at notice however the worker was told to stop (the
master's QUIT or TERM, or a signal to the whole process group, as
Ctrl-C and systemd's stop send), "exited on signal 9" at alert."""

import os
import re
import signal

from conftest import free_port, process_state, wait_for

CONF = """
worker_processes 2;
error_log logs/error.log info;
events {{ worker_connections 64; }}
http {{ server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }} }}
"""


def start(gatehouse):
    port = free_port()
    g = gatehouse.start(CONF.format(port=port), ports=[port])
    return g, g.wait_workers(2)


def log_of(g):
    return (g.prefix.path / "logs" / "error.log").read_text()


def exits(g, workers):
    return {w: re.findall(r"\[(\w+)\] \d+#0: worker process %d exited (.*)" % w, log_of(g)) for w in workers}


def test_terminal_or_systemd_stop_logs_notices(gatehouse):
    g, workers = start(gatehouse)
    # start_new_session: the master leads its process group, as a service
    # does under systemd (KillMode=control-group signals every process).
    # The master is held while the workers exit, so that it learns of
    # their exits before its own TERM, as a busy master may: then it had
    # not told them to stop itself.
    os.kill(g.pid, signal.SIGSTOP)
    try:
        os.killpg(g.pid, signal.SIGTERM)
        wait_for(lambda: all(process_state(w) == "Z" for w in workers), what="the workers exited")
    finally:
        os.kill(g.pid, signal.SIGCONT)
    assert g.wait_exit() == 0
    assert exits(g, workers) == {w: [("notice", "with code 0")] for w in workers}, log_of(g)
    assert "[alert]" not in log_of(g)


def test_quit_logs_notices(gatehouse):
    g, workers = start(gatehouse)
    g.signal(signal.SIGQUIT)
    assert g.wait_exit() == 0
    assert exits(g, workers) == {w: [("notice", "with code 0")] for w in workers}, log_of(g)
    assert "[alert]" not in log_of(g)


def test_a_killed_worker_is_an_alert_and_is_replaced(gatehouse):
    g, workers = start(gatehouse)
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: exits(g, workers)[workers[0]], what="the exit logged")
    assert exits(g, workers)[workers[0]] == [("alert", "on signal 9")]
    wait_for(lambda: [w for w in g.children() if w not in workers], what="a new worker")
