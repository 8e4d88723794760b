"""The multi-node study's table (trials on two Slurm nodes, each variant a path between them: ``wire``,
``vxlan``, with netem or not): per path, what its device is and what crossed it (the packet and byte
counters that prove which path carried the traffic), and per workload the tax against the baseline path with
its interval and the seed's question answered per cell: is it the path or the CPU limit?

The answer, from what the trials recorded: no measurable tax when the interval holds 0; "CPU limit" when
the trials were throttled (a cgroup quota on the node: cpu-quota stacked on the path); for bandwidth,
"path (CPU-bound)" when an iperf3 end used ≥ 90% of a CPU (the path's per-byte work — encapsulation, a
user-mode stack — is paid in CPU, and that CPU is the limit); else "path"."""

from __future__ import annotations

from typing import Any

import numpy as np

from nearmetal.api import Results
from nearmetal.report.tables import Table, fmt_number, study_table

# (workload kind, metric, header)
COLUMNS: list[tuple[str, str, str]] = [
    ("iperf3", "throughput_Gbps", "bandwidth Gbit/s"),
    ("tcp-rr", "rtt_p50_us", "TCP RTT p50 µs"),
    ("mpi", "latency_small_p50_us", "MPI latency p50 µs"),
    ("mpi", "bw_large_MBps", "MPI bw large MB/s"),
    ("osu", "latency_small_us", "OSU latency µs"),
    ("lammps", "timesteps_per_s", "LAMMPS steps/s"),
]
CPU_BOUND_PCT = 90.0
THROTTLED_PCT = 1.0


def _path_trials(results: Results) -> dict[str, list[dict[str, Any]]]:
    """variant → the ``placement.path`` of its measured trials."""
    out: dict[str, list[dict[str, Any]]] = {}
    for trial in results.trials:
        path = (trial.placement or {}).get("path")
        if trial.status == "ok" and not trial.is_warmup and isinstance(path, dict):
            out.setdefault(trial.variant, []).append(path)
    return out


def _moved(paths: list[dict[str, Any]], device_of: str) -> tuple[float | None, float | None]:
    """Mean packets and bytes per trial on the first node's device (the path device, or the link under)."""
    packets, volume = [], []
    for path in paths:
        counters = (path.get("counters") or {}).get((path.get("nodes") or [""])[0]) or {}
        dev = path.get("iface") if device_of == "path" else path.get("underlay")
        moved = counters.get(dev)
        if moved:
            packets.append(moved["tx_packets"] + moved["rx_packets"])
            volume.append(moved["tx_bytes"] + moved["rx_bytes"])
    if not packets:
        return None, None
    return float(np.mean(packets)), float(np.mean(volume))


def verdict(results: Results, cell: Any, comp: Any) -> str:
    loss = comp.loss
    if loss.low is None or loss.high is None:
        return "no interval"
    if loss.low <= 0 <= loss.high:
        return "no measurable tax"
    throttled = results.analysis.metric(cell.cell_id, "throttled_pct")
    if throttled is not None and throttled.summary.mean > THROTTLED_PCT:
        return f"CPU limit (throttled {throttled.summary.mean:.0f}%)"
    if cell.kind == "iperf3":
        cpus = [
            m.summary.mean
            for name in ("client_cpu_pct", "server_cpu_pct")
            if (m := results.analysis.metric(cell.cell_id, name)) is not None
        ]
        if cpus and max(cpus) >= CPU_BOUND_PCT:
            return f"path (CPU-bound: an end at {max(cpus):.0f}% CPU)"
    return "path" if loss.loss > 0 else "path (faster)"


def _cell_text(results: Results, cell: Any, metric: str) -> str:
    cm = results.analysis.metric(cell.cell_id, metric)
    if cm is None:
        return "–"
    text = fmt_number(cm.summary.mean)
    comp = results.analysis.comparison(cell.cell_id, metric)
    if comp is None:
        return text + " (baseline)" if cell.is_baseline else text
    loss = comp.loss
    interval = (
        f" [{_pct(loss.low)}, {_pct(loss.high)}]" if loss.low is not None and loss.high is not None else ""
    )
    return f"{text} ({_pct(loss.loss)}%{interval}) {verdict(results, cell, comp)}"


def _pct(fraction: float) -> str:
    value = fraction * 100
    return f"{value:+.0f}" if abs(value) >= 10 else f"{value:+.1f}"


def crossnode_table(results: Results) -> Table | None:
    paths = _path_trials(results)
    if not paths:
        return None
    present = [
        (kind, metric, header)
        for kind, metric, header in COLUMNS
        if any(c.kind == kind and results.analysis.metric(c.cell_id, metric) for c in results.cells)
    ]
    variants = list(dict.fromkeys(c.variant for c in sorted(results.cells, key=lambda c: not c.is_baseline)))
    rows = []
    for variant in variants:
        trials = paths.get(variant, [])
        first = trials[0] if trials else {}
        device = f"{first.get('iface', '?')} ({first.get('layer', '?')}, MTU {first.get('mtu', '?')})"
        if first.get("netem"):
            device += f", netem {first['netem']}"
        packets, volume = _moved(trials, "path")
        _, wire_bytes = _moved(trials, "underlay")
        row = [
            variant,
            device,
            fmt_number(packets),
            fmt_number(volume / 1e6 if volume is not None else None),
            fmt_number(wire_bytes / 1e6 if wire_bytes is not None else None),
        ]
        for kind, metric, _ in present:
            cell = next((c for c in results.cells if c.variant == variant and c.kind == kind), None)
            row.append(_cell_text(results, cell, metric) if cell else "–")
        rows.append(row)
    nodes = sorted({n for trials in paths.values() for p in trials for n in p.get("nodes", [])})
    notes = [
        f"nodes: {', '.join(nodes)}; counters are per trial on {nodes[0] if nodes else 'the first node'} "
        "(tx + rx), read on the node before and after the workload: the path device's, and the link's under "
        "it (an overlay's bytes cross the link again, encapsulated)",
        "cells: mean (loss % against the baseline path [95% interval], direction-aware: positive = the path "
        "costs), then the answer to: is it the path or the CPU limit?",
    ]
    if any(p.get("layer") == "usernet" for trials in paths.values() for p in trials):
        notes.append(
            "usernet: the device is the client's TAP behind slirp4netns (the server's TAP on the last node is "
            "in placement.path.counters); the link carries the stacks' host sockets, so its packets are "
            "those of the link's MTU, not the TAP's"
        )
    caveats = sorted({c for t in results.trials for c in (t.caveats or []) if "netem" in c})
    notes += [f"⚠ {c}" for c in caveats]
    headers = ["path", "device", "packets/trial", "MB/trial on device", "MB/trial on link"]
    return Table(
        "cross-node paths",
        headers + [h for _, _, h in present],
        rows,
        notes,
        significance=[None] * len(rows),
    )


@study_table
def tables(results: Results) -> list[Table]:
    """The cross-node path table for every report of a run whose trials crossed nodes by a path layer."""
    table = crossnode_table(results)
    return [table] if table else []
