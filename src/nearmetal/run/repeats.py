"""Adaptive repeats: which cells still get blocks, and why the others stopped.

A run with ``repeats: {min, max, target, budget}`` runs ``min`` blocks (at least the first stage of
``analysis.stopping``), then one block at a time while some cell's interval is wider than the target, up to
``max`` blocks or the time ``budget``. ``Repeats`` owns that state; the runner asks it for batches of blocks
and tells it what it ran. Fixed repeats are one batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from nearmetal.analysis import CellInfo, analyse
from nearmetal.analysis.stopping import (
    BUDGET,
    FIXED,
    MAX_REACHED,
    RUNNING,
    TARGET_MET,
    StopRecord,
    cell_precisions,
    first_stage,
    paired_order,
)
from nearmetal.plan import Cell, LoadedPlan
from nearmetal.workloads import primary_metric_of


def cells_of_plan(loaded: LoadedPlan) -> list[CellInfo]:
    """The analysis' view of a loaded plan's cells (what the stop rule analyses)."""
    chosen = loaded.plan.analysis.primary_metric
    return [
        CellInfo(
            c.cell_id,
            c.workload,
            c.kind,
            c.variant,
            dict(c.point),
            c.comparison_key,
            c.is_baseline,
            chosen.get(c.workload) or primary_metric_of(c.kind),
        )
        for c in loaded.cells
    ]


class Repeats:
    """The repeats of one run. ``measured()`` returns the run's stored measurements (``Store.measured_table``),
    ``on_change(stop)`` stores why each cell stopped (cell id → ``StopRecord.to_dict()``)."""

    def __init__(
        self,
        loaded: LoadedPlan,
        seed: int,
        measured: Callable[[], Any],
        on_change: Callable[[dict[str, dict[str, Any]]], None],
    ) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.seed = seed
        self.measured = measured
        self.on_change = on_change
        # cells still getting blocks, and why the others stopped (cell id -> record)
        self.active: list[Cell] = list(loaded.cells)
        self.stop_records: dict[str, StopRecord] = {}
        self.blocks_run: dict[str, int] = {}
        self.precisions: dict[str, float | None] = {}
        self.started = time.monotonic()
        # wall time of each stored trial of each cell (an estimate of what one more block costs); the time
        # an earlier attempt of a resumed run spent in its trials counts toward the budget
        self.trial_times: dict[str, list[float]] = {}
        self.earlier_s = 0.0

    def keep_only(self, cell_ids: set[str]) -> None:
        """Cells left out of the run before it starts (``preflight.skip_unavailable_cells``)."""
        self.active = [c for c in self.active if c.cell_id in cell_ids]

    def trial_ended(self, cell_id: str, wall_s: float, earlier: bool = False) -> None:
        self.trial_times.setdefault(cell_id, []).append(wall_s)
        if earlier:
            self.earlier_s += wall_s

    def batches(self, set_total: Callable[[int], None] | None = None) -> Iterator[tuple[int, int]]:
        """(first block, number of blocks) batches; the code after each ``yield`` runs once the batch's
        trials are stored. ``set_total(n)`` hears how many more trials the next block adds."""
        repeats = self.plan.repeats
        yield 0, repeats.min
        self._count_blocks(repeats.min)
        block = repeats.min
        while repeats.adaptive:
            self.apply_stop_rule(block)
            if not self.active:
                break
            if block >= (repeats.max or block):
                self.retire(self.active, MAX_REACHED, block)
                break
            if repeats.budget is not None and self.over_budget(repeats.budget):
                self.retire(self.active, BUDGET, block)
                break
            if set_total is not None:
                set_total(len(self.active))
            yield block, 1
            self._count_blocks(1)
            block += 1
        if not repeats.adaptive:
            self.apply_stop_rule(block, final=True)

    def _count_blocks(self, count: int) -> None:
        for cell in self.active:
            self.blocks_run[cell.cell_id] = self.blocks_run.get(cell.cell_id, 0) + count

    def _analysis(self) -> Any:
        cfg = self.plan.analysis
        return analyse(
            self.measured(),
            cells_of_plan(self.loaded),
            confidence=cfg.confidence,
            resamples=cfg.bootstrap_resamples,
            seed=self.seed,
            statistic=cfg.statistic,
            own_intervals=True,
            paired=paired_order(self.plan.order),
            first_stage=first_stage(self.plan.repeats.min, self.plan.repeats.target),
            family=cfg.family,
            resolution=cfg.resolution,
        )

    def apply_stop_rule(self, block: int, final: bool = False) -> None:
        """Retire the cells whose interval is within the target; a fixed run records why it stopped."""
        target = self.plan.repeats.target
        if target is None:
            self.retire(self.active, FIXED, block)
            return
        precisions = cell_precisions(self._analysis())
        self.precisions = {cid: p.half_width for cid, p in precisions.items()}
        done = [c for c in self.active if c.cell_id in precisions and precisions[c.cell_id].met(target)]
        self.retire(done, TARGET_MET, block)
        if final:
            self.retire(self.active, MAX_REACHED, block)

    def retire(self, cells: list[Cell], reason: str, block: int) -> None:
        for cell in list(cells):
            self.stop_records[cell.cell_id] = StopRecord(
                reason,
                self.blocks_run.get(cell.cell_id, block),
                self.precisions.get(cell.cell_id),
                self.plan.repeats.target,
            )
        gone = {c.cell_id for c in cells}
        self.active = [c for c in self.active if c.cell_id not in gone]
        self.store_stop_info()

    def stop_info(self, status: str | None = None) -> dict[str, dict[str, Any]]:
        """Why each cell stopped; cells still running (or cut short: ``status``) as well."""
        stop = {cid: rec.to_dict() for cid, rec in self.stop_records.items()}
        for cell in self.active:
            stop[cell.cell_id] = StopRecord(
                status or RUNNING,
                self.blocks_run.get(cell.cell_id, 0),
                self.precisions.get(cell.cell_id),
                self.plan.repeats.target,
            ).to_dict()
        return stop

    def store_stop_info(self, status: str | None = None) -> None:
        self.on_change(self.stop_info(status))

    def over_budget(self, budget_s: float) -> bool:
        """Would one more block of the active cells end past the budget? (mean trial time per cell)"""
        elapsed = time.monotonic() - self.started + self.earlier_s
        estimate = sum(
            sum(times) / len(times) for c in self.active if (times := self.trial_times.get(c.cell_id))
        )
        return elapsed + estimate > budget_s
