"""The time-slicing study's tables (``studies/time-slicing.yaml``, seed 001 part 4): per process and aggregate
value at each sharing level, loss against passthrough, and doubling the processes (expected ×2k vs actual)."""

from __future__ import annotations

from nearmetal.api import Results
from nearmetal.report.sharing_shapes import (
    SlicingGroup,
    conf_label,
    guarded,
    may_hold_sharing,
    pct_text,
    shape_title,
    time_slicing_groups,
    with_unit,
)
from nearmetal.report.tables import Table, fmt_number, study_table


def time_slicing_tables(results: Results, groups: list[SlicingGroup]) -> list[Table]:
    tables = []
    conf = conf_label(results)
    for g in groups:
        agg = "aggregate (× k)" if g.direction == "higher" else "per job (÷ k)"
        rows, sig = [], []
        for row in g.rows:
            copies = 0 if row.level.passthrough else row.level.copies
            rows.append(
                [
                    row.level.label,
                    g.variants.get(copies, ""),
                    str(row.per_process.n),
                    fmt_number(row.per_process.mean),
                    fmt_number(row.aggregate),
                    "–" if row.loss is None else pct_text(row.loss),
                ]
            )
            sig.append(None if row.loss is None else row.loss.significant)
        tables.append(
            Table(
                f"time slicing: {shape_title(g.workload, g.point)}: {g.metric}",
                [
                    "mode",
                    "variant",
                    "n",
                    f"per process: {with_unit(g.metric, g.unit)}",
                    agg,
                    f"loss vs passthrough [{conf}]",
                ],
                rows,
                [
                    f"seed 001 part 4's table; the aggregate of shared ×k is {'per process × k' if g.direction == 'higher' else 'the time per process ÷ k (k jobs done in that time)'}; "
                    "loss is direction-aware, positive = sharing costs",
                    f"neighbours verified running from before the measured copy started until it ended in "
                    f"{g.overlapped} of {g.shared_trials} shared trials (trials where one ended early are invalid "
                    "and left out)",
                ],
                sig,
                workload=g.workload,
            )
        )
        if g.doubling:
            rows, sig = [], []
            expected = "expected ×2k = 2 × ×k" if g.direction == "lower" else "expected ×2k = ×k ÷ 2"
            for d in g.doubling:
                rows.append(
                    [
                        f"×{d.copies} → ×{d.doubled}",
                        fmt_number(d.base.mean),
                        fmt_number(d.expected),
                        fmt_number(d.actual.mean),
                        pct_text(d.loss),
                    ]
                )
                sig.append(d.loss.significant)
            tables.append(
                Table(
                    f"time slicing, doubling the processes: {shape_title(g.workload, g.point)}: {g.metric}",
                    ["shared", f"×k {with_unit(g.metric, g.unit)}", expected, "actual ×2k", f"loss [{conf}]"],
                    rows,
                    [
                        "0% = doubling the processes costs nothing beyond sharing (the seed printed a negative loss as 0)"
                    ],
                    sig,
                    workload=g.workload,
                )
            )
    return tables


@study_table
def tables(results: Results) -> list[Table]:
    """Seed 001's time-slicing tables (``report.tables.study_tables`` calls this)."""
    if not may_hold_sharing(results):
        return []
    return guarded(results, time_slicing_tables(results, time_slicing_groups(results)))
