"""add_header and expires: which statuses get them, "always", inheritance
between levels, variables, and nginx's Expires / Cache-Control values."""

import email.utils
import os
import time

from gh_server import Server, require_binary, server  # noqa: F401

FILES = {
    "index.html": "hello\n",
    "a/b.txt": "abc",
    "dir/x.txt": "x",
    "e/f.txt": "f",
    "old.txt": "old",
}


def when(value):
    """An HTTP date as seconds since the epoch."""
    assert value is not None
    return int(email.utils.parsedate_to_datetime(value).timestamp())


# ---- add_header ------------------------------------------------------------------


def test_add_header_statuses_and_always(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            add_header X-A a;
            add_header X-Uri "uri=$uri";
            add_header X-Always yes always;
            add_header X-Empty "";
        }
        """,
        FILES,
    )
    r = s.get("/a/b.txt")
    assert r.status == 200
    assert r.header("X-A") == "a"
    assert r.header("X-Uri") == "uri=/a/b.txt"
    assert r.header("X-Always") == "yes"
    # An empty value adds nothing.
    assert r.header("X-Empty") is None

    # 301 (a directory without its slash) and 304 are in nginx's list.
    r = s.get("/dir")
    assert r.status == 301 and r.header("X-A") == "a"
    etag = s.get("/a/b.txt").header("ETag")
    r = s.get("/a/b.txt", [("If-None-Match", etag)])
    assert r.status == 304 and r.header("X-A") == "a" and r.header("X-Always") == "yes"

    # Other statuses get only "always" headers.
    r = s.get("/missing")
    assert r.status == 404
    assert r.header("X-A") is None and r.header("X-Uri") is None
    assert r.header("X-Always") == "yes"


def test_add_header_inheritance(server):
    s = server(
        """
        add_header X-Http http;
        server {
            listen 127.0.0.1:PORT;
            server_name one;
            root html;
            add_header X-Srv srv;
            add_header X-Srv2 srv2;
            location /a/ { }
            location /e/ { add_header X-Loc loc; }
        }
        server {
            listen 127.0.0.1:PORT;
            server_name two;
            root html;
            location /e/ { add_header X-Loc2 loc2 always; }
        }
        """,
        FILES,
    )

    def names(r):
        return [n for n, _ in r.headers if n.startswith("X-")]

    # A level with add_header of its own inherits none from above.
    assert names(s.get("/a/b.txt", host="one")) == ["X-Srv", "X-Srv2"]
    assert names(s.get("/e/f.txt", host="one")) == ["X-Loc"]
    assert names(s.get("/a/b.txt", host="two")) == ["X-Http"]
    assert names(s.get("/e/f.txt", host="two")) == ["X-Loc2"]


def test_add_header_replaces_etag_and_last_modified(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            location /a/ {
                add_header ETag '"mine"';
                add_header Last-Modified "Mon, 01 Jan 2024 00:00:00 GMT";
                add_header Cache-Control private;
                add_header Cache-Control no-transform;
            }
            location /e/ { add_header Last-Modified "Monday, 01-Jan-24 00:00:00 GMT"; }
            location /dir/ { add_header Last-Modified ""; }
        }
        """,
        FILES,
    )
    r = s.get("/a/b.txt")
    assert r.all("ETag") == ['"mine"']
    assert r.all("Last-Modified") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
    # Cache-Control may be given several times.
    assert r.all("Cache-Control") == ["private", "no-transform"]
    # If-Range compares with the operator's time [nginx].
    r = s.get("/a/b.txt", [("Range", "bytes=1-"), ("If-Range", "Mon, 01 Jan 2024 00:00:00 GMT")])
    assert (r.status, r.body) == (206, b"bc")
    r = s.get("/a/b.txt", [("Range", "bytes=1-"), ("If-Range", "Tue, 02 Jan 2024 00:00:00 GMT")])
    assert (r.status, r.body) == (200, b"abc")
    # Text in another form goes as written, and no time is the file's any
    # more: If-Range cannot match. An empty value removes the field.
    r = s.get("/e/f.txt", [("Range", "bytes=0-0"), ("If-Range", "Monday, 01-Jan-24 00:00:00 GMT")])
    assert (r.status, r.all("Last-Modified")) == (200, ["Monday, 01-Jan-24 00:00:00 GMT"])
    r = s.get("/dir/x.txt")
    assert r.status == 200 and r.header("Last-Modified") is None


# ---- expires ---------------------------------------------------------------------


