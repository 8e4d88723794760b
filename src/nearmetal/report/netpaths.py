"""The network-path study's summary: one row per path (variant), one column per question — how much
bandwidth, how long a round trip, how much MPI loses with small and large messages — each with its loss
against the baseline, and the CFS throttling beside them (seed 000: path or CPU limit?)."""

from __future__ import annotations

from typing import Any

from nearmetal.api import Results
from nearmetal.report.tables import Table, fmt_number

# (workload kind, metric, header)
COLUMNS: list[tuple[str, str, str]] = [
    ("iperf3", "throughput_Gbps", "bandwidth Gbit/s"),
    ("tcp-rr", "rtt_p50_us", "TCP RTT p50 µs"),
    ("tcp-rr", "rtt_p99_us", "TCP RTT p99 µs"),
    ("mpi", "latency_small_us", "MPI latency small µs"),
    ("mpi", "bw_large_MBps", "MPI bw large MB/s"),
    ("mpi", "allreduce_small_us", "allreduce small µs"),
    ("mpi", "allreduce_large_us", "allreduce large µs"),
    ("osu", "latency_small_us", "OSU latency small µs"),
    ("osu", "bw_large_MBps", "OSU bw large MB/s"),
]


def _cell_value(results: Results, cell: Any, metric: str) -> tuple[float | None, float | None]:
    analysis = results.analysis
    cm = analysis.metric(cell.cell_id, metric)
    comp = analysis.comparison(cell.cell_id, metric)
    return (cm.summary.mean if cm else None), (comp.loss.loss if comp else None)


def path_rows(results: Results) -> tuple[list[str], list[dict[str, Any]]]:
    """Headers and one dict per variant: {variant, <header>: (value, loss)}, plus throttled %."""
    present = [
        (kind, metric, header)
        for kind, metric, header in COLUMNS
        if any(c.kind == kind and results.analysis.metric(c.cell_id, metric) for c in results.cells)
    ]
    variants = list(dict.fromkeys(c.variant for c in sorted(results.cells, key=lambda c: not c.is_baseline)))
    rows = []
    for variant in variants:
        row: dict[str, Any] = {"variant": variant}
        throttled = []
        for kind, metric, header in present:
            cells = [c for c in results.cells if c.variant == variant and c.kind == kind]
            if cells:
                row[header] = _cell_value(results, cells[0], metric)
        for cell in (c for c in results.cells if c.variant == variant):
            t = results.analysis.metric(cell.cell_id, "throttled_pct")
            if t:
                throttled.append(t.summary.mean)
        row["throttled %"] = max(throttled) if throttled else None
        rows.append(row)
    return [h for _, _, h in present], rows


def path_table(results: Results) -> Table:
    headers, rows = path_rows(results)
    out_rows = []
    for row in rows:
        cells = [row["variant"]]
        for header in headers:
            value, loss = row.get(header, (None, None))
            text = fmt_number(value)
            if loss is not None and value is not None:
                text += f" ({loss * 100:+.0f}%)"
            cells.append(text)
        cells.append(fmt_number(row["throttled %"], 3))
        out_rows.append(cells)
    notes = [
        "value (loss % against the baseline, direction-aware: positive = the path costs); "
        "`nearmetal report RUN --metric NAME` gives the intervals"
    ]
    return Table("network paths", ["path", *headers, "throttled %"], out_rows, notes)
