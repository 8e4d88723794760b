"""An I/O prober: stat a directory and read a file in it at a fixed rate, recording every operation (the
"busy reader" under a mount whose FUSE daemon may die).

    python -m nearmetal.tools.ioprobe --path /mnt/data --file probe.dat --rate 100 --duration 20 --out o.tsv.gz

One operation = ``stat(path)`` + ``open(path/file)`` + ``read`` of up to ``--read-bytes`` + ``close``; open and
read always reach the filesystem's daemon, while a stat alone may be answered from attributes the kernel
cached. Outcomes: ``ok``, the error's errno name in lower case (``enotconn`` for a severed FUSE mount,
``eio``, ``enoent``, ``estale`` …), ``timeout`` (no answer within ``--timeout``: a paused or stuck daemon),
``stalled`` (every worker thread is still stuck in an earlier operation, so this one could not start).
Operations run on ``--workers`` threads so that one hung operation does not stop the clock. The log goes to
``--out`` (``nearmetal.tools.requestlog``); the last stdout line is ``NEARMETAL_RESULT {json}``. Standard
library only.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

from nearmetal.tools import requestlog

RESULT_PREFIX = "NEARMETAL_RESULT "


class Prober:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.path = args.path
        self.file = os.path.join(args.path, args.file) if args.file else None
        self.t0_perf = time.perf_counter()
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.rows: list[tuple[float, float, str, str]] = []
        self.pending: dict[int, float] = {}  # op index -> start
        self.idle = args.workers
        self.work: queue.Queue[tuple[int, float] | None] = queue.Queue()

    def now(self) -> float:
        return time.perf_counter() - self.t0_perf

    def operation(self) -> str:
        try:
            os.stat(self.path)
            if self.file:
                fd = os.open(self.file, os.O_RDONLY)
                try:
                    os.read(fd, self.args.read_bytes)
                finally:
                    os.close(fd)
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, "error").lower()
        return "ok"

    def worker(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            index, start = item
            outcome = self.operation()
            latency = self.now() - start
            if outcome == "ok" and latency > self.args.timeout:
                outcome = "timeout"
            with self.lock:
                if self.pending.pop(index, None) is not None:
                    self.rows.append((start, latency, outcome, ""))
                self.idle += 1

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.worker, name=f"probe-{i}", daemon=True)
            for i in range(self.args.workers)
        ]
        for thread in threads:
            thread.start()
        count = max(1, int(self.args.rate * self.args.duration))
        for i in range(count):
            delay = i / self.args.rate - self.now()
            if delay > 0:
                time.sleep(delay)
            start = self.now()
            with self.lock:
                if self.idle == 0:
                    self.rows.append((start, 0.0, "stalled", ""))
                    continue
                self.idle -= 1
                self.pending[i] = start
            self.work.put((i, start))
        # wait for what is in flight, then count what still hangs as timed out
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    break
            time.sleep(0.01)
        with self.lock:
            end = self.now()
            for _index, start in self.pending.items():
                self.rows.append((start, end - start, "timeout", ""))
            self.pending.clear()
        for _ in threads:
            self.work.put(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--path", required=True, help="directory to stat (the mount point or a directory in it)"
    )
    parser.add_argument("--file", default="", help="file under --path to open and read each time")
    parser.add_argument("--rate", type=float, required=True, help="operations per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--timeout", type=float, default=1.0, help="an operation slower than this timed out")
    parser.add_argument("--workers", type=int, default=4, help="threads issuing operations")
    parser.add_argument("--read-bytes", type=int, default=4096)
    parser.add_argument("--out", required=True, help="operation log file (.tsv.gz)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.workers < 1:
        parser.error("--rate, --duration and --workers must be positive")
    prober = Prober(args)
    prober.run()
    with prober.lock:
        rows = sorted(prober.rows)
    requestlog.write(Path(args.out), prober.t0, rows, mode="io")
    outcomes: dict[str, int] = {}
    for row in rows:
        outcomes[row[2]] = outcomes.get(row[2], 0) + 1
    result = {
        "program": "ioprobe",
        "format": 1,
        "t0": prober.t0,
        "path": args.path,
        "rate_rps": args.rate,
        "requests": len(rows),
        "outcomes": outcomes,
        "log": str(args.out),
    }
    print(RESULT_PREFIX + json.dumps(result, separators=(",", ":")), flush=True)
    sys.stdout.flush()
    # threads may still be stuck in a hung filesystem call: leave without waiting for them
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
