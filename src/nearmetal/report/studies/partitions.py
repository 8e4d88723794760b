"""The partitions study's tables (``studies/partitions.yaml``, seed 001 part 5): the value per partition, its
ratio against the ideal, and partitioning enabled with one full-size partition vs disabled vs theory."""

from __future__ import annotations

import numpy as np

from nearmetal.api import Results
from nearmetal.report.sharing_shapes import (
    PartitionGroup,
    conf_label,
    guarded,
    may_hold_sharing,
    partition_groups,
    pct_text,
    ratio_text,
    shape_title,
    with_unit,
)
from nearmetal.report.tables import Table, fmt_number, study_table


def partition_tables(results: Results, groups: list[PartitionGroup]) -> list[Table]:
    tables = []
    conf = conf_label(results)
    for g in groups:
        ratios = {r.bigger.label: r for r in g.ratios}
        rows = []
        for part in g.partitions:
            values = part.values[np.isfinite(part.values)]
            ratio = ratios.get(part.label)
            rows.append(
                [
                    part.label,
                    g.variants.get(part.label, ""),
                    fmt_number(part.resources),
                    str(values.size),
                    fmt_number(float(values.mean()) if values.size else None),
                    f"vs {ratio.smaller.label}: {ratio_text(ratio.speedup)}" if ratio else "–",
                    fmt_number(ratio.ideal, 3) if ratio else "–",
                    f"{ratio.efficiency * 100:.0f}%" if ratio else "–",
                ]
            )
        notes = [
            "ratio = how many times better the bigger partition performs than the next smaller one "
            f"({'throughput ratio' if g.direction == 'higher' else 'time of the smaller ÷ time of the bigger'}); "
            f"ideal = ratio of {g.resource} (seed 001 part 5: 7/3, 3/2, 2/1)"
        ]
        if g.enabled_full is not None:
            e = g.enabled_full
            notes.append(
                f"partitioning enabled with one full-size partition ({g.full_label}) vs disabled "
                f"({g.variants.get('disabled', '')}): loss {pct_text(e.loss)} ({conf}); theoretical "
                f"{e.theoretical * 100:.2f}% from {g.theoretical_source}"
            )
        tables.append(
            Table(
                f"partitions: {shape_title(g.workload, g.point)}: {g.metric}",
                [
                    "partition",
                    "variant",
                    g.resource,
                    "n",
                    with_unit(g.metric, g.unit),
                    f"ratio [{conf}]",
                    "ideal",
                    "of ideal",
                ],
                rows,
                notes,
                [None] * len(rows),
                workload=g.workload,
            )
        )
    return tables


@study_table
def tables(results: Results) -> list[Table]:
    """Seed 001's partition tables (``report.tables.study_tables`` calls this)."""
    if not may_hold_sharing(results):
        return []
    return guarded(results, partition_tables(results, partition_groups(results)))
