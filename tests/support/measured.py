"""A measured table built by hand, for the analysis tests: one metric ``m``, one trial of each cell per block."""

from __future__ import annotations

import numpy as np

from nearmetal.analysis import CellInfo, MeasuredTable


def measured_table(
    values: dict[str, list[float]], blocks: dict[str, list[int]] | None = None, direction: str = "lower"
) -> MeasuredTable:
    """``values[cell]`` in blocks ``blocks[cell]`` (default 0..n−1); a time (``lower``) or a rate."""
    cell_ids = list(values)
    trial_cell: list[int] = []
    trial_block: list[int] = []
    metric_value: list[float] = []
    for code, cid in enumerate(cell_ids):
        trial_cell += [code] * len(values[cid])
        trial_block += blocks[cid] if blocks is not None else list(range(len(values[cid])))
        metric_value += values[cid]
    n = len(trial_cell)
    ids = np.arange(1, n + 1, dtype=np.int64)
    return MeasuredTable(
        cell_ids=cell_ids,
        trial_id=ids,
        trial_cell=np.array(trial_cell, dtype=np.int64),
        trial_ok=np.ones(n, dtype=bool),
        trial_warmup=np.zeros(n, dtype=bool),
        names=["m"],
        units=["s" if direction == "lower" else "ops/s"],
        directions=[direction],
        metric_trial=ids,
        metric_code=np.zeros(n, dtype=np.int64),
        metric_value=np.array(metric_value, dtype=float),
        trial_block=np.array(trial_block, dtype=np.int64),
    )


def cell_infos(*variants: str) -> list[CellInfo]:
    """Cells of workload ``w`` for ``variants``; ``base`` is the baseline."""
    return [CellInfo(v, "w", "command", v, {}, "w", v == "base", "m") for v in variants]
