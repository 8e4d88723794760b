"""Comparing two stored runs: the same cells, B's loss against A, refusing cells that measure something else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nearmetal.analysis import (
    CellInfo,
    CellMetric,
    LossEstimate,
    describe_loss,
    loss_intervals,
)
from nearmetal.analysis.bootstrap import Sample
from nearmetal.analysis.stopping import StopRecord
from nearmetal.api import Results, load_results
from nearmetal.errors import NearmetalError
from nearmetal.store import Store
from nearmetal.store import columns as store_columns

# --- comparing two runs ------------------------------------------------------------------------------


@dataclass
class RunPairRow:
    """One cell present in both runs: B's loss against A (positive = B is worse)."""

    cell: CellInfo
    metric: str
    unit: str
    direction: str
    a: CellMetric
    b: CellMetric
    loss: LossEstimate
    stop_a: StopRecord
    stop_b: StopRecord


@dataclass
class RunComparison:
    a: Results
    b: Results
    rows: list[RunPairRow] = field(default_factory=list)
    only_a: list[CellInfo] = field(default_factory=list)
    only_b: list[CellInfo] = field(default_factory=list)
    missing_metric: list[CellInfo] = field(default_factory=list)
    # cells of the same name whose workload parameters or layer options differ: never compared
    differing: list[tuple[CellInfo, list[str]]] = field(default_factory=list)

    def above(self, threshold: float) -> list[RunPairRow]:
        """Rows whose whole interval lies above ``threshold`` (a regression for sure)."""
        return [r for r in self.rows if r.loss.low is not None and r.loss.low > threshold]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [
            {
                "workload": r.cell.workload,
                "point": r.cell.point_label,
                "variant": r.cell.variant,
                "metric": r.metric,
                "unit": r.unit,
                "n_a": r.a.summary.n,
                "n_b": r.b.summary.n,
                "mean_a": r.a.summary.mean,
                "mean_b": r.b.summary.mean,
                "cv_a": r.a.summary.cv,
                "cv_b": r.b.summary.cv,
                "loss_pct": r.loss.loss * 100,
                "ci_low_pct": None if r.loss.low is None else r.loss.low * 100,
                "ci_high_pct": None if r.loss.high is None else r.loss.high * 100,
                "significant": r.loss.significant,
                "verdict": describe_loss(r.loss),
                "stop_a": r.stop_a.label,
                "stop_b": r.stop_b.label,
            }
            for r in self.rows
        ]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        out = {}
        for i, item in enumerate(value):
            name = item.get("layer") or item.get("kind") or str(i)
            out.update(_flatten(item, f"{prefix}[{name}]"))
        return out
    return {prefix: value}


def setting_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'params.atoms: 32000 → 4000' for every workload parameter or layer option that differs."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    out = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key, "(unset)") != flat_b.get(key, "(unset)"):
            out.append(f"{key}: {flat_a.get(key, '(unset)')!s:.40} → {flat_b.get(key, '(unset)')!s:.40}")
    return out


def compare_runs(
    run_a: str, run_b: str, db: str | None = None, metric: str | None = None, store: Store | None = None
) -> RunComparison:
    """Matching cells (same workload, variant and matrix point) of two stored runs: B's loss against A with
    the same statistics as a run's own table (A's analysis settings and seed). Cells whose workload
    parameters or layer options differ measure different things: they go to ``differing`` with the
    differences named, and get no row (so no regression verdict)."""
    store = store or Store(db, create=False)
    a = load_results(run_a, store=store)
    b = load_results(run_b, store=store)
    if a.run_id == b.run_id:
        raise NearmetalError(
            f"both arguments name run {a.run_id}", fix="give two different runs (nearmetal runs lists them)"
        )
    a.with_intervals(metric)
    b.with_intervals(metric)
    by_id_b = {c.cell_id: c for c in b.cells}
    out = RunComparison(a, b)
    settings_a = store_columns.cell_settings(store, a.run_id)
    settings_b = store_columns.cell_settings(store, b.run_id)
    pairs: list[tuple[CellInfo, CellMetric, CellMetric]] = []
    for cell in a.cells:
        other = by_id_b.get(cell.cell_id)
        if other is None:
            out.only_a.append(cell)
            continue
        differences = setting_differences(settings_a.get(cell.cell_id, {}), settings_b.get(cell.cell_id, {}))
        if differences:
            out.differing.append((cell, differences))
            continue
        name = metric or cell.primary_metric
        ma, mb = a.analysis.metric(cell.cell_id, name), b.analysis.metric(cell.cell_id, name)
        if ma is None or mb is None:
            out.missing_metric.append(cell)
            continue
        pairs.append((cell, ma, mb))
    ids_a = {c.cell_id for c in a.cells}
    out.only_b = [c for c in b.cells if c.cell_id not in ids_a]
    cfg = a.config
    samples_a, samples_b = [], []
    for _, ma, mb in pairs:
        sa, sb = ma.sample or Sample.of(ma.values), mb.sample or Sample.of(mb.values)
        if sa.hierarchical != sb.hierarchical:
            sa, sb = Sample.of(ma.values), Sample.of(mb.values)
        samples_a.append(sa)
        samples_b.append(sb)
    estimates = loss_intervals(
        samples_b,
        samples_a,
        [ma.direction for _, ma, _ in pairs],
        cfg.confidence,
        cfg.resamples,
        cfg.seed,
        cfg.statistic,
    )
    for (cell, ma, mb), est in zip(pairs, estimates, strict=True):
        out.rows.append(
            RunPairRow(
                cell,
                ma.metric,
                ma.unit,
                ma.direction,
                ma,
                mb,
                est,
                a.stop(cell.cell_id),
                b.stop(cell.cell_id),
            )
        )
    return out


__all__ = ["RunComparison", "RunPairRow", "compare_runs", "setting_differences"]
