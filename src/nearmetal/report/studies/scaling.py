"""The scaling study's tables (``studies/scaling.yaml``, seed 001 part 6): T(n)/T(2n) against 2 as workers
double, and the ranks' placements (topology) ranked by mean and by stability, with the within/between-job
variance split."""

from __future__ import annotations

import math

import numpy as np

from nearmetal.api import Results
from nearmetal.report.sharing_shapes import (
    ScalingGroup,
    TopologyGroup,
    conf_label,
    guarded,
    may_hold_sharing,
    ratio_text,
    scaling_groups,
    topology_groups,
)
from nearmetal.report.tables import Table, fmt_number, study_table


def scaling_tables(results: Results, groups: list[ScalingGroup]) -> list[Table]:
    tables = []
    conf = conf_label(results)
    for g in groups:
        rows = []
        by_workers = {r.workers: r for r in g.rows}
        for point in sorted(g.points, key=lambda p: p.workers):
            row = by_workers.get(point.workers)
            values = point.values[np.isfinite(point.values)]
            time = (
                "failed: " + point.failure
                if point.failure
                else fmt_number(float(values.mean()) if values.size else None)
            )
            rows.append(
                [
                    str(point.workers),
                    g.variants.get(point.workers, ""),
                    str(values.size),
                    time,
                    f"T({row.workers})/T({row.next_workers}) = {ratio_text(row.ratio)}"
                    if row and row.ratio
                    else (row.note if row else "–"),
                    fmt_number(row.ideal, 3) if row else "–",
                    f"{row.efficiency * 100:.0f}%" if row and row.efficiency is not None else "–",
                ]
            )
        tables.append(
            Table(
                f"distributed scaling: {g.workload}: epoch_s",
                ["workers", "variant", "n", "time per epoch (s)", f"speed-up [{conf}]", "ideal", "of ideal"],
                rows,
                ["seed 001 part 6: T(n)/T(2n) next to the ideal 2; n = trials (each the mean of its epochs)"],
                [None] * len(rows),
                workload=g.workload,
            )
        )
    return tables


def topology_tables(results: Results, groups: list[TopologyGroup]) -> list[Table]:
    tables = []
    conf = conf_label(results)
    for g in groups:
        rows = []
        for r in g.rows:
            interval = "n too small" if r.low is None else f"[{fmt_number(r.low)}, {fmt_number(r.high)}]"
            rows.append(
                [
                    r.topology,
                    str(r.jobs),
                    str(r.epochs),
                    fmt_number(r.mean),
                    fmt_number(r.stdev, 2) if not math.isnan(r.stdev) else "–",
                    f"{fmt_number(r.minimum)}–{fmt_number(r.maximum)}",
                    interval,
                    str(r.rank_by_mean),
                    str(r.rank_by_stability),
                ]
            )
        s = g.split
        split = (
            f"variance of epoch times: {s.share_between * 100:.0f}% between jobs, "
            f"{(1 - s.share_between) * 100:.0f}% within a job ({s.trials} jobs, "
            f"{s.values_per_trial:.3g} epochs each)"
            if s is not None and math.isfinite(s.share_between)
            else "variance split needs several jobs with several epochs each"
        )
        node = "host" if g.level == "host" else "CPU (ranks pinned to CPUs of one host)"
        tables.append(
            Table(
                f"topology: {g.workload}, {g.workers} workers: epoch_s",
                [
                    "topology",
                    "jobs",
                    "epochs",
                    "mean (s)",
                    "sd between jobs",
                    "range",
                    f"mean [{conf}]",
                    "rank by mean",
                    "rank by stability",
                ],
                rows,
                [
                    f"topology = ranks per {node}, sorted (seed 001: '0 0 2 1 1 1 3' and '3 2 1 1 1' are both '1 1 1 2 3')",
                    split,
                ],
                [None] * len(rows),
                workload=g.workload,
            )
        )
    return tables


@study_table
def tables(results: Results) -> list[Table]:
    """Seed 001's scaling and topology tables (``report.tables.study_tables`` calls this)."""
    if not may_hold_sharing(results):
        return []
    return guarded(
        results,
        [
            *scaling_tables(results, scaling_groups(results)),
            *topology_tables(results, topology_groups(results)),
        ],
    )
