"""The report's figures as PNG files (matplotlib), for papers, slides and Markdown posts.

Draws the same ``FigureSpec``s as the HTML report, so a figure added to the registry appears in both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nearmetal.api import Results
from nearmetal.report.figures import FigureProblem, FigureSpec, Series, build_figures

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 150


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def _categories(spec: FigureSpec) -> list[Any]:
    seen: dict[Any, None] = {}
    for series in spec.series:
        for x in series.x:
            seen.setdefault(x, None)
    return list(seen)


def _yerr(series: Series) -> Any:
    if series.low is None or series.high is None:
        return None
    below = [0.0 if lo is None else max(0.0, y - lo) for y, lo in zip(series.y, series.low, strict=True)]
    above = [0.0 if hi is None else max(0.0, hi - y) for y, hi in zip(series.y, series.high, strict=True)]
    return [below, above]


def draw(spec: FigureSpec, ax: Any) -> None:
    """Draw one spec on a matplotlib Axes."""
    import numpy as np

    categorical = spec.x_type == "category"
    cats = _categories(spec) if categorical else []
    index = {c: i for i, c in enumerate(cats)}
    n_grouped = sum(1 for s in spec.series if s.kind in ("bar", "box")) if spec.grouped else 1
    width = 0.8 / max(1, n_grouped)
    slot = 0
    rng = np.random.default_rng(0)  # jitter of the points beside each box, the same in every render
    for series in spec.series:
        color = series.color
        offset = 0.0
        if spec.grouped and series.kind in ("bar", "box"):
            offset = (slot - (n_grouped - 1) / 2) * width
            slot += 1
        xs = [index[x] + offset for x in series.x] if categorical else [float(x) for x in series.x]
        if series.kind == "bar":
            bars = ax.bar(
                xs,
                series.y,
                width=width if spec.grouped else 0.6,
                color=color,
                label=series.name,
                yerr=_yerr(series),
                capsize=4,
                error_kw={"elinewidth": 1.2, "ecolor": "#333"},
            )
            for bar, hatched in zip(bars, series.hatched or [], strict=False):
                if hatched:  # a contended cell: grey, hatched
                    bar.set_facecolor("#bdbdbd")
                    bar.set_hatch("//")
        elif series.kind in ("line", "scatter"):
            style = "--" if series.dashed else "-"
            ax.errorbar(
                xs,
                series.y,
                yerr=_yerr(series),
                fmt=("o" if series.kind == "scatter" else "o" + style),
                color=color,
                label=series.name,
                capsize=3,
                markersize=4 if series.kind == "scatter" else 5,
                linewidth=1.6,
            )
        elif series.kind == "box":
            groups: dict[float, list[float]] = {}
            for x, y in zip(xs, series.y, strict=True):
                if y is not None and math.isfinite(y):
                    groups.setdefault(x, []).append(y)
            positions = list(groups)
            box_width = (width if spec.grouped else 0.5) * 0.8
            parts = ax.boxplot(
                [groups[p] for p in positions],
                positions=positions,
                widths=box_width,
                patch_artist=True,
                showmeans=True,
                meanline=True,
                showfliers=False,  # every value is drawn as a point below, outliers included
                manage_ticks=False,
            )
            for patch in parts["boxes"]:
                patch.set_facecolor(color or "#888")
                patch.set_alpha(0.35)
                patch.set_edgecolor(color or "#444")
            for key in ("whiskers", "caps", "medians"):
                for line in parts[key]:
                    line.set_color(color or "#444")
            for line in parts["means"]:
                line.set_color(color or "#444")
                line.set_linestyle("--")
            for p in positions:
                jitter = rng.uniform(-box_width / 3, box_width / 3, len(groups[p]))
                ax.scatter(np.array([p] * len(groups[p])) + jitter, groups[p], s=14, color=color, zorder=3)
            ax.plot([], [], "s", color=color, label=series.name)  # legend entry
        else:
            raise ValueError(f"series {series.name!r}: unknown kind {series.kind!r}")
    for band in spec.bands:
        ax.axvspan(band.x0, band.x1, color="#d62728", alpha=0.15, lw=0, label=band.label or None)
    for line in spec.hlines:
        ax.axhline(line.y, color="#444", lw=1, ls=":")
    if categorical:
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(
            [str(c) for c in cats],
            rotation=20 if len(cats) > 4 else 0,
            ha="right" if len(cats) > 4 else "center",
        )
    else:
        if spec.x_type == "log":
            ax.set_xscale("log")
        if spec.x_ticks:
            ax.set_xticks([t[0] for t in spec.x_ticks])
            ax.set_xticklabels([t[1] for t in spec.x_ticks])
            ax.minorticks_off()
    if spec.y_type == "log":
        ax.set_yscale("log")
    ax.set_title(spec.title, loc="left", fontsize=11)
    ax.set_xlabel(spec.x_label)
    ax.set_ylabel(spec.y_label)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if len(spec.series) > 1 or spec.bands:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def render_png(spec: FigureSpec, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    try:
        draw(spec, ax)
        if spec.caption:
            fig.text(0.01, 0.005, spec.caption, fontsize=7, color="#555", ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.04 if spec.caption else 0, 1, 1))
        path = Path(path)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def write_png_figures(
    results: Results, directory: str | Path, figures: list[FigureSpec] | None = None
) -> tuple[list[tuple[FigureSpec, Path]], list[FigureProblem]]:
    """Every figure of a run as ``DIRECTORY/<figure key>.png``; problems say which could not be drawn."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    problems: list[FigureProblem] = []
    if figures is None:
        figures, problems = build_figures(results)
    written = []
    for spec in figures:
        try:
            written.append((spec, render_png(spec, directory / f"{spec.slug}.png")))
        except Exception as exc:  # one bad spec must not cost the other figures
            problems.append(FigureProblem(spec.builder or spec.key, f"{spec.key}: {exc}"))
    return written, problems
