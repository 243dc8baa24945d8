"""W3C Trace Context (trace_context_module): what the origin receives in
traceparent/tracestate for each mode, and the $trace_id, $span_id and
$trace_parent_id the access log records for the same request."""

import re

import pytest

from gh_server import server  # noqa: F401  (server: the fixture)
from origins import Origin
from test_proxy import request

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
CLIENT_TP = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
STATE = "congo=t61rcWkgMzE"
TP_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.stop()


@pytest.fixture
def gh(server, origin):
    return server(f"""
    log_format trace '$uri $trace_id $span_id $trace_parent_id';
    access_log logs/trace.log trace;
    server {{
        listen 127.0.0.1:PORT;
        location /propagate/ {{ trace_context propagate; proxy_pass http://{origin.addr}; }}
        location /inject/ {{ trace_context inject; proxy_pass http://{origin.addr}; }}
        location /extract/ {{ trace_context extract; proxy_pass http://{origin.addr}; }}
        location /ignore/ {{ proxy_pass http://{origin.addr}; }}
        location /to-ignore/ {{ trace_context propagate; rewrite ^ /ignore/x last; }}
        location /to-propagate/ {{ trace_context inject; rewrite ^ /propagate/x last; }}
        location /local/ {{ trace_context propagate; return 204; }}
    }}
    """)


def fetch(gh, origin, path, headers=()):
    """The origin's request and the access log's fields for one request."""
    seen = len(origin.requests)
    before = len(gh.read_log("trace.log").splitlines())
    r = request(gh.port, path, headers=headers)
    assert r.status == 200
    assert len(origin.requests) == seen + 1
    line = gh.wait_lines("trace.log", before + 1)[before].decode().split()
    assert line[0] == path or line[0].endswith("/x")
    return origin.requests[seen], {"trace_id": line[1], "span_id": line[2], "parent": line[3]}


def test_propagate_continues_a_valid_trace(gh, origin):
    req, log = fetch(gh, origin, "/propagate/a", [("traceparent", CLIENT_TP), ("tracestate", STATE)])
    assert req.all("traceparent") == [f"00-{CLIENT_TRACE}-{log['span_id']}-00"]  # the client's flags
    assert req.all("tracestate") == [STATE]
    assert log["trace_id"] == CLIENT_TRACE and log["parent"] == CLIENT_SPAN
    assert re.fullmatch("[0-9a-f]{16}", log["span_id"]) and log["span_id"] != CLIENT_SPAN


def test_propagate_starts_a_trace_when_absent(gh, origin):
    req, log = fetch(gh, origin, "/propagate/a", [("tracestate", STATE)])
    m = TP_RE.fullmatch(req.header("traceparent"))
    assert m, req.header("traceparent")
    assert m.groups() == (log["trace_id"], log["span_id"], "01")
    assert req.header("tracestate") is None  # belongs to no trace we continue
    assert log["parent"] == "-"


@pytest.mark.parametrize("headers", [
    [("traceparent", CLIENT_TP.upper())],
    [("traceparent", CLIENT_TP.replace(CLIENT_SPAN, "0" * 16))],
    [("traceparent", "ff" + CLIENT_TP[2:])],
    [("traceparent", CLIENT_TP), ("traceparent", CLIENT_TP)],
    [("traceparent", CLIENT_TP + "-extra")],
])
def test_propagate_restarts_an_invalid_trace(gh, origin, headers):
    req, log = fetch(gh, origin, "/propagate/a", headers + [("tracestate", STATE)])
    assert len(req.all("traceparent")) == 1
    m = TP_RE.fullmatch(req.header("traceparent"))
    assert m and m.groups() == (log["trace_id"], log["span_id"], "01")
    assert log["trace_id"] != CLIENT_TRACE and log["parent"] == "-"
    assert req.header("tracestate") is None


def test_inject_always_starts_a_trace(gh, origin):
    req, log = fetch(gh, origin, "/inject/a", [("traceparent", CLIENT_TP), ("tracestate", STATE)])
    m = TP_RE.fullmatch(req.header("traceparent"))
    assert m and m.groups() == (log["trace_id"], log["span_id"], "01")
    assert log["trace_id"] != CLIENT_TRACE and log["parent"] == "-"
    assert req.header("tracestate") is None


def test_extract_logs_the_client_trace_and_forwards_as_sent(gh, origin):
    req, log = fetch(gh, origin, "/extract/a", [("traceparent", CLIENT_TP), ("tracestate", STATE)])
    assert req.all("traceparent") == [CLIENT_TP] and req.all("tracestate") == [STATE]
    assert log["trace_id"] == CLIENT_TRACE and log["parent"] == CLIENT_SPAN


def test_ignore_is_the_default(gh, origin):
    req, log = fetch(gh, origin, "/ignore/a", [("traceparent", CLIENT_TP), ("tracestate", STATE)])
    assert req.all("traceparent") == [CLIENT_TP] and req.all("tracestate") == [STATE]
    req, log = fetch(gh, origin, "/ignore/a")
    assert req.header("traceparent") is None and req.header("tracestate") is None
    assert re.fullmatch("[0-9a-f]{32}", log["trace_id"])  # still one for the log


def test_every_request_gets_its_own_ids(gh, origin):
    seen = set()
    for _ in range(20):
        req, log = fetch(gh, origin, "/propagate/a")
        seen.add((log["trace_id"], log["span_id"]))
    assert len(seen) == 20


def test_the_location_after_a_redirect_decides(gh, origin):
    # propagate, then an internal redirect to a location that ignores: the
    # client's fields reach the origin as sent.
    req, log = fetch(gh, origin, "/to-ignore/a", [("traceparent", CLIENT_TP), ("tracestate", STATE)])
    assert req.all("traceparent") == [CLIENT_TP] and req.all("tracestate") == [STATE]
    # inject, then a redirect to propagate: the client's trace continues,
    # with the span drawn once for the request.
    req, log = fetch(gh, origin, "/to-propagate/a", [("traceparent", CLIENT_TP), ("tracestate", STATE)])
    assert req.all("traceparent") == [f"00-{CLIENT_TRACE}-{log['span_id']}-00"]
    assert req.all("tracestate") == [STATE]


def test_a_local_answer_logs_ids(gh, origin):
    before = len(gh.read_log("trace.log").splitlines())
    r = request(gh.port, "/local/a", headers=[("traceparent", CLIENT_TP)])
    assert r.status == 204
    line = gh.wait_lines("trace.log", before + 1)[before].decode().split()
    assert line[1:] == [CLIENT_TRACE, line[2], CLIENT_SPAN] and line[2] != CLIENT_SPAN


def test_config_error(server):
    s = server("server { listen 127.0.0.1:PORT; trace_context always; }", start=False)
    code, err = s.test_config()
    assert code != 0
    assert 'invalid value "always" in "trace_context" directive' in err and "gatehouse.conf:" in err, err
