"""The figures every run gets, chosen by the run's shape: values and losses as bars with interval whiskers,
metric vs a numeric matrix parameter as lines, every repeat as box + points, a latency-percentile curve when
the workload reports ``<what>_p<NN>_us`` metrics, context metrics (CPU use, throttling) and the trial order."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from nearmetal.report.figures.base import (
    FigureSpec,
    RefLine,
    Series,
    figure,
    mean_interval,
    variant_colors,
)

if TYPE_CHECKING:
    from nearmetal.analysis import CellInfo
    from nearmetal.api import Results

# fio's clat_p99_9_us is the 99.9th percentile
PERCENTILE_METRIC = re.compile(r"^(?P<what>.+)_p(?P<whole>\d{1,2})(?:_(?P<frac>\d+))?_us$")


def by_workload(results: Results) -> dict[str, list[CellInfo]]:
    groups: dict[str, list[CellInfo]] = {}
    for cell in results.cells:
        groups.setdefault(cell.workload, []).append(cell)
    return groups


def variants_of(cells: list[CellInfo]) -> list[str]:
    """Variants in plan order, the baseline first."""
    ordered = sorted(cells, key=lambda c: not c.is_baseline)
    return list(dict.fromkeys(c.variant for c in ordered))


def points_of(cells: list[CellInfo]) -> list[str]:
    return list(dict.fromkeys(c.point_label for c in cells))


def primary_metric(cells: list[CellInfo]) -> str:
    return cells[0].primary_metric


def unit_of(results: Results, cells: list[CellInfo], metric: str) -> str:
    for c in cells:
        cm = results.analysis.metric(c.cell_id, metric)
        if cm is not None:
            return cm.unit
    return ""


def axis_label(metric: str, unit: str) -> str:
    return f"{metric} ({unit})" if unit else metric


def conf_label(results: Results) -> str:
    return f"{results.confidence:.0%}"


def interval_words(estimates: list[Any]) -> str:
    """The interval the whiskers actually draw, in words: paired (the delta method on the log ratio of means
    over blocks; a sign test on per-block log ratios for medians), a floor's block bootstrap, or unpaired
    (the bootstrap, BCa or percentile, on the ratio of means or medians)."""
    words = []
    for est in estimates:
        method = str(est.method)
        if method.startswith("floor"):
            text = "block bootstrap interval on the ratio of floors (10th percentiles, not the means)"
        elif est.design == "paired":
            if method.startswith("delta"):
                text = (
                    "paired interval on the ratio of means (delta method on its log over blocks, Student's t)"
                )
            else:
                test = {"sign-test": "sign test", "signed-rank": "Wilcoxon signed-rank"}.get(
                    method.split("+")[0], "Student's t"
                )
                text = f"paired interval on per-block log ratios ({test})"
        elif method.startswith(("bca", "percentile")):
            kind = "BCa" if method.startswith("bca") else "percentile"
            text = f"{kind} bootstrap interval on the ratio of {est.statistic}s"
        elif method.startswith("exact"):
            text = "exact interval (no spread)"
        else:
            continue
        if "stage-1" in method:
            text += ", hulled with Stein's two-stage interval"
        if text not in words:
            words.append(text)
    return "; ".join(words) or "no interval"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cell_at(cells: list[CellInfo], variant: str, point: str) -> CellInfo | None:
    return next((c for c in cells if c.variant == variant and c.point_label == point), None)


@figure("values")
def value_bars(results: Results) -> list[FigureSpec]:
    """The primary metric's mean per variant with its interval (per matrix point when there is a matrix)."""
    colors = variant_colors(results)
    specs = []
    for workload, cells in by_workload(results).items():
        metric = primary_metric(cells)
        points = points_of(cells)
        series = []
        for variant in variants_of(cells):
            x, y, low, high = [], [], [], []
            for point in points:
                cell = cell_at(cells, variant, point)
                cm = results.analysis.metric(cell.cell_id, metric) if cell else None
                if cm is None or cm.summary.n == 0:
                    continue
                lo, hi = mean_interval(cm.values, results.confidence)
                x.append(point if len(points) > 1 else variant)
                y.append(cm.summary.mean)
                low.append(lo)
                high.append(hi)
            if x:
                series.append(Series(variant, "bar", x, y, low, high, color=colors[variant]))
        if not series:
            continue
        unit = unit_of(results, cells, metric)
        specs.append(
            FigureSpec(
                key=f"values-{workload}",
                title=f"{workload}: {metric} per variant",
                x_label="matrix point" if len(points) > 1 else "variant",
                y_label=axis_label(metric, unit),
                series=series,
                section=workload,
                caption=f"mean of the measured repeats; whiskers: {conf_label(results)} t-interval of the mean",
                grouped=len(points) > 1,
            )
        )
    return specs


