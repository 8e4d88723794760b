"""A whole run's analysis: per-cell summaries and every variant's loss against the baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nearmetal.analysis.stats import LossEstimate, Summary, loss_interval, summarize


@dataclass(frozen=True)
class CellInfo:
    cell_id: str
    workload: str
    kind: str
    variant: str
    point: dict[str, Any]
    comparison_key: str
    is_baseline: bool
    primary_metric: str = "wall_s"

    @property
    def point_label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.point.items()))


@dataclass
class CellMetric:
    cell: CellInfo
    metric: str
    unit: str
    direction: str
    values: np.ndarray
    summary: Summary


@dataclass
class Comparison:
    """A variant's loss against the baseline for one metric at one matrix point."""

    cell: CellInfo
    baseline: CellInfo
    metric: str
    unit: str
    direction: str
    variant_summary: Summary
    baseline_summary: Summary
    loss: LossEstimate


@dataclass
class RunAnalysis:
    cells: list[CellInfo]
    metrics: dict[tuple[str, str], CellMetric] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # cell_id -> failed trials

    def metric(self, cell_id: str, name: str) -> CellMetric | None:
        return self.metrics.get((cell_id, name))

    def comparison(self, cell_id: str, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.cell.cell_id == cell_id and c.metric == name), None)

    def metric_names(self, cell_id: str) -> list[str]:
        return sorted(name for cid, name in self.metrics if cid == cell_id)


def group_values(table: dict[str, np.ndarray]) -> dict[tuple[str, str], tuple[np.ndarray, str, str]]:
    """(cell_id, metric) → (values, unit, direction) for measured trials that succeeded."""
    if table["value"].size == 0:
        return {}
    keep = (~table["is_warmup"]) & (table["status"] == "ok")
    cell = table["cell_id"][keep]
    name = table["name"][keep]
    values = table["value"][keep]
    units = table["unit"][keep]
    directions = table["direction"][keep]
    keys = np.char.add(np.char.add(cell.astype(str), "|"), name.astype(str))
    uniq, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    out = {}
    for i, key in enumerate(uniq):
        idx = order[bounds[i] : bounds[i + 1]]
        cid, _, metric = str(key).partition("|")
        out[(cid, metric)] = (values[idx], str(units[idx[0]]), str(directions[idx[0]]))
    return out


def analyse(
    table: dict[str, np.ndarray],
    cells: list[CellInfo],
    confidence: float = 0.95,
    resamples: int = 9999,
    seed: int = 0,
    metrics: list[str] | None = None,
) -> RunAnalysis:
    """Summaries per cell and metric; losses of every non-baseline cell against the baseline cell with the
    same workload and matrix point. ``metrics`` limits which metrics get an interval (all by default)."""
    result = RunAnalysis(cells=cells)
    if table["value"].size:
        failed = (table["status"] != "ok") & (~table["is_warmup"])
        for cid in np.unique(table["cell_id"][failed]):
            result.failed[str(cid)] = int(
                np.unique(table["trial_id"][failed & (table["cell_id"] == cid)]).size
            )
    by_id = {c.cell_id: c for c in cells}
    for (cid, name), (values, unit, direction) in group_values(table).items():
        if cid in by_id:
            result.metrics[(cid, name)] = CellMetric(
                by_id[cid], name, unit, direction, values, summarize(values)
            )
    baselines = {c.comparison_key: c for c in cells if c.is_baseline}
    for cell in cells:
        base = baselines.get(cell.comparison_key)
        if cell.is_baseline or base is None:
            continue
        for name in result.metric_names(cell.cell_id):
            if metrics is not None and name not in metrics:
                continue
            var_m = result.metrics[(cell.cell_id, name)]
            base_m = result.metrics.get((base.cell_id, name))
            if base_m is None:
                continue
            est = loss_interval(var_m.values, base_m.values, var_m.direction, confidence, resamples, seed)
            result.comparisons.append(
                Comparison(cell, base, name, var_m.unit, var_m.direction, var_m.summary, base_m.summary, est)
            )
    return result
