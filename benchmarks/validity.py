"""Do nearmetal's intervals mean what they say? Coverage and A/A false positives on simulated runs.

    python benchmarks/validity.py [--reps 1000] [--cv 0.15] [--quick]

Each simulated experiment is an interleaved run of three cells of one workload — ``base``, ``same`` (an A/A
copy of it) and ``more`` (true ratio 1.10: a +10% time loss) — one trial of each per block, in a shuffled
order inside the block, exactly as the runner orders them. A trial's value is
``true level × machine drift at its position in time × noise``:

* noise (CV ``--cv``): normal, log-normal, heavy-tailed (1 + Lomax α = 2.5, scaled to the same CV; its
  variance barely exists) and one outlier (normal, plus one baseline trial 10σ slow);
* drift: none, a random walk (2%/trial steps), linear (+10% over the run), block shocks (each block as a whole
  ×e^N(0, 0.3): a noisy minute).

The values go through nearmetal's own analysis (``analysis.analyse`` on a ``MeasuredTable``, the same code a
report runs), with blocks, so the paired design, its methods and the first-stage hull are what is measured.
Fixed rows analyse the first n blocks. Adaptive rows replay the runner's stop rule block by block
(``stopping.cell_precisions`` with the plan's first stage; a retired cell gets no more trials, the baseline
runs while any variant does) from ``min`` = n to ``max`` 30 with a target of ±CV (about 10 blocks), and report the
interval at the block each cell stopped. Coverage: the share of experiments whose 95% interval for ``more``
contains +10%; A/A: the share whose interval for ``same`` excludes 0. The goal (issue 16): every cell ≥ 93%
coverage and ≤ 7% false positives at n ≥ 5 (n = 3 may be conservative).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import time

import numpy as np

from nearmetal.analysis import CellInfo, MeasuredTable, analyse
from nearmetal.analysis.stopping import cell_precisions, first_stage

CELLS = ("base", "same", "more")
TRUE_RATIO = {"base": 1.0, "same": 1.0, "more": 1.10}
NOISES = ("normal", "lognormal", "heavy-tailed", "one outlier")
DRIFTS = ("none", "random walk", "linear", "block shocks")
MAX_BLOCKS = 30


def noise(kind: str, shape: tuple[int, ...], cv: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "lognormal":
        return np.exp(cv * rng.standard_normal(shape))
    if kind == "heavy-tailed":
        # Lomax(α = 2.5) has sd √(α/((α−1)²(α−2))) = 1.49: scaled to the chosen CV
        return 1 + cv / 1.49 * rng.pareto(2.5, shape)
    return np.maximum(1 + cv * rng.standard_normal(shape), 0.05)


def simulate(noise_kind: str, drift: str, cv: float, rng: np.random.Generator) -> np.ndarray:
    """Values (blocks × cells) of one interleaved run of MAX_BLOCKS blocks."""
    blocks, k = MAX_BLOCKS, len(CELLS)
    position = rng.random((blocks, k)).argsort(axis=1).argsort(axis=1)  # each cell's slot in its block
    t = k * np.arange(blocks)[:, None] + position  # trial index in time
    if drift == "random walk":
        level = np.exp(np.cumsum(0.02 * rng.standard_normal(blocks * k)))[t]
    elif drift == "linear":
        level = 1 + 0.10 * t / (blocks * k)
    elif drift == "block shocks":
        level = np.repeat(np.exp(0.3 * rng.standard_normal((blocks, 1))), k, axis=1)
    else:
        level = np.ones((blocks, k))
    values = level * noise(noise_kind, (blocks, k), cv, rng) * np.array([TRUE_RATIO[c] for c in CELLS])
    if noise_kind == "one outlier":
        values[rng.integers(blocks), 0] *= 1 + 10 * cv
    return values


CELL_INFO = [CellInfo(c, "w", "command", c, {}, "w", c == "base", "t_s") for c in CELLS]


def table_of(values: np.ndarray, blocks_of: dict[str, int]) -> MeasuredTable:
    """The first ``blocks_of[cell]`` blocks of each cell as the analysis reads a stored run."""
    cell, block, value = [], [], []
    for code, name in enumerate(CELLS):
        n = blocks_of[name]
        cell += [code] * n
        block += list(range(n))
        value += values[:n, code].tolist()
    count = len(cell)
    ids = np.arange(1, count + 1, dtype=np.int64)
    return MeasuredTable(
        cell_ids=list(CELLS),
        trial_id=ids,
        trial_cell=np.array(cell, dtype=np.int64),
        trial_ok=np.ones(count, dtype=bool),
        trial_warmup=np.zeros(count, dtype=bool),
        names=["t_s"],
        units=["s"],
        directions=["lower"],
        metric_trial=ids,
        metric_code=np.zeros(count, dtype=np.int64),
        metric_value=np.array(value),
        trial_block=np.array(block, dtype=np.int64),
    )


def verdicts(values: np.ndarray, blocks_of: dict[str, int], stage: int | None) -> tuple[bool, bool, float]:
    """(interval of 'more' covers +10%, 'same' looks significant, half-width of 'more')."""
    run = analyse(table_of(values, blocks_of), CELL_INFO, own_intervals=False, first_stage=stage)
    more = run.comparison("more", "t_s")
    same = run.comparison("same", "t_s")
    assert more is not None and same is not None
    m, s = more.loss, same.loss
    covered = m.low is not None and m.low <= 0.10 <= m.high
    return covered, bool(s.significant), m.half_width if m.half_width is not None else math.nan


def adaptive(values: np.ndarray, minimum: int, target: float) -> tuple[bool, bool, float, int]:
    """Replay the runner's stop rule; the verdicts at the blocks each variant stopped."""
    stage = first_stage(minimum, target)
    active = {"same", "more"}
    stopped: dict[str, int] = {}
    for n in range(minimum, MAX_BLOCKS + 1):
        blocks_of = {c: stopped.get(c, n) for c in CELLS}
        run = analyse(table_of(values, blocks_of), CELL_INFO, own_intervals=False, first_stage=stage)
        precision = cell_precisions(run, [c for c in CELL_INFO if c.cell_id in active | {"base"}])
        for cell in list(active):
            if precision[cell].met(target):
                stopped[cell] = n
                active.discard(cell)
        if not active:
            break
    blocks_of = {c: stopped.get(c, MAX_BLOCKS) for c in CELLS}
    blocks_of["base"] = max(blocks_of["same"], blocks_of["more"])
    covered, false_positive, half = verdicts(values, blocks_of, stage)
    return covered, false_positive, half, blocks_of["more"]


