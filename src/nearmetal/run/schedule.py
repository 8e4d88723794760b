"""The order of a run's trials: blocks, warm-ups, interleaving; replayable from the seed."""

from __future__ import annotations

import random

from nearmetal.plan import Cell, Trial


def schedule(
    cells: list[Cell],
    order: str,
    warmup: int,
    first_block: int,
    blocks: int,
    seed: int,
    warmup_cells: list[Cell] | None = None,
) -> list[Trial]:
    """Trials of blocks ``first_block .. first_block + blocks - 1`` (warm-ups belong to block 0).

    interleaved: every cell once per block, shuffled per block (drift hits every variant alike);
    sequential: cell after cell; random: every trial of these blocks shuffled. The order depends only on
    the cells, the blocks and the seed, so a resumed run replays it. ``warmup_cells`` (default: ``cells``)
    get the warm-ups of block 0."""
    trials: list[Trial] = []
    if first_block == 0:
        for w in range(warmup):
            trials += [Trial(c, w, warmup=True, block=0) for c in (warmup_cells or cells)]
    measured: list[Trial] = []
    for b in range(first_block, first_block + blocks):
        block_trials = [Trial(c, b, block=b) for c in cells]
        if order == "interleaved":
            random.Random(f"{seed}:{b}").shuffle(block_trials)
        measured += block_trials
    if order == "sequential":
        measured.sort(key=lambda t: cells.index(t.cell))
    elif order == "random":
        random.Random(f"{seed}:{first_block}:{blocks}").shuffle(measured)
    return trials + measured
