"""Harness overhead: N trials of a fixed command through nearmetal (local backend, no layer, telemetry on)
versus the same N runs in a bare ``subprocess.run`` loop, for a ~1 s and a ~10 ms command, measured side by
side in one run (alternating the two ways, so drift hits both).

    python benchmarks/overhead.py [--n-long 10] [--n-short 200] [--samplers-only]

Goal (issue 4): ≤ 1% on the 1 s command and ≤ 5 ms fixed cost per trial.

The trial's samplers alone (issue 29: the contention sampler, the wait sampler and the tree sampler) are
measured first, the local backend with them on against the same backend with them off, alternating:
their fixed cost per trial on a ~10 ms command, and the CPU this process (every thread of it) used while a
``sleep`` trial ran, in % of one CPU. Goal: ≤ 2 ms fixed per trial, ≤ 1% of one CPU while a trial runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nearmetal.backends.local import LocalBackend
from nearmetal.plan import parse_plan_text
from nearmetal.run.runner import Runner
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


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _one_trial(backend: LocalBackend, argv: list[str], workdir: Path) -> tuple[float, float]:
    """(wall seconds of ``execute`` as the runner sees it, CPU seconds this process used meanwhile)."""
    from nearmetal.workloads.base import ProcessSpec

    workdir.mkdir(parents=True, exist_ok=True)
    cpu0, t0 = _own_cpu_s(), time.perf_counter()
    execution = backend.execute([ProcessSpec(role="main", argv=list(argv))], workdir, 600)
    wall, cpu = time.perf_counter() - t0, _own_cpu_s() - cpu0
    assert execution.main.returncode == 0, execution.main.stderr_tail()
    return wall, cpu


def sampler_cost(n_short: int, n_long: int, long_s: float) -> None:
    """The samplers on vs off, side by side (alternating): fixed cost per trial and CPU share during one."""
    on, off = LocalBackend(), LocalBackend(None, None, None)
    with tempfile.TemporaryDirectory() as tmp:
        walls: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(n_short):
            for name, backend in (("on", on), ("off", off)) if i % 2 else (("off", off), ("on", on)):
                walls[name].append(_one_trial(backend, ["sleep", "0.01"], Path(tmp) / f"s{i}{name}")[0])
        shares: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(n_long):
            for name, backend in (("on", on), ("off", off)) if i % 2 else (("off", off), ("on", on)):
                wall, cpu = _one_trial(backend, ["sleep", str(long_s)], Path(tmp) / f"l{i}{name}")
                shares[name].append(100 * cpu / wall)
    m_on, m_off = statistics.median(walls["on"]), statistics.median(walls["off"])
    print(
        f"samplers, ~10 ms command ({n_short} trials each, medians): on {m_on * 1000:.2f} ms, off"
        f" {m_off * 1000:.2f} ms per trial; fixed cost {1000 * (m_on - m_off):+.2f} ms per trial"
        f" (ratio {m_on / m_off:.3f})"
    )
    s_on, s_off = statistics.median(shares["on"]), statistics.median(shares["off"])
    print(
        f"samplers, while a {long_s:g} s trial runs ({n_long} trials each, medians): nearmetal used"
        f" {s_on:.2f}% of one CPU with them, {s_off:.2f}% without; the samplers {s_on - s_off:+.2f}% of one CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-long", type=int, default=10)
    parser.add_argument("--n-short", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samplers-only", action="store_true", help="only the samplers' own cost")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; load average {Path('/proc/loadavg').read_text().split()[0]}")
    sampler_cost(args.n_short // 2, max(3, args.n_long // 2), 5.0)
    if args.samplers_only:
        return
    print("telemetry on (rusage, tree sampler, contention and wait samplers)")
    measure("~10 ms command (sleep 0.01)", busy_argv(0.01), args.n_short, args.rounds)
    measure("~1 s command (stress-ng cpu)", busy_argv(1.0), args.n_long, args.rounds)


if __name__ == "__main__":
    main()
