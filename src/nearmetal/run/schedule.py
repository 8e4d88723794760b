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

    interleaved: every cell once per block, in mirrored pairs of blocks (``counterbalanced``: drift hits every
    variant alike, and a linear drift cancels within each pair whatever the variants' positions);
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
            block_trials = counterbalanced(block_trials, seed, b)
        measured += block_trials
    if order == "sequential":
        measured.sort(key=lambda t: cells.index(t.cell))
    elif order == "random":
        random.Random(f"{seed}:{first_block}:{blocks}").shuffle(measured)
    return trials + measured


def pair_order_key(seed: int, block: int, cell_id: str) -> float:
    """A cell's place in the random order of a pair of blocks (blocks 2j and 2j+1 share it)."""
    return random.Random(f"{seed}:pair {block // 2}:{cell_id}").random()


def counterbalanced(block_trials: list[Trial], seed: int, block: int) -> list[Trial]:
    """One block's trials in the order of its pair: blocks 2j and 2j+1 form a pair, the first in a random
    order drawn for the pair (from the seed), the second in the reverse of it (ABBA). A linear drift then
    adds the same to every cell over a pair, so it cancels in every variant/baseline difference within two
    blocks whatever their positions; the pairs' orders are independent. Each cell's place comes from a key
    of (seed, pair, cell), so the cells still active in an adaptive run keep their relative order in both
    blocks of a pair, and a resumed run replays it. A trial's position in its block is kept as evidence:
    the store's ``seq`` orders the trials of each block."""
    ordered = sorted(block_trials, key=lambda t: pair_order_key(seed, block, t.cell.cell_id))
    return ordered[::-1] if block % 2 else ordered
