"""Figures of a run: a registry of builders (``FIGURES``) that turn ``Results`` into renderer-neutral specs.

An area adds its own plots without touching the renderers: write ``report/figures/<area>.py`` with functions
decorated ``@figure("name")`` that return ``list[FigureSpec]``, and add the module's name to
``BUILDER_MODULES`` below (one line per module, so areas added in parallel merge cleanly). The HTML report
draws every spec with plotly and ``--png`` with matplotlib.
"""

from importlib import import_module

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

# modules whose @figure builders register on import, in the order their figures appear
BUILDER_MODULES: list[str] = [
    "core",
    "sharing",
    "resilience",
]

for _module in BUILDER_MODULES:
    import_module(f"{__name__}.{_module}")

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
