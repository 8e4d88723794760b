"""flops on the CPU vs numpy's own best matmul time (issue 8).

The ``flops`` workload's steady-state fp64 TFLOPS (all its flops over all its measured time, after its
warm-up) against the best single ``numpy.matmul`` of the same n×n matrices, timed in its own process
with the same thread count: ratio = flops TFLOPS / (2·n³ / numpy's best seconds). The two are measured
alternately, ``--rounds`` times each, so drift on a shared machine hits both; the median ratio is the
figure.

    python benchmarks/flops_cpu.py [--size 1024] [--threads 0] [--rounds 3] [--duration 5]

Goal: ratio ≥ 0.95 (the workload measures what BLAS can do, not its own overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from nearmetal.workloads.programs import RESULT_PREFIX, program_path

NUMPY_BEST = """
import sys, time, numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n)); b = rng.standard_normal((n, n)); c = np.empty_like(a)
np.matmul(a, b, out=c)  # warm
best = float("inf")
for _ in range(repeats):
    t0 = time.perf_counter(); np.matmul(a, b, out=c); best = min(best, time.perf_counter() - t0)
print(best)
"""


def thread_env(threads: int) -> dict[str, str]:
    count = str(threads or len(os.sched_getaffinity(0)))
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
    return {**os.environ, **dict.fromkeys(names, count)}


def workload_tflops(size: int, threads: int, duration: float) -> dict:
    argv = [sys.executable, str(program_path("flops")), "--precision=fp64", f"--size={size}"]
    argv += [f"--duration={duration}", "--warmup=1", f"--threads={threads}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX) :])


def numpy_best_s(size: int, threads: int, repeats: int) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", NUMPY_BEST, str(size), str(repeats)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env=thread_env(threads),
    )
    return float(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="0: one per allowed CPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="the workload's measured seconds")
    parser.add_argument("--repeats", type=int, default=20, help="numpy matmuls per round (best taken)")
    args = parser.parse_args()
    flops_per_matmul = 2.0 * args.size**3
    ratios = []
    print(f"fp64 {args.size}×{args.size}, threads {args.threads or len(os.sched_getaffinity(0))}")
    print(f"{'round':>5} {'workload TFLOPS':>16} {'numpy best s':>13} {'numpy TFLOPS':>13} {'ratio':>7}")
    for round_ in range(1, args.rounds + 1):
        doc = workload_tflops(args.size, args.threads, args.duration)
        best = numpy_best_s(args.size, args.threads, args.repeats)
        numpy_tflops = flops_per_matmul / best / 1e12
        ratios.append(doc["tflops"] / numpy_tflops)
        print(f"{round_:>5} {doc['tflops']:>16.5f} {best:>13.5f} {numpy_tflops:>13.5f} {ratios[-1]:>7.3f}")
    median = statistics.median(ratios)
    verdict = "meets" if median >= 0.95 else "misses"
    print(f"median ratio {median:.3f} ({verdict} the goal ≥ 0.95); BLAS: {doc.get('blas') or 'unknown'}")


if __name__ == "__main__":
    main()
