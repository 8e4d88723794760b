"""Figures of the GPU-sharing studies, drawn from ``report.sharing_shapes.sharing_data``: time slicing (per process
and aggregate per sharing level), partitions (value per partition next to linear scaling), distributed
scaling (time per epoch vs workers next to the ideal) and topology (epoch times per placement, every epoch
drawn)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from nearmetal.report.figures.base import FigureSpec, Series, figure, mean_interval

if TYPE_CHECKING:
    from nearmetal.api import Results
    from nearmetal.report.sharing_shapes import SharingData


def _data(results: Results) -> SharingData:
    from nearmetal.report.sharing_shapes import sharing_data

    return sharing_data(results)


def _finite(values: np.ndarray) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


@figure("sharing-time-slicing")
def time_slicing_bars(results: Results) -> list[FigureSpec]:
    specs = []
    for g in _data(results).time_slicing:
        labels = [r.level.label for r in g.rows]
        per, low, high = [], [], []
        for r in g.rows:
            lo, hi = mean_interval(r.level.values, results.confidence)
            per.append(r.per_process.mean)
            low.append(lo)
            high.append(hi)
        aggregate = [r.aggregate for r in g.rows]
        name = "aggregate (× k)" if g.direction == "higher" else "per job (÷ k)"
        point = f" ({g.point})" if g.point else ""
        specs.append(
            FigureSpec(
                key=f"sharing-slicing-{g.workload}{'-' + g.point if g.point else ''}",
                title=f"{g.workload}{point}: time slicing, {g.metric}",
                x_label="sharing",
                y_label=f"{g.metric} ({g.unit})" if g.unit else g.metric,
                series=[
                    Series("per process", "bar", labels, per, low, high, color="#0072B2"),
                    Series(name, "bar", labels, aggregate, color="#E69F00"),
                ],
                section=g.workload,
                caption="seed 001 part 4: what one of k processes gets, and what the k together get; whiskers: "
                f"{results.confidence:.0%} t-interval of the per-process mean",
                grouped=True,
            )
        )
    return specs


@figure("sharing-partitions")
def partition_bars(results: Results) -> list[FigureSpec]:
    specs = []
    for g in _data(results).partitions:
        parts = sorted(g.partitions, key=lambda p: -p.resources)
        if not parts:
            continue
        labels, means, low, high = [], [], [], []
        for p in parts:
            lo, hi = mean_interval(p.values, results.confidence)
            values = _finite(p.values)
            labels.append(p.label)
            means.append(float(np.mean(values)) if values else float("nan"))
            low.append(lo)
            high.append(hi)
        # linear scaling from the biggest partition: value × resources ratio (time: ÷)
        top, top_mean = parts[0], means[0]
        ideal = [
            top_mean
            * (p.resources / top.resources if g.direction == "higher" else top.resources / p.resources)
            for p in parts
        ]
        point = f" ({g.point})" if g.point else ""
        specs.append(
            FigureSpec(
                key=f"sharing-partitions-{g.workload}{'-' + g.point if g.point else ''}",
                title=f"{g.workload}{point}: {g.metric} per partition",
                x_label=f"partition ({g.resource})",
                y_label=f"{g.metric} ({g.unit})" if g.unit else g.metric,
                series=[
                    Series("measured", "bar", labels, means, low, high, color="#0072B2"),
                    Series("linear in resources", "line", labels, ideal, color="#7f7f7f", dashed=True),
                ],
                section=g.workload,
                caption=f"seed 001 part 5; dashed: the biggest partition's value scaled by {g.resource}",
            )
        )
    return specs


@figure("sharing-scaling")
def scaling_lines(results: Results) -> list[FigureSpec]:
    specs = []
    for index, g in enumerate(_data(results).scaling):
        points = [p for p in sorted(g.points, key=lambda p: p.workers) if _finite(p.values)]
        if len(points) < 2:
            continue
        x, y, low, high = [], [], [], []
        for p in points:
            lo, hi = mean_interval(p.values, results.confidence)
            x.append(p.workers)
            y.append(float(np.mean(_finite(p.values))))
            low.append(lo)
            high.append(hi)
        ideal = [y[0] * x[0] / n for n in x]
        specs.append(
            FigureSpec(
                key=f"sharing-scaling-{g.workload}" + (f"-{index + 1}" if index else ""),
                title=f"{g.workload}: time per epoch vs workers",
                x_label="workers",
                y_label="time per epoch (s)",
                series=[
                    Series("measured", "line", x, y, low, high, color="#0072B2"),
                    Series("ideal (T ∝ 1/n)", "line", x, ideal, color="#7f7f7f", dashed=True),
                ],
                section=g.workload,
                caption="seed 001 part 6: doubling the workers ideally halves the time per epoch",
                x_type="log" if x[-1] / x[0] >= 4 else "linear",
                x_ticks=[(float(n), str(n)) for n in x],
            )
        )
    return specs


@figure("sharing-topology")
def topology_boxes(results: Results) -> list[FigureSpec]:
    specs = []
    for g in _data(results).topology:
        order = [r.topology for r in g.rows]
        x: list[str] = []
        y: list[float] = []
        for topo in order:
            for job in g.jobs:
                if job.topology == topo:
                    values = _finite(job.values)
                    x += [topo] * len(values)
                    y += values
        specs.append(
            FigureSpec(
                key=f"sharing-topology-{g.workload}-{g.workers}",
                title=f"{g.workload}, {g.workers} workers: epoch time per topology",
                x_label=f"topology (ranks per {g.level}, sorted)",
                y_label="time per epoch (s)",
                series=[Series("epochs", "box", x, y, color="#009E73")],
                section=g.workload,
                caption="seed 001 part 6: every epoch of every job; topologies ordered by mean",
            )
        )
    return specs
