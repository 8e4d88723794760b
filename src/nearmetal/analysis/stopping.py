"""The stop rule of adaptive repeats, as plain functions of a run's analysis (no I/O).

A cell is *done* when the interval it is judged by is at most ± target wide:
* a variant: the relative precision of its ratio against the baseline (primary metric): exp of the
  half-width of the log ratio interval, less 1 — so a rate variant at +90% loss (ratio 0.1) and a time
  variant at +150% (ratio 2.5) stop on the same footing, not on loss points;
* a baseline: done when every variant compared with it is done (it must keep running beside them, so the
  blocks stay interleaved);
* a cell nothing is compared with (a plan with one variant): the half-width of the interval of its own
  statistic, relative to the estimate.
The runner evaluates this between blocks; a resumed run recomputes the same decisions from the same stored
trials (the resampling seed is the run's recorded seed).

Stopping when an interval *looks* narrow selects runs whose variance happened to be under-estimated (measured:
88–93% coverage at a nominal 95%, worst with ``min: 2``). So no cell is judged before a first stage of
``first_stage(min)`` blocks, and a paired interval of an adaptive run is the hull with Stein's two-stage
interval, whose spread comes from that first stage only (``paired.py``); the rule compares that hull's width
with the target. ``benchmarks/validity.py`` measures the coverage after stopping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nearmetal.analysis.paired import MIN_FIRST_STAGE
from nearmetal.analysis.run import CellInfo, RunAnalysis

TARGET_MET = "target met"
MAX_REACHED = "max reached"
BUDGET = "budget"
FIXED = "fixed count"
INTERRUPTED = "interrupted"
RUNNING = "running"
FAILED = "run failed"


def first_stage(repeats_min: int, target: float | None) -> int | None:
    """Blocks an adaptive run measures before its stop rule may retire a cell (None: fixed repeats)."""
    return None if target is None else max(int(repeats_min), MIN_FIRST_STAGE)


def paired_order(order: str) -> bool:
    """Whether a run's blocks hold one trial of every cell side by side (interleaved or random order)."""
    return order != "sequential"


@dataclass(frozen=True)
class CellPrecision:
    cell_id: str
    # relative precision of the ratio (a fraction) compared with the target; None: no interval yet
    half_width: float | None
    judged_by: str  # "loss" | "group" (a baseline: its variants) | "own" (relative interval of its statistic)

    def met(self, target: float) -> bool:
        return self.half_width is not None and self.half_width <= target


def cell_precisions(
    analysis: RunAnalysis, cells: Iterable[CellInfo] | None = None
) -> dict[str, CellPrecision]:
    """Per cell, the half-width the stop rule compares with the target (primary metric)."""
    cells = list(cells if cells is not None else analysis.cells)
    minimum = analysis.config.first_stage or 0  # nothing is judged before the first stage has run
    out: dict[str, CellPrecision] = {}
    group_of_baseline: dict[str, list[float | None]] = {}
    for cell in cells:
        if cell.is_baseline:
            continue
        comp = analysis.comparison(cell.cell_id, cell.primary_metric)
        if comp is None:
            continue
        measured = (
            comp.loss.pairs
            if comp.loss.design == "paired"
            else min(comp.variant_summary.n, comp.baseline_summary.n)
        )
        width = comp.loss.relative_half_width if measured >= minimum else None
        out[cell.cell_id] = CellPrecision(cell.cell_id, width, "loss")
        group_of_baseline.setdefault(comp.baseline.cell_id, []).append(width)
    for cell in cells:
        if cell.cell_id in out:
            continue
        widths = group_of_baseline.get(cell.cell_id)
        if widths:
            worst = None if any(w is None for w in widths) else max(w for w in widths if w is not None)
            out[cell.cell_id] = CellPrecision(cell.cell_id, worst, "group")
            continue
        cm = analysis.metric(cell.cell_id, cell.primary_metric)
        own = cm.relative_half_width if cm is not None and cm.summary.n >= minimum else None
        out[cell.cell_id] = CellPrecision(cell.cell_id, own, "own")
    return out


@dataclass
class StopRecord:
    """Why a cell stopped getting trials, as stored in the run's ``info["stop"]``."""

    reason: str
    blocks: int  # measured blocks the cell ran
    half_width: float | None = None  # at the decision
    target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "blocks": self.blocks,
            "half_width": self.half_width,
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopRecord:
        return cls(
            str(data.get("reason", FIXED)),
            int(data.get("blocks", 0)),
            data.get("half_width"),
            data.get("target"),
        )

    @property
    def label(self) -> str:
        """Short words for a table cell: 'target met (±0.8% ≤ ±1%, 7 blocks)'."""
        blocks = f"{self.blocks} block" + ("" if self.blocks == 1 else "s")
        if self.reason == TARGET_MET and self.half_width is not None and self.target is not None:
            return f"target met (±{_pct(self.half_width)} ≤ ±{_pct(self.target)}, {blocks})"
        if self.reason in (MAX_REACHED, BUDGET) and self.target is not None:
            if self.half_width is None:
                return f"{self.reason} ({blocks}, no interval yet)"
            return f"{self.reason} ({blocks}, ±{_pct(self.half_width)} > ±{_pct(self.target)})"
        if self.reason == FIXED:
            return f"fixed count ({self.blocks})"
        return f"{self.reason} ({blocks})" if self.blocks else self.reason


def _pct(fraction: float) -> str:
    """1.23% below 10%, 12% above: enough digits to compare with a target, no more."""
    value = fraction * 100
    if value >= 10:
        return f"{value:.0f}%"
    return f"{value:.2g}%" if value < 1 else f"{value:.1f}%"
