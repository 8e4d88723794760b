"""The per-request log the load generator and the I/O prober write: one gzip'd tab-separated line per request
(start in µs after ``t0``, latency in µs, outcome, backend), with ``t0`` (epoch seconds) in the header.

About 12 bytes a request once compressed, so a 30 s run at 500 requests/s is well under 200 KB. Standard
library only: it is imported by the programs, which must start fast on a busy host.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = "# nearmetal request log v1"
COLUMNS = ("start_us", "latency_us", "outcome", "backend")


class RequestLogError(ValueError):
    """The file is not a request log (or is cut short); the message says what is wrong."""


@dataclass
class RequestRows:
    t0: float
    start_s: list[float] = field(default_factory=list)  # epoch seconds
    latency_s: list[float] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    backend: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


def write(path: Path, t0: float, rows: Iterable[tuple[float, float, str, str]], **meta: object) -> int:
    """Write rows of (start seconds after t0, latency seconds, outcome, backend); returns the row count."""
    header = " ".join([MAGIC, f"t0={t0:.6f}", *(f"{k}={v}" for k, v in meta.items())])
    n = 0
    buf = io.StringIO()
    buf.write(header + "\n")
    buf.write("\t".join(COLUMNS) + "\n")
    for start, latency, outcome, backend in rows:
        buf.write(f"{round(start * 1e6)}\t{round(latency * 1e6)}\t{outcome}\t{backend}\n")
        n += 1
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", compresslevel=6) as f:
        f.write(buf.getvalue())
    tmp.replace(path)
    return n


def read(path: Path) -> RequestRows:
    try:
        with gzip.open(path, "rt") as f:
            text = f.read()
    except (OSError, EOFError) as exc:
        raise RequestLogError(f"{path}: not a gzip'd request log ({exc})") from None
    lines = text.splitlines()
    if not lines or not lines[0].startswith(MAGIC):
        raise RequestLogError(f"{path}: no '{MAGIC}' header")
    meta = dict(item.split("=", 1) for item in lines[0][len(MAGIC) :].split() if "=" in item)
    try:
        t0 = float(meta.pop("t0"))
    except (KeyError, ValueError):
        raise RequestLogError(f"{path}: the header has no t0=<epoch seconds>") from None
    rows = RequestRows(t0=t0, meta=meta)
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split("\t")
        if len(parts) != len(COLUMNS):
            raise RequestLogError(f"{path}:{number}: expected {len(COLUMNS)} tab-separated fields")
        try:
            rows.start_s.append(t0 + int(parts[0]) / 1e6)
            rows.latency_s.append(int(parts[1]) / 1e6)
        except ValueError:
            raise RequestLogError(f"{path}:{number}: start and latency must be integers (µs)") from None
        rows.outcome.append(parts[2])
        rows.backend.append(parts[3])
    return rows
