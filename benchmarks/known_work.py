"""Known work on real processes: does the heavier loop's interval cover the true ratio? (issue 28, item 7)

    python benchmarks/known_work.py [--runs 8] [--blocks 6] [--iterations 3000000] [--timer wall|loop]

Each run: the truth first, outside nearmetal — the same commands timed best-of-7, base and heavy interleaved —
then a nearmetal run (fixed repeats, interleaved) of three cells: ``base`` (a Python loop of N iterations),
``same`` (an identical copy: A/A) and ``heavy`` (1.5 N). ``--timer wall`` reads the trial's wall time (what the
issue measured: start-up included, so the true ratio is below 1.5), ``loop`` the loop's own time printed by the
program, ``cpu`` the loop's CPU time (what a busy host's other processes barely touch). Printed per run: the true ratio (best-of-7), the table's loss with its interval (ratio of means), the
ratio of the cells' minima and medians (noise-floor readings), whether the interval covers the truth, and the
A/A row's verdict. The summary says how often the interval covered, and how far the mean ratio sits from
the best-of ratio when the host adds time to trials (additive interference pulls a ratio of means toward 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import nearmetal
from nearmetal.plan import parse_plan_text

LOOP = """
import sys, time
n = int(sys.argv[1])
start, cpu = time.perf_counter(), time.process_time()
x = 0
for i in range(n):
    x += i
print("loop_s=%.6f loop_cpu_s=%.6f" % (time.perf_counter() - start, time.process_time() - cpu))
"""


TIMERS = {"wall": "wall_s", "loop": "loop_s", "cpu": "loop_cpu_s"}


def truth(script: Path, n: int, k: int = 7) -> dict[str, float]:
    """Best-of-k ratios (wall, loop, cpu) of 1.5 n against n iterations, the two interleaved."""
    heavy = int(1.5 * n)
    seen: dict[str, dict[int, list[float]]] = {t: {n: [], heavy: []} for t in TIMERS}
    for _ in range(k):
        for m in (n, heavy):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, str(script), str(m)], capture_output=True, text=True, timeout=120, check=True
            ).stdout
            seen["wall"][m].append(time.perf_counter() - start)
            fields = dict(part.split("=") for part in out.split())
            seen["loop"][m].append(float(fields["loop_s"]))
            seen["cpu"][m].append(float(fields["loop_cpu_s"]))
    ratios = {t: min(seen[t][heavy]) / min(seen[t][n]) for t in TIMERS}
    return ratios | {f"{t}_base": min(seen[t][n]) for t in TIMERS}


def plan_text(script: Path, n: int, blocks: int, seed: int, confidence: float = 0.95) -> str:
    def argv(m: int) -> str:
        return json.dumps([sys.executable, str(script), str(m)])

    return f"""
name: known-work
workloads:
  loop:
    kind: command
    params:
      argv: {argv(n)}
      metrics:
        - {{name: loop_s, regex: 'loop_s=([0-9.]+)', unit: s, direction: lower}}
        - {{name: loop_cpu_s, regex: 'loop_cpu_s=([0-9.]+)', unit: s, direction: lower}}
variants:
  base: []
  same: {{params: {{loop.argv: {argv(n)}}}}}
  heavy: {{params: {{loop.argv: {argv(int(1.5 * n))}}}}}
