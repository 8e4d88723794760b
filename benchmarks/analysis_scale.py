"""Analysis and report of a big stored run: 1,000,000 samples across 1,000 cells.

    python benchmarks/analysis_scale.py [--shape wide|deep|both] [--cells 1000] [--keep DB]

Shapes (each 1,000,000 stored values):
  wide: 1000 cells (200 matrix points × 5 variants) × 100 trials × 10 metrics per trial
  deep: 1000 cells × 20 trials × 50 values per trial of a multi-valued metric (``metric_values``), plus
        the trial-level metric rows (the two-level bootstrap resamples trials, then values within trials)

Measured: ``load_results`` + analysis (SQL into numpy, summaries of every cell and metric, BCa intervals on
each workload's primary metric with 9999 resamples) + the terminal and Markdown reports, each in a fresh
subprocess so its peak memory (ru_maxrss) is its own. Also: intervals for every metric (``--all-metrics``
shows what asking for them costs). Goal (issue 5): ≤ 5 s and ≤ 2 GB on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ["bare", "v1", "v2", "v3", "v4"]


def build(db_path: Path, shape: str, n_cells: int, seed: int = 1) -> str:
    """Write a synthetic run straight into a store created by nearmetal (schema at head)."""
    from nearmetal.store import Store

    store = Store(f"sqlite:///{db_path}")
    run_id = f"scale-{shape}"
    plan_text = f"name: scale-{shape}\nworkloads: {{w: {{kind: command, params: {{argv: [true]}}}}}}\n"
    store.create_run(
        id=run_id,
        name=f"scale-{shape}",
        description="",
        plan_text=plan_text,
        plan_source="benchmarks/analysis_scale.py",
        plan_hash="0",
        status="finished",
        started_at=time.time(),
        host="bench",
        backend="local",
        seed=seed,
        nearmetal_version="bench",
        workdir="",
        info={},
    )
    store.dispose()
    rng = np.random.default_rng(seed)
    points = n_cells // len(VARIANTS)
    if shape == "wide":
        trials_per_cell, metric_names, values_per_trial = 100, [f"m{i}_s" for i in range(9)], 1
    else:
        trials_per_cell, metric_names, values_per_trial = 20, [], 50
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous=OFF")
    trial_rows, metric_rows, value_rows = [], [], []
    trial_id = 0
    for p in range(points):
        for vi, variant in enumerate(VARIANTS):
            cell_id = f"c{p:04d}{vi}"
            true_mean = 10.0 * (1 + 0.05 * vi)
            for t in range(trials_per_cell):
                trial_id += 1
                trial_rows.append(
                    (trial_id, run_id, f"{cell_id}-r{t}", cell_id, f"w/{variant}/p={p}",
                     json.dumps(["w", {"p": p}]), "w", "command", variant, vi == 0, "{}",
                     json.dumps({"p": p}), "[]", t, False, t, trial_id, "ok", 0.0, 1.0, 0, "", "{}", "[]")
                )  # fmt: skip
                trial_mean = true_mean * (1 + rng.normal(0, 0.02))
                if values_per_trial > 1:
                    vals = trial_mean * (1 + rng.normal(0, 0.01, values_per_trial))
                    value_rows += [(trial_id, "epoch_s", i, float(x)) for i, x in enumerate(vals)]
                    metric_rows.append(
                        (trial_id, "epoch_s", float(vals.mean()), "s", "lower", "workload", 50)
                    )
                metric_rows.append((trial_id, "wall_s", trial_mean, "s", "lower", "telemetry", 1))
                for name in metric_names:
                    metric_rows.append((trial_id, name, float(rng.gamma(4, 1)), "s", "lower", "workload", 1))
    conn.executemany(
        "INSERT INTO trials (id, run_id, trial_key, cell_id, cell_key, comparison_key, workload, kind,"
        " variant, is_baseline, params, point, layers, repeat_index, is_warmup, block, seq, status,"
        " started_at, ended_at, exit_code, output_dir, placement, caveats)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        trial_rows,
    )
    conn.executemany(
        "INSERT INTO metrics (trial_id, name, value, unit, direction, source, n_values) VALUES (?,?,?,?,?,?,?)",
        metric_rows,
    )
    if value_rows:
        conn.executemany(
            "INSERT INTO metric_values (trial_id, name, seq, value) VALUES (?,?,?,?)", value_rows
        )
    conn.commit()
    conn.close()
    return run_id


CHILD = r"""
import io, json, resource, sys, time
t0 = time.perf_counter()
from rich.console import Console
import nearmetal
from nearmetal.report import markdown_report, print_report
t_import = time.perf_counter() - t0
db, run_id, all_metrics, primary = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
t0 = time.perf_counter()
c0 = time.process_time()
res = nearmetal.load_results(run_id, db=db)
if primary:
    res.primary_override = primary
if all_metrics:
    res.interval_metrics = "all"
analysis = res.analysis
t_analysis = time.perf_counter() - t0
c_analysis = time.process_time() - c0
t1 = time.perf_counter()
c1 = time.process_time()
print_report(res, Console(file=io.StringIO(), width=160))
md = markdown_report(res)
t_report = time.perf_counter() - t1
c_report = time.process_time() - c1
print(json.dumps({
    "import_s": t_import, "analysis_s": t_analysis, "report_s": t_report,
    "total_s": t_analysis + t_report,
    "cpu_analysis_s": c_analysis, "cpu_report_s": c_report, "cpu_total_s": c_analysis + c_report,
    "cells": len(res.cells), "comparisons": len(analysis.comparisons),
    "max_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "markdown_lines": md.count("\n"),
}))
"""


def measure(db_path: Path, run_id: str, all_metrics: bool, primary: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, f"sqlite:///{db_path}", run_id, "1" if all_metrics else "0", primary],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["wide", "deep", "both"], default="both")
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per configuration")
    parser.add_argument("--keep", type=Path, help="directory to keep the stores in (reused when present)")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="nearmetal-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    shapes = ["wide", "deep"] if args.shape == "both" else [args.shape]
    for shape in shapes:
        db_path = directory / f"scale-{shape}-{args.cells}.db"
        if not db_path.exists():
            t0 = time.perf_counter()
            build(db_path, shape, args.cells)
            print(f"[{shape}] built {db_path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        run_id = f"scale-{shape}"
        primary = "wall_s" if shape == "wide" else "epoch_s"
        configs = [("primary metric", False)] + ([("every metric", True)] if shape == "wide" else [])
        for label, all_metrics in configs:
            runs = [measure(db_path, run_id, all_metrics, primary) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["total_s"])
            totals = ", ".join(f"{r['total_s']:.2f}" for r in runs)
            print(
                f"{shape:5s} {label:15s}: total {best['total_s']:.2f} s (analysis {best['analysis_s']:.2f} s,"
                f" report {best['report_s']:.2f} s; runs: {totals}); CPU time {best['cpu_total_s']:.2f} s"
                f" (analysis {best['cpu_analysis_s']:.2f} s, report {best['cpu_report_s']:.2f} s);"
                f" peak RSS {best['max_rss_MiB']:.0f} MiB,"
                f" {best['cells']} cells, {best['comparisons']} intervals"
            )
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    resource.getrusage(resource.RUSAGE_CHILDREN)


if __name__ == "__main__":
    main()