def rows_for(job: tuple[str, str, int, float, float, list[int], int]) -> list[tuple[str, list[float]]]:
    """The fixed and adaptive rows of one (noise, drift): per n, (coverage, false positives, half-width,
    blocks used)."""
    noise_kind, drift, reps, cv, target, sizes, seed = job
    rng = np.random.default_rng(seed)
    runs = [simulate(noise_kind, drift, cv, rng) for _ in range(reps)]
    out = []
    for mode in ("fixed", "adaptive"):
        cells: list[float] = []
        for n in sizes:
            if mode == "adaptive" and n >= MAX_BLOCKS:
                cells += [math.nan] * 4
                continue
            outcomes, used = [], []
            for values in runs:
                if mode == "fixed":
                    outcomes.append(verdicts(values, {c: n for c in CELLS}, None))
                    used.append(n)
                else:
                    *found, blocks = adaptive(values, n, target)
                    outcomes.append(tuple(found))
                    used.append(blocks)
            cells += [
                float(np.mean([o[0] for o in outcomes])),
                float(np.mean([o[1] for o in outcomes])),
                float(np.nanmedian([o[2] for o in outcomes])),
                float(np.mean(used)),
            ]
        out.append((mode, cells))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000, help="experiments per cell of the table")
    parser.add_argument("--cv", type=float, default=0.15, help="coefficient of variation of the noise")
    parser.add_argument("--sizes", default="3,5,10,30", help="blocks (fixed) / min blocks (adaptive)")
    parser.add_argument(
        "--target", type=float, default=1.0, help="adaptive target half-width as a multiple of the CV"
    )
    parser.add_argument("--quick", action="store_true", help="200 experiments per cell")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reps = 200 if args.quick else args.reps
    sizes = [int(s) for s in args.sizes.split(",")]
    target = args.target * args.cv
    t0 = time.perf_counter()
    print(
        f"{reps} experiments per row; CV {args.cv:.0%}; adaptive: min = n, max {MAX_BLOCKS}, target ±{target:.1%}"
    )
    print("coverage of the true +10% (goal ≥ 93%) / A/A false positives (goal ≤ 7%) / median half-width")
    print("| noise | drift | repeats | " + " | ".join(f"n = {n}" for n in sizes) + " |")
    print("|" + "---|" * (3 + len(sizes)))
    jobs = [
        (noise_kind, drift, reps, args.cv, target, sizes, args.seed * 1000 + i)
        for i, (noise_kind, drift) in enumerate((a, b) for a in NOISES for b in DRIFTS)
    ]
    worst_cov, worst_fp = 1.0, 0.0
    with multiprocessing.Pool(args.jobs) as pool:
        for job, rows in zip(jobs, pool.imap(rows_for, jobs), strict=True):
            for mode, cells in rows:
                shown = []
                for j, n in enumerate(sizes):
                    cov, fp, half, blocks = cells[4 * j : 4 * j + 4]
                    if math.isnan(cov):
                        shown.append("= fixed")
                        continue
                    if n >= 5:
                        worst_cov, worst_fp = min(worst_cov, cov), max(worst_fp, fp)
                    extra = f", {blocks:.1f} blocks" if mode == "adaptive" else ""
                    shown.append(f"{cov:.1%} / {fp:.1%} / ±{half:.1%}{extra}")
                print(f"| {job[0]} | {job[1]} | {mode} | " + " | ".join(shown) + " |", flush=True)
    print(
        f"worst at n ≥ 5: coverage {worst_cov:.1%}, false positives {worst_fp:.1%}"
        f" ({'goal met' if worst_cov >= 0.93 and worst_fp <= 0.07 else 'GOAL MISSED'});"
        f" {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
