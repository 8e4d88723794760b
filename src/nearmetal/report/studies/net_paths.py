"""The network-path study's summary: one row per path (variant), one column per question — how much
bandwidth, how long a round trip, how much MPI loses with small and large messages — each with its loss
against the baseline, and the CFS throttling beside them (seed 000: path or CPU limit?).

Round trips are the median (and p99) of each trial's iterations: on a shared host a rank or client that loses
its CPU for a scheduler time slice turns a few-µs round trip into a few-ms one, and a handful of those decide
the mean. The MPI mean per iteration is kept as its own column: it is what a job feels, stalls included
(CFS throttling under a CPU limit stops both ranks for tens of ms, once per period — the seed's cause —
and moves the mean while the median stays). Bimodality is reported, not averaged away: within a trial
(iterations in two groups far apart) and across a cell's trials (trial medians in two groups)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nearmetal.api import Results
from nearmetal.report.tables import Table, fmt_number, study_table
from nearmetal.tools.iterstats import bimodality

# (workload kind, metrics in order of preference, header)
COLUMNS: list[tuple[str, tuple[str, ...], str]] = [
    ("iperf3", ("throughput_Gbps",), "bandwidth Gbit/s"),
    ("iperf3", ("retransmits",), "TCP retransmits"),
    ("tcp-rr", ("rtt_p50_us",), "TCP RTT p50 µs"),
    ("tcp-rr", ("rtt_p99_us",), "TCP RTT p99 µs"),
    ("mpi", ("latency_small_p50_us",), "MPI latency p50 µs"),
    ("mpi", ("latency_small_p99_us",), "MPI latency p99 µs"),
    ("mpi", ("latency_small_us",), "MPI latency mean µs"),
    ("mpi", ("bw_large_MBps",), "MPI bw large MB/s"),
    ("mpi", ("allreduce_small_p50_us", "allreduce_small_us"), "allreduce small µs"),
    ("mpi", ("allreduce_large_us",), "allreduce large µs"),
    ("osu", ("latency_small_us",), "OSU latency small µs"),
    ("osu", ("bw_large_MBps",), "OSU bw large MB/s"),
]
# the round-trip metric of a kind and its per-trial bimodality flag, for the caveats
ROUND_TRIPS: dict[str, tuple[str, str, str]] = {
    "mpi": ("latency_small_p50_us", "latency_small_bimodal", "latency_small_slow_pct"),
    "tcp-rr": ("rtt_p50_us", "rtt_bimodal", "rtt_slow_pct"),
}
CV_HEADER = "MPI p50 CV %"


def _metric_of(results: Results, cell: Any, metrics: tuple[str, ...]) -> str | None:
    return next((m for m in metrics if results.analysis.metric(cell.cell_id, m)), None)


def _cell_value(results: Results, cell: Any, metric: str) -> tuple[float | None, float | None]:
    analysis = results.analysis
    cm = analysis.metric(cell.cell_id, metric)
    comp = analysis.comparison(cell.cell_id, metric)
    return (cm.summary.mean if cm else None), (comp.loss.loss if comp else None)


def caveats(results: Results, cell: Any) -> list[str]:
    """What makes a cell's round trips hard to read: trials whose iterations formed two groups, and trial
    medians that fall into two groups (e.g. some trials with both ranks on one CPU)."""
    metrics = ROUND_TRIPS.get(cell.kind)
    if not metrics:
        return []
    value_name, flag_name, slow_name = metrics
    out = []
    flags = results.analysis.metric(cell.cell_id, flag_name)
    if flags is not None and flags.values.size and np.nansum(flags.values) > 0:
        slow = results.analysis.metric(cell.cell_id, slow_name)
        share = f"; slow group {np.nanmax(slow.values):.1f}% of iterations at most" if slow else ""
        out.append(
            f"{int(np.nansum(flags.values))}/{flags.values.size} trials with iterations in two groups "
            f"far apart{share} (the mean is theirs, the p50 is not)"
        )
    values = results.analysis.metric(cell.cell_id, value_name)
    if values is not None:
        text = trial_groups([float(x) for x in values.values], values.unit)
        if text:
            out.append(text)
    return out


def trial_groups(values: list[float], unit: str) -> str | None:
    """A caveat when a cell's trial values fall into two groups far apart (any single trial may be one)."""
    v = sorted(x for x in values if np.isfinite(x))
    if len(v) < 2:
        return None
    modes = bimodality(v, min_fraction=1 / len(v))
    if not modes["bimodal"]:
        return None
    return (
        f"trial medians in two groups ({fmt_number(modes['fast'])} and {fmt_number(modes['slow'])} {unit}): "
        "not one distribution — check rank placement and the host's load"
    )