baseline: base
repeats: {blocks}
warmup: 1
analysis: {{interval_metrics: [loop_s, loop_cpu_s], bootstrap_resamples: 999, confidence: {confidence}}}
seed: {seed}
"""


def one_run(
    workdir: Path, n: int, blocks: int, seed: int, timer: str, confidence: float = 0.95, best_of: int = 7
) -> dict[str, float | bool]:
    """One run: the truth outside nearmetal, then the plan; the heavy and A/A rows of ``timer``'s metric."""
    script = workdir / "loop.py"
    script.write_text(LOOP)
    truths = truth(script, n, best_of)
    db = f"sqlite:///{workdir}/known-work.db"
    text = plan_text(script, n, blocks, seed, confidence)
    run = nearmetal.run_plan(parse_plan_text(text), db=db, workdir=workdir / "runs")
    results = nearmetal.load_results(run.run_id, db=db)
    metric = TIMERS[timer]
    analysis = results.analysis
    analysis.compare_metric(metric)
    by_variant = {c.variant: c for c in results.cells}
    heavy = analysis.comparison(by_variant["heavy"].cell_id, metric)
    same = analysis.comparison(by_variant["same"].cell_id, metric)
    base_m = analysis.metric(by_variant["base"].cell_id, metric)
    heavy_m = analysis.metric(by_variant["heavy"].cell_id, metric)
    assert heavy is not None and same is not None and base_m is not None and heavy_m is not None
    true_ratio = truths[timer]
    low, high = heavy.loss.low, heavy.loss.high
    return {
        "truth": true_ratio - 1,
        "loss": heavy.loss.loss,
        "low": low if low is not None else float("nan"),
        "high": high if high is not None else float("nan"),
        "covered": low is not None and high is not None and low <= true_ratio - 1 <= high,
        "min_ratio": float(heavy_m.values.min() / base_m.values.min()) - 1,
        "median_ratio": float(np.median(heavy_m.values) / np.median(base_m.values)) - 1,
        "aa_significant": bool(same.loss.significant),
        # the fastest base trial inside nearmetal against the fastest outside: what a trial adds to the work
        "base_min": float(base_m.values.min()),
        "truth_base_min": truths[f"{timer}_base"],
        "aa_loss": same.loss.loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=3_000_000)
    parser.add_argument("--timer", choices=list(TIMERS), default="wall")
    args = parser.parse_args()
    rows = []
    print(
        f"{args.runs} runs of {args.blocks} blocks; {args.iterations} vs 1.5× iterations; timer {args.timer}"
    )
    print(
        "| run | true (best-of-7) | table loss [95% CI] | min ratio | median ratio | covered | A/A"
        " | base min inside / outside (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="nearmetal-known-work-") as tmp:
            row = one_run(Path(tmp), args.iterations, args.blocks, r + 1, args.timer)
        rows.append(row)
        print(
            f"| {r + 1} | {row['truth']:+.1%} | {row['loss']:+.1%} [{row['low']:+.1%}, {row['high']:+.1%}]"
            f" | {row['min_ratio']:+.1%} | {row['median_ratio']:+.1%} | {'yes' if row['covered'] else 'NO'}"
            f" | {'significant' if row['aa_significant'] else 'ok'} {row['aa_loss']:+.1%}"
            f" | {row['base_min']:.3f} / {row['truth_base_min']:.3f} |",
            flush=True,
        )
    covered = sum(bool(r["covered"]) for r in rows)
    flagged = sum(bool(r["aa_significant"]) for r in rows)
    gap = np.median([float(r["loss"]) - float(r["truth"]) for r in rows])
    # each run's best-of-7 truth is itself a noisy measurement (±5 points on CPU time at load 2–5); the work's
    # own ratio is better read as the median over the runs, against which every run's interval is judged too
    pooled = float(np.median([float(r["truth"]) for r in rows]))
    covered_pooled = sum(
        bool(float(r["low"]) <= pooled <= float(r["high"])) for r in rows if np.isfinite(float(r["low"]))
    )
    spread = np.percentile([float(r["truth"]) for r in rows], [10, 90]) * 100
    print(
        f"covered {covered}/{len(rows)} (each run's own best-of-7 truth, which ranged {spread[0]:+.1f}…"
        f"{spread[1]:+.1f}% over the runs, 10th–90th percentile); covered {covered_pooled}/{len(rows)} against"
        f" the pooled truth {pooled:+.1%} (the runs' median); A/A flagged {flagged}/{len(rows)};"
        f" median (table loss − truth) {gap * 100:+.1f} points"
    )


if __name__ == "__main__":
    main()
