"""Do nearmetal's intervals mean what they say? Coverage and family-wise A/A false positives, simulated.

    nice -n 15 python benchmarks/validity.py [--experiments 1000] [--jobs 2] [--cells 'ties'] [--seed 1]

Each simulated experiment is an interleaved run — ``base``, ``same`` (an A/A copy of it) and ``more`` (true
ratio of means 1.10: a +10% time loss) — one trial of each per block, each block's order from nearmetal's own
schedule (``run.schedule.counterbalanced``: mirrored pairs of blocks). A trial's value is
``true level × machine drift at its position in time × noise``, noise of mean 1 (so the ratio of the
generating means, the loss the table defines, is exactly 1.10 — and 1.00 for ``same``):

* shapes: normal (CV 15%), log-normal (15%), Lomax α = 1.5 (infinite variance), outlier (normal plus one
  baseline trial 10σ slow), bimodal (two modes ±13%), heteroscedastic (the variants log-normal CV 30%, the
  baseline 10%: same mean, more spread), ties-1ms (a 10 ms metric, CV 5%, on a 1 ms timer) and ties-0.01s
  (a 0.5 s metric, CV 2%, printed to 2 decimals) — the ties are rounded after the noise, the truth is the
  ratio of the unrounded means;
* drifts: none, linear (+10% per 90 trials), step (×1.2 from a random trial on), random walk (2%/trial).

The values go through ``analysis.analyse`` on a ``MeasuredTable`` (the code a report runs). Fixed rows analyse
the first n blocks; ``adaptive`` replays the runner's stop rule (first stage of min 3, target ``--target``
relative precision of the ratio, default ±10%, max 30 blocks) from the functions ``analyse`` calls for a paired
row (``stop_blocks_fast``; ``--check-adaptive K`` compares it with ``analyse`` + ``stopping.cell_precisions``
between every two blocks and exits 1 on any difference) and reads the interval through ``analyse`` at the block
each cell stopped. Coverage: share of ``more``'s 95% intervals containing +10%; A/A: share of ``same`` called
significant (its row verdict, family of 2 rows with Holm). Family rows: ``base`` and k = 4 or 12 identical
variants (shape and drift as the row's), the share of runs with any row called significant (Holm, the
default ``analysis.family: variants``). Goal (issue 28): coverage ≥ 93% and family-wise A/A ≤ 7% everywhere.

Beyond the main grid (``--drifts``, ``--sizes``): the drift ``first-slow`` (the cell run first in its block is
5% slow: a position effect mirrored pairs do not cancel) and n = 4, 6 (few blocks). ``--statistic floor``:
coverage of the true ratio of the cells' 10th percentiles (``analysis/floor.py``), fixed n only.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
import os
import re
import sys
import time

import numpy as np

from nearmetal.analysis import CellInfo, MeasuredTable, analyse
from nearmetal.analysis.floor import FLOOR_QUANTILE
from nearmetal.analysis.paired import infer_resolution, ratio_of_means_interval
from nearmetal.analysis.stopping import cell_precisions, first_stage
from nearmetal.run.schedule import pair_order_key

SHAPES = (
    "normal",
    "lognormal",
    "lomax1.5",
    "outlier",
    "bimodal",
    "heteroscedastic",
    "ties-1ms",
    "ties-0.01s",
)
DRIFTS = ("none", "linear", "step", "random walk")
# asked for by name only (``--drifts``): the cell run first in its block is 5% slow (a cold cache), which
# mirrored pairs do not cancel (the middle cell of three never runs first)
EXTRA_DRIFTS = ("first-slow",)
SIZES = ("3", "5", "10", "20", "50", "100", "adaptive")
EXTRA_SIZES = ("4", "6")  # few blocks (``--sizes``): an unfinished mirrored pair, and three whole ones
FAMILY_SIZES = (4, 12)
FAMILY_N = ("5", "20")
TRUE_MORE = 1.10
CV = 0.15
ADAPTIVE_MIN, ADAPTIVE_MAX, ADAPTIVE_TARGET = 3, 30, 0.10
SEED_OF_SCHEDULE = 7


def noise(shape: str, shape_of: tuple[int, int], rng: np.random.Generator, noisy: bool = False) -> np.ndarray:
    """Noise of mean 1 (``noisy``: the variants of the heteroscedastic shape)."""
    if shape in ("lognormal", "heteroscedastic"):
        cv = 0.30 if shape == "heteroscedastic" and noisy else (0.10 if shape == "heteroscedastic" else CV)
        sigma = math.sqrt(math.log1p(cv * cv))
        return np.exp(sigma * rng.standard_normal(shape_of) - sigma * sigma / 2)
    if shape == "lomax1.5":
        # Lomax(α 1.5) has mean 2 and no variance: 1 + CV·(L − 2), made positive by construction
        s = CV
        return (1 + s * rng.pareto(1.5, shape_of)) / (1 + 2 * s)
    if shape == "bimodal":
        mode = np.where(rng.random(shape_of) < 0.5, -1.0, 1.0)
        return 1 + 0.13 * mode + 0.04 * rng.standard_normal(shape_of)
    if shape == "ties-1ms":
        return 1 + 0.05 * rng.standard_normal(shape_of)
    if shape == "ties-0.01s":
        return 1 + 0.02 * rng.standard_normal(shape_of)
    return np.maximum(1 + CV * rng.standard_normal(shape_of), 0.05)


def simulate(
    shape: str, drift: str, cells: list[str], truth: list[float], blocks: int, rng: np.random.Generator
):
    """(values, unrounded) blocks × cells of one interleaved run in the counterbalanced schedule."""
    k = len(cells)
    # each cell's slot in its block, as the runner's schedule puts it (seeded per experiment)
    seed = int(rng.integers(1 << 30))
    position = np.empty((blocks, k), dtype=np.int64)
    keys: list[float] = []
    for b in range(blocks):
        if b % 2 == 0:
            keys = [pair_order_key(seed, b, c) for c in cells]  # one draw per pair, as the schedule's
        order = sorted(range(k), key=lambda j: keys[j])
        if b % 2:
            order = order[::-1]
        position[b, order] = np.arange(k)
    t = k * np.arange(blocks)[:, None] + position  # trial index in time
    total = blocks * k
    if drift == "random walk":
        level = np.exp(np.cumsum(0.02 * rng.standard_normal(total)))[t]
    elif drift == "linear":
        level = 1 + 0.10 * t / 90
    elif drift == "step":
        level = np.where(t >= rng.integers(total), 1.2, 1.0)
    elif drift == "first-slow":
        level = np.where(position == 0, 1.05, 1.0)
    else:
        level = np.ones((blocks, k))
    noisy = np.array([c != "base" for c in cells])
    n = noise(shape, (blocks, k), rng)
    if shape == "heteroscedastic":
        n = np.where(noisy[None, :], noise(shape, (blocks, k), rng, noisy=True), n)
    values = level * n * np.array(truth)
    if shape == "outlier":
        values[rng.integers(blocks), 0] *= 1 + 10 * CV
    if shape == "ties-1ms":
        values = np.round(values * 10.0) / 1000  # 10 ms metric, in seconds, to the ms
    elif shape == "ties-0.01s":
        values = np.round(values * 50.0) / 100  # 0.5 s metric, to 2 decimals
    return values


def cell_infos(cells: list[str]) -> list[CellInfo]:
    return [CellInfo(c, "w", "command", c, {}, "w", c == "base", "t_s") for c in cells]


def table_of(values: np.ndarray, cells: list[str], blocks_of: dict[str, int]) -> MeasuredTable:
    """The first ``blocks_of[cell]`` blocks of each cell as the analysis reads a stored run."""
    cell, block, value = [], [], []
    for code, name in enumerate(cells):
        n = blocks_of[name]
        cell += [code] * n
        block += list(range(n))
        value += values[:n, code].tolist()
    count = len(cell)
    ids = np.arange(1, count + 1, dtype=np.int64)
    return MeasuredTable(
        cell_ids=list(cells),
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


CELLS = ["base", "same", "more"]
TRUTH = [1.0, 1.0, TRUE_MORE]


@functools.lru_cache(maxsize=64)
def true_ratio(shape: str, statistic: str, drift: str = "none", blocks: int = 0) -> float:
    """The quantity the table claims for 'more' against 'base': the ratio of the generating means (1.10),
    or with ``statistic="floor"`` the ratio of the cells' 10th percentiles over the trials runs of ``blocks``
    blocks pool (200,000 simulated trials a cell, the same shape and drift: a drifting machine mixes levels, and
    the mixture's floor ratio moves when the two cells' noise shapes differ; the outlier shape's slow baseline
    trial lifts the baseline's floor a little). ``blocks`` 0: the noise distributions' own 10th percentiles
    (4 million draws of each; 1.10 where both cells have one noise shape)."""
    if statistic != "floor":
        return TRUE_MORE
    rng = np.random.default_rng(12345)
    if blocks <= 0:
        draws = 4_000_000
        base = noise(shape, (draws,), rng)
        more = noise(shape, (draws,), rng, noisy=shape == "heteroscedastic")
        return TRUE_MORE * float(np.quantile(more, FLOOR_QUANTILE) / np.quantile(base, FLOOR_QUANTILE))
    runs = [simulate(shape, drift, CELLS, TRUTH, blocks, rng) for _ in range(max(1, 200_000 // blocks))]
    pooled = np.concatenate(runs)
    return float(np.quantile(pooled[:, 2], FLOOR_QUANTILE) / np.quantile(pooled[:, 0], FLOOR_QUANTILE))


def verdicts(
    values: np.ndarray,
    blocks_of: dict[str, int],
    stage: int | None,
    statistic: str = "mean",
    shape: str = "normal",
    drift: str = "none",
) -> tuple[bool, bool, float]:
    """(interval of 'more' covers the true ratio, 'same' called significant, relative half-width of 'more')."""
    run = analyse(
        table_of(values, CELLS, blocks_of),
        cell_infos(CELLS),
        own_intervals=False,
        first_stage=stage,
        statistic=statistic,
    )
    more = run.comparison("more", "t_s")
    same = run.comparison("same", "t_s")
    assert more is not None and same is not None
    m = more.loss
    truth = true_ratio(shape, statistic, drift, max(blocks_of.values())) - 1
    covered = m.low is not None and m.high is not None and m.low <= truth <= m.high
    half = m.relative_half_width
    return covered, bool(same.loss.significant), half if half is not None else math.nan


def stop_blocks_slow(values: np.ndarray) -> dict[str, int]:
    """The block each variant stopped at: the runner's stop rule replayed through ``analyse`` and
    ``stopping.cell_precisions`` between every two blocks (what a run does; ~28 analyses an experiment)."""
    stage = first_stage(ADAPTIVE_MIN, ADAPTIVE_TARGET)
    infos = cell_infos(CELLS)
    active = {"same", "more"}
    stopped: dict[str, int] = {}
    for n in range(ADAPTIVE_MIN, ADAPTIVE_MAX + 1):
        blocks_of = {c: stopped.get(c, n) for c in CELLS}
        run = analyse(table_of(values, CELLS, blocks_of), infos, own_intervals=False, first_stage=stage)
        precision = cell_precisions(run, [c for c in infos if c.cell_id in active | {"base"}])
        for cell in list(active):
            if precision[cell].met(ADAPTIVE_TARGET):
                stopped[cell] = n
                active.discard(cell)
        if not active:
            break
    return stopped


def stop_blocks_fast(values: np.ndarray) -> dict[str, int]:
    """The same decisions from the functions ``analyse`` calls for a paired row (``block_pairs`` →
    ``comparison_resolution`` → ``ratio_of_means_interval`` with the first stage → relative half-width),
    without building a table and a run analysis between every two blocks: a still-running variant has the
    baseline's blocks 0..n−1, the resolution is inferred from both cells' values, and Holm's family
    adjustment does not move a row's own interval (which the stop rule judges). ``--check-adaptive``
    compares it with ``stop_blocks_slow``."""
    stage = first_stage(ADAPTIVE_MIN, ADAPTIVE_TARGET)
    column = {c: j for j, c in enumerate(CELLS)}
    active = ["same", "more"]
    stopped: dict[str, int] = {}
    for n in range(ADAPTIVE_MIN, ADAPTIVE_MAX + 1):
        base = values[:n, 0]
        for cell in list(active):
            mine = values[:n, column[cell]]
            q = infer_resolution(np.concatenate([mine, base]))
            iv = ratio_of_means_interval(mine, base, 0.95, stage, q)
            if iv.low is None or iv.high is None or iv.low <= 0:
                continue
            # LossEstimate.relative_half_width, from the loss bounds as the table holds them
            low, high = iv.low - 1.0, iv.high - 1.0
            half = math.expm1((math.log(1.0 + high) - math.log(1.0 + low)) / 2)
            if half <= ADAPTIVE_TARGET:
                stopped[cell] = n
                active.remove(cell)
        if not active:
            break
    return stopped


def adaptive(values: np.ndarray, fast: bool = True) -> tuple[bool, bool, float, int]:
    """Replay the runner's stop rule; the verdicts (``analyse``, Holm over the 2 rows) at the blocks each
    variant stopped."""
    stage = first_stage(ADAPTIVE_MIN, ADAPTIVE_TARGET)
    stopped = stop_blocks_fast(values) if fast else stop_blocks_slow(values)
    blocks_of = {c: stopped.get(c, ADAPTIVE_MAX) for c in CELLS}
    blocks_of["base"] = max(blocks_of["same"], blocks_of["more"])
    covered, false_positive, half = verdicts(values, blocks_of, stage)
    return covered, false_positive, half, blocks_of["more"]


def coverage_cell(job: tuple[str, str, str, int, int, str]) -> tuple[tuple[str, str, str], list[float]]:
    """(shape, drift, n) → coverage, A/A rate, median relative half-width, mean blocks."""
    shape, drift, size, experiments, seed, statistic = job
    rng = np.random.default_rng(seed)
    blocks = ADAPTIVE_MAX if size == "adaptive" else int(size)
    out = []
    for _ in range(experiments):
        values = simulate(shape, drift, CELLS, TRUTH, blocks, rng)
        if size == "adaptive":
            out.append(adaptive(values))
        else:
            out.append(
                (*verdicts(values, dict.fromkeys(CELLS, blocks), None, statistic, shape, drift), blocks)
            )
    arr = np.array(out, dtype=float)
    return (shape, drift, size), [
        float(arr[:, 0].mean()),
        float(arr[:, 1].mean()),
        float(np.nanmedian(arr[:, 2])),
        float(arr[:, 3].mean()),
    ]


def check_adaptive(job: tuple[str, str, int, int]) -> tuple[str, int, int]:
    """(shape/drift, experiments, disagreements): the fast stop rule against the full one, experiment by
    experiment (the block each variant stopped at must be the same)."""
    shape, drift, experiments, seed = job
    rng = np.random.default_rng(seed)
    differ = 0
    for _ in range(experiments):
        values = simulate(shape, drift, CELLS, TRUTH, ADAPTIVE_MAX, rng)
        differ += stop_blocks_fast(values) != stop_blocks_slow(values)
    return f"{shape}/{drift}", experiments, differ


def family_cell(job: tuple[str, str, str, int, int, int]) -> tuple[tuple[str, str, str, int], float]:
    """(shape, drift, n, k) → share of runs with any of k identical variants called significant."""
    shape, drift, size, k, experiments, seed = job
    rng = np.random.default_rng(seed)
    cells = ["base", *(f"v{i}" for i in range(k))]
    truth = [1.0] * len(cells)
    infos = cell_infos(cells)
    n = int(size)
    hits = 0
    for _ in range(experiments):
        values = simulate(shape, drift, cells, truth, n, rng)
        run = analyse(table_of(values, cells, dict.fromkeys(cells, n)), infos, own_intervals=False)
        hits += any(bool(c.loss.significant) for c in run.comparisons)
    return (shape, drift, size, k), hits / experiments


def report(
    results: dict[tuple[str, str, str], list[float]],
    family: dict[tuple[str, str, str, int], float],
    experiments: int,
) -> None:
    """The tables (markdown) of what was measured."""
    se = math.sqrt(0.95 * 0.05 / experiments)
    worst_cov, worst_fp, worst_fam = 1.0, 0.0, 0.0
    if results:
        sizes = sorted({k[2] for k in results}, key=lambda s: math.inf if s == "adaptive" else int(s))
        print(
            "\ncoverage of +10% (goal ≥ 93%) / A/A of 'same' / median relative half-width (adaptive: blocks)\n"
        )
        print("| shape | drift | " + " | ".join(f"n = {s}" for s in sizes) + " |")
        print("|" + "---|" * (2 + len(sizes)))
        for shape in SHAPES:
            for drift in (*DRIFTS, *EXTRA_DRIFTS):
                if not any((shape, drift, s) in results for s in sizes):
                    continue
                shown = []
                for s in sizes:
                    cell = results.get((shape, drift, s))
                    if cell is None:
                        shown.append("–")
                        continue
                    cov, fp, half, blocks = cell
                    worst_cov, worst_fp = min(worst_cov, cov), max(worst_fp, fp)
                    flag = "" if cov >= 0.93 - 2 * se else " ✗"
                    extra = f", {blocks:.1f} bl" if s == "adaptive" else ""
                    shown.append(f"{cov:.1%}{flag} / {fp:.1%} / ±{half:.1%}{extra}")
                print(f"| {shape} | {drift} | " + " | ".join(shown) + " |")
    if family:
        print("\nfamily-wise A/A: share of runs with any of k identical variants significant (goal ≤ 7%)\n")
        cols = [(n, k) for n in FAMILY_N for k in FAMILY_SIZES]
        print("| shape | drift | " + " | ".join(f"n = {n}, k = {k}" for n, k in cols) + " |")
        print("|" + "---|" * (2 + len(cols)))
        for shape in SHAPES:
            for drift in (*DRIFTS, *EXTRA_DRIFTS):
                row = [family.get((shape, drift, n, k)) for n, k in cols]
                if all(r is None for r in row):
                    continue
                worst_fam = max([worst_fam, *(r for r in row if r is not None)])
                print(
                    f"| {shape} | {drift} | "
                    + " | ".join("–" if r is None else f"{r:.1%}" for r in row)
                    + " |"
                )
    ok = worst_cov >= 0.93 and worst_fp <= 0.07 and worst_fam <= 0.07
    print(
        f"\nworst: coverage {worst_cov:.1%}, A/A (one row) {worst_fp:.1%}, family-wise A/A {worst_fam:.1%}"
        f" ({'goal met' if ok else 'GOAL MISSED'}; ✗: more than 2 standard errors below 93%)"
    )


def read_partial(path: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """The cells a run printed to stderr as they ended (``--render``: tables of a run cut short)."""
    results, family = {}, {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            kind, _, rest = line.strip().partition(" ")
            tokens = rest.split(" ")
            count = 4 if kind == "cell" else 1
            key, numbers = " ".join(tokens[:-count]), tokens[-count:]  # a drift's name may hold a space
            if kind == "cell":
                shape, rest = key.split("/", 1)
                drift, size = rest.rsplit("/", 1)
                results[(shape, drift, size)] = [float(x) for x in numbers]
            elif kind == "family":
                shape, drift, size, k = key.split("/")
                family[(shape, drift, size, int(k))] = float(numbers[0])
    return results, family


def any_cell(job: tuple) -> tuple:  # type: ignore[type-arg]
    """A coverage cell or a family cell (their first field says which), tagged."""
    if job[0] == "family":
        return ("family", *family_cell(job[1:]))
    return ("cell", *coverage_cell(job[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000, help="experiments per cell of the table")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument(
        "--cells", default="", help="regular expression on 'shape/drift/n' (or 'shape/drift/n/family k')"
    )
    parser.add_argument("--no-family", action="store_true", help="leave out the 4- and 12-variant rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--statistic",
        choices=("mean", "floor"),
        default="mean",
        help="the table's statistic (floor: coverage of the true ratio of 10th percentiles; no family rows)",
    )
    parser.add_argument(
        "--drifts",
        default="",
        help=f"comma-separated drifts (default: {', '.join(DRIFTS)}; also {', '.join(EXTRA_DRIFTS)})",
    )
    parser.add_argument(
        "--sizes",
        default="",
        help=f"comma-separated n (default: {', '.join(SIZES)}; also {', '.join(EXTRA_SIZES)})",
    )
    parser.add_argument("--render", help="print the tables of the cells a run wrote to stderr (this file)")
    parser.add_argument(
        "--check-adaptive",
        type=int,
        default=0,
        metavar="K",
        help="only compare the fast adaptive stop rule with the full one on K experiments per shape and drift",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=ADAPTIVE_TARGET,
        help=f"the adaptive rows' target relative precision (default {ADAPTIVE_TARGET})",
    )
    args = parser.parse_args()
    # the workers are forked from here: they see the target set before the pool starts
    globals()["ADAPTIVE_TARGET"] = args.target
    if args.check_adaptive:
        checks = [
            (shape, drift, args.check_adaptive, args.seed * 100_000 + 90_000 + i)
            for i, (shape, drift) in enumerate((a, b) for a in SHAPES for b in DRIFTS)
        ]
        total = 0
        with multiprocessing.Pool(args.jobs) as pool:
            for name, count, differ in pool.imap_unordered(check_adaptive, checks):
                print(f"{name}: {differ} of {count} experiments stop differently", flush=True)
                total += differ
        print(f"fast stop rule disagrees with analyse + cell_precisions in {total} experiments")
        sys.exit(1 if total else 0)
    if args.render:
        report(*read_partial(args.render), args.experiments)
        return
    pick = re.compile(args.cells) if args.cells else None
    t0 = time.perf_counter()
    # seeds: the main grid's cells keep the numbers they had before the extra drifts and sizes existed
    main_grid = [(a, b, c) for a in SHAPES for b in DRIFTS for c in SIZES]
    full_grid = [(a, b, c) for a in SHAPES for b in (*DRIFTS, *EXTRA_DRIFTS) for c in (*SIZES, *EXTRA_SIZES)]
    seed_of = {key: args.seed * 100_000 + i for i, key in enumerate(main_grid)}
    for j, key in enumerate(full_grid):
        seed_of.setdefault(key, args.seed * 100_000 + 70_000 + j)
    drifts = args.drifts.split(",") if args.drifts else list(DRIFTS)
    sizes = args.sizes.split(",") if args.sizes else list(SIZES)
    choices = (("drift", drifts, (*DRIFTS, *EXTRA_DRIFTS)), ("size", sizes, (*SIZES, *EXTRA_SIZES)))
    for name, chosen, known in choices:
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"unknown {name} {', '.join(unknown)}: choose from {', '.join(known)}")
    if args.statistic == "floor" and "adaptive" in sizes:
        parser.error("the floor's coverage is measured at fixed n only (no Stein hull for a stop rule)")
    cov_jobs = [
        ("cell", shape, drift, size, args.experiments, seed_of[(shape, drift, size)], args.statistic)
        for shape in SHAPES
        for drift in drifts
        for size in sizes
        if pick is None or pick.search(f"{shape}/{drift}/{size}")
    ]
    fam_jobs = [
        ("family", shape, drift, size, k, args.experiments, args.seed * 100_000 + 50_000 + i)
        for i, (shape, drift, size, k) in enumerate(
            (a, b, c, k) for a in SHAPES for b in DRIFTS for c in FAMILY_N for k in FAMILY_SIZES
        )
        if not args.no_family
        and args.statistic == "mean"
        and drift in drifts
        and (pick is None or pick.search(f"{shape}/{drift}/{size}/family {k}"))
    ]
    print(
        f"{args.experiments} experiments per cell; "
        + (
            "true ratio of means 1.10"
            if args.statistic == "mean"
            else f"statistic floor: true ratio of {FLOOR_QUANTILE:.0%} quantiles (1.10 but heteroscedastic)"
        )
        + f"; adaptive: min {ADAPTIVE_MIN},"
        f" max {ADAPTIVE_MAX}, target ±{ADAPTIVE_TARGET:.0%} relative precision of the ratio; {args.jobs} jobs"
    )
    se = math.sqrt(0.95 * 0.05 / args.experiments)
    print(f"Monte-Carlo standard error of a 95% coverage: ±{se:.1%}")
    results: dict[tuple[str, str, str], list[float]] = {}
    family: dict[tuple[str, str, str, int], float] = {}

    # no drift first, then the drifts; within each, small n and the families before n = 50, 100 and adaptive
    # (the slow ones): a run cut short has measured every shape at the same settings
    def priority(job: tuple) -> tuple[int, int]:  # type: ignore[type-arg]
        heavy = job[3] in ("50", "100", "adaptive")
        return drifts.index(job[2]) if job[2] in drifts else 0, 1 if heavy else 0

    jobs = sorted([*cov_jobs, *fam_jobs], key=priority)
    with multiprocessing.Pool(args.jobs) as pool:
        # each cell as it ends (stderr), so a run cut short still says what it measured
        for outcome in pool.imap_unordered(any_cell, jobs):
            if outcome[0] == "cell":
                key, cells = outcome[1], outcome[2]
                results[key] = cells
                print("cell", "/".join(key), " ".join(f"{x:.4f}" for x in cells), file=sys.stderr, flush=True)
            else:
                fkey, rate = outcome[1], outcome[2]
                family[fkey] = rate
                print("family", "/".join(map(str, fkey)), f"{rate:.4f}", file=sys.stderr, flush=True)
    report(results, family, args.experiments)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