def load_range(results: Results) -> tuple[float, float] | None:
    """The smallest and largest 1-minute load average the trials recorded (start and end)."""
    loads = []
    for trial in results.trials:
        info = (trial.placement or {}).get("load_avg") or {}
        for point in info.values() if isinstance(info, dict) else ():
            if isinstance(point, list) and point:
                loads.append(float(point[0]))
    return (min(loads), max(loads)) if loads else None


def path_rows(results: Results) -> tuple[list[str], list[dict[str, Any]]]:
    """Headers and one dict per variant: {variant, <header>: (value, loss)}, plus throttled %, the CV of the
    MPI median and the caveats."""
    present = [
        (kind, metrics, header)
        for kind, metrics, header in COLUMNS
        if any(c.kind == kind and _metric_of(results, c, metrics) for c in results.cells)
    ]
    with_cv = any(kind == "mpi" and metrics[0] == "latency_small_p50_us" for kind, metrics, _ in present)
    variants = list(dict.fromkeys(c.variant for c in sorted(results.cells, key=lambda c: not c.is_baseline)))
    rows = []
    for variant in variants:
        row: dict[str, Any] = {"variant": variant, "caveats": []}
        throttled = []
        for kind, metrics, header in present:
            cells = [c for c in results.cells if c.variant == variant and c.kind == kind]
            metric = _metric_of(results, cells[0], metrics) if cells else None
            if metric:
                row[header] = _cell_value(results, cells[0], metric)
        for cell in (c for c in results.cells if c.variant == variant):
            t = results.analysis.metric(cell.cell_id, "throttled_pct")
            if t:
                throttled.append(t.summary.mean)
            row["caveats"] += [f"{cell.kind}: {text}" for text in caveats(results, cell)]
            if with_cv and cell.kind == "mpi":
                p50 = results.analysis.metric(cell.cell_id, "latency_small_p50_us")
                if p50 is not None and p50.summary.n > 1:
                    row[CV_HEADER] = float(p50.summary.cv) * 100
        row["throttled %"] = max(throttled) if throttled else None
        rows.append(row)
    return [h for _, _, h in present], rows


def path_table(results: Results) -> Table:
    headers, rows = path_rows(results)
    with_cv = any(CV_HEADER in row for row in rows)
    out_rows = []
    notes = [
        "value (loss % against the baseline, direction-aware: positive = the path costs); "
        "`nearmetal report RUN --metric NAME` gives the intervals",
    ]
    if any(h.startswith("MPI latency") for h in headers):
        notes.append(
            "MPI/TCP p50 and p99: of each trial's iterations (the path's latency); MPI mean: time per "
            "iteration with every stall (CPU-limit throttling, a neighbour taking the CPU) — what a job feels"
        )
    for row in rows:
        cells = [row["variant"]]
        for header in headers:
            value, loss = row.get(header, (None, None))
            text = fmt_number(value)
            if loss is not None and value is not None:
                text += f" ({loss * 100:+.0f}%)"
            cells.append(text)
        if with_cv:
            cells.append(fmt_number(row.get(CV_HEADER), 3))
        cells.append(fmt_number(row["throttled %"], 3))
        if row["caveats"]:
            cells[0] += " ⚠"
            notes += [f"⚠ {row['variant']}: {text}" for text in row["caveats"]]
        out_rows.append(cells)
    load = load_range(results)
    if load:
        notes.append(f"host load average (1 min) during the trials: {load[0]:.2f}–{load[1]:.2f}")
    extra = [CV_HEADER] if with_cv else []
    columns = ["path", *headers, *extra, "throttled %"]
    return Table("network paths", columns, out_rows, notes, significance=[None] * len(out_rows))


@study_table
def tables(results: Results) -> list[Table]:
    """The path table for every report of a run with network workloads in several variants (the reports'
    study tables, ``report.tables.STUDY_TABLES``)."""
    kinds = {kind for kind, _, _ in COLUMNS}
    cells = [c for c in results.cells if c.kind in kinds]
    if len({c.variant for c in cells}) < 2:
        return []
    return [path_table(results)]
