"""The stop rule of adaptive repeats, as plain functions of a run's analysis (no I/O).

A cell is *done* when the interval it is judged by is at most ± target wide:
* a variant: the half-width of its loss interval (primary metric) against the baseline;
* a baseline: done when every variant compared with it is done (it must keep running beside them, so the
  blocks stay interleaved);
* a cell nothing is compared with (a plan with one variant): the half-width of the interval of its own
  statistic, relative to the estimate.
The runner evaluates this between blocks; a resumed run recomputes the same decisions from the same stored
trials (the resampling seed is the run's recorded seed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nearmetal.analysis.run import CellInfo, RunAnalysis

TARGET_MET = "target met"
MAX_REACHED = "max reached"
BUDGET = "budget"
FIXED = "fixed count"
INTERRUPTED = "interrupted"
RUNNING = "running"
FAILED = "run failed"

REASONS = (TARGET_MET, MAX_REACHED, BUDGET, FIXED, INTERRUPTED, RUNNING, FAILED)


@dataclass(frozen=True)
class CellPrecision:
    cell_id: str
    half_width: float | None  # what the target is compared with (a fraction); None: no interval yet
    judged_by: str  # "loss" | "group" (a baseline: its variants) | "own" (relative interval of its statistic)

    def met(self, target: float) -> bool:
        return self.half_width is not None and self.half_width <= target


def cell_precisions(
    analysis: RunAnalysis, cells: Iterable[CellInfo] | None = None
) -> dict[str, CellPrecision]:
    """Per cell, the half-width the stop rule compares with the target (primary metric)."""
    cells = list(cells if cells is not None else analysis.cells)
    out: dict[str, CellPrecision] = {}
    group_of_baseline: dict[str, list[float | None]] = {}
    for cell in cells:
        if cell.is_baseline:
            continue
        comp = analysis.comparison(cell.cell_id, cell.primary_metric)
        if comp is None:
            continue
        out[cell.cell_id] = CellPrecision(cell.cell_id, comp.loss.half_width, "loss")
        group_of_baseline.setdefault(comp.baseline.cell_id, []).append(comp.loss.half_width)
    for cell in cells:
        if cell.cell_id in out:
            continue
        widths = group_of_baseline.get(cell.cell_id)
        if widths:
            worst = None if any(w is None for w in widths) else max(w for w in widths if w is not None)
            out[cell.cell_id] = CellPrecision(cell.cell_id, worst, "group")
            continue
        cm = analysis.metric(cell.cell_id, cell.primary_metric)
        out[cell.cell_id] = CellPrecision(cell.cell_id, cm.relative_half_width if cm else None, "own")
    return out


def cells_done(analysis: RunAnalysis, target: float, cells: Iterable[CellInfo] | None = None) -> set[str]:
    """Cells whose interval is within ± target (a baseline only when all its variants are)."""
    return {cid for cid, p in cell_precisions(analysis, cells).items() if p.met(target)}


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
