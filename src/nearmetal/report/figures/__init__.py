"""Figures of a run: a registry of builders (``FIGURES``) that turn ``Results`` into renderer-neutral specs.

An area adds its own plots without touching the renderers: write ``report/figures/<area>.py`` with functions
decorated ``@figure("name")`` that return ``list[FigureSpec]`` (the registry imports every module of this
package on first use). The HTML report
draws every spec with plotly and ``--png`` with matplotlib.
"""

from nearmetal.report.figures.base import (
    FIGURES,
    Band,
    FigureBuilder,
    FigureProblem,
    FigureSpec,
    RefLine,
    Series,
    build_figures,
    figure,
    mean_interval,
    variant_colors,
)

__all__ = [
    "FIGURES",
    "Band",
    "FigureBuilder",
    "FigureProblem",
    "FigureSpec",
    "RefLine",
    "Series",
    "build_figures",
    "figure",
    "mean_interval",
    "variant_colors",
]
