"""Reading stored runs back: the object a notebook works with and every report is made from."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from nearmetal.analysis import (
    AnalysisConfig,
    CellInfo,
    CellMetric,
    Comparison,
    Design,
    RunAnalysis,
    analyse,
    cheapest_design,
    describe_loss,
)
from nearmetal.analysis import contention as contention_analysis
from nearmetal.analysis.loss import loss_definition
from nearmetal.analysis.stopping import FAILED, FIXED, INTERRUPTED, RUNNING, StopRecord
from nearmetal.errors import NearmetalError
from nearmetal.store import Store
from nearmetal.store import columns as store_columns
from nearmetal.store.schema import RunRow, TrialRow
from nearmetal.workloads import primary_metric_of

DEFAULT_DESIGN_TARGET = 0.01  # the half-width suggestions aim at when the plan sets no target


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


def with_primary_metrics(cells: list[CellInfo], plan: dict[str, Any]) -> list[CellInfo]:
    """Apply the plan's ``analysis.primary_metric`` (workload → metric) to cells read from the store."""
    chosen = (plan.get("analysis") or {}).get("primary_metric") or {}
    if not isinstance(chosen, dict) or not chosen:
        return cells
    return [replace(c, primary_metric=str(chosen[c.workload])) if c.workload in chosen else c for c in cells]


def analysis_config(plan: dict[str, Any], seed: int = 0, run: str = "the stored plan") -> AnalysisConfig:
    """The plan's ``analysis:`` section (as stored with the run) as the analysis' settings, each checked
    against the plan model's bounds again (a stored plan is data: ``bootstrap_resamples: 1e9`` is refused
    with one line, not allocated)."""
    from nearmetal.analysis.stopping import first_stage, paired_order
    from nearmetal.store.validate import analysis_setting

    section = plan.get("analysis") or {}
    if not isinstance(section, dict):
        raise NearmetalError(f"{run}: analysis is not a mapping", fix="the plan was not stored by nearmetal")
    wanted = section.get("interval_metrics") or None
    if not (
        wanted in (None, "all") or (isinstance(wanted, list) and all(isinstance(w, str) for w in wanted))
    ):
        raise NearmetalError(f"{run}: analysis.interval_metrics is not 'all' or a list of metric names")
    statistic = section.get("statistic", "mean")
    if statistic not in ("mean", "median", "floor"):
        raise NearmetalError(f"{run}: analysis.statistic is not 'mean', 'median' or 'floor'")
    repeats = plan.get("repeats")
    try:
        repeats_min = int(repeats.get("min", 3)) if isinstance(repeats, dict) else 0
    except (TypeError, ValueError, OverflowError):
        raise NearmetalError(f"{run}: repeats.min is not a number") from None
    return AnalysisConfig(
        confidence=analysis_setting(section, "confidence", 0.95, run),
        resamples=analysis_setting(section, "bootstrap_resamples", 9999, run),
        seed=seed,
        statistic=str(statistic),
        outlier_k=analysis_setting(section, "outlier_mad_k", 3.5, run),
        cv_warning=analysis_setting(section, "cv_warning", 0.05, run),
        interval_metrics=wanted if wanted in (None, "all") else tuple(wanted),
        paired=paired_order(str(plan.get("order", "interleaved"))),
        first_stage=first_stage(repeats_min, repeats_target(plan)),
        family=str(section.get("family", "variants")),
        resolution={str(k): float(v) for k, v in (section.get("resolution") or {}).items()},
    )


def repeats_target(plan: dict[str, Any]) -> float | None:
    from nearmetal.plan.models import parse_target

    repeats = plan.get("repeats")
    if isinstance(repeats, dict) and repeats.get("target") is not None:
        try:
            return parse_target(repeats["target"])
        except ValueError:
            return None
    return None


@dataclass
class VarianceRow:
    """Levels of variation of one cell's multi-valued metric, and the cheapest design to the target."""

    cell: CellInfo
    metric: str
    trials: int
    values_per_trial: float
    var_within: float
    var_between: float
    share_between: float
    design: Design | None
    target: float


