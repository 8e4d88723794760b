"""TCP request/response: a small client and server, run as two processes (what netperf's TCP_RR measures).

    python -m nearmetal.tools.tcprr server --port 0 [--bind 0.0.0.0]
    python -m nearmetal.tools.tcprr client --host H --port P --size 1 --count 20000 [--warmup 500]

The server prints ``listening on HOST PORT`` once it accepts connections (the port it really got when asked
for 0), echoes every request of ``size`` bytes back, and serves one client. The client sends a request,
waits for the whole response, and times each round trip with ``perf_counter_ns``; after ``warmup``
unmeasured transactions it prints one JSON object: transactions, seconds, transactions_per_s and round-trip
latency statistics in microseconds (mean, min, max, stdev, p50, p90, p99, p99_9). Nagle's algorithm is off
on both ends, so each request is one segment, as in netperf TCP_RR.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import statistics
import sys
import time

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


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(rtts_ns: list[int], elapsed_s: float, size: int) -> dict[str, float]:
    us = sorted(v / 1000 for v in rtts_ns)
    return {
        "tool": "nearmetal-tcprr",
        "version": 1,
        "size_bytes": size,
        "transactions": len(us),
        "seconds": elapsed_s,
        "transactions_per_s": len(us) / elapsed_s if elapsed_s > 0 else math.nan,
        "rtt_mean_us": statistics.fmean(us),
        "rtt_stdev_us": statistics.stdev(us) if len(us) > 1 else 0.0,
        "rtt_min_us": us[0],
        "rtt_max_us": us[-1],
        "rtt_p50_us": percentile(us, 50),
        "rtt_p90_us": percentile(us, 90),
        "rtt_p99_us": percentile(us, 99),
        "rtt_p99_9_us": percentile(us, 99.9),
    }


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
