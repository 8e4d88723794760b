"""Reading stored runs back: the object a notebook works with and every report is made from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import yaml

from nearmetal.analysis import CellInfo, RunAnalysis, analyse, describe_loss
from nearmetal.store import Store
from nearmetal.store.schema import RunRow, TrialRow
from nearmetal.workloads import WORKLOAD_CLASSES, workload_class


def primary_metric_of(kind: str) -> str:
    if kind in WORKLOAD_CLASSES:
        return workload_class(kind).primary_metric
    return "wall_s"


def cells_from_trials(trials: list[TrialRow]) -> list[CellInfo]:
    seen: dict[str, CellInfo] = {}
    for t in trials:
        if t.cell_id not in seen:
            seen[t.cell_id] = CellInfo(
                t.cell_id,
                t.workload,
                t.kind,
                t.variant,
                dict(t.point or {}),
                t.comparison_key,
                bool(t.is_baseline),
                primary_metric_of(t.kind),
            )
    return list(seen.values())


@dataclass
class Results:
    """A stored run: its plan, environment, trials and analysis."""

    store: Store
    run: RunRow
    trials: list[TrialRow]
    environment: dict[str, str]

    @property
    def run_id(self) -> str:
        return self.run.id

    @cached_property
    def plan(self) -> dict[str, Any]:
        return yaml.safe_load(self.run.plan_text) or {}

    @property
    def confidence(self) -> float:
        return float((self.plan.get("analysis") or {}).get("confidence", 0.95))

    @property
    def resamples(self) -> int:
        return int((self.plan.get("analysis") or {}).get("bootstrap_resamples", 9999))

    @cached_property
    def cells(self) -> list[CellInfo]:
        """Cells in the plan's order (workloads, matrix values, variants as written), not the order the
        interleaved schedule happened to run them."""
        cells = cells_from_trials(self.trials)
        plan = self.plan if isinstance(self.plan, dict) else {}
        workloads = list(plan.get("workloads") or {})
        variants = list(plan.get("variants") or {})
        matrix = plan.get("matrix") or {}
        first_seen = {c.cell_id: i for i, c in enumerate(cells)}

        def position(items: list[Any], value: Any) -> int:
            return items.index(value) if value in items else len(items)

        def point_order(cell: CellInfo) -> tuple[int, ...]:
            out = []
            for param, value in sorted(cell.point.items()):
                values = matrix.get(f"{cell.workload}.{param}", matrix.get(param)) or []
                out.append(position(list(values), value))
            return tuple(out)

        return sorted(
            cells,
            key=lambda c: (
                position(workloads, c.workload),
                point_order(c),
                position(variants, c.variant),
                first_seen[c.cell_id],
            ),
        )

    @cached_property
    def metric_table(self) -> dict[str, np.ndarray]:
        """Every metric of every trial as column arrays, in trial order (see ``Store.metric_table``)."""
        return self.store.metric_table(self.run.id)

    @cached_property
    def analysis(self) -> RunAnalysis:
        return analyse(
            self.metric_table,
            self.cells,
            confidence=self.confidence,
            resamples=self.resamples,
            seed=self.run.seed or 0,
        )

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        """What happened at moments during the run (faults injected, interruptions), oldest first."""
        return self.store.events(self.run.id)

    @cached_property
    def findings(self) -> list[dict[str, Any]]:
        """Doctor findings attached to this run (``nearmetal doctor --for RUN``)."""
        return self.store.findings(self.run.id)

    @property
    def baseline_variant(self) -> str | None:
        return next((c.variant for c in self.cells if c.is_baseline), None)

    def table(self, metric: str | None = None) -> list[dict[str, Any]]:
        """One row per cell: the primary (or given) metric, its loss vs the baseline with the interval."""
        rows = []
        for cell in self.cells:
            name = metric or cell.primary_metric
            cm = self.analysis.metric(cell.cell_id, name)
            comp = self.analysis.comparison(cell.cell_id, name)
            row: dict[str, Any] = {
                "workload": cell.workload,
                "point": cell.point_label,
                "variant": cell.variant,
                "baseline": cell.is_baseline,
                "metric": name,
                "n": cm.summary.n if cm else 0,
                "mean": cm.summary.mean if cm else None,
                "stdev": cm.summary.stdev if cm else None,
                "cv": cm.summary.cv if cm else None,
                "unit": cm.unit if cm else "",
                "failed": self.analysis.failed.get(cell.cell_id, 0),
            }
            if comp:
                row.update(
                    loss_pct=comp.loss.loss * 100,
                    ci_low_pct=None if comp.loss.low is None else comp.loss.low * 100,
                    ci_high_pct=None if comp.loss.high is None else comp.loss.high * 100,
                    significant=comp.loss.significant,
                    verdict=describe_loss(comp.loss),
                )
            rows.append(row)
        return rows

    def values(self, metric: str) -> dict[str, list[float]]:
        """Measured values of a metric per cell key (for plots in a notebook)."""
        out = {}
        for cell in self.cells:
            cm = self.analysis.metric(cell.cell_id, metric)
            if cm is not None:
                out[f"{cell.workload}/{cell.variant}" + (f"/{cell.point_label}" if cell.point else "")] = (
                    cm.values.tolist()
                )
        return out


def load_results(run_id: str | None = None, db: str | None = None, store: Store | None = None) -> Results:
    """A stored run (the latest when no id is given) with its analysis."""
    store = store or Store(db)
    run = store.get_run(run_id) if run_id else store.get_run(store.latest_run_id())
    return Results(store=store, run=run, trials=store.trials(run.id), environment=store.environment(run.id))
