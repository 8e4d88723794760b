"""Figure specs (what to draw, not how) and the registry of figure builders.

A builder is a pure function ``Results -> list[FigureSpec]`` registered with ``@figure("name")``. The HTML
report draws every spec with plotly, ``--png`` with matplotlib, so an area adds a plot once and gets it in
both. A builder returns ``[]`` when the run has nothing for it to show (no matrix, no percentiles, …).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nearmetal.registry import Registry

if TYPE_CHECKING:
    from nearmetal.api import Results

log = logging.getLogger(__name__)

SeriesKind = Literal["bar", "line", "scatter", "box"]
AxisType = Literal["category", "linear", "log"]


@dataclass
class Series:
    """One trace. ``low``/``high`` are absolute interval bounds drawn as whiskers (None = no whisker).

    ``box`` series take every measured value in ``y`` with its group in ``x``; the renderers draw the box
    *and* every value beside it, so spread and outliers stay visible."""

    name: str
    kind: SeriesKind
    x: list[Any]
    y: list[float]
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    text: list[str] | None = None  # hover text per point
    color: str | None = None
    dashed: bool = False  # a reference (ideal scaling, an expected value), not a measurement
    # per point: drawn grey and hatched (a contended cell: outside work ran beside it, its loss may be noise)
    hatched: list[bool] | None = None


@dataclass
class Band:
    """A shaded x range, e.g. the window a fault was injected in."""

    x0: float
    x1: float
    label: str = ""
    color: str = "rgba(214, 39, 40, 0.15)"


@dataclass
class RefLine:
    """A horizontal reference line (0 % loss, a target)."""

    y: float
    label: str = ""


@dataclass
class FigureSpec:
    key: str  # unique in a report; also the PNG file name
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    section: str | None = None  # the workload it belongs to; None = about the whole run
    caption: str = ""
    x_type: AxisType = "category"
    y_type: AxisType = "linear"
    x_ticks: list[tuple[float, str]] | None = None  # (position, label) when positions are not labels
    grouped: bool = False  # bars/boxes of different series at the same x side by side
    bands: list[Band] = field(default_factory=list)
    hlines: list[RefLine] = field(default_factory=list)
    builder: str = ""  # the registry name that made it (set by build_figures)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.key).strip("-") or "figure"


FigureBuilder = Callable[["Results"], list[FigureSpec]]

# name -> builder, in the order figures appear in a report; every module of this package registers its
# builders with ``@figure``
FIGURES: Registry[FigureBuilder] = Registry("figure", packages=("nearmetal.report.figures",))


def figure(name: str) -> Callable[[FigureBuilder], FigureBuilder]:
    """Register a figure builder under ``name`` (a later registration of the same name replaces it)."""

    def register(builder: FigureBuilder) -> FigureBuilder:
        return FIGURES.add(name, builder, replace=True)

    return register


@dataclass
class FigureProblem:
    builder: str
    error: str


def build_figures(
    results: Results, only: list[str] | None = None
) -> tuple[list[FigureSpec], list[FigureProblem]]:
    """Every registered builder's figures for a run. A builder that raises costs its own figures only:
    the report says which builder failed and why, and shows the rest."""
    specs: list[FigureSpec] = []
    problems: list[FigureProblem] = []
    seen: set[str] = set()
    for name, builder in FIGURES.items():
        if only is not None and name not in only:
            continue
        try:
            made = list(builder(results))
        except Exception as exc:  # a plot must never cost the report
            log.warning("figure builder %s failed", name, exc_info=True)
            problems.append(FigureProblem(name, f"{type(exc).__name__}: {exc}"))
            continue
        for spec in made:
            spec.builder = name
            key, n = spec.key, 2
            while spec.key in seen:
                spec.key = f"{key}-{n}"
                n += 1
            seen.add(spec.key)
            specs.append(spec)
    return specs, problems


# --- helpers builders share -------------------------------------------------------------------------

# Okabe-Ito, colour-blind safe; the baseline is always the neutral grey
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BASELINE_COLOR = "#7f7f7f"


def variant_colors(results: Results) -> dict[str, str]:
    """One colour per variant, the same in every figure of a run."""
    colors: dict[str, str] = {}
    others = 0
    for cell in results.cells:
        if cell.variant in colors:
            continue
        if cell.is_baseline:
            colors[cell.variant] = BASELINE_COLOR
        else:
            colors[cell.variant] = PALETTE[others % len(PALETTE)]
            others += 1
    return colors


def mean_interval(values: Any, confidence: float) -> tuple[float | None, float | None]:
    """Student-t interval of the mean; (None, None) with fewer than two finite values."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None, None
    mean = float(v.mean())
    sem = float(v.std(ddof=1)) / math.sqrt(v.size)
    if sem == 0:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1)) * sem
    return mean - half, mean + half


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
