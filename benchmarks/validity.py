"""Do nearmetal's intervals mean what they say? Measured on real runs of a workload whose true loss is known.

    python benchmarks/validity.py [--blocks 600] [--iterations 3000000] [--db PATH] [--reuse RUN_ID]

One real run (local backend, interleaved blocks, a warm-up) of three cells of the same program, a loop of
``N`` additions timed by the program itself:
  base: N iterations · same: N iterations (A/A) · more: 1.10·N iterations (true loss +10.0%).
The run is cut into many short "experiments" of consecutive blocks, each analysed as a run of its own with
nearmetal's statistics (BCa ratio of means, small-sample expansion, Fieller hull below 4 trials):
  * coverage: the share of experiments whose 95% interval for ``more`` contains +10% (goal ≥ 95%);
  * A/A false-positive rate: the share whose interval for ``same`` vs ``base`` excludes 0 (goal ≤ 5%);
  * adaptive repeats, replayed on the same data: blocks added one at a time from ``--min`` until the
    interval is within ± ``--target`` or ``--max`` blocks; coverage after this optional stopping, blocks
    used, and the fixed count that reaches the same width in as many experiments.
The pooled ratio over the whole run is printed too: if it is not 1.10 the program's cost is not
proportional to its work on this machine and "true loss" means the pooled one (both are shown).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nearmetal.analysis import Sample, loss_intervals
from nearmetal.plan import parse_plan_text
from nearmetal.runner import Runner
from nearmetal.store import Store

PROGRAM = "import sys, time\nn = int(sys.argv[1])\nt = time.perf_counter()\nsum(range(n))\nprint('loop_s=%.9f' % (time.perf_counter() - t))"

PLAN = """
name: validity
workloads:
  loop:
    kind: command
    params:
      argv: {argv_base}
      metrics: [{{name: loop_s, regex: 'loop_s=([0-9.]+)', unit: s, direction: lower}}]
variants:
  base: []
  same: []
  more: {{params: {{loop.argv: {argv_more}}}}}