@figure("loss")
def loss_bars(results: Results) -> list[FigureSpec]:
    """Each variant's loss % against the baseline, with its interval (paired or bootstrap, as computed) as
    whiskers; a contended cell's bar grey and hatched, the reason in its hover text and the caption."""
    colors = variant_colors(results)
    specs = []
    for workload, cells in by_workload(results).items():
        metric = primary_metric(cells)
        points = points_of(cells)
        series = []
        direction = ""
        estimates = []
        contended_any = False
        for variant in variants_of(cells):
            x, y, low, high, text, hatched = [], [], [], [], [], []
            for point in points:
                cell = cell_at(cells, variant, point)
                comp = results.analysis.comparison(cell.cell_id, metric) if cell else None
                if comp is None or cell is None or not math.isfinite(comp.loss.loss):
                    continue
                direction = comp.direction
                est = comp.loss
                estimates.append(est)
                x.append(point if len(points) > 1 else variant)
                y.append(est.loss * 100)
                low.append(None if est.low is None else est.low * 100)
                high.append(None if est.high is None else est.high * 100)
                noise = results.contention.get(cell.cell_id)
                contended = results.contention_verdict(cell) is not None or bool(noise and noise.is_contended)
                hatched.append(contended)
                contended_any |= contended
                text.append(
                    f"{variant}: {est.loss * 100:+.1f}%"
                    + (
                        f" [{est.low * 100:+.1f}, {est.high * 100:+.1f}]"
                        if est.low is not None and est.high is not None
                        else ""
                    )
                    + (
                        f" — contended: outside processes used {noise.mean_outside_pct:.0f}% of one CPU;"
                        " its loss may be noise, not the layer"
                        if contended and noise is not None
                        else " — contended"
                        if contended
                        else ""
                    )
                )
            if x:
                series.append(
                    Series(
                        variant,
                        "bar",
                        x,
                        y,
                        low,
                        high,
                        text,
                        color=colors[variant],
                        hatched=hatched if any(hatched) else None,
                    )
                )
        if not series:
            continue
        specs.append(
            FigureSpec(
                key=f"loss-{workload}",
                title=f"{workload}: loss vs {results.baseline_variant} ({metric})",
                x_label="matrix point" if len(points) > 1 else "variant",
                y_label="loss %",
                series=series,
                section=workload,
                caption=(
                    f"positive = the variant costs ({direction} {metric} is better); whiskers: "
                    f"{conf_label(results)} {interval_words(estimates)}"
                    + (
                        "; grey hatched bars: contended cells (outside processes ran beside them: the loss"
                        " may be noise, not the layer)"
                        if contended_any
                        else ""
                    )
                ),
                grouped=len(points) > 1,
                hlines=[RefLine(0.0)],
            )
        )
    return specs


@figure("parameter-lines")
def parameter_lines(results: Results) -> list[FigureSpec]:
    """Metric vs each numeric matrix parameter, one line per variant (bandwidth vs clients, time vs size)."""
    colors = variant_colors(results)
    specs = []
    for workload, cells in by_workload(results).items():
        metric = primary_metric(cells)
        params = sorted({k for c in cells for k in c.point})
        for param in params:
            values = {c.point.get(param) for c in cells}
            if len(values) < 2 or not all(is_number(v) for v in values):
                continue
            others = [p for p in params if p != param]
            series = []
            rests = list(dict.fromkeys(",".join(f"{k}={c.point.get(k)}" for k in others) for c in cells))
            for variant in variants_of(cells):
                for rest in rests:
                    chosen = [
                        c
                        for c in cells
                        if c.variant == variant and ",".join(f"{k}={c.point.get(k)}" for k in others) == rest
                    ]
                    chosen.sort(key=lambda c: c.point[param])
                    x, y, low, high = [], [], [], []
                    for c in chosen:
                        cm = results.analysis.metric(c.cell_id, metric)
                        if cm is None or cm.summary.n == 0:
                            continue
                        lo, hi = mean_interval(cm.values, results.confidence)
                        x.append(c.point[param])
                        y.append(cm.summary.mean)
                        low.append(lo)
                        high.append(hi)
                    if x:
                        name = variant + (f" ({rest})" if len(rests) > 1 else "")
                        series.append(Series(name, "line", x, y, low, high, color=colors[variant]))
            if not series:
                continue
            numeric = sorted(float(v) for v in values if v is not None)
            log_x = numeric[0] > 0 and numeric[-1] / numeric[0] >= 10
            # tick at the measured values only (2 clients, not 1.2, 1.4, …)
            ticks = [(v, f"{v:g}") for v in numeric] if len(numeric) <= 12 else None
            specs.append(
                FigureSpec(
                    key=f"lines-{workload}-{param}",
                    title=f"{workload}: {metric} vs {param}",
                    x_label=param,
                    y_label=axis_label(metric, unit_of(results, cells, metric)),
                    series=series,
                    section=workload,
                    caption=f"mean per matrix point; whiskers: {conf_label(results)} t-interval of the mean",
                    x_type="log" if log_x else "linear",
                    x_ticks=ticks,
                )
            )
    return specs


