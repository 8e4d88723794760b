"""Does the harness distort what it measures? The same fio job run by nearmetal (a plan through the runner:
local backend, telemetry on, caches dropped, files removed after each trial) and by raw ``fio`` in a
``subprocess.run``, interleaved round by round in one run (the order flips every round, so drift hits both).

    python benchmarks/fio_overhead.py [--rounds 8] [--rw randread] [--runtime 3] [--numjobs 4]

Goal (issue 6): nearmetal's mean bandwidth within 3% of raw fio's. The figure printed is
``nearmetal mean / raw mean - 1`` with a bootstrap interval, using nearmetal's own analysis.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from nearmetal.analysis.estimate import loss_interval
from nearmetal.plan import parse_plan_text
from nearmetal.run.runner import Runner
from nearmetal.store import Store
from nearmetal.workloads.fio.job import FioParams, job_options
from nearmetal.workloads.fio.layout import drop_caches
from nearmetal.workloads.fio.parse import parse_fio_json

PLAN = """
name: fio-overhead
workloads:
  fio: {{kind: fio, params: {params}}}
variants: {{bare: []}}
repeats: 1
timeout: 600s
"""


def raw_fio(params: FioParams, directory: Path) -> float:
    """The job nearmetal would run, as a plain fio command (same options, same directory layout)."""
    directory.mkdir(parents=True, exist_ok=True)
    if params.drop_caches:
        drop_caches()
    argv = ["fio", *(f"--{k}={v}" for k, v in job_options(params, str(directory))), "--output-format=json+"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True).stdout
    shutil.rmtree(directory, ignore_errors=True)
    return next(m.value for m in parse_fio_json(out) if m.name == "bw_MiBps")


def nearmetal_fio(params: FioParams, workdir: Path, seq: int) -> float:
    loaded = parse_plan_text(PLAN.format(params=params.model_dump_json(exclude_defaults=True)))
    store = Store(f"sqlite:///{workdir / 'bench.db'}")
    try:
        result = Runner(loaded, store, workdir, run_id=f"bench{seq}").run()
    finally:
        store.dispose()
    record = result.records[0]
    if record.status != "ok":
        raise SystemExit(f"nearmetal trial failed: {record.error}")
    shutil.rmtree(workdir / f"bench{seq}", ignore_errors=True)
    return next(m.value for m in record.metrics if m.name == "bw_MiBps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--rw", default="randread")
    parser.add_argument("--runtime", type=float, default=3.0)
    parser.add_argument("--numjobs", type=int, default=4)
    parser.add_argument("--size", default="32m")
    args = parser.parse_args()
    params = FioParams(rw=args.rw, runtime=args.runtime, numjobs=args.numjobs, size=args.size)
    raw, harness = [], []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        work = Path(tmp).resolve()
        for r in range(args.rounds):
            pair = [("raw", lambda r=r: raw_fio(params, work / f"raw{r}")),
                    ("nearmetal", lambda r=r: nearmetal_fio(params, work, r))]  # fmt: skip
            if r % 2:
                pair.reverse()
            for name, fn in pair:
                (raw if name == "raw" else harness).append(fn())
    raw_a, nm_a = np.array(raw), np.array(harness)
    est = loss_interval(nm_a, raw_a, "higher", confidence=0.95, resamples=9999, seed=6)
    print(f"python {sys.version.split()[0]}; fio job: {args.rw}, {args.numjobs} clients, bs {params.bs}, "
          f"iodepth {params.iodepth}, direct=1, {args.runtime:g} s; {args.rounds} rounds, interleaved")  # fmt: skip
    print(f"raw fio:   {raw_a.mean():8.1f} MiB/s (sd {raw_a.std(ddof=1):.1f}) {np.round(raw_a, 1).tolist()}")
    print(f"nearmetal: {nm_a.mean():8.1f} MiB/s (sd {nm_a.std(ddof=1):.1f}) {np.round(nm_a, 1).tolist()}")
    low = "?" if est.low is None else f"{-est.high * 100:+.1f}"
    high = "?" if est.high is None else f"{-est.low * 100:+.1f}"
    if est.low is not None and est.high is not None and est.low >= -0.03 and est.high <= 0.03:
        verdict = "within the 3% goal (the whole interval)"
    elif abs(est.loss) <= 0.03:
        verdict = "mean within 3%, but the interval is wider than ±3%: more rounds or a quieter host"
    else:
        verdict = "NOT within the 3% goal"
    print(f"nearmetal vs raw: {-est.loss * 100:+.2f}% [95% CI {low}, {high}] — {verdict}")


if __name__ == "__main__":
    main()
