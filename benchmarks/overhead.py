"""Harness overhead: N trials of a fixed command through nearmetal (local backend, no layer, telemetry on)
versus the same N runs in a bare ``subprocess.run`` loop, for a ~1 s and a ~10 ms command, measured side by
side in one run (alternating the two ways, so drift hits both).

    python benchmarks/overhead.py [--n-long 10] [--n-short 200]

Goal (issue 4): ≤ 1% on the 1 s command and ≤ 5 ms fixed cost per trial.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nearmetal.plan import parse_plan_text
from nearmetal.runner import Runner
from nearmetal.store import Store

PLAN = """
name: overhead
workloads:
  fixed: {{kind: command, params: {{argv: {argv}}}}}
variants: {{bare: []}}
repeats: {n}
order: sequential
"""


def busy_argv(seconds: float) -> list[str]:
    # a CPU-bound command of fixed work, so its duration does not depend on a timer
    if seconds >= 0.5:
        return ["stress-ng", "--cpu", "1", "--cpu-ops", "1700", "--quiet"]
    return ["sleep", "0.01"]


def bare_loop(argv: list[str], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
    return time.perf_counter() - t0


def nearmetal_loop(argv: list[str], n: int, workdir: Path) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    loaded = parse_plan_text(PLAN.format(argv=argv, n=n))
    store = Store(f"sqlite:///{workdir / 'bench.db'}")
    runner = Runner(loaded, store, workdir)
    t0 = time.perf_counter()
    runner.run()
    elapsed = time.perf_counter() - t0
    store.dispose()
    return elapsed


def measure(label: str, argv: list[str], n: int, rounds: int) -> None:
    bare, harness = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            pair = [
                ("bare", lambda: bare_loop(argv, n)),
                ("nearmetal", lambda r=r: nearmetal_loop(argv, n, Path(tmp) / f"r{r}")),
            ]
            if r % 2:
                pair.reverse()
            for name, fn in pair:
                (bare if name == "bare" else harness).append(fn())
    b, h = min(bare), min(harness)
    per_trial_ms = (h - b) / n * 1000
    print(
        f"{label}: {n} trials × {rounds} rounds; best bare {b:.3f}s ({b / n * 1000:.1f} ms/run), "
        f"best nearmetal {h:.3f}s; overhead {100 * (h / b - 1):+.2f}%, {per_trial_ms:+.2f} ms per trial"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-long", type=int, default=10)
    parser.add_argument("--n-short", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; telemetry on (rusage + 1 s tree sampler)")
    measure("~10 ms command (sleep 0.01)", busy_argv(0.01), args.n_short, args.rounds)
    measure("~1 s command (stress-ng cpu)", busy_argv(1.0), args.n_long, args.rounds)


if __name__ == "__main__":
    main()