baseline: base
repeats: {blocks}
warmup: 1
order: interleaved
timeout: 120s
analysis: {{primary_metric: {{loop: loop_s}}}}
"""

TRUE_LOSS = 0.10


def run_benchmark(db: str, workdir: Path, blocks: int, iterations: int, seed: int) -> str:
    def argv(n: int) -> str:
        return (
            "["
            + ", ".join(f'"{a}"' for a in (sys.executable, "-c", PROGRAM.replace("\n", "\\n"), str(n)))
            + "]"
        )

    text = PLAN.format(argv_base=argv(iterations), argv_more=argv(round(iterations * 1.10)), blocks=blocks)
    loaded = parse_plan_text(text, source="benchmarks/validity.py")
    store = Store(db)
    runner = Runner(loaded, store, workdir, seed=seed)
    t0 = time.perf_counter()
    result = runner.run()
    print(
        f"ran {len(result.records)} trials in {time.perf_counter() - t0:.0f} s (run {result.run_id})",
        file=sys.stderr,
    )
    store.dispose()
    return result.run_id


def block_values(db: str, run_id: str) -> dict[str, np.ndarray]:
    """variant → loop_s per measured block (NaN where a trial failed), in block order."""
    from sqlalchemy import select

    from nearmetal.store.schema import MetricRow, TrialRow

    store = Store(db)
    stmt = (
        select(TrialRow.variant, TrialRow.block, MetricRow.value)
        .join(MetricRow, MetricRow.trial_id == TrialRow.id)
        .where(TrialRow.run_id == run_id, MetricRow.name == "loop_s", TrialRow.status == "ok")
        .where(TrialRow.is_warmup.is_(False))
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    store.dispose()
    blocks = max(b for _, b, _ in rows) + 1
    out = {v: np.full(blocks, np.nan) for v in ("base", "same", "more")}
    for variant, block, value in rows:
        out[variant][block] = value
    return out


def intervals(values: dict[str, np.ndarray], windows: list[tuple[int, int]], resamples: int, seed: int):  # type: ignore[no-untyped-def]
    def sample(name: str, a: int, b: int) -> Sample:
        return Sample.of(values[name][a:b])

    more = loss_intervals(
        [sample("more", a, b) for a, b in windows],
        [sample("base", a, b) for a, b in windows],
        ["lower"] * len(windows),
        resamples=resamples,
        seed=seed,
    )
    same = loss_intervals(
        [sample("same", a, b) for a, b in windows],
        [sample("base", a, b) for a, b in windows],
        ["lower"] * len(windows),
        resamples=resamples,
        seed=seed,
    )
    return more, same


def binomial_ci(k: int, n: int) -> str:
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k}/{n} = {k / n:.1%} [95% CI {ci.low:.1%}, {ci.high:.1%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=600, help="measured blocks in the real run")
    parser.add_argument("--iterations", type=int, default=3_000_000, help="N (additions in the base loop)")
    parser.add_argument("--sizes", default="3,5,10", help="blocks per fixed-size experiment")
    parser.add_argument("--min", type=int, default=3, help="adaptive replay: first blocks")
    parser.add_argument("--max", type=int, default=30, help="adaptive replay: most blocks")
    parser.add_argument("--target", type=float, default=0.02, help="adaptive replay: half-width target")
    parser.add_argument("--resamples", type=int, default=9999)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="SQLite file to keep the run in (default: a temporary one)")
    parser.add_argument("--reuse", help="analyse this stored run instead of running a new one")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="nearmetal-validity-"))
    db = f"sqlite:///{Path(args.db).resolve()}" if args.db else f"sqlite:///{directory / 'validity.db'}"
    run_id = args.reuse or run_benchmark(db, directory / "runs", args.blocks, args.iterations, args.seed)
    values = block_values(db, run_id)
    pooled = np.nanmean(values["more"]) / np.nanmean(values["base"]) - 1
    pooled_aa = np.nanmean(values["same"]) / np.nanmean(values["base"]) - 1
    cv = np.nanstd(values["base"], ddof=1) / np.nanmean(values["base"])
    blocks = values["base"].size
    print(f"run {run_id}: {blocks} blocks; base loop {np.nanmean(values['base']) * 1000:.1f} ms, CV {cv:.1%}")
    print(
        f"pooled loss of 'more' over the whole run: {pooled:+.2%} (nominal {TRUE_LOSS:+.0%}); A/A {pooled_aa:+.2%}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        windows = [(a, a + size) for a in range(0, blocks - size + 1, size)]
        more, same = intervals(values, windows, args.resamples, args.seed)
        cover = sum(e.low is not None and e.low <= TRUE_LOSS <= e.high for e in more)
        cover_pooled = sum(e.low is not None and e.low <= pooled <= e.high for e in more)
        false_pos = sum(bool(e.significant) for e in same)
        width = np.mean([e.half_width for e in more if e.half_width is not None])
        print(
            f"{size:3d} blocks per experiment: coverage of +10%: {binomial_ci(cover, len(windows))};"
            f" of the pooled loss: {cover_pooled / len(windows):.1%}; A/A false positives:"
            f" {binomial_ci(false_pos, len(windows))}; mean half-width ±{width:.2%}"
        )
    # adaptive repeats replayed: windows of up to --max blocks, starting every --max // 3 blocks
    step = max(1, args.max // 3)
    starts = list(range(0, blocks - args.max + 1, step))
    if not starts:
        return
    stopped_at = np.full(len(starts), args.max)
    final: list = [None] * len(starts)  # type: ignore[type-arg]
    met_fixed = {}
    for n in range(args.min, args.max + 1):
        more, _ = intervals(values, [(a, a + n) for a in starts], args.resamples, args.seed)
        met = np.array([e.half_width is not None and e.half_width <= args.target for e in more])
        met_fixed[n] = met.mean()
        for i, e in enumerate(more):
            if final[i] is None and (met[i] or n == args.max):
                final[i] = e
                stopped_at[i] = n
    cover = sum(e.low is not None and e.low <= TRUE_LOSS <= e.high for e in final)
    reached = sum(e.half_width is not None and e.half_width <= args.target for e in final)
    share = reached / len(final)
    fixed = next((n for n, m in met_fixed.items() if m >= share), None) if share > 0 else None
    print(
        f"adaptive (min {args.min}, max {args.max}, target ±{args.target:.0%}) over {len(starts)} windows:"
        f" blocks used mean {stopped_at.mean():.1f}, median {np.median(stopped_at):.0f}, max {stopped_at.max()};"
        f" target reached in {share:.0%}; coverage of +10% after stopping: {binomial_ci(cover, len(final))}"
    )
    if fixed is not None:
        print(
            f"  a fixed count reaching the target in as many experiments ({share:.0%}) needs {fixed} blocks"
            f" per cell: adaptive used {stopped_at.mean() / fixed:.0%} of that"
        )
    elif share > 0:
        print(f"  no fixed count up to {args.max} blocks reaches the target in {share:.0%} of experiments")


if __name__ == "__main__":
    main()