class Results:
    """A stored run: its plan, environment, trials and analysis (computed when first asked for)."""

    def __init__(
        self,
        store: Store,
        run: RunRow,
        trials: list[TrialRow] | None = None,
        environment: dict[str, str] | None = None,
        interval_metrics: list[str] | str | None = None,
    ) -> None:
        self.store = store
        self.run = run
        self._trials = trials
        self.environment = environment if environment is not None else store.environment(run.id)
        # metrics that get a loss interval besides each workload's primary one ("all" for every metric);
        # set before reading ``analysis``, or use ``with_intervals``
        self.interval_metrics = interval_metrics

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def trials(self) -> list[TrialRow]:
        """Every trial as a row object (read on first use; reports use the SQL summaries instead)."""
        if self._trials is None:
            self._trials = self.store.trials(self.run.id)
        return self._trials

    @cached_property
    def plan(self) -> dict[str, Any]:
        """The stored plan as a mapping, parsed with the plan loader's limits (it is data: a store file
        may come from someone else)."""
        from nearmetal.store.validate import stored_plan

        return stored_plan(self.run.plan_text, self.run.id)

    @cached_property
    def config(self) -> AnalysisConfig:
        cfg = analysis_config(self.plan, self.run.seed or 0, run=f"run {self.run.id}: stored plan")
        extra = self.interval_metrics
        if extra is None:
            return cfg
        if extra == "all" or cfg.interval_metrics == "all":
            wanted: tuple[str, ...] | str = "all"
        else:
            wanted = tuple(dict.fromkeys([*(cfg.interval_metrics or ()), *extra]))
        return replace(cfg, interval_metrics=wanted)

    @property
    def confidence(self) -> float:
        return self.config.confidence

    @property
    def resamples(self) -> int:
        return self.config.resamples

    @property
    def statistic(self) -> str:
        return self.config.statistic

    @property
    def target(self) -> float | None:
        """The plan's target half-width for adaptive repeats (a fraction), if any."""
        return repeats_target(self.plan)

    @cached_property
    def cells(self) -> list[CellInfo]:
        """Cells in the plan's order (workloads, matrix values, variants as written), not the order the
        interleaved schedule happened to run them."""
        cells = with_primary_metrics(
            store_columns.run_cells(self.store, self.run.id, primary_metric_of), self.plan
        )
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
        """Every metric of every trial as column arrays, in trial order (see ``Store.metric_table``);
        the analysis reads ``Store.measured_table`` instead (numeric columns, no object per value)."""
        return self.store.metric_table(self.run.id)

    @cached_property
    def analysis(self) -> RunAnalysis:
        cfg = self.config
        return analyse(
            self.store.measured_table(self.run.id),
            self.cells,
            confidence=cfg.confidence,
            resamples=cfg.resamples,
            seed=cfg.seed,
            metrics=cfg.interval_metrics
            if isinstance(cfg.interval_metrics, str)
            else (list(cfg.interval_metrics) if cfg.interval_metrics else None),
            statistic=cfg.statistic,
            outlier_k=cfg.outlier_k,
            cv_warning=cfg.cv_warning,
            paired=cfg.paired,
            first_stage=cfg.first_stage,
            family=cfg.family,
            resolution=cfg.resolution,
        )

    def with_intervals(self, metric: str | None) -> Results:
        """Make sure ``metric`` has loss intervals for every cell (computed once, batched)."""
        if metric is not None:
            self.analysis.compare_metric(metric)
        return self

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

    # --- contention: what else used the CPU while each cell ran (issue 16 item 9, issue 17 item 3) ------
    @property
    def shield(self) -> dict[str, Any] | None:
        """The run's shield (``run.shield``: every trial in a top-weight cgroup), None when it had none."""
        return (self.run.info or {}).get("shield") or None

    @property
    def contention_guard(self) -> bool:
        return bool((self.plan.get("analysis") or {}).get("contention_guard", False))

    @cached_property
    def contention(self) -> dict[str, contention_analysis.CellContention]:
        """cell_id → the outside CPU use its measured trials saw (cells without evidence are absent)."""
        threshold = float(
            (self.plan.get("analysis") or {}).get(
                "max_outside_cpu_pct", contention_analysis.DEFAULT_MAX_OUTSIDE_CPU_PCT
            )
        )
        wait_threshold = float(
            (self.plan.get("analysis") or {}).get(
                "max_cpu_wait_pct", contention_analysis.DEFAULT_MAX_CPU_WAIT_PCT
            )
        )
        noises: dict[str, list[contention_analysis.TrialNoise | None]] = {}
        seconds: dict[str, float] = {}
        for t in self.trials:
            if t.status == "ok" and not t.is_warmup:
                noises.setdefault(t.cell_id, []).append(
                    contention_analysis.TrialNoise.from_placement(t.placement)
                )
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    seconds[t.cell_id] = seconds.get(t.cell_id, 0.0) + float(
                        ((t.placement or {}).get("outside") or {}).get("seconds") or 0.0
                    )
        out = {
            cid: contention_analysis.assess_cell(
                n, threshold, wait_threshold, seconds=seconds.get(cid) or math.nan
            )
            for cid, n in noises.items()
        }
        return {cid: c for cid, c in out.items() if c.trials}

    def contention_verdict(self, cell: CellInfo) -> str | None:
        """'contended — not interpretable' when the plan's guard is on and the cell or its baseline ran
        beside outside work; None otherwise."""
        base = next(
            (c for c in self.cells if c.is_baseline and c.comparison_key == cell.comparison_key), None
        )
        return contention_analysis.contention_verdict(
            self.contention.get(cell.cell_id),
            self.contention.get(base.cell_id) if base is not None else None,
            self.contention_guard,
        )

    # --- why each cell stopped ----------------------------------------------------------------------
    @cached_property
    def stop_records(self) -> dict[str, StopRecord]:
        """cell_id → why it got no more trials (target met / max reached / budget / fixed count …)."""
        stored = (self.run.info or {}).get("stop") or {}
        out = {cid: StopRecord.from_dict(data) for cid, data in stored.items()}
        missing = [c for c in self.cells if c.cell_id not in out]
        if missing:
            # runs stored before stop reasons were recorded, or still running: say what is known
            reason = {"interrupted": INTERRUPTED, "running": RUNNING, "failed": FAILED}.get(
                self.run.status, FIXED
            )
            for cell in missing:
                cm = self.analysis.metric(cell.cell_id, cell.primary_metric)
                out[cell.cell_id] = StopRecord(reason, cm.summary.n if cm else 0, None, self.target)
        return out

    def stop(self, cell_id: str) -> StopRecord:
        return self.stop_records.get(cell_id, StopRecord(FIXED, 0))

    # --- trial summaries (SQL, no row objects) ------------------------------------------------------
    def trial_counts(self) -> dict[str, int]:
        counts = store_columns.trial_counts(self.store, self.run.id)
        return {
            "measured_ok": sum(n for (status, warm), n in counts.items() if status == "ok" and not warm),
            "warmup": sum(n for (_, warm), n in counts.items() if warm),
            "failed": sum(n for (status, _), n in counts.items() if status not in ("ok", "repaired")),
            "repaired": sum(n for (status, _), n in counts.items() if status == "repaired"),
        }

    def failed_trials(self, limit: int = 10) -> tuple[list[dict[str, Any]], int]:
        return store_columns.failed_trials(self.store, self.run.id, limit)

    # --- rows ------------------------------------------------------------------------------------------
    def table(self, metric: str | None = None) -> list[dict[str, Any]]:
        """One row per cell: the primary (or given) metric, its loss vs the baseline with the interval, the
        stop reason, CV and outliers."""
        self.with_intervals(metric)
        rows = []
        for cell in self.cells:
            name = metric or cell.primary_metric
            cm = self.analysis.metric(cell.cell_id, name)
            comp = self.analysis.comparison(cell.cell_id, name)
            stop = self.stop(cell.cell_id)
            row: dict[str, Any] = {
                "workload": cell.workload,
                "point": cell.point_label,
                "variant": cell.variant,
                "baseline": cell.is_baseline,
                "metric": name,
                "n": cm.summary.n if cm else 0,
                "mean": cm.summary.mean if cm else None,
                "median": cm.summary.median if cm else None,
                "stdev": cm.summary.stdev if cm else None,
                "cv": cm.summary.cv if cm else None,
                "outliers": cm.summary.outliers if cm else 0,
                "unit": cm.unit if cm else "",
                "failed": self.analysis.failed.get(cell.cell_id, 0),
                "stop_reason": stop.reason,
                "stop": stop.label,
                "blocks": stop.blocks,
            }
            if cm is not None and cm.variance is not None:
                row.update(
                    var_within=cm.variance.within,
                    var_between=cm.variance.between,
                    share_between=cm.variance.share_between,
                )
            if comp:
                est = comp.loss
                row.update(
                    loss_pct=est.loss * 100,
                    ci_low_pct=None if est.low is None else est.low * 100,
                    ci_high_pct=None if est.high is None else est.high * 100,
                    confidence=est.confidence,
                    interval_method=est.method,
                    design=est.design,
                    pairs=est.pairs,
                    statistic=est.statistic,
                    hierarchical=est.hierarchical,
                    check_low_pct=None if est.check_low is None else est.check_low * 100,
                    check_high_pct=None if est.check_high is None else est.check_high * 100,
                    ratio=est.ratio,
                    slowdown=est.slowdown,
                    loss_definition=loss_definition(est.direction),
                    interval_note=est.note,
                    significant=est.significant,
                    verdict=self.contention_verdict(cell) or describe_loss(est),
                )
            noise = self.contention.get(cell.cell_id)
            if noise is not None:
                row.update(
                    outside_cpu_pct=noise.mean_outside_pct,
                    contended_trials=noise.contended,
                    contended=noise.is_contended,
                    outside_processes=[name for name, _ in noise.top[:5]],
                    cpu_wait_pct=noise.mean_wait_pct if noise.by_wait else None,
                )
            rows.append(row)
        return rows

    def to_pandas(self, what: str = "losses", metric: str | None = None) -> Any:
        """The run as a pandas DataFrame (``pip install 'nearmetal[pandas]'``). ``losses``: the analysed
        table, one row per cell (``table()``: loss %, interval, verdict, stop reason …); ``trials``: one row
        per trial × metric with cell, variant and parameters as columns (what ``nearmetal export`` writes),
        ``started_at``/``ended_at`` as UTC timestamps."""
        try:
            import pandas as pd
        except ImportError:
            raise NearmetalError(
                "Results.to_pandas needs pandas, which is not installed",
                fix="pip install 'nearmetal[pandas]'",
            ) from None
        from nearmetal import rows as tidy

        if what not in tidy.WHATS:
            raise NearmetalError(f"unknown table {what!r}", fix=f"use one of {', '.join(tidy.WHATS)}")
        rows = tidy.rows_for([self], what, metric)
        frame = pd.DataFrame(rows, columns=tidy.columns_of(rows))
        for column in tidy.TIME_COLUMNS:
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def values(self, metric: str) -> dict[str, list[float]]:
        """Measured values of a metric per cell key (for plots in a notebook)."""
        out = {}
        for cell in self.cells:
            cm = self.analysis.metric(cell.cell_id, metric)
            if cm is not None:
                out[cell.key] = cm.values.tolist()
        return out

    # --- levels of variation ----------------------------------------------------------------------------
    @cached_property
    def trial_durations(self) -> dict[str, tuple[int, float]]:
        return store_columns.trial_durations(self.store, self.run.id)

    def variance_rows(self, metric: str | None = None) -> list[VarianceRow]:
        """Within- vs between-trial variance for every cell whose metric has several values per trial, and
        the cheapest (trials, values per trial) expected to reach the target half-width."""
        target = self.target or DEFAULT_DESIGN_TARGET
        rows = []
        baselines = {c.comparison_key: c for c in self.cells if c.is_baseline}
        for cell in self.cells:
            name = metric or cell.primary_metric
            cm = self.analysis.metric(cell.cell_id, name)
            if cm is None or cm.variance is None:
                continue
            base = baselines.get(cell.comparison_key)
            base_m = self.analysis.metric(base.cell_id, name) if base is not None else None
            other = base_m.variance if base_m is not None and base_m.variance is not None else cm.variance
            # suggest at most 10× the values per trial seen: beyond that the estimates are extrapolations
            most = max(1, math.ceil(cm.variance.values_per_trial * 10))
            design = cheapest_design(
                cm.variance, other, target, self.confidence, *self._costs(cell, cm), max_values_per_trial=most
            )
            vc = cm.variance
            rows.append(
                VarianceRow(
                    cell,
                    name,
                    vc.trials,
                    vc.values_per_trial,
                    vc.within,
                    vc.between,
                    vc.share_between,
                    design,
                    target,
                )
            )
        return rows

    def _costs(self, cell: CellInfo, cm: CellMetric) -> tuple[float, float, str]:
        """(seconds per trial start-up, seconds per value, how they were estimated)."""
        assert cm.variance is not None
        m = max(1.0, cm.variance.values_per_trial)
        _, duration = self.trial_durations.get(cell.cell_id, (0, 0.0))
        if cm.unit == "s" and cm.summary.mean > 0:
            per_value = cm.summary.mean
            startup = max(duration - m * per_value, 0.05 * duration, 1e-3)
            return startup, per_value, f"measured: {startup:.3g} s start-up + {per_value:.3g} s per value"
        share = duration / (m + 1) if duration > 0 else 1.0
        return share, share, "assumed: a trial's start-up costs as much as one value"

    # --- warnings -----------------------------------------------------------------------------------
    def warnings(self, metric: str | None = None) -> list[str]:
        """Noisy cells (CV above the threshold), flagged outliers and interval cross-check disagreements."""
        return [text for _, text in self.cell_warnings(metric)]

    def cell_warnings(self, metric: str | None = None) -> list[tuple[CellInfo, str]]:
        """``warnings`` with the cell each one is about."""
        out: list[tuple[CellInfo, str]] = []
        cfg = self.config
        for cell in self.cells:
            name = metric or cell.primary_metric
            cm = self.analysis.metric(cell.cell_id, name)
            if cm is None:
                continue
            if cm.summary.n > 1 and cm.summary.cv > cfg.cv_warning:
                out.append(
                    (
                        cell,
                        f"{cell.key}: CV {cm.summary.cv:.1%} of {name} exceeds {cfg.cv_warning:.0%}; the machine may"
                        " be noisy (neighbours, frequency scaling): run `nearmetal doctor`",
                    )
                )
            if cm.outlier_trial_ids:
                shown = cm.outlier_trial_ids[:5]
                labels = store_columns.repeat_labels(self.store, shown)
                which = ", ".join(labels.get(t, str(t)) for t in shown)
                more = f" and {len(cm.outlier_trial_ids) - 5} more" if len(cm.outlier_trial_ids) > 5 else ""
                out.append(
                    (
                        cell,
                        f"{cell.key}: {len(cm.outlier_trial_ids)} outlier(s) in {name} outside median ±"
                        f" {cfg.outlier_k:g}·MAD (trials {which}{more}); kept in the statistics",
                    )
                )
            noise = self.contention.get(cell.cell_id)
            if noise is not None:
                line = contention_analysis.contention_warning(cell.key, noise, self.contention_guard)
                if line:
                    out.append((cell, line))
            comp = self.analysis.comparison(cell.cell_id, name)
            if comp is not None and comp.loss.check_agrees is False:
                est = comp.loss
                out.append(
                    (
                        cell,
                        f"{cell.key}: the log-scale Welch interval [{est.check_low:+.1%}, {est.check_high:+.1%}]"
                        f" and the bootstrap's [{est.low:+.1%}, {est.high:+.1%}] disagree on significance: a"
                        " borderline difference; run more trials",
                    )
                )
        return out


def load_results(
    run_id: str | None = None,
    db: str | None = None,
    store: Store | None = None,
    interval_metrics: list[str] | str | None = None,
) -> Results:
    """A stored run (the latest when no id is given); its analysis is computed when first read."""
    store = store or Store(db, create=False)
    run = store.get_run(run_id) if run_id else store.get_run(store.latest_run_id())
    return Results(store=store, run=run, interval_metrics=interval_metrics)


__all__ = [
    "Comparison",
    "Results",
    "VarianceRow",
    "analysis_config",
    "cells_from_trials",
    "load_results",
    "primary_metric_of",
]
