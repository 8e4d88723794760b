"""How long reports and exports take for a large run: a synthetic run of W workloads × P matrix points ×
V variants × R repeats (with latency percentiles) written into a real SQLite store, then the HTML report,
the PNG figures and every export format made from it, each timed (best of ``--rounds``).

    python benchmarks/reports.py [--workloads 3] [--points 4] [--variants 6] [--repeats 20]

Goal (issue 10): the HTML report of a run of this size in a few seconds, so writing it at the end of every
run costs nothing next to the run; exports scale linearly in trials × metrics.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report import export
from nearmetal.report.figures import build_figures
from nearmetal.report.html import write_html_report
from nearmetal.report.png import write_png_figures
from nearmetal.store import Store


def make_run(store: Store, workloads: int, points: int, variants: int, repeats: int) -> str:
    run_id = "bench-reports"
    names = [f"v{i}" for i in range(variants)]
    plan = {
        "name": "bench",
        "workloads": {f"w{i}": {"kind": "command"} for i in range(workloads)},
        "variants": {n: [] for n in names},
        "baseline": "v0",
    }
    text = json.dumps(plan)
    store.create_run(
        id=run_id,
        name="bench",
        plan_text=text,
        plan_source="bench",
        plan_hash="0" * 64,
        started_at=time.time(),
    )
    store.set_environment(run_id, {"cpu.model": "bench"})
    rng = np.random.default_rng(1)
    seq = 0
    for r in range(repeats):
        for w in range(workloads):
            for p in range(points):
                clients = 2**p
                for v, name in enumerate(names):
                    seq += 1
                    base = (1 + 0.1 * v) * clients * rng.normal(1, 0.03)
                    metrics = [Metric("wall_s", base, "s", "lower")] + [
                        Metric(f"lat_p{q}_us", base * 100 * m * rng.normal(1, 0.05), "us", "lower")
                        for q, m in (("50", 1), ("99", 4), ("99_9", 12))
                    ]
                    cell = f"c{w}-{p}-{v}"
                    store.add_trial(
                        metrics,
                        run_id=run_id,
                        trial_key=f"{cell}-r{r}",
                        cell_id=cell,
                        cell_key=f"w{w}/{name}/clients={clients}",
                        comparison_key=json.dumps([f"w{w}", {"clients": clients}]),
                        workload=f"w{w}",
                        kind="command",
                        variant=name,
                        is_baseline=v == 0,
                        params={"clients": clients},
                        point={"clients": clients},
                        layers=[],
                        repeat_index=r,
                        is_warmup=False,
                        block=r,
                        seq=seq,
                        status="ok",
                        started_at=float(seq),
                        ended_at=float(seq) + 0.5,
                    )
    store.finish_run(run_id, "finished")
    return run_id


def best(rounds: int, fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", type=int, default=3)
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--variants", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        store = Store(f"sqlite:///{tmp_path / 'bench.db'}")
        run_id = make_run(store, args.workloads, args.points, args.variants, args.repeats)
        trials = args.workloads * args.points * args.variants * args.repeats
        print(
            f"run: {trials} trials × 4 metrics ({args.workloads} workloads, {args.points} points, "
            f"{args.variants} variants, {args.repeats} repeats)"
        )

        def fresh():  # type: ignore[no-untyped-def]
            results = nearmetal.load_results(run_id, store=store)
            results.analysis  # noqa: B018 (the analysis is shared by every report; timed on its own)
            return results

        t, results = best(args.rounds, fresh)
        print(f"load + analysis          {t:7.3f} s")
        t, (figures, _) = best(args.rounds, lambda: build_figures(results))
        print(f"figure specs             {t:7.3f} s  ({len(figures)} figures)")
        t, path = best(args.rounds, lambda: write_html_report(results, tmp_path / "r.html"))
        print(f"HTML report              {t:7.3f} s  ({path.stat().st_size / 1e6:.2f} MB)")
        t, (written, _) = best(1, lambda: write_png_figures(results, tmp_path / "png"))
        print(f"PNG figures (1 round)    {t:7.3f} s  ({len(written)} files)")
        t, rows = best(args.rounds, lambda: export.tidy_rows(results))
        print(f"tidy rows                {t:7.3f} s  ({len(rows)} rows)")
        t, _ = best(args.rounds, lambda: export.to_csv(rows))
        print(f"CSV                      {t:7.3f} s")
        t, _ = best(args.rounds, lambda: export.write_parquet(rows, tmp_path / "r.parquet"))
        print(f"Parquet                  {t:7.3f} s")
        t, text = best(args.rounds, lambda: export.to_openmetrics([results]))
        print(f"OpenMetrics              {t:7.3f} s  ({len(text) / 1e6:.2f} MB)")
        store.dispose()


if __name__ == "__main__":
    main()
