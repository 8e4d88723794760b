"""How much narrower are paired intervals than the unpaired ones on the same trials of a real run?

    python benchmarks/paired_vs_unpaired.py [RUN_ID] [--db URL]

For every variant of a stored run (each workload's primary metric), the interval the report shows (paired by
block, ``analysis.analyse``) next to the one nearmetal reported before issue 16 on the same trials (every trial
of each side resampled independently: BCa on the ratio of means, widened for small samples), and the median
ratio of half-widths over the run's cells.
"""

from __future__ import annotations

import argparse

import numpy as np

import nearmetal
from nearmetal.analysis import Sample, loss_intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id", nargs="?", help="a stored run (default: the latest)")
    parser.add_argument("--db", help="store URL (default: NEARMETAL_DB or ./nearmetal.db)")
    args = parser.parse_args()
    results = nearmetal.load_results(args.run_id, db=args.db)
    analysis = results.analysis
    cfg = results.config
    print(f"run {results.run_id} ({results.run.name})")
    print("| cell | n | paired loss % [CI] | half-width | unpaired loss % [CI] | half-width | ratio |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for comp in analysis.comparisons:
        vm = analysis.metric(comp.cell.cell_id, comp.metric)
        bm = analysis.metric(comp.baseline.cell_id, comp.metric)
        if vm is None or bm is None or comp.loss.half_width is None:
            continue
        old = loss_intervals(
            [Sample.of(vm.values)], [Sample.of(bm.values)], [comp.direction], cfg.confidence, cfg.resamples,
            cfg.seed,
        )[0]  # fmt: skip
        if old.half_width is None:
            continue
        new = comp.loss
        ratio = new.half_width / old.half_width
        ratios.append(ratio)
        print(
            f"| {comp.cell.key} | {vm.summary.n} | {new.loss:+.1%} [{new.low:+.1%}, {new.high:+.1%}] ({new.method})"
            f" | ±{new.half_width:.1%} | {old.loss:+.1%} [{old.low:+.1%}, {old.high:+.1%}] | ±{old.half_width:.1%}"
            f" | {ratio:.2f} |"
        )
    if ratios:
        print(f"median half-width ratio paired/unpaired: {np.median(ratios):.2f} over {len(ratios)} cells")


if __name__ == "__main__":
    main()
