"""What building each network path costs, outside the measured process: setup + teardown time of the network
layers (netns, slirp4netns, pasta; outbound and two-nodes), measured side by side in one run, alternating the
layers so drift hits all alike. Needs root and the tools.

    sudo python benchmarks/netpath_setup.py [--n 5]

Goal (issue 7): a path is built and removed in well under a second, so a trial's wall time is the workload's;
the figures tell how much a plan's wall time grows per trial under each layer.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nearmetal.layers import layer_class, make_layer
from nearmetal.layers.base import TrialContext

CONFIGS = [
    ("netns", {"layer": "netns"}),
    ("slirp4netns outbound", {"layer": "slirp4netns", "topology": "outbound"}),
    ("slirp4netns two-nodes", {"layer": "slirp4netns", "topology": "two-nodes"}),
    ("pasta outbound", {"layer": "pasta", "topology": "outbound"}),
    ("pasta two-nodes", {"layer": "pasta", "topology": "two-nodes"}),
]


def one(label: str, config: dict, index: int, workdir: Path) -> tuple[float, float]:
    cfg = layer_class(config["layer"]).Config.model_validate(config)
    ctx = TrialContext(run_id=f"bench{index}", trial_key=label.replace(" ", "-"), trial_dir=workdir)
    layer = make_layer(cfg).bind(ctx)
    t0 = time.perf_counter()
    layer.setup(ctx)
    t1 = time.perf_counter()
    layer.teardown(ctx)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            for label, config in CONFIGS:
                times[label].append(one(label, config, i, Path(tmp)))
    print(f"{'layer':24s} {'setup ms (median)':>18s} {'teardown ms (median)':>21s}")
    for label, values in times.items():
        setup = statistics.median(v[0] for v in values) * 1000
        teardown = statistics.median(v[1] for v in values) * 1000
        print(f"{label:24s} {setup:18.1f} {teardown:21.1f}")


if __name__ == "__main__":
    main()
