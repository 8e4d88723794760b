"""TCP request/response: a small client and server, run as two processes (what netperf's TCP_RR measures).

    python -m nearmetal.tools.tcprr server --port 0 [--bind 0.0.0.0]
    python -m nearmetal.tools.tcprr client --host H --port P --size 1 --count 20000 [--warmup 500]

The server prints ``listening on HOST PORT`` once it accepts connections (the port it really got when asked
for 0), echoes every request of ``size`` bytes back, and serves one client. The client sends a request,
waits for the whole response, and times each round trip with ``perf_counter_ns``; after ``warmup``
unmeasured transactions it prints one JSON object: transactions, seconds, transactions_per_s, round-trip
latency statistics in microseconds (mean, min, max, stdev, p50, p90, p99, p99_9), whether the round trips
formed two groups far apart (``rtt_bimodal``, ``rtt_slow_pct``, ``rtt_mode_ratio``; see
``nearmetal.tools.iterstats``) and the host's load average at the end. Nagle's algorithm is off
on both ends, so each request is one segment, as in netperf TCP_RR.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time

from nearmetal.tools.iterstats import percentile
from nearmetal.tools.iterstats import summarize as iteration_stats

__all__ = ["percentile", "summarize"]

HEADER = 4  # each request starts with its size, so the server needs no parameters


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> None:
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k


def serve(bind: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, port))
        listener.listen(1)
        print(f"listening on {bind} {listener.getsockname()[1]}", flush=True)
        conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = bytearray(HEADER)
        buf = bytearray(1 << 20)
        while True:
            try:
                _recv_exact(conn, HEADER, head)
            except ConnectionError:
                return 0
            size = int.from_bytes(head, "big")
            if size > len(buf):
                buf = bytearray(size)
            _recv_exact(conn, size, buf)
            conn.sendall(memoryview(buf)[:size])


def summarize(rtts_ns: list[int], elapsed_s: float, size: int) -> dict[str, object]:
    stats = iteration_stats([v / 1000 for v in rtts_ns])
    out = {
        "tool": "nearmetal-tcprr",
        "version": 2,
        "size_bytes": size,
        "transactions": len(rtts_ns),
        "seconds": elapsed_s,
        "transactions_per_s": len(rtts_ns) / elapsed_s if elapsed_s > 0 else math.nan,
    }
    for key in ("mean", "stdev", "min", "max", "p50", "p90", "p99", "p99_9"):
        out[f"rtt_{key}_us"] = stats.get(key, math.nan)
    # two groups of round trips far apart (a client or server that lost its CPU for a time slice)
    for key in ("bimodal", "slow_pct", "mode_ratio"):
        out[f"rtt_{key}"] = stats.get(key, math.nan)
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return out


def connect(host: str, port: int, timeout_s: float) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout_s)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def client(host: str, port: int, size: int, count: int, warmup: int, seconds: float | None) -> int:
    sock = connect(host, port, 10.0)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = size.to_bytes(HEADER, "big") + b"r" * size
        reply = bytearray(size)
        perf = time.perf_counter_ns
        for _ in range(warmup):
            sock.sendall(request)
            _recv_exact(sock, size, reply)
        rtts: list[int] = []

        def one() -> None:
            t0 = perf()
            sock.sendall(request)
            _recv_exact(sock, size, reply)
            rtts.append(perf() - t0)

        start = perf()
        if seconds:
            deadline = start + int(seconds * 1e9)
            while perf() < deadline:
                one()
        else:
            for _ in range(count):
                one()
        elapsed = (perf() - start) / 1e9
    print(json.dumps(summarize(rtts, elapsed, size)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nearmetal.tools.tcprr", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--size", type=int, default=1)
    c.add_argument("--count", type=int, default=10000)
    c.add_argument("--warmup", type=int, default=200)
    c.add_argument("--seconds", type=float, default=None, help="run for this long instead of --count")
    args = parser.parse_args(argv)
    if args.mode == "server":
        return serve(args.bind, args.port)
    if args.size < 1:
        parser.error("--size must be ≥ 1")
    return client(args.host, args.port, args.size, args.count, args.warmup, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