def test_expires_values(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            expires 1h;
            location = /e/epoch { expires epoch; return 200 x; }
            location = /e/max { expires max; return 200 x; }
            location = /e/neg { expires -1; return 200 x; }
            location = /e/zero { expires 0; return 200 x; }
            location = /e/plus { expires +1d; return 200 x; }
            location /dir/ { expires off; }
            location /e/ { add_header Cache-Control private; }
        }
        """,
        FILES,
    )
    r = s.get("/a/b.txt")  # the server's "expires 1h"
    assert when(r.header("Expires")) - when(r.header("Date")) == 3600
    assert r.all("Cache-Control") == ["max-age=3600"]

    r = s.get("/e/epoch")
    assert r.header("Expires") == "Thu, 01 Jan 1970 00:00:01 GMT"
    assert r.all("Cache-Control") == ["no-cache"]

    r = s.get("/e/max")
    assert r.header("Expires") == "Thu, 31 Dec 2037 23:55:55 GMT"
    assert r.all("Cache-Control") == ["max-age=315360000"]

    r = s.get("/e/neg")
    assert when(r.header("Expires")) - when(r.header("Date")) == -1
    assert r.all("Cache-Control") == ["no-cache"]

    r = s.get("/e/zero")
    assert r.header("Expires") == r.header("Date")
    assert r.all("Cache-Control") == ["max-age=0"]

    r = s.get("/e/plus")
    assert when(r.header("Expires")) - when(r.header("Date")) == 86400
    assert r.all("Cache-Control") == ["max-age=86400"]

    r = s.get("/dir/x.txt")
    assert r.header("Expires") is None and r.header("Cache-Control") is None

    # expires first, then add_header appends its own Cache-Control.
    r = s.get("/e/f.txt")
    assert r.all("Cache-Control") == ["max-age=3600", "private"]
    assert r.all("Expires") and len(r.all("Expires")) == 1

    # Not for a 404.
    r = s.get("/missing")
    assert r.status == 404 and r.header("Expires") is None and r.header("Cache-Control") is None


def test_expires_modified(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            location = /index.html { expires modified +1d; }
            location = /old.txt { expires modified 1h; }
        }
        """,
        FILES,
    )
    now = int(time.time())
    os.utime(s.prefix / "html" / "index.html", (now - 1000, now - 1000))
    os.utime(s.prefix / "html" / "old.txt", (now - 7200, now - 7200))

    r = s.get("/index.html")
    lm, exp, date = when(r.header("Last-Modified")), when(r.header("Expires")), when(r.header("Date"))
    assert exp == lm + 86400
    assert r.all("Cache-Control") == [f"max-age={exp - date}"]

    # Last-Modified + 1h is in the past: no-cache.
    r = s.get("/old.txt")
    assert when(r.header("Expires")) == when(r.header("Last-Modified")) + 3600
    assert r.all("Cache-Control") == ["no-cache"]


def test_expires_time_of_day(server):
    tod = time.localtime(time.time() + 3 * 3600)
    at = f"{tod.tm_hour}h{tod.tm_min}m"
    s = server(
        f"""
        server {{
            listen 127.0.0.1:PORT;
            root html;
            expires @{at};
        }}
        """,
        FILES,
    )
    r = s.get("/a/b.txt")
    exp, date = when(r.header("Expires")), when(r.header("Date"))
    assert 0 < exp - date <= 86400
    shown = time.localtime(exp)
    assert (shown.tm_hour, shown.tm_min, shown.tm_sec) == (tod.tm_hour, tod.tm_min, 0)
    assert r.all("Cache-Control") == [f"max-age={exp - date}"]


def test_expires_with_variable(server):
    s = server(
        """
        server {
            listen 127.0.0.1:PORT;
            root html;
            expires $arg_e;
            location /m/ { alias html/a/; expires modified $arg_e; }
        }
        """,
        FILES,
    )
    r = s.get("/a/b.txt?e=2h")
    assert r.all("Cache-Control") == ["max-age=7200"]
    r = s.get("/a/b.txt?e=epoch")
    assert r.header("Expires") == "Thu, 01 Jan 1970 00:00:01 GMT"
    r = s.get("/a/b.txt?e=off")
    assert r.header("Expires") is None and r.header("Cache-Control") is None
    # A value that is none: the response goes without Expires, and the log
    # says why [nginx is silent].
    r = s.get("/a/b.txt?e=soon")
    assert (r.status, r.body, r.header("Expires")) == (200, b"abc", None)
    assert 'invalid value "soon" in "expires" value' in s.error_log()
    # After "modified", epoch, max and off are not times.
    for v in ("epoch", "max", "off", "2h"):
        r = s.get(f"/m/b.txt?e={v}")
        assert r.status == 200
        assert (r.header("Expires") is None) == (v != "2h"), v


# ---- configuration errors --------------------------------------------------------


def test_config_errors(tmp_path):
    require_binary()
    cases = [
        ("expires modified @1h;", 'daily time cannot be used with "modified" parameter'),
        ("expires modified epoch;", 'invalid value "epoch"'),
        ("expires @25h;", "daily time value must be less than 24 hours"),
        ("expires 1x;", 'invalid value "1x"'),
        ("expires 500ms;", 'invalid value "500ms"'),
        ("expires after 1h;", 'invalid value "after"'),
        ("expires 1h; expires 2h;", '"expires" directive is duplicate'),
        ("add_header X-A a sometimes;", 'invalid parameter "sometimes"'),
        ("add_header X-A;", 'invalid number of arguments in "add_header" directive'),
    ]
    for i, (http, message) in enumerate(cases):
        s = Server(tmp_path / str(i), "server { listen 127.0.0.1:PORT; }\n" + http)
        rc, err = s.test_config()
        assert rc != 0 and message in err, (http, err)