@figure("repeats")
def repeat_boxes(results: Results) -> list[FigureSpec]:
    """Every measured repeat: a box per variant with each value drawn beside it (spread, outliers).
    Matrix points share a figure unless their values differ by 10x or more (then one figure each, so the
    small ones are not squashed flat)."""
    colors = variant_colors(results)
    specs = []
    for workload, cells in by_workload(results).items():
        metric = primary_metric(cells)
        points = points_of(cells)
        means = [
            cm.summary.mean
            for c in cells
            if (cm := results.analysis.metric(c.cell_id, metric)) is not None and cm.summary.n
        ]
        positive = [m for m in means if m > 0]
        split = len(points) > 1 and len(positive) == len(means) > 0 and max(positive) / min(positive) >= 10
        groups = [[p] for p in points] if split else [points]
        for group in groups:
            series = []
            for variant in variants_of(cells):
                x: list[Any] = []
                y: list[float] = []
                for point in group:
                    cell = cell_at(cells, variant, point)
                    cm = results.analysis.metric(cell.cell_id, metric) if cell else None
                    if cm is None:
                        continue
                    vals = [float(v) for v in cm.values if math.isfinite(v)]
                    x += [point if len(group) > 1 else variant] * len(vals)
                    y += vals
                if y:
                    series.append(Series(variant, "box", x, y, color=colors[variant]))
            if not series:
                continue
            label = f" ({group[0]})" if split else ""
            specs.append(
                FigureSpec(
                    key=f"repeats-{workload}" + (f"-{group[0]}" if split else ""),
                    title=f"{workload}{label}: {metric}, every repeat",
                    x_label="matrix point" if len(group) > 1 else "variant",
                    y_label=axis_label(metric, unit_of(results, cells, metric)),
                    series=series,
                    section=workload,
                    caption="box: quartiles and median (dashed: mean); every measured repeat drawn as a point",
                    grouped=len(group) > 1,
                )
            )
    return specs


def percentile_of(metric: str) -> tuple[str, float] | None:
    """``clat_p99_9_us`` → ("clat", 99.9); None for other metrics."""
    match = PERCENTILE_METRIC.match(metric)
    if not match:
        return None
    value = float(match["whole"] + ("." + match["frac"] if match["frac"] else ""))
    if not 0 < value < 100:
        return None
    return match["what"], value


def nines(percentile: float) -> float:
    """Position on a percentile axis where p90, p99, p99.9 are equally spaced: 1 / (1 - p)."""
    return 1.0 / (1.0 - percentile / 100.0)


@figure("latency-percentiles")
def latency_percentiles(results: Results) -> list[FigureSpec]:
    """A latency-percentile curve per variant from metrics named ``<what>_p<NN>_us`` (``p99_9`` = 99.9)."""
    colors = variant_colors(results)
    specs = []
    for workload, cells in by_workload(results).items():
        names = {name for c in cells for name in results.analysis.metric_names(c.cell_id)}
        groups: dict[str, dict[float, str]] = {}
        for name in names:
            parsed = percentile_of(name)
            if parsed:
                groups.setdefault(parsed[0], {})[parsed[1]] = name
        points = points_of(cells)
        for what, by_pct in sorted(groups.items()):
            if len(by_pct) < 2:
                continue
            pcts = sorted(by_pct)
            for point in points:
                series = []
                for variant in variants_of(cells):
                    cell = cell_at(cells, variant, point)
                    if cell is None:
                        continue
                    x, y, low, high, text = [], [], [], [], []
                    for p in pcts:
                        cm = results.analysis.metric(cell.cell_id, by_pct[p])
                        if cm is None or cm.summary.n == 0:
                            continue
                        lo, hi = mean_interval(cm.values, results.confidence)
                        x.append(nines(p))
                        y.append(cm.summary.mean)
                        low.append(lo)
                        high.append(hi)
                        text.append(f"p{p:g}: {cm.summary.mean:.4g} µs")
                    if x:
                        series.append(Series(variant, "line", x, y, low, high, text, color=colors[variant]))
                if not series:
                    continue
                ys = [v for s in series for v in s.y if v > 0]
                log_y = bool(ys) and max(ys) / min(ys) >= 10
                label = f" ({point})" if point else ""
                specs.append(
                    FigureSpec(
                        key=f"percentiles-{workload}-{what}" + (f"-{point}" if point else ""),
                        title=f"{workload}{label}: {what} latency percentiles",
                        x_label="percentile",
                        y_label=f"{what} latency (µs)",
                        series=series,
                        section=workload,
                        caption=(
                            "mean over the repeats of each reported percentile; whiskers: "
                            f"{conf_label(results)} t-interval; the axis spaces p90, p99, p99.9 evenly"
                        ),
                        x_type="log",
                        y_type="log" if log_y else "linear",
                        x_ticks=[(nines(p), f"p{p:g}") for p in pcts],
                    )
                )
    return specs


