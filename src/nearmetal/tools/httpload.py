"""An HTTP load generator that records every request: when it started, how long it took, how it ended and
which backend answered (``X-Served-By``).

    python -m nearmetal.tools.httpload --url http://198.18.0.1:8080/ --rate 200 --duration 20 --out r.tsv.gz
    python -m nearmetal.tools.httpload --url … --concurrency 8 --duration 20 --out r.tsv.gz

``--rate`` is an open loop: request *i* is sent at t0 + i/rate whatever happened to the others (a new
connection each, like independent clients; a stalled service does not slow the offered load down, the way
``wrk2`` measures). ``--concurrency`` is a closed loop: N clients each send the next request when the last
one ended, over a kept-alive connection (re-opened after an error; a request that fails on a reused
connection before any byte came back is retried once on a new one, as HTTP clients do). Every request has a
deadline (``--timeout``). Outcomes: ``ok``, ``http_<status>`` (status ≥ 400), ``refused``, ``reset``,
``timeout``, ``unreachable``, ``overload`` (the open loop had ``--max-in-flight`` requests outstanding), ``error``.

The log goes to ``--out`` (``nearmetal.tools.requestlog``); the last stdout line is ``NEARMETAL_RESULT {json}``
with the counts. Loops are bounded: at most rate × duration requests, and the program ends at most
``--timeout`` after the duration. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nearmetal.tools import requestlog

RESULT_PREFIX = "NEARMETAL_RESULT "
UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


class Target:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"error: {url!r} is not an http:// URL")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query

    def request(self, keep_alive: bool) -> bytes:
        connection = "keep-alive" if keep_alive else "close"
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"User-Agent: nearmetal-httpload\r\nConnection: {connection}\r\n\r\n"
        ).encode()


def classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in UNREACHABLE:
        return "unreachable"
    if isinstance(exc, ConnectionError):
        return "reset"
    return "error"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
    """(status, X-Served-By, whether the server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionResetError("malformed status line")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None:
        await reader.readexactly(int(length))
    else:  # no length: the body runs to the end of the connection
        await reader.read()
    keep = headers.get("connection", "").lower() != "close" and length is not None
    return status, headers.get("x-served-by", ""), keep


class Connection:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.used = 0


async def one_request(target: Target, conn: Connection | None) -> tuple[str, str]:
    """Send one request (on ``conn`` when kept alive); (outcome, backend). Raises on transport errors."""
    keep = conn is not None
    for attempt in (0, 1):
        own = conn or Connection()
        reused = own.used > 0
        try:
            if own.writer is None:
                own.reader, own.writer = await asyncio.open_connection(target.host, target.port)
            assert own.reader is not None
            own.writer.write(target.request(keep))
            await own.writer.drain()
            status, backend, server_keeps = await read_response(own.reader)
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
            own.close()
            if reused and attempt == 0:
                continue  # a kept-alive connection the server had closed: retry once on a new one
            raise
        except BaseException:
            own.close()
            raise
        own.used += 1
        if not keep or not server_keeps:
            own.close()
        outcome = "ok" if status < 400 else f"http_{status}"
        return outcome, backend
    raise ConnectionResetError("unreachable")  # pragma: no cover - the loop returns or raises


class Recorder:
    def __init__(self) -> None:
        self.t0_perf = time.perf_counter()
        self.t0 = time.time()
        self.rows: list[tuple[float, float, str, str]] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0_perf

    async def timed(self, target: Target, conn: Connection | None, timeout: float) -> None:
        start = self.now()
        try:
            async with asyncio.timeout(timeout):
                outcome, backend = await one_request(target, conn)
        except Exception as exc:  # every failure is a measured outcome
            outcome, backend = classify(exc), ""
        self.rows.append((start, self.now() - start, outcome, backend))


async def open_loop(args: argparse.Namespace, target: Target, rec: Recorder) -> None:
    count = max(1, int(args.rate * args.duration))
    tasks: set[asyncio.Task[None]] = set()
    for i in range(count):
        delay = i / args.rate - rec.now()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= args.max_in_flight:
            rec.rows.append((rec.now(), 0.0, "overload", ""))
            continue
        task = asyncio.create_task(rec.timed(target, None, args.timeout))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1.0)


async def closed_loop(args: argparse.Namespace, target: Target, rec: Recorder) -> None:
    async def client() -> None:
        conn = Connection() if args.keepalive else None
        try:
            while rec.now() < args.duration:
                await rec.timed(target, conn, args.timeout)
                if args.think_ms:
                    await asyncio.sleep(args.think_ms / 1000)
        finally:
            if conn is not None:
                conn.close()

    workers = [asyncio.create_task(client()) for _ in range(args.concurrency)]
    await asyncio.wait(workers, timeout=args.duration + args.timeout + 1.0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    target = Target(args.url)
    rec = Recorder()
    if args.rate:
        await open_loop(args, target, rec)
    else:
        await closed_loop(args, target, rec)
    ended = rec.now()
    n = requestlog.write(
        Path(args.out), rec.t0, sorted(rec.rows), mode="rate" if args.rate else "concurrency"
    )
    outcomes: dict[str, int] = {}
    for row in rec.rows:
        outcomes[row[2]] = outcomes.get(row[2], 0) + 1
    return {
        "program": "httpload",
        "format": 1,
        "t0": rec.t0,
        "elapsed_s": round(ended, 6),
        "mode": "rate" if args.rate else "concurrency",
        "rate_rps": args.rate,
        "concurrency": args.concurrency,
        "requests": n,
        "outcomes": outcomes,
        "log": str(args.out),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="requests per second (open loop)")
    mode.add_argument("--concurrency", type=int, help="clients sending back to back (closed loop)")
    parser.add_argument("--duration", type=float, required=True, help="seconds of load")
    parser.add_argument("--timeout", type=float, default=1.0, help="deadline of one request, seconds")
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--keepalive", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--think-ms", type=float, default=0.0, help="closed loop: pause between requests")
    parser.add_argument("--out", required=True, help="request log file (.tsv.gz)")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    result = asyncio.run(run(args))
    print(RESULT_PREFIX + json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
