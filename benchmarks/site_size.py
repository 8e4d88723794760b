"""Size and time of the history site over many stored runs (issue 30: each page used to inline 4.6 MB of
plotly.js, so 100 runs were ~470 MB; now one shared static/plotly.min.js).

    python benchmarks/site_size.py [--runs 100] [--dir DIR]

Writes RUNS synthetic runs (3 cells × 4 repeats each, made-up numbers in a real SQLite store) and then the
site with every run's report; prints the site's size in MB, the biggest page, and the seconds each step took.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from nearmetal.metrics import Metric
from nearmetal.report.site import write_site
from nearmetal.store import Store

VARIANTS = {"bare-metal": 1.0, "limit-1.2": 1.2, "limit-0.8": 1.6}


def store_run(store: Store, index: int) -> None:
    run_id = f"bench-{index:04d}"
    text = json.dumps({"name": "site-bench", "variants": list(VARIANTS)})
    now = time.time() + index
    store.create_run(
        id=run_id, name="site-bench", description="", plan_text=text, plan_source="bench.yaml",
        plan_hash=hashlib.sha256(text.encode()).hexdigest(), status="running", started_at=now,
        host="bench", seed=index, nearmetal_version="bench", info={},
    )  # fmt: skip
    rng = np.random.default_rng(index)
    seq = 0
    for repeat in range(4):
        for variant, cost in VARIANTS.items():
            seq += 1
            cell_id = hashlib.sha256(variant.encode()).hexdigest()[:10]
            store.add_trial(
                [Metric("wall_s", 10 * cost * (1 + 0.002 * index) * rng.normal(1, 0.01), "s", "lower")],
                run_id=run_id, trial_key=f"{cell_id}-r{repeat}", cell_id=cell_id, cell_key=f"w/{variant}",
                comparison_key='["w",{}]', workload="w", kind="command", variant=variant,
                is_baseline=variant == "bare-metal", params={}, point={}, layers=[], repeat_index=repeat,
                is_warmup=False, block=repeat, seq=seq, status="ok", started_at=now + seq,
                ended_at=now + seq + 0.5, output_dir="", placement={}, caveats=[],
            )  # fmt: skip
    store.finish_run(run_id, "finished")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="nearmetal-site-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{base / 'runs.db'}")
    t0 = time.perf_counter()
    for index in range(args.runs):
        store_run(store, index)
    stored_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = write_site(base / "site", db=str(store.url))
    site_s = time.perf_counter() - t0
    files = [f for f in (base / "site").rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    biggest = max(files, key=lambda f: f.stat().st_size)
    pages = [f for f in files if f.suffix == ".html"]
    print(f"runs: {summary.runs}, reports: {summary.reports}, pages: {len(pages)}")
    print(f"site size: {size / 1e6:.1f} MB ({size / 1e6 / max(1, summary.runs):.3f} MB per run)")
    print(f"biggest file: {biggest.relative_to(base / 'site')} {biggest.stat().st_size / 1e6:.2f} MB")
    print(f"largest page: {max(p.stat().st_size for p in pages) / 1e6:.3f} MB")
    print(f"store {args.runs} runs: {stored_s:.1f} s; write the site: {site_s:.1f} s")
    print(f"in {base}")


if __name__ == "__main__":
    main()
