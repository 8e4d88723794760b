"""Two runs side by side (``nearmetal compare``): matching cells, one table per workload × matrix point, run B's
loss against run A with its interval."""

from __future__ import annotations

from typing import Any

from nearmetal.analysis.loss import fmt_slowdown
from nearmetal.report.tables import Table, fmt_estimate, fmt_number, fmt_pct, method_note, verdict_of
from nearmetal.results.compare import RunComparison


def compare_tables(comparison: RunComparison) -> list[Table]:
    """Matching cells of two runs, one table per workload × matrix point: B's loss against A."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in comparison.rows:
        groups.setdefault((row.cell.workload, row.cell.point_label), []).append(row)
    conf = f"{comparison.a.confidence:.0%}"
    tables = []
    for (workload, point), rows in groups.items():
        name = rows[0].metric
        unit = rows[0].unit
        headers = [
            "variant",
            "n A",
            "n B",
            f"A {name} ({unit})" if unit else f"A {name}",
            f"B {name}",
            "CV % A/B",
            f"B vs A loss % [{conf} CI]",
            "factor",
            "stop A",
            "stop B",
            "verdict",
        ]
        body, sig = [], []
        for r in rows:
            body.append(
                [
                    r.cell.variant,
                    str(r.a.summary.n),
                    str(r.b.summary.n),
                    fmt_number(r.a.summary.mean),
                    fmt_number(r.b.summary.mean),
                    f"{fmt_pct(r.a.summary.cv)}/{fmt_pct(r.b.summary.cv)}",
                    fmt_estimate(r.loss),
                    fmt_slowdown(r.loss),
                    r.stop_a.label,
                    r.stop_b.label,
                    verdict_of(r.loss),
                ]
            )
            sig.append(r.loss.significant)
        title = f"{workload}" + (f" ({point})" if point else "") + f": {name}, run B vs run A"
        notes = [
            method_note(comparison.a, rows[0].direction, [r.loss for r in rows]).replace(
                "the variant costs", "run B is worse"
            )
        ]
        tables.append(Table(title, headers, body, notes, sig))
    return tables