@figure("context")
def context_bars(results: Results) -> list[FigureSpec]:
    """CPU use and throttling per variant: the evidence beside the loss (the seed's '60 something %')."""
    from nearmetal.report.tables import CONTEXT_COLUMNS

    specs = []
    for workload, cells in by_workload(results).items():
        points = points_of(cells)
        present = [
            (m, h)
            for m, h in CONTEXT_COLUMNS
            if m != primary_metric(cells) and any(results.analysis.metric(c.cell_id, m) for c in cells)
        ]
        if any(m == "lammps_cpu_use_pct" for m, _ in present):
            present = [(m, h) for m, h in present if m != "cpu_util_pct"]
        series = []
        for index, (metric, header) in enumerate(present):
            x, y, low, high = [], [], [], []
            for variant in variants_of(cells):
                for point in points:
                    cell = cell_at(cells, variant, point)
                    cm = results.analysis.metric(cell.cell_id, metric) if cell else None
                    if cm is None or cm.summary.n == 0:
                        continue
                    lo, hi = mean_interval(cm.values, results.confidence)
                    x.append(variant + (f" · {point}" if len(points) > 1 else ""))
                    y.append(cm.summary.mean)
                    low.append(lo)
                    high.append(hi)
            if x:
                color = ["#4c72b0", "#c44e52", "#55a868"][index % 3]
                series.append(Series(header, "bar", x, y, low, high, color=color))
        if not series:
            continue
        specs.append(
            FigureSpec(
                key=f"context-{workload}",
                title=f"{workload}: " + " and ".join(s.name for s in series),
                x_label="variant",
                y_label="%",
                series=series,
                section=workload,
                caption=f"means; whiskers: {conf_label(results)} t-interval of the mean",
                grouped=len(series) > 1,
            )
        )
    return specs


@figure("trial-order")
def trial_order(results: Results) -> list[FigureSpec]:
    """The primary metric of every trial in the order it ran: drift over the run shows up here, and
    interleaving is why it hits every variant alike."""
    colors = variant_colors(results)
    table = results.metric_table
    if table["value"].size == 0:
        return []
    seq = {t.id: t.seq for t in results.trials}
    keep = (~table["is_warmup"]) & (table["status"] == "ok")
    specs = []
    for workload, cells in by_workload(results).items():
        metric = primary_metric(cells)
        points = points_of(cells)
        series = []
        for variant in variants_of(cells):
            for point in points:
                cell = cell_at(cells, variant, point)
                if cell is None:
                    continue
                rows = np.flatnonzero(keep & (table["cell_id"] == cell.cell_id) & (table["name"] == metric))
                if rows.size == 0:
                    continue
                name = variant + (f" ({point})" if len(points) > 1 else "")
                x = [seq.get(int(table["trial_id"][i]), int(i)) for i in rows]
                y = [float(table["value"][i]) for i in rows]
                series.append(Series(name, "scatter", x, y, color=colors[variant]))
        if not series or sum(len(s.y) for s in series) < 3:
            continue
        specs.append(
            FigureSpec(
                key=f"order-{workload}",
                title=f"{workload}: {metric} in the order trials ran",
                x_label="trial number in the run",
                y_label=axis_label(metric, unit_of(results, cells, metric)),
                series=series,
                section=workload,
                caption="a trend here is drift of the machine, not of a variant (interleaved order spreads it)",
                x_type="linear",
            )
        )
    return specs


__all__ = [
    "context_bars",
    "latency_percentiles",
    "loss_bars",
    "nines",
    "parameter_lines",
    "percentile_of",
    "repeat_boxes",
    "trial_order",
    "value_bars",
]
