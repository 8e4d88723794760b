"""A small HTTP/1.1 server standing in for one replica of a service (seed 001's "Hello from Cluster 00x").

    python -m nearmetal.tools.httpserver --listen 198.18.1.2:8081 --name c1-0

Every GET answers ``Hello from <cluster> (<name>)`` with an ``X-Served-By: <name>`` header, so a client can
tell which cluster served it; ``/healthz`` answers ``ok`` (the load balancer's health check). Keep-alive as
HTTP/1.1 says. SIGTERM (what Kubernetes sends when a deployment is scaled down) stops accepting connections,
lets requests in flight finish for up to ``--drain-s`` and exits 0; SIGKILL is the crash. Standard library
only, so it starts fast on a busy host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

IDLE_TIMEOUT_S = 30.0


async def handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    name: str,
    body: bytes,
    delay_s: float,
    busy: set[asyncio.Task[None]],
    stopping: asyncio.Event,
) -> None:
    task = asyncio.current_task()
    try:
        while not stopping.is_set():
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            busy.add(task)  # type: ignore[arg-type]
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            _, path, version = parts
            headers = {}
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            keep = (
                headers.get("connection", "").lower() != "close"
                and version == "HTTP/1.1"
                and not stopping.is_set()
            )
            if path.startswith("/healthz"):
                payload = b"ok\n"
            else:
                if delay_s:
                    await asyncio.sleep(delay_s)
                payload = body
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(payload)}\r\nX-Served-By: {name}\r\n".encode()
                + (b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n")
                + b"\r\n"
                + payload
            )
            await writer.drain()
            busy.discard(task)
            if not keep:
                return
    except (ConnectionError, OSError, asyncio.CancelledError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    cluster = args.cluster or args.name.split("-")[0]
    body = (args.body or f"Hello from cluster {cluster} ({args.name})\n").encode()
    connections: set[asyncio.Task[None]] = set()
    busy: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await handle(reader, writer, args.name, body, args.delay_ms / 1000, busy, stop)
        finally:
            connections.discard(task)
            busy.discard(task)

    server = await asyncio.start_server(on_connect, host or "0.0.0.0", int(port), backlog=1024)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {args.listen} as {args.name}", flush=True)
    await stop.wait()
    # graceful shutdown: no new connections, idle keep-alive connections closed, requests in flight
    # answered (with Connection: close) for up to the drain time
    server.close()
    for task in connections - busy:
        task.cancel()
    if busy:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*busy, return_exceptions=True), args.drain_s)
    print(f"{args.name} stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    parser.add_argument("--name", required=True, help="replica name, e.g. c1-0")
    parser.add_argument("--cluster", default="", help="cluster name (default: the name's part before '-')")
    parser.add_argument("--body", default="", help="response body (default: Hello from cluster …)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="think time per request")
    parser.add_argument("--drain-s", type=float, default=5.0, help="how long SIGTERM waits for requests")
    args = parser.parse_args(argv)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
